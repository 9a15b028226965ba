//! Requested addresses (the `ips` capability, `args.cni.ips`, `CNI_ARGS` `IP=`): granted
//! exactly, or refused naming why, with nothing reserved; never another address.

use super::tests::{
    config, fixture, fixture_set, fixture_with, growing_fixture, ip_of, policy_spec, request,
    request_in, stdout, GrowingProvider,
};
use super::*;

fn asking(command: Command, container_id: &str, ip: &str) -> CniRequest {
    let mut request = request(command, container_id);
    request.args.push(("IP".into(), ip.into()));
    request
}

fn with_ips(ips: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.1.0","name":"pods","type":"wasmcni","runtimeConfig":{{"ips":{ips}}}}}"#
    )
}

fn refused(response: &DaemonResponse) -> CniError {
    match response {
        DaemonResponse::Failure { error, .. } => error.clone(),
        DaemonResponse::Success { stdout } => panic!("accepted: {stdout}"),
    }
}

#[tokio::test]
async fn a_requested_address_is_granted_exactly_without_asking_the_allocator() {
    // The allocator traps on every call: an ADD that succeeds never asked it.
    let f = fixture_with("10.88.0.0/24", Some("panics"));
    let conf = config("1.1.0");
    let by_args = f
        .handler
        .handle(&asking(Command::Add, "a", "10.88.0.200"), &conf)
        .await;
    assert_eq!(ip_of(&by_args), "10.88.0.200/32");
    let by_capability = f
        .handler
        .handle(
            &request(Command::Add, "b"),
            &with_ips(r#"["10.88.0.201/24"]"#),
        )
        .await;
    assert_eq!(ip_of(&by_capability), "10.88.0.201/32");
    let audit = std::fs::read_to_string(f.handler.audit_log.path()).unwrap_or_default();
    assert!(!audit.contains("\"call\":\"allocate\""), "{audit}");
    // Each verb treats it like any other attachment; after DEL it can be asked for again.
    let checked = f
        .handler
        .handle(&asking(Command::Check, "a", "10.88.0.200"), &{
            let mut conf: serde_json::Value = serde_json::from_str(&conf).unwrap();
            conf["prevResult"] = serde_json::from_str(stdout(&by_args)).unwrap();
            conf.to_string()
        })
        .await;
    assert!(
        matches!(checked, DaemonResponse::Success { .. }),
        "{}",
        stdout(&checked)
    );
    f.handler.handle(&request(Command::Del, "a"), &conf).await;
    let again = f
        .handler
        .handle(&asking(Command::Add, "c", "10.88.0.200"), &conf)
        .await;
    assert_eq!(ip_of(&again), "10.88.0.200/32");
}

#[tokio::test]
async fn a_taken_or_unservable_address_is_refused_with_its_reason_and_nothing_reserved() {
    let f = fixture("10.88.0.0/24");
    let conf = config("1.1.0");
    assert_eq!(
        ip_of(
            &f.handler
                .handle(&asking(Command::Add, "a", "10.88.0.200"), &conf)
                .await
        ),
        "10.88.0.200/32"
    );
    for (ip, code, expected) in [
        (
            "10.88.0.200",
            codes::REQUESTED_ADDRESS_UNAVAILABLE,
            "CNI_ARGS IP asks for 10.88.0.200, which is held by attachment a/eth0 (pod default/pod-a)",
        ),
        (
            "10.99.0.1",
            codes::REQUESTED_ADDRESS_UNAVAILABLE,
            "CNI_ARGS IP asks for 10.99.0.1, which is outside the pool (10.88.0.0/24): add its range to provider.static.cidrs",
        ),
        (
            "10.88.0.255",
            codes::REQUESTED_ADDRESS_UNAVAILABLE,
            "CNI_ARGS IP asks for 10.88.0.255, which is the network or broadcast address of 10.88.0.0/24",
        ),
        (
            "fd00::5",
            codes::UNSUPPORTED_FIELD,
            "unsupported field 'CNI_ARGS IP' with value 'fd00::5'",
        ),
        (
            "10.88.0.300",
            codes::INVALID_CONFIG,
            "CNI_ARGS IP (entry 1): \"10.88.0.300\" is not an IP address",
        ),
    ] {
        let error = refused(
            &f.handler
                .handle(&asking(Command::Add, "b", ip), &conf)
                .await,
        );
        assert_eq!(error.code, code, "{ip}: {}", error.msg);
        assert!(error.msg.starts_with(expected), "{ip}: {}", error.msg);
    }
    assert_eq!(f.held(), ["a"], "nothing reserved for a refused request");
    assert_eq!(f.handler.datapath.veths().len(), 1, "nothing built for one");
    // A request for both families on an IPv4 node is refused, not half served.
    let error = refused(
        &f.handler
            .handle(
                &request(Command::Add, "b"),
                &with_ips(r#"["10.88.0.9/24","fd00::9/64"]"#),
            )
            .await,
    );
    assert_eq!(error.code, codes::UNSUPPORTED_FIELD, "{}", error.msg);
    assert!(error.details.unwrap().contains("IPv4 addresses only"));
    assert_eq!(f.held(), ["a"]);
}

#[tokio::test]
async fn a_requested_address_that_is_cooling_down_is_refused_until_it_has_rested() {
    let provider = GrowingProvider::new(&["10.0.0.5", "10.0.0.6"], Duration::from_secs(60));
    let f = growing_fixture(&provider);
    let conf = config("1.1.0");
    assert_eq!(
        ip_of(
            &f.handler
                .handle(&asking(Command::Add, "a", "10.0.0.6"), &conf)
                .await
        ),
        "10.0.0.6/32"
    );
    assert!(
        f.handler
            .store()
            .get(&AttachmentKey::new("a", "eth0"))
            .unwrap()
            .route_table
            == Some(2)
    );
    f.handler.handle(&request(Command::Del, "a"), &conf).await;
    let error = refused(
        &f.handler
            .handle(&asking(Command::Add, "b", "10.0.0.6"), &conf)
            .await,
    );
    assert_eq!(error.code, codes::TRY_AGAIN_LATER, "{}", error.msg);
    assert!(
        error.msg.contains("was released recently and rests for"),
        "{}",
        error.msg
    );
    assert!(f.held().is_empty());
}

#[tokio::test]
async fn policies_judge_the_requested_address_and_a_denial_frees_it() {
    let guard = policy_spec("namespace-guard", &[("allow_namespaces", "default")]);
    let f = fixture_set("10.88.0.0/24", None, vec![guard]);
    let conf = config("1.1.0");
    let mut denied = request_in(Command::Add, "a", "kube-public");
    denied.args.push(("IP".into(), "10.88.0.77".into()));
    let error = refused(&f.handler.handle(&denied, &conf).await);
    assert_eq!(error.code, codes::POLICY_DENIED, "{}", error.msg);
    let audit = std::fs::read_to_string(f.handler.audit_log.path()).unwrap();
    let seen: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["call"] == "evaluate")
        .collect();
    assert_eq!(seen.len(), 1, "{audit}");
    assert_eq!(seen[0]["args"]["addresses"][0], "10.88.0.77/32", "{audit}");
    // Denied, the address is free for the next pod that asks.
    assert!(f.held().is_empty());
    let granted = f
        .handler
        .handle(&asking(Command::Add, "b", "10.88.0.77"), &conf)
        .await;
    assert_eq!(ip_of(&granted), "10.88.0.77/32");
}
