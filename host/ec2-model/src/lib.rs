//! A faithful, deterministic model of the EC2 networking API: VPCs, subnets, security groups,
//! instances of real instance types, ENIs with secondary IPv4 addresses, /28 prefixes, IPv6
//! addresses and /80 prefixes, tags, and trunk/branch ENIs, enforcing the limits and answering
//! with the error codes EC2 does; and its front in EC2's Query protocol ([`api`], [`wire`])
//! with fault injection ([`faults`]: throttling buckets, error rates, scripted failures,
//! latency), and the instance metadata service the node reads ([`imds`]) — everything but the
//! sockets.
//!
//! The model is pure: no I/O, no clock. [`Ec2Model::new`] takes a seed from which every id,
//! MAC address and EC2-chosen address follows, so a run replays exactly. Actions take and
//! return plain Rust types named after EC2's parameters, and fail with an [`Ec2Error`] carrying
//! EC2's `<Code>` and a message like EC2's; a failed action changes nothing. Where time
//! matters (a throttling bucket's refill) the caller passes the instant.
//!
//! Two users: the EC2 emulator of wasmcni's tests (`tests/ec2-emulator`) serves it over HTTP
//! to the real AWS SDK; `simulate` calls it in process, in virtual time.
//!
//! ```
//! use wasmcni_ec2_model::{codes, AssignPrivateIpAddresses, CreateNetworkInterface, Ec2Model, RunInstance};
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

pub mod addressing;
pub mod api;
pub mod describe;
pub mod error;
pub mod faults;
pub mod imds;
pub mod instance_types;
mod model;
pub mod requests;
pub mod rng;
pub mod tags;
pub mod types;
pub mod wire;

pub use addressing::AllocationPolicy;
pub use api::ActionClass;
pub use describe::{DescribePage, Filter, Page};
pub use error::{codes, Ec2Error, Ec2Result};
pub use faults::{ActionCounters, BucketConfig, FaultConfig, InjectedError, RequestRecord};
pub use instance_types::{Hypervisor, InstanceTypeCatalog, InstanceTypeInfo, NetworkCardInfo};
pub use model::{
    Ec2Model, InvariantViolation, ACCOUNT_ID, DEFAULT_REGION, MAX_SECURITY_GROUPS_PER_INTERFACE,
};
pub use requests::{
    AssignIpv6Addresses, AssignPrivateIpAddresses, AssignedIpv6Addresses,
    AssignedPrivateIpAddresses, AssociateTrunkInterface, CreateNetworkInterface,
    ModifyNetworkInterfaceAttribute, RunInstance, UnassignIpv6Addresses,
    UnassignPrivateIpAddresses,
};
pub use types::{
    Attachment, AttachmentStatus, DeleteTag, Instance, InstanceDescription, InstanceState,
    InterfaceType, NetworkInterface, NetworkInterfaceStatus, SecurityGroup, Subnet, Tag, Tags,
    TrunkInterfaceAssociation, Vpc,
};
