//! DEL answers before the kernel has deleted the veth: the address drains until it has, and
//! nobody gets it before (the fake holds link removals the way a slow kernel would).

use super::tests::{config, fixture, ip_of, request, veth};
use super::*;
use wasmcni_datapath::fake::Call;

const LIMIT: Duration = Duration::from_secs(5);

fn asking(command: Command, container_id: &str, ip: &str) -> CniRequest {
    let mut request = request(command, container_id);
    request.args.push(("IP".into(), ip.into()));
    request
}

fn ok(response: &DaemonResponse) {
    assert!(
        matches!(response, DaemonResponse::Success { .. }),
        "{response:?}"
    );
}

/// The position of `call` in the fake's record.
fn position(f: &super::tests::Fixture, call: &Call) -> usize {
    let calls = f.handler.datapath.calls();
    calls
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("{call:?} never happened: {calls:?}"))
}

#[tokio::test]
async fn del_answers_with_the_pod_cut_off_and_the_address_drains_until_the_veth_is_gone() {
    let f = fixture("10.88.0.0/24");
    let ip: IpAddr = ip_of(&f.run(Command::Add, "a", "1.1.0").await)
        .trim_end_matches("/32")
        .parse()
        .unwrap();
    f.handler.datapath.hold_link_removals();
    ok(&f.run(Command::Del, "a", "1.1.0").await);

    // Answered: no record, the veth down and its rules gone, the deletion still pending.
    assert!(f.handler.store().is_empty());
    assert!(f.handler.datapath.is_down(&veth("a")));
    assert!(f.handler.datapath.veths().contains_key(&veth("a")));
    assert!(!f
        .handler
        .datapath
        .calls()
        .contains(&Call::RemoveLink(veth("a"))));
    // ... and the address is nobody's to take: not free, in use for plugins.
    assert!(f.handler.is_draining(ip));
    assert!(f.handler.is_taken(ip));
    assert!(f
        .handler
        .pool_snapshot()
        .in_use
        .contains(&ipv4_of(ip).unwrap()));
    let free_while_draining = f.handler.free_addresses();

    f.handler.datapath.finish_link_removals();
    assert!(f.handler.drained(Some(ip), LIMIT).await);
    assert!(!f.handler.datapath.veths().contains_key(&veth("a")));
    assert!(!f.handler.is_taken(ip));
    assert_eq!(f.handler.free_addresses(), free_while_draining + 1);
}

