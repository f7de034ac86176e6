//! The swapped container's environment and files, for the local process.
//!
//! - `envFrom` then `env`, as the kubelet orders them; `$(VAR)` in a value
//!   expands to an earlier variable, `$$` escapes a `$`.
//! - `valueFrom`: ConfigMap and Secret keys, downward-API fields of the
//!   original pod (`fieldRef`) and the container's resources (`resourceFieldRef`).
//! - Volume mounts: ConfigMap, Secret, projected (ConfigMap/Secret/downward
//!   API parts) and downward-API volumes are written as files under a root
//!   folder at their `mountPath`; `emptyDir` becomes an empty folder. Other
//!   volume types cannot be brought to a laptop and get a notice.
//!
//! Secret values are only ever written to the child's environment and to
//! files of mode 0600 (or the volume's mode); they never reach a log line or
//! an error message.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, Pod, PodSpec,
    ResourceFieldSelector, Secret, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;

use crate::host::{make_private_dir, write_file};
use crate::k8s::Kube;

/// What the local process gets.
#[derive(Default)]
pub struct Environment {
    pub vars: BTreeMap<String, String>,
    /// Things that could not be brought over, for the user to read.
    pub notices: Vec<String>,
}

/// The pod whose fields `fieldRef`s read: an original pod of the Deployment
/// when one ran, else the proxy pod that replaces it; and the allocatable
/// resources of its node, which a `resourceFieldRef` to an unset limit
/// reads (as the kubelet does), when kdev may read the Node.
pub struct FieldSource<'a> {
    pub pod: &'a Pod,
    pub node_allocatable: Option<BTreeMap<String, Quantity>>,
}

/// Reads ConfigMaps and Secrets once each.
struct Sources<'a> {
    kube: &'a Kube,
    config_maps: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    secrets: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

/// A ConfigMap's or Secret's keys, whatever field holds them.
type Data = BTreeMap<String, Vec<u8>>;

impl Sources<'_> {
    async fn config_map(&mut self, name: &str) -> anyhow::Result<Option<&Data>> {
        if !self.config_maps.contains_key(name) {
            let data = self.read::<ConfigMap>(name, "configmap").await?.map(|cm| {
                let mut data: Data = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                data
            });
            self.config_maps.insert(name.to_owned(), data);
        }
        Ok(self.config_maps.get(name).and_then(Option::as_ref))
    }

    async fn secret(&mut self, name: &str) -> anyhow::Result<Option<&Data>> {
        if !self.secrets.contains_key(name) {
            let data = self.read::<Secret>(name, "secret").await?.map(|secret| {
                let mut data: Data = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                data.extend(
                    secret
                        .string_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes())),
                );
                data
            });
            self.secrets.insert(name.to_owned(), data);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }

    /// One object of the session's namespace; `None` when it does not exist.
    async fn read<K>(&self, name: &str, kind: &str) -> anyhow::Result<Option<K>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.kube.client.clone(), &self.kube.namespace);
        api.get_opt(name).await.map_err(|err| {
            self.kube
                .explain(err, format!("read {kind} {}/{name}", self.kube.namespace))
        })
    }
}

