//! wasmcni: a CNI plugin host for Kubernetes nodes.
//!
//! The crate holds the pure logic (CNI protocol, cluster configuration, datastore, IP pool) and
//! the I/O around it (Unix-socket server, netlink data path), each side effect behind a small
//! trait. Two binaries sit on top: `wasmcni`, the tiny synchronous CNI shim a conflist names,
//! and `wasmcni-host`, the privileged node daemon that does the work.
//!
//! Data flows one way: shim → [`proto`] → [`server`] → [`ipam`] → [`datastore`] → [`datapath`].
//! [`runtime`] runs the WebAssembly plugins (allocation strategies) the configuration names.
//! [`ec2`] reads the node from IMDS and its limits from EC2, for the ENI provider.

pub mod audit;
pub mod cni;
pub mod config;
pub mod datapath;
pub mod datastore;
pub mod durable;
pub mod ec2;
pub mod ipam;
pub mod logfile;
pub mod metrics;
pub mod proto;
pub mod runtime;
pub mod server;
pub mod shim;
