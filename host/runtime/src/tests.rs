//! The runtime against real components: the default `pack` allocator and the hostile test
//! plugins of `tests/plugins`, built by `cargo run --release -p wasmcni-plugin-build -- tests/plugins`
//! (scripts/test.sh does it before the tests).

use std::time::{Duration, Instant};

use super::testing::{audit_lines, pod, snapshot, spec};
use super::*;
use wasmcni_core::limits;
use wasmcni_core::{EniInfo, NetlinkRequest, NodeInfo, NodeLimits};

/// An allocator spec granted `grants` (narrowest scopes).
fn alloc(name: &str, grants: &[Capability]) -> PluginSpec {
    spec(name, PluginKind::Allocator, grants)
}

const ALL: &[Capability] = &[
    Capability::PoolView,
    Capability::EniOps,
    Capability::Log,
    Capability::Clock,
    Capability::Kv,
];

#[test]
fn pack_fills_the_densest_block_first() {
    let runtime = PluginRuntime::new().unwrap();
    let pack = runtime.load(&alloc("pack", ALL)).unwrap();
    assert_eq!(
        pack.imports(),
        [
            "wasmcni:plugin/types@0.3.0",
            "wasmcni:plugin/config@0.3.0",
            "wasmcni:plugin/pool-view@0.3.0",
            "wasmcni:plugin/eni-ops@0.3.0",
            "wasmcni:plugin/log@0.3.0"
        ]
    );
    let blocks = ["10.0.0.0/29", "10.0.1.0/29"];
    let cases: &[(&[&str], &str)] = &[
        (&[], "10.0.0.1"),
        (&["10.0.1.1"], "10.0.1.2"),
        (&["10.0.0.1", "10.0.1.1", "10.0.1.3"], "10.0.1.2"),
        (
            &[
                "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.5", "10.0.1.6",
            ],
            "10.0.0.1",
        ),
    ];
    for (in_use, expected) in cases {
        let ip = pack.allocate(snapshot(&blocks, in_use), &pod()).unwrap();
        assert_eq!(ip.to_string(), *expected, "in use: {in_use:?}");
    }
    let full: Vec<String> = (1..=6).map(|i| format!("10.0.0.{i}")).collect();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let err = pack
        .allocate(snapshot(&["10.0.0.0/29"], &full), &pod())
        .unwrap_err();
    assert!(
        matches!(&err, PluginError::Refused { message, .. } if message == "no free address in 1 block(s)"),
        "{err}"
    );
}

#[test]
fn an_ungranted_import_is_refused_at_load_by_name() {
    let runtime = PluginRuntime::new().unwrap();
    let err = runtime
        .load(&alloc("pack", &[Capability::Log]))
        .err()
        .expect("pack imports pool-view, which is not granted");
    assert_eq!(
        err.to_string(),
        "plugin pack imports wasmcni:plugin/pool-view@0.3.0, wasmcni:plugin/eni-ops@0.3.0 which its grant does not include (granted: [log]); grant them or use another plugin"
    );
}

#[test]
fn a_plugin_that_cannot_start_within_its_memory_limit_is_refused_at_load() {
    let runtime = PluginRuntime::new().unwrap();
    // Rust's 1 MiB stack, pack's data and the SDK's call arena do not fit in 1 MiB: every call
    // would fail, so the load does, naming both sizes.
    let mut spec = alloc("pack", ALL);
    spec.limits.memory_bytes = 1 << 20;
    let err = runtime
        .load(&spec)
        .err()
        .expect("pack cannot start in 1 MiB");
    match &err {
        PluginError::Trapped { call, reason, .. } => {
            assert_eq!(*call, "init");
            assert!(
                reason.starts_with(
                    "exceeded its memory limit of 1048576 bytes (asked to grow a memory to "
                ),
                "{reason}"
            );
        }
        other => panic!("expected the start to fail, got {other}"),
    }
    // With room for its initial memory, it loads and answers.
    spec.limits.memory_bytes = 2 << 20;
    let pack = runtime.load(&spec).unwrap();
    pack.allocate(snapshot(&["10.0.0.0/24"], &[]), &pod())
        .unwrap();
}

