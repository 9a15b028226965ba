//! wasmcni's domain, free of I/O: where pod addresses come from and which one a pod gets
//! ([`ipam`]), the node's ENIs and what the daemon asks of the EC2 provider ([`eni`]),
//! what a plugin may see of the node ([`pool_view`]), where a plugin's component may come from
//! ([`oci`]), what it may do and how its
//! requests are checked ([`grants`]), what one call may cost ([`limits`]), what the daemon
//! asks of a plugin and what it answers ([`plugin`]), and what an attachment's interface routes
//! inside the pod ([`routes`]).
//!
//! Every other crate of the daemon builds on these types; this one depends on none of them,
//! and links no engine, no SDK and no async runtime, so its rules are table-tested in
//! milliseconds.

pub mod egress;
pub mod eni;
pub mod framing;
pub mod grants;
pub mod ipam;
pub mod limits;
pub mod oci;
pub mod plugin;
pub mod pool_view;
pub mod routes;

pub use grants::{
    Capability, EniRequest, FailureMode, FailurePolicy, Grants, Hook, Import, NetlinkRequest,
    PluginKind,
};
pub use limits::{Export, HostLimit, Limits, MAX_PLUGIN_MEMORY};
pub use oci::OciReference;
pub use plugin::{Attachment, EniTagRequest, PluginSpec, PodInfo, Verb, Verdict};
pub use pool_view::{EniInfo, NodeInfo, NodeLimits, PoolSnapshot, RequestFailure, SubnetInfo};
pub use routes::{DefaultRoute, PodRoutes};
