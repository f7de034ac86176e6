"""Helpers for scripts/bench-envs, talking to the API server through
`kubectl proxy` (plain HTTP on loopback).

  envbench.py create URL NAMESPACES PER_NAMESPACE   create the environments
  envbench.py schedule URL NAMESPACES START END     give each a downtime range
  envbench.py wait URL REPLICAS COUNT EDGE          watch Deployments until COUNT
                                                    have spec.replicas == REPLICAS;
                                                    print seconds since EDGE (epoch)
  envbench.py applied URL NAMESPACES              watch namespaces until each has
                                                    the controller's schedule-applied record
  envbench.py ceiling URL NAMESPACES PER REPLICAS  the physical ceiling: the same PATCHes
                                                    (spec.replicas), 16 at once, nothing else;
                                                    prints seconds
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


def create(base, namespaces, per_namespace):
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
                }
            },
        )
        for j in range(per_namespace):
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
                        "template": {
                            "metadata": {"labels": {"app": name}},
                            "spec": {"containers": [{"name": "app", "image": "app"}]},
                        },
                    },
                },
            )

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


def wait(base, replicas, count, edge):
    listed = json.loads(call(f"{base}/apis/apps/v1/deployments?labelSelector="))
    sizes = {}

    def note(obj):
        meta = obj["metadata"]
        if meta["namespace"].startswith("env-"):
            sizes[(meta["namespace"], meta["name"])] = obj["spec"].get("replicas", 1)

    for item in listed["items"]:
        note(item)
    version = listed["metadata"]["resourceVersion"]
    done = lambda: sum(1 for size in sizes.values() if size == replicas) >= count
    while not done():
        url = f"{base}/apis/apps/v1/deployments?watch=1&resourceVersion={version}&allowWatchBookmarks=true"
        with urllib.request.urlopen(url, timeout=600) as stream:
            for line in stream:
                event = json.loads(line)
                obj = event["object"]
                version = obj["metadata"].get("resourceVersion", version)
                if event["type"] in ("ADDED", "MODIFIED"):
                    note(obj)
                if done():
                    break
    print(f"{time.time() - edge:.2f}")


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


def ceiling(base, namespaces, per_namespace, replicas):
    def one(pair):
        i, j = pair
        call(
            f"{base}/apis/apps/v1/namespaces/{namespace_name(i)}/deployments/app-{j:03d}",
            "PATCH",
            {"spec": {"replicas": replicas}},
            "application/merge-patch+json",
        )

    pairs = [(i, j) for i in range(namespaces) for j in range(per_namespace)]
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, pairs))
    print(f"{time.time() - start:.2f}")


# What kdev's controller reads and writes; the controller manager's status
# updates (subresource status), watches and Leases (leader elections of
# every component) are other components' noise and not counted.
COUNTED = {
    "deployments", "statefulsets", "daemonsets", "cronjobs", "jobs", "rollouts", "scaledobjects", "events", "namespaces",
    "services", "pods", "replicasets", "serviceaccounts", "rolebindings",
    "horizontalpodautoscalers",
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
    if command == "create":
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
