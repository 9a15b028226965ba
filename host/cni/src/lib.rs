//! The contract between a container runtime, the `wasmcni` shim and the node daemon.
//!
//! - The CNI protocol (spec 1.1.0): versions, requests, network configuration, results and
//!   errors ([`version`], [`request`], [`netconf`], [`runtime_config`], [`result`],
//!   [`error`]). Pure: nothing there performs I/O, so every rule of the specification is
//!   table-tested.
//! - The shim↔daemon framing and the spooled DELs ([`proto`]), the paths a network
//!   configuration may point the root shim at ([`paths`]), durable file replacement
//!   ([`durable`]) and log-safe text ([`text`]).
//!
//! Synchronous and small: the shim every node copies into `/opt/cni/bin` links this crate
//! and nothing heavier (no async runtime, no Wasm engine, no AWS SDK).

mod decode;
pub mod durable;
pub mod error;
pub mod netconf;
pub mod paths;
pub mod proto;
pub mod regular;
pub mod request;
pub mod requested;
pub mod result;
pub mod routes;
pub mod runtime_config;
pub mod text;
pub mod version;

pub use error::{codes, CniError};
pub use netconf::{peek_version, NetConf, ValidAttachment};
pub use request::{CniRequest, Command};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use routes::RouteConfig;
pub use runtime_config::{Bandwidth, PortMapping, RuntimeConfig};
pub use version::{version_info, CniVersion};
