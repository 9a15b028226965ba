//! EC2 API errors: the `<Code>` and `<Message>` pair EC2 answers with, built in one place.
//!
//! Every rule the model enforces fails with an [`Ec2Error`] whose [`code`](Ec2Error::code) is
//! the exact string EC2 returns, so the HTTP front can put it in the XML `<Code>` element
//! unchanged and tests can match on the constants in [`codes`].

use std::fmt::Display;

/// The error codes the model returns, spelled exactly as EC2 spells them.
///
/// Where EC2's behaviour was verified (from real EC2 responses quoted in public issues and
/// code), the constant's doc says so; the crate README lists the sources and the guesses.
pub mod codes {
    /// An instance would exceed its type's (or network card's) maximum network interfaces.
    pub const ATTACHMENT_LIMIT_EXCEEDED: &str = "AttachmentLimitExceeded";
    /// An ENI would exceed its IPv4 (or IPv6) addresses-and-prefixes-per-interface limit.
    pub const PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED: &str = "PrivateIpAddressLimitExceeded";
    /// The subnet has fewer free addresses than requested.
    pub const INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET: &str = "InsufficientFreeAddressesInSubnet";
    /// The subnet has enough free addresses but no free aligned prefix (fragmentation).
    pub const INSUFFICIENT_CIDR_BLOCKS: &str = "InsufficientCidrBlocks";
    /// An ENI that is attached (or associated as a branch) cannot be attached again.
    pub const INVALID_NETWORK_INTERFACE_IN_USE: &str = "InvalidNetworkInterface.InUse";
    /// A specific primary address requested at creation is already used in the subnet.
    pub const INVALID_IP_ADDRESS_IN_USE: &str = "InvalidIPAddress.InUse";
    /// The request is not allowed, e.g. detaching the primary ENI (device index 0).
    pub const OPERATION_NOT_PERMITTED: &str = "OperationNotPermitted";
    /// A parameter value is invalid; EC2 uses it for many rule violations.
    pub const INVALID_PARAMETER_VALUE: &str = "InvalidParameterValue";
    /// Parameters that cannot be used together were given together.
    pub const INVALID_PARAMETER_COMBINATION: &str = "InvalidParameterCombination";
    /// A parameter is invalid in general (not just its value).
    pub const INVALID_PARAMETER: &str = "InvalidParameter";
    /// A required parameter is missing.
    pub const MISSING_PARAMETER: &str = "MissingParameter";
    /// The same client token was used with different parameters.
    pub const IDEMPOTENT_PARAMETER_MISMATCH: &str = "IdempotentParameterMismatch";
    /// The instance is not in a state that allows the operation (e.g. terminated).
    pub const INCORRECT_INSTANCE_STATE: &str = "IncorrectInstanceState";
    /// A resource would carry more than 50 user tags.
    pub const TAG_LIMIT_EXCEEDED: &str = "TagLimitExceeded";
    /// An ENI would carry more security groups than allowed.
    pub const SECURITY_GROUPS_PER_INTERFACE_LIMIT_EXCEEDED: &str =
        "SecurityGroupsPerInterfaceLimitExceeded";
    /// Unknown instance type in DescribeInstanceTypes or RunInstances.
    pub const INVALID_INSTANCE_TYPE: &str = "InvalidInstanceType";
    /// Unknown ENI id.
    pub const INVALID_NETWORK_INTERFACE_ID_NOT_FOUND: &str = "InvalidNetworkInterfaceID.NotFound";
    /// ENI id that does not look like `eni-…`.
    pub const INVALID_NETWORK_INTERFACE_ID_MALFORMED: &str = "InvalidNetworkInterfaceID.Malformed";
    /// Unknown subnet id.
    pub const INVALID_SUBNET_ID_NOT_FOUND: &str = "InvalidSubnetID.NotFound";
    /// Subnet id that does not look like `subnet-…`.
    pub const INVALID_SUBNET_ID_MALFORMED: &str = "InvalidSubnetID.Malformed";
    /// Unknown instance id.
    pub const INVALID_INSTANCE_ID_NOT_FOUND: &str = "InvalidInstanceID.NotFound";
    /// Instance id that does not look like `i-…`.
    pub const INVALID_INSTANCE_ID_MALFORMED: &str = "InvalidInstanceID.Malformed";
    /// Unknown VPC id.
    pub const INVALID_VPC_ID_NOT_FOUND: &str = "InvalidVpcID.NotFound";
    /// Unknown security group id.
    pub const INVALID_GROUP_NOT_FOUND: &str = "InvalidGroup.NotFound";
    /// A security group with that name already exists in the VPC.
    pub const INVALID_GROUP_DUPLICATE: &str = "InvalidGroup.Duplicate";
    /// Unknown ENI attachment id.
    pub const INVALID_ATTACHMENT_ID_NOT_FOUND: &str = "InvalidAttachmentID.NotFound";
    /// Unknown trunk association id.
    pub const INVALID_ASSOCIATION_ID_NOT_FOUND: &str = "InvalidAssociationID.NotFound";
    /// Resource id of a kind that cannot be tagged here, or not an id at all.
    pub const INVALID_ID: &str = "InvalidID";
    /// A NextToken that this model did not hand out.
    pub const INVALID_PAGINATION_TOKEN: &str = "InvalidPaginationToken";
    /// The Action parameter names no action this service knows (EC2's wire-level error).
    pub const INVALID_ACTION: &str = "InvalidAction";
    /// The request has no Action parameter.
    pub const MISSING_ACTION: &str = "MissingAction";
    /// A request with `DryRun=true` that would have succeeded (HTTP 412).
    pub const DRY_RUN_OPERATION: &str = "DryRunOperation";
    /// The account's request rate for the action class is exceeded (HTTP 503).
    pub const REQUEST_LIMIT_EXCEEDED: &str = "RequestLimitExceeded";
    /// An internal server error (HTTP 500).
    pub const INTERNAL_ERROR: &str = "InternalError";
    /// The service cannot handle the request right now (HTTP 503).
    pub const UNAVAILABLE: &str = "Unavailable";
    /// VPC CIDR outside /16../28.
    pub const INVALID_VPC_RANGE: &str = "InvalidVpc.Range";
    /// Subnet CIDR not inside the VPC's CIDRs or of a wrong size.
    pub const INVALID_SUBNET_RANGE: &str = "InvalidSubnet.Range";
    /// Subnet CIDR overlaps another subnet of the VPC.
    pub const INVALID_SUBNET_CONFLICT: &str = "InvalidSubnet.Conflict";
}

