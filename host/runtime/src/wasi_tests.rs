//! Plugins written in Python and JavaScript (`plugins/ns-subnets-py`, `plugins/ns-subnets-js`,
//! built by `wasmcni-plugin-build` with componentize-py and componentize-js) through the real
//! runtime: the same behaviour from both as from their Rust twin (`plugins/ns-subnets`), and a hostile Python plugin (`tests/plugins/
//! py-hostile`) held by the `wasi` grant's defaults: no files, environment or network,
//! deterministic clocks and randomness, sleeps that never outlast a deadline.
//!
//! Compiling a component that bundles an interpreter takes 15–20 s; the tests share an
//! artifact cache under the target directory, so each is compiled once per build.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::testing::{pod, spec, with_settings};
use super::*;
use wasmcni_core::ipam::{AddressBlock, BlockKind, Inventory};
use wasmcni_core::pool_view::ProviderKind;
use wasmcni_core::{EniInfo, NodeInfo, NodeLimits, SubnetInfo};

/// The namespace-subnets allocator in each language: Rust, Python, JavaScript.
const NS_SUBNETS: [&str; 3] = ["ns-subnets", "ns-subnets-py", "ns-subnets-js"];

const NS_SUBNETS_GRANTS: &[Capability] =
    &[Capability::PoolView, Capability::EniOps, Capability::Log];

/// A runtime whose compiled components persist under the target directory (keyed by digest
/// and engine), loading one plugin at a time so a component is compiled once, not by every
/// test at once.
fn load(spec: &PluginSpec) -> Result<Plugin, PluginError> {
    let _one_at_a_time = LOADING.lock().unwrap_or_else(|p| p.into_inner());
    cached_runtime().load(spec)
}

/// Held while a component may be compiled into the shared cache.
static LOADING: Mutex<()> = Mutex::new(());

/// A runtime whose compiled components persist under the target directory.
fn cached_runtime() -> PluginRuntime {
    let cache = testing::component("pack")
        .parent()
        .expect("target/plugins")
        .join("../test-artifact-cache");
    PluginRuntime::with_calls(4)
        .and_then(|runtime| runtime.with_cache(&cache))
        .expect("runtime")
}

/// Limits an interpreter needs (BENCHMARKS.md: its memory starts at 9–13 MiB), with deadlines
/// a loaded test machine cannot miss (a call takes 2 ms; the tests of deadlines set theirs).
fn interpreted(mut spec: PluginSpec) -> PluginSpec {
    spec.limits.memory_bytes = 48 << 20;
    spec.limits.fuel = 500_000_000;
    for export in [Export::Allocate, Export::Plan] {
        spec.limits.deadline_ms.insert(export, 5_000);
    }
    spec
}

/// The Python one also needs `wasi` (its interpreter imports it), granted with nothing in it.
fn ns_subnets(name: &str) -> PluginSpec {
    let mut spec = spec(name, PluginKind::Allocator, NS_SUBNETS_GRANTS);
    if name.ends_with("-py") {
        spec.grants.capabilities.insert(Capability::Wasi);
    }
    spec.grants.eni_ops.subnets = ["subnet-0aa", "subnet-0ab", "node"]
        .into_iter()
        .map(String::from)
        .collect();
    spec.grants.eni_ops.security_groups = ["node".to_owned()].into();
    interpreted(with_settings(
        spec,
        &[
            ("NAMESPACES", "team-a=subnet-0aa,subnet-0ab"),
            ("WARM_IPS", "2"),
        ],
    ))
}

fn eni(n: u32, subnet: &str) -> EniInfo {
    EniInfo {
        id: format!("eni-{n}"),
        device_number: n,
        primary: n == 0,
        subnet_id: subnet.into(),
        subnet_cidr: "10.0.0.0/16".parse().unwrap(),
        security_groups: vec!["sg-0node".into()],
        primary_ip: std::net::Ipv4Addr::from(0x0a00_0000 + 100 * n),
        age_ms: 600_000,
        tags: vec![],
        owned: true,
    }
}

