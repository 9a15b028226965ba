//! The sandbox holds: every bound of [`wasmcni_core::limits`] tried by a hostile plugin of
//! `tests/plugins` (built by `cargo run --release -p wasmcni-plugin-build -- tests/plugins`),
//! each contained within its deadline with a clear error, and nothing it asked for carried out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::testing::{audit_lines, pod, snapshot, spec, with_settings};
use super::*;
use wasmcni_core::limits;
use wasmcni_core::{EniInfo, NodeInfo, NodeLimits};

const ALLOCATOR: &[Capability] = &[
    Capability::PoolView,
    Capability::EniOps,
    Capability::Log,
    Capability::Kv,
    Capability::Clock,
];

fn static_pool() -> PoolSnapshot {
    snapshot(&["10.0.0.0/24"], &[])
}

/// An EC2 node of `enis` plain ENIs this daemon owns, all in the node's subnet, 50 address
/// slots each (limits high enough that only the runtime's own caps bind).
fn ec2_pool(enis: u32) -> PoolSnapshot {
    PoolSnapshot {
        node: NodeInfo {
            provider: wasmcni_core::pool_view::ProviderKind::Ec2,
            instance_id: "i-0000000a".into(),
            instance_type: "m5.24xlarge".into(),
            availability_zone: "us-west-2a".into(),
            vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
            limits: NodeLimits {
                max_enis: enis + 10,
                ipv4_per_eni: 50,
                prefix_delegation: true,
                max_pods: 737,
            },
        },
        enis: (0..enis)
            .map(|n| EniInfo {
                id: format!("eni-{n:017x}"),
                device_number: n,
                primary: n == 0,
                subnet_id: "subnet-0000000a".into(),
                subnet_cidr: "10.0.0.0/16".parse().unwrap(),
                security_groups: vec!["sg-0000000a".into()],
                primary_ip: std::net::Ipv4Addr::from(0x0a00_0100 + n),
                age_ms: 600_000,
                tags: vec![],
                owned: true,
            })
            .collect(),
        ..PoolSnapshot::default()
    }
}

fn attachment(verb: Verb) -> Attachment {
    Attachment {
        verb,
        pod: pod(),
        addresses: vec!["10.0.0.5/32".parse().unwrap()],
        eni_id: None,
        subnet_id: None,
        chained: false,
    }
}

fn eni_ops_spec(name: &str) -> PluginSpec {
    let mut spec = spec(name, PluginKind::Allocator, ALLOCATOR);
    spec.grants.eni_ops.subnets = ["node".to_owned()].into();
    spec.grants.eni_ops.security_groups = ["node".to_owned()].into();
    spec
}

fn trap_reason(error: PluginError) -> String {
    match error {
        PluginError::Trapped { reason, .. } => reason,
        other => panic!("expected a trap, got {other}"),
    }
}

/// `loop-forever`, with fuel for far longer than `allocate_deadline_ms`: its deadline is what
/// stops its `allocate`.
fn spinner(allocate_deadline_ms: u64) -> PluginSpec {
    let mut spec = spec("loop-forever", PluginKind::Allocator, ALLOCATOR);
    spec.limits.fuel = 10_000_000_000;
    spec.limits
        .deadline_ms
        .insert(Export::Allocate, allocate_deadline_ms);
    spec
}

/// `leftovers`, with deadlines long enough for its 2 MiB of fresh pages on a loaded machine:
/// what it tests is memory, not time.
fn leftovers() -> PluginSpec {
    let mut spec = spec("leftovers", PluginKind::Allocator, ALLOCATOR);
    for export in [Export::Allocate, Export::Plan] {
        spec.limits.deadline_ms.insert(export, 5_000);
    }
    spec
}

/// Generous for a loaded 2-core CI machine; what matters is that the call ends at all, and
/// about when its deadline says.
const SLACK: Duration = Duration::from_secs(2);

#[test]
fn a_call_is_stopped_at_its_deadline_even_with_fuel_to_spare() {
    let runtime = PluginRuntime::new().unwrap();
    let plugin = runtime.load(&spinner(100)).unwrap();
    let started = Instant::now();
    let reason = trap_reason(plugin.allocate(static_pool(), &pod()).unwrap_err());
    let elapsed = started.elapsed();
    assert_eq!(
        reason,
        "ran past its deadline of 100 ms (a loop, in wasm or in host calls?)"
    );
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(100) + SLACK, "{elapsed:?}");
}

