//! The node's own sections: `[install]` (where the CNI binaries and configuration go),
//! `[daemon]` (sockets, state, request limits, logs) and `[datapath]` (interface names, MTU).

use std::path::PathBuf;

use serde::Deserialize;

use super::default_true;

/// `[install]`: where the node's CNI binaries and configuration live.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstallConfig {
    /// kubelet's CNI binary directory.
    #[serde(default = "default_cni_bin_dir")]
    pub cni_bin_dir: PathBuf,
    /// kubelet's CNI configuration directory.
    #[serde(default = "default_cni_conf_dir")]
    pub cni_conf_dir: PathBuf,
    /// File name of the conflist (kubelet uses the first in lexical order).
    #[serde(default = "default_conflist_name")]
    pub conflist_name: String,
    /// The `wasmcni` shim to copy (default: `wasmcni` beside the running `wasmcni-host`).
    pub shim: Option<PathBuf>,
    /// Chain `portmap` (hostPort, with SNAT) after wasmcni.
    #[serde(default = "default_true")]
    pub portmap: bool,
    /// Chain `bandwidth` (VPC CNI's `ENABLE_BANDWIDTH_PLUGIN`).
    #[serde(default)]
    pub bandwidth: bool,
}

fn default_cni_bin_dir() -> PathBuf {
    PathBuf::from("/opt/cni/bin")
}
fn default_cni_conf_dir() -> PathBuf {
    PathBuf::from("/etc/cni/net.d")
}
fn default_conflist_name() -> String {
    "10-wasmcni.conflist".to_owned()
}

/// `[daemon]`: the node daemon's socket, state and request limits.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Path of the root-only Unix socket the CNI shim connects to.
    pub socket: PathBuf,
    /// Directory of the crash-safe datastore.
    pub state_dir: PathBuf,
    /// Time a client gets to send its whole request.
    #[serde(default = "default_read_timeout_ms")]
    pub request_read_timeout_ms: u64,
    /// Largest request frame accepted.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Root-only Unix socket serving metrics (`/metrics`) and introspection (`/v1/...`);
    /// default `ops.sock` next to `socket`.
    pub ops_socket: Option<PathBuf>,
    /// Also serve `/metrics` on this loopback TCP address (e.g. `127.0.0.1:61678`).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// JSON-lines log file (absent: stderr only).
    pub log_file: Option<PathBuf>,
    /// The log file rotates before it passes this size.
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
    /// Rotated log files kept.
    #[serde(default = "default_log_keep")]
    pub log_keep: u32,
}

fn default_log_max_bytes() -> u64 {
    10 << 20
}
fn default_log_keep() -> u32 {
    5
}

/// `[datapath]`: how pod interfaces are named and sized.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatapathConfig {
    /// Host-side veth name prefix (VPC CNI's `AWS_VPC_K8S_CNI_VETHPREFIX`, default `eni`).
    #[serde(default = "default_veth_prefix")]
    pub veth_prefix: String,
    /// MTU of both veth ends. Absent: the EC2 provider's [`EC2_MTU`] (the ENIs' jumbo frames);
    /// the static provider's the node's uplink's (the link of its IPv4 default route, or for
    /// IPv6 pods its IPv6 default route, read when the daemon starts; [`FALLBACK_MTU`] on a node without one). See
    /// `ClusterConfig::pod_mtu`; this field keeps what the file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// IPv6 pods also get a node-local IPv4 address from [`DatapathConfig::ipv4_egress_range`],
    /// with IPv4 routed through the node and translated to the node's own address on the way
    /// out, so they reach IPv4-only endpoints (VPC CNI's `ENABLE_V4_EGRESS`, whose default is
    /// on too). Ignored for IPv4 pods.
    #[serde(default = "super::default_true")]
    pub ipv4_egress: bool,
    /// Where those addresses come from (VPC CNI's egress-cni range).
    #[serde(default = "default_ipv4_egress_range")]
    pub ipv4_egress_range: ipnet::Ipv4Net,
}

/// The default of `datapath.ipv4_egress_range`: VPC CNI's.
fn default_ipv4_egress_range() -> ipnet::Ipv4Net {
    ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(169, 254, 172, 0), 22).expect("a valid prefix")
}

/// The pod MTU of the EC2 provider when none is configured: its ENIs' (VPC CNI's
/// `AWS_VPC_ENI_MTU` default).
pub const EC2_MTU: u32 = 9001;

/// The static provider's pod MTU when none is configured and the node has no default route.
pub const FALLBACK_MTU: u32 = 1500;

fn default_read_timeout_ms() -> u64 {
    5_000
}
fn default_max_request_bytes() -> usize {
    1 << 20
}
fn default_veth_prefix() -> String {
    "eni".to_owned()
}