/// An EC2 node: the primary ENI (shared) with `.1`–`.3` and team-a's ENI with `.101`–`.103`,
/// `in_use` held; 10 addresses per ENI, 4 ENIs at most.
fn node(in_use: &[&str]) -> PoolSnapshot {
    let block = |ip: &str, eni: &str| AddressBlock {
        cidr: format!("{ip}/32").parse().unwrap(),
        route_table: None,
        kind: BlockKind::SecondaryIp,
        eni_id: Some(eni.into()),
    };
    let subnet = |id: &str| SubnetInfo {
        id: id.into(),
        cidr: "10.0.0.0/16".parse().unwrap(),
        free_addresses: 200,
        tags: vec![],
    };
    PoolSnapshot {
        node: NodeInfo {
            provider: ProviderKind::Ec2,
            instance_id: "i-0000000a".into(),
            instance_type: "m5.large".into(),
            availability_zone: "us-west-2a".into(),
            vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
            limits: NodeLimits {
                max_enis: 4,
                ipv4_per_eni: 10,
                prefix_delegation: false,
                max_pods: 29,
            },
        },
        enis: vec![eni(0, "subnet-0node"), eni(1, "subnet-0aa")],
        subnets: vec![
            subnet("subnet-0node"),
            subnet("subnet-0aa"),
            subnet("subnet-0ab"),
        ],
        inventory: Inventory {
            blocks: ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
                .iter()
                .map(|ip| block(ip, "eni-0"))
                .chain(
                    ["10.0.0.101", "10.0.0.102", "10.0.0.103"]
                        .iter()
                        .map(|ip| block(ip, "eni-1")),
                )
                .collect(),
            ..Inventory::default()
        },
        in_use: in_use.iter().map(|ip| ip.parse().unwrap()).collect(),
        ..PoolSnapshot::default()
    }
}

fn pod_in(namespace: &str) -> PodInfo {
    PodInfo {
        namespace: Some(namespace.into()),
        ..pod()
    }
}

#[test]
fn rust_python_and_javascript_allocators_place_each_namespace_on_its_subnets() {
    for name in NS_SUBNETS {
        let plugin = load(&ns_subnets(name)).unwrap_or_else(|e| panic!("{e}"));
        let at = |namespace, in_use: &[&str]| {
            plugin
                .allocate(node(in_use), &pod_in(namespace))
                .map(|ip| ip.to_string())
                .map_err(|e| e.to_string())
        };
        assert_eq!(at("team-a", &[]).as_deref(), Ok("10.0.0.101"), "{name}");
        assert_eq!(at("web", &[]).as_deref(), Ok("10.0.0.1"), "{name}");
        assert_eq!(
            at("team-a", &["10.0.0.101"]).as_deref(),
            Ok("10.0.0.102"),
            "{name}"
        );
        // team-a's ENI full: refused, though the shared ENI has room.
        let full = at("team-a", &["10.0.0.101", "10.0.0.102", "10.0.0.103"]).unwrap_err();
        assert!(
            full.contains("no free address on namespace team-a's subnets (subnet-0aa, subnet-0ab)"),
            "{name}: {full}"
        );
        // The shared ENI full: refused, though team-a's has room.
        let shared = at("web", &["10.0.0.1", "10.0.0.2", "10.0.0.3"]).unwrap_err();
        assert!(
            shared.contains("the node's shared ENIs"),
            "{name}: {shared}"
        );
    }
}

