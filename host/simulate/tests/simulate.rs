//! Simulations of the built components (`wasmcni-plugin-build` writes them to
//! `target/plugins`) through the real daemon in virtual time.

use std::collections::BTreeMap;

use wasmcni_runtime::testing::component;
use wasmcni_simulate::trace::{Event, Op};
use wasmcni_simulate::{run_all, Builtin, Outcome, Scenario, Strategy, Trace};

fn strategy(name: &str, settings: &[(&str, &str)]) -> Strategy {
    let settings: BTreeMap<String, String> = settings
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Strategy::from_component(&component(name), &settings).expect("the component")
}

fn run(scenario: &Scenario, strategies: &[Strategy], trace: &Trace) -> Vec<Outcome> {
    run_all(scenario, strategies, trace)
        .into_iter()
        .map(|outcome| outcome.expect("the simulation ran"))
        .collect()
}

fn calls(outcome: &Outcome, action: &str) -> u32 {
    outcome.calls.get(action).map_or(0, |c| c.calls)
}

fn idle_mean(outcome: &Outcome) -> f64 {
    outcome
        .samples
        .iter()
        .map(|s| f64::from(s.idle()))
        .sum::<f64>()
        / outcome.samples.len() as f64
}

/// The churn trace of `benches/ec2_churn`, simulated: the same EC2 calls and idle addresses as
/// the benchmark measures through the shim, the kernel and the emulator over HTTP (its table
/// in BENCHMARKS.md: `vpc-warm-pool` 9 calls, 74.4 idle on average; `pack` about 490 calls,
/// about 48 idle), in a fraction of its minute.
#[test]
fn the_churn_trace_agrees_with_the_ec2_churn_benchmark() {
    let trace = Builtin::Churn.trace(1000, 0).expect("the trace");
    let outcomes = run(
        &Scenario::ec2_churn_bench(),
        &[
            strategy("vpc-warm-pool", &[]),
            strategy("pack", &[("WARM_IPS", "8")]),
        ],
        &trace,
    );
    let (vpc, pack) = (&outcomes[0], &outcomes[1]);
    for outcome in &outcomes {
        assert_eq!(outcome.pods_failed, 0, "{}", outcome.strategy);
        assert_eq!(outcome.add_waits_ms.len(), 1000, "{}", outcome.strategy);
        assert_eq!(outcome.del_failures, 0, "{}", outcome.strategy);
        // The simulated clock ran the trace's 46 s.
        assert!(outcome.simulated_ms >= trace.duration_ms(), "{outcome:?}");
        // Every pod left: nothing holds an address at the end.
        assert_eq!(outcome.samples.last().map(|s| s.pods), Some(0));
    }
    // VPC CNI's default grows by whole ENIs and never gives addresses back.
    assert_eq!(outcome_calls(vpc), 9, "{:?}", vpc.calls);
    for action in [
        "CreateNetworkInterface",
        "AttachNetworkInterface",
        "ModifyNetworkInterfaceAttribute",
    ] {
        assert_eq!(calls(vpc, action), 3, "{action}: {:?}", vpc.calls);
    }
    let vpc_idle = idle_mean(vpc);
    assert!(
        (70.0..=80.0).contains(&vpc_idle),
        "vpc-warm-pool idle {vpc_idle}"
    );
    assert_eq!(vpc.samples.iter().map(|s| s.enis).max(), Some(4));
    // pack keeps 8 warm: it assigns and releases addresses all along.
    let pack_calls = outcome_calls(pack);
    assert!((350..=650).contains(&pack_calls), "pack calls {pack_calls}");
    assert!(
        calls(pack, "AssignPrivateIpAddresses") > 100,
        "{:?}",
        pack.calls
    );
    assert!(
        calls(pack, "UnassignPrivateIpAddresses") > 100,
        "{:?}",
        pack.calls
    );
    let pack_idle = idle_mean(pack);
    assert!(
        (40.0..=60.0).contains(&pack_idle) && pack_idle < vpc_idle,
        "pack idle {pack_idle} (vpc-warm-pool {vpc_idle})"
    );
}

fn outcome_calls(outcome: &Outcome) -> u32 {
    outcome.total_calls()
}

