//! The runtime against real components: the default `pack` allocator and the hostile test
//! plugins of `tests/plugins`, built by `cargo run --release -p wasmcni-plugin-build -- tests/plugins`
//! (scripts/test.sh does it before the tests).

use std::time::Instant;

use super::testing::spec;
use super::*;
use crate::ipam::AddressBlock;

fn snapshot(blocks: &[&str], in_use: &[&str]) -> PoolSnapshot {
    PoolSnapshot {
        inventory: Inventory {
            blocks: blocks
                .iter()
                .map(|cidr| AddressBlock {
                    cidr: cidr.parse().unwrap(),
                    route_table: None,
                    source: "static".into(),
                })
                .collect(),
            excluded: Default::default(),
        },
        in_use: in_use.iter().map(|ip| ip.parse().unwrap()).collect(),
    }
}

fn pod() -> PodInfo {
    PodInfo {
        namespace: Some("default".into()),
        name: Some("web".into()),
        container_id: "c1".into(),
        ifname: "eth0".into(),
    }
}

const ALL: &[Capability] = &[Capability::PoolView, Capability::Log, Capability::Clock];

#[test]
fn pack_fills_the_densest_block_first() {
    let runtime = PluginRuntime::new().unwrap();
    let pack = runtime.load_allocator(&spec("pack", ALL)).unwrap();
    assert_eq!(
        pack.imports(),
        [
            "wasmcni:plugin/types@0.1.0",
            "wasmcni:plugin/pool-view@0.1.0"
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
        .load_allocator(&spec("pack", &[Capability::Log]))
        .err()
        .expect("pack imports pool-view, which is not granted");
    assert_eq!(
        err.to_string(),
        "plugin pack imports wasmcni:plugin/pool-view@0.1.0 which its grant does not include (granted: [log]); grant them or use another plugin"
    );
}

#[test]
fn a_digest_mismatch_is_refused_before_anything_runs() {
    let runtime = PluginRuntime::new().unwrap();
    let mut pinned = spec("pack", ALL);
    let actual = pinned.digest.clone();
    pinned.digest = format!("sha256:{}", "0".repeat(64));
    let err = runtime.load_allocator(&pinned).err().expect("wrong digest");
    assert!(
        matches!(&err, PluginError::DigestMismatch { actual: a, .. } if *a == actual),
        "{err}"
    );
    assert!(err.to_string().contains("refusing to load it"), "{err}");
}

#[test]
fn hostile_plugins_are_contained_with_a_clear_error() {
    let runtime = PluginRuntime::new().unwrap();
    let pack = runtime.load_allocator(&spec("pack", ALL)).unwrap();
    let cases = [
        ("loop-forever", "ran out of fuel (50000000 units per call)"),
        ("memory-bomb", "exceeded its memory limit of 16777216 bytes"),
        ("deep-recursion", "overflowed its stack"),
        ("panics", "trapped: wasm `unreachable` instruction executed"),
    ];
    for (name, expected) in cases {
        let plugin = runtime.load_allocator(&spec(name, ALL)).unwrap();
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
fn a_huge_error_message_is_bounded() {
    let runtime = PluginRuntime::new().unwrap();
    let plugin = runtime.load_allocator(&spec("huge-error", ALL)).unwrap();
    let err = plugin
        .allocate(snapshot(&["10.0.0.0/24"], &[]), &pod())
        .unwrap_err();
    match err {
        PluginError::Refused { message, .. } => {
            assert!(
                message.len() < MAX_MESSAGE_BYTES + 32,
                "{} bytes kept",
                message.len()
            );
            assert!(message.ends_with("(truncated)"));
        }
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn proposals_are_returned_as_is_for_the_daemon_to_check() {
    // The runtime does not judge addresses; the daemon refuses these (see the handler tests).
    let runtime = PluginRuntime::new().unwrap();
    let outside = runtime.load_allocator(&spec("outside-pool", ALL)).unwrap();
    assert_eq!(
        outside
            .allocate(snapshot(&["10.0.0.0/24"], &[]), &pod())
            .unwrap()
            .to_string(),
        "8.8.8.8"
    );
    let in_use = runtime.load_allocator(&spec("in-use", ALL)).unwrap();
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
    let report = runtime.inspect(&spec("pack", &[Capability::Log, Capability::Clock]));
    assert_eq!(
        report.actual_digest.as_deref(),
        Some(report.pinned_digest.as_str())
    );
    assert_eq!(report.under_granted, ["wasmcni:plugin/pool-view@0.1.0"]);
    assert_eq!(report.over_granted, ["log", "clock"]);
    assert_eq!(report.exports, ["allocate"]);
    assert_eq!(report.problem, None);
    let mut wrong = spec("pack", &[Capability::PoolView]);
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
    let pack = spec("pack", ALL);
    let first = runtime.load_allocator(&pack).unwrap();
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
    let second = runtime.load_allocator(&pack).unwrap();
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
    let third = runtime.load_allocator(&pack).unwrap();
    assert_eq!(
        third
            .allocate(snapshot(&["10.0.0.0/29"], &[]), &pod())
            .unwrap()
            .to_string(),
        "10.0.0.1"
    );
    assert_ne!(std::fs::read(&cached[0]).unwrap(), b"not machine code");
    // The digest still guards the source: a pinned digest that does not match is refused
    // even though a cached compilation exists for the real one.
    let mut wrong = pack.clone();
    wrong.digest = format!("sha256:{}", "1".repeat(64));
    assert!(matches!(
        runtime.load_allocator(&wrong),
        Err(PluginError::DigestMismatch { .. })
    ));
    // A cache directory others can write to is refused.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(PluginRuntime::new().unwrap().with_cache(&open).is_err());
}
