//! The sandbox holds on a real daemon: hostile policy plugins spinning in host calls cannot
//! stop a DEL, another pod's ADD, a configuration swap or SIGTERM, and the daemon's memory
//! stays within the bound docs/security.md states.

use std::time::{Duration, Instant};

use wasmcni_harness::node::TestNode;
use wasmcni_harness::plugin_entry;

use crate::support::{pod, pod_ip, wasmcni_only};

/// A `[policy]` section running `name` with `grants`, `limits` (more keys of the entry) and
/// `settings`.
fn policy(name: &str, grants: &str, limits: &str, settings: &str) -> String {
    format!(
        "\n[policy]\nplugins = [\"{name}\"]\n{}",
        plugin_entry(
            name,
            "policy",
            &format!("{limits}\n[plugins.grants]\n{grants}\n[plugins.config]\n{settings}")
        )
    )
}

fn send_signal(node: &TestNode, signal: &str) {
    let pid = node.daemon_pid().expect("the daemon runs");
    let status = std::process::Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_for_log(node: &TestNode, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.daemon_log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in:\n{}",
            node.daemon_log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_plugin_spinning_in_host_calls_stops_neither_a_del_an_add_a_reload_nor_sigterm() {
    let mut node = TestNode::new("10.88.0.0/24");
    let base = std::fs::read_to_string(node.config_path()).unwrap();
    node.start_daemon();
    let chain = wasmcni_only(&node, "1.0.0");
    // A pod attached before the hostile policy arrives.
    let earlier = pod("earlier");
    let earlier_result = node.add(&chain, &earlier.attachment).expect("ADD");

    // The policy spins in `log` host calls on every ADD for up to 10 s (its configured
    // deadline), each call passing 60 kB: fuel alone would never stop it.
    let spinning = format!(
        "{base}{}",
        policy(
            "log-flood",
            "log = {}",
            "host_calls = 1000000\ndeadline_ms = { evaluate = 10000 }",
            "message_bytes = \"60000\"",
        )
    );
    std::fs::write(node.config_path(), &spinning).unwrap();
    send_signal(&node, "HUP");
    wait_for_log(&node, "configuration reloaded");
    let (_, peak_before) = node.daemon_memory_kib();

    let stuck = pod("stuck");
    let other = pod("other");
    std::thread::scope(|scope| {
        let add = scope.spawn(|| {
            let started = Instant::now();
            (node.add(&chain, &stuck.attachment), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));

        // While it spins: a DEL of the earlier pod completes at once (the hook allows DEL)...
        let started = Instant::now();
        node.del(&chain, &earlier.attachment, Some(&earlier_result))
            .expect("DEL during the spin");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "DEL took {:?}",
            started.elapsed()
        );
        // ...a configuration without the policy is swapped in, and another pod's ADD goes
        // through it while the first ADD still spins with the set it started with.
        std::fs::write(node.config_path(), &base).unwrap();
        send_signal(&node, "HUP");
        let deadline = Instant::now() + Duration::from_secs(5);
        while node
            .daemon_log_text()
            .matches("configuration reloaded")
            .count()
            < 2
        {
            assert!(Instant::now() < deadline, "{}", node.daemon_log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = Instant::now();
        let result = node
            .add(&chain, &other.attachment)
            .expect("ADD through the new set");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "ADD took {:?}",
            started.elapsed()
        );
        assert!(pod_ip(&result).starts_with("10.88.0."));
        // Memory: the spinning call holds one instance (at most 16 MiB of linear memory) and
        // one host call's arguments (64 KiB); nothing else grew with it.
        let (_, peak_during) = node.daemon_memory_kib();
        assert!(
            peak_during.saturating_sub(peak_before) < 24 << 10,
            "peak RSS grew by {} KiB during the spin",
            peak_during.saturating_sub(peak_before)
        );

        // SIGTERM while it still spins: the daemon is gone within a second.
        assert!(!add.is_finished(), "the spinning ADD ended early");
        let stopping = Instant::now();
        node.stop_daemon("TERM");
        let stopped_in = stopping.elapsed();
        assert!(
            stopped_in < Duration::from_secs(1),
            "SIGTERM took {stopped_in:?}:\n{}",
            node.daemon_log_text()
        );
        let (result, took) = add.join().unwrap();
        assert!(result.is_err(), "the spinning ADD cannot have succeeded");
        assert!(took < Duration::from_secs(5), "{took:?}");
    });

    // The next start rolls the cut-short ADD back: the pod holds no address, the other does.
    node.start_daemon();
    let pool = node.inspect("pool", true);
    let pool: serde_json::Value = serde_json::from_str(&pool).unwrap();
    let holders: Vec<&str> = pool["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["containerId"].as_str().unwrap())
        .collect();
    assert_eq!(holders, [other.attachment.container_id.as_str()], "{pool}");
}

#[test]
fn the_config_get_attack_fails_adds_and_checks_closed_and_dels_still_clean_up() {
    // The reported attack: a policy with no grant at all calls `config.get` with an 8 MiB key
    // in a loop. It once hung ADDs for 120 s and made DEL answer code 11.
    let mut node = TestNode::new("10.88.0.0/24");
    let base = std::fs::read_to_string(node.config_path()).unwrap();
    node.start_daemon();
    let chain = wasmcni_only(&node, "1.0.0");
    let victim = pod("victim");
    let victim_result = node.add(&chain, &victim.attachment).expect("ADD");
    std::fs::write(
        node.config_path(),
        // A generous deadline, so that what stops each call is the key's size, at once:
        // building the 8 MiB key in the guest costs tens of milliseconds on a busy machine.
        format!(
            "{base}{}",
            policy("config-flood", "", "deadline_ms = { evaluate = 2000 }", "")
        ),
    )
    .unwrap();
    send_signal(&node, "HUP");
    wait_for_log(&node, "configuration reloaded");
    let (_, peak_before) = node.daemon_memory_kib();

    for n in 0..10 {
        let p = pod(&format!("refused{n}"));
        let started = Instant::now();
        let failure = node.add(&chain, &p.attachment).expect_err("fails closed");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let error: serde_json::Value = serde_json::from_str(&failure.stdout).unwrap();
        let msg = error["msg"].as_str().unwrap();
        assert!(
            msg.contains("plugin config-flood failed in evaluate(add): passed more data to the host in one call than it accepts")
                && msg.contains("fails closed"),
            "{msg}"
        );
    }
    let failure = node
        .check(&chain, &victim.attachment, &victim_result)
        .expect_err("CHECK fails closed");
    assert!(failure.stdout.contains("evaluate(check)"), "{failure:?}");
    // DEL fails open: the pod is cleaned up whatever the hook does.
    let started = Instant::now();
    node.del(&chain, &victim.attachment, Some(&victim_result))
        .expect("DEL succeeds");
    assert!(started.elapsed() < Duration::from_secs(2));
    let pool = node.inspect("pool", true);
    assert!(pool.contains("\"allocations\": []"), "{pool}");
    // Ten 8 MiB keys later the daemon's peak memory grew by less than one instance's linear
    // memory (16 MiB) and a host call's 64 KiB: the key was never copied into the host.
    let (_, peak_after) = node.daemon_memory_kib();
    assert!(
        peak_after.saturating_sub(peak_before) < 20 << 10,
        "peak RSS grew by {} KiB",
        peak_after.saturating_sub(peak_before)
    );
    let metrics = std::process::Command::new(wasmcni_harness::bin_dir().join("wasmcni-host"))
        .args(["inspect", "metrics", "--socket"])
        .arg(node.ops_socket())
        .output()
        .expect("inspect metrics");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains(
            "wasmcni_plugin_traps_total{plugin=\"config-flood\",call=\"evaluate(add)\"} 10"
        ),
        "{metrics}"
    );
}
