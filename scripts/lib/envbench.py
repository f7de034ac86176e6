"""Helpers for scripts/bench-envs, talking to the API server through
`kubectl proxy` (plain HTTP on loopback).

  envbench.py crds URL                              apply the Rollout, ScaledObject and
                                                    operator Cluster CRDs (schemas open)
  envbench.py create URL NAMESPACES PER_NAMESPACE   create the environments: a mixed set,
                                                    80 % Deployments, the rest Argo Rollouts,
                                                    KEDA ScaledObjects (each scaling one of
                                                    the Deployments) and operator Clusters
                                                    slept by the namespace's patch rule
  envbench.py schedule URL NAMESPACES START END     give each a downtime range
  envbench.py wait URL AWAKE COUNT EDGE             watch the four kinds until COUNT
                                                    workloads are awake (1) or asleep (0);
                                                    print seconds since EDGE (epoch)
  envbench.py applied URL NAMESPACES              watch namespaces until each has
                                                    the controller's schedule-applied record
  envbench.py ceiling URL NAMESPACES PER AWAKE     the physical ceiling: the same changes
                                                    as plain PATCHes (replicas, the pause,
                                                    instances, each with its record), 16 at
                                                    once, nothing else; prints seconds
  envbench.py requests URL                          the API server's request count
                                                    (see `counted` below), as JSON
"""

import concurrent.futures
import json
import sys
import time
import urllib.request


def call(url, method="GET", body=None, content_type="application/json"):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def namespace_name(i):
    return f"env-{i:03d}"


# The mixed set: of every 100 workloads, 80 Deployments, 7 Argo Rollouts,
# 7 KEDA ScaledObjects and 6 operator Clusters slept by the namespace's
# patch rule: 20 % of other kinds. Each ScaledObject scales a Deployment of
# its own besides, which a sleep leaves to KEDA and is not counted.
ROLLOUTS, SCALED, CLUSTERS = 7, 7, 6

CLUSTER_GROUP = "postgresql.cnpg.io"
PATCH_RULE = json.dumps([{
    "group": CLUSTER_GROUP, "kind": "Cluster",
    "sleep": [{"op": "replace", "path": "/spec/instances", "value": 0}],
}])


def kinds_of(per_namespace):
    """How many of each kind one namespace's sleep moves."""
    others = per_namespace // 5
    rollouts = others * ROLLOUTS // 20
    scaled = others * SCALED // 20
    clusters = others - rollouts - scaled
    return per_namespace - others, rollouts, scaled, clusters


def crds(base):
    def crd(group, kind, plural, version, scale):
        subresources = {"status": {}}
        if scale:
            subresources["scale"] = {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            }
        call(f"{base}/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "POST", {
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {
                "group": group, "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                "versions": [{
                    "name": version, "served": True, "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    "subresources": subresources,
                }],
            },
        })
        # Served once a list answers.
        for _ in range(300):
            try:
                call(f"{base}/apis/{group}/{version}/{plural}")
                return
            except Exception:
                time.sleep(0.1)
        sys.exit(f"CRD {plural}.{group} not served")

    crd("argoproj.io", "Rollout", "rollouts", "v1alpha1", True)
    crd("keda.sh", "ScaledObject", "scaledobjects", "v1alpha1", False)
    crd(CLUSTER_GROUP, "Cluster", "clusters", "v1", False)


def template(name):
    return {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "app",
                                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
    }


def create(base, namespaces, per_namespace):
    deployments, rollouts, scaled, clusters = kinds_of(per_namespace)

    def one_namespace(i):
        ns = namespace_name(i)
        call(
            f"{base}/api/v1/namespaces",
            "POST",
            {
                "metadata": {
                    "name": ns,
                    # An environment, in one of ten groups a filter can pick.
                    "labels": {"kdev.dev/environment": "bench", "bench-group": f"g{i % 10}"},
                    "annotations": {"kdev.dev/sleep-patches": PATCH_RULE},
                }
            },
        )
        # The first `scaled` are the ScaledObjects' targets, beside the
        # workloads counted.
        for j in range(scaled + deployments):
            name = f"app-{j:03d}"
            call(
                f"{base}/apis/apps/v1/namespaces/{ns}/deployments",
                "POST",
                {
                    "metadata": {"name": name},
                    "spec": {
                        "replicas": 1,
                        # Paused and without a ReplicaSet: the controller
                        # manager starts no pods, so the figure is kdev's
                        # work, not kwok's pod churn.
                        "paused": True,
                        "selector": {"matchLabels": {"app": name}},
                        "template": template(name),
                    },
                },
            )
        for j in range(rollouts):
            name = f"ro-{j:03d}"
            # No Argo controller runs: nothing acts on it but kdev.
            call(f"{base}/apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts", "POST", {
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                "metadata": {"name": name},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template(name)},
            })
        for j in range(scaled):
            # Each scales one of the Deployments, which the sleep then
            # leaves to KEDA (not running here either).
            call(f"{base}/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects", "POST", {
                "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": f"so-{j:03d}"},
                "spec": {"scaleTargetRef": {"name": f"app-{j:03d}"}, "minReplicaCount": 1},
            })
        for j in range(clusters):
            call(f"{base}/apis/{CLUSTER_GROUP}/v1/namespaces/{ns}/clusters", "POST", {
                "apiVersion": f"{CLUSTER_GROUP}/v1", "kind": "Cluster",
                "metadata": {"name": f"pg-{j:03d}"},
                "spec": {"instances": 1, "storage": {"size": "1Gi"}},
            })

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one_namespace, range(namespaces)))


