//! Several attachments of one pod (podman's `--network a,b`, a Multus `net1`): each gets its
//! own address, veth and routes, the default route stays with the interface that had it, and
//! every verb treats each attachment on its own.

use super::tests::{config, fixture, request, stdout};
use super::*;
use serde_json::{json, Value};

fn on(ifname: &str, command: Command, container_id: &str) -> CniRequest {
    CniRequest {
        ifname: ifname.into(),
        ..request(command, container_id)
    }
}

fn conf_with(keys: Value) -> String {
    let mut conf: Value = serde_json::from_str(&config("1.1.0")).unwrap();
    conf.as_object_mut()
        .unwrap()
        .extend(keys.as_object().unwrap().clone());
    conf.to_string()
}

fn ok(response: &DaemonResponse) -> Value {
    match response {
        // DEL and CHECK answer nothing.
        DaemonResponse::Success { stdout } if stdout.is_empty() => Value::Null,
        DaemonResponse::Success { stdout } => serde_json::from_str(stdout).unwrap(),
        DaemonResponse::Failure { error, .. } => panic!("failed: {}", error.msg),
    }
}

#[tokio::test]
async fn a_second_interface_leaves_the_default_route_to_the_first_and_each_verb_treats_it_alone() {
    let f = fixture("10.88.0.0/24");
    let conf = config("1.1.0");
    let first = ok(&f
        .handler
        .handle(&on("eth0", Command::Add, "a"), &conf)
        .await);
    let second = ok(&f
        .handler
        .handle(&on("net1", Command::Add, "a"), &conf)
        .await);
    assert_eq!(first["routes"][0]["dst"], "0.0.0.0/0", "{first}");
    // Without `defaultRoute`, the pod already had one: the second interface routes nothing.
    assert!(second.get("routes").is_none(), "{second}");
    assert_ne!(first["ips"][0]["address"], second["ips"][0]["address"]);
    let (veth0, veth1) = (
        first["interfaces"][0]["name"].as_str().unwrap().to_owned(),
        second["interfaces"][0]["name"].as_str().unwrap().to_owned(),
    );
    assert_ne!(veth0, veth1);
    assert_eq!(second["interfaces"][1]["name"], "net1");
    let stored = |ifname: &str| {
        f.handler
            .store()
            .get(&AttachmentKey::new("a", ifname))
            .unwrap()
            .pod_routes
            .clone()
    };
    assert!(stored("eth0").is_first_interface());
    assert_eq!(stored("net1").default_route, DefaultRoute::Skip);

    for ifname in ["eth0", "net1"] {
        let checked = f
            .handler
            .handle(&on(ifname, Command::Check, "a"), &conf)
            .await;
        assert!(
            matches!(checked, DaemonResponse::Success { .. }),
            "{ifname}: {}",
            stdout(&checked)
        );
    }
    // DEL of one leaves the other whole.
    ok(&f
        .handler
        .handle(&on("net1", Command::Del, "a"), &conf)
        .await);
    assert!(f.handler.drained(None, Duration::from_secs(5)).await);
    assert!(!f.handler.datapath.veths().contains_key(&veth1));
    assert!(f.handler.datapath.veths().contains_key(&veth0));
    let checked = f
        .handler
        .handle(&on("eth0", Command::Check, "a"), &conf)
        .await;
    assert!(
        matches!(checked, DaemonResponse::Success { .. }),
        "{}",
        stdout(&checked)
    );
    assert_eq!(f.handler.store().allocations().count(), 1);
    // With the first interface gone (its veth deleted, and the pod's default route with it),
    // a new second one may take the default route.
    ok(&f
        .handler
        .handle(&on("eth0", Command::Del, "a"), &conf)
        .await);
    assert!(f.handler.drained(None, Duration::from_secs(5)).await);
    let alone = ok(&f
        .handler
        .handle(&on("net1", Command::Add, "a"), &conf)
        .await);
    assert_eq!(alone["routes"][0]["dst"], "0.0.0.0/0", "{alone}");
}

