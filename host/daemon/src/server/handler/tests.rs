//! The verbs' logic against the recording fake data path: exact stdout per verb and version,
//! rollback on failure, and the never-twice invariant, without root.

use std::sync::Arc;

use super::*;
use wasmcni_core::ipam::StaticProvider;
use wasmcni_datapath::fake::{Call, FakeDatapath};
use wasmcni_datastore::WalOptions;
use wasmcni_runtime::Compiler;

pub(crate) struct Fixture {
    pub(crate) handler: Arc<Handler<FakeDatapath>>,
    pub(super) _dir: tempfile::TempDir,
}

impl Fixture {
    /// Container ids of the allocations held, in key order.
    pub(super) fn held(&self) -> Vec<String> {
        self.handler
            .store()
            .allocations()
            .map(|a| a.key.container_id.clone())
            .collect()
    }

    /// One request for `container_id` with a minimal configuration at `version`.
    pub(crate) async fn run(
        &self,
        command: Command,
        container_id: &str,
        version: &str,
    ) -> DaemonResponse {
        self.handler
            .handle(&request(command, container_id), &config(version))
            .await
    }
}

pub(super) fn fixture(cidr: &str) -> Fixture {
    fixture_with(cidr, None)
}

/// A fixture whose ADDs go through the allocator plugin `plugin` (a built component).
pub(super) fn fixture_with(cidr: &str, plugin: Option<&str>) -> Fixture {
    use wasmcni_core::{Capability, PluginKind};
    let allocator = plugin.map(|name| {
        wasmcni_runtime::testing::spec(
            name,
            PluginKind::Allocator,
            &[
                Capability::PoolView,
                Capability::EniOps,
                Capability::Log,
                Capability::Clock,
            ],
        )
    });
    fixture_set(cidr, allocator, Vec::new())
}

/// A fixture with these plugins (built components, specs as the configuration would give).
pub(super) fn fixture_set(
    cidr: &str,
    allocator: Option<wasmcni_core::PluginSpec>,
    policies: Vec<wasmcni_core::PluginSpec>,
) -> Fixture {
    fixture_provider(cidr, allocator, policies, None)
}

/// As [`fixture_set`], served by `provider` instead of the configuration's static pool.
pub(crate) fn fixture_provider(
    cidr: &str,
    allocator: Option<wasmcni_core::PluginSpec>,
    policies: Vec<wasmcni_core::PluginSpec>,
    provider: Option<Arc<dyn wasmcni_core::ipam::Provider>>,
) -> Fixture {
    fixture_on(
        tempfile::tempdir().unwrap(),
        cidr,
        allocator,
        policies,
        provider,
        FakeDatapath::new(),
    )
}

/// The daemon dies and a new one starts on the same state directory and the same node (the
/// data path as the old one left it; the default configuration's pool); `edit` changes the
/// state directory in between, as the crash left it.
pub(super) fn restart(f: Fixture, edit: impl FnOnce(&std::path::Path)) -> Fixture {
    let Fixture { handler, _dir: dir } = f;
    let datapath = Arc::into_inner(handler)
        .expect("nothing else holds the old daemon")
        .datapath;
    edit(&dir.path().join("state"));
    fixture_on(dir, "10.88.0.0/24", None, Vec::new(), None, datapath)
}

/// As [`fixture_provider`], with the state in `dir` (a restart: the same state, a new daemon),
/// on the node `datapath`.
fn fixture_on(
    dir: tempfile::TempDir,
    cidr: &str,
    allocator: Option<wasmcni_core::PluginSpec>,
    policies: Vec<wasmcni_core::PluginSpec>,
    provider: Option<Arc<dyn wasmcni_core::ipam::Provider>>,
    datapath: FakeDatapath,
) -> Fixture {
    let text = wasmcni_config::DEFAULT_CONFIG
        .replace(
            "/var/lib/wasmcni",
            &dir.path().join("state").display().to_string(),
        )
        .replace("10.88.0.0/24", cidr);
    let config = ClusterConfig::parse(&text, "test").unwrap();
    let provider = provider
        .unwrap_or_else(|| Arc::new(StaticProvider::new(&config.static_pool("test").unwrap())));
    let (store, _) = Datastore::open(&config.daemon.state_dir, WalOptions::default()).unwrap();
    let runtime = crate::server::plugin_runtime(&config, Compiler::InProcess).unwrap();
    let load = |spec: &wasmcni_core::PluginSpec| Arc::new(runtime.load(spec).unwrap());
    let plugins = PluginSet {
        allocator: allocator.as_ref().map(load),
        tagger: None,
        policies: policies.iter().map(load).collect(),
        generation: 1,
    };
    let handler = Handler::new(
        config.clone(),
        config.pod_mtu(None),
        datapath,
        store,
        provider,
        runtime,
        plugins,
    );
    Fixture { handler, _dir: dir }
}

pub(crate) fn request(command: Command, container_id: &str) -> CniRequest {
    CniRequest {
        command,
        container_id: container_id.into(),
        netns: format!("/run/netns/{container_id}"),
        ifname: "eth0".into(),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), "default".into()),
            ("K8S_POD_NAME".into(), format!("pod-{container_id}")),
        ],
        path: String::new(),
    }
}

