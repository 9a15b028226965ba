//! The daemon's Prometheus metrics (prometheus-client, OpenMetrics text). One registry per
//! process; every label set is bounded: CNI verbs and results, ADD phases, pool states, EC2
//! actions the provider calls and three outcomes, plugin names from the configuration with
//! their calls and outcomes, reconciler results.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A CNI verb and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbResult {
    /// ADD, DEL, CHECK, GC, STATUS, VERSION.
    pub verb: String,
    /// `ok` or `error`.
    pub result: String,
}

/// A CNI verb.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    /// ADD, DEL, CHECK, GC, STATUS, VERSION.
    pub verb: String,
}

/// A phase of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// ADD, DEL, CHECK, ….
    pub verb: String,
    /// `socket` (reading the request from the shim), `allocate` (ADD: the allocator, plugin
    /// or built-in), `pool_wait` (ADD: an empty pool growing), `policy` (policy hooks),
    /// `datapath` (netlink), `datastore` (commit or release, and fsync).
    pub phase: String,
}

/// A state of pool addresses.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `total`, `assigned` (held by pods), `cooling`, `free`.
    pub state: String,
}

/// An EC2 action and the outcome of one attempt.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Ec2Label {
    /// The action, e.g. `AssignPrivateIpAddresses`.
    pub action: String,
    /// `ok`, `throttled` (`RequestLimitExceeded`) or `error`.
    pub outcome: String,
}

/// A plugin call (or a privileged request it made) and its outcome, as the audit log records it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    /// Plugin name from the configuration.
    pub plugin: String,
    /// `allocate`, `plan`, `tags`, `evaluate:add|del|check`, `eni-ops`, …
    pub call: String,
    /// `ok`, `error`, `refused`, `accepted`, …
    pub outcome: String,
}

/// A plugin and one of its calls.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCallLabel {
    /// Plugin name from the configuration.
    pub plugin: String,
    /// `allocate`, `plan`, `tags`, `evaluate`.
    pub call: String,
}

/// An EC2 action and the error code it answered.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Ec2ErrorLabel {
    /// The action.
    pub action: String,
    /// EC2's error code (a fixed vocabulary), or the SDK's kind of failure.
    pub code: String,
}

/// A policy hook's verdict.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    /// Plugin name from the configuration.
    pub plugin: String,
    /// `add`, `del` or `check`.
    pub hook: String,
    /// `allow`, `deny` or `error` (the hook failed; its failure policy decided).
    pub verdict: String,
}

/// How a reconciler pass ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabel {
    /// `settled` (nothing to do), `changed` (requests carried out), `failed`.
    pub result: String,
}

