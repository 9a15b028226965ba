//! The crash campaign of issue 15: 1000 SIGKILLs of the daemon at random moments during
//! concurrent ADD/DEL bursts of 50 workers, against the static provider and against the EC2
//! emulator in hypervisor mode with 30 % of calls throttled and 10 % failing with a server
//! error; the invariants (`wasmcni_harness::campaign`) are checked every 10 kills and at the
//! end. A measurement of robustness, not a test: it prints what it found and exits 1 if any
//! invariant was violated. Not part of CI's time budget (CI runs 30 kills:
//! `tests/it/crash.rs`).
//!
//! Run (root, plugins built): `cargo bench -p wasmcni-harness --bench crash_campaign`
//! (`-- --kills N --workers N --only static|ec2`).

use std::process::ExitCode;
use std::time::Duration;

use ec2_emulator::{FaultConfig, InjectedError};
use wasmcni_harness::campaign::{self, Campaign, Outcome, Target};
use wasmcni_harness::ec2::Ec2Node;
use wasmcni_harness::node::TestNode;

/// The EC2 node: besides the node's invariants, no ENI leaked and every pod's address is
/// assigned to one of the node's attached ENIs.
struct Ec2Target {
    ec2: Ec2Node,
}

impl Target for Ec2Target {
    fn node(&self) -> &TestNode {
        &self.ec2.node
    }

    fn extra_violations(&self) -> Vec<String> {
        let mut found = Vec::new();
        // An ENI created but not attached when the daemon died is deleted by its next start;
        // the warm pool may be between a create and its attach right now, so give it a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let leaked = self.ec2.unattached_enis();
            if leaked.is_empty() {
                break;
            }
            if std::time::Instant::now() >= deadline {
                found.push(format!("ENIs created and not attached: {leaked:?}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let assigned: std::collections::BTreeSet<String> = self
            .ec2
            .attached_enis()
            .iter()
            .flat_map(|(device, ..)| self.ec2.eni_addresses(*device))
            .map(|a| a.to_string())
            .collect();
        let pool: serde_json::Value =
            serde_json::from_str(&self.ec2.node.inspect("pool", true)).unwrap_or_default();
        for allocation in pool["allocations"].as_array().into_iter().flatten() {
            let ip = allocation["ip"].as_str().unwrap_or("?");
            if !assigned.contains(ip) {
                found.push(format!(
                    "{ip} is held by a pod but not assigned to the node in EC2"
                ));
            }
        }
        found
    }
}

fn report(label: &str, campaign: &Campaign, outcome: &Outcome) {
    println!(
        "| {label} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
        outcome.kills,
        campaign.workers,
        outcome.operations,
        outcome.failed_adds,
        outcome.checks,
        outcome.attached_at_end,
        outcome.violations.len(),
        outcome.wall.as_secs_f64()
    );
    for violation in outcome.violations.iter().take(20) {
        println!("  violation: {violation}");
    }
}

fn main() -> ExitCode {
    let kills: usize = wasmcni_harness::bench_arg("--kills").unwrap_or(1000);
    let workers: usize = wasmcni_harness::bench_arg("--workers").unwrap_or(50);
    let only: Option<String> = wasmcni_harness::bench_arg("--only");
    let campaign = Campaign {
        kills,
        workers,
        pods_per_worker: 2,
        check_every: 10,
        seed: 0x5eed_c0ff_ee15_0015,
        between_kills_ms: (20, 300),
    };
    println!(
        "\n| target | kills | workers | CNI operations (DEL retries included) | ADDs failed (kills, EC2 faults) | checks | pods attached at the end | invariant violations | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut violations = 0;
    if only.as_deref().is_none_or(|o| o == "static") {
        // Room for every pod (100 at 50 workers) and the cooldown-free static pool.
        let mut node = TestNode::new("10.88.0.0/24");
        node.start_daemon();
        let chain = wasmcni_harness::wasmcni_only(&node, "1.1.0");
        let outcome = campaign::run(&node, &chain, &campaign);
        report("static provider", &campaign, &outcome);
        violations += outcome.violations.len();
    }
    if only.as_deref().is_none_or(|o| o == "ec2") {
        let ec2 = Ec2Node::start("m5.4xlarge", |s| {
            s.with_faults(FaultConfig {
                throttle_rate: 0.3,
                error_rate: 0.1,
                error_kind: InjectedError::InternalError,
                ..FaultConfig::default()
            })
        });
        // The reference strategy (VPC CNI's defaults), a short cooldown so that DELeted
        // addresses come back within the campaign.
        ec2.node.write_config(&ec2.config(
            "reconcile_interval_ms = 500\nip_cooldown_ms = 2000\nadd_wait_ms = 30000\n",
            &wasmcni_harness::allocator_plugin_config(
                "vpc-warm-pool",
                &["pool-view", "eni-ops", "log"],
            ),
        ));
        let mut ec2 = ec2;
        ec2.node.start_daemon();
        let chain = wasmcni_harness::wasmcni_only(&ec2.node, "1.1.0");
        let ready = std::time::Instant::now() + Duration::from_secs(60);
        while ec2.node.status(&chain).is_err() {
            assert!(
                std::time::Instant::now() < ready,
                "the EC2 node never became ready: {}",
                ec2.node.daemon_log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let target = Ec2Target { ec2 };
        let outcome = campaign::run(&target, &chain, &campaign);
        report(
            "EC2 emulator (hypervisor mode; 30 % throttled, 10 % server errors)",
            &campaign,
            &outcome,
        );
        violations += outcome.violations.len();
    }
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