pub(crate) fn config(version: &str) -> String {
    format!(r#"{{"cniVersion":"{version}","name":"pods","type":"wasmcni"}}"#)
}

pub(super) fn stdout(response: &DaemonResponse) -> &str {
    match response {
        DaemonResponse::Success { stdout } | DaemonResponse::Failure { stdout, .. } => stdout,
    }
}

pub(super) fn veth(container_id: &str) -> String {
    host_veth_name(
        "eni",
        Some(("default", &format!("pod-{container_id}"))),
        container_id,
        "eth0",
    )
}

#[tokio::test]
async fn add_result_in_every_version_is_exact() {
    let f = fixture("10.88.0.0/24");
    let cases = [
        (
            "0.3.1",
            r#"{"cniVersion":"0.3.1","interfaces":[{"name":"VETH","mac":"02:00:00:00:00:01"},{"name":"eth0","mac":"02:00:00:00:00:02","sandbox":"/run/netns/c1"}],"ips":[{"version":"4","interface":1,"address":"10.88.0.1/32","gateway":"169.254.1.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}],"dns":{}}"#,
        ),
        (
            "0.4.0",
            r#"{"cniVersion":"0.4.0","interfaces":[{"name":"VETH","mac":"02:00:00:00:00:01"},{"name":"eth0","mac":"02:00:00:00:00:02","sandbox":"/run/netns/c2"}],"ips":[{"version":"4","interface":1,"address":"10.88.0.2/32","gateway":"169.254.1.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}],"dns":{}}"#,
        ),
        (
            "1.0.0",
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"VETH","mac":"02:00:00:00:00:01"},{"name":"eth0","mac":"02:00:00:00:00:02","sandbox":"/run/netns/c3"}],"ips":[{"interface":1,"address":"10.88.0.3/32","gateway":"169.254.1.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}],"dns":{}}"#,
        ),
        (
            "1.1.0",
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"VETH","mac":"02:00:00:00:00:01","mtu":1500},{"name":"eth0","mac":"02:00:00:00:00:02","mtu":1500,"sandbox":"/run/netns/c4"}],"ips":[{"interface":1,"address":"10.88.0.4/32","gateway":"169.254.1.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}],"dns":{}}"#,
        ),
    ];
    for (i, (version, expected)) in cases.iter().enumerate() {
        let cid = format!("c{}", i + 1);
        let response = f
            .handler
            .handle(&request(Command::Add, &cid), &config(version))
            .await;
        assert!(
            matches!(response, DaemonResponse::Success { .. }),
            "{response:?}"
        );
        assert_eq!(
            stdout(&response),
            expected.replace("VETH", &veth(&cid)),
            "ADD at {version}"
        );
    }
}

#[tokio::test]
async fn add_passes_a_previous_result_through() {
    let f = fixture("10.88.0.0/24");
    let with_prev = r#"{"cniVersion":"0.4.0","name":"pods","type":"wasmcni","prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"cilium0"}],"ips":[{"version":"4","address":"192.168.5.5/24","interface":0}]}}"#;
    let response = f
        .handler
        .handle(&request(Command::Add, "p1"), with_prev)
        .await;
    let result: serde_json::Value = serde_json::from_str(stdout(&response)).unwrap();
    assert_eq!(result["interfaces"][0]["name"], "cilium0");
    assert_eq!(result["ips"][0]["address"], "192.168.5.5/24");
    assert_eq!(result["ips"][1]["address"], "10.88.0.1/32");
    assert_eq!(
        result["ips"][1]["interface"], 2,
        "our pod interface comes after the previous one"
    );
}

#[tokio::test]
async fn error_objects_are_exact() {
    let f = fixture("10.88.0.0/30");
    f.run(Command::Add, "a", "1.0.0").await;
    f.run(Command::Add, "b", "1.0.0").await;
    let cases: Vec<(Command, &str, String, String)> = vec![
        (Command::Add, "a", config("1.0.0"), r#"{"cniVersion":"1.0.0","code":103,"msg":"attachment a/eth0 already holds 10.88.0.1 (ADD without DEL); DEL it first"}"#.into()),
        (Command::Add, "c", config("1.0.0"), r#"{"cniVersion":"1.0.0","code":101,"msg":"no free IPv4 address: all 2 addresses of the pool are assigned","details":"free addresses return as pods are deleted; add CIDRs to provider.static.cidrs to grow the pool"}"#.into()),
        (Command::Check, "zz", config("1.0.0"), r#"{"cniVersion":"1.0.0","code":3,"msg":"no attachment zz/eth0 is known to wasmcni"}"#.into()),
        (Command::Status, "", config("1.1.0"), r#"{"cniVersion":"1.1.0","code":50,"msg":"no free IPv4 address in the pool: new pods cannot be attached until some are deleted"}"#.into()),
        (Command::Gc, "", config("1.0.0"), r#"{"cniVersion":"1.0.0","code":1,"msg":"config version 1.0.0 does not allow GC: it needs cniVersion 1.1.0 or later"}"#.into()),
    ];
    for (command, cid, conf, expected) in cases {
        let response = f.handler.handle(&request(command, cid), &conf).await;
        assert!(
            matches!(response, DaemonResponse::Failure { .. }),
            "{command:?}"
        );
        assert_eq!(stdout(&response), expected, "{command:?} {cid}");
    }
}

#[tokio::test]
async fn a_failed_setup_gives_the_address_back() {
    let f = fixture("10.88.0.0/30");
    f.handler
        .datapath
        .fail_next_setup(nix::errno::Errno::EEXIST);
    let response = f.run(Command::Add, "x", "1.0.0").await;
    let error: CniError = serde_json::from_str(stdout(&response)).unwrap();
    assert_eq!(error.code, codes::DATAPATH_FAILURE);
    assert!(error.msg.contains("File exists"), "{}", error.msg);
    assert!(
        f.handler.store().is_empty(),
        "the reservation was not rolled back"
    );
    assert_eq!(f.handler.free_addresses(), 2);
}

#[tokio::test]
async fn del_is_idempotent_and_undoes_from_the_record() {
    let f = fixture("10.88.0.0/24");
    f.run(Command::Add, "d", "1.0.0").await;
    let mut del = request(Command::Del, "d");
    del.netns = String::new();
    for _ in 0..2 {
        let response = f.handler.handle(&del, &config("1.0.0")).await;
        assert_eq!(
            response,
            DaemonResponse::Success {
                stdout: String::new()
            }
        );
    }
    assert!(f.handler.store().is_empty());
    let teardowns = f
        .handler
        .datapath
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Detach(_)))
        .count();
    assert_eq!(teardowns, 1, "the second DEL found nothing to undo");
}

#[tokio::test]
async fn a_new_sandbox_of_the_same_pod_replaces_the_old_one() {
    let f = fixture("10.88.0.0/24");
    let mut old = request(Command::Add, "old");
    let mut new = request(Command::Add, "new");
    for r in [&mut old, &mut new] {
        r.args[1].1 = "web".into();
    }
    f.handler.handle(&old, &config("1.0.0")).await;
    let response = f.handler.handle(&new, &config("1.0.0")).await;
    assert!(
        matches!(response, DaemonResponse::Success { .. }),
        "{response:?}"
    );
    assert_eq!(f.handler.store().len(), 1);
    // The old sandbox's late DEL finds nothing and must not touch the new pod's veth.
    old.command = Command::Del;
    f.handler.handle(&old, &config("1.0.0")).await;
    assert_eq!(f.handler.store().len(), 1);
    assert_eq!(f.handler.datapath.veths().len(), 1);
}

#[tokio::test]
async fn gc_keeps_valid_and_other_networks_releases_the_rest() {
    let f = fixture("10.88.0.0/24");
    for cid in ["keep", "stale"] {
        f.run(Command::Add, cid, "1.1.0").await;
    }
    let other = r#"{"cniVersion":"1.1.0","name":"other","type":"wasmcni"}"#;
    f.handler
        .handle(&request(Command::Add, "foreign"), other)
        .await;
    let gc = r#"{"cniVersion":"1.1.0","name":"pods","type":"wasmcni","cni.dev/attachments":[{"containerID":"keep","ifname":"eth0"}]}"#;
    let response = f.handler.handle(&request(Command::Gc, ""), gc).await;
    assert_eq!(
        response,
        DaemonResponse::Success {
            stdout: String::new()
        }
    );
    assert_eq!(f.held(), ["foreign", "keep"]);
    // GC without any list is not a licence to delete everything.
    let bare = r#"{"cniVersion":"1.1.0","name":"pods","type":"wasmcni"}"#;
    f.handler.handle(&request(Command::Gc, ""), bare).await;
    assert_eq!(f.handler.store().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_never_share_an_address() {
    let f = fixture("10.88.0.0/26");
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let handler = f.handler.clone();
            tokio::spawn(async move {
                handler
                    .handle(&request(Command::Add, &format!("k{i}")), &config("1.0.0"))
                    .await
            })
        })
        .collect();
    let mut ips = std::collections::BTreeSet::new();
    for t in tasks {
        let response = t.await.unwrap();
        let result: serde_json::Value = serde_json::from_str(stdout(&response)).unwrap();
        assert!(
            ips.insert(result["ips"][0]["address"].as_str().unwrap().to_owned()),
            "duplicate address"
        );
    }
    assert_eq!(ips.len(), 40);
}

#[tokio::test]
async fn recovery_reconciles_every_kind_of_disagreement() {
    use crate::server::recovery::{reconcile_node, Orphans, ReconcileReport};
    use std::net::Ipv4Addr;
    use wasmcni_cni::proto::{DaemonRequest, PROTOCOL_VERSION};

    let f = fixture("10.88.0.0/24");
    for cid in ["kept", "vanished", "deleted-while-down"] {
        f.run(Command::Add, cid, "1.0.0").await;
    }
    // The pod's namespace went away while the daemon was down: its veth is gone.
    f.handler.datapath.remove_veth(&veth("vanished"));
    // A crashed ADD: reserved in the log and half-built on the node, never committed.
    let unfinished = Allocation {
        key: AttachmentKey {
            container_id: "unfinished".into(),
            ifname: "eth0".into(),
        },
        network: "pods".into(),
        ip: Ipv4Addr::new(10, 88, 0, 40).into(),
        host_veth: veth("unfinished"),
        netns: "/run/netns/unfinished".into(),
        pod: None,
        route_table: None,
        state: AllocationState::Reserved,
        result: None,
        pod_routes: PodRoutes::default(),
        created_unix_ms: 0,
        egress_v4: None,
        ipv6: None,
    };
    f.handler.store().reserve(unfinished.clone()).unwrap();
    f.handler
        .datapath
        .add_orphan(&unfinished.host_veth, unfinished.ip);
    // A crashed ADD that never reached the log: a veth and a rule nobody owns.
    f.handler
        .datapath
        .add_orphan("eni0000000000a", Ipv4Addr::new(10, 88, 0, 50));
    // A DEL the shim recorded while the daemon was unreachable.
    let pending = f._dir.path().join("pending-del");
    let spooled = DaemonRequest {
        protocol: PROTOCOL_VERSION,
        request: request(Command::Del, "deleted-while-down"),
        config: config("1.0.0"),
    };
    wasmcni_cni::proto::record_pending_del(&pending, &spooled).unwrap();
    // A record planted by someone else (wrong mode) is set aside, not obeyed.
    let planted = pending.join("0-kept-eth0.json");
    std::fs::write(&planted, br#"{"recordedUnixMs":1,"request":{}}"#).unwrap();

    let report = reconcile_node(&f.handler, &pending, Orphans::Remove).await;
    // The replayed DEL's veth goes the way every DEL's does: after it answered.
    assert!(f.handler.drained(None, Duration::from_secs(5)).await);
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert!(
        report.failures[0].contains("not trusted"),
        "{:?}",
        report.failures
    );
    assert_eq!(
        report,
        ReconcileReport {
            rolled_back: 1,
            completed: 0,
            released_gone: 1,
            orphan_veths: 1,
            orphan_rules: 1,
            replayed_dels: 1,
            unrecorded_pods: 0,
            kept: 1,
            failures: report.failures.clone(),
        }
    );
    assert!(planted.with_extension("rejected").exists());
    assert_eq!(f.held(), ["kept"]);
    assert_eq!(
        f.handler.datapath.veths().into_keys().collect::<Vec<_>>(),
        vec![veth("kept")]
    );
    assert_eq!(
        std::fs::read_dir(&pending)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "json")
            .count(),
        0,
        "the replayed DEL is removed"
    );
}

#[tokio::test]
async fn the_periodic_sweep_releases_vanished_pods_and_leaves_orphans_alone() {
    use crate::server::recovery::{reconcile_node, Orphans};
    use std::net::Ipv4Addr;

    let f = fixture("10.88.0.0/24");
    for cid in ["alive", "gone"] {
        f.run(Command::Add, cid, "1.0.0").await;
    }
    f.handler.datapath.remove_veth(&veth("gone"));
    // While serving, something unowned may be a concurrent ADD's: the sweep must not touch it.
    f.handler
        .datapath
        .add_orphan("eni00000000000", Ipv4Addr::new(10, 88, 0, 77));
    let report = reconcile_node(
        &f.handler,
        &f._dir.path().join("pending-del"),
        Orphans::Keep,
    )
    .await;
    assert_eq!(
        (
            report.released_gone,
            report.orphan_veths,
            report.orphan_rules
        ),
        (1, 0, 0),
        "{report:?}"
    );
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(f.held(), ["alive"]);
    assert!(f.handler.datapath.veths().contains_key("eni00000000000"));
    assert!(f
        .handler
        .datapath
        .calls()
        .contains(&Call::RemoveRules(Ipv4Addr::new(10, 88, 0, 2).into())));
}

#[tokio::test]
async fn a_failed_rollback_keeps_the_address_reserved_until_the_sweep_succeeds() {
    use crate::server::recovery::{reconcile_node, Orphans};

    let f = fixture("10.88.0.0/30");
    f.handler
        .datapath
        .fail_next_setup(nix::errno::Errno::ENETUNREACH);
    f.handler.datapath.fail_teardowns(1);
    let response = f.run(Command::Add, "x", "1.0.0").await;
    let error: CniError = serde_json::from_str(stdout(&response)).unwrap();
    assert_eq!(error.code, codes::DATAPATH_FAILURE);
    assert!(
        error.msg.contains("Network is unreachable") && error.msg.contains("stays reserved"),
        "{}",
        error.msg
    );
    // The half-built veth may still route to the address: it must not be handed out.
    assert_eq!(f.handler.store().len(), 1);
    assert_eq!(f.handler.free_addresses(), 1);
    let report = reconcile_node(
        &f.handler,
        &f._dir.path().join("pending-del"),
        Orphans::Keep,
    )
    .await;
    assert_eq!(report.rolled_back, 1, "{report:?}");
    assert!(f.handler.store().is_empty());
    assert!(f.handler.datapath.veths().is_empty());
    assert_eq!(f.handler.free_addresses(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_sandboxes_of_one_pod_and_a_late_del_leave_exactly_the_newest() {
    for round in 0..20 {
        let f = fixture("10.88.0.0/24");
        let sandbox = |cid: &str| {
            let mut r = request(Command::Add, cid);
            r.args[1].1 = "web".into();
            r
        };
        let (a, b) = (sandbox(&format!("a{round}")), sandbox(&format!("b{round}")));
        let (ha, hb) = (f.handler.clone(), f.handler.clone());
        let (ra, rb) = (a.clone(), b.clone());
        let first = tokio::spawn(async move { ha.handle(&ra, &config("1.0.0")).await });
        let second = tokio::spawn(async move { hb.handle(&rb, &config("1.0.0")).await });
        let (first, second) = (first.await.unwrap(), second.await.unwrap());
        assert!(matches!(first, DaemonResponse::Success { .. }), "{first:?}");
        assert!(
            matches!(second, DaemonResponse::Success { .. }),
            "{second:?}"
        );
        // Whichever committed last owns the veth; the other's late DEL must not touch it.
        let owner = f
            .handler
            .store()
            .allocations()
            .next()
            .unwrap()
            .key
            .container_id
            .clone();
        let loser = if owner == a.container_id { &b } else { &a };
        let mut late_del = loser.clone();
        late_del.command = Command::Del;
        f.handler.handle(&late_del, &config("1.0.0")).await;
        assert_eq!(f.handler.store().len(), 1, "round {round}");
        let veths = f.handler.datapath.veths();
        assert_eq!(veths.len(), 1, "round {round}: {veths:?}");
        let holder = f.handler.store().allocations().next().unwrap().clone();
        assert_eq!(holder.key.container_id, owner);
        assert_eq!(
            veths.get(&holder.host_veth),
            Some(&holder.ip),
            "round {round}"
        );
    }
}

#[tokio::test]
async fn a_veth_owned_by_a_different_pod_is_refused_not_replaced() {
    let f = fixture("10.88.0.0/24");
    f.run(Command::Add, "first", "1.0.0").await;
    // Forge a name collision: another pod whose veth name equals the first pod's.
    let first = f.handler.store().allocations().next().unwrap().clone();
    let mut store_copy = first.clone();
    store_copy.key.container_id = "intruder".into();
    store_copy.ip = "10.88.0.200".parse().unwrap();
    store_copy.pod = Some(PodRef {
        namespace: "other".into(),
        name: "pod".into(),
    });
    store_copy.state = AllocationState::Reserved;
    store_copy.result = None;
    f.handler.store().reserve(store_copy).unwrap();
    let outcome = f
        .handler
        .release_stale_owner_of(&first.host_veth, &first.key, first.pod.as_ref())
        .await
        .unwrap_err();
    assert_eq!(outcome.code, codes::ATTACHMENT_EXISTS);
    assert!(
        outcome.msg.contains("intruder/eth0 (pod other/pod)"),
        "{}",
        outcome.msg
    );
    assert_eq!(f.handler.store().len(), 2, "nothing was torn down");
}

#[tokio::test]
async fn the_pack_plugin_chooses_every_address() {
    let f = fixture_with("10.88.0.0/24", Some("pack"));
    for (i, expected) in ["10.88.0.1", "10.88.0.2", "10.88.0.3"].iter().enumerate() {
        let response = f.run(Command::Add, &format!("p{i}"), "1.0.0").await;
        let result: serde_json::Value = serde_json::from_str(stdout(&response)).unwrap();
        assert_eq!(result["ips"][0]["address"], format!("{expected}/32"));
    }
    let audit = std::fs::read_to_string(f.handler.audit_log.path()).unwrap();
    let entries: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2]["result"], "10.88.0.3");
    assert_eq!(entries[2]["args"]["name"], "pod-p2");
    assert_eq!(entries[2]["outcome"], "ok");
    // pack reuses the lowest free address (densest block first, lowest address) once its
    // old veth is gone.
    f.run(Command::Del, "p1", "1.0.0").await;
    assert!(f.handler.drained(None, Duration::from_secs(5)).await);
    let response = f.run(Command::Add, "p3", "1.0.0").await;
    let result: serde_json::Value = serde_json::from_str(stdout(&response)).unwrap();
    assert_eq!(result["ips"][0]["address"], "10.88.0.2/32");
}

#[tokio::test]
async fn bad_proposals_and_failing_plugins_fail_the_add_closed() {
    let cases = [
        ("outside-pool", "allocator plugin outside-pool proposed 8.8.8.8, which is not a usable address of the pool; the ADD fails closed"),
        ("in-use", "allocator plugin in-use proposed 10.88.0.1, which is already held by first/eth0; the ADD fails closed"),
        ("loop-forever", "plugin loop-forever failed in allocate: ran out of fuel"),
        ("panics", "plugin panics failed in allocate: trapped"),
    ];
    for (plugin, expected) in cases {
        let f = fixture_with("10.88.0.0/24", Some(plugin));
        // One attachment through a well-behaved path first, so something is in use.
        let seeded = Allocation {
            key: AttachmentKey {
                container_id: "first".into(),
                ifname: "eth0".into(),
            },
            network: "pods".into(),
            ip: "10.88.0.1".parse().unwrap(),
            host_veth: "eniseeded00000".into(),
            netns: "/run/netns/first".into(),
            pod: None,
            route_table: None,
            state: AllocationState::Reserved,
            result: None,
            pod_routes: PodRoutes::default(),
            created_unix_ms: 0,
            egress_v4: None,
            ipv6: None,
        };
        f.handler.store().reserve(seeded).unwrap();
        let response = f.run(Command::Add, "victim", "1.0.0").await;
        let error: CniError = serde_json::from_str(stdout(&response)).unwrap();
        assert_eq!(error.code, codes::PLUGIN_FAILURE, "{plugin}: {}", error.msg);
        assert!(error.msg.starts_with(expected), "{plugin}: {}", error.msg);
        assert_eq!(
            f.handler.store().len(),
            1,
            "{plugin}: nothing reserved for the refused ADD"
        );
        assert!(
            f.handler.datapath.veths().is_empty(),
            "{plugin}: nothing built"
        );
    }
}

/// A Python allocator (`tests/plugins/py-hostile`, built with componentize-py) that reaches
/// for the node's files, environment, network and entropy on every ADD, granted a WASI that
/// holds nothing: it gets nothing, and the daemon keeps serving (its `allocate` fails open
/// here, so the built-in allocator chooses).
#[tokio::test]
async fn a_hostile_python_allocator_gets_nothing_and_the_daemon_keeps_serving() {
    use wasmcni_core::{Capability, Export, FailureMode, Hook, PluginKind};
    let mut spec = wasmcni_runtime::testing::spec(
        "py-hostile",
        PluginKind::Allocator,
        &[Capability::PoolView, Capability::Wasi],
    );
    spec.settings = [("MODE".to_owned(), "probe".to_owned())].into();
    spec.on_failure.0.insert(Hook::Allocate, FailureMode::Open);
    // The interpreter's call takes 2 ms; room for a loaded test machine.
    spec.limits.deadline_ms.insert(Export::Allocate, 5_000);
    // Loaded (its `init` called) on a blocking thread, as the daemon loads plugins: a WASI
    // call blocks on the runtime's handle, which an async context may not.
    let f =
        tokio::task::spawn_blocking(move || fixture_set("10.88.0.0/24", Some(spec), Vec::new()))
            .await
            .unwrap();
    for (i, expected) in ["10.88.0.1", "10.88.0.2"].iter().enumerate() {
        let response = f.run(Command::Add, &format!("p{i}"), "1.0.0").await;
        let result: serde_json::Value = serde_json::from_str(stdout(&response)).unwrap();
        assert_eq!(result["ips"][0]["address"], format!("{expected}/32"));
    }
    let audit = std::fs::read_to_string(f.handler.audit_log.path()).unwrap();
    let asked: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["call"] == "allocate")
        .collect();
    assert_eq!(asked.len(), 2, "{audit}");
    let report = asked[0]["result"].as_str().unwrap();
    for nothing in [
        r#""environ": {}"#,
        r#""file": {"error": "#,
        r#""socket": {"error": "#,
        r#""udp": {"error": "#,
    ] {
        assert!(report.contains(nothing), "{nothing} not in {report}");
    }
    f.run(Command::Del, "p0", "1.0.0").await;
    assert_eq!(f.handler.store().len(), 1);
}

#[tokio::test]
async fn a_full_pool_is_exhaustion_not_a_plugin_failure() {
    let f = fixture_with("10.88.0.0/30", Some("pack"));
    for cid in ["one", "two"] {
        assert!(matches!(
            f.run(Command::Add, cid, "1.0.0").await,
            DaemonResponse::Success { .. }
        ));
    }
    let error: CniError =
        serde_json::from_str(stdout(&f.run(Command::Add, "three", "1.0.0").await)).unwrap();
    assert_eq!(error.code, codes::POOL_EXHAUSTED, "{}", error.msg);
}

pub(super) fn policy_spec(name: &str, settings: &[(&str, &str)]) -> wasmcni_core::PluginSpec {
    use wasmcni_core::{Capability, PluginKind};
    let mut spec = wasmcni_runtime::testing::spec(
        name,
        PluginKind::Policy,
        &[Capability::Netlink, Capability::Log],
    );
    spec.grants.netlink.mtu = Some((1280, 9001));
    spec.settings = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec
}

pub(super) fn request_in(command: Command, container_id: &str, namespace: &str) -> CniRequest {
    let mut request = request(command, container_id);
    request.args[0].1 = namespace.to_owned();
    request
}

#[tokio::test]
async fn a_failing_allocator_that_fails_open_falls_back_to_the_built_in_choice() {
    use wasmcni_core::{Capability, FailureMode, Hook, PluginKind};
    let mut spec = wasmcni_runtime::testing::spec(
        "loop-forever",
        PluginKind::Allocator,
        &[Capability::PoolView],
    );
    spec.on_failure.0.insert(Hook::Allocate, FailureMode::Open);
    let f = fixture_set("10.88.0.0/24", Some(spec), Vec::new());
    let response = f.run(Command::Add, "c1", "1.1.0").await;
    assert!(
        matches!(response, DaemonResponse::Success { .. }),
        "{response:?}"
    );
    assert_eq!(f.held(), ["c1"]);
}

#[tokio::test]
async fn a_policy_deny_rolls_the_add_back_and_names_the_reason() {
    let guard = policy_spec(
        "namespace-guard",
        &[
            ("allow_namespaces", "default, team-*"),
            ("mtu.team-a", "1400"),
        ],
    );
    let f = fixture_set("10.88.0.0/24", None, vec![guard]);
    let config = config("1.1.0");
    let denied = f
        .handler
        .handle(&request_in(Command::Add, "c1", "kube-public"), &config)
        .await;
    let error: CniError = serde_json::from_str(stdout(&denied)).unwrap();
    assert_eq!(error.code, codes::POLICY_DENIED, "{}", error.msg);
    assert!(
        error
            .msg
            .starts_with("policy namespace-guard denied the ADD of pod kube-public/pod-c1: "),
        "{}",
        error.msg
    );
    assert!(f.held().is_empty(), "the reserved address was released");
    assert!(f.handler.datapath.veths().is_empty(), "nothing built");
    let denials = wasmcni_telemetry::metrics::Metrics::global()
        .policy_verdicts
        .get_or_create(&wasmcni_telemetry::metrics::VerdictLabel {
            plugin: "namespace-guard".into(),
            hook: "add".into(),
            verdict: "deny".into(),
        })
        .get();
    assert!(denials >= 1, "the denial is counted for operators");

    // Allowed with an adjustment: the MTU the hook asked for is applied in the pod and reported.
    let allowed = f
        .handler
        .handle(&request_in(Command::Add, "c2", "team-a"), &config)
        .await;
    let result: serde_json::Value = serde_json::from_str(stdout(&allowed)).unwrap();
    assert_eq!(result["interfaces"][1]["mtu"], 1400, "{result}");
    assert!(f.handler.datapath.calls().contains(&Call::Adjust(
        "eth0".into(),
        vec![wasmcni_core::NetlinkRequest::SetMtu { mtu: 1400 }]
    )));
    // Every hook call is in the audit log.
    let audit = std::fs::read_to_string(f.handler.audit_log.path()).unwrap();
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("\"call\":\"evaluate\""))
            .count(),
        2
    );
}

#[tokio::test]
async fn a_failing_policy_denies_add_but_never_blocks_del() {
    // `panics` is an allocator, not a policy; a policy that traps is `route-outside-scope`
    // with a tiny fuel budget.
    let mut hook = policy_spec("route-outside-scope", &[]);
    hook.limits.fuel = 1_000;
    let f = fixture_set("10.88.0.0/24", None, vec![hook]);
    let response = f.run(Command::Add, "c1", "1.1.0").await;
    let error: CniError = serde_json::from_str(stdout(&response)).unwrap();
    assert_eq!(error.code, codes::PLUGIN_FAILURE);
    assert!(error.msg.contains("ran out of fuel"), "{}", error.msg);
    assert!(
        error
            .msg
            .ends_with("the ADD of pod default/pod-c1 fails closed (on_failure.add = \"closed\")"),
        "{}",
        error.msg
    );
    assert!(f.held().is_empty());
}

#[tokio::test]
async fn del_cleans_up_even_when_a_policy_objects() {
    use wasmcni_core::{FailureMode, Hook};
    let mut hook = policy_spec("route-outside-scope", &[]);
    let f = fixture_set("10.88.0.0/24", None, vec![hook.clone()]);
    assert!(matches!(
        f.run(Command::Add, "c1", "1.1.0").await,
        DaemonResponse::Success { .. }
    ));
    // Now the hook traps on every call, and its DEL fails closed: the DEL still cleans up,
    // then reports the failure.
    hook.limits.fuel = 1_000;
    hook.on_failure.0.insert(Hook::Del, FailureMode::Closed);
    let runtime = crate::server::plugin_runtime(&f.handler.config, Compiler::InProcess).unwrap();
    f.handler.swap_plugins(PluginSet {
        allocator: None,
        tagger: None,
        policies: vec![Arc::new(runtime.load(&hook).unwrap())],
        generation: 2,
    });
    let response = f.run(Command::Del, "c1", "1.1.0").await;
    let error: CniError = serde_json::from_str(stdout(&response)).unwrap();
    assert_eq!(error.code, codes::PLUGIN_FAILURE);
    assert!(f.held().is_empty(), "the address was released anyway");
    assert!(f.handler.drained(None, Duration::from_secs(5)).await);
    assert!(
        f.handler.datapath.veths().is_empty(),
        "the veth was removed anyway"
    );
    // Open (the default): the DEL succeeds.
    hook.on_failure.0.insert(Hook::Del, FailureMode::Open);
    f.handler.swap_plugins(PluginSet {
        allocator: None,
        tagger: None,
        policies: vec![Arc::new(runtime.load(&hook).unwrap())],
        generation: 3,
    });
    assert!(matches!(
        f.run(Command::Add, "c2", "1.1.0").await,
        DaemonResponse::Failure { .. }
    ));
    assert!(matches!(
        f.run(Command::Del, "c2", "1.1.0").await,
        DaemonResponse::Success { .. }
    ));
}

#[tokio::test]
async fn chained_mode_runs_only_the_hooks_on_prev_result() {
    let guard = policy_spec("namespace-guard", &[("allow_namespaces", "default")]);
    let f = fixture_set("10.88.0.0/24", None, vec![guard]);
    let prev = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"address":"10.22.0.5/24","interface":0}]}"#;
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"pods","type":"wasmcni","mode":"chained","prevResult":{prev}}}"#
    );
    let allowed = f.handler.handle(&request(Command::Add, "c1"), &conf).await;
    let result: serde_json::Value = serde_json::from_str(stdout(&allowed)).unwrap();
    assert_eq!(
        result["ips"][0]["address"], "10.22.0.5/24",
        "prevResult passes through"
    );
    assert!(f.held().is_empty(), "chained: no address of ours");
    assert!(
        f.handler.datapath.veths().is_empty(),
        "chained: no interface of ours"
    );
    let denied = f
        .handler
        .handle(&request_in(Command::Add, "c2", "other"), &conf)
        .await;
    let error: CniError = serde_json::from_str(stdout(&denied)).unwrap();
    assert_eq!(error.code, codes::POLICY_DENIED);
    let without_prev = r#"{"cniVersion":"1.0.0","name":"pods","type":"wasmcni","mode":"chained"}"#;
    let error: CniError = serde_json::from_str(stdout(
        &f.handler
            .handle(&request(Command::Add, "c3"), without_prev)
            .await,
    ))
    .unwrap();
    assert_eq!(error.code, codes::INVALID_CONFIG);
    assert!(matches!(
        f.handler.handle(&request(Command::Del, "c1"), &conf).await,
        DaemonResponse::Success { .. }
    ));
}

