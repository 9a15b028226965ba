//! wasmcni's node daemon, `wasmcni-host`: serves the `wasmcni` CNI shim over a Unix socket.
//!
//! This crate is the composition: [`server`] answers each CNI verb from the pieces the other
//! crates hold, and [`audit`] reports what each configured plugin may do.
//!
//! Data flows one way: shim → `wasmcni_cni::proto` → [`server`] → the pool of
//! `wasmcni_core::ipam` → `wasmcni_datastore` → `wasmcni_datapath`. `wasmcni_runtime` runs the
//! WebAssembly plugins (allocation strategies, taggers, policy hooks) the configuration
//! (`wasmcni_config`) names; `wasmcni_ec2` reads the node from IMDS and its ENIs from EC2 for
//! the ENI provider, which the server drives through `wasmcni_core::eni::EniProvider`; `wasmcni_telemetry` holds the metrics and log files.

pub mod audit;
pub mod server;
