//! What the sampler reads of the EC2 model at each instant: the node's assigned addresses and
//! ENIs, and its subnet's free addresses and whole free /28 blocks.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;
use wasmcni_ec2::in_process::InProcessEc2;
use wasmcni_ec2_model::{Filter, Page};

/// The node at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Milliseconds from the start of the trace.
    pub t_ms: u64,
    /// Pods holding an address (ADD answered, DEL not yet sent).
    pub pods: u32,
    /// Addresses EC2 has assigned to the node's ENIs for pods: secondary IPs and every address
    /// of their /28 prefixes.
    pub assigned: u32,
    /// ENIs attached to the node, the primary included.
    pub enis: u32,
    /// Free addresses of the node's subnet.
    pub subnet_free: u32,
    /// Aligned /28 blocks of the subnet with no address in use: how many prefixes EC2 could
    /// still delegate.
    pub free_blocks: u32,
}

impl Sample {
    /// Assigned addresses no pod holds.
    pub fn idle(&self) -> u32 {
        self.assigned.saturating_sub(self.pods)
    }

    /// The share of the subnet's free addresses outside any whole free /28 (0: every free
    /// address could still go in a prefix).
    pub fn fragmentation(&self) -> f64 {
        if self.subnet_free == 0 {
            0.0
        } else {
            (1.0 - f64::from(self.free_blocks) * 16.0 / f64::from(self.subnet_free)).max(0.0)
        }
    }
}

/// What the sampler reads.
pub(crate) struct Sampling {
    pub(crate) ec2: InProcessEc2,
    pub(crate) node: String,
    pub(crate) subnet: String,
}

impl Sampling {
    pub(crate) fn sample(&self, t_ms: u64, pods: u32) -> Sample {
        self.ec2.with_model(|model| {
            let enis = model.instance_network_interfaces(&self.node);
            let subnet = model.subnet(&self.subnet);
            let cidr = subnet.as_ref().map(|s| s.cidr_block);
            let assigned = enis
                .iter()
                .map(|eni| {
                    eni.secondary_private_ip_addresses.len() as u32
                        + eni
                            .ipv4_prefixes
                            .iter()
                            .map(|p| 1u32 << (32 - p.prefix_len()))
                            .sum::<u32>()
                })
                .sum();
            // Every ENI of the subnet holds addresses a prefix could not take: the node's, and
            // any other (detached, not yet deleted), as EC2's free count has them.
            let in_subnet = model
                .describe_network_interfaces(
                    &[],
                    &[Filter::new("subnet-id", [self.subnet.as_str()])],
                    &Page::default(),
                )
                .map(|page| page.items)
                .unwrap_or_default();
            let mut used: Vec<Ipv4Addr> = Vec::new();
            for eni in &in_subnet {
                used.push(eni.private_ip_address);
                used.extend(&eni.secondary_private_ip_addresses);
                for prefix in &eni.ipv4_prefixes {
                    used.extend(prefix.hosts().chain([prefix.network(), prefix.broadcast()]));
                }
            }
            Sample {
                t_ms,
                pods,
                assigned,
                enis: enis.len() as u32,
                subnet_free: subnet.as_ref().map_or(0, |s| s.available_ip_address_count),
                free_blocks: cidr.map_or(0, |c| free_blocks(c, &used)),
            }
        })
    }
}

/// Aligned /28 blocks of `subnet` that hold none of `used` nor an address EC2 reserves (the
/// first four and the last).
fn free_blocks(subnet: Ipv4Net, used: &[Ipv4Addr]) -> u32 {
    let base = u32::from(subnet.network());
    let size = 1u64 << (32 - subnet.prefix_len());
    let blocks = (size / 16) as usize;
    if blocks == 0 {
        return 0;
    }
    let mut taken = vec![false; blocks];
    let mut mark = |offset: u32| {
        if let Some(block) = taken.get_mut((offset / 16) as usize) {
            *block = true;
        }
    };
    for reserved in [0, 1, 2, 3] {
        mark(reserved);
    }
    mark((size - 1) as u32);
    for address in used {
        if let Some(offset) = u32::from(*address).checked_sub(base) {
            mark(offset);
        }
    }
    taken.iter().filter(|t| !**t).count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_blocks_count_whole_free_28s_and_skip_ec2s_reserved_addresses() {
        let subnet: Ipv4Net = "10.0.0.0/26".parse().unwrap();
        // Four /28s: the first holds the reserved .0-.3, the last the broadcast .63.
        assert_eq!(free_blocks(subnet, &[]), 2);
        assert_eq!(free_blocks(subnet, &["10.0.0.17".parse().unwrap()]), 1);
        assert_eq!(
            free_blocks(
                subnet,
                &["10.0.0.17".parse().unwrap(), "10.0.0.40".parse().unwrap()]
            ),
            0
        );
        // An address outside the subnet marks nothing.
        assert_eq!(free_blocks(subnet, &["10.0.1.17".parse().unwrap()]), 2);
    }

    #[test]
    fn fragmentation_is_the_free_share_no_prefix_could_use() {
        let sample = Sample {
            t_ms: 0,
            pods: 3,
            assigned: 10,
            enis: 1,
            subnet_free: 64,
            free_blocks: 2,
        };
        assert_eq!(sample.idle(), 7);
        assert!((sample.fragmentation() - 0.5).abs() < 1e-9);
    }
}