#[test]
fn a_digest_mismatch_is_refused_before_anything_runs() {
    let runtime = PluginRuntime::new().unwrap();
    let mut pinned = alloc("pack", ALL);
    let actual = pinned.digest.clone();
    pinned.digest = format!("sha256:{}", "0".repeat(64));
    let err = runtime.load(&pinned).err().expect("wrong digest");
    assert!(
        matches!(&err, PluginError::DigestMismatch { actual: a, .. } if *a == actual),
        "{err}"
    );
    assert!(err.to_string().contains("refusing to load it"), "{err}");
}

#[test]
fn hostile_plugins_are_contained_with_a_clear_error() {
    let runtime = PluginRuntime::new().unwrap();
    let pack = runtime.load(&alloc("pack", ALL)).unwrap();
    let cases = [
        ("loop-forever", "ran out of fuel (50000000 units per call)"),
        ("memory-bomb", "exceeded its memory limit of 16777216 bytes"),
        ("deep-recursion", "overflowed its stack"),
        ("panics", "trapped: wasm `unreachable` instruction executed"),
    ];
    for (name, expected) in cases {
        // A long deadline, so that fuel, memory and stack are what stop them here (the
        // deadline has tests of its own).
        let mut spec = alloc(name, ALL);
        spec.limits
            .deadline_ms
            .insert(Export::Allocate, limits::MAX_DEADLINE.as_millis() as u64);
        let plugin = runtime.load(&spec).unwrap();
        let started = Instant::now();
        let err = plugin
            .allocate(snapshot(&["10.0.0.0/24"], &[]), &pod())
            .unwrap_err();
        let elapsed = started.elapsed();
        match &err {
            PluginError::Trapped { reason, call, .. } => {
                assert_eq!(*call, "allocate");
                assert!(reason.starts_with(expected), "{name}: {reason}");
            }
            other => panic!("{name}: expected a trap, got {other}"),
        }
        assert!(elapsed.as_secs() < 10, "{name} took {elapsed:?}");
        // Counted for operators: a trap, and (for the endless loop) all its fuel.
        let label = wasmcni_telemetry::metrics::PluginCallLabel {
            plugin: name.to_owned(),
            call: "allocate".to_owned(),
        };
        let metrics = wasmcni_telemetry::metrics::Metrics::global();
        assert!(
            metrics.plugin_traps.get_or_create(&label).get() >= 1,
            "{name}"
        );
        if name == "loop-forever" {
            assert!(metrics.plugin_fuel.get_or_create(&label).get() >= 50_000_000);
        }
        // The same plugin runs again in a fresh store, and the runtime serves others.
        assert!(plugin
            .allocate(snapshot(&["10.0.0.0/24"], &[]), &pod())
            .is_err());
        assert_eq!(
            pack.allocate(snapshot(&["10.0.0.0/24"], &[]), &pod())
                .unwrap()
                .to_string(),
            "10.0.0.1"
        );
    }
}

#[test]
fn a_huge_error_message_is_stopped_before_the_host_copies_it() {
    // An 8 MiB error string is more than an export's answer may pass to the host: the call
    // traps while wasmtime lifts it, before any of it is allocated on the host.
    let runtime = PluginRuntime::new().unwrap();
    let plugin = runtime.load(&alloc("huge-error", ALL)).unwrap();
    let err = plugin
        .allocate(snapshot(&["10.0.0.0/24"], &[]), &pod())
        .unwrap_err();
    match err {
        PluginError::Trapped { reason, .. } => assert!(
            reason.starts_with("passed more data to the host in one call than it accepts"),
            "{reason}"
        ),
        other => panic!("expected a trap, got {other}"),
    }
}

#[test]
fn proposals_are_returned_as_is_for_the_daemon_to_check() {
    // The runtime does not judge addresses; the daemon refuses these (see the handler tests).
    let runtime = PluginRuntime::new().unwrap();
    let outside = runtime.load(&alloc("outside-pool", ALL)).unwrap();
    assert_eq!(
        outside
            .allocate(snapshot(&["10.0.0.0/24"], &[]), &pod())
            .unwrap()
            .to_string(),
        "8.8.8.8"
    );
    let in_use = runtime.load(&alloc("in-use", ALL)).unwrap();
    assert_eq!(
        in_use
            .allocate(snapshot(&["10.0.0.0/24"], &["10.0.0.7"]), &pod())
            .unwrap()
            .to_string(),
        "10.0.0.7"
    );
}

