//! The reconciler's rules against a model of the node's ENIs in EC2 (the [`EniProvider`] the
//! daemon sees) and the recording fake data path, without root or an emulator: what leaves the
//! pool, what EC2 is asked, and what comes back when EC2 refuses or a link fails. The same
//! requests against the real provider and the EC2 emulator are the root tests of
//! `tests/harness/tests/it/ec2.rs`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use wasmcni_cni::error::codes;
use wasmcni_cni::proto::DaemonResponse;
use wasmcni_cni::request::Command;
use wasmcni_core::eni::{Added, Ec2Error, Eni, EniProvider, ImdsEni, NodeEni, NodeIdentity};
use wasmcni_core::ipam::{Inventory, IpFamily, Provider, ProviderView};
use wasmcni_core::pool_view::{NodeInfo, NodeLimits};
use wasmcni_core::EniRequest;
use wasmcni_datapath::fake::Call;

use super::{execute, pass};
use crate::server::handler::tests::{fixture_provider, ip_of, Fixture};

/// The node's ENIs as EC2 holds them, and the calls the reconciler made.
struct ModelEc2 {
    identity: NodeIdentity,
    /// IPv4, or dual stack (the primary ENI then also holds a /80).
    family: IpFamily,
    /// How long a released address rests (the real provider's default: 30 s).
    cooldown: Duration,
    state: Mutex<ModelState>,
}

#[derive(Default)]
struct ModelState {
    /// Attached ENIs by device: the provider's picture, which the model keeps equal to EC2.
    enis: BTreeMap<u32, NodeEni>,
    /// The next unassign fails with this code, EC2 having carried it out for these addresses
    /// anyway (a lost reply).
    fail_unassign: Option<(&'static str, Vec<Ipv4Addr>)>,
    /// What a failed unassign carried out all the same.
    unassigned_anyway: Vec<Ipv4Addr>,
    /// EC2 cannot be asked after a failed unassign (a describe fails too).
    unreachable: bool,
    /// The next address `assign` hands out (10.0.1.x).
    next_host: u8,
    /// The EC2 calls made, in order.
    calls: Vec<String>,
    /// `assign_address` carries out its assignment, then waits for this before answering
    /// (EC2 has done it; the reply is on its way).
    assign_reply: Option<Arc<tokio::sync::Notify>>,
    /// `assign_address` waits for this before EC2 carries the assignment out (EC2 is slow).
    assign_gate: Option<Arc<tokio::sync::Notify>>,
    /// The next `assign_address` fails with this code (and assigns nothing).
    fail_assign_address: Option<&'static str>,
    /// Every `assign` fails with this code (and assigns nothing).
    fail_assign: Option<&'static str>,
}

impl ModelState {
    /// The attached ENI `eni_id`, or EC2's answer for an assignment to one that is not there.
    fn eni_mut(&mut self, eni_id: &str) -> Result<&mut NodeEni, Ec2Error> {
        self.enis
            .values_mut()
            .find(|e| e.eni.id == eni_id)
            .ok_or_else(|| Ec2Error::Api {
                action: "AssignPrivateIpAddresses",
                code: "InvalidNetworkInterfaceID.NotFound".into(),
                message: format!("{eni_id} does not exist"),
            })
    }
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn node_eni(id: &str, device: u32, primary_ip: &str, secondary: &[&str]) -> NodeEni {
    NodeEni {
        eni: Eni {
            id: id.to_owned(),
            mac: format!("02:00:00:00:00:{device:02x}"),
            subnet_id: "subnet-a".into(),
            security_groups: vec!["sg-1".into()],
            primary_ip: ip(primary_ip),
            secondary_ips: secondary.iter().map(|s| ip(s)).collect(),
            prefixes: Vec::new(),
            ipv6_prefixes: Vec::new(),
            status: "in-use".into(),
            interface_type: "interface".into(),
            attachment: None,
            tags: Vec::new(),
        },
        device,
        attachment_id: format!("eni-attach-{device}"),
        subnet_cidr: "10.0.0.0/16".parse().unwrap(),
        attached_unix_ms: 0,
        managed: true,
        linked: true,
    }
}

impl ModelEc2 {
    /// A node with its primary ENI and `eni-1` at device 1 holding `secondary`, whose released
    /// addresses do not rest (see [`ModelEc2::with_cooldown`]).
    fn new(secondary: &[&str]) -> Arc<ModelEc2> {
        Self::with_cooldown(secondary, Duration::ZERO)
    }