#[test]
fn the_idle_ticker_parks_and_the_next_call_is_still_held_to_its_deadline() {
    let runtime = PluginRuntime::new().unwrap();
    let plugin = Arc::new(runtime.load(&spinner(100)).unwrap());
    for round in 0..3 {
        // Idle: the ticker stops ticking once no call has run for its linger time.
        let idle = Instant::now();
        while !runtime.gate.ticker_parked() {
            assert!(
                idle.elapsed() < gate::TICKER_LINGER + SLACK,
                "round {round}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        if round > 0 {
            // It ticked on after the last call (for the linger time; a descheduled test
            // thread may see it park late, never early by much).
            assert!(idle.elapsed() + Duration::from_millis(40) >= gate::TICKER_LINGER);
        }
        // A call wakes it at once (the ticker is not parked while the call runs), and is
        // stopped at its deadline as ever.
        let started = Instant::now();
        let call = {
            let plugin = plugin.clone();
            std::thread::spawn(move || plugin.allocate(static_pool(), &pod()))
        };
        while runtime.running_calls() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let ticks = runtime.gate.ticks();
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            runtime.gate.ticks() > ticks,
            "round {round}: no tick while a call ran"
        );
        let reason = trap_reason(call.join().unwrap().unwrap_err());
        let elapsed = started.elapsed();
        assert!(
            reason.starts_with("ran past its deadline of 100 ms"),
            "{reason}"
        );
        assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(100) + SLACK, "{elapsed:?}");
    }
}

/// The checks of `leftovers` can fail: on one instance called twice (what a slot that was not
/// reset would hand the next call), the second call names what the first left in its static
/// counter, data segment and `.bss`. (The pages it grows and the buffers it allocates come, on
/// one instance, from beyond what the first call used: only a slot whose memory was not reset
/// after a call ended could show those.)
#[test]
fn leftovers_names_what_a_reused_instance_carries_over() {
    let runtime = PluginRuntime::new().unwrap();
    // Two calls' worth of scanning on one store's fuel.
    let mut spec = leftovers();
    spec.limits.fuel *= 4;
    let plugin = runtime.load(&spec).unwrap();
    let Pre::Allocator(pre) = &plugin.pre else {
        panic!("leftovers is an allocator");
    };
    let request = pod_to_wit(&pod());
    let done = plugin
        .run(
            Export::Allocate,
            "allocate",
            Arc::new(static_pool()),
            |store| {
                let instance = pre.instantiate(&mut *store)?;
                let allocator = instance.wasmcni_plugin_allocator();
                let first = allocator.call_allocate(&mut *store, &request)?;
                let second = allocator.call_allocate(&mut *store, &request)?;
                Ok((first, second))
            },
        )
        .unwrap();
    let (first, second) = done.answer;
    assert!(
        matches!(first, Ok(types::IpAddress::V4(0x0a00_0001))),
        "{first:?}"
    );
    let found = second.expect_err("the second call finds the first one's writes");
    for leftover in [
        "a static counter carried over: 1",
        "the data segment carried over a write at 0",
        "the .bss carried over a write at 0",
    ] {
        assert!(found.contains(leftover), "{leftover}: {found}");
    }
}