/// A provider whose blocks a test grows, with a cooldown, as the EC2 provider behaves.
pub(super) struct GrowingProvider {
    blocks: Mutex<Vec<wasmcni_core::ipam::AddressBlock>>,
    cooldown: Duration,
}

impl GrowingProvider {
    pub(super) fn new(ips: &[&str], cooldown: Duration) -> Arc<GrowingProvider> {
        let provider = Arc::new(GrowingProvider {
            blocks: Mutex::new(Vec::new()),
            cooldown,
        });
        for ip in ips {
            provider.grow(ip);
        }
        provider
    }

    fn grow(&self, ip: &str) {
        self.blocks
            .lock()
            .unwrap()
            .push(wasmcni_core::ipam::AddressBlock {
                cidr: Ipv4Net::from(ip.parse::<Ipv4Addr>().unwrap()),
                route_table: Some(2),
                kind: wasmcni_core::ipam::BlockKind::SecondaryIp,
                eni_id: Some("eni-1".into()),
            });
    }
}

impl wasmcni_core::ipam::Provider for GrowingProvider {
    fn name(&self) -> &'static str {
        "growing"
    }
    fn inventory(&self) -> wasmcni_core::ipam::Inventory {
        wasmcni_core::ipam::Inventory {
            blocks: self.blocks.lock().unwrap().clone(),
            excluded: Default::default(),
            ipv6: Vec::new(),
            excluded_v6: Default::default(),
        }
    }
    fn view(&self) -> ProviderView {
        ProviderView {
            cooldown: self.cooldown,
            dynamic: true,
            ..ProviderView::default()
        }
    }
}

