//! wasmcni's node daemon, `wasmcni-host`: a CNI plugin host for Kubernetes nodes.
//!
//! The crate holds the daemon's logic (cluster configuration, datastore, IP pool, plugin
//! runtime) and the I/O around it (Unix-socket server, netlink data path, EC2), each side
//! effect behind a small trait. The CNI protocol and the shim↔daemon contract live in
//! `wasmcni-cni` (`host/cni`), which the `wasmcni` shim (`host/shim`) links without any of
//! this crate.
//!
//! Data flows one way: shim → `wasmcni_cni::proto` → [`server`] → [`ipam`] → [`datastore`] →
//! [`datapath`]. [`runtime`] runs the WebAssembly plugins (allocation strategies) the
//! configuration names. [`ec2`] reads the node from IMDS and its limits from EC2, for the ENI
//! provider.

pub mod audit;
pub mod config;
pub mod datapath;
pub mod datastore;
pub mod ec2;
pub mod ipam;
pub mod logfile;
pub mod metrics;
pub mod runtime;
pub mod server;
