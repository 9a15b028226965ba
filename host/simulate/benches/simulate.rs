//! How long `simulate` takes: each built-in trace of 1000 pods against `vpc-warm-pool` (the
//! baseline) and `pack` with `WARM_IPS=8`, two nodes at once as `wasmcni-host simulate` runs
//! them, several times; prints the real time of each run (median, min, max) beside the
//! simulated time and the EC2 calls, so a change in the figures shows with a change in speed.
//! A measurement: it asserts nothing about time.
//!
//! Run (the plugins built): `cargo bench -p wasmcni-simulate --bench simulate`
//! (`-- --iterations N --pods N`).

use std::collections::BTreeMap;
use std::time::Instant;

use wasmcni_runtime::testing::component;
use wasmcni_simulate::{run_all, Builtin, Scenario, Strategy};

fn arg<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn main() {
    let iterations: usize = arg("--iterations").unwrap_or(5).max(1);
    let pods: usize = arg("--pods").unwrap_or(1000);
    let strategy = |name: &str, settings: &[(&str, &str)]| {
        let settings: BTreeMap<String, String> = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Strategy::from_component(&component(name), &settings).expect("the component")
    };
    let strategies = [
        strategy("vpc-warm-pool", &[]),
        strategy("pack", &[("WARM_IPS", "8")]),
    ];
    let churn = Scenario::ec2_churn_bench();
    println!(
        "{pods} pods against vpc-warm-pool and pack (WARM_IPS=8), two nodes at once, {iterations} runs each"
    );
    println!(
        "\n| trace | simulated | wall median ms | min | max | EC2 calls (vpc-warm-pool / pack) |"
    );
    println!("|---|---|---|---|---|---|");
    for builtin in Builtin::ALL {
        let trace = builtin.trace(pods, 0).expect("the trace");
        let scenario = if builtin == Builtin::Churn {
            churn.clone()
        } else {
            Scenario::default()
        };
        let mut walls = Vec::new();
        let mut calls = Vec::new();
        let mut simulated = 0;
        for _ in 0..iterations {
            let started = Instant::now();
            let outcomes: Vec<_> = run_all(&scenario, &strategies, &trace)
                .into_iter()
                .map(|o| o.expect("the simulation ran"))
                .collect();
            walls.push(started.elapsed().as_secs_f64() * 1e3);
            simulated = outcomes[0].simulated_ms;
            calls.push(format!(
                "{} / {}",
                outcomes[0].total_calls(),
                outcomes[1].total_calls()
            ));
        }
        walls.sort_by(f64::total_cmp);
        calls.sort();
        calls.dedup();
        println!(
            "| {} | {:.0} s | {:.0} | {:.0} | {:.0} | {} |",
            builtin.name(),
            simulated as f64 / 1e3,
            walls[walls.len() / 2],
            walls[0],
            walls[walls.len() - 1],
            calls.join(", ")
        );
    }
}