/// Resolves the container's environment and writes its volumes under `root`.
pub async fn resolve(
    kube: &Kube,
    spec: &PodSpec,
    container: &Container,
    fields: FieldSource<'_>,
    root: &Path,
) -> anyhow::Result<Environment> {
    let mut sources = Sources {
        kube,
        config_maps: BTreeMap::new(),
        secrets: BTreeMap::new(),
    };
    let mut env = Environment::default();
    let who = format!("container {:?}", container.name);

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional, data) = if let Some(cm) = &from.config_map_ref {
            let data = sources.config_map(&cm.name).await?.cloned();
            (
                "configmap",
                cm.name.clone(),
                cm.optional.unwrap_or(false),
                data,
            )
        } else if let Some(secret) = &from.secret_ref {
            let data = sources.secret(&secret.name).await?.cloned();
            (
                "secret",
                secret.name.clone(),
                secret.optional.unwrap_or(false),
                data,
            )
        } else {
            continue;
        };
        let Some(data) = data else {
            if optional {
                continue;
            }
            anyhow::bail!(
                "{kind} {}/{name} used by {who}'s envFrom does not exist; create it or mark it optional",
                kube.namespace
            );
        };
        for (key, value) in data {
            let name = format!("{prefix}{key}");
            if is_env_name(&name) {
                env.vars
                    .insert(name, String::from_utf8_lossy(&value).into_owned());
            } else {
                env.notices.push(format!(
                    "skipped {kind} {}'s key {key:?}: not a valid variable name",
                    from_name(kind, &name)
                ));
            }
        }
    }

    for var in container.env.iter().flatten() {
        let value = if let Some(value) = &var.value {
            Some(expand(value, &env.vars))
        } else if let Some(from) = &var.value_from {
            let missing = |kind: &str, name: &str, key: &str| {
                anyhow::anyhow!(
                    "{who}'s variable {} needs key {key:?} of {kind} {}/{name}, which does not exist",
                    var.name,
                    kube.namespace
                )
            };
            if let Some(sel) = &from.config_map_key_ref {
                let data = sources.config_map(&sel.name).await?;
                key_value(data, &sel.key, sel.optional)
                    .ok_or_else(|| missing("configmap", &sel.name, &sel.key))?
            } else if let Some(sel) = &from.secret_key_ref {
                let data = sources.secret(&sel.name).await?;
                key_value(data, &sel.key, sel.optional)
                    .ok_or_else(|| missing("secret", &sel.name, &sel.key))?
            } else if let Some(field) = &from.field_ref {
                match pod_field(fields.pod, field) {
                    Some(v) => Some(v),
                    None => {
                        env.notices.push(format!(
                            "variable {}: field {} is not available",
                            var.name, field.field_path
                        ));
                        None
                    }
                }
            } else if let Some(resource) = &from.resource_field_ref {
                match resource_field(container, resource, fields.node_allocatable.as_ref()) {
                    Some(v) => Some(v),
                    None => {
                        env.notices.push(format!(
                            "variable {}: {} is not set on the container and the node's allocatable amount cannot be read (no permission to read Nodes)",
                            var.name, resource.resource
                        ));
                        None
                    }
                }
            } else {
                None
            }
        } else {
            Some(String::new())
        };
        if let Some(value) = value {
            env.vars.insert(var.name.clone(), value);
        }
    }

    write_volumes(
        &mut sources,
        spec,
        container,
        fields,
        root,
        &mut env.notices,
    )
    .await?;
    Ok(env)
}

/// A key's value: `Some(Some(v))` found, `Some(None)` missing but optional,
/// `None` missing and required.
fn key_value(data: Option<&Data>, key: &str, optional: Option<bool>) -> Option<Option<String>> {
    match data.and_then(|d| d.get(key)) {
        Some(v) => Some(Some(String::from_utf8_lossy(v).into_owned())),
        None if optional.unwrap_or(false) => Some(None),
        None => None,
    }
}

fn from_name(kind: &str, name: &str) -> String {
    format!("{kind} {name}")
}

/// A C identifier-like name that shells and most runtimes accept.
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Kubernetes' `$(VAR)` expansion: known variables are replaced, unknown
/// references are left as written, `$$` is a literal `$`.
pub fn expand(value: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The downward API's `fieldRef` paths.
pub fn pod_field(pod: &Pod, field: &ObjectFieldSelector) -> Option<String> {
    let path = field.field_path.as_str();
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?;
        Some(rest.strip_prefix("['")?.strip_suffix("']")?.to_owned())
    };
    if let Some(key) = map_key("metadata.labels") {
        return meta.labels.as_ref()?.get(&key).cloned();
    }
    if let Some(key) = map_key("metadata.annotations") {
        return meta.annotations.as_ref()?.get(&key).cloned();
    }
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => Some(format_map(meta.labels.as_ref())),
        "metadata.annotations" => Some(format_map(meta.annotations.as_ref())),
        "spec.nodeName" => spec?.node_name.clone(),
        "spec.serviceAccountName" => spec?.service_account_name.clone(),
        "status.hostIP" => status?.host_ip.clone(),
        "status.podIP" => status?.pod_ip.clone(),
        "status.hostIPs" => Some(join_ips(
            status?.host_ips.as_ref()?.iter().map(|ip| ip.ip.as_str()),
        )),
        "status.podIPs" => Some(join_ips(
            status?.pod_ips.as_ref()?.iter().map(|ip| ip.ip.as_str()),
        )),
        _ => None,
    }
}