#[test]
fn every_call_starts_from_pristine_memory_whatever_the_last_one_wrote() {
    // `leftovers` dirties a static, its data segment, a 512 KiB `.bss` array, pages of a raw
    // `memory.grow` and buffers below, across and far beyond the slot's resident reset size;
    // each call checks, reading raw, that none of it carried over.
    let runtime = Arc::new(PluginRuntime::with_calls(4).unwrap());
    let plugin = Arc::new(runtime.load(&leftovers()).unwrap());
    for call in 0..40 {
        let answer = plugin.allocate(static_pool(), &pod());
        assert_eq!(answer.unwrap(), Ipv4Addr::new(10, 0, 0, 1), "call {call}");
        if call % 8 == 0 {
            plugin.plan(static_pool()).unwrap();
        }
    }
    // Calls at once, so that slots are shared out and reused in every order.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let plugin = plugin.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    assert_eq!(
                        plugin.allocate(static_pool(), &pod()).unwrap(),
                        Ipv4Addr::new(10, 0, 0, 1)
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

#[test]
fn reaching_past_the_end_of_linear_memory_traps_and_the_next_call_runs() {
    let runtime = PluginRuntime::new().unwrap();
    let plugin = runtime
        .load(&spec("out-of-bounds", PluginKind::Allocator, ALLOCATOR))
        .unwrap();
    let leftovers = runtime.load(&leftovers()).unwrap();
    for _ in 0..3 {
        // (From the second round on, in a slot a 1 MiB larger instance used last.)
        let read = trap_reason(plugin.allocate(static_pool(), &pod()).unwrap_err());
        assert_eq!(read, "trapped: out of bounds memory access");
        let write = trap_reason(plugin.plan(static_pool()).unwrap_err());
        assert_eq!(write, "trapped: out of bounds memory access");
        assert_eq!(
            leftovers.allocate(static_pool(), &pod()).unwrap(),
            Ipv4Addr::new(10, 0, 0, 1)
        );
    }
}

#[test]
fn loops_of_host_calls_are_stopped_whatever_they_pass() {
    let runtime = PluginRuntime::new().unwrap();
    let policy = |name: &str, grants: &[Capability], settings: &[(&str, &str)]| {
        with_settings(spec(name, PluginKind::Policy, grants), settings)
    };
    // (plugin, what it passes, the reason it is stopped with)
    let cases: Vec<(PluginSpec, &str, &str)> = vec![
        (
            policy("config-flood", &[], &[]),
            "config.get with an 8 MiB key, no grant at all",
            "passed more data to the host in one call than it accepts",
        ),
        (
            policy("config-flood", &[], &[("key_bytes", "300")]),
            "config.get with a 300-byte key",
            "passed a config key of 300 bytes; at most 256 are accepted",
        ),
        (
            policy("config-flood", &[], &[("key_bytes", "100")]),
            "config.get with a 100-byte key",
            "made more than 1000 host calls in one call",
        ),
        (
            policy("log-flood", &[Capability::Log], &[]),
            "log with 1 KiB messages",
            "made more than 1000 host calls in one call",
        ),
        (
            policy(
                "log-flood",
                &[Capability::Log],
                &[("message_bytes", "60000")],
            ),
            "log with 60 kB messages",
            "made more than 1000 host calls in one call",
        ),
    ];
    for (mut spec, what, expected) in cases {
        // A long deadline: the budget and the size checks are what must stop these.
        spec.limits
            .deadline_ms
            .insert(Export::Evaluate, limits::MAX_DEADLINE.as_millis() as u64);
        let plugin = runtime.load(&spec).unwrap();
        let started = Instant::now();
        let reason = trap_reason(plugin.evaluate(&attachment(Verb::Add)).unwrap_err());
        let elapsed = started.elapsed();
        assert!(reason.starts_with(expected), "{what}: {reason}");
        assert!(elapsed < SLACK, "{what}: {elapsed:?}");
    }
    let mut kv = spec("kv-churn", PluginKind::Allocator, &[Capability::Kv]);
    kv.limits.host_calls = 500;
    let dir = tempfile::tempdir().unwrap();
    let runtime = PluginRuntime::new()
        .unwrap()
        .with_kv_dir(&dir.path().join("kv"))
        .unwrap();
    let plugin = runtime.load(&kv).unwrap();
    let reason = trap_reason(plugin.allocate(static_pool(), &pod()).unwrap_err());
    assert_eq!(reason, "made more than 500 host calls in one call");
    assert!(
        !dir.path().join("kv/kv-churn.kv").exists(),
        "no write of a failed call is kept"
    );
}

#[test]
fn a_long_spin_in_host_calls_ends_at_the_deadline() {
    let runtime = PluginRuntime::new().unwrap();
    let mut spec = with_settings(
        spec("log-flood", PluginKind::Policy, &[Capability::Log]),
        &[("message_bytes", "60000")],
    );
    spec.limits.host_calls = limits::MAX_HOST_CALLS;
    spec.limits.deadline_ms.insert(Export::Evaluate, 300);
    let plugin = runtime.load(&spec).unwrap();
    let started = Instant::now();
    let reason = trap_reason(plugin.evaluate(&attachment(Verb::Add)).unwrap_err());
    let elapsed = started.elapsed();
    assert_eq!(
        reason,
        "ran past its deadline of 300 ms (a loop, in wasm or in host calls?)"
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(300) + SLACK,
        "{elapsed:?}"
    );
    // On other verbs it answers at once: the same instance pool serves them.
    assert_eq!(
        plugin.evaluate(&attachment(Verb::Del)).unwrap(),
        Verdict::Allow(vec![])
    );
}

#[test]
fn stopping_the_runtime_ends_running_calls_at_once_and_refuses_new_ones() {
    let runtime = PluginRuntime::new().unwrap();
    let mut spec = with_settings(
        spec("log-flood", PluginKind::Policy, &[Capability::Log]),
        &[("message_bytes", "60000")],
    );
    spec.limits.host_calls = limits::MAX_HOST_CALLS;
    spec.limits
        .deadline_ms
        .insert(Export::Evaluate, limits::MAX_DEADLINE.as_millis() as u64);
    let plugin = Arc::new(runtime.load(&spec).unwrap());
    let spinning = {
        let plugin = plugin.clone();
        std::thread::spawn(move || plugin.evaluate(&attachment(Verb::Add)))
    };
    while runtime.running_calls() == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    let stopped = Instant::now();
    runtime.stop_calls();
    // Not a trap of the plugin's: the daemon stopped it (no failure policy applies).
    let error = spinning.join().unwrap().unwrap_err();
    assert!(
        matches!(
            error,
            PluginError::Stopped {
                call: "evaluate(add)",
                ..
            }
        ),
        "{error}"
    );
    assert!(
        stopped.elapsed() < Duration::from_millis(500),
        "{:?}",
        stopped.elapsed()
    );
    let error = plugin.evaluate(&attachment(Verb::Del)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "plugin log-flood: evaluate(del) was not completed: the daemon is shutting down"
    );
}

#[test]
fn instance_slots_are_waited_for_no_longer_than_the_deadline() {
    // Two slots (the daemon has 32): filling them takes two spinning threads, not 32.
    let runtime = PluginRuntime::with_calls(2).unwrap();
    let pack = runtime
        .load(&spec("pack", PluginKind::Allocator, ALLOCATOR))
        .unwrap();
    let spinner = Arc::new(runtime.load(&spinner(1_000)).unwrap());
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let spinner = spinner.clone();
            std::thread::spawn(move || spinner.allocate(static_pool(), &pod()))
        })
        .collect();
    while runtime.running_calls() < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let reason = trap_reason(pack.allocate(static_pool(), &pod()).unwrap_err());
    assert_eq!(
        reason,
        "found no free plugin instance within its deadline of 50 ms (2 calls already running)"
    );
    assert!(started.elapsed() < Duration::from_millis(50) + SLACK);
    for call in busy {
        assert!(call.join().unwrap().is_err());
    }
    // Once they ended, a slot is free again.
    assert!(pack.allocate(static_pool(), &pod()).is_ok());
}