#[test]
fn inspection_names_under_and_over_granted_capabilities() {
    let runtime = PluginRuntime::new().unwrap();
    let report = runtime.inspect(&alloc("pack", &[Capability::Log, Capability::Clock]));
    assert_eq!(
        report.actual_digest.as_deref(),
        Some(report.pinned_digest.as_str())
    );
    assert_eq!(
        report.under_granted,
        [
            "wasmcni:plugin/pool-view@0.3.0",
            "wasmcni:plugin/eni-ops@0.3.0"
        ]
    );
    assert_eq!(report.over_granted, ["clock"]);
    assert_eq!(report.exports, ["wasmcni:plugin/allocator@0.3.0"]);
    assert_eq!(report.world, Some(PluginKind::Allocator));
    assert_eq!(report.problem, None);
    let mut wrong = alloc(
        "pack",
        &[Capability::PoolView, Capability::EniOps, Capability::Log],
    );
    wrong.digest = format!("sha256:{}", "f".repeat(64));
    let report = runtime.inspect(&wrong);
    assert!(report.under_granted.is_empty() && report.over_granted.is_empty());
    assert_eq!(
        report.problem.as_deref(),
        Some("digest mismatch: the daemon refuses to load it")
    );
}

#[test]
fn compiled_components_are_cached_by_digest_and_engine() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("plugin-cache");
    let runtime = PluginRuntime::new().unwrap().with_cache(&cache).unwrap();
    let pack = alloc("pack", ALL);
    let first = runtime.load(&pack).unwrap();
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let name = cached[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with(pack.digest.strip_prefix("sha256:").unwrap()) && name.ends_with(".cwasm"),
        "{name}"
    );
    let second = runtime.load(&pack).unwrap();
    for plugin in [&first, &second] {
        assert_eq!(
            plugin
                .allocate(snapshot(&["10.0.0.0/29"], &[]), &pod())
                .unwrap()
                .to_string(),
            "10.0.0.1"
        );
    }
    // A damaged artifact is ignored and replaced, never trusted.
    std::fs::write(&cached[0], b"not machine code").unwrap();
    let third = runtime.load(&pack).unwrap();
    assert_eq!(
        third
            .allocate(snapshot(&["10.0.0.0/29"], &[]), &pod())
            .unwrap()
            .to_string(),
        "10.0.0.1"
    );
    assert_ne!(std::fs::read(&cached[0]).unwrap(), b"not machine code");
    // Damage inside the machine code, every header intact: the checksum catches it, and the
    // component is compiled again rather than run.
    let whole = std::fs::read(&cached[0]).unwrap();
    let mut damaged = whole.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&cached[0], &damaged).unwrap();
    let fourth = runtime.load(&pack).unwrap();
    assert_eq!(
        fourth
            .allocate(snapshot(&["10.0.0.0/29"], &[]), &pod())
            .unwrap()
            .to_string(),
        "10.0.0.1"
    );
    assert_eq!(
        std::fs::read(&cached[0]).unwrap(),
        whole,
        "rewritten from a fresh compilation"
    );
    // The digest still guards the source: a pinned digest that does not match is refused
    // even though a cached compilation exists for the real one.
    let mut wrong = pack.clone();
    wrong.digest = format!("sha256:{}", "1".repeat(64));
    assert!(matches!(
        runtime.load(&wrong),
        Err(PluginError::DigestMismatch { .. })
    ));
    // A cache directory others can write to is refused.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(PluginRuntime::new().unwrap().with_cache(&open).is_err());
}

/// A t3.medium-like EC2 node: the primary ENI `eni-0` with no secondary address yet.
fn spec_of_guard() -> PluginSpec {
    spec(
        "namespace-guard",
        PluginKind::Policy,
        &[Capability::Netlink, Capability::Log],
    )
}

/// A runtime caching into a fresh private directory, compiling with `compiler`.
fn caching_runtime(compiler: Compiler) -> (PluginRuntime, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = PluginRuntime::new()
        .unwrap()
        .with_cache(&dir.path().join("cache"))
        .unwrap()
        .with_compiler(compiler);
    (runtime, dir)
}

fn cached_files(dir: &tempfile::TempDir) -> usize {
    std::fs::read_dir(dir.path().join("cache")).unwrap().count()
}