#[tokio::test]
async fn an_add_asking_for_a_draining_address_gets_it_only_once_the_old_veth_is_gone() {
    let f = fixture("10.88.0.0/24");
    let conf = config("1.1.0");
    ok(&f
        .handler
        .handle(&asking(Command::Add, "old", "10.88.0.77"), &conf)
        .await);
    f.handler.datapath.hold_link_removals();
    ok(&f
        .handler
        .handle(&asking(Command::Del, "old", "10.88.0.77"), &conf)
        .await);

    // The new pod asks for the address at once: it waits, with nothing set up meanwhile.
    let handler = f.handler.clone();
    let new = tokio::spawn(async move {
        handler
            .handle(&asking(Command::Add, "new", "10.88.0.77"), &config("1.1.0"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!new.is_finished(), "the ADD must wait for the old veth");
    assert!(!f
        .handler
        .datapath
        .calls()
        .contains(&Call::Setup(veth("new"))));

    f.handler.datapath.finish_link_removals();
    let answer = tokio::time::timeout(LIMIT, new).await.unwrap().unwrap();
    assert_eq!(ip_of(&answer), "10.88.0.77/32");
    // The old veth was deleted before the new pod's was built.
    assert!(position(&f, &Call::RemoveLink(veth("old"))) < position(&f, &Call::Setup(veth("new"))));
    assert_eq!(
        f.handler.datapath.veths().into_iter().collect::<Vec<_>>(),
        vec![(veth("new"), "10.88.0.77".parse::<IpAddr>().unwrap())]
    );
}

#[tokio::test]
async fn a_full_pool_waits_for_a_draining_address_rather_than_failing() {
    let f = fixture("10.88.0.0/30");
    let mut held = Vec::new();
    for n in 0.. {
        let id = format!("p{n}");
        match f.run(Command::Add, &id, "1.1.0").await {
            DaemonResponse::Success { stdout } => held.push((id, stdout)),
            DaemonResponse::Failure { error, .. } => {
                assert_eq!(error.code, codes::POOL_EXHAUSTED, "{error:?}");
                break;
            }
        }
    }
    let (first, stdout) = held.first().cloned().expect("the pool holds at least one");
    f.handler.datapath.hold_link_removals();
    ok(&f.run(Command::Del, &first, "1.1.0").await);

    let handler = f.handler.clone();
    let next = tokio::spawn(async move {
        handler
            .handle(&request(Command::Add, "next"), &config("1.1.0"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !next.is_finished(),
        "the ADD must wait for the draining address"
    );
    f.handler.datapath.finish_link_removals();
    let answer = tokio::time::timeout(LIMIT, next).await.unwrap().unwrap();
    let freed = ip_of(&DaemonResponse::Success { stdout });
    assert_eq!(ip_of(&answer), freed, "the only address that came free");
    assert!(
        position(&f, &Call::RemoveLink(veth(&first))) < position(&f, &Call::Setup(veth("next")))
    );
}

#[tokio::test]
async fn a_full_pool_whose_veth_is_never_deleted_fails_after_the_drain_wait_naming_it() {
    let f = fixture("10.88.0.0/30");
    let mut held = Vec::new();
    for n in 0.. {
        let id = format!("p{n}");
        if !matches!(
            f.run(Command::Add, &id, "1.1.0").await,
            DaemonResponse::Success { .. }
        ) {
            break;
        }
        held.push(id);
    }
    f.handler.datapath.hold_link_removals();
    ok(&f.run(Command::Del, &held[0], "1.1.0").await);
    let started = Instant::now();
    let error = match f.run(Command::Add, "next", "1.1.0").await {
        DaemonResponse::Failure { error, .. } => error,
        DaemonResponse::Success { stdout } => panic!("got an address: {stdout}"),
    };
    assert!(started.elapsed() >= draining::DRAIN_WAIT);
    assert_eq!(error.code, codes::POOL_EXHAUSTED);
    assert!(error.msg.contains("draining (1"), "{error:?}");
    let details = error.details.unwrap_or_default();
    assert!(details.contains("had not finished deleting"), "{details}");
    // Nothing half-done: no record, no new veth.
    assert!(!f.handler.datapath.veths().contains_key(&veth("next")));
    assert!(f
        .handler
        .store()
        .get(&AttachmentKey::new("next", "eth0"))
        .is_none());
}

#[tokio::test]
async fn a_veth_the_kernel_refuses_to_delete_keeps_its_address_out_of_use_until_it_is_gone() {
    let f = fixture("10.88.0.0/24");
    let ip: IpAddr = ip_of(&f.run(Command::Add, "a", "1.1.0").await)
        .trim_end_matches("/32")
        .parse()
        .unwrap();
    f.handler.datapath.fail_link_removals(2);
    ok(&f.run(Command::Del, "a", "1.1.0").await);
    // Refused at once (EBUSY), a retry due in 100 ms: still draining, still taken.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(f.handler.is_taken(ip));
    // What `inspect pool` shows an operator.
    let detail = f.handler.draining_detail();
    assert_eq!(detail.len(), 1, "{detail:?}");
    assert_eq!(detail[0]["veth"], veth("a"));
    assert_eq!(detail[0]["refused"], 1);
    // Retried after 100 and 200 ms.
    assert!(f.handler.drained(Some(ip), LIMIT).await);
    let attempts = f
        .handler
        .datapath
        .calls()
        .iter()
        .filter(|c| **c == Call::RemoveLink(veth("a")))
        .count();
    assert_eq!(attempts, 3);
    assert!(!f.handler.datapath.veths().contains_key(&veth("a")));
    assert!(!f.handler.is_taken(ip));
}

#[tokio::test]
async fn a_new_sandbox_of_the_same_veth_name_replaces_a_draining_veth_and_survives_its_drain() {
    // Same container and interface (a runtime's ADD after DEL): the same veth name. The ADD
    // deletes the old veth itself; the drain, by interface index, must not touch the new one.
    let f = fixture("10.88.0.0/24");
    ok(&f.run(Command::Add, "a", "1.1.0").await);
    f.handler.datapath.hold_link_removals();
    ok(&f.run(Command::Del, "a", "1.1.0").await);
    ok(&f.run(Command::Add, "a", "1.1.0").await);
    assert!(
        !f.handler.datapath.is_down(&veth("a")),
        "the new veth is up"
    );
    f.handler.datapath.finish_link_removals();
    assert!(f.handler.drained(None, LIMIT).await);
    assert!(f.handler.datapath.veths().contains_key(&veth("a")));
    assert!(f
        .handler
        .store()
        .get(&AttachmentKey::new("a", "eth0"))
        .is_some());
}

#[tokio::test]
async fn a_del_retried_while_its_veth_drains_answers_and_starts_nothing_twice() {
    let f = fixture("10.88.0.0/24");
    let ip: IpAddr = ip_of(&f.run(Command::Add, "a", "1.1.0").await)
        .trim_end_matches("/32")
        .parse()
        .unwrap();
    f.handler.datapath.hold_link_removals();
    ok(&f.run(Command::Del, "a", "1.1.0").await);
    // The runtime did not see the answer and asks again (kubelet does, up to three times).
    ok(&f.run(Command::Del, "a", "1.1.0").await);
    ok(&f.run(Command::Del, "a", "1.1.0").await);
    assert!(f.handler.is_taken(ip));
    assert_eq!(f.handler.draining_detail().len(), 1);
    f.handler.datapath.finish_link_removals();
    assert!(f.handler.drained(Some(ip), LIMIT).await);
    let removals = f
        .handler
        .datapath
        .calls()
        .iter()
        .filter(|c| **c == Call::RemoveLink(veth("a")))
        .count();
    assert_eq!(removals, 1, "one deletion for one veth");
    assert!(!f.handler.is_taken(ip));
}

#[tokio::test]
async fn a_burst_of_dels_has_its_veths_deleted_together_once_the_netlink_work_has_ended() {
    let f = fixture("10.88.0.0/24");
    let names = ["b1", "b2", "b3", "b4", "b5"];
    let mut ips = Vec::new();
    for name in names {
        let ip: IpAddr = ip_of(&f.run(Command::Add, name, "1.1.0").await)
            .trim_end_matches("/32")
            .parse()
            .unwrap();
        ips.push(ip);
    }
    // Another pod's netlink work in flight (an ADD's setup, as it were) while the burst runs.
    let busy = f.handler.reaper.busy();
    for name in names {
        ok(&f.run(Command::Del, name, "1.1.0").await);
    }
    // Answered, cut off and draining; no deletion started under the other pod's work.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(ips.iter().all(|ip| f.handler.is_draining(*ip)));
    assert!(names.iter().all(|n| f.handler.datapath.is_down(&veth(n))));
    let batches = |f: &super::tests::Fixture| -> Vec<Vec<String>> {
        f.handler
            .datapath
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::RemoveLinks(names) => Some(names),
                _ => None,
            })
            .collect()
    };
    assert_eq!(batches(&f), Vec::<Vec<String>>::new());

    // The work ends: the five go in one batch.
    drop(busy);
    assert!(f.handler.drained(None, LIMIT).await);
    let mut expected: Vec<String> = names.iter().map(|n| veth(n)).collect();
    expected.sort();
    let mut batch = batches(&f).concat();
    batch.sort();
    assert_eq!(batches(&f).len(), 1, "{:?}", batches(&f));
    assert_eq!(batch, expected);
    assert!(names
        .iter()
        .all(|n| !f.handler.datapath.veths().contains_key(&veth(n))));
}

#[tokio::test]
async fn netlink_work_that_never_ends_defers_a_deletion_only_so_long() {
    let f = fixture("10.88.0.0/24");
    let ip: IpAddr = ip_of(&f.run(Command::Add, "a", "1.1.0").await)
        .trim_end_matches("/32")
        .parse()
        .unwrap();
    let _busy = f.handler.reaper.busy();
    let started = Instant::now();
    ok(&f.run(Command::Del, "a", "1.1.0").await);
    assert!(f.handler.drained(Some(ip), LIMIT).await);
    let waited = started.elapsed();
    // Deferred as long as it may be, no longer (the drain began after `started`).
    assert!(
        waited >= draining::DEFER_MAX,
        "deleted after {waited:?}, while other work was in flight"
    );
    assert!(!f.handler.datapath.veths().contains_key(&veth("a")));
}

#[tokio::test]
async fn a_deletion_the_kernel_never_finishes_holds_up_its_own_address_only() {
    let f = fixture("10.88.0.0/24");
    let mut ips = Vec::new();
    for name in ["stuck", "next"] {
        let ip: IpAddr = ip_of(&f.run(Command::Add, name, "1.1.0").await)
            .trim_end_matches("/32")
            .parse()
            .unwrap();
        ips.push(ip);
    }
    f.handler.datapath.hang_link_removal(&veth("stuck"));
    ok(&f.run(Command::Del, "stuck", "1.1.0").await);
    // Its deletion is under way and hangs.
    assert!(
        !f.handler
            .drained(Some(ips[0]), Duration::from_millis(300))
            .await
    );
    ok(&f.run(Command::Del, "next", "1.1.0").await);
    assert!(
        f.handler.drained(Some(ips[1]), LIMIT).await,
        "a later DEL's veth is deleted while an earlier deletion hangs"
    );
    assert!(
        f.handler.is_draining(ips[0]),
        "still held while its veth may exist"
    );
    f.handler.datapath.release_link_removal(&veth("stuck"));
    assert!(f.handler.drained(Some(ips[0]), LIMIT).await);
}
