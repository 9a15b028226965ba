//! The CNI protocol (spec 1.1.0): versions, requests, network configuration, results and errors.
//!
//! Pure: nothing here performs I/O, so every rule of the specification is table-tested.

mod decode;
pub mod error;
pub mod netconf;
pub mod request;
pub mod result;
pub mod runtime_config;
pub mod version;

pub use error::{codes, CniError};
pub use netconf::{peek_version, Attachment, NetConf};
pub use request::{CniRequest, Command};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use runtime_config::{Bandwidth, PortMapping, RuntimeConfig};
pub use version::{version_info, CniVersion};