type Timing<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 100 µs … ~3.3 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    /// `wasmcni_cni_requests_total{verb,result}`.
    pub cni_requests: Family<VerbResult, Counter>,
    /// `wasmcni_cni_request_duration_seconds{verb}`.
    pub cni_duration: Timing<VerbLabel>,
    /// `wasmcni_request_phase_duration_seconds{phase}`.
    pub add_phase: Timing<PhaseLabel>,
    /// `wasmcni_pool_addresses{state}`.
    pub pool_addresses: Family<StateLabel, Gauge>,
    /// `wasmcni_enis`: ENIs attached (EC2 provider).
    pub enis: Gauge,
    /// `wasmcni_max_pods`.
    pub max_pods: Gauge,
    /// `wasmcni_ec2_calls_total{action,outcome}`: every attempt, retries included.
    pub ec2_calls: Family<Ec2Label, Counter>,
    /// `wasmcni_ec2_errors_total{action,code}`.
    pub ec2_errors: Family<Ec2ErrorLabel, Counter>,
    /// `wasmcni_plugin_calls_total{plugin,call,outcome}`.
    pub plugin_calls: Family<PluginLabel, Counter>,
    /// `wasmcni_plugin_fuel_consumed_total{plugin,call}`.
    pub plugin_fuel: Family<PluginCallLabel, Counter>,
    /// `wasmcni_plugin_traps_total{plugin,call}`: traps, fuel or memory exhausted.
    pub plugin_traps: Family<PluginCallLabel, Counter>,
    /// `wasmcni_plugin_host_calls_total{plugin,call}`: host functions plugins called.
    pub plugin_host_calls: Family<PluginCallLabel, Counter>,
    /// `wasmcni_policy_verdicts_total{plugin,hook,verdict}`.
    pub policy_verdicts: Family<VerdictLabel, Counter>,
    /// `wasmcni_reconciler_passes_total{result}`.
    pub reconciler_passes: Family<PassLabel, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let cni_requests = Family::<VerbResult, Counter>::default();
        registry.register(
            "wasmcni_cni_requests",
            "CNI requests the daemon answered, by verb and result",
            cni_requests.clone(),
        );
        let cni_duration: Timing<VerbLabel> = Family::new_with_constructor(latency_buckets);
        registry.register(
            "wasmcni_cni_request_duration_seconds",
            "Time the daemon spent on a CNI request, by verb",
            cni_duration.clone(),
        );
        let add_phase: Timing<PhaseLabel> = Family::new_with_constructor(latency_buckets);
        registry.register(
            "wasmcni_request_phase_duration_seconds",
            "Time a request spent in each phase, by verb",
            add_phase.clone(),
        );
        let pool_addresses = Family::<StateLabel, Gauge>::default();
        registry.register(
            "wasmcni_pool_addresses",
            "Pod addresses of the pool by state (total, assigned, cooling, draining, free)",
            pool_addresses.clone(),
        );
        let enis = Gauge::default();
        registry.register("wasmcni_enis", "ENIs attached to the node", enis.clone());
        let max_pods = Gauge::default();
        registry.register(
            "wasmcni_max_pods",
            "Pods the node may run (0 with the static provider)",
            max_pods.clone(),
        );
        let ec2_calls = Family::<Ec2Label, Counter>::default();
        registry.register(
            "wasmcni_ec2_calls",
            "EC2 API attempts by action and outcome (retries included)",
            ec2_calls.clone(),
        );
        let ec2_errors = Family::<Ec2ErrorLabel, Counter>::default();
        registry.register(
            "wasmcni_ec2_errors",
            "EC2 API attempts that failed, by action and error code",
            ec2_errors.clone(),
        );
        let plugin_fuel = Family::<PluginCallLabel, Counter>::default();
        registry.register(
            "wasmcni_plugin_fuel_consumed",
            "Fuel (about one unit per instruction) plugins consumed, by plugin and call",
            plugin_fuel.clone(),
        );
        let plugin_traps = Family::<PluginCallLabel, Counter>::default();
        registry.register(
            "wasmcni_plugin_traps",
            "Plugin calls that trapped (including fuel, memory or stack exhausted)",
            plugin_traps.clone(),
        );
        let plugin_host_calls = Family::<PluginCallLabel, Counter>::default();
        registry.register(
            "wasmcni_plugin_host_calls",
            "Host functions plugins called (each charged against the call's budget), by plugin and call",
            plugin_host_calls.clone(),
        );
        let plugin_calls = Family::<PluginLabel, Counter>::default();
        registry.register(
            "wasmcni_plugin_calls",
            "Plugin calls and the privileged requests they made, by outcome (as audited)",
            plugin_calls.clone(),
        );
        let policy_verdicts = Family::<VerdictLabel, Counter>::default();
        registry.register(
            "wasmcni_policy_verdicts",
            "Policy hook answers by plugin, hook and verdict",
            policy_verdicts.clone(),
        );
        let reconciler_passes = Family::<PassLabel, Counter>::default();
        registry.register(
            "wasmcni_reconciler_passes",
            "Warm-pool reconciler passes by result",
            reconciler_passes.clone(),
        );
        Metrics {
            registry,
            cni_requests,
            cni_duration,
            add_phase,
            pool_addresses,
            enis,
            max_pods,
            ec2_calls,
            ec2_errors,
            plugin_calls,
            plugin_fuel,
            plugin_traps,
            plugin_host_calls,
            policy_verdicts,
            reconciler_passes,
        }
    }

    /// The process's metrics.
    pub fn global() -> &'static Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(Metrics::new)
    }

    /// Records a phase of a request.
    pub fn phase(&self, verb: &str, phase: &str, took: Duration) {
        self.add_phase
            .get_or_create(&PhaseLabel {
                verb: verb.to_owned(),
                phase: phase.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records a failed EC2 attempt's code.
    pub fn ec2_error(&self, action: &str, code: &str) {
        self.ec2_errors
            .get_or_create(&Ec2ErrorLabel {
                action: action.to_owned(),
                code: code.to_owned(),
            })
            .inc();
    }

    /// Records one EC2 attempt.
    pub fn ec2_attempt(&self, action: &str, outcome: &str) {
        self.ec2_calls
            .get_or_create(&Ec2Label {
                action: action.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_declared_with_its_help() {
        let metrics = Metrics::new();
        // A family with no sample prints nothing, so every one is touched first.
        let verb = VerbLabel { verb: "ADD".into() };
        metrics
            .cni_requests
            .get_or_create(&VerbResult {
                verb: "ADD".into(),
                result: "ok".into(),
            })
            .inc();
        metrics.cni_duration.get_or_create(&verb).observe(0.002);
        metrics.phase("ADD", "datapath", Duration::from_millis(3));
        metrics
            .pool_addresses
            .get_or_create(&StateLabel {
                state: "free".into(),
            })
            .set(5);
        metrics.enis.set(2);
        metrics.max_pods.set(29);
        metrics.ec2_attempt("AssignPrivateIpAddresses", "throttled");
        metrics.ec2_error("AssignPrivateIpAddresses", "RequestLimitExceeded");
        let call = PluginCallLabel {
            plugin: "pack".into(),
            call: "allocate".into(),
        };
        metrics
            .plugin_calls
            .get_or_create(&PluginLabel {
                plugin: "pack".into(),
                call: "allocate".into(),
                outcome: "ok".into(),
            })
            .inc();
        metrics.plugin_fuel.get_or_create(&call).inc_by(1200);
        metrics.plugin_traps.get_or_create(&call).inc();
        metrics.plugin_host_calls.get_or_create(&call).inc_by(8);
        metrics
            .policy_verdicts
            .get_or_create(&VerdictLabel {
                plugin: "guard".into(),
                hook: "add".into(),
                verdict: "deny".into(),
            })
            .inc();
        metrics
            .reconciler_passes
            .get_or_create(&PassLabel {
                result: "settled".into(),
            })
            .inc();
        let text = metrics.encode();
        for name in [
            "wasmcni_cni_requests",
            "wasmcni_cni_request_duration_seconds",
            "wasmcni_request_phase_duration_seconds",
            "wasmcni_pool_addresses",
            "wasmcni_enis",
            "wasmcni_max_pods",
            "wasmcni_ec2_calls",
            "wasmcni_ec2_errors",
            "wasmcni_plugin_calls",
            "wasmcni_plugin_fuel_consumed",
            "wasmcni_plugin_traps",
            "wasmcni_plugin_host_calls",
            "wasmcni_policy_verdicts",
            "wasmcni_reconciler_passes",
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} in {text}"
            );
        }
        assert!(
            text.contains(
                "wasmcni_ec2_calls_total{action=\"AssignPrivateIpAddresses\",outcome=\"throttled\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "wasmcni_request_phase_duration_seconds_count{verb=\"ADD\",phase=\"datapath\"} 1"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
