//! Resources slept by a patch their namespace declares
//! ([`kdev_contract::envs::patch`]): an operator's database or broker,
//! whose operator scales it down when a field says so. kdev finds each
//! rule's kind by discovery (the API group's preferred version), lists its
//! objects in the namespace, and writes each one's fields and record in
//! one guarded merge patch; the wake reads only the record.
//!
//! A rule whose kind the cluster does not serve is said once per
//! environment and changes nothing; a rule removed while its objects sleep
//! leaves them asleep (the wake finds objects through the rules), so
//! remove a rule while its environment is awake.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use kube::ResourceExt as _;
use kube::api::{Api, ApiResource, DynamicObject};

use crate::k8s::Kube;
use crate::k8s::guarded::{self, Decision};
use kdev_contract::envs::patch::{self, PatchSleep, PatchWake, Rule};

/// Each rule's kind as the cluster serves it, found once per run.
#[derive(Default)]
pub struct Kinds {
    found: BTreeMap<(String, String), Option<ApiResource>>,
}

impl Kinds {
    /// The kind's API resource; `None` when the cluster does not serve it.
    async fn resolve(&mut self, kube: &Kube, rule: &Rule) -> anyhow::Result<Option<ApiResource>> {
        let key = (rule.group.clone(), rule.kind.clone());
        if let Some(found) = self.found.get(&key) {
            return Ok(found.clone());
        }
        let found = match kube::discovery::group(&kube.client, &rule.group).await {
            Ok(group) => group
                .recommended_kind(&rule.kind)
                .filter(|(_, caps)| caps.scope == kube::discovery::Scope::Namespaced)
                .map(|(resource, _)| resource),
            Err(kube::Error::Discovery(_)) => None,
            Err(err) => {
                return Err(kube.explain(err, format!("discover {}", rule.resource())));
            }
        };
        self.found.insert(key, found.clone());
        Ok(found)
    }
}

/// What moving one environment's patched resources needs.
pub struct Move<'a> {
    pub kube: &'a Kube,
    pub namespace: &'a str,
    pub ns_annotations: &'a BTreeMap<String, String>,
    /// Why the whole namespace is excluded, if it is.
    pub excluded_ns: Option<&'a str>,
    /// Sleep, else wake.
    pub sleep: bool,
    pub dry_run: bool,
    pub by: &'a str,
    pub now: jiff::Timestamp,
}

/// What happened to one object (or, named `*`, to a rule).
pub struct Moved {
    /// `Kind.group`, lowercase, as kubectl names a resource.
    pub resource: String,
    pub name: String,
    pub outcome: Outcome,
    /// The fields changed or kept: `/spec/instances 3 → 0`.
    pub fields: Vec<String>,
}

pub enum Outcome {
    Slept,
    Woke,
    Unchanged(String),
    Failed(String),
}

/// One object a rule names, as listed, to decide on and write; or what a
/// rule came to without one (not served, not listed, not parsed).
pub enum Item {
    Moved(Moved),
    Object(Box<Object>),
}

/// An object as listed, with its rule and where to write it.
pub struct Object {
    api: Api<DynamicObject>,
    rule: Rule,
    object: DynamicObject,
}