#[tokio::test]
async fn a_default_route_asked_for_beside_another_fails_and_keeps_nothing() {
    let f = fixture("10.88.0.0/24");
    ok(&f
        .handler
        .handle(&on("eth0", Command::Add, "a"), &config("1.1.0"))
        .await);
    let conf = conf_with(json!({"defaultRoute": true}));
    let DaemonResponse::Failure { error, .. } = f
        .handler
        .handle(&on("net1", Command::Add, "a"), &conf)
        .await
    else {
        panic!("a second default route was accepted");
    };
    assert_eq!(error.code, codes::DATAPATH_FAILURE);
    assert!(error.msg.contains("File exists"), "{}", error.msg);
    assert_eq!(f.held(), ["a"]);
    assert_eq!(f.handler.datapath.veths().len(), 1);
}

#[tokio::test]
async fn listed_destinations_and_a_table_are_routed_and_reported() {
    let f = fixture("10.88.0.0/24");
    ok(&f
        .handler
        .handle(&on("eth0", Command::Add, "a"), &config("1.1.0"))
        .await);
    let conf = conf_with(json!({
        "defaultRoute": true,
        "routes": [{"dst": "10.20.0.0/16"}],
        "routeTable": 101,
    }));
    let result = ok(&f
        .handler
        .handle(&on("net1", Command::Add, "a"), &conf)
        .await);
    // A default route in the interface's own table does not compete with the pod's.
    assert_eq!(
        result["routes"],
        json!([
            {"dst": "0.0.0.0/0", "gw": "169.254.1.1", "table": 101},
            {"dst": "10.20.0.0/16", "gw": "169.254.1.1", "table": 101},
        ]),
        "{result}"
    );
    let veth = result["interfaces"][0]["name"].as_str().unwrap();
    let routes = f.handler.datapath.routes_of(veth).unwrap();
    assert_eq!(routes.table, Some(101));
    assert!(routes.has_default());
    // The host side keeps what undoes the pod's rule.
    let allocation = f
        .handler
        .store()
        .get(&AttachmentKey::new("a", "net1"))
        .cloned()
        .unwrap();
    assert_eq!(
        reserved_host(&allocation).pod_rule,
        Some(PodRule {
            netns: "/run/netns/a".into(),
            table: 101
        })
    );
    let skip = conf_with(json!({"defaultRoute": false, "routes": [{"dst": "10.30.0.0/16"}]}));
    let only_listed = ok(&f
        .handler
        .handle(&on("net2", Command::Add, "a"), &skip)
        .await);
    assert_eq!(
        only_listed["routes"],
        json!([{"dst": "10.30.0.0/16", "gw": "169.254.1.1"}]),
        "{only_listed}"
    );
}

#[tokio::test]
async fn bad_route_keys_are_refused_before_anything_is_reserved() {
    let f = fixture("10.88.0.0/24");
    for (keys, expected) in [
        (
            json!({"routes": [{"dst": "fd00::/64"}]}),
            "routes: fd00::/64 is an IPv6 destination, but this node gives pods IPv4 addresses",
        ),
        (
            json!({"routeTable": 255}),
            "routeTable: 255 is a table the kernel reserves",
        ),
    ] {
        let DaemonResponse::Failure { error, .. } = f
            .handler
            .handle(&on("net1", Command::Add, "a"), &conf_with(keys))
            .await
        else {
            panic!("{expected}: accepted");
        };
        assert_eq!(error.code, codes::INVALID_CONFIG);
        assert!(error.msg.starts_with(expected), "{}", error.msg);
    }
    assert!(f.held().is_empty());
    assert!(f
        .handler
        .datapath
        .calls()
        .iter()
        .all(|c| !matches!(c, wasmcni_datapath::fake::Call::Setup(_))));
}
