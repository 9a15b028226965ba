//! `my-strategy`: the smallest complete wasmcni allocator, to copy and change.
//!
//! - `allocate`: the lowest free address of the pool, in the provider's block order.
//! - `plan`: keeps `WARM_IPS` free addresses (setting, default 0: no planning) by assigning
//!   secondary IPs to the attached ENI with the most room, or, when every ENI is full, creating
//!   one in the granted subnet with the most free addresses, with the primary ENI's security
//!   groups. Secondary-IP mode only (no /28 prefixes).
//!
//! The decisions are pure functions of the pool and the settings ([`choose_address`] over each
//! block's occupancy, [`plan_requests`] over a [`Pool`]), tested natively below with hand-built
//! pools and with the SDK's stand-in for the host ([`Pool::settle`]); the `Guest` impl only
//! reads the pool, calls them and hands their [`Intent`]s to the host. `init` checks the
//! settings once per load, so a malformed one refuses the plugin instead of failing plans.

use core::net::Ipv4Addr;
use wasmcni_plugin_sdk::allocator::{
    first_free, issue_all, pool_view, setting, BlockOccupancy, Guest, Intent, IpAddress, Pod, Pool,
    ProviderKind,
};

/// The lowest free address of the pool, blocks in the provider's order.
pub fn choose_address(blocks: &[BlockOccupancy]) -> Result<Ipv4Addr, String> {
    first_free(blocks)
}

/// `WARM_IPS` (default 0: no planning).
fn warm_ips() -> Result<u32, String> {
    Ok(setting("WARM_IPS")?.unwrap_or(0))
}

/// What it takes to have `warm_ips` free addresses: nothing when there are enough (or on a node
/// without EC2), else more addresses on the ENI with the most room, else a new ENI.
pub fn plan_requests(pool: &Pool, warm_ips: u32) -> Vec<Intent> {
    let limits = &pool.node.limits;
    let free = u32::try_from(pool.free_count()).unwrap_or(u32::MAX);
    if pool.node.provider != ProviderKind::Ec2 || free >= warm_ips {
        return Vec::new();
    }
    let missing = warm_ips - free;
    // An ENI holds `ipv4-per-eni` addresses at most, its own primary among them.
    let room = |eni_id: &str| {
        limits
            .ipv4_per_eni
            .saturating_sub(1)
            .saturating_sub(pool.slots_of(eni_id))
    };
    if let Some((eni, room)) = pool
        .enis
        .iter()
        .map(|eni| (eni, room(&eni.id)))
        .filter(|(_, room)| *room > 0)
        .max_by_key(|(eni, room)| (*room, core::cmp::Reverse(eni.device_number)))
    {
        return vec![Intent::AssignIps {
            eni_id: eni.id.clone(),
            count: missing.min(room),
        }];
    }
    let enis = u32::try_from(pool.enis.len()).unwrap_or(u32::MAX);
    let primary = pool.enis.iter().find(|eni| eni.primary);
    let subnet = pool.subnets.iter().max_by_key(|s| s.free_addresses);
    match (primary, subnet) {
        (Some(primary), Some(subnet)) if enis < limits.max_enis => vec![Intent::CreateEni {
            subnet_id: subnet.id.clone(),
            security_groups: primary.security_groups.clone(),
            secondary_ips: missing.min(limits.ipv4_per_eni.saturating_sub(1)),
            prefixes: 0,
        }],
        _ => Vec::new(),
    }
}

struct MyStrategy;

impl Guest for MyStrategy {
    fn init() -> Result<(), String> {
        warm_ips().map(drop)
    }

    fn allocate(_pod: Pod) -> Result<IpAddress, String> {
        choose_address(&pool_view::occupancy()).map(IpAddress::from)
    }

    fn plan() -> Result<(), String> {
        let warm_ips = warm_ips()?;
        // A refusal (outside the grant, over the instance's limits) is logged by `issue_all`
        // and not fatal: the other requests still stand, and the next plan asks again.
        issue_all(&plan_requests(&Pool::read(), warm_ips));
        Ok(())
    }
}