pub(super) fn growing_fixture(provider: &Arc<GrowingProvider>) -> Fixture {
    fixture_provider(
        "10.88.0.0/24",
        None,
        Vec::new(),
        Some(provider.clone() as Arc<dyn wasmcni_core::ipam::Provider>),
    )
}

/// As [`restart`], for a node of `provider`: `f`'s daemon dies and a new one starts on its state
/// directory (on a fresh node: what is checked is the state, not the data path).
pub(super) fn restarted_growing(f: Fixture, provider: &Arc<GrowingProvider>) -> Fixture {
    let Fixture { handler, _dir: dir } = f;
    drop(handler);
    fixture_on(
        dir,
        "10.88.0.0/24",
        None,
        Vec::new(),
        Some(provider.clone() as Arc<dyn wasmcni_core::ipam::Provider>),
        FakeDatapath::new(),
    )
}

pub(crate) fn ip_of(response: &DaemonResponse) -> String {
    let value: serde_json::Value = serde_json::from_str(stdout(response)).unwrap();
    value["ips"][0]["address"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_released_address_cools_down_before_it_is_handed_out_again() {
    let provider = GrowingProvider::new(
        &["10.0.0.5", "10.0.0.6", "10.0.0.7"],
        Duration::from_secs(60),
    );
    let f = growing_fixture(&provider);
    assert_eq!(
        ip_of(&f.run(Command::Add, "a", "1.1.0").await),
        "10.0.0.5/32"
    );
    assert_eq!(
        ip_of(&f.run(Command::Add, "b", "1.1.0").await),
        "10.0.0.6/32"
    );
    f.run(Command::Del, "a", "1.1.0").await;
    assert_eq!(f.handler.cooling_now(), vec![Ipv4Addr::new(10, 0, 0, 5)]);
    assert_eq!(
        f.handler.free_addresses(),
        1,
        "a cooling address is not free"
    );
    // Even after the cursor wraps, 10.0.0.5 rests: the next ADD gets the only free one.
    assert_eq!(
        ip_of(&f.run(Command::Add, "c", "1.1.0").await),
        "10.0.0.7/32"
    );
    assert!(f.handler.is_taken(Ipv4Addr::new(10, 0, 0, 5)));
}

#[tokio::test]
async fn an_add_on_an_empty_growing_pool_waits_for_it_to_grow() {
    let provider = GrowingProvider::new(&["10.0.0.5"], Duration::ZERO);
    let f = Arc::new(growing_fixture(&provider));
    assert_eq!(
        ip_of(&f.run(Command::Add, "a", "1.1.0").await),
        "10.0.0.5/32"
    );
    let waiting = tokio::spawn({
        let f = f.clone();
        async move { f.run(Command::Add, "b", "1.1.0").await }
    });
    // The ADD woke the reconciler and waits; the "reconciler" grows the pool.
    tokio::time::timeout(Duration::from_secs(5), f.handler.wake_warm_pool.notified())
        .await
        .expect("the reconciler is woken");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the ADD waits instead of failing");
    provider.grow("10.0.0.9");
    f.handler.refresh_inventory();
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the ADD finishes once the pool grew")
        .unwrap();
    assert_eq!(ip_of(&answer), "10.0.0.9/32");
    assert_eq!(f.held(), ["a", "b"]);
}

/// Waiting ADDs do not ask the allocator again while the pool has no free address: ten waiters
/// and five changes of the pool that free nothing cost no allocator call (they cost fifty, one
/// per waiter per change, before); once addresses arrive, every waiter is served.
#[tokio::test]
async fn waiting_adds_ask_the_allocator_only_when_an_address_is_free() {
    use wasmcni_core::{Capability, PluginKind};
    let provider = GrowingProvider::new(&["10.0.0.5"], Duration::ZERO);
    let allocator = wasmcni_runtime::testing::spec(
        "pack",
        PluginKind::Allocator,
        &[
            Capability::PoolView,
            Capability::EniOps,
            Capability::Log,
            Capability::Clock,
        ],
    );
    let f = Arc::new(fixture_provider(
        "10.88.0.0/24",
        Some(allocator),
        Vec::new(),
        Some(provider.clone() as Arc<dyn wasmcni_core::ipam::Provider>),
    ));
    let audit = f._dir.path().join("state/plugin-audit.log");
    let allocations = || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("\"allocate\""))
            .count()
    };
    assert_eq!(
        ip_of(&f.run(Command::Add, "a", "1.1.0").await),
        "10.0.0.5/32"
    );
    let waiting: Vec<_> = (0..10)
        .map(|i| {
            let f = f.clone();
            tokio::spawn(async move { f.run(Command::Add, &format!("w{i}"), "1.1.0").await })
        })
        .collect();
    // Each waiter asked once and found the pool exhausted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while allocations() < 11 {
        assert!(std::time::Instant::now() < deadline, "{}", allocations());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let asked = allocations();
    assert_eq!(asked, 11, "one ADD served, ten asked once");
    for _ in 0..5 {
        f.handler.refresh_inventory();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(waiting.iter().all(|w| !w.is_finished()), "they still wait");
    assert_eq!(
        allocations(),
        asked,
        "changes that free nothing ask the allocator nothing"
    );
    for i in 10..20 {
        provider.grow(&format!("10.0.0.{i}"));
    }
    f.handler.refresh_inventory();
    for (i, w) in waiting.into_iter().enumerate() {
        let answer = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("served once the pool grew")
            .unwrap();
        assert!(
            matches!(answer, DaemonResponse::Success { .. }),
            "w{i}: {answer:?}"
        );
    }
    assert_eq!(f.held().len(), 11);
}

#[tokio::test]
async fn status_is_not_ready_until_a_growing_pool_reached_its_minimum() {
    let provider = GrowingProvider::new(&[], Duration::ZERO);
    let f = growing_fixture(&provider);
    f.handler.set_grow_error(Some(
        "EC2 AssignPrivateIpAddresses: InsufficientFreeAddressesInSubnet: none left".into(),
    ));
    let answer = f.run(Command::Status, "", "1.1.0").await;
    let DaemonResponse::Failure { error, .. } = answer else {
        panic!("STATUS answered ready on an empty pool");
    };
    assert_eq!(error.code, codes::NOT_AVAILABLE);
    assert!(error.msg.contains("has not reached its minimum since the daemon started (last attempt: EC2 AssignPrivateIpAddresses: InsufficientFreeAddressesInSubnet"), "{}", error.msg);
    f.handler.set_ready();
    assert!(matches!(
        f.run(Command::Status, "", "1.1.0").await,
        DaemonResponse::Success { .. }
    ));
}

#[tokio::test]
async fn an_address_another_cnis_pod_holds_is_never_handed_out() {
    let f = fixture("10.88.0.0/29");
    f.handler
        .datapath
        .add_foreign_pod_route(Ipv4Addr::new(10, 88, 0, 1));
    f.handler.refresh_node_held().await;
    assert_eq!(
        ip_of(&f.run(Command::Add, "a", "1.1.0").await),
        "10.88.0.2/32"
    );
    assert!(f.handler.is_taken(Ipv4Addr::new(10, 88, 0, 1)));
    assert_eq!(
        f.handler.free_addresses(),
        4,
        "6 usable, 1 ours, 1 another CNI's"
    );
}

/// IPv6 prefix mode as the EC2 provider serves it: one /80 of the primary ENI.
pub(super) struct Ipv6PrefixProvider;

impl wasmcni_core::ipam::Provider for Ipv6PrefixProvider {
    fn name(&self) -> &'static str {
        "ipv6-prefix"
    }
    fn inventory(&self) -> wasmcni_core::ipam::Inventory {
        wasmcni_core::ipam::Inventory {
            ipv6: vec![wasmcni_core::ipam::Ipv6Block {
                cidr: "2600:1f14:aa:bb:cc::/80".parse().unwrap(),
                eni_id: Some("eni-primary".into()),
            }],
            ..wasmcni_core::ipam::Inventory::default()
        }
    }
    fn view(&self) -> ProviderView {
        ProviderView {
            cooldown: Duration::from_secs(30),
            dynamic: false,
            family: IpFamily::Ipv6,
            ..ProviderView::default()
        }
    }
}