#[test]
fn a_child_compiler_that_fails_or_hangs_costs_only_a_compilation_in_process() {
    let failing = Compiler::Child {
        program: "/bin/false".into(),
        args: Vec::new(),
        timeout: Duration::from_secs(10),
    };
    // Ignores the arguments it is given and sleeps well past its deadline.
    let hanging = Compiler::Child {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "sleep 30".into(), "sh".into()],
        timeout: Duration::from_millis(300),
    };
    for compiler in [failing, hanging] {
        let (runtime, dir) = caching_runtime(compiler);
        let started = Instant::now();
        let pack = runtime.load(&alloc("pack", ALL)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(pack
            .allocate(snapshot(&["10.0.0.0/24"], &[]), &pod())
            .is_ok());
        // Compiled here instead, and cached as ever.
        assert_eq!(cached_files(&dir), 1);
    }
}

#[test]
fn precompile_fills_the_cache_and_refuses_a_file_of_another_digest() {
    let (runtime, dir) = caching_runtime(Compiler::InProcess);
    let spec = alloc("pack", ALL);
    let other = testing::component("namespace-guard");
    let wrong = runtime.precompile(&other, &spec.digest).unwrap_err();
    assert!(
        matches!(wrong, PluginError::DigestMismatch { .. }),
        "{wrong}"
    );
    assert_eq!(cached_files(&dir), 0);
    runtime.precompile(&spec.path, &spec.digest).unwrap();
    assert_eq!(cached_files(&dir), 1);
    // What a child compiled is what the daemon loads: its compiler is not even asked.
    let asked = dir.path().join("asked");
    let daemon = PluginRuntime::new()
        .unwrap()
        .with_cache(&dir.path().join("cache"))
        .unwrap()
        .with_compiler(Compiler::Child {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "touch \"$0\"; exit 3".into(),
                asked.display().to_string(),
            ],
            timeout: Duration::from_secs(10),
        });
    assert!(daemon.load(&spec).is_ok());
    assert!(!asked.exists(), "the child compiler was asked");
    let guard = spec_of_guard();
    assert!(daemon.load(&guard).is_ok());
    assert!(
        asked.exists(),
        "a component missing from the cache goes to the child"
    );
    assert_eq!(cached_files(&dir), 2);
    // Without a cache there is nothing to compile into.
    let uncached = PluginRuntime::new().unwrap();
    assert!(uncached
        .precompile(&spec.path, &spec.digest)
        .unwrap_err()
        .to_string()
        .contains("no artifact cache"));
}

fn ec2_snapshot() -> PoolSnapshot {
    PoolSnapshot {
        node: NodeInfo {
            provider: wasmcni_core::pool_view::ProviderKind::Ec2,
            instance_id: "i-0000000a".into(),
            instance_type: "t3.medium".into(),
            availability_zone: "us-west-2a".into(),
            vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
            limits: NodeLimits {
                max_enis: 3,
                ipv4_per_eni: 6,
                prefix_delegation: true,
                max_pods: 17,
            },
        },
        enis: vec![EniInfo {
            id: "eni-0".into(),
            device_number: 0,
            primary: true,
            subnet_id: "subnet-0000000a".into(),
            subnet_cidr: "10.0.0.0/24".parse().unwrap(),
            security_groups: vec!["sg-0000000a".into()],
            primary_ip: "10.0.0.10".parse().unwrap(),
            age_ms: 600_000,
            tags: vec![],
            owned: true,
        }],
        ..PoolSnapshot::default()
    }
}

#[test]
fn a_stray_import_is_refused_at_link_time_naming_the_interface() {
    let runtime = PluginRuntime::new().unwrap();
    let err = runtime
        .load(&alloc(
            "stray-import",
            &[
                Capability::PoolView,
                Capability::Log,
                Capability::Kv,
                Capability::Clock,
            ],
        ))
        .err()
        .expect("eni-ops is not granted");
    assert_eq!(
        err.to_string(),
        "plugin stray-import imports wasmcni:plugin/eni-ops@0.3.0 which its grant does not include (granted: [pool-view, log, kv, clock]); grant them or use another plugin"
    );
}

#[test]
fn a_plugin_of_the_wrong_world_is_refused_at_load() {
    let runtime = PluginRuntime::new().unwrap();
    let err = runtime
        .load(&spec(
            "namespace-guard",
            PluginKind::Allocator,
            &[Capability::Netlink, Capability::Log],
        ))
        .err()
        .expect("namespace-guard is a policy hook");
    assert!(
        err.to_string()
            .contains("configured as kind allocator, but the component does not implement the allocator world"),
        "{err}"
    );
}

