//! A recording, in-memory [`Datapath`] for unit tests of the daemon's logic without root.
//!
//! It keeps the state a real node would have (veths and rules) so recovery and CHECK can be
//! exercised, records every call in order, and can be told to fail the next setup.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use super::{
    format_mac, Created, Datapath, DatapathError, EniLink, HostSide, NetlinkCause, NodeState,
    PodAttachment, PodRoutes,
};

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `prepare_node`.
    PrepareNode,
    /// `prepare_ipv6` with this primary link.
    PrepareIpv6(Option<String>),
    /// `setup_pod` for this host veth.
    Setup(String),
    /// `check_pod` for this host veth.
    Check(String),
    /// `teardown_pod` for this host veth.
    Teardown(String),
    /// `detach_pod` for this host veth.
    Detach(String),
    /// `remove_link` of this host veth (by its index), alone or in a batch.
    RemoveLink(String),
    /// `remove_links` of these host veths, before their `RemoveLink` each.
    RemoveLinks(Vec<String>),
    /// `remove_veth` for this name.
    RemoveVeth(String),
    /// `remove_rules` for this address.
    RemoveRules(IpAddr),
    /// `adjust_pod` of this pod interface with these adjustments.
    Adjust(String, Vec<wasmcni_core::NetlinkRequest>),
    /// `setup_eni` for the link with this MAC and table.
    SetupEni(String, u32),
    /// `teardown_eni` of this table.
    TeardownEni(u32),
    /// `ensure_connmark_rule` with this mark.
    ConnmarkRule(u32),
    /// `apply_snat` of these rules to this backend (`None`: the detected one).
    Snat(crate::snat::SnatRules, Option<crate::snat::Backend>),
    /// `apply_egress_snat` of these rules (`None`: removed).
    EgressSnat(Option<crate::snat::EgressRules>),
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    veths: BTreeMap<String, IpAddr>,
    /// A dual-stack pod's IPv6 address, by host veth (routed through it like its IPv4 one).
    veths_v6: BTreeMap<String, std::net::Ipv6Addr>,
    rules: Vec<(IpAddr, Option<u32>)>,
    fail_next_setup: Option<nix::errno::Errno>,
    fail_next_eni_setup: Option<nix::errno::Errno>,
    uplink_mtu: Option<u32>,
    uplink_v6: Option<crate::Uplink>,
    /// The MTU each host veth was set up with.
    mtus: BTreeMap<String, u32>,
    teardown_failures: usize,
    foreign_routes: Vec<IpAddr>,
    /// Each host veth's pod namespace and the routes its interface got there.
    pod_routes: BTreeMap<String, (String, PodRoutes)>,
    /// Each host veth's interface index (never reused, as in the kernel), and the last given.
    indexes: BTreeMap<String, u32>,
    last_index: u32,
    /// Host veths set down by `detach_pod`.
    down: std::collections::BTreeSet<String>,
    /// Failures left for `remove_link`.
    link_removal_failures: usize,
}

/// The recording fake.
#[derive(Debug)]
pub struct FakeDatapath {
    state: Mutex<State>,
    /// Closed (`false`): `remove_link` waits, as a slow kernel would, until it is opened.
    link_removals: tokio::sync::watch::Sender<bool>,
    /// Host veths whose removal hangs (the kernel waiting for a device that never frees).
    hung_removals: tokio::sync::watch::Sender<Vec<String>>,
}

impl Default for FakeDatapath {
    fn default() -> FakeDatapath {
        FakeDatapath {
            state: Mutex::default(),
            link_removals: tokio::sync::watch::channel(true).0,
            hung_removals: tokio::sync::watch::channel(Vec::new()).0,
        }
    }
}

impl FakeDatapath {
    /// An empty node.
    pub fn new() -> FakeDatapath {
        FakeDatapath::default()
    }

    /// Makes the next `setup_pod` fail with the kernel's `errno` after it created the veth
    /// (as a real setup that fails halfway does).
    pub fn fail_next_setup(&self, errno: nix::errno::Errno) {
        self.lock().fail_next_setup = Some(errno);
    }