#[tokio::test]
async fn ipv6_prefix_mode_hands_out_128s_with_the_link_local_gateway_and_policies_see_them() {
    let guard = policy_spec("namespace-guard", &[("allow_namespaces", "default")]);
    let f = fixture_provider(
        "10.88.0.0/24",
        None,
        vec![guard],
        Some(Arc::new(Ipv6PrefixProvider) as Arc<dyn wasmcni_core::ipam::Provider>),
    );
    assert!(
        f.handler.is_ready(),
        "the prefix is there before the first request"
    );
    let prefix: ipnet::Ipv6Net = "2600:1f14:aa:bb:cc::/80".parse().unwrap();
    let mut seen = Vec::new();
    for cid in ["a", "b", "c"] {
        let response = f.run(Command::Add, cid, "1.1.0").await;
        assert!(
            matches!(response, DaemonResponse::Success { .. }),
            "{response:?}"
        );
        let result: serde_json::Value = serde_json::from_str(stdout(&response)).unwrap();
        let address = result["ips"][0]["address"].as_str().unwrap().to_owned();
        let ip: std::net::Ipv6Addr = address
            .strip_suffix("/128")
            .unwrap_or_else(|| panic!("a /128: {result}"))
            .parse()
            .unwrap();
        assert!(
            prefix.contains(&ip) && ip != prefix.network(),
            "{ip} in {prefix}"
        );
        assert_eq!(result["ips"][0]["gateway"], "fe80::1", "{result}");
        assert_eq!(result["routes"][0]["dst"], "::/0", "{result}");
        assert_eq!(result["routes"][0]["gw"], "fe80::1", "{result}");
        assert!(!seen.contains(&ip), "{ip} handed out twice");
        seen.push(ip);
    }
    // The data path got the IPv6 address, in the main table (no per-ENI rules).
    let veths = f.handler.datapath.veths();
    assert_eq!(veths.get(&veth("a")), Some(&IpAddr::V6(seen[0])));
    let held = f
        .handler
        .store()
        .get(&AttachmentKey::new("a", "eth0"))
        .cloned()
        .unwrap();
    assert_eq!(held.route_table, None);
    // Policies were asked about the pod's IPv6 address (the audit log shows what they got).
    let audit = std::fs::read_to_string(f.handler.audit_log.path()).unwrap();
    assert!(audit.contains(&format!("{}/128", seen[0])), "{audit}");
    // Free addresses are counted, not walked: 2^48 - 1 less the three held.
    assert_eq!(f.handler.free_addresses(), (1u64 << 48) - 1 - 3);

    // DEL: the address cools; the next pod gets a fresh one.
    f.run(Command::Del, "a", "1.1.0").await;
    assert_eq!(f.handler.cooling_now(), vec![IpAddr::V6(seen[0])]);
    assert!(f.handler.is_taken(IpAddr::V6(seen[0])));
    assert!(f
        .handler
        .datapath
        .calls()
        .contains(&Call::Detach(veth("a"))));
    assert!(f.handler.drained(None, Duration::from_secs(5)).await);
    assert!(!f.handler.datapath.veths().contains_key(&veth("a")));
    let next = ip_of(&f.run(Command::Add, "d", "1.1.0").await);
    assert!(!next.starts_with(&seen[0].to_string()), "{next}");
    // Another CNI's pod on a /128 of the prefix (a migration): never handed out.
    let foreign: std::net::Ipv6Addr = "2600:1f14:aa:bb:cc::99".parse().unwrap();
    assert!(!f.handler.is_taken(IpAddr::V6(foreign)));
    f.handler.datapath.add_foreign_pod_route(foreign);
    f.handler.refresh_node_held().await;
    assert!(f.handler.is_taken(IpAddr::V6(foreign)));
    // CHECK of an IPv6 pod.
    let check = f.run(Command::Check, "b", "1.1.0").await;
    assert!(matches!(check, DaemonResponse::Success { .. }), "{check:?}");
}