#[test]
fn an_eni_ops_flood_leaves_a_bounded_queue_and_a_bounded_audit() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let runtime = PluginRuntime::new()
        .unwrap()
        .with_audit_log(AuditLog::new(audit.clone()));
    // 50 ENIs: an assign to each is a distinct request (merging cannot fold them), so the
    // cap on queued requests is what binds.
    let mut finite = with_settings(eni_ops_spec("eni-flood"), &[("requests", "5000")]);
    finite.limits.host_calls = 10_000;
    finite
        .limits
        .deadline_ms
        .insert(Export::Plan, limits::MAX_DEADLINE.as_millis() as u64);
    let queued = runtime.load(&finite).unwrap().plan(ec2_pool(50)).unwrap();
    assert_eq!(queued.len(), limits::MAX_ENI_REQUESTS, "{queued:?}");
    // Every ENI's repeated assigns merged into one request each, within its slots.
    for request in &queued {
        match request {
            EniRequest::AssignIps { count, .. } => assert!(*count <= 49, "{request:?}"),
            other => panic!("only assigns fit before the cap: {other:?}"),
        }
    }
    let lines = audit_lines(&audit);
    assert_eq!(lines.len(), limits::MAX_RECORDED_CALLS + 1);
    let summary = &lines[limits::MAX_RECORDED_CALLS];
    assert_eq!(summary["outcome"], "truncated");
    assert!(summary["args"]["count"].as_u64().unwrap() > 4_000);

    // Endless: stopped at its budget, and nothing of it is carried out.
    let endless = runtime.load(&eni_ops_spec("eni-flood")).unwrap();
    let reason = trap_reason(endless.plan(ec2_pool(50)).unwrap_err());
    assert_eq!(reason, "made more than 1000 host calls in one call");
}