#[test]
fn rust_python_and_javascript_allocators_plan_the_same_requests() {
    for name in NS_SUBNETS {
        let plugin = load(&ns_subnets(name)).unwrap_or_else(|e| panic!("{e}"));
        // team-a has one free address (wants 2), the shared ENI none: one more on eni-1, two
        // on eni-0.
        let requests = plugin
            .plan(node(&[
                "10.0.0.1",
                "10.0.0.2",
                "10.0.0.3",
                "10.0.0.101",
                "10.0.0.102",
            ]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            requests,
            vec![
                EniRequest::AssignIps {
                    eni_id: "eni-1".into(),
                    count: 1
                },
                EniRequest::AssignIps {
                    eni_id: "eni-0".into(),
                    count: 2
                },
            ],
            "{name}"
        );
        // team-a's ENI has no room left (9 secondary addresses, all held): a new ENI in the
        // team-a subnet with the most free addresses, the node's security groups.
        let mut crowded = node(&[]);
        for n in 4..=9 {
            crowded.inventory.blocks.push(AddressBlock {
                cidr: format!("10.0.0.{}/32", 100 + n).parse().unwrap(),
                route_table: None,
                kind: BlockKind::SecondaryIp,
                eni_id: Some("eni-1".into()),
            });
        }
        crowded.in_use = (101..=109)
            .map(|n| std::net::Ipv4Addr::new(10, 0, 0, n))
            .collect();
        crowded.subnets[1].free_addresses = 500;
        let requests = plugin.plan(crowded).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            requests,
            vec![EniRequest::CreateEni {
                subnet_id: "subnet-0aa".into(),
                security_groups: vec!["sg-0node".into()],
                secondary_ips: 2,
                prefixes: 0,
            }],
            "{name}"
        );
    }
}

#[test]
fn every_twin_refuses_bad_settings_at_load_naming_them() {
    for name in NS_SUBNETS {
        let bad = with_settings(
            ns_subnets(name),
            &[("NAMESPACES", "a=subnet-01;b=subnet-01")],
        );
        let refused = load(&bad).map(drop).unwrap_err().to_string();
        assert!(
            refused.contains("refused to start (init)")
                && refused.contains("subnet subnet-01 is given to both 'a' and 'b'"),
            "{name}: {refused}"
        );
    }
}

#[test]
fn each_imports_only_its_world_and_only_the_python_one_wasi() {
    let runtime = cached_runtime();
    for name in NS_SUBNETS {
        let report = {
            let _one_at_a_time = LOADING.lock().unwrap_or_else(|p| p.into_inner());
            runtime.inspect(&ns_subnets(name))
        };
        assert_eq!(report.problem, None, "{name}");
        assert!(
            report.under_granted.is_empty() && report.over_granted.is_empty(),
            "{name}: {report:?}"
        );
        let wasi: Vec<_> = report
            .imports
            .iter()
            .filter(|i| i.starts_with("wasi:"))
            .collect();
        match name {
            "ns-subnets-py" => assert!(wasi.len() > 20, "{wasi:?}"),
            _ => assert!(wasi.is_empty(), "{name}: {wasi:?}"),
        }
    }
}

/// The hostile Python plugin with `MODE` and the `wasi` grant of `scope`.
fn hostile(mode: &str, scope: wasmcni_core::grants::WasiScope) -> PluginSpec {
    let mut spec = interpreted(spec(
        "py-hostile",
        PluginKind::Allocator,
        &[Capability::PoolView, Capability::Wasi],
    ));
    spec.grants.wasi = scope;
    with_settings(spec, &[("MODE", mode)])
}

fn static_pool() -> PoolSnapshot {
    super::testing::snapshot(&["10.0.0.0/28"], &[])
}

#[test]
fn a_python_plugin_without_the_wasi_grant_is_refused_naming_the_imports() {
    let mut spec = hostile("probe", Default::default());
    spec.grants.capabilities.remove(&Capability::Wasi);
    let refused = load(&spec).map(drop).unwrap_err().to_string();
    assert!(
        refused.contains("wasi:cli/environment@0.2") && refused.contains("wasi:sockets/tcp@0.2"),
        "{refused}"
    );
}