#[tokio::test]
async fn the_cooldown_survives_a_restart() {
    let provider = GrowingProvider::new(&["10.0.0.5", "10.0.0.6"], Duration::from_secs(60));
    let f = growing_fixture(&provider);
    assert_eq!(
        ip_of(&f.run(Command::Add, "a", "1.1.0").await),
        "10.0.0.5/32"
    );
    f.run(Command::Del, "a", "1.1.0").await;
    assert!(f.handler.is_taken(Ipv4Addr::new(10, 0, 0, 5)));
    // The daemon dies; a new one starts on the same state directory.
    let f = restarted_growing(f, &provider);
    assert_eq!(f.handler.cooling_now(), vec![Ipv4Addr::new(10, 0, 0, 5)]);
    assert_eq!(
        ip_of(&f.run(Command::Add, "b", "1.1.0").await),
        "10.0.0.6/32",
        "the address released before the restart still rests"
    );
    assert_eq!(f.handler.free_addresses(), 0, "one held, one cooling");
}

/// A burst of DELs writes the cooling set once per writer turn, not once per DEL: every DEL
/// still answers only after a set holding its address is on disk, so all of them survive a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_dels_keeps_every_cooldown_across_a_restart() {
    let addresses: Vec<String> = (10..30).map(|n| format!("10.0.0.{n}")).collect();
    let names: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let provider = GrowingProvider::new(&names, Duration::from_secs(60));
    let f = growing_fixture(&provider);
    let pods: Vec<String> = (0..addresses.len()).map(|n| format!("pod-{n}")).collect();
    for pod in &pods {
        assert!(matches!(
            f.run(Command::Add, pod, "1.1.0").await,
            DaemonResponse::Success { .. }
        ));
    }
    let dels = pods.iter().map(|pod| f.run(Command::Del, pod, "1.1.0"));
    for answer in futures_util::future::join_all(dels).await {
        assert!(
            matches!(answer, DaemonResponse::Success { .. }),
            "{answer:?}"
        );
    }
    let f = restarted_growing(f, &provider);
    let mut cooling = f.handler.cooling_now();
    cooling.sort();
    let expected: Vec<Ipv4Addr> = addresses.iter().map(|a| a.parse().unwrap()).collect();
    assert_eq!(cooling, expected);
}

