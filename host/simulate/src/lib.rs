//! `wasmcni-host simulate`: how does an allocation strategy behave against VPC CNI's on a
//! given pod churn — without root, namespaces or wall time.
//!
//! The principle: **run the product, not a model of it.** Each strategy gets a node of its own
//! ([`node`]): the real daemon (`wasmcni_daemon::server::start`: handler, datastore, plugin
//! runtime with its grants, limits and audit log), the real warm-pool reconciler and
//! leaked-ENI collector, and the real EC2 provider and SDK clients, with EC2 and IMDS answered
//! in process by the EC2 model (`wasmcni_ec2::in_process`) and the node's kernel by the
//! recording fake data path. It all runs on a current-thread tokio runtime whose clock is
//! paused, so time jumps to the next timer whenever every task waits: a trace of hours takes
//! the CPU time of its work, and EC2's latency, throttling and the daemon's cooldowns,
//! periods and ENI ages all happen in the simulation's time ([`wasmcni_clock`]).
//!
//! [`trace`] reads and builds the pod churn; [`strategy`] says what each node runs;
//! [`report`] turns what the nodes saw into a table, JSON and an SVG plot.

pub mod node;
pub mod report;
pub mod sample;
pub mod strategy;
pub mod trace;

use std::collections::BTreeMap;
use std::time::Duration;

pub use node::Outcome;
pub use strategy::{Strategy, BASELINE};
pub use trace::{Builtin, Trace};
use wasmcni_ec2_model::FaultConfig;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A strategy could not be set up.
    #[error("strategy {strategy}: {message}")]
    Strategy {
        /// The strategy as given.
        strategy: String,
        /// What is wrong.
        message: String,
    },
    /// The node's configuration is not one the daemon accepts.
    #[error(transparent)]
    Config(#[from] wasmcni_config::ConfigError),
    /// The scenario is not one the EC2 model can build.
    #[error("scenario: {0}")]
    Scenario(String),
    /// The simulated node did not start.
    #[error("{strategy}: the node did not start: {message}")]
    Start {
        /// The strategy's label.
        strategy: String,
        /// Why.
        message: String,
    },
    /// The state directory or the runtime could not be made.
    #[error("{0}")]
    Io(String),
}

/// The node and EC2 every strategy is simulated on.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The node's instance type (its ENI and address limits come from the model's table).
    pub instance_type: String,
    /// The EC2 model's seed (ids, MACs, which free address EC2 picks, injected faults).
    pub seed: u64,
    /// EC2's latency, throttling, error rate and IMDS lag.
    pub faults: FaultConfig,
    /// `[provider.ec2]` settings of the node (`reconcile_interval_ms`, `ip_cooldown_ms`, …),
    /// over the cluster configuration's, if one is given.
    pub ec2_settings: toml::Table,
    /// The cluster configuration strategies were taken from: its `[provider.ec2]`, `[cluster]`
    /// and `[registry]` apply to every node (`[trust]` does not: approvals are not checked).
    pub cluster_config: Option<toml::Table>,
    /// How often the node is sampled (0: about 2000 samples over the trace).
    pub sample_every: Duration,
}

impl Default for Scenario {
    /// The EC2 emulator's default account and seed (a VPC 10.0.0.0/16, the node in
    /// 10.0.0.0/20) with the node an m5.4xlarge (8 ENIs of 30 addresses, as
    /// `benches/ec2_churn`), and EC2 answering at once.
    fn default() -> Self {
        Scenario {
            instance_type: "m5.4xlarge".into(),
            seed: 1,
            faults: FaultConfig::default(),
            ec2_settings: toml::Table::new(),
            cluster_config: None,
            sample_every: Duration::ZERO,
        }
    }
}

impl Scenario {
    /// The default scenario with `benches/ec2_churn`'s node settings: a reconciler pass every
    /// 500 ms, a 2 s cooldown, ADDs waiting up to 30 s (shortened so its real run takes a
    /// minute), to compare with it.
    pub fn ec2_churn_bench() -> Scenario {
        let mut ec2_settings = toml::Table::new();
        for (key, value) in [
            ("reconcile_interval_ms", 500),
            ("ip_cooldown_ms", 2000),
            ("add_wait_ms", 30_000),
        ] {
            ec2_settings.insert(key.into(), toml::Value::Integer(value));
        }
        Scenario {
            ec2_settings,
            ..Scenario::default()
        }
    }
}

/// Parses `KEY=VALUE` as a TOML value (an integer, float, boolean or quoted string), or as a
/// bare string when it is none of them.
pub fn setting(text: &str) -> Result<(String, toml::Value), SimError> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(SimError::Scenario(format!("{text:?} is not KEY=VALUE")));
    };
    let key = key.trim();
    let value = value.trim();
    let parsed: Result<BTreeMap<String, toml::Value>, _> = toml::from_str(&format!("v = {value}"));
    let value = match parsed.ok().and_then(|mut table| table.remove("v")) {
        Some(value) => value,
        None => toml::Value::String(value.to_owned()),
    };
    Ok((key.to_owned(), value))
}

/// Simulates every strategy on `scenario` over `trace`, each on a node of its own, two at a
/// time (one per core: each node is one thread). Outcomes come back in `strategies`' order.
pub fn run_all(
    scenario: &Scenario,
    strategies: &[Strategy],
    trace: &Trace,
) -> Vec<Result<Outcome, SimError>> {
    let parallel = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(1);
    let mut outcomes: Vec<Option<Result<Outcome, SimError>>> =
        strategies.iter().map(|_| None).collect();
    for (chunk, slots) in strategies
        .chunks(parallel)
        .zip(outcomes.chunks_mut(parallel))
    {
        std::thread::scope(|scope| {
            let running: Vec<_> = chunk
                .iter()
                .map(|strategy| scope.spawn(|| node::run(scenario, strategy, trace)))
                .collect();
            for (slot, thread) in slots.iter_mut().zip(running) {
                *slot = Some(thread.join().unwrap_or_else(|_| {
                    Err(SimError::Io(
                        "the simulation's thread panicked (a bug in wasmcni)".into(),
                    ))
                }));
            }
        });
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(SimError::Io("not run".into()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_toml_values_or_strings() {
        assert_eq!(
            setting("reconcile_interval_ms=500").unwrap(),
            ("reconcile_interval_ms".into(), toml::Value::Integer(500))
        );
        assert_eq!(
            setting("prefix_fallback = false").unwrap(),
            ("prefix_fallback".into(), toml::Value::Boolean(false))
        );
        assert_eq!(
            setting("ip_family=ipv4").unwrap(),
            ("ip_family".into(), toml::Value::String("ipv4".into()))
        );
        assert!(setting("no-equals").is_err());
    }
}
