//! The routes one attachment's interface carries inside the pod.
//!
//! A pod's first interface takes the default route (AWS VPC CNI's shape). An interface beside
//! another network's (podman's `--network a,b`, a Multus `net1`) must not: the pod already has
//! a default route, and a second one either fails (`File exists`) or steals the pod's traffic.
//! The network configuration says what such an interface gets (`defaultRoute`, `routes`,
//! `routeTable`); without `defaultRoute` the default route is installed only when the pod has
//! none yet in that table.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Whether the interface gets a default route through the pod's gateway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultRoute {
    /// Always (`defaultRoute: true`); an existing default route in the table fails the ADD.
    #[default]
    Install,
    /// Never (`defaultRoute: false`).
    Skip,
    /// Only when the pod has no default route of the address's family in the table yet (no
    /// `defaultRoute` key): the data path decides and reports [`DefaultRoute::Install`] or
    /// [`DefaultRoute::Skip`].
    UnlessPresent,
}

/// What an interface routes through the pod's gateway (169.254.1.1 or fe80::1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRoutes {
    /// The default route of the address's family.
    pub default_route: DefaultRoute,
    /// Further destinations (`routes`), of the address's family, none of them a default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<IpNet>,
    /// The pod-side routing table these routes go in (`routeTable`), with the rule
    /// `from <pod address> lookup <table>` in the pod at [`POD_TABLE_RULE_PRIORITY`], so
    /// traffic from this interface's address leaves through it; `None` is the main table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// A dual-stack interface's IPv6 default route where it was decided apart from the IPv4
    /// one (no `defaultRoute` key, and the pod already had a default route of one family
    /// only); `None`: as [`PodRoutes::default_route`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route_v6: Option<DefaultRoute>,
}

/// Priority of the pod-side rule `from <pod address> lookup <routeTable>` (before `main`'s
/// 32766).
pub const POD_TABLE_RULE_PRIORITY: u32 = 1000;

impl PodRoutes {
    /// The first interface's shape: a default route in the main table, nothing else. Stored
    /// allocations without routes (older datastores) have it.
    pub fn is_first_interface(&self) -> bool {
        *self == PodRoutes::default()
    }

    /// The same routes with the default route decided: `present` says whether the pod
    /// already has a default route of the family in [`PodRoutes::table`].
    pub fn resolved(&self, present: bool) -> PodRoutes {
        let default_route = match self.default_route {
            DefaultRoute::UnlessPresent if present => DefaultRoute::Skip,
            DefaultRoute::UnlessPresent => DefaultRoute::Install,
            decided => decided,
        };
        PodRoutes {
            default_route,
            ..self.clone()
        }
    }

    /// The routes of `ip`'s family: a dual-stack interface's destinations are of both
    /// families, and each address routes those of its own, with its family's default route
    /// (the table is the interface's, for both).
    pub fn of_family(&self, ip: std::net::IpAddr) -> PodRoutes {
        PodRoutes {
            default_route: match (ip.is_ipv6(), self.default_route_v6) {
                (true, Some(v6)) => v6,
                _ => self.default_route,
            },
            destinations: self
                .destinations
                .iter()
                .filter(|d| d.addr().is_ipv4() == ip.is_ipv4())
                .copied()
                .collect(),
            table: self.table,
            default_route_v6: None,
        }
    }

    /// A dual-stack interface's routes with each family's default route decided by whether
    /// the pod already has one of that family in [`PodRoutes::table`].
    pub fn resolved_dual(&self, present_v4: bool, present_v6: bool) -> PodRoutes {
        let v4 = self.resolved(present_v4);
        let v6 = self.resolved(present_v6).default_route;
        PodRoutes {
            default_route_v6: (v6 != v4.default_route).then_some(v6),
            ..v4
        }
    }

    /// Whether the default route is (to be) installed; an undecided one counts as not.
    pub fn has_default(&self) -> bool {
        self.default_route == DefaultRoute::Install
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undecided_default_route_follows_the_pod() {
        let secondary = PodRoutes {
            default_route: DefaultRoute::UnlessPresent,
            destinations: vec!["10.0.0.0/8".parse().unwrap()],
            table: None,
            default_route_v6: None,
        };
        assert_eq!(secondary.resolved(true).default_route, DefaultRoute::Skip);
        assert_eq!(
            secondary.resolved(false).default_route,
            DefaultRoute::Install
        );
        assert_eq!(
            secondary.resolved(true).destinations,
            secondary.destinations
        );
        // A decided one is never changed by what the pod has.
        let always = PodRoutes::default();
        assert!(always.resolved(true).has_default());
        assert!(always.is_first_interface());
        assert!(!secondary.resolved(true).is_first_interface());
    }

    #[test]
    fn each_family_of_a_dual_stack_interface_routes_its_own_destinations() {
        let routes = PodRoutes {
            default_route: DefaultRoute::Skip,
            destinations: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            table: Some(100),
            default_route_v6: None,
        };
        let v4 = routes.of_family("10.1.0.1".parse().unwrap());
        let v6 = routes.of_family("fd00:1::1".parse().unwrap());
        assert_eq!(
            v4.destinations,
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert_eq!(v6.destinations, vec!["fd00::/8".parse::<IpNet>().unwrap()]);
        assert_eq!(
            (v4.table, v6.default_route),
            (Some(100), DefaultRoute::Skip)
        );
    }

    #[test]
    fn a_dual_stack_interface_decides_each_familys_default_route_apart() {
        let unless = PodRoutes {
            default_route: DefaultRoute::UnlessPresent,
            ..PodRoutes::default()
        };
        let v4: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let v6: std::net::IpAddr = "fd00::1".parse().unwrap();
        // The pod has an IPv4 default route (another network's) and no IPv6 one.
        let decided = unless.resolved_dual(true, false);
        assert_eq!(decided.of_family(v4).default_route, DefaultRoute::Skip);
        assert_eq!(decided.of_family(v6).default_route, DefaultRoute::Install);
        assert!(
            !decided.has_default(),
            "the IPv4 decision is the interface's first"
        );
        // And the reverse; and the same decision twice is stored once.
        let decided = unless.resolved_dual(false, true);
        assert!(decided.of_family(v4).has_default() && !decided.of_family(v6).has_default());
        let same = unless.resolved_dual(false, false);
        assert_eq!(same.default_route_v6, None);
        assert!(same.of_family(v6).has_default());
        // Written and read back (older records, without the key, read as before).
        let json = serde_json::to_value(unless.resolved_dual(true, false)).unwrap();
        assert_eq!(json["default_route_v6"], "install");
        let back: PodRoutes = serde_json::from_value(json).unwrap();
        assert_eq!(back.of_family(v6).default_route, DefaultRoute::Install);
    }

    #[test]
    fn routes_read_back_as_written() {
        let json = serde_json::to_value(PodRoutes::default()).unwrap();
        assert_eq!(json, serde_json::json!({"default_route": "install"}));
        let back: PodRoutes = serde_json::from_value(json).unwrap();
        assert!(back.is_first_interface());
    }
}