#[test]
fn eni_requests_outside_the_grant_are_refused_when_made_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let runtime = PluginRuntime::new()
        .unwrap()
        .with_audit_log(AuditLog::new(audit.clone()));
    let mut spec = alloc(
        "outside-scope",
        &[Capability::PoolView, Capability::EniOps, Capability::Log],
    );
    spec.grants.eni_ops.subnets = ["node".to_owned()].into();
    spec.grants.eni_ops.security_groups = ["node".to_owned()].into();
    let plugin = runtime.load(&spec).unwrap();
    // Its plan returns Ok, but nothing it asked for is queued.
    assert_eq!(plugin.plan(ec2_snapshot()).unwrap(), vec![]);
    let lines = audit_lines(&audit);
    let refusals: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["call"].as_str().unwrap(), l["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        refusals,
        [
            (
                "eni-ops.create-eni",
                "subnet subnet-not-granted is outside the plugin's eni-ops grant (subnets: [node])"
            ),
            (
                "eni-ops.assign-ips",
                "ENI eni-not-attached is not an ENI of this node the daemon manages (trunk, branch, EFA and no_manage ENIs never are)"
            ),
        ]
    );
    assert!(lines
        .iter()
        .all(|l| l["outcome"] == "refused" && l["plugin"] == "outside-scope"));
    // With the static provider there are no ENIs at all.
    assert_eq!(
        plugin.plan(snapshot(&["10.0.0.0/24"], &[])).unwrap(),
        vec![]
    );
    assert!(audit_lines(&audit)[2]["result"]
        .as_str()
        .unwrap()
        .contains("the static provider has no ENIs"));
}

#[test]
fn reserved_tag_keys_make_the_whole_answer_refused() {
    let runtime = PluginRuntime::new().unwrap();
    let mut spec = spec("reserved-tags", PluginKind::Tagger, &[]);
    spec.tag_keys = ["team", "wasmcni.io/instance-id"].map(String::from).into();
    let tagger = runtime.load(&spec).unwrap();
    let err = tagger
        .tags(
            &EniTagRequest {
                instance_id: "i-1".into(),
                ..Default::default()
            },
            3,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin reserved-tags refused: answer refused by the host: tag key \"aws:cloudformation:stack-name\" is reserved (aws:* and *k8s.amazonaws.com* belong to AWS and to wasmcni)"
    );
}

#[test]
fn cluster_tags_tags_within_its_scope() {
    let runtime = PluginRuntime::new().unwrap();
    let mut spec = spec(
        "cluster-tags",
        PluginKind::Tagger,
        &[Capability::Clock, Capability::Log],
    );
    spec.tag_keys = [
        "wasmcni.io/cluster",
        "wasmcni.io/instance-id",
        "wasmcni.io/created-at",
        "team",
    ]
    .map(String::from)
    .into();
    spec.settings = [("tag.team".to_owned(), "payments".to_owned())].into();
    let tagger = runtime.load(&spec).unwrap();
    let request = EniTagRequest {
        instance_id: "i-0abc".into(),
        cluster_name: "prod".into(),
        ..Default::default()
    };
    let tags: BTreeMap<String, String> = tagger.tags(&request, 3).unwrap().into_iter().collect();
    assert_eq!(tags["wasmcni.io/cluster"], "prod");
    assert_eq!(tags["wasmcni.io/instance-id"], "i-0abc");
    assert_eq!(tags["team"], "payments");
    assert!(tags["wasmcni.io/created-at"].ends_with('Z'), "{tags:?}");
    // Narrow the scope and the same answer is refused as a whole.
    let mut narrow = spec.clone();
    narrow.tag_keys.remove("team");
    let err = runtime
        .load(&narrow)
        .unwrap()
        .tags(&request, 3)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("tag key \"team\" is outside the plugin's tag_keys scope"),
        "{err}"
    );
}

#[test]
fn datapath_requests_outside_the_grant_are_refused_and_the_verdict_kept() {
    let runtime = PluginRuntime::new().unwrap();
    let mut spec = spec(
        "route-outside-scope",
        PluginKind::Policy,
        &[Capability::Netlink, Capability::Log],
    );
    spec.grants.netlink.mtu = Some((1280, 9001));
    spec.grants.netlink.routes = vec!["10.0.0.0/8".parse().unwrap()];
    let hook = runtime.load(&spec).unwrap();
    let attachment = Attachment {
        verb: Verb::Add,
        pod: pod(),
        addresses: vec!["10.0.0.5/32".parse().unwrap()],
        eni_id: None,
        subnet_id: None,
        chained: false,
    };
    assert_eq!(hook.evaluate(&attachment).unwrap(), Verdict::Allow(vec![]));
}