impl Move<'_> {
    /// Sleeps or wakes every object the namespace's rules name; one change
    /// each (and one for rules that cannot be used).
    pub async fn run(&self, kinds: &mut Kinds) -> Vec<Moved> {
        futures::stream::iter(self.read(kinds).await)
            .map(|item| self.write(item))
            .buffered(super::workload::AT_ONCE)
            .collect()
            .await
    }

    /// What the namespace's rules name, read (discovery and one list per
    /// rule) and not yet written: an environment reads before its turn to
    /// write, so its turn is writes only.
    pub async fn read(&self, kinds: &mut Kinds) -> Vec<Item> {
        let Some(text) = self.ns_annotations.get(patch::SLEEP_PATCHES_ANNOTATION) else {
            return Vec::new();
        };
        let rules = match patch::parse_rules(text) {
            Ok(rules) => rules,
            Err(err) => {
                return vec![Item::Moved(failed(
                    "namespace".into(),
                    self.namespace,
                    format!(
                        "{err}; fix it with kubectl annotate namespace {} --overwrite",
                        self.namespace
                    ),
                ))];
            }
        };
        let mut items = Vec::new();
        for rule in rules {
            let of = rule.resource().to_lowercase();
            let resource = match kinds.resolve(self.kube, &rule).await {
                Ok(Some(resource)) => resource,
                Ok(None) => {
                    items.push(Item::Moved(Moved {
                        resource: of,
                        name: "*".into(),
                        outcome: Outcome::Unchanged(format!(
                            "the cluster serves no namespaced {} (annotation {} on namespace {})",
                            rule.resource(),
                            patch::SLEEP_PATCHES_ANNOTATION,
                            self.namespace
                        )),
                        fields: Vec::new(),
                    }));
                    continue;
                }
                Err(err) => {
                    items.push(Item::Moved(failed(of, "*", format!("{err:#}"))));
                    continue;
                }
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.kube.client.clone(), self.namespace, &resource);
            match api.list(&Default::default()).await {
                Ok(list) => items.extend(list.items.into_iter().map(|object| {
                    Item::Object(Box::new(Object {
                        api: api.clone(),
                        rule: rule.clone(),
                        object,
                    }))
                })),
                Err(err) => {
                    let err = self.kube.explain(
                        err,
                        format!("list {} in namespace {}", rule.resource(), self.namespace),
                    );
                    items.push(Item::Moved(failed(of, "*", format!("{err:#}"))));
                }
            }
        }
        items
    }

    /// Decides on and writes one item [`Move::read`] found.
    pub async fn write(&self, item: Item) -> Moved {
        match item {
            Item::Moved(moved) => moved,
            Item::Object(item) => {
                let Object { api, rule, object } = *item;
                let name = object.name_any();
                match self.one(&api, &rule, object).await {
                    Ok(done) => done,
                    Err(err) => failed(rule.resource().to_lowercase(), &name, format!("{err:#}")),
                }
            }
        }
    }

    /// Decides and writes one object, as listed.
    async fn one(
        &self,
        api: &Api<DynamicObject>,
        rule: &Rule,
        object: DynamicObject,
    ) -> anyhow::Result<Moved> {
        let name = object.name_any();
        let what = format!("{} {}/{name}", rule.resource(), self.namespace);
        let at = self.now.to_string();
        let updated = guarded::update_from(self.kube, api, &name, &what, Some(object), |current| {
            let Some(object) = current else {
                anyhow::bail!("{what} not found");
            };
            let value = serde_json::to_value(object)?;
            let (merge, done, also) = match self.sleep {
                true => {
                    let excluded = self
                        .excluded_ns
                        .map(|why| format!("{why} on namespace {}", self.namespace))
                        .or_else(|| {
                            kdev_contract::envs::exclusion(
                                object.annotations(),
                                object.labels(),
                                self.now,
                            )
                        });
                    if let Some(why) = excluded {
                        return Ok(Decision::Keep((
                            Outcome::Unchanged(format!("excluded by {why}")),
                            Vec::new(),
                        )));
                    }
                    match patch::patch_sleep(&value, rule, &at, self.by)
                        .map_err(|why| anyhow::anyhow!("{what}: {why}"))?
                    {
                        PatchSleep::Patch { merge, fields } => {
                            let also: Vec<String> = fields
                                .iter()
                                .map(|f| {
                                    format!(
                                        "{} {} → {}",
                                        f.path,
                                        patch::show(f.was.as_ref()),
                                        patch::show(f.set.as_ref())
                                    )
                                })
                                .collect();
                            (merge, Outcome::Slept, also)
                        }
                        PatchSleep::AlreadyAsleep => {
                            return Ok(Decision::Keep((unchanged("already asleep"), Vec::new())));
                        }
                        PatchSleep::AlreadyAsDeclared => {
                            return Ok(Decision::Keep((
                                unchanged(
                                    "already as its sleep patch would leave it; left as it is",
                                ),
                                Vec::new(),
                            )));
                        }
                    }
                }
                false => match patch::patch_wake(&value)
                    .map_err(|why| anyhow::anyhow!("{what}: {why}"))?
                {
                    PatchWake::NotAsleep => {
                        return Ok(Decision::Keep((unchanged("not asleep"), Vec::new())));
                    }
                    PatchWake::Patch {
                        merge,
                        restored,
                        kept,
                    } => {
                        let mut also: Vec<String> = restored
                            .iter()
                            .map(|f| {
                                format!(
                                    "{} {} → {}",
                                    f.path,
                                    patch::show(f.set.as_ref()),
                                    patch::show(f.was.as_ref())
                                )
                            })
                            .collect();
                        also.extend(kept.iter().map(|(path, found)| {
                            format!(
                                "{path} kept at {} (changed while asleep)",
                                patch::show(found.as_ref())
                            )
                        }));
                        (merge, Outcome::Woke, also)
                    }
                },
            };
            Ok(if self.dry_run {
                Decision::Keep((done, also))
            } else {
                Decision::Write(merge, (done, also))
            })
        })
        .await?;
        let (outcome, fields) = updated.value;
        Ok(Moved {
            resource: rule.resource().to_lowercase(),
            name,
            outcome,
            fields,
        })
    }
}

fn failed(resource: String, name: &str, error: String) -> Moved {
    Moved {
        resource,
        name: name.to_owned(),
        outcome: Outcome::Failed(error),
        fields: Vec::new(),
    }
}

fn unchanged(why: &str) -> Outcome {
    Outcome::Unchanged(why.to_owned())
}