fn join_ips<'a>(ips: impl Iterator<Item = &'a str>) -> String {
    ips.collect::<Vec<_>>().join(",")
}

/// The downward API's `key="value"` lines for labels and annotations.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The downward API's `resourceFieldRef`: CPU rounded up to whole divisors,
/// memory and storage in bytes over the divisor.
pub fn resource_field(
    container: &Container,
    selector: &ResourceFieldSelector,
    allocatable: Option<&BTreeMap<String, Quantity>>,
) -> Option<String> {
    let (kind, name) = selector.resource.split_once('.')?;
    let resources = container.resources.as_ref();
    let set = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return None,
    }
    .and_then(|map| map.get(name));
    // An unset limit reads as the node's allocatable amount (the kubelet's rule).
    let quantity = match (set, kind) {
        (Some(q), _) => q,
        (None, "limits") => allocatable?.get(name)?,
        (None, _) => return None,
    };
    let value = parse_quantity(&quantity.0)?;
    let divisor = selector
        .divisor
        .as_ref()
        .and_then(|d| parse_quantity(&d.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Some(format!("{}", (value / divisor).ceil() as u64))
}

/// A Kubernetes quantity ("500m", "2", "1.5Gi", "128M") as a number.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some(number * factor)
}

/// One file a volume puts in the container.
struct VolumeFile {
    path: String,
    bytes: Vec<u8>,
    mode: u32,
}

async fn write_volumes(
    sources: &mut Sources<'_>,
    spec: &PodSpec,
    container: &Container,
    fields: FieldSource<'_>,
    root: &Path,
    notices: &mut Vec<String>,
) -> anyhow::Result<()> {
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = spec.volumes.iter().flatten().find(|v| v.name == mount.name) else {
            continue;
        };
        let Some(files) = volume_files(sources, volume, container, &fields, notices).await? else {
            notices.push(format!(
                "volume {:?} at {} is not a ConfigMap, Secret, projected, downward-API or emptyDir volume; it is not available locally",
                volume.name, mount.mount_path
            ));
            continue;
        };
        let target = under_root(root, &mount.mount_path)?;
        match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                if let Some(file) = files.iter().find(|f| f.path == sub) {
                    write_file(&target, &file.bytes, file.mode)?;
                }
            }
            None => {
                make_private_dir(&target)?;
                for file in &files {
                    write_file(&under_root(&target, &file.path)?, &file.bytes, file.mode)?;
                }
            }
        }
    }
    Ok(())
}

