//! The EC2 emulator for wasmcni's tests: the EC2 model of [`wasmcni_ec2_model`] (VPCs,
//! subnets, security groups, instances of real instance types, ENIs with secondary IPv4
//! addresses, /28 prefixes, IPv6 addresses and /80 prefixes, tags, trunk/branch ENIs, EC2's
//! limits and error codes, the Query protocol, fault injection, IMDS) served over HTTP, with
//! the "hypervisor" mode ([`hypervisor`]) that makes attached ENIs appear as
//! links, all started by [`Emulator::start`]. The model's modules are re-exported here under
//! their old paths, so `ec2_emulator::types::…` and `ec2_emulator::Ec2Model` still name them.
//!
//! ```
//! use ec2_emulator::{codes, AssignPrivateIpAddresses, CreateNetworkInterface, Ec2Model, RunInstance};
//!
//! let mut ec2 = Ec2Model::new(42);
//! let vpc = ec2.create_vpc("10.0.0.0/16".parse().unwrap()).unwrap();
//! let subnet = ec2.create_subnet(&vpc.id, "10.0.1.0/24".parse().unwrap(), "us-west-2a").unwrap();
//! let node = ec2.run_instance(RunInstance::new("t3.medium", &subnet.id)).unwrap();
//! let eni = ec2.create_network_interface(CreateNetworkInterface::new(&subnet.id)).unwrap();
//! ec2.attach_network_interface(&eni.id, &node.id, 1, None).unwrap();
//! // A t3.medium ENI holds 6 IPv4 addresses, the primary included.
//! ec2.assign_private_ip_addresses(AssignPrivateIpAddresses::count(&eni.id, 5)).unwrap();
//! let err = ec2
//!     .assign_private_ip_addresses(AssignPrivateIpAddresses::count(&eni.id, 1))
//!     .unwrap_err();
//! assert_eq!(err.code, codes::PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED);
//! ```

#![warn(missing_docs)]

pub mod emulator;
pub mod hypervisor;
pub mod netns;
mod server;

pub use wasmcni_ec2_model::*;
pub use wasmcni_ec2_model::{
    addressing, api, describe, error, faults, imds, instance_types, requests, rng, tags, types,
    wire,
};

pub use emulator::{Emulator, EmulatorHandle, Scenario, ScenarioResources, StartError};
pub use hypervisor::HypervisorConfig;