#[test]
fn namespace_guard_denies_allows_and_adjusts_within_its_grant() {
    let runtime = PluginRuntime::new().unwrap();
    let mut spec = spec(
        "namespace-guard",
        PluginKind::Policy,
        &[Capability::Netlink, Capability::Log],
    );
    spec.grants.netlink.mtu = Some((1280, 9001));
    spec.settings = [
        ("allow_namespaces", "default, team-*"),
        ("deny_namespaces", "team-sandbox"),
        ("mtu.team-a", "1400"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    let guard = runtime.load(&spec).unwrap();
    let ask = |namespace: &str, verb: Verb| {
        let mut pod = pod();
        pod.namespace = Some(namespace.to_owned());
        guard
            .evaluate(&Attachment {
                verb,
                pod,
                addresses: vec!["10.0.0.5/32".parse().unwrap()],
                eni_id: None,
                subnet_id: None,
                chained: false,
            })
            .unwrap()
    };
    assert_eq!(ask("default", Verb::Add), Verdict::Allow(vec![]));
    assert_eq!(
        ask("team-a", Verb::Add),
        Verdict::Allow(vec![NetlinkRequest::SetMtu { mtu: 1400 }])
    );
    assert!(matches!(ask("team-sandbox", Verb::Add), Verdict::Deny(_)));
    assert!(matches!(ask("kube-public", Verb::Add), Verdict::Deny(_)));
    assert_eq!(ask("kube-public", Verb::Del), Verdict::Allow(vec![]));
}

#[test]
fn kv_is_held_to_its_quota_and_kept_across_loads() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = PluginRuntime::new()
        .unwrap()
        .with_kv_dir(&dir.path().join("kv"))
        .unwrap();
    let mut spec = alloc("kv-hog", &[Capability::PoolView, Capability::Kv]);
    spec.grants.kv.max_bytes = 64 << 10;
    let hog = runtime.load(&spec).unwrap();
    assert_eq!(
        hog.allocate(snapshot(&["10.0.0.0/24"], &[]), &pod())
            .unwrap()
            .to_string(),
        "10.0.0.1"
    );
    let file = dir.path().join("kv/kv-hog.kv");
    let kept = kv::KvStore::open(file.clone(), 64 << 10).unwrap();
    let keys = kept.begin().keys();
    assert_eq!(keys.len(), (64 << 10) / (4096 + 9), "{keys:?}");
    // A reload with a larger quota shares the same state (never a second copy of the file)
    // and applies the new quota to the next calls.
    let mut bigger = spec.clone();
    bigger.grants.kv.max_bytes = 128 << 10;
    let reloaded = runtime.load(&bigger).unwrap();
    assert!(
        Arc::ptr_eq(hog.kv.as_ref().unwrap(), reloaded.kv.as_ref().unwrap()),
        "one store per plugin name"
    );
    reloaded
        .allocate(snapshot(&["10.0.0.0/24"], &[]), &pod())
        .unwrap();
    let kept = kv::KvStore::open(file.clone(), 128 << 10).unwrap();
    assert_eq!(kept.begin().keys().len(), (128 << 10) / (4096 + 9));
    // Without a kv grant the same component does not even load.
    let err = runtime
        .load(&alloc("kv-hog", &[Capability::PoolView]))
        .err()
        .unwrap();
    assert!(err.to_string().contains("wasmcni:plugin/kv@0.3.0"), "{err}");
}

#[test]
fn vpc_warm_pool_fills_the_primary_eni_first_within_its_grant() {
    let runtime = PluginRuntime::new().unwrap();
    let mut spec = alloc(
        "vpc-warm-pool",
        &[Capability::PoolView, Capability::EniOps, Capability::Log],
    );
    spec.grants.eni_ops.subnets = ["node".to_owned()].into();
    spec.grants.eni_ops.security_groups = ["node".to_owned()].into();
    let plugin = runtime.load(&spec).unwrap();
    // WARM_ENI_TARGET=1 (default) on an empty t3.medium: one ENI's worth (5) of free
    // addresses, taken from the primary ENI, which has room for exactly that.
    assert_eq!(
        plugin.plan(ec2_snapshot()).unwrap(),
        vec![EniRequest::AssignIps {
            eni_id: "eni-0".into(),
            count: 5
        }]
    );
}
