//! wasmcni's node daemon as a library: serves the `wasmcni` CNI shim over a Unix socket. The
//! executable, `wasmcni-host` (`host/cli`), composes it with the EC2 provider and the netlink
//! data path.
//!
//! [`server`] answers each CNI verb from the pieces the other crates hold, and [`audit`]
//! reports what each configured plugin may do.
//!
//! Data flows one way: shim → `wasmcni_cni::proto` → [`server`] → the pool of
//! `wasmcni_core::ipam` → `wasmcni_datastore` → `wasmcni_datapath`. `wasmcni_runtime` runs the
//! WebAssembly plugins (allocation strategies, taggers, policy hooks) the configuration
//! (`wasmcni_config`) names; the warm pool drives the EC2 provider through
//! `wasmcni_core::eni::EniProvider` (this crate links no AWS SDK); `wasmcni_telemetry` holds
//! the metrics and log files.

pub mod audit;
pub mod server;