def schedule(base, namespaces, start, end):
    value = f"{start}-{end}"
    for i in range(namespaces):
        call(
            f"{base}/api/v1/namespaces/{namespace_name(i)}",
            "PATCH",
            {"metadata": {"annotations": {"kdev.dev/downtime": value}}},
            "application/merge-patch+json",
        )


# Each kind, where it is listed, and whether an object of it is awake.
KINDS = {
    "deployments": ("/apis/apps/v1/deployments", lambda o: o["spec"].get("replicas", 1) > 0),
    "rollouts": ("/apis/argoproj.io/v1alpha1/rollouts", lambda o: o["spec"].get("replicas", 1) > 0),
    "scaledobjects": ("/apis/keda.sh/v1alpha1/scaledobjects",
                      lambda o: "autoscaling.keda.sh/paused-replicas" not in (o["metadata"].get("annotations") or {})),
    "clusters": (f"/apis/{CLUSTER_GROUP}/v1/clusters", lambda o: o["spec"].get("instances", 1) > 0),
}


def scaled_targets(base):
    """The Deployments a ScaledObject scales: KEDA's, which a sleep leaves alone."""
    listed = json.loads(call(f"{base}/apis/keda.sh/v1alpha1/scaledobjects"))
    return {(o["metadata"]["namespace"], o["spec"]["scaleTargetRef"]["name"]) for o in listed["items"]}


def wait(base, awake, count, edge):
    """Watches the four kinds until `count` workloads are awake (1) or asleep (0)."""
    import threading
    skip = scaled_targets(base)
    states = {}
    lock = threading.Lock()
    reached = threading.Event()

    def note(kind, is_awake, obj):
        meta = obj["metadata"]
        key = (kind, meta["namespace"], meta["name"])
        if not meta["namespace"].startswith("env-") or (kind == "deployments" and key[1:] in skip):
            return
        with lock:
            states[key] = is_awake(obj)
            if sum(1 for s in states.values() if s == bool(awake)) >= count:
                reached.set()

    def follow(kind):
        path, is_awake = KINDS[kind]
        listed = json.loads(call(f"{base}{path}"))
        for item in listed["items"]:
            note(kind, is_awake, item)
        version = listed["metadata"]["resourceVersion"]
        while not reached.is_set():
            url = f"{base}{path}?watch=1&resourceVersion={version}&allowWatchBookmarks=true&timeoutSeconds=30"
            with urllib.request.urlopen(url, timeout=600) as stream:
                for line in stream:
                    event = json.loads(line)
                    obj = event["object"]
                    version = obj["metadata"].get("resourceVersion", version)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        note(kind, is_awake, obj)
                    if reached.is_set():
                        break

    threads = [threading.Thread(target=follow, args=(kind,), daemon=True) for kind in KINDS]
    for thread in threads:
        thread.start()
    reached.wait()
    print(f"{time.time() - edge:.2f}")


def workloads(base):
    """How many workloads the set has, as a sleep counts them."""
    skip = scaled_targets(base)
    total = 0
    for kind, (path, _) in KINDS.items():
        for o in json.loads(call(f"{base}{path}"))["items"]:
            ns = o["metadata"]["namespace"]
            if ns.startswith("env-") and not (kind == "deployments" and (ns, o["metadata"]["name"]) in skip):
                total += 1
    print(total)


def applied(base, namespaces):
    names = {namespace_name(i) for i in range(namespaces)}
    listed = json.loads(call(f"{base}/api/v1/namespaces"))
    done = set()

    def note(obj):
        meta = obj["metadata"]
        if meta["name"] in names and "kdev.dev/schedule-applied" in (meta.get("annotations") or {}):
            done.add(meta["name"])

    for item in listed["items"]:
        note(item)
    version = listed["metadata"]["resourceVersion"]
    while len(done) < len(names):
        url = f"{base}/api/v1/namespaces?watch=1&resourceVersion={version}"
        with urllib.request.urlopen(url, timeout=600) as stream:
            for line in stream:
                event = json.loads(line)
                version = event["object"]["metadata"].get("resourceVersion", version)
                note(event["object"])
                if len(done) >= len(names):
                    break