#[tokio::test]
async fn an_unset_mtu_is_the_uplinks_for_the_static_provider() {
    let dir = tempfile::tempdir().unwrap();
    let text = wasmcni_config::DEFAULT_CONFIG.replace(
        "/var/lib/wasmcni",
        &dir.path().join("state").display().to_string(),
    );
    let file = ClusterConfig::parse(&text, "test").unwrap();
    assert_eq!(
        file.datapath.mtu, None,
        "the default configuration leaves it unset"
    );
    let datapath = FakeDatapath::new();
    datapath.set_uplink_mtu(1400);
    let (handler, _) = crate::server::start(file.clone(), datapath, None, Compiler::InProcess)
        .await
        .unwrap();
    assert_eq!(handler.pod_mtu, 1400);
    assert_eq!(
        handler.config, file,
        "the configuration stays as the file says (reloads compare it)"
    );
    let answer = handler
        .handle(&request(Command::Add, "c1"), &config("1.1.0"))
        .await;
    assert!(
        matches!(answer, DaemonResponse::Success { .. }),
        "{answer:?}"
    );
    let veth = handler
        .store()
        .allocations()
        .next()
        .unwrap()
        .host_veth
        .clone();
    assert_eq!(handler.datapath.mtu_of(&veth), Some(1400));

    // Set in the file, it is what the pods get whatever the uplink.
    let dir = tempfile::tempdir().unwrap();
    let text = wasmcni_config::DEFAULT_CONFIG
        .replace(
            "/var/lib/wasmcni",
            &dir.path().join("state").display().to_string(),
        )
        .replace("# mtu = 9001", "mtu = 9001");
    let datapath = FakeDatapath::new();
    datapath.set_uplink_mtu(1400);
    let (handler, _) = crate::server::start(
        ClusterConfig::parse(&text, "test").unwrap(),
        datapath,
        None,
        Compiler::InProcess,
    )
    .await
    .unwrap();
    assert_eq!(handler.pod_mtu, 9001);

    // No default route to read: 1500 (and a warning).
    let dir = tempfile::tempdir().unwrap();
    let text = wasmcni_config::DEFAULT_CONFIG.replace(
        "/var/lib/wasmcni",
        &dir.path().join("state").display().to_string(),
    );
    let (handler, _) = crate::server::start(
        ClusterConfig::parse(&text, "test").unwrap(),
        FakeDatapath::new(),
        None,
        Compiler::InProcess,
    )
    .await
    .unwrap();
    assert_eq!(handler.pod_mtu, wasmcni_config::FALLBACK_MTU);
}