#[test]
fn a_python_plugin_reaching_for_files_environment_network_or_entropy_gets_nothing() {
    let plugin = load(&hostile("probe", Default::default())).unwrap_or_else(|e| panic!("{e}"));
    let report = |plugin: &Plugin| -> serde_json::Value {
        match plugin.allocate(static_pool(), &pod()) {
            Err(PluginError::Refused { message, .. }) => {
                serde_json::from_str(&message).unwrap_or_else(|_| panic!("{message}"))
            }
            other => panic!("{other:?}"),
        }
    };
    let seen = report(&plugin);
    assert!(seen["file"]["error"].is_string(), "{seen}");
    assert!(seen["listdir"]["error"].is_string(), "{seen}");
    assert_eq!(seen["environ"], serde_json::json!({}), "{seen}");
    assert!(seen["socket"]["error"].is_string(), "{seen}");
    assert!(seen["udp"]["error"].is_string(), "{seen}");
    assert!(seen["resolve"]["error"].is_string(), "{seen}");
    // Deterministic: the clock starts at 1970 and every call draws the same "random" bytes.
    assert!(seen["time"].as_f64().unwrap() < 60.0, "{seen}");
    assert_eq!(report(&plugin)["urandom"], seen["urandom"]);
    assert_eq!(report(&plugin)["random"], seen["random"]);

    // With clocks and randomness granted, both are real.
    let open = wasmcni_core::grants::WasiScope {
        clocks: true,
        random: true,
        read_dirs: vec![],
    };
    let plugin = load(&hostile("probe", open)).unwrap_or_else(|e| panic!("{e}"));
    let first = report(&plugin);
    assert!(first["time"].as_f64().unwrap() > 1.7e9, "{first}");
    assert_ne!(report(&plugin)["urandom"], first["urandom"]);
    assert!(first["file"]["error"].is_string() && first["socket"]["error"].is_string());
}