wasmcni_plugin_sdk::allocator::export_allocator!(MyStrategy);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmcni_plugin_sdk::allocator::{
        AddressBlock, BlockKind, Cidr, Eni, NodeInfo, NodeLimits, Subnet,
    };

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn secondary(address: &str, eni_id: &str) -> AddressBlock {
        AddressBlock {
            cidr: Cidr {
                network: ip(address).into(),
                prefix_len: 32,
            },
            kind: BlockKind::SecondaryIp,
            eni_id: Some(eni_id.into()),
            route_table: None,
        }
    }

    fn eni(id: &str, device_number: u32) -> Eni {
        Eni {
            id: id.into(),
            device_number,
            primary: device_number == 0,
            subnet_id: "subnet-node".into(),
            subnet_cidr: Cidr {
                network: ip("10.0.0.0").into(),
                prefix_len: 24,
            },
            security_groups: vec!["sg-node".into()],
            primary_ip: u32::from(ip("10.0.0.10")) + device_number,
            age_ms: 60_000,
            tags: Vec::new(),
        }
    }

    /// A t3.medium-like node (3 ENIs × 6 addresses) with `enis` attached, each holding
    /// `per_eni` secondary addresses, and `in_use` of them held by pods.
    fn pool(enis: u32, per_eni: u32, in_use: &[&str]) -> Pool {
        let enis: Vec<Eni> = (0..enis).map(|n| eni(&format!("eni-{n}"), n)).collect();
        let blocks = enis
            .iter()
            .enumerate()
            .flat_map(|(n, eni)| {
                (0..per_eni).map(move |i| secondary(&format!("10.0.{n}.{}", 20 + i), &eni.id))
            })
            .collect();
        Pool {
            node: NodeInfo {
                provider: ProviderKind::Ec2,
                instance_id: "i-0123456789abcdef0".into(),
                instance_type: "t3.medium".into(),
                availability_zone: "eu-west-1a".into(),
                vpc_cidrs: Vec::new(),
                limits: NodeLimits {
                    max_enis: 3,
                    ipv4_per_eni: 6,
                    prefix_delegation: false,
                    max_pods: 17,
                },
            },
            enis,
            blocks,
            in_use: in_use.iter().map(|a| ip(a)).collect(),
            cooling: Default::default(),
            excluded: Default::default(),
            subnets: vec![
                Subnet {
                    id: "subnet-small".into(),
                    cidr: Cidr {
                        network: ip("10.0.8.0").into(),
                        prefix_len: 24,
                    },
                    free_addresses: 10,
                    tags: Vec::new(),
                },
                Subnet {
                    id: "subnet-big".into(),
                    cidr: Cidr {
                        network: ip("10.0.9.0").into(),
                        prefix_len: 24,
                    },
                    free_addresses: 200,
                    tags: Vec::new(),
                },
            ],
            failures: Vec::new(),
        }
    }

    #[test]
    fn allocate_takes_the_lowest_free_address() {
        assert_eq!(
            choose_address(&pool(1, 3, &[]).occupancy()),
            Ok(ip("10.0.0.20"))
        );
        assert_eq!(
            choose_address(&pool(2, 3, &["10.0.0.20", "10.0.0.21"]).occupancy()),
            Ok(ip("10.0.0.22"))
        );
        let full = pool(1, 2, &["10.0.0.20", "10.0.0.21"]);
        assert_eq!(
            choose_address(&full.occupancy()),
            Err("no free address in 2 block(s)".into())
        );
    }

    #[test]
    fn plan_table() {
        let assign = |eni_id: &str, count| Intent::AssignIps {
            eni_id: eni_id.into(),
            count,
        };
        let create = |secondary_ips| Intent::CreateEni {
            subnet_id: "subnet-big".into(),
            security_groups: vec!["sg-node".into()],
            secondary_ips,
            prefixes: 0,
        };
        // eni-1 has lost three of its five addresses: it has more room than eni-0.
        let mut uneven = pool(2, 5, &[]);
        uneven
            .blocks
            .retain(|b| Ipv4Addr::from(b.cidr.network) < ip("10.0.1.22"));
        let cases = [
            ("planning off", pool(1, 0, &[]), 0, vec![]),
            ("enough free", pool(1, 3, &["10.0.0.20"]), 2, vec![]),
            (
                "room on the primary ENI",
                pool(1, 3, &["10.0.0.20"]),
                4,
                vec![assign("eni-0", 2)],
            ),
            (
                "no more than the ENI's room",
                pool(1, 3, &[]),
                9,
                vec![assign("eni-0", 2)],
            ),
            (
                "the ENI with the most room",
                uneven,
                12,
                vec![assign("eni-1", 3)],
            ),
            (
                "every ENI full: a new one",
                pool(2, 5, &[]),
                12,
                vec![create(2)],
            ),
            (
                "a new ENI holds at most 5",
                pool(1, 5, &[]),
                20,
                vec![create(5)],
            ),
            ("at the ENI limit: nothing", pool(3, 5, &[]), 20, vec![]),
        ];
        for (name, pool, warm, expected) in cases {
            assert_eq!(plan_requests(&pool, warm), expected, "{name}");
        }
    }

    #[test]
    fn plan_settles_with_the_warm_addresses() {
        let limits = NodeLimits {
            max_enis: 3,
            ipv4_per_eni: 6,
            prefix_delegation: false,
            max_pods: 17,
        };
        for (warm, enis) in [(0, 1), (5, 1), (8, 2), (15, 3), (40, 3)] {
            let mut pool = Pool::ec2_fixture("t3.medium", limits);
            pool.settle(|pool| plan_requests(pool, warm), 10)
                .unwrap_or_else(|e| panic!("WARM_IPS={warm}: {e}"));
            assert_eq!(pool.enis.len(), enis, "WARM_IPS={warm}");
            assert!(
                pool.free_count() >= (warm as usize).min(15),
                "WARM_IPS={warm}"
            );
        }
    }

    #[test]
    fn no_planning_without_ec2() {
        let mut static_pool = pool(1, 0, &[]);
        static_pool.node.provider = ProviderKind::Static;
        assert_eq!(plan_requests(&static_pool, 8), vec![]);
    }
}