#[tokio::test]
async fn a_requested_mac_is_the_pod_interfaces_and_a_bad_one_is_refused_before_anything() {
    let f = fixture("10.88.0.0/24");
    let pod_mac = |answer: &DaemonResponse| -> String {
        let value: serde_json::Value = serde_json::from_str(stdout(answer)).unwrap();
        value["interfaces"][1]["mac"].as_str().unwrap().to_owned()
    };
    // podman's --mac-address: CNI_ARGS MAC=.
    let mut by_args = request(Command::Add, "a");
    by_args
        .args
        .push(("MAC".into(), "02:11:22:33:44:55".into()));
    let answer = f.handler.handle(&by_args, &config("1.1.0")).await;
    assert_eq!(pod_mac(&answer), "02:11:22:33:44:55");
    // The `mac` capability wins over CNI_ARGS.
    let mut both = request(Command::Add, "b");
    both.args.push(("MAC".into(), "02:11:22:33:44:55".into()));
    let with_capability = r#"{"cniVersion":"1.1.0","name":"pods","type":"wasmcni","runtimeConfig":{"mac":"0a:00:00:00:00:0b"}}"#;
    let answer = f.handler.handle(&both, with_capability).await;
    assert_eq!(pod_mac(&answer), "0a:00:00:00:00:0b");
    // Without one (an empty or null one is none), the data path's own.
    let answer = f.run(Command::Add, "c", "1.1.0").await;
    assert_eq!(pod_mac(&answer), "02:00:00:00:00:02");
    for (id, empty) in [("e1", r#""""#), ("e2", "null")] {
        let conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"pods","type":"wasmcni","runtimeConfig":{{"mac":{empty}}}}}"#
        );
        let answer = f.handler.handle(&request(Command::Add, id), &conf).await;
        assert_eq!(pod_mac(&answer), "02:00:00:00:00:02", "{empty}");
    }

    for (args_mac, conf, expected) in [
        (Some("01:00:5e:00:00:01"), config("1.1.0"), "CNI_ARGS MAC: \"01:00:5e:00:00:01\" is a multicast MAC address"),
        (Some("00:00:00:00:00:00"), config("1.1.0"), "all-zeros"),
        (None, r#"{"cniVersion":"1.1.0","name":"pods","type":"wasmcni","runtimeConfig":{"mac":"nope"}}"#.to_owned(), "runtimeConfig.mac: \"nope\" is not a MAC address"),
        (None, r#"{"cniVersion":"1.1.0","name":"pods","type":"wasmcni","runtimeConfig":{"mac":7}}"#.to_owned(), "runtimeConfig.mac: 7 is not a MAC address"),
    ] {
        let mut refused = request(Command::Add, "d");
        if let Some(mac) = args_mac {
            refused.args.push(("MAC".into(), mac.into()));
        }
        let DaemonResponse::Failure { error, .. } = f.handler.handle(&refused, &conf).await else {
            panic!("{expected}: accepted");
        };
        assert_eq!(error.code, codes::INVALID_CONFIG, "{}", error.msg);
        assert!(error.msg.contains(expected), "{expected} in {}", error.msg);
    }
    assert_eq!(
        f.held(),
        ["a", "b", "c", "e1", "e2"],
        "nothing reserved for a refused request"
    );
}

#[tokio::test]
async fn after_another_plugin_ip_and_mac_requests_are_that_plugins() {
    // podman with two networks: CNI_ARGS reach every plugin; the first one served them.
    let f = fixture("10.88.0.0/24");
    let mut after = request(Command::Add, "a");
    after.args.push(("IP".into(), "10.99.0.7".into()));
    after.args.push(("MAC".into(), "02:11:22:33:44:55".into()));
    let conf = r#"{"cniVersion":"1.1.0","name":"pods","type":"wasmcni","prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"02:11:22:33:44:55","sandbox":"/run/netns/a"}],"ips":[{"interface":0,"address":"10.99.0.7/24"}]}}"#;
    let answer = f.handler.handle(&after, conf).await;
    let value: serde_json::Value = serde_json::from_str(stdout(&answer)).unwrap();
    let ours = value["interfaces"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(ours["mac"], "02:00:00:00:00:02", "{value}");
    assert_eq!(f.held(), ["a"]);
}
