//! IPv4 egress for IPv6 pods (`datapath.ipv4_egress`, on by default): which attachments get a
//! node-local IPv4 address, and that one is never held twice.

use std::net::Ipv4Addr;

use super::tests::{
    config, fixture_provider, policy_spec, request, request_in, stdout, Ipv6PrefixProvider,
};
use super::*;

fn egress_of(
    handler: &Handler<wasmcni_datapath::fake::FakeDatapath>,
    cid: &str,
    ifname: &str,
) -> Option<Ipv4Addr> {
    handler
        .store()
        .get(&AttachmentKey::new(cid, ifname))
        .unwrap_or_else(|| panic!("{cid}/{ifname} holds nothing"))
        .egress_v4
}

#[tokio::test]
async fn ipv6_pods_first_interfaces_get_distinct_egress_addresses_that_others_never_hold() {
    let guard = policy_spec("namespace-guard", &[("allow_namespaces", "default")]);
    let f = fixture_provider(
        "10.88.0.0/24",
        None,
        vec![guard],
        Some(Arc::new(Ipv6PrefixProvider) as Arc<dyn wasmcni_core::ipam::Provider>),
    );
    let handler = &f.handler;
    let ok = |response: &DaemonResponse| {
        assert!(
            matches!(response, DaemonResponse::Success { .. }),
            "{response:?}"
        );
    };
    ok(&f.run(Command::Add, "a", "1.1.0").await);
    ok(&f.run(Command::Add, "b", "1.1.0").await);
    assert_eq!(
        egress_of(handler, "a", "eth0"),
        Some(Ipv4Addr::new(169, 254, 172, 1))
    );
    assert_eq!(
        egress_of(handler, "b", "eth0"),
        Some(Ipv4Addr::new(169, 254, 172, 2))
    );
    // Only the address of the pod is in the result.
    let result: serde_json::Value =
        serde_json::from_str(stdout(&f.run(Command::Add, "c", "1.1.0").await)).unwrap();
    assert_eq!(result["ips"].as_array().map(Vec::len), Some(1), "{result}");
    assert_eq!(
        egress_of(handler, "c", "eth0"),
        Some(Ipv4Addr::new(169, 254, 172, 3))
    );

    // A denied ADD gives its egress address back with its reservation.
    let denied = handler
        .handle(
            &request_in(Command::Add, "d", "kube-public"),
            &config("1.1.0"),
        )
        .await;
    assert!(
        matches!(denied, DaemonResponse::Failure { .. }),
        "{denied:?}"
    );
    let holding: Vec<Ipv4Addr> = handler
        .store()
        .allocations()
        .filter_map(|a| a.egress_v4)
        .collect();
    assert_eq!(holding.len(), 3, "{holding:?}");
    assert!(handler
        .store()
        .holder_of(Ipv4Addr::new(169, 254, 172, 4))
        .is_none());

    // Another CNI's pod routing the next address (a VPC CNI pod during a migration uses the
    // same range) keeps it from being handed out.
    handler
        .datapath
        .add_foreign_pod_route(Ipv4Addr::new(169, 254, 172, 5));
    handler.refresh_node_held().await;
    ok(&f.run(Command::Add, "e", "1.1.0").await);
    assert_eq!(
        egress_of(handler, "e", "eth0"),
        Some(Ipv4Addr::new(169, 254, 172, 6))
    );

    // A second interface of a pod routes no IPv4: only the first brings the default route.
    let mut second = request(Command::Add, "a");
    second.ifname = "net1".into();
    ok(&handler.handle(&second, &config("1.1.0")).await);
    assert_eq!(egress_of(handler, "a", "net1"), None);
    // DEL frees the pod's egress address with its /128.
    ok(&f.run(Command::Del, "a", "1.1.0").await);
    assert!(handler
        .store()
        .holder_of(Ipv4Addr::new(169, 254, 172, 1))
        .is_none());
}

#[tokio::test]
async fn a_static_ipv6_node_takes_its_ipv6_uplinks_mtu_keeps_its_ras_and_translates_egress() {
    use wasmcni_datapath::fake::{Call, FakeDatapath};
    let dir = tempfile::tempdir().unwrap();
    let text = wasmcni_config::DEFAULT_CONFIG
        .replace(
            "/var/lib/wasmcni",
            &dir.path().join("state").display().to_string(),
        )
        .replace("10.88.0.0/24", "fd00:88::/120");
    let config = ClusterConfig::parse(&text, "test").unwrap();
    let datapath = FakeDatapath::new();
    // The IPv4 default route leaves by a jumbo link, the IPv6 one by a smaller one.
    datapath.set_uplink_mtu(9001);
    datapath.set_uplink_v6("ens6", 1400);
    let (handler, _) =
        crate::server::start(config, datapath, None, wasmcni_runtime::Compiler::InProcess)
            .await
            .unwrap();
    assert_eq!(handler.pod_mtu, 1400, "IPv6 pods leave by the IPv6 uplink");
    let calls = handler.datapath.calls();
    assert!(
        calls.contains(&Call::PrepareIpv6(Some("ens6".into()))),
        "{calls:?}"
    );
    assert!(
        calls.contains(&Call::EgressSnat(Some(
            wasmcni_datapath::snat::EgressRules {
                range: "169.254.172.0/22".parse().unwrap(),
                randomize: wasmcni_datapath::snat::Randomize::Fully,
            }
        ))),
        "{calls:?}"
    );
}