/// The files a volume holds; `None` for a kind that cannot be brought over.
async fn volume_files(
    sources: &mut Sources<'_>,
    volume: &Volume,
    container: &Container,
    fields: &FieldSource<'_>,
    notices: &mut Vec<String>,
) -> anyhow::Result<Option<Vec<VolumeFile>>> {
    let mut files = Vec::new();
    if let Some(cm) = &volume.config_map {
        let mode = cm.default_mode.map(|m| m as u32).unwrap_or(0o644);
        let data = sources.config_map(&cm.name).await?.cloned();
        keyed_files(
            &mut files,
            "configmap",
            &cm.name,
            data,
            cm.items.as_deref(),
            cm.optional,
            mode,
        )?;
    } else if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let mode = secret.default_mode.map(|m| m as u32).unwrap_or(0o600);
        let data = sources.secret(&name).await?.cloned();
        keyed_files(
            &mut files,
            "secret",
            &name,
            data,
            secret.items.as_deref(),
            secret.optional,
            mode,
        )?;
    } else if let Some(downward) = &volume.downward_api {
        let mode = downward.default_mode.map(|m| m as u32).unwrap_or(0o644);
        downward_files(
            &mut files,
            downward.items.as_deref().unwrap_or_default(),
            container,
            fields,
            mode,
            notices,
        );
    } else if let Some(projected) = &volume.projected {
        let mode = projected.default_mode.map(|m| m as u32).unwrap_or(0o644);
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let data = sources.config_map(&cm.name).await?.cloned();
                keyed_files(
                    &mut files,
                    "configmap",
                    &cm.name,
                    data,
                    cm.items.as_deref(),
                    cm.optional,
                    mode,
                )?;
            } else if let Some(secret) = &source.secret {
                let data = sources.secret(&secret.name).await?.cloned();
                keyed_files(
                    &mut files,
                    "secret",
                    &secret.name,
                    data,
                    secret.items.as_deref(),
                    secret.optional,
                    mode.min(0o600),
                )?;
            } else if let Some(downward) = &source.downward_api {
                downward_files(
                    &mut files,
                    downward.items.as_deref().unwrap_or_default(),
                    container,
                    fields,
                    mode,
                    notices,
                );
            } else {
                notices.push(format!(
                    "volume {:?}: a projected service-account token or cluster trust bundle is not brought over",
                    volume.name
                ));
            }
        }
    } else if volume.empty_dir.is_none() {
        return Ok(None);
    }
    Ok(Some(files))
}

fn keyed_files(
    files: &mut Vec<VolumeFile>,
    kind: &str,
    name: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> anyhow::Result<()> {
    // On a laptop a Secret's files are for their owner alone, whatever the
    // volume's mode (the API server defaults it to 0644).
    let private = |mode: u32| if kind == "secret" { mode & 0o700 } else { mode };
    let Some(data) = data else {
        if optional.unwrap_or(false) {
            return Ok(());
        }
        anyhow::bail!(
            "{kind} {name} mounted as a volume does not exist; create it or mark it optional"
        );
    };
    match items {
        Some(items) => {
            for item in items {
                let Some(bytes) = data.get(&item.key) else {
                    anyhow::bail!(
                        "{kind} {name} has no key {:?} that its volume's items name",
                        item.key
                    );
                };
                files.push(VolumeFile {
                    path: item.path.clone(),
                    bytes: bytes.clone(),
                    mode: private(item.mode.map(|m| m as u32).unwrap_or(mode)),
                });
            }
        }
        None => files.extend(data.into_iter().map(|(key, bytes)| VolumeFile {
            path: key,
            bytes,
            mode: private(mode),
        })),
    }
    Ok(())
}

fn downward_files(
    files: &mut Vec<VolumeFile>,
    items: &[DownwardAPIVolumeFile],
    container: &Container,
    fields: &FieldSource<'_>,
    mode: u32,
    notices: &mut Vec<String>,
) {
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            pod_field(fields.pod, field)
        } else if let Some(resource) = &item.resource_field_ref {
            resource_field(container, resource, fields.node_allocatable.as_ref())
        } else {
            None
        };
        match value {
            Some(value) => files.push(VolumeFile {
                path: item.path.clone(),
                bytes: value.into_bytes(),
                mode: item.mode.map(|m| m as u32).unwrap_or(mode),
            }),
            None => notices.push(format!(
                "downward-API file {:?} has no value here",
                item.path
            )),
        }
    }
}

