//! Start-up after the datastore lost records to damage: a wasmcni veth that routes an address
//! is a pod, whatever the store says. It is neither removed nor rolled back, and its address is
//! held (never handed out) until the veth goes.

use super::tests::{fixture, ip_of, veth};
use super::*;
use crate::server::recovery::{reconcile_node, Orphans};
use wasmcni_datastore::{Allocation, AllocationState};

fn address(response: &DaemonResponse) -> IpAddr {
    ip_of(response).trim_end_matches("/32").parse().unwrap()
}

#[tokio::test]
async fn after_a_loss_routed_veths_are_kept_and_their_addresses_held_until_they_go() {
    let f = fixture("10.88.0.0/24");
    let lost_ip = address(&f.run(Command::Add, "lost", "1.1.0").await);
    let kept_ip = address(&f.run(Command::Add, "kept", "1.1.0").await);
    // Damage took the pod's records: the store no longer knows it, the node still routes it.
    f.handler
        .store()
        .release(&AttachmentKey::new("lost", "eth0"))
        .unwrap();
    // And an ADD's commit: its record says Reserved while its pod is up and routed.
    let unconfirmed_ip: IpAddr = "10.88.0.60".parse().unwrap();
    let unconfirmed = Allocation {
        key: AttachmentKey::new("unconfirmed", "eth0"),
        network: "pods".into(),
        ip: unconfirmed_ip,
        host_veth: veth("unconfirmed"),
        netns: "/run/netns/unconfirmed".into(),
        pod: None,
        route_table: None,
        state: AllocationState::Reserved,
        result: None,
        pod_routes: wasmcni_core::PodRoutes::default(),
        created_unix_ms: 0,
        egress_v4: None,
        ipv6: None,
    };
    f.handler.store().reserve(unconfirmed.clone()).unwrap();
    f.handler
        .datapath
        .add_orphan(&unconfirmed.host_veth, unconfirmed_ip);
    // A DEL's veth whose deletion a crash cut short: down, unrouted, nobody's.
    f.handler
        .datapath
        .add_orphan("eni00000000cut", Ipv4Addr::new(10, 88, 0, 70));
    f.handler
        .datapath
        .detach_pod(&wasmcni_datapath::HostSide {
            host_veth: "eni00000000cut".into(),
            ip: "10.88.0.70".parse().unwrap(),
            ipv6: None,
            route_table: None,
            pod_rule: None,
        })
        .await
        .unwrap();
    f.handler.records_lost.store(true, Ordering::Relaxed);

    let pending = f._dir.path().join("pending-del");
    let report = reconcile_node(&f.handler, &pending, Orphans::Remove).await;
    assert!(report.failures.is_empty(), "{report:?}");
    // The cut-short DEL's veth goes (its DEL removed its rules); the live pods keep theirs.
    assert_eq!(
        (
            report.unrecorded_pods,
            report.rolled_back,
            report.orphan_veths,
            report.orphan_rules
        ),
        (2, 0, 1, 0),
        "{report:?}"
    );
    let veths = f.handler.datapath.veths();
    for name in [veth("lost"), veth("kept"), veth("unconfirmed")] {
        assert!(veths.contains_key(&name), "{name} was removed: {veths:?}");
    }
    assert!(!veths.contains_key("eni00000000cut"), "{veths:?}");
    let rules: Vec<IpAddr> = f
        .handler
        .datapath
        .rules()
        .iter()
        .map(|(ip, _)| *ip)
        .collect();
    for ip in [lost_ip, unconfirmed_ip, kept_ip] {
        assert!(
            rules.contains(&ip),
            "the rules of {ip} were removed: {rules:?}"
        );
    }
    assert_eq!(f.held(), ["kept"]);
    for ip in [lost_ip, unconfirmed_ip, kept_ip] {
        assert!(
            f.handler.is_taken(ip),
            "{ip} is free while a veth routes it"
        );
    }
    // No chooser hands them out: a pool of the rest serves ADDs around them.
    for n in 0..5 {
        let got = address(&f.run(Command::Add, &format!("new{n}"), "1.1.0").await);
        assert!(![lost_ip, unconfirmed_ip, kept_ip].contains(&got), "{got}");
    }

    // The runtime deleted the lost pod's namespace: its veth went, and with it the hold.
    f.handler.datapath.remove_veth(&veth("lost"));
    let report = reconcile_node(&f.handler, &pending, Orphans::Keep).await;
    assert!(report.failures.is_empty(), "{report:?}");
    assert!(!f.handler.is_taken(lost_ip));
    assert!(f.handler.is_taken(unconfirmed_ip));
}

#[tokio::test]
async fn without_a_loss_start_up_still_removes_what_nobody_owns() {
    let f = fixture("10.88.0.0/24");
    f.handler
        .datapath
        .add_orphan("eni0000000000a", Ipv4Addr::new(10, 88, 0, 50));
    let pending = f._dir.path().join("pending-del");
    let report = reconcile_node(&f.handler, &pending, Orphans::Remove).await;
    assert_eq!(
        (report.orphan_veths, report.unrecorded_pods),
        (1, 0),
        "{report:?}"
    );
    assert!(!f.handler.is_taken("10.88.0.50".parse::<IpAddr>().unwrap()));
}