#[test]
fn oversized_lists_are_refused_before_they_are_rendered_or_copied_in_bulk() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let runtime = PluginRuntime::new()
        .unwrap()
        .with_audit_log(AuditLog::new(audit.clone()));
    let plugin = runtime.load(&eni_ops_spec("oversized-lists")).unwrap();
    assert_eq!(plugin.plan(ec2_pool(2)).unwrap(), vec![]);
    let lines = audit_lines(&audit);
    let refused: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["call"].as_str().unwrap(), l["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        refused,
        [
            (
                "eni-ops.release-ips",
                "16000 addresses in one request; at most 64"
            ),
            (
                "eni-ops.release-prefixes",
                "5000 prefixes in one request; at most 64"
            ),
        ]
    );
    // The audit entry counts the list and shows at most 64 of it.
    assert_eq!(lines[0]["args"]["count"], 16_000);
    assert_eq!(lines[0]["args"]["addresses"].as_array().unwrap().len(), 64);
    assert!(std::fs::metadata(&audit).unwrap().len() < 16 << 10);

    let groups = runtime
        .load(&with_settings(
            eni_ops_spec("oversized-lists"),
            &[("mode", "groups")],
        ))
        .unwrap();
    assert_eq!(groups.plan(ec2_pool(2)).unwrap(), vec![]);
    let lines = audit_lines(&audit);
    let results: Vec<&str> = lines[2..]
        .iter()
        .map(|l| l["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        [
            "17 security groups; an ENI takes at most 16",
            "security group id of 200 bytes is longer than any EC2 id (at most 64)"
        ]
    );

    let huge = runtime
        .load(&with_settings(
            eni_ops_spec("oversized-lists"),
            &[("mode", "huge")],
        ))
        .unwrap();
    let reason = trap_reason(huge.plan(ec2_pool(2)).unwrap_err());
    assert!(
        reason.starts_with("passed more data to the host in one call than it accepts"),
        "{reason}"
    );
}

#[test]
fn a_list_of_aliased_strings_is_stopped_before_the_host_copies_it() {
    let runtime = PluginRuntime::new().unwrap();
    let plugin = runtime.load(&eni_ops_spec("alias-flood")).unwrap();
    let started = Instant::now();
    let reason = trap_reason(plugin.plan(ec2_pool(2)).unwrap_err());
    assert!(
        reason.starts_with("passed more data to the host in one call than it accepts"),
        "{reason}"
    );
    assert!(started.elapsed() < Duration::from_millis(50) + SLACK);
}

#[test]
fn counts_of_u32_max_are_refused_and_nothing_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let runtime = PluginRuntime::new()
        .unwrap()
        .with_audit_log(AuditLog::new(audit.clone()));
    let plugin = runtime.load(&eni_ops_spec("max-counts")).unwrap();
    let mut pool = ec2_pool(2);
    pool.node.limits.ipv4_per_eni = 10;
    assert_eq!(plugin.plan(pool).unwrap(), vec![]);
    let lines = audit_lines(&audit);
    assert_eq!(lines.len(), 4 + 2 * 4, "every request is audited");
    for line in &lines {
        assert_eq!(line["outcome"], "refused", "{line}");
        let result = line["result"].as_str().unwrap();
        assert!(
            result.contains("at most 9 secondary addresses")
                || result.contains("not both")
                || result.contains("more do not fit"),
            "{result}"
        );
    }
}

#[test]
fn a_tagger_answering_too_much_is_refused_or_stopped() {
    let runtime = PluginRuntime::new().unwrap();
    let tagger = |mode: &str| {
        let mut spec = with_settings(
            spec("tag-flood", PluginKind::Tagger, &[]),
            &[("mode", mode)],
        );
        spec.tag_keys = (0..60).map(|n| format!("wasmcni.io/flood-{n}")).collect();
        // What stops `huge` is the hostcall-fuel bound, not time: a deadline a loaded machine
        // cannot reach first (it did once, at load average 20, with the default 50 ms).
        spec.limits.deadline_ms.insert(Export::Tags, 5_000);
        runtime.load(&spec).unwrap()
    };
    let request = EniTagRequest::default();
    let error = tagger("count").tags(&request, 3).unwrap_err();
    assert_eq!(
        error.to_string(),
        "plugin tag-flood refused: answer refused by the host: 51 tags plus the daemon's 3 exceed EC2's limit of 50"
    );
    let error = tagger("long").tags(&request, 3).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("keys must be 1 to 128 characters and values at most 256")
            || error
                .to_string()
                .contains("is outside the plugin's tag_keys scope"),
        "{error}"
    );
    let reason = trap_reason(tagger("huge").tags(&request, 3).unwrap_err());
    assert!(
        reason.starts_with("passed more data to the host in one call than it accepts"),
        "{reason}"
    );
}