    /// The MTU the last setup of `host_veth` asked for.
    pub fn mtu_of(&self, host_veth: &str) -> Option<u32> {
        self.lock().mtus.get(host_veth).copied()
    }

    /// Gives the node an uplink (a default route) with this MTU.
    pub fn set_uplink_mtu(&self, mtu: u32) {
        self.lock().uplink_mtu = Some(mtu);
    }

    /// Gives the node an IPv6 default route through link `name` of MTU `mtu`.
    pub fn set_uplink_v6(&self, name: &str, mtu: u32) {
        self.lock().uplink_v6 = Some(crate::Uplink {
            name: name.to_owned(),
            mtu: Some(mtu),
        });
    }

    /// Makes the next `setup_eni` fail with the kernel's `errno` (its table's default route
    /// refused).
    pub fn fail_next_eni_setup(&self, errno: nix::errno::Errno) {
        self.lock().fail_next_eni_setup = Some(errno);
    }

    /// Holds every `remove_link` (a veth deletion the kernel has not finished) until
    /// [`FakeDatapath::finish_link_removals`].
    pub fn hold_link_removals(&self) {
        self.link_removals.send_replace(false);
    }

    /// Lets held and later `remove_link` calls finish.
    pub fn finish_link_removals(&self) {
        self.link_removals.send_replace(true);
    }

    /// Makes every removal of `host_veth` hang until [`FakeDatapath::release_link_removal`].
    pub fn hang_link_removal(&self, host_veth: &str) {
        self.hung_removals
            .send_modify(|hung| hung.push(host_veth.to_owned()));
    }

    /// Lets the hung removals of `host_veth` finish.
    pub fn release_link_removal(&self, host_veth: &str) {
        self.hung_removals
            .send_modify(|hung| hung.retain(|h| h != host_veth));
    }

    /// Makes the next `count` link removals fail (the kernel refusing to delete).
    pub fn fail_link_removals(&self, count: usize) {
        self.lock().link_removal_failures = count;
    }

    /// Whether `detach_pod` set this host veth down (and it still exists).
    pub fn is_down(&self, host_veth: &str) -> bool {
        let state = self.lock();
        state.veths.contains_key(host_veth) && state.down.contains(host_veth)
    }

    /// Makes the next `count` teardowns fail (the kernel refusing to delete).
    pub fn fail_teardowns(&self, count: usize) {
        self.lock().teardown_failures = count;
    }