#[test]
fn a_python_sleep_never_outlasts_the_call_deadline() {
    // Deterministic clocks: the hour passes at once.
    let plugin = load(&hostile("sleep", Default::default())).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    assert_eq!(
        plugin.allocate(static_pool(), &pod()).unwrap().to_string(),
        "10.0.0.1"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // Real clocks: the sleep wakes at the deadline, and the call ends there.
    let real = wasmcni_core::grants::WasiScope {
        clocks: true,
        ..Default::default()
    };
    let mut spec = hostile("sleep", real);
    spec.limits.deadline_ms.insert(Export::Allocate, 300);
    let plugin = load(&spec).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let error = plugin
        .allocate(static_pool(), &pod())
        .unwrap_err()
        .to_string();
    let took = started.elapsed();
    assert!(error.contains("ran past its deadline of 300 ms"), "{error}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn a_granted_directory_is_readable_and_nothing_else_nor_writable() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().canonicalize().unwrap();
    std::fs::write(dir.join("answer"), "42\n").unwrap();
    let granted = wasmcni_core::grants::WasiScope {
        read_dirs: vec![dir.clone()],
        ..Default::default()
    };
    let answer = |spec: PluginSpec| -> serde_json::Value {
        let plugin = load(&spec).unwrap_or_else(|e| panic!("{e}"));
        match plugin.allocate(static_pool(), &pod()) {
            Err(PluginError::Refused { message, .. }) => serde_json::from_str(&message).unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let path = dir.join("answer").display().to_string();
    let read = |scope| with_settings(hostile("read", scope), &[("MODE", "read"), ("PATH", &path)]);
    assert_eq!(
        answer(read(granted.clone())),
        serde_json::json!({"ok": "'42'"})
    );
    assert!(answer(read(Default::default()))["error"].is_string());
    let write = with_settings(
        hostile("write", granted),
        &[("MODE", "write"), ("DIR", &dir.display().to_string())],
    );
    assert!(answer(write)["error"].is_string());
    assert!(!dir.join("written").exists());
    // A directory that is not there refuses the load, naming it.
    let gone = wasmcni_core::grants::WasiScope {
        read_dirs: vec![PathBuf::from("/nonexistent/wasmcni-data")],
        ..Default::default()
    };
    let refused = load(&hostile("probe", gone))
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("/nonexistent/wasmcni-data"), "{refused}");
}

#[test]
fn a_python_failure_carries_its_traceback_and_every_bound_holds() {
    let plugin = load(&hostile("traceback", Default::default())).unwrap_or_else(|e| panic!("{e}"));
    let error = plugin
        .allocate(static_pool(), &pod())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("its output ended with") && error.contains("KeyError"),
        "{error}"
    );
    let mut spin = hostile("spin", Default::default());
    spin.limits.deadline_ms.insert(Export::Allocate, 200);
    let error = load(&spin)
        .unwrap_or_else(|e| panic!("{e}"))
        .allocate(static_pool(), &pod())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("deadline") || error.contains("fuel"),
        "{error}"
    );
    // A deadline long enough that the memory limit is what stops it, on a loaded machine too.
    let mut hog = hostile("hog", Default::default());
    hog.limits.deadline_ms.insert(Export::Allocate, 10_000);
    let error = load(&hog)
        .unwrap_or_else(|e| panic!("{e}"))
        .allocate(static_pool(), &pod())
        .unwrap_err()
        .to_string();
    assert!(error.contains("memory"), "{error}");
    // After all of that, the runtime still serves a plugin's calls.
    let plugin = load(&hostile("sleep", Default::default())).unwrap_or_else(|e| panic!("{e}"));
    assert!(plugin.allocate(static_pool(), &pod()).is_ok());
}

#[test]
fn nothing_leaves_or_changes_a_granted_directory() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    std::fs::write(base.join("answer"), "42\n").unwrap();
    std::os::unix::fs::symlink("/", base.join("link")).unwrap();
    let granted = wasmcni_core::grants::WasiScope {
        read_dirs: vec![base.clone()],
        ..Default::default()
    };
    let spec = with_settings(
        hostile("escape", granted.clone()),
        &[("MODE", "escape"), ("DIR", &base.display().to_string())],
    );
    let plugin = load(&spec).unwrap_or_else(|e| panic!("{e}"));
    let seen: serde_json::Value = match plugin.allocate(static_pool(), &pod()) {
        Err(PluginError::Refused { message, .. }) => serde_json::from_str(&message).unwrap(),
        other => panic!("{other:?}"),
    };
    for attempt in ["dotdot", "link", "passwd", "remove", "mkdir", "rename"] {
        assert!(seen[attempt]["error"].is_string(), "{attempt}: {seen}");
    }
    assert_eq!(seen["listdir"]["ok"], "['answer', 'link']", "{seen}");
    assert_eq!(
        std::fs::read_to_string(base.join("answer")).unwrap(),
        "42\n"
    );
    assert!(!base.join("new").exists() && !base.join("moved").exists());

    // Holding files open: the call's resource table is bounded; the call fails, the next works.
    let path = base.join("answer").display().to_string();
    let hoard = with_settings(
        hostile("hoard", granted),
        &[("MODE", "hoard"), ("PATH", &path)],
    );
    let plugin = load(&hoard).unwrap_or_else(|e| panic!("{e}"));
    let error = plugin
        .allocate(static_pool(), &pod())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("held more than 256 WASI resources at once"),
        "{error}"
    );
    let healthy = load(&hostile("sleep", Default::default())).unwrap_or_else(|e| panic!("{e}"));
    assert!(healthy.allocate(static_pool(), &pod()).is_ok());
}

#[test]
fn a_loud_or_exiting_python_plugin_fails_with_a_short_message_ending_in_its_output() {
    let plugin = load(&hostile("shout", Default::default())).unwrap_or_else(|e| panic!("{e}"));
    let error = plugin
        .allocate(static_pool(), &pod())
        .unwrap_err()
        .to_string();
    assert!(error.contains("RuntimeError: shouted"), "{error}");
    assert!(error.len() <= 1200, "{} bytes: {error}", error.len());
    assert!(
        !error.contains('\n'),
        "control characters are escaped: {error}"
    );
    let plugin = load(&hostile("exit", Default::default())).unwrap_or_else(|e| panic!("{e}"));
    let error = plugin
        .allocate(static_pool(), &pod())
        .unwrap_err()
        .to_string();
    eprintln!("EXIT: {error}");
    assert!(error.contains("failed in allocate"), "{error}");
}
