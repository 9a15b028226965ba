//! What the daemon asks of a plugin and what it answers, apart from the engine that runs it:
//! the spec a configuration resolves to, the pod and attachment a hook is called for, the
//! tagger's input and a policy hook's verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::grants::{FailurePolicy, Grants, Hook, NetlinkRequest, PluginKind};
use crate::limits::Limits;

/// What to load: a component file, the digest it must have, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// Name in logs and errors.
    pub name: String,
    /// Which world it implements.
    pub kind: PluginKind,
    /// The component file (for a plugin from a registry: its place in the node's cache).
    pub path: PathBuf,
    /// The registry manifest the file is pulled from when the cache lacks it.
    pub origin: Option<crate::OciReference>,
    /// `sha256:<64 hex>`; the file is refused unless its content hashes to it.
    pub digest: String,
    /// What it may import, with scopes.
    pub grants: Grants,
    /// Resource limits per call.
    pub limits: Limits,
    /// What each hook's failure does.
    pub on_failure: FailurePolicy,
    /// Its `[plugins.config]` settings.
    pub settings: BTreeMap<String, String>,
    /// Tag keys a tagger may set.
    pub tag_keys: BTreeSet<String>,
}

impl PluginSpec {
    /// A spec with default limits, failure policy and no settings.
    pub fn new(
        name: &str,
        kind: PluginKind,
        path: PathBuf,
        digest: String,
        grants: Grants,
    ) -> Self {
        PluginSpec {
            name: name.to_owned(),
            kind,
            path,
            origin: None,
            digest,
            grants,
            limits: Limits::default(),
            on_failure: FailurePolicy::defaults(kind),
            settings: BTreeMap::new(),
            tag_keys: BTreeSet::new(),
        }
    }
}

/// The attachment a hook is called for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub name: Option<String>,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// Pod annotations passed by the runtime.
    pub annotations: Vec<(String, String)>,
    /// Every `CNI_ARGS` pair.
    pub cni_args: Vec<(String, String)>,
}

impl PodInfo {
    /// The pod as audit-log arguments.
    pub fn audit_args(&self) -> serde_json::Value {
        serde_json::json!({
            "container_id": self.container_id,
            "ifname": self.ifname,
            "namespace": self.namespace,
            "name": self.name,
        })
    }
}

/// What a new ENI is for (the tagger's input).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EniTagRequest {
    /// Instance id.
    pub instance_id: String,
    /// Instance type.
    pub instance_type: String,
    /// Availability zone.
    pub availability_zone: String,
    /// The ENI's subnet.
    pub subnet_id: String,
    /// The cluster name (empty when unset).
    pub cluster_name: String,
}

/// The verb a policy hook runs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// ADD.
    Add,
    /// DEL.
    Del,
    /// CHECK.
    Check,
}

impl Verb {
    /// The hook whose failure policy applies.
    pub fn hook(self) -> Hook {
        match self {
            Verb::Add => Hook::Add,
            Verb::Del => Hook::Del,
            Verb::Check => Hook::Check,
        }
    }
}

/// What a policy hook is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The verb.
    pub verb: Verb,
    /// The pod.
    pub pod: PodInfo,
    /// Its addresses (IPv4 and IPv6).
    pub addresses: Vec<ipnet::IpNet>,
    /// The ENI the address comes from.
    pub eni_id: Option<String>,
    /// Its subnet.
    pub subnet_id: Option<String>,
    /// Whether wasmcni runs chained after another main plugin.
    pub chained: bool,
}

/// A policy hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed, with the datapath adjustments it asked for (checked against its grant).
    Allow(Vec<NetlinkRequest>),
    /// Denied, with the plugin's reason.
    Deny(String),
}