    /// Simulates another CNI's pod on the node: a /32 route to `ip` through a veth that is
    /// not wasmcni's.
    pub fn add_foreign_pod_route(&self, ip: impl Into<IpAddr>) {
        self.lock().foreign_routes.push(ip.into());
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The routes the pod interface of `host_veth` got, as set up.
    pub fn routes_of(&self, host_veth: &str) -> Option<PodRoutes> {
        self.lock()
            .pod_routes
            .get(host_veth)
            .map(|(_, r)| r.clone())
    }

    /// Host veths present now, with the pod address each routes to.
    pub fn veths(&self) -> BTreeMap<String, IpAddr> {
        self.lock().veths.clone()
    }

    /// The pod rules present now: each address, with the table of its from-pod rule.
    pub fn rules(&self) -> Vec<(IpAddr, Option<u32>)> {
        self.lock().rules.clone()
    }

    /// Simulates the pod's namespace being deleted: its veth disappears, rules stay.
    pub fn remove_veth(&self, name: &str) {
        self.lock().forget_veth(name);
    }

    /// Simulates a leftover from a crashed ADD: a veth and rule the datastore may not know.
    pub fn add_orphan(&self, name: &str, ip: impl Into<IpAddr>) {
        let ip = ip.into();
        let mut state = self.lock();
        state.add_veth(name, ip);
        state.rules.push((ip, None));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn add_veth(&mut self, name: &str, ip: IpAddr) {
        self.last_index += 1;
        self.indexes.insert(name.to_owned(), self.last_index);
        self.down.remove(name);
        self.veths.insert(name.to_owned(), ip);
    }

    fn forget_veth(&mut self, name: &str) {
        self.veths.remove(name);
        self.veths_v6.remove(name);
        self.pod_routes.remove(name);
        self.indexes.remove(name);
        self.down.remove(name);
    }
}

impl Datapath for FakeDatapath {
    async fn prepare_node(&self) -> Result<(), DatapathError> {
        self.lock().calls.push(Call::PrepareNode);
        Ok(())
    }

    async fn prepare_ipv6(&self, primary_link: Option<&str>) -> Result<(), DatapathError> {
        self.lock()
            .calls
            .push(Call::PrepareIpv6(primary_link.map(str::to_owned)));
        Ok(())
    }

    async fn setup_pod(&self, a: &PodAttachment) -> Result<Created, DatapathError> {
        // A real setup awaits the kernel several times; let other requests interleave.
        tokio::task::yield_now().await;
        let routes = {
            let mut state = self.lock();
            state.calls.push(Call::Setup(a.host.host_veth.clone()));
            state.mtus.insert(a.host.host_veth.clone(), a.mtu);
            // As the real one: a stale host veth of the same name is deleted first.
            if state.veths.contains_key(&a.host.host_veth) {
                state.calls.push(Call::RemoveVeth(a.host.host_veth.clone()));
                state.forget_veth(&a.host.host_veth);
            }
            // Like the real one, a failing setup may leave what it created so far.
            state.add_veth(&a.host.host_veth, a.host.ip);
            if let Some(errno) = state.fail_next_setup.take() {
                return Err(DatapathError::Netlink {
                    operation: format!("add host route {}/32", a.host.ip),
                    cause: NetlinkCause::Kernel(errno),
                });
            }
            if let Some(v6) = a.host.ipv6 {
                state.veths_v6.insert(a.host.host_veth.clone(), v6);
            }
            for ip in a.host.addresses() {
                state.rules.push((ip, a.host.table_of(ip)));
            }
            // As in a real pod: a default route of the table taken by another interface.
            let present = state.pod_routes.values().any(|(netns, routes)| {
                *netns == a.netns && routes.table == a.routes.table && routes.has_default()
            });
            let routes = a.routes.resolved(present);
            if routes.has_default() && present {
                return Err(DatapathError::Netlink {
                    operation: "add route default via 169.254.1.1 in the pod".into(),
                    cause: NetlinkCause::Kernel(nix::errno::Errno::EEXIST),
                });
            }
            state
                .pod_routes
                .insert(a.host.host_veth.clone(), (a.netns.clone(), routes.clone()));
            routes
        };
        tokio::task::yield_now().await;
        Ok(Created {
            host_mac: [2, 0, 0, 0, 0, 1],
            pod_mac: a.pod_mac.unwrap_or([2, 0, 0, 0, 0, 2]),
            routes,
        })
    }

    async fn check_pod(&self, a: &PodAttachment) -> Result<(), DatapathError> {
        let mut state = self.lock();
        state.calls.push(Call::Check(a.host.host_veth.clone()));
        let mut missing = Vec::new();
        if state.veths.get(&a.host.host_veth) != Some(&a.host.ip) {
            missing.push(format!("host veth {} is missing", a.host.host_veth));
        }
        if let Some(v6) = a.host.ipv6 {
            if state.veths_v6.get(&a.host.host_veth) != Some(&v6) {
                missing.push(format!(
                    "host route {v6}/128 dev {} is missing",
                    a.host.host_veth
                ));
            }
        }
        for address in a.host.addresses() {
            if !state.rules.iter().any(|(ip, _)| *ip == address) {
                missing.push(format!(
                    "rule to {address} lookup main priority 512 is missing"
                ));
            }
            // As the real one: a default route the attachment names must be the pod's.
            let installed = state
                .pod_routes
                .get(&a.host.host_veth)
                .is_some_and(|(_, routes)| routes.of_family(address).has_default());
            if a.routes.of_family(address).has_default() && !installed {
                missing.push(format!(
                    "default route via {} dev {} in the pod is missing",
                    crate::pod_gateway(address),
                    a.pod_ifname
                ));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DatapathError::CheckFailed { missing })
        }
    }

    async fn adjust_pod(
        &self,
        a: &PodAttachment,
        adjustments: &[wasmcni_core::NetlinkRequest],
    ) -> Result<(), DatapathError> {
        self.lock()
            .calls
            .push(Call::Adjust(a.pod_ifname.clone(), adjustments.to_vec()));
        Ok(())
    }

    async fn teardown_pod(&self, host: &HostSide) -> Result<(), DatapathError> {
        tokio::task::yield_now().await;
        let mut state = self.lock();
        state.calls.push(Call::Teardown(host.host_veth.clone()));
        if state.teardown_failures > 0 {
            state.teardown_failures -= 1;
            return Err(DatapathError::Netlink {
                operation: format!("delete host veth {}", host.host_veth),
                cause: NetlinkCause::Kernel(nix::errno::Errno::EBUSY),
            });
        }
        state.forget_veth(&host.host_veth);
        state
            .rules
            .retain(|(ip, _)| !host.addresses().any(|a| a == *ip));
        Ok(())
    }

    async fn detach_pod(&self, host: &HostSide) -> Result<Option<u32>, DatapathError> {
        tokio::task::yield_now().await;
        let mut state = self.lock();
        state.calls.push(Call::Detach(host.host_veth.clone()));
        state
            .rules
            .retain(|(ip, _)| !host.addresses().any(|a| a == *ip));
        let index = state.indexes.get(&host.host_veth).copied();
        if index.is_some() {
            state.down.insert(host.host_veth.clone());
        }
        Ok(index)
    }

    async fn remove_link(&self, index: u32, name: &str) -> Result<(), DatapathError> {
        let mut open = self.link_removals.subscribe();
        // The sender lives as long as `self`.
        let _ = open.wait_for(|open| *open).await;
        let mut hung = self.hung_removals.subscribe();
        let _ = hung.wait_for(|hung| !hung.iter().any(|h| h == name)).await;
        let mut state = self.lock();
        state.calls.push(Call::RemoveLink(name.to_owned()));
        if state.link_removal_failures > 0 {
            state.link_removal_failures -= 1;
            return Err(DatapathError::Netlink {
                operation: format!("delete host veth {name}"),
                cause: NetlinkCause::Kernel(nix::errno::Errno::EBUSY),
            });
        }
        let named = state
            .indexes
            .iter()
            .find(|(_, i)| **i == index)
            .map(|(name, _)| name.clone());
        if let Some(name) = named {
            state.forget_veth(&name);
        }
        Ok(())
    }

    async fn remove_links(&self, links: &[(u32, String)]) -> Vec<Result<(), DatapathError>> {
        self.lock().calls.push(Call::RemoveLinks(
            links.iter().map(|(_, name)| name.clone()).collect(),
        ));
        let mut results = Vec::with_capacity(links.len());
        for (index, name) in links {
            results.push(self.remove_link(*index, name).await);
        }
        results
    }

    async fn veth_exists(&self, name: &str) -> Result<bool, DatapathError> {
        Ok(self.lock().veths.contains_key(name))
    }

    async fn remove_veth(&self, name: &str) -> Result<(), DatapathError> {
        let mut state = self.lock();
        state.calls.push(Call::RemoveVeth(name.to_owned()));
        state.forget_veth(name);
        Ok(())
    }

    async fn remove_rules(&self, ip: IpAddr, _: Option<u32>) -> Result<(), DatapathError> {
        let mut state = self.lock();
        state.calls.push(Call::RemoveRules(ip));
        state.rules.retain(|(rule_ip, _)| *rule_ip != ip);
        Ok(())
    }

    async fn setup_eni(&self, eni: &EniLink) -> Result<String, DatapathError> {
        let mut state = self.lock();
        state
            .calls
            .push(Call::SetupEni(format_mac(&eni.mac), eni.table));
        if let Some(errno) = state.fail_next_eni_setup.take() {
            return Err(DatapathError::Netlink {
                operation: format!("add the default route of table {}", eni.table),
                cause: NetlinkCause::Kernel(errno),
            });
        }
        Ok(format!("eth{}", eni.table - 1))
    }

    async fn uplink_mtu(&self) -> Result<Option<u32>, DatapathError> {
        Ok(self.lock().uplink_mtu)
    }

    async fn uplink_v6(&self) -> Result<Option<crate::Uplink>, DatapathError> {
        Ok(self.lock().uplink_v6.clone())
    }

    async fn link_with_mac(&self, _mac: [u8; 6]) -> Result<Option<String>, DatapathError> {
        Ok(Some("eth0".to_owned()))
    }

    async fn teardown_eni(&self, table: u32) -> Result<(), DatapathError> {
        self.lock().calls.push(Call::TeardownEni(table));
        Ok(())
    }

    async fn ensure_connmark_rule(&self, mark: u32) -> Result<(), DatapathError> {
        self.lock().calls.push(Call::ConnmarkRule(mark));
        Ok(())
    }

    /// Checks and records the rules (as the real one does before it writes them); the
    /// detected backend is iptables.
    async fn apply_snat(
        &self,
        rules: &crate::snat::SnatRules,
        backend: Option<crate::snat::Backend>,
    ) -> Result<crate::snat::Backend, DatapathError> {
        rules.check_before_apply()?;
        self.lock().calls.push(Call::Snat(rules.clone(), backend));
        Ok(backend.unwrap_or(crate::snat::Backend::Iptables))
    }

    async fn apply_egress_snat(
        &self,
        rules: Option<&crate::snat::EgressRules>,
        backend: Option<crate::snat::Backend>,
    ) -> Result<crate::snat::Backend, DatapathError> {
        self.lock().calls.push(Call::EgressSnat(rules.cloned()));
        Ok(backend.unwrap_or(crate::snat::Backend::Iptables))
    }

    async fn node_state(&self, veth_prefix: &str) -> Result<NodeState, DatapathError> {
        let state = self.lock();
        Ok(NodeState {
            veths: state
                .veths
                .keys()
                .filter(|v| v.starts_with(veth_prefix))
                .cloned()
                .collect(),
            to_pod_rules: state.rules.iter().map(|(ip, _)| *ip).collect(),
            from_pod_rules: state
                .rules
                .iter()
                .filter_map(|(ip, t)| match (ip, t) {
                    (IpAddr::V4(ip), Some(t)) => Some((*ip, *t)),
                    _ => None,
                })
                .collect(),
            foreign_pod_routes: state.foreign_routes.clone(),
            // A veth's host route goes with it being up.
            pod_routes: state
                .veths
                .iter()
                .filter(|(name, _)| name.starts_with(veth_prefix) && !state.down.contains(*name))
                .flat_map(|(name, ip)| {
                    let v6 = state
                        .veths_v6
                        .get(name)
                        .map(|v6| (IpAddr::V6(*v6), name.clone()));
                    std::iter::once((*ip, name.clone())).chain(v6)
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snat::{Backend, Randomize, SnatRules};

    fn rules(veth_prefix: &str) -> SnatRules {
        SnatRules {
            primary_ip: "10.0.0.5".parse().unwrap(),
            primary_link: "eth0".into(),
            veth_prefix: veth_prefix.into(),
            vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
            exclude_cidrs: Vec::new(),
            external_snat: false,
            randomize: Randomize::Fully,
            connmark: crate::snat::DEFAULT_CONNMARK,
        }
    }

    #[tokio::test]
    async fn snat_rules_are_checked_like_the_real_ones_and_recorded() {
        let fake = FakeDatapath::new();
        let applied = fake.apply_snat(&rules("eni"), None).await.unwrap();
        assert_eq!(applied, Backend::Iptables, "the fake detects iptables");
        assert_eq!(
            fake.apply_snat(&rules("eni"), Some(Backend::Nftables))
                .await
                .unwrap(),
            Backend::Nftables
        );
        // A prefix that would match the node's own interfaces is refused before anything is
        // recorded, as the real data path refuses it before it writes a rule.
        let refused = fake.apply_snat(&rules("eth"), None).await.unwrap_err();
        assert!(matches!(refused, DatapathError::Snat(_)), "{refused}");
        assert_eq!(
            fake.calls(),
            vec![
                Call::Snat(rules("eni"), None),
                Call::Snat(rules("eni"), Some(Backend::Nftables)),
            ]
        );
    }
}