/// An error exactly as EC2 would answer it: a code from [`codes`] and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Ec2Error {
    /// EC2's error code, e.g. `InvalidNetworkInterfaceID.NotFound`.
    pub code: &'static str,
    /// EC2-style message naming the offending value.
    pub message: String,
}

impl Ec2Error {
    /// An error with the given code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status EC2 sends with this error: 412 for a dry run, 503 for throttling and
    /// unavailability, 500 for internal errors, 400 for every other (client) error.
    pub fn http_status(&self) -> u16 {
        match self.code {
            codes::DRY_RUN_OPERATION => 412,
            codes::REQUEST_LIMIT_EXCEEDED | codes::UNAVAILABLE => 503,
            codes::INTERNAL_ERROR => 500,
            _ => 400,
        }
    }

    /// `InvalidParameterValue` with `message`.
    pub fn invalid_value(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_PARAMETER_VALUE, message)
    }

    pub(crate) fn combination(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_PARAMETER_COMBINATION, message)
    }

    pub(crate) fn eni_not_found(id: impl Display) -> Self {
        Self::new(
            codes::INVALID_NETWORK_INTERFACE_ID_NOT_FOUND,
            format!("The networkInterface ID '{id}' does not exist"),
        )
    }

    pub(crate) fn subnet_not_found(id: impl Display) -> Self {
        Self::new(
            codes::INVALID_SUBNET_ID_NOT_FOUND,
            format!("The subnet ID '{id}' does not exist"),
        )
    }

    pub(crate) fn instance_not_found(id: impl Display) -> Self {
        Self::new(
            codes::INVALID_INSTANCE_ID_NOT_FOUND,
            format!("The instance ID '{id}' does not exist"),
        )
    }

    pub(crate) fn vpc_not_found(id: impl Display) -> Self {
        Self::new(
            codes::INVALID_VPC_ID_NOT_FOUND,
            format!("The vpc ID '{id}' does not exist"),
        )
    }

    pub(crate) fn group_not_found(id: impl Display) -> Self {
        Self::new(
            codes::INVALID_GROUP_NOT_FOUND,
            format!("The security group '{id}' does not exist"),
        )
    }

    pub(crate) fn attachment_not_found(id: impl Display) -> Self {
        Self::new(
            codes::INVALID_ATTACHMENT_ID_NOT_FOUND,
            format!("The network interface attachment ID '{id}' does not exist"),
        )
    }

    pub(crate) fn eni_in_use_for_delete(id: impl Display) -> Self {
        // Verified: real EC2 answers DeleteNetworkInterface on an attached ENI with
        // InvalidParameterValue, not InvalidNetworkInterface.InUse (amazon-vpc-cni-k8s#1399).
        Self::invalid_value(format!("Network interface '{id}' is currently in use."))
    }

    pub(crate) fn eni_in_use_for_attach(id: impl Display) -> Self {
        Self::new(
            codes::INVALID_NETWORK_INTERFACE_IN_USE,
            format!("Interface: [{id}] in use."),
        )
    }

    pub(crate) fn ip_limit_exceeded() -> Self {
        Self::new(
            codes::PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED,
            "Number of private addresses will exceed limit.",
        )
    }

    pub(crate) fn insufficient_addresses() -> Self {
        Self::new(
            codes::INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET,
            "The specified subnet does not have enough free addresses to satisfy the request.",
        )
    }

    pub(crate) fn insufficient_cidr_blocks() -> Self {
        Self::new(
            codes::INSUFFICIENT_CIDR_BLOCKS,
            "The specified subnet does not have enough free cidr blocks to satisfy the request.",
        )
    }

    pub(crate) fn incorrect_instance_state(id: impl Display) -> Self {
        Self::new(
            codes::INCORRECT_INSTANCE_STATE,
            format!("The instance '{id}' is not in a valid state for this operation."),
        )
    }
}

/// Result of a model operation.
pub type Ec2Result<T> = Result<T, Ec2Error>;
