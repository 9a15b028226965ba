//! Unit tests of the EC2 model, one file per concern, each rule checked with EC2's exact code.

mod addresses;
mod describe;
mod interfaces;
mod randomized;
mod subnets;
mod tagging;
mod trunking;

use std::net::Ipv4Addr;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::{Ec2Error, Ec2Model, Ec2Result, Instance, RunInstance, Subnet, Vpc};

/// A model with one VPC (10.0.0.0/16 + an IPv6 /56) and one subnet 10.0.1.0/24 with a /64 in
/// us-west-2a.
pub(super) struct Fixture {
    pub ec2: Ec2Model,
    pub vpc: Vpc,
    pub subnet: Subnet,
}

impl Fixture {
    pub(super) fn new() -> Self {
        let mut ec2 = Ec2Model::new(7);
        let vpc = ec2.create_vpc(net4("10.0.0.0/16")).expect("vpc");
        let block = ec2.assign_vpc_ipv6_cidr_block(&vpc.id).expect("ipv6 /56");
        let subnet = ec2
            .create_subnet(&vpc.id, net4("10.0.1.0/24"), "us-west-2a")
            .expect("subnet");
        let subnet = ec2
            .associate_subnet_ipv6_cidr_block(&subnet.id, first_64(block))
            .expect("ipv6 /64");
        let vpc = ec2.vpc(&vpc.id).expect("vpc").clone();
        Self { ec2, vpc, subnet }
    }

    /// A running instance of `instance_type` in the fixture's subnet.
    pub(super) fn instance(&mut self, instance_type: &str) -> Instance {
        self.ec2
            .run_instance(RunInstance::new(instance_type, &self.subnet.id))
            .expect("run instance")
    }

    /// Another subnet in the fixture's VPC.
    pub(super) fn subnet(&mut self, cidr: &str, az: &str) -> Subnet {
        self.ec2
            .create_subnet(&self.vpc.id, net4(cidr), az)
            .expect("subnet")
    }
}

pub(super) fn net4(s: &str) -> Ipv4Net {
    s.parse().expect("IPv4 CIDR")
}

pub(super) fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("IPv4 address")
}

pub(super) fn first_64(block: Ipv6Net) -> Ipv6Net {
    Ipv6Net::new(block.network(), 64).expect("/64")
}

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The error code of a result that must have failed.
#[track_caller]
pub(super) fn code<T: std::fmt::Debug>(result: Ec2Result<T>) -> &'static str {
    let err: Ec2Error = result.expect_err("the action should have failed");
    err.code
}
