//! Writes the seed corpora of the fuzz targets into `<dir>/<target>/`: invocations as the
//! runtimes make them, the configurations the docs show, and state directories a real
//! datastore wrote (with a snapshot, a second interface's routes, a torn tail).
//!
//! `cargo run --example seed_corpus -- <dir>`; `scripts/fuzz.sh` does this before fuzzing.

#[path = "../fuzz_targets/common.rs"]
mod common;

use std::path::Path;

use serde_json::json;
use wasmcni_core::{DefaultRoute, PodRoutes};
use wasmcni_datastore::{
    Allocation, AllocationState, AttachmentKey, Datastore, PodRef, WalOptions,
};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

const PREV_RESULT: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"veth1","mac":"aa:bb:cc:dd:ee:01"},{"name":"eth0","mac":"0a:58:0a:00:00:05","sandbox":"/var/run/netns/cni-1"}],"ips":[{"interface":1,"address":"10.22.0.5/16","gateway":"10.22.0.1"},{"interface":1,"address":"fd00::5/64"}],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0","gw":"fd00::1"}],"dns":{"nameservers":["10.0.0.2"],"search":["svc.cluster.local"]}}"#;

fn invocations(dir: &Path) {
    let env = |command: &str, args: &str| {
        format!(
            "CNI_COMMAND={command}\nCNI_CONTAINERID=3f2a1b9c0d\nCNI_NETNS=/var/run/netns/cni-1\nCNI_IFNAME=eth0\nCNI_ARGS={args}\nCNI_PATH=/opt/cni/bin\n\n"
        )
    };
    let k8s = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=3f2a1b9c0d;K8S_POD_UID=8e1c";
    let seeds: Vec<(&str, String, String)> = vec![
        (
            "add-plain",
            env("ADD", k8s),
            json!({"cniVersion":"1.0.0","name":"aws-cni","type":"wasmcni"}).to_string(),
        ),
        (
            "add-capabilities",
            env("ADD", k8s),
            json!({"cniVersion":"1.1.0","name":"aws-cni","type":"wasmcni","daemonSocket":"/run/wasmcni/daemon.sock","logFile":"/var/log/wasmcni/cni.log",
                "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"0.0.0.0"}],
                "bandwidth":{"ingressRate":1000000,"ingressBurst":10000,"egressRate":1000000,"egressBurst":10000},
                "ips":["10.0.1.9/24","fd00::9"],"mac":"0a:58:0a:00:01:09",
                "io.kubernetes.cri.pod-annotations":{"team":"payments"}}}).to_string(),
        ),
        (
            "add-podman-ip-mac",
            env("ADD", "IgnoreUnknown=1;IP=10.98.0.200,fd00::c8;MAC=0a:58:0a:62:00:c8"),
            json!({"cniVersion":"1.0.0","name":"podnet","type":"wasmcni","args":{"cni":{"ips":["10.98.0.201"]}}}).to_string(),
        ),
        (
            "add-second-interface",
            env("ADD", k8s).replace("CNI_IFNAME=eth0", "CNI_IFNAME=net1"),
            json!({"cniVersion":"1.0.0","name":"second","type":"wasmcni","defaultRoute":false,
                "routes":[{"dst":"10.20.0.0/16"},{"dst":"fd00:20::/64"}],"routeTable":101}).to_string(),
        ),
        (
            "add-chained-prev-result",
            env("ADD", k8s),
            format!(r#"{{"cniVersion":"1.0.0","name":"chain","type":"wasmcni","mode":"chained","prevResult":{PREV_RESULT}}}"#),
        ),
        (
            "check-0.4.0",
            env("CHECK", k8s),
            format!(r#"{{"cniVersion":"0.4.0","name":"aws-cni","type":"wasmcni","prevResult":{}}}"#,
                PREV_RESULT.replace(r#""cniVersion":"1.0.0""#, r#""cniVersion":"0.4.0""#).replace(r#""interface":1,"#, r#""version":"4","interface":1,"#)),
        ),
        (
            "del",
            env("DEL", ""),
            json!({"cniVersion":"0.3.1","name":"aws-cni","type":"wasmcni"}).to_string(),
        ),
        (
            "gc",
            "CNI_COMMAND=GC\nCNI_PATH=/opt/cni/bin\n\n".to_owned(),
            json!({"cniVersion":"1.1.0","name":"aws-cni","type":"wasmcni",
                "cni.dev/valid-attachments":[{"containerID":"3f2a1b9c0d","ifname":"eth0"}],
                "cni.dev/attachments":[{"containerID":"77aa","ifname":"net1"}]}).to_string(),
        ),
        (
            "status",
            "CNI_COMMAND=STATUS\n\n".to_owned(),
            json!({"cniVersion":"1.1.0","name":"aws-cni","type":"wasmcni"}).to_string(),
        ),
        (
            "version",
            "CNI_COMMAND=VERSION\nCNI_CONTAINERID=dummy\n\n".to_owned(),
            json!({"cniVersion":"0.4.0"}).to_string(),
        ),
    ];
    for (name, env, stdin) in &seeds {
        let input = format!("{env}{stdin}");
        write(dir, "cni_invocation", name, input.as_bytes());
        // The same request as the shim forwards it to the daemon.
        let (vars, stdin) = common::invocation(input.as_bytes());
        if let Ok(request) = wasmcni_cni::CniRequest::from_env(|k| vars.get(k).cloned()) {
            let message = wasmcni_cni::proto::DaemonRequest {
                protocol: wasmcni_cni::proto::PROTOCOL_VERSION,
                request,
                config: String::from_utf8_lossy(stdin).into_owned(),
            };
            let frame = wasmcni_cni::proto::encode_frame(&message).expect("encode");
            write(dir, "daemon_frame", name, &frame);
        }
    }
    let responses = [
        wasmcni_cni::proto::DaemonResponse::Success {
            stdout: PREV_RESULT.to_owned(),
        },
        wasmcni_cni::proto::DaemonResponse::Failure {
            stdout: "{}".to_owned(),
            error: wasmcni_cni::CniError::try_again_later("the pool is growing"),
        },
    ];
    for (i, response) in responses.iter().enumerate() {
        let frame = wasmcni_cni::proto::encode_frame(response).expect("encode");
        write(dir, "daemon_frame", &format!("response-{i}"), &frame);
    }
}

fn configurations(dir: &Path) {
    write(
        dir,
        "cluster_config",
        "default",
        wasmcni_config::DEFAULT_CONFIG.as_bytes(),
    );
    let docs = [
        include_str!("../../../docs/configuration.md"),
        include_str!("../../../docs/writing-an-allocation-strategy.md"),
        include_str!("../../../docs/security.md"),
    ];
    let fence = concat!("`", "``toml");
    for (d, doc) in docs.iter().enumerate() {
        for (i, block) in doc.split(fence).skip(1).enumerate() {
            let Some((toml, _)) = block.split_once("```") else {
                continue;
            };
            write(
                dir,
                "cluster_config",
                &format!("docs-{d}-{i}"),
                toml.as_bytes(),
            );
        }
    }
}

fn allocation(container: &str, ifname: &str, ip: &str) -> Allocation {
    Allocation {
        key: AttachmentKey::new(container, ifname),
        network: "aws-cni".to_owned(),
        ip: ip.parse().expect("an address"),
        host_veth: format!("eni{container}"),
        netns: format!("/var/run/netns/{container}"),
        pod: Some(PodRef {
            namespace: "default".to_owned(),
            name: format!("pod-{container}"),
        }),
        route_table: Some(2),
        state: AllocationState::Reserved,
        result: None,
        pod_routes: PodRoutes::default(),
        created_unix_ms: 1_700_000_000_000,
        egress_v4: None,
        ipv6: None,
    }
}

/// Runs a few ADDs and DELs on a real store and returns its snapshot (if it wrote one) and log.
fn real_store(compact_after_records: usize) -> (Option<Vec<u8>>, Vec<u8>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = WalOptions {
        compact_after_records,
    };
    let (mut store, _) = Datastore::open(tmp.path(), options).expect("open");
    let second = PodRoutes {
        default_route: DefaultRoute::Skip,
        destinations: vec!["10.20.0.0/16".parse().expect("a network")],
        table: Some(101),
        default_route_v6: None,
    };
    for (i, (container, ifname, ip)) in [
        ("a1", "eth0", "10.0.1.5"),
        ("a1", "net1", "10.0.2.5"),
        ("b2", "eth0", "fd00::5"),
        ("c3", "eth0", "10.0.1.6"),
    ]
    .into_iter()
    .enumerate()
    {
        let key = AttachmentKey::new(container, ifname);
        store
            .reserve(allocation(container, ifname, ip))
            .expect("reserve");
        if i != 3 {
            let routes = if ifname == "net1" {
                &second
            } else {
                &PodRoutes::default()
            };
            let result = json!({"cniVersion":"1.1.0","ips":[{"address":format!("{ip}/32")}]});
            store.commit(&key, result, routes).expect("commit");
        }
    }
    store
        .release(&AttachmentKey::new("b2", "eth0"))
        .expect("release");
    drop(store);
    let mut snapshot = None;
    let mut log = Vec::new();
    for entry in std::fs::read_dir(tmp.path()).expect("read") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let bytes = std::fs::read(&path).expect("read a file");
        if name == "snapshot.jsonl" {
            snapshot = Some(bytes);
        } else if name.starts_with("wal-") {
            log = bytes;
        }
    }
    (snapshot, log)
}

fn stores(dir: &Path) {
    let (_, log) = real_store(4096);
    let (snapshot, tail) = real_store(3);
    let snapshot = snapshot.expect("a store compacted after 3 records has a snapshot");
    let target = "datastore_recovery";
    write(
        dir,
        target,
        "log",
        &common::StoreImage::encode(None, false, &log),
    );
    write(
        dir,
        target,
        "log-checksummed",
        &common::StoreImage::encode(None, true, &log),
    );
    let torn = &log[..log.len() - 7];
    write(
        dir,
        target,
        "log-torn",
        &common::StoreImage::encode(None, false, torn),
    );
    write(
        dir,
        target,
        "snapshot-and-log",
        &common::StoreImage::encode(Some(&snapshot), false, &tail),
    );
    write(
        dir,
        target,
        "snapshot-and-log-checksummed",
        &common::StoreImage::encode(Some(&snapshot), true, &tail),
    );
    write(
        dir,
        target,
        "snapshot-only",
        &common::StoreImage::encode(Some(&snapshot), false, b""),
    );
}

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: seed_corpus <corpus directory>");
        std::process::exit(2);
    };
    let dir = Path::new(&dir);
    invocations(dir);
    configurations(dir);
    stores(dir);
}