def ceiling(base, namespaces, per_namespace, awake):
    """The same changes kdev makes, as plain PATCHes, 16 at once: each
    workload's size and its record in one write, as kube-downscaler writes
    `downscaler/original-replicas` with the replicas (the record is what
    lets a wake restore exactly; a sleep without one could not)."""
    deployments, rollouts, scaled, clusters = kinds_of(per_namespace)
    merge = "application/merge-patch+json"
    paused = None if awake else "0"
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def recorded(ns, key, record):
        # The record's text as long as kdev's: who and why included.
        by = f"kdev-controller: schedule kdev.dev/downtime on namespace {ns}"
        return None if awake else json.dumps({**record, "at": at, "by": by}, separators=(",", ":"))

    def sized(ns, field):
        record = recorded(ns, "kdev.dev/sleep", {"replicas": 1, "to": 0})
        return {"metadata": {"annotations": {"kdev.dev/sleep": record}}, "spec": {field: awake}}

    changes = []
    for i in range(namespaces):
        ns = namespace_name(i)
        for j in range(scaled, scaled + deployments):
            changes.append((f"/apis/apps/v1/namespaces/{ns}/deployments/app-{j:03d}", sized(ns, "replicas")))
        for j in range(rollouts):
            changes.append((f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/ro-{j:03d}", sized(ns, "replicas")))
        for j in range(scaled):
            record = recorded(ns, "kdev.dev/sleep", {"replicas": 1, "to": 0})
            changes.append((f"/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects/so-{j:03d}",
                            {"metadata": {"annotations": {"autoscaling.keda.sh/paused-replicas": paused,
                                                          "kdev.dev/sleep": record}}}))
        for j in range(clusters):
            record = recorded(ns, "kdev.dev/sleep-patched",
                              {"fields": [{"path": "/spec/instances", "was": 1, "set": 0}]})
            changes.append((f"/apis/{CLUSTER_GROUP}/v1/namespaces/{ns}/clusters/pg-{j:03d}",
                            {"metadata": {"annotations": {"kdev.dev/sleep-patched": record}},
                             "spec": {"instances": awake}}))

    def one(change):
        call(f"{base}{change[0]}", "PATCH", change[1], merge)

    start, cpu = time.time(), time.process_time()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, changes))
    print(f"{time.time() - start:.2f}")
    # Beside the controller's CPU over its window (bench-envs prints both).
    print(f"  the ceiling client's CPU: {time.process_time() - cpu:.2f} s", file=sys.stderr)


# What kdev's controller reads and writes; the controller manager's status
# updates (subresource status), watches and Leases (leader elections of
# every component) are other components' noise and not counted. So kdev's
# own Lease requests are not either: the savings ledger's get and patch of
# each environment's activity Lease, 2 per environment and transition.
COUNTED = {
    "deployments", "statefulsets", "daemonsets", "cronjobs", "jobs", "rollouts", "scaledobjects", "events", "namespaces",
    "services", "pods", "replicasets", "serviceaccounts", "rolebindings",
    "horizontalpodautoscalers", "clusters",
}


def requests(base):
    text = call(f"{base}/metrics").decode()
    total = 0
    by = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, value = line.rsplit(" ", 1)
        labels = dict(
            part.split("=", 1)
            for part in labels_text[len("apiserver_request_total{"):-1].split(",")
        )
        labels = {k: v.strip('"') for k, v in labels.items()}
        if labels.get("verb") == "WATCH" or labels.get("subresource") == "status":
            continue
        if labels.get("resource") not in COUNTED:
            continue
        n = int(float(value))
        total += n
        key = f"{labels['verb']} {labels['resource']}"
        by[key] = by.get(key, 0) + n
    print(json.dumps({"total": total, "by": by}))


def main():
    command, base, *rest = sys.argv[1:]
    if command == "crds":
        crds(base)
    elif command == "workloads":
        workloads(base)
    elif command == "create":
        create(base, int(rest[0]), int(rest[1]))
    elif command == "schedule":
        schedule(base, int(rest[0]), rest[1], rest[2])
    elif command == "wait":
        wait(base, int(rest[0]), int(rest[1]), float(rest[2]))
    elif command == "applied":
        applied(base, int(rest[0]))
    elif command == "ceiling":
        ceiling(base, int(rest[0]), int(rest[1]), int(rest[2]))
    elif command == "requests":
        requests(base)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
