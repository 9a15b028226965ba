//! An ADD answers once its reservation is durable; the record of its commit follows. A crash in
//! between leaves a reservation for a pod the runtime was told about: start-up commits an
//! earlier daemon's reservation whose data path is complete, with the default routes its ADD
//! decided, and rolls back one whose data path is not. An ADD whose reservation cannot be made
//! durable is never answered with a result: it is undone.

use super::tests::{config, fixture, ip_of, request, restart, stdout, veth};
use super::*;
use crate::server::recovery::{reconcile_node, Orphans};
use wasmcni_datapath::fake::Call;

/// Takes the commit records of `containers` out of the log: what a crash before their sync
/// leaves on disk (there, the records lost are the log's last ones; the datastore reads both
/// alike).
fn lose_commits(state: &std::path::Path, containers: &[&str]) {
    for entry in std::fs::read_dir(state).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("wal-") && name.ends_with(".log")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: String = text
            .lines()
            .filter(|line| {
                !(line.contains(r#""op":"commit""#)
                    && containers
                        .iter()
                        .any(|id| line.contains(&format!(r#""container_id":"{id}""#))))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        assert_ne!(kept, text, "{name} held the commits");
        std::fs::write(&path, kept).unwrap();
    }
}

fn succeeded(response: &DaemonResponse) {
    assert!(
        matches!(response, DaemonResponse::Success { .. }),
        "{response:?}"
    );
}

#[tokio::test]
async fn an_answered_add_whose_commit_record_a_crash_took_stays_attached() {
    let f = fixture("10.88.0.0/24");
    let answered = f.run(Command::Add, "answered", "1.1.0").await;
    succeeded(&answered);
    // A pod with two interfaces: the first took the default route, so the second's ADD
    // decided against one.
    succeeded(&f.run(Command::Add, "multi", "1.1.0").await);
    let net1 = CniRequest {
        ifname: "net1".into(),
        ..request(Command::Add, "multi")
    };
    succeeded(&f.handler.handle(&net1, &config("1.1.0")).await);
    // And an ADD the crash cut short: reserved, nothing built.
    let cut = Allocation {
        key: AttachmentKey::new("cut", "eth0"),
        network: "pods".into(),
        ip: "10.88.0.60".parse().unwrap(),
        host_veth: veth("cut"),
        netns: "/run/netns/cut".into(),
        pod: None,
        route_table: None,
        state: AllocationState::Reserved,
        result: None,
        pod_routes: wasmcni_core::PodRoutes {
            default_route: DefaultRoute::UnlessPresent,
            ..Default::default()
        },
        created_unix_ms: 0,
        egress_v4: None,
        ipv6: None,
    };
    f.handler.store().reserve(cut.clone()).unwrap();

    let f = restart(f, |state| lose_commits(state, &["answered", "multi"]));
    let keys = [
        AttachmentKey::new("answered", "eth0"),
        AttachmentKey::new("multi", "eth0"),
        AttachmentKey::new("multi", "net1"),
    ];
    for key in &keys {
        assert_eq!(
            f.handler.store().get(key).map(|a| a.state),
            Some(AllocationState::Reserved),
            "{key}"
        );
    }
    let pending = f._dir.path().join("pending-del");
    let report = reconcile_node(&f.handler, &pending, Orphans::Remove).await;
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!((report.completed, report.rolled_back), (3, 1), "{report:?}");

    {
        let store = f.handler.store();
        for key in &keys {
            let allocation = store.get(key).unwrap();
            assert_eq!(allocation.state, AllocationState::Committed, "{key}");
            assert!(allocation.result.is_some(), "{key}");
        }
        let routes = |key: &AttachmentKey| store.get(key).unwrap().pod_routes.default_route;
        assert_eq!(routes(&keys[1]), DefaultRoute::Install);
        assert_eq!(routes(&keys[2]), DefaultRoute::Skip, "as its ADD decided");
        assert!(store.get(&cut.key).is_none(), "the cut-short ADD is undone");
    }
    assert!(f
        .handler
        .datapath
        .calls()
        .contains(&Call::Teardown(veth("cut"))));
    // The pod the runtime was told about passes its CHECK with the result it holds, keeps its
    // address from every other pod, and its DEL frees it.
    let check = format!(
        r#"{{"cniVersion":"1.1.0","name":"pods","type":"wasmcni","prevResult":{}}}"#,
        stdout(&answered)
    );
    succeeded(
        &f.handler
            .handle(&request(Command::Check, "answered"), &check)
            .await,
    );
    let other = f.run(Command::Add, "other", "1.1.0").await;
    succeeded(&other);
    assert_ne!(ip_of(&other), ip_of(&answered));
    succeeded(&f.run(Command::Del, "answered", "1.1.0").await);
    assert!(f.handler.store().get(&keys[0]).is_none());
}

#[tokio::test]
async fn a_reservation_this_daemon_made_is_rolled_back_even_when_complete() {
    // While serving, a reservation nobody is adding is an ADD whose undo failed: the runtime
    // got an error for it, never a result, so it is undone, however complete.
    let f = fixture("10.88.0.0/24");
    succeeded(&f.run(Command::Add, "kept", "1.1.0").await);
    let key = AttachmentKey::new("kept", "eth0");
    let reserved = Allocation {
        state: AllocationState::Reserved,
        result: None,
        ..f.handler.store().get(&key).unwrap().clone()
    };
    f.handler.store().release(&key).unwrap();
    f.handler.store().reserve(reserved).unwrap();
    let pending = f._dir.path().join("pending-del");
    let report = reconcile_node(&f.handler, &pending, Orphans::Keep).await;
    assert_eq!((report.completed, report.rolled_back), (0, 1), "{report:?}");
    assert!(f.handler.store().get(&key).is_none());
}

#[tokio::test]
async fn an_add_whose_reservation_cannot_be_made_durable_is_undone() {
    let f = fixture("10.88.0.0/24");
    // The disk fails under the current log: its fdatasync is refused, its writes still land.
    let generation = f.handler.store().generation();
    f.handler.store().fail_syncs_for_test();
    let failed = f.run(Command::Add, "unsynced", "1.1.0").await;
    let DaemonResponse::Failure { error, .. } = &failed else {
        panic!("an ADD whose reservation is not durable got a result: {failed:?}");
    };
    assert_eq!(error.code, codes::DATASTORE_FAILURE, "{error:?}");
    assert!(error.msg.contains("fdatasync"), "{}", error.msg);
    // Nothing of it stays: the data path it built is gone, and its address is held by no one.
    assert!(f
        .handler
        .datapath
        .calls()
        .contains(&Call::Teardown(veth("unsynced"))));
    let key = AttachmentKey::new("unsynced", "eth0");
    assert!(f.handler.store().get(&key).is_none());
    assert!(f.handler.store().allocations().next().is_none());

    // The daemon goes on: undoing the ADD rewrote the state into a new log, which syncs.
    assert!(f.handler.store().generation() > generation);
    let next = f.run(Command::Add, "next", "1.1.0").await;
    succeeded(&next);
    let f = restart(f, |_| {});
    assert!(f.handler.store().get(&key).is_none());
    assert_eq!(
        f.handler
            .store()
            .get(&AttachmentKey::new("next", "eth0"))
            .map(|a| (a.state, format!("{}/32", a.ip))),
        Some((AllocationState::Committed, ip_of(&next)))
    );
}