/// `root` joined with a container path, refusing `..` so a manifest cannot
/// make kdev write outside the root.
/// `path` (absolute in the container) below `root`; an error for a path
/// that would leave it.
pub fn under_root(root: &Path, path: &str) -> anyhow::Result<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        anyhow::bail!("refusing to write {path:?}: it leaves the mount root");
    }
    Ok(root.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodStatus, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn expansion_follows_kubernetes() {
        let vars: BTreeMap<String, String> = [("HOST".to_owned(), "db".to_owned())].into();
        assert_eq!(
            expand("postgres://$(HOST):5432", &vars),
            "postgres://db:5432"
        );
        assert_eq!(expand("$(MISSING)/x", &vars), "$(MISSING)/x");
        assert_eq!(expand("$$(HOST)", &vars), "$(HOST)");
        assert_eq!(expand("cost $5 $(", &vars), "cost $5 $(");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("128M"), Some(128e6));
        assert_eq!(parse_quantity("lots"), None);
    }

    #[test]
    fn an_unset_limit_reads_the_nodes_allocatable_amount() {
        let container: Container =
            serde_json::from_value(serde_json::json!({ "name": "app" })).expect("valid");
        let node: BTreeMap<String, Quantity> = [
            ("cpu".to_owned(), Quantity("2".into())),
            ("memory".to_owned(), Quantity("4Gi".into())),
        ]
        .into();
        let field = |resource: &str| ResourceFieldSelector {
            resource: resource.into(),
            ..ResourceFieldSelector::default()
        };
        assert_eq!(
            resource_field(&container, &field("limits.cpu"), Some(&node)).as_deref(),
            Some("2")
        );
        assert_eq!(
            resource_field(&container, &field("limits.memory"), Some(&node)).as_deref(),
            Some("4294967296")
        );
        assert_eq!(
            resource_field(&container, &field("requests.cpu"), Some(&node)),
            None
        );
        assert_eq!(resource_field(&container, &field("limits.cpu"), None), None);
    }

    #[test]
    fn resource_fields_round_cpu_up() {
        let container = Container {
            resources: Some(ResourceRequirements {
                limits: Some(
                    [
                        ("cpu".into(), Quantity("1500m".into())),
                        ("memory".into(), Quantity("64Mi".into())),
                    ]
                    .into(),
                ),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        };
        let field = |resource: &str, divisor: Option<&str>| ResourceFieldSelector {
            resource: resource.into(),
            divisor: divisor.map(|d| Quantity(d.into())),
            container_name: None,
        };
        assert_eq!(
            resource_field(&container, &field("limits.cpu", None), None).as_deref(),
            Some("2")
        );
        assert_eq!(
            resource_field(&container, &field("limits.cpu", Some("1m")), None).as_deref(),
            Some("1500")
        );
        assert_eq!(
            resource_field(&container, &field("limits.memory", Some("1Mi")), None).as_deref(),
            Some("64")
        );
        assert_eq!(
            resource_field(&container, &field("requests.cpu", None), None),
            None
        );
    }

    #[test]
    fn pod_fields() {
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("team".into()),
                labels: Some([("app".into(), "web".into())].into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                pod_ip: Some("10.0.0.7".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let get = |path: &str| {
            pod_field(
                &pod,
                &ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: None,
                },
            )
        };
        assert_eq!(get("metadata.name").as_deref(), Some("web-1"));
        assert_eq!(get("metadata.namespace").as_deref(), Some("team"));
        assert_eq!(get("metadata.labels['app']").as_deref(), Some("web"));
        assert_eq!(get("metadata.labels").as_deref(), Some("app=\"web\""));
        assert_eq!(get("status.podIP").as_deref(), Some("10.0.0.7"));
        assert_eq!(get("spec.nodeName"), None);
    }

    #[test]
    fn paths_cannot_leave_the_root() {
        let root = Path::new("/tmp/root");
        assert_eq!(
            under_root(root, "/etc/app").expect("inside"),
            Path::new("/tmp/root/etc/app")
        );
        assert!(under_root(root, "/etc/../../x").is_err());
    }

    proptest::proptest! {
        #[test]
        fn expansion_and_quantities_never_panic(
            value in proptest::prelude::any::<String>(),
            quantity in proptest::prelude::any::<String>(),
        ) {
            let vars: BTreeMap<String, String> = [("A".to_owned(), "x".to_owned())].into();
            let _ = expand(&value, &vars);
            let _ = parse_quantity(&quantity);
        }

        #[test]
        fn quantity_shaped_text_never_panics(quantity in "[0-9.eE+-]{0,12}(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?") {
            let _ = parse_quantity(&quantity);
        }
    }
}