/// ENIs age in the simulation's time: after a scale-up and its scale-down, the ENIs the
/// node grew are older than `MIN_ENI_AGE` when they empty, and VPC CNI's default gives them
/// back (before `attachTime`, every emulated ENI looked attached at the epoch).
#[test]
fn enis_age_in_virtual_time_and_empty_ones_are_given_back() {
    let trace = Builtin::ScaleUp.trace(220, 0).expect("the trace");
    let outcomes = run(
        &Scenario::default(),
        &[strategy("vpc-warm-pool", &[])],
        &trace,
    );
    let vpc = &outcomes[0];
    assert_eq!(vpc.pods_failed, 0);
    // Two waves of 110 pods and their scale-down, half an hour of simulated time.
    assert!(vpc.simulated_ms >= 1_500_000, "{}", vpc.simulated_ms);
    let peak = vpc.samples.iter().map(|s| s.enis).max().unwrap_or(0);
    assert!(peak >= 5, "110 pods need 5 ENIs of 29 addresses: {peak}");
    assert!(calls(vpc, "DetachNetworkInterface") > 0, "{:?}", vpc.calls);
    assert!(calls(vpc, "DeleteNetworkInterface") > 0, "{:?}", vpc.calls);
    let last = vpc.samples.last().expect("samples");
    assert!(
        last.enis < peak,
        "the node still has {} ENIs of its peak {peak} at the end",
        last.enis
    );
}

/// A strategy that floods `eni-ops` on every plan runs under the runtime's limits in the
/// simulator as it would on a node. Endless, every plan ends at the call's host-call budget
/// with nothing carried out, so the node never has an address to serve and the simulation
/// says so, naming it; bounded to 20 requests a plan (each carried out: an address on every
/// ENI, a new ENI, every secondary ENI deleted, round after round), the node never exceeds
/// its ENI limit and every pod is served.
#[test]
fn a_hostile_strategy_is_bounded_as_on_a_node() {
    let trace = Builtin::Steady.trace(60, 3).expect("the trace");
    let endless = run_all(&Scenario::default(), &[strategy("eni-flood", &[])], &trace);
    match &endless[0] {
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("eni-flood") && message.contains("not ready"),
                "{message}"
            );
        }
        Ok(outcome) => panic!("an endless flood readied the node: {outcome:?}"),
    }
    let outcomes = run(
        &Scenario::default(),
        &[strategy("eni-flood", &[("requests", "20")])],
        &trace,
    );
    let flood = &outcomes[0];
    assert_eq!(flood.pods_failed, 0, "{:?}", flood.last_add_error);
    let peak = flood.samples.iter().map(|s| s.enis).max().unwrap_or(0);
    assert!(peak <= 8, "an m5.4xlarge holds 8 ENIs: {peak}");
    assert!(
        calls(flood, "CreateNetworkInterface") > 0 && calls(flood, "DeleteNetworkInterface") > 0,
        "the bounded flood was carried out: {:?}",
        flood.calls
    );
}

/// An ADD that finds no free address waits for the plan; the wait is the simulation's time.
#[test]
fn a_burst_beyond_the_warm_pool_waits_for_ec2_in_virtual_time() {
    // 40 pods at once on a node whose pool starts with one ENI's worth, EC2 answering each
    // call after 200 ms.
    let events: Vec<Event> = (0..40)
        .map(|i| Event {
            t_ms: 1000,
            op: Op::Add,
            pod: format!("burst/pod-{i}"),
        })
        .collect();
    let trace = Trace::from_events(events, "burst").unwrap();
    let mut scenario = Scenario::default();
    scenario.faults.latency = std::time::Duration::from_millis(200);
    let outcomes = run(&scenario, &[strategy("pack", &[("WARM_IPS", "2")])], &trace);
    let pack = &outcomes[0];
    assert_eq!(pack.pods_failed, 0, "{:?}", pack.last_add_error);
    let slowest = *pack.add_waits_ms.last().expect("waits");
    assert!(
        slowest >= 200,
        "the last pods waited for at least one EC2 call of 200 ms: {:?}",
        pack.add_waits_ms
    );
    assert_eq!(pack.samples.last().map(|s| s.pods), Some(40));
}