    fn with_cooldown(secondary: &[&str], cooldown: Duration) -> Arc<ModelEc2> {
        let primary = node_eni("eni-0", 0, "10.0.0.10", &[]);
        let eni = node_eni("eni-1", 1, "10.0.1.1", secondary);
        Arc::new(ModelEc2 {
            family: IpFamily::Ipv4,
            identity: NodeIdentity {
                instance_id: "i-model".into(),
                instance_type: "m5.large".into(),
                availability_zone: "us-west-2a".into(),
                region: "us-west-2".into(),
                primary_mac: primary.eni.mac.clone(),
                enis: Vec::<ImdsEni>::new(),
            },
            cooldown,
            state: Mutex::new(ModelState {
                enis: BTreeMap::from([(0, primary), (1, eni)]),
                next_host: 20,
                ..ModelState::default()
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ModelState> {
        self.state.lock().unwrap()
    }

    fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    fn secondary_ips(&self, eni_id: &str) -> Vec<Ipv4Addr> {
        self.eni(eni_id)
            .map(|e| e.eni.secondary_ips)
            .unwrap_or_default()
    }

    fn change(&self, eni_id: &str, change: impl FnOnce(&mut NodeEni)) {
        if let Some(eni) = self.state().enis.values_mut().find(|e| e.eni.id == eni_id) {
            change(eni);
        }
    }
}

impl Provider for ModelEc2 {
    fn name(&self) -> &'static str {
        "ec2-model"
    }

    fn inventory(&self) -> Inventory {
        Inventory {
            blocks: self
                .state()
                .enis
                .values()
                .flat_map(NodeEni::blocks)
                .collect(),
            ipv6: (self.family == IpFamily::Dual)
                .then(|| wasmcni_core::ipam::Ipv6Block {
                    cidr: "2600:1f14:aa:bb:cc::/80".parse().unwrap(),
                    eni_id: Some("eni-0".into()),
                })
                .into_iter()
                .collect(),
            ..Inventory::default()
        }
    }

    /// The node as the EC2 provider shows it to plugins (an m5.large's limits).
    fn view(&self) -> ProviderView {
        let enis = self
            .state()
            .enis
            .values()
            .map(|e| e.info(true, e.attached_unix_ms))
            .collect();
        ProviderView {
            node: NodeInfo {
                provider: wasmcni_core::pool_view::ProviderKind::Ec2,
                instance_id: self.identity.instance_id.clone(),
                instance_type: self.identity.instance_type.clone(),
                availability_zone: self.identity.availability_zone.clone(),
                vpc_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
                limits: NodeLimits {
                    max_enis: 3,
                    ipv4_per_eni: 10,
                    prefix_delegation: true,
                    max_pods: 29,
                },
            },
            enis,
            dynamic: true,
            cooldown: self.cooldown,
            family: self.family,
            ..ProviderView::default()
        }
    }
}

fn listed(ips: &[Ipv4Addr]) -> String {
    ips.iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[async_trait::async_trait]
impl EniProvider for ModelEc2 {
    fn identity(&self) -> &NodeIdentity {
        &self.identity
    }
    fn family(&self) -> IpFamily {
        self.family
    }
    fn max_pods(&self) -> u32 {
        29
    }
    fn enis(&self) -> Vec<NodeEni> {
        self.state().enis.values().cloned().collect()
    }
    fn eni(&self, id: &str) -> Option<NodeEni> {
        self.state().enis.values().find(|e| e.eni.id == id).cloned()
    }
    fn primary_ip(&self) -> Option<Ipv4Addr> {
        self.state().enis.get(&0).map(|e| e.eni.primary_ip)
    }
    fn vpc_cidrs(&self) -> Vec<Ipv4Net> {
        vec!["10.0.0.0/16".parse().unwrap()]
    }
    fn has_ipv6_prefix(&self) -> bool {
        false
    }
    fn unlinked(&self) -> Vec<NodeEni> {
        self.enis()
            .into_iter()
            .filter(|e| e.managed && !e.linked && !e.primary())
            .collect()
    }
    fn ownership_tags(&self) -> Vec<(String, String)> {
        vec![(
            "node.k8s.amazonaws.com/instance_id".into(),
            "i-model".into(),
        )]
    }
    fn mark_linked(&self, eni_id: &str) {
        self.change(eni_id, |e| e.linked = true);
    }
    fn adopt(&self, mut eni: NodeEni) {
        eni.linked = true;
        self.state().enis.insert(eni.device, eni);
    }
    fn withdraw(&self, eni_id: &str, ips: &[Ipv4Addr], prefixes: &[Ipv4Net]) {
        self.change(eni_id, |e| {
            e.eni.secondary_ips.retain(|a| !ips.contains(a));
            e.eni.prefixes.retain(|p| !prefixes.contains(p));
        });
    }
    fn restore(&self, eni_id: &str, ips: &[Ipv4Addr], prefixes: &[Ipv4Net]) {
        self.change(eni_id, |e| {
            e.eni.secondary_ips.extend_from_slice(ips);
            e.eni.prefixes.extend_from_slice(prefixes);
        });
    }
    fn forget(&self, eni_id: &str) -> Option<NodeEni> {
        let mut state = self.state();
        let device = state
            .enis
            .iter()
            .find(|(_, e)| e.eni.id == eni_id)
            .map(|(d, _)| *d)?;
        state.enis.remove(&device)
    }
    async fn refresh(&self) -> Result<(), Ec2Error> {
        self.state().calls.push("describe".into());
        Ok(())
    }
    async fn ensure_ipv6_prefix(&self) -> Result<Ipv6Net, Ec2Error> {
        Err(Ec2Error::Setup("the model node is IPv4".into()))
    }
    async fn create_and_attach(
        &self,
        subnet_id: &str,
        _security_groups: &[String],
        secondary_ips: u32,
        _prefixes: u32,
        _tags: Vec<(String, String)>,
    ) -> Result<(NodeEni, Option<String>), Ec2Error> {
        self.state()
            .calls
            .push(format!("create {subnet_id} +{secondary_ips}"));
        let addresses: Vec<String> = (0..secondary_ips)
            .map(|i| format!("10.0.2.{}", 10 + i))
            .collect();
        let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let mut eni = node_eni("eni-2", 2, "10.0.2.1", &refs);
        eni.linked = false;
        Ok((eni, None))
    }
    async fn assign(&self, eni_id: &str, count: u32, _prefixes: bool) -> Result<Added, Ec2Error> {
        let mut state = self.state();
        state.calls.push(format!("assign {eni_id} +{count}"));
        if let Some(code) = state.fail_assign {
            return Err(Ec2Error::Api {
                action: "AssignPrivateIpAddresses",
                code: code.to_owned(),
                message: "Request limit exceeded.".into(),
            });
        }
        let first = state.next_host;
        state.next_host += count as u8;
        let ips: Vec<Ipv4Addr> = (first..state.next_host)
            .map(|host| Ipv4Addr::new(10, 0, 1, host))
            .collect();
        state
            .eni_mut(eni_id)?
            .eni
            .secondary_ips
            .extend_from_slice(&ips);
        Ok(Added {
            ips,
            ..Added::default()
        })
    }
    async fn assign_address(&self, eni_id: &str, ip: Ipv4Addr) -> Result<(), Ec2Error> {
        let gate = {
            let mut state = self.state();
            state.calls.push(format!("assign {eni_id} {ip}"));
            state.assign_gate.clone()
        };
        if let Some(gate) = gate {
            gate.notified().await;
        }
        let reply = {
            let mut state = self.state();
            if let Some(code) = state.fail_assign_address.take() {
                return Err(Ec2Error::Api {
                    action: "AssignPrivateIpAddresses",
                    code: code.into(),
                    message: format!("{code} for {ip}"),
                });
            }
            state.eni_mut(eni_id)?.eni.secondary_ips.push(ip);
            state.assign_reply.clone()
        };
        if let Some(reply) = reply {
            reply.notified().await;
        }
        Ok(())
    }
    async fn unassign(
        &self,
        eni_id: &str,
        ips: &[Ipv4Addr],
        _prefixes: &[Ipv4Net],
    ) -> Result<(), Ec2Error> {
        let failure = {
            let mut state = self.state();
            state
                .calls
                .push(format!("unassign {eni_id} {}", listed(ips)));
            let failure = state.fail_unassign.take();
            if let Some((_, gone)) = &failure {
                state.unassigned_anyway.clone_from(gone);
            }
            failure
        };
        match failure {
            None => Ok(()),
            Some((code, _)) => Err(Ec2Error::Api {
                action: "UnassignPrivateIpAddresses",
                code: code.to_owned(),
                message: "Request limit exceeded.".into(),
            }),
        }
    }
    async fn still_assigned(
        &self,
        eni_id: &str,
        ips: &[Ipv4Addr],
        _prefixes: &[Ipv4Net],
    ) -> (Vec<Ipv4Addr>, Vec<Ipv4Net>) {
        let mut state = self.state();
        state.calls.push(format!("describe {eni_id}"));
        if state.unreachable {
            return (Vec::new(), Vec::new());
        }
        let still = ips
            .iter()
            .copied()
            .filter(|a| !state.unassigned_anyway.contains(a))
            .collect();
        (still, Vec::new())
    }
    async fn detach_and_delete(&self, eni: &NodeEni) -> Result<(), Ec2Error> {
        self.state()
            .calls
            .push(format!("detach and delete {}", eni.eni.id));
        Ok(())
    }
    async fn repair_delete_on_termination(&self) -> usize {
        0
    }
    async fn delete_unattached(
        &self,
        _own_only: bool,
        _min_age: Duration,
    ) -> Result<usize, Ec2Error> {
        Ok(0)
    }
}

/// A fixture whose pool is the model's, the model also being the handler's EC2 provider.
fn fixture(model: &Arc<ModelEc2>) -> Fixture {
    let f = fixture_provider(
        "10.88.0.0/24",
        None,
        Vec::new(),
        Some(model.clone() as Arc<dyn Provider>),
    );
    let _ = f.handler.ec2.set(model.clone());
    f.handler.refresh_inventory();
    f
}

/// `ReleaseIps` of these addresses of `eni-1`.
fn release_from_eni_1(addresses: &[Ipv4Addr]) -> EniRequest {
    EniRequest::ReleaseIps {
        eni_id: "eni-1".into(),
        addresses: addresses.to_vec(),
    }
}

async fn carry_out(
    f: &Fixture,
    model: &ModelEc2,
    request: EniRequest,
) -> Result<String, super::Failure> {
    execute(&f.handler, model, &f.handler.plugins(), &request).await
}

#[tokio::test]
async fn a_release_gives_back_only_addresses_no_pod_holds() {
    let model = ModelEc2::new(&["10.0.1.5", "10.0.1.6", "10.0.1.7"]);
    let f = fixture(&model);
    assert_eq!(
        ip_of(&f.run(Command::Add, "a", "1.1.0").await),
        "10.0.1.5/32"
    );
    let note = carry_out(
        &f,
        &model,
        release_from_eni_1(&[ip("10.0.1.5"), ip("10.0.1.6")]),
    )
    .await
    .unwrap();
    assert_eq!(note, "eni-1: -1 IP(s) -0 prefix(es)");
    assert_eq!(
        model.calls(),
        ["unassign eni-1 10.0.1.6"],
        "the pod's address is not asked for"
    );
    assert_eq!(
        model.secondary_ips("eni-1"),
        [ip("10.0.1.5"), ip("10.0.1.7")]
    );
    assert!(f.handler.is_taken(ip("10.0.1.5")));
    assert_eq!(f.handler.free_addresses(), 1, "10.0.1.7 only");
}

#[tokio::test]
async fn a_release_of_addresses_taken_since_the_plan_asks_ec2_nothing() {
    let model = ModelEc2::new(&["10.0.1.5"]);
    let f = fixture(&model);
    f.run(Command::Add, "a", "1.1.0").await;
    let note = carry_out(&f, &model, release_from_eni_1(&[ip("10.0.1.5")]))
        .await
        .unwrap();
    assert_eq!(
        note,
        "eni-1: nothing left to release (taken since the plan)"
    );
    assert!(model.calls().is_empty(), "{:?}", model.calls());
}

#[tokio::test]
async fn a_refused_release_brings_back_only_what_ec2_still_lists() {
    let model = ModelEc2::new(&["10.0.1.5", "10.0.1.6", "10.0.1.7"]);
    // EC2 answers RequestLimitExceeded, having removed 10.0.1.7 all the same (a lost reply).
    model.state().fail_unassign = Some(("RequestLimitExceeded", vec![ip("10.0.1.7")]));
    let f = fixture(&model);
    let failure = carry_out(
        &f,
        &model,
        release_from_eni_1(&[ip("10.0.1.6"), ip("10.0.1.7")]),
    )
    .await
    .unwrap_err();
    assert_eq!(failure.code, "RequestLimitExceeded");
    assert!(
        failure.message.contains("UnassignPrivateIpAddresses"),
        "{}",
        failure.message
    );
    assert_eq!(
        model.calls(),
        ["unassign eni-1 10.0.1.6,10.0.1.7", "describe eni-1"]
    );
    assert_eq!(
        model.secondary_ips("eni-1"),
        [ip("10.0.1.5"), ip("10.0.1.6")]
    );
    assert_eq!(
        f.handler.free_addresses(),
        2,
        "10.0.1.7 is EC2's again, not the pool's"
    );
    assert_eq!(
        ip_of(&f.run(Command::Add, "a", "1.1.0").await),
        "10.0.1.5/32"
    );
    assert_eq!(
        ip_of(&f.run(Command::Add, "b", "1.1.0").await),
        "10.0.1.6/32"
    );
}

#[tokio::test]
async fn an_eni_is_kept_while_a_pod_holds_or_just_released_one_of_its_addresses() {
    let model = ModelEc2::with_cooldown(&["10.0.1.5", "10.0.1.6"], Duration::from_secs(30));
    let f = fixture(&model);
    let delete = EniRequest::DeleteEni {
        eni_id: "eni-1".into(),
    };
    f.run(Command::Add, "a", "1.1.0").await;
    let note = carry_out(&f, &model, delete.clone()).await.unwrap();
    assert_eq!(
        note,
        "eni-1 kept: 10.0.1.5 is held, cooling or draining (taken since the plan)"
    );
    f.run(Command::Del, "a", "1.1.0").await;
    let note = carry_out(&f, &model, delete).await.unwrap();
    assert_eq!(
        note,
        "eni-1 kept: 10.0.1.5 is held, cooling or draining (taken since the plan)"
    );
    assert!(model.calls().is_empty(), "{:?}", model.calls());
    assert!(model.eni("eni-1").is_some());
}

#[tokio::test]
async fn an_eni_no_pod_uses_is_deleted_but_never_the_primary() {
    let model = ModelEc2::new(&["10.0.1.5", "10.0.1.6"]);
    let f = fixture(&model);
    let delete = |id: &str| EniRequest::DeleteEni { eni_id: id.into() };
    let failure = carry_out(&f, &model, delete("eni-0")).await.unwrap_err();
    assert_eq!(
        (failure.code.as_str(), failure.message.as_str()),
        ("HostRefused", "eni-0 is the primary ENI")
    );
    assert_eq!(f.handler.free_addresses(), 2);
    let note = carry_out(&f, &model, delete("eni-1")).await.unwrap();
    assert_eq!(note, "eni-1 detached and deleted");
    assert_eq!(model.calls(), ["detach and delete eni-1"]);
    assert!(f.handler.datapath.calls().contains(&Call::TeardownEni(2)));
    assert_eq!(
        f.handler.free_addresses(),
        0,
        "its addresses left the pool first"
    );
}

#[tokio::test]
async fn a_refused_release_ec2_cannot_be_asked_about_restores_nothing() {
    let model = ModelEc2::new(&["10.0.1.5", "10.0.1.6", "10.0.1.7"]);
    {
        let mut state = model.state();
        state.fail_unassign = Some(("Unavailable", Vec::new()));
        state.unreachable = true;
    }
    let f = fixture(&model);
    let failure = carry_out(
        &f,
        &model,
        release_from_eni_1(&[ip("10.0.1.6"), ip("10.0.1.7")]),
    )
    .await
    .unwrap_err();
    assert_eq!(failure.code, "Unavailable");
    // Either may be EC2's again: neither may reach a pod until a refresh shows it assigned.
    assert_eq!(model.secondary_ips("eni-1"), [ip("10.0.1.5")]);
    assert_eq!(f.handler.free_addresses(), 1);
}

#[tokio::test]
async fn a_grown_eni_serves_its_new_addresses_at_once() {
    let model = ModelEc2::new(&[]);
    let f = fixture(&model);
    assert_eq!(f.handler.free_addresses(), 0);
    let note = carry_out(
        &f,
        &model,
        EniRequest::AssignIps {
            eni_id: "eni-1".into(),
            count: 2,
        },
    )
    .await
    .unwrap();
    assert_eq!(note, "eni-1: +2 IP(s) +0 prefix(es)");
    assert_eq!(model.calls(), ["assign eni-1 +2"]);
    assert_eq!(f.handler.free_addresses(), 2);
    assert_eq!(
        ip_of(&f.run(Command::Add, "a", "1.1.0").await),
        "10.0.1.20/32"
    );
}

#[tokio::test]
async fn a_new_eni_joins_the_pool_once_its_link_is_up_and_is_given_back_when_the_link_fails() {
    let model = ModelEc2::new(&[]);
    let f = fixture(&model);
    let create = EniRequest::CreateEni {
        subnet_id: "subnet-a".into(),
        security_groups: vec!["sg-1".into()],
        secondary_ips: 3,
        prefixes: 0,
    };
    f.handler
        .datapath
        .fail_next_eni_setup(nix::errno::Errno::ENETUNREACH);
    let failure = carry_out(&f, &model, create.clone()).await.unwrap_err();
    assert_eq!(failure.code, "HostRefused");
    assert!(
        failure
            .message
            .starts_with("eni-2 attached but its link failed: "),
        "{}",
        failure.message
    );
    assert_eq!(
        model.calls(),
        ["create subnet-a +3", "detach and delete eni-2"]
    );
    assert!(f.handler.datapath.calls().contains(&Call::TeardownEni(3)));
    assert!(model.eni("eni-2").is_none(), "never adopted");
    assert_eq!(f.handler.free_addresses(), 0);

    let note = carry_out(&f, &model, create).await.unwrap();
    assert_eq!(note, "eni-2 attached at device 2 as eth2, table 3");
    assert_eq!(f.handler.free_addresses(), 3);
    assert_eq!(
        ip_of(&f.run(Command::Add, "a", "1.1.0").await),
        "10.0.2.10/32"
    );
}

#[tokio::test]
async fn the_daemon_starts_only_with_the_provider_the_configuration_names() {
    use crate::server::start;
    use wasmcni_config::{ClusterConfig, Ec2ProviderConfig, ProviderKind};
    use wasmcni_datapath::fake::FakeDatapath;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let text =
        wasmcni_config::DEFAULT_CONFIG.replace("/var/lib/wasmcni", &state.display().to_string());
    let statically = ClusterConfig::parse(&text, "test").unwrap();
    // The EC2 cases as a checked configuration would hold them (one naming `ec2` also needs an
    // allocator plugin, which these refusals come before).
    let mut ec2 = statically.clone();
    ec2.provider.kind = ProviderKind::Ec2;
    ec2.provider.static_pool = None;
    let mut ipv6 = ec2.clone();
    ipv6.provider.ec2 = Some(Ec2ProviderConfig {
        ip_family: IpFamily::Ipv6,
        ..Ec2ProviderConfig::default()
    });
    let refused = |result: Result<_, crate::server::StartError>| {
        result
            .err()
            .expect("refused before anything starts")
            .to_string()
    };
    let model: Arc<dyn EniProvider> = ModelEc2::new(&[]);
    assert_eq!(
        refused(
            start(
                statically,
                FakeDatapath::new(),
                Some(model.clone()),
                Default::default()
            )
            .await
        ),
        r#"provider.kind is "static", but an EC2 provider was started"#
    );
    assert_eq!(
        refused(start(ec2, FakeDatapath::new(), None, Default::default()).await),
        r#"provider.kind is "ec2", but no EC2 provider was started"#
    );
    assert_eq!(
        refused(start(ipv6, FakeDatapath::new(), Some(model), Default::default()).await),
        r#"provider.ec2.ip_family is "ipv6", but the EC2 provider serves ipv4"#
    );
    assert!(!state.exists(), "nothing was started");
}

/// A fixture whose allocator holds the eni-ops grant a requested address is assigned within.
fn fixture_assigning(model: &Arc<ModelEc2>) -> Fixture {
    use wasmcni_core::{Capability, PluginKind};
    let mut allocator = wasmcni_runtime::testing::spec(
        "vpc-warm-pool",
        PluginKind::Allocator,
        &[
            Capability::PoolView,
            Capability::EniOps,
            Capability::Log,
            Capability::Clock,
        ],
    );
    allocator.grants.eni_ops.subnets = ["node".to_owned(), "subnet-b".to_owned()].into();
    let f = fixture_provider(
        "10.88.0.0/24",
        Some(allocator),
        Vec::new(),
        Some(model.clone() as Arc<dyn Provider>),
    );
    let _ = f.handler.ec2.set(model.clone());
    f.handler.refresh_inventory();
    f
}

/// Waits until the model has seen `call` (the ADD is then waiting for EC2's reply); fails
/// rather than hangs when the ADD never gets there.
async fn assigned(model: &ModelEc2, call: &str) {
    let seen = async {
        while !model.calls().iter().any(|c| c == call) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .is_err()
    {
        panic!("EC2 was never asked for {call:?}: {:?}", model.calls());
    }
}

/// An ADD of `container_id` asking for `ip` through `CNI_ARGS`.
async fn add_asking(f: &Fixture, container_id: &str, ip: &str) -> DaemonResponse {
    let mut request = crate::server::handler::tests::request(Command::Add, container_id);
    request.args.push(("IP".into(), ip.into()));
    f.handler
        .handle(&request, &crate::server::handler::tests::config("1.1.0"))
        .await
}

fn refusal(response: &DaemonResponse) -> (u32, String) {
    match response {
        DaemonResponse::Failure { error, .. } => (error.code, error.msg.clone()),
        DaemonResponse::Success { stdout } => panic!("accepted: {stdout}"),
    }
}

#[tokio::test]
async fn a_requested_address_being_assigned_is_nobody_elses_until_its_add_has_it() {
    let model = ModelEc2::new(&["10.0.1.5"]);
    let reply = Arc::new(tokio::sync::Notify::new());
    model.state().assign_reply = Some(reply.clone());
    let f = fixture_assigning(&model);
    let requested = ip("10.0.1.9");
    let asking = add_asking(&f, "a", "10.0.1.9");
    let meanwhile = async {
        assigned(&model, "assign eni-0 10.0.1.9").await;
        // EC2 has assigned it and the reconciler's refresh shows it; the reply is late.
        f.handler.refresh_inventory();
        assert!(f.handler.is_taken(requested));
        let (code, msg) = refusal(&add_asking(&f, "b", "10.0.1.9").await);
        assert_eq!(code, codes::TRY_AGAIN_LATER, "{msg}");
        assert!(msg.contains("is being assigned"), "{msg}");
        assert_eq!(
            ip_of(&f.run(Command::Add, "c", "1.1.0").await),
            "10.0.1.5/32",
            "the allocator's choice is not the address being assigned"
        );
        let note = carry_out(
            &f,
            &model,
            EniRequest::ReleaseIps {
                eni_id: "eni-0".into(),
                addresses: vec![requested],
            },
        )
        .await
        .unwrap();
        assert_eq!(
            note,
            "eni-0: nothing left to release (taken since the plan)"
        );
        reply.notify_one();
    };
    let (granted, ()) = tokio::join!(asking, meanwhile);
    assert_eq!(ip_of(&granted), "10.0.1.9/32");
    assert!(!f.handler.is_assigning(requested.into()));
    assert!(
        !model.calls().iter().any(|c| c.starts_with("unassign")),
        "{:?}",
        model.calls()
    );
}

#[tokio::test]
async fn an_eni_a_requested_address_is_being_assigned_to_is_not_deleted() {
    let model = ModelEc2::new(&[]);
    // eni-1's subnet is another one, so the request goes to it rather than the primary.
    model.change("eni-1", |e| {
        e.eni.subnet_id = "subnet-b".into();
        e.subnet_cidr = "10.1.0.0/16".parse().unwrap();
    });
    // EC2 has not carried the assignment out yet: only the ADD knows the address is coming.
    let gate = Arc::new(tokio::sync::Notify::new());
    model.state().assign_gate = Some(gate.clone());
    let f = fixture_assigning(&model);
    let asking = add_asking(&f, "a", "10.1.0.9");
    let meanwhile = async {
        assigned(&model, "assign eni-1 10.1.0.9").await;
        let note = carry_out(
            &f,
            &model,
            EniRequest::DeleteEni {
                eni_id: "eni-1".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(
            note,
            "eni-1 kept: a requested address is being assigned to it"
        );
        gate.notify_one();
    };
    let (granted, ()) = tokio::join!(asking, meanwhile);
    assert_eq!(ip_of(&granted), "10.1.0.9/32");
    assert!(model.eni("eni-1").is_some());
}

#[tokio::test]
async fn a_refusal_of_the_address_itself_is_not_kept_for_the_plans_but_an_eni_fault_is() {
    let model = ModelEc2::new(&[]);
    let f = fixture_assigning(&model);
    model.state().fail_assign_address = Some("InvalidIPAddress.InUse");
    let (code, msg) = refusal(&add_asking(&f, "a", "10.0.1.9").await);
    assert_eq!(code, codes::REQUESTED_ADDRESS_UNAVAILABLE, "{msg}");
    assert!(
        msg.contains("EC2 refused") && msg.contains("InvalidIPAddress.InUse"),
        "{msg}"
    );
    assert!(
        f.handler.pool_snapshot().failures.is_empty(),
        "another tenant's address says nothing about the ENI"
    );
    model.state().fail_assign_address = Some("PrivateIpAddressLimitExceeded");
    let (_, msg) = refusal(&add_asking(&f, "a", "10.0.1.10").await);
    assert!(msg.contains("PrivateIpAddressLimitExceeded"), "{msg}");
    let failures = f.handler.pool_snapshot().failures;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].code, "PrivateIpAddressLimitExceeded");
    assert!(f.handler.store().allocations().next().is_none());
}

#[tokio::test]
async fn an_address_aws_reserves_in_the_subnet_is_refused_without_asking_ec2() {
    let model = ModelEc2::new(&[]);
    let f = fixture_assigning(&model);
    for reserved in ["10.0.0.0", "10.0.0.2", "10.0.0.3", "10.0.255.255"] {
        let (code, msg) = refusal(&add_asking(&f, "a", reserved).await);
        assert_eq!(
            code,
            codes::REQUESTED_ADDRESS_UNAVAILABLE,
            "{reserved}: {msg}"
        );
        assert!(msg.contains("reserved by AWS"), "{reserved}: {msg}");
    }
    assert!(model.calls().is_empty(), "{:?}", model.calls());
}

#[tokio::test]
async fn a_draining_address_is_never_given_back_nor_its_eni_deleted() {
    // No cooldown: only the drain keeps the address.
    let model = ModelEc2::new(&["10.0.1.5"]);
    let f = fixture(&model);
    assert_eq!(
        ip_of(&f.run(Command::Add, "a", "1.1.0").await),
        "10.0.1.5/32"
    );
    f.handler.datapath.hold_link_removals();
    f.run(Command::Del, "a", "1.1.0").await;
    assert!(f.handler.is_draining(ip("10.0.1.5").into()));
    let note = carry_out(&f, &model, release_from_eni_1(&[ip("10.0.1.5")]))
        .await
        .unwrap();
    assert_eq!(
        note,
        "eni-1: nothing left to release (taken since the plan)"
    );
    let delete = EniRequest::DeleteEni {
        eni_id: "eni-1".into(),
    };
    let note = carry_out(&f, &model, delete).await.unwrap();
    assert_eq!(
        note,
        "eni-1 kept: 10.0.1.5 is held, cooling or draining (taken since the plan)"
    );
    assert!(model.calls().is_empty(), "{:?}", model.calls());

    // Once the kernel has deleted the veth, the address is the pool's to give back.
    f.handler.datapath.finish_link_removals();
    assert!(
        f.handler
            .drained(Some(ip("10.0.1.5").into()), Duration::from_secs(5))
            .await
    );
    carry_out(&f, &model, release_from_eni_1(&[ip("10.0.1.5")]))
        .await
        .unwrap();
    assert_eq!(model.calls(), ["unassign eni-1 10.0.1.5"]);
}

#[tokio::test]
async fn a_dual_stack_node_is_not_ready_on_its_80_alone() {
    // The /80's 2^48 free addresses are no IPv4 address: until the IPv4 pool has its
    // minimum (EC2 refuses every assignment here), STATUS says the node is not ready.
    let mut model = ModelEc2::new(&[]);
    Arc::get_mut(&mut model).unwrap().family = IpFamily::Dual;
    model.state().fail_assign = Some("RequestLimitExceeded");
    let f = fixture_assigning(&model);
    assert_eq!(f.handler.free_by_family().0, 0);
    assert!(f.handler.free_by_family().1 > 1 << 40);
    let report = pass(&f.handler, model.as_ref()).await;
    assert!(!report.settled, "{report:?}");
    assert!(
        model.calls().iter().any(|c| c.starts_with("assign eni-")),
        "the plan asked for addresses: {:?}",
        model.calls()
    );
    assert!(!f.handler.is_ready(), "ready on the /80 alone");
    // Once EC2 assigns, the IPv4 pool reaches its minimum and the node is ready.
    model.state().fail_assign = None;
    pass(&f.handler, model.as_ref()).await;
    assert!(f.handler.free_by_family().0 >= 1, "{:?}", model.calls());
    assert!(f.handler.is_ready());
}
