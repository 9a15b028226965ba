//! What a simulation reports: per strategy, EC2 calls (by action, per pod, the mutating
//! ones), idle addresses over time, ADD waits, /28 fragmentation and peak ENIs — as a
//! Markdown table, JSON for CI gates, and an SVG plot of pods, assigned and idle addresses
//! over time with the strategies overlaid. The report names the baseline (the first outcome,
//! unless its run failed).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::node::{Calls, Outcome};
use crate::sample::Sample;

/// The figures of one strategy.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The strategy's label.
    pub strategy: String,
    /// Pods the trace added.
    pub pods: usize,
    /// EC2 calls during the trace.
    pub ec2_calls: u32,
    /// Of them, those that change something (all but `Describe*`).
    pub ec2_mutating: u32,
    /// Of them, those EC2 refused (throttling included).
    pub ec2_failed: u32,
    /// EC2 calls per pod added.
    pub ec2_calls_per_pod: f64,
    /// Idle addresses (assigned to the node, no pod on them), mean over time.
    pub idle_mean: f64,
    /// Idle addresses, most at once.
    pub idle_max: u32,
    /// Addresses assigned to the node, mean over time.
    pub assigned_mean: f64,
    /// ADD waits (ms of the simulation's time, from the trace's time to the answer).
    pub add_wait_p50_ms: u64,
    /// 90th percentile.
    pub add_wait_p90_ms: u64,
    /// 99th percentile.
    pub add_wait_p99_ms: u64,
    /// The longest.
    pub add_wait_max_ms: u64,
    /// ADDs refused and retried.
    pub add_retries: u32,
    /// Pods that never got an address.
    pub pods_failed: u32,
    /// DELs the daemon refused.
    pub del_failures: u32,
    /// The subnet's free /28 blocks, fewest at once.
    pub free_blocks_min: u32,
    /// The share of the subnet's free addresses outside any whole free /28, most at once.
    pub fragmentation_max: f64,
    /// ENIs attached to the node, most at once.
    pub peak_enis: u32,
    /// EC2 calls by action during the trace.
    pub calls_by_action: BTreeMap<String, Calls>,
    /// The simulation's time the trace took, seconds.
    pub simulated_s: f64,
    /// Real time of the run, milliseconds.
    pub wall_ms: f64,
    /// Of it, the node's start (the plugin's compilation included).
    pub start_wall_ms: f64,
}

impl Summary {
    /// The figures of `outcome`.
    pub fn of(outcome: &Outcome, pods: usize) -> Summary {
        let samples = &outcome.samples;
        let mean = |f: fn(&Sample) -> u32| {
            if samples.is_empty() {
                0.0
            } else {
                samples.iter().map(|s| f64::from(f(s))).sum::<f64>() / samples.len() as f64
            }
        };
        let waits = &outcome.add_waits_ms;
        let at = |q: f64| {
            if waits.is_empty() {
                0
            } else {
                waits[((waits.len() - 1) as f64 * q).round() as usize]
            }
        };
        let calls = outcome.total_calls();
        Summary {
            strategy: outcome.strategy.clone(),
            pods,
            ec2_calls: calls,
            ec2_mutating: outcome.mutating_calls(),
            ec2_failed: outcome.calls.values().map(|c| c.failed).sum(),
            ec2_calls_per_pod: if pods == 0 {
                0.0
            } else {
                f64::from(calls) / pods as f64
            },
            idle_mean: mean(Sample::idle),
            idle_max: samples.iter().map(Sample::idle).max().unwrap_or(0),
            assigned_mean: mean(|s| s.assigned),
            add_wait_p50_ms: at(0.5),
            add_wait_p90_ms: at(0.9),
            add_wait_p99_ms: at(0.99),
            add_wait_max_ms: waits.last().copied().unwrap_or(0),
            add_retries: outcome.add_retries,
            pods_failed: outcome.pods_failed,
            del_failures: outcome.del_failures,
            free_blocks_min: samples.iter().map(|s| s.free_blocks).min().unwrap_or(0),
            fragmentation_max: samples
                .iter()
                .map(Sample::fragmentation)
                .fold(0.0, f64::max),
            peak_enis: samples.iter().map(|s| s.enis).max().unwrap_or(0),
            calls_by_action: outcome.calls.clone(),
            simulated_s: outcome.simulated_ms as f64 / 1e3,
            wall_ms: outcome.wall_ms,
            start_wall_ms: outcome.start_wall_ms,
        }
    }
}

/// A simulation's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The trace's name.
    pub trace: String,
    /// Pods it adds.
    pub pods: usize,
    /// The baseline's label (`None`: its run failed, and the figures stand alone).
    pub baseline: Option<String>,
    /// Per strategy, the baseline first.
    pub strategies: Vec<Summary>,
    /// The samples behind the figures, per strategy (left out of the JSON unless asked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<Vec<Sample>>,
}

impl Report {
    /// The report of `outcomes` of a trace adding `pods`; `baseline` names the outcome that is
    /// the baseline (the first), if its run did not fail.
    pub fn new(
        trace: &str,
        pods: usize,
        baseline: Option<&str>,
        outcomes: &[Outcome],
        with_samples: bool,
    ) -> Report {
        Report {
            trace: trace.to_owned(),
            pods,
            baseline: baseline.map(str::to_owned),
            strategies: outcomes.iter().map(|o| Summary::of(o, pods)).collect(),
            samples: if with_samples {
                outcomes.iter().map(|o| o.samples.clone()).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The figures as a Markdown table, then the calls by action.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "trace: {} ({} pods); baseline: {}\n",
            self.trace,
            self.pods,
            self.baseline
                .as_deref()
                .unwrap_or("none (its run failed: see above)")
        );
        let _ = writeln!(
            out,
            "| strategy | EC2 calls | calls/pod | mutating | refused | idle mean | idle max | ADD wait p50 / p90 / p99 / max ms | ADD retries | pods failed | peak ENIs | free /28 min | /28 fragmentation max | simulated s | wall ms |"
        );
        let _ = writeln!(
            out,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for s in &self.strategies {
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} | {} | {} | {:.1} | {} | {} / {} / {} / {} | {} | {} | {} | {} | {:.1} % | {:.0} | {:.0} |",
                s.strategy,
                s.ec2_calls,
                s.ec2_calls_per_pod,
                s.ec2_mutating,
                s.ec2_failed,
                s.idle_mean,
                s.idle_max,
                s.add_wait_p50_ms,
                s.add_wait_p90_ms,
                s.add_wait_p99_ms,
                s.add_wait_max_ms,
                s.add_retries,
                s.pods_failed,
                s.peak_enis,
                s.free_blocks_min,
                s.fragmentation_max * 100.0,
                s.simulated_s,
                s.wall_ms,
            );
        }
        for s in &self.strategies {
            let calls: Vec<String> = s
                .calls_by_action
                .iter()
                .map(|(action, c)| {
                    if c.failed > 0 {
                        format!("{action} {} ({} refused)", c.calls, c.failed)
                    } else {
                        format!("{action} {}", c.calls)
                    }
                })
                .collect();
            let calls = if calls.is_empty() {
                "none".to_owned()
            } else {
                calls.join(", ")
            };
            let _ = writeln!(out, "\n{}: {calls}", s.strategy);
        }
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Colours of the strategies' lines, the baseline's first.
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// An SVG plot over time: live pods (grey, the baseline's), and for each strategy the
/// addresses assigned to the node (solid) and idle (dashed) in its colour.
pub fn svg(trace: &str, outcomes: &[Outcome]) -> String {
    const W: f64 = 960.0;
    const H: f64 = 480.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 90.0;
    let t_max = outcomes
        .iter()
        .flat_map(|o| o.samples.last())
        .map(|s| s.t_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let y_max = outcomes
        .iter()
        .flat_map(|o| o.samples.iter())
        .map(|s| s.assigned.max(s.pods))
        .max()
        .unwrap_or(0)
        .max(1);
    let y_max = nice_ceiling(f64::from(y_max));
    let x = |t: u64| LEFT + (t as f64 / t_max) * (W - LEFT - RIGHT);
    let y = |v: u32| TOP + (1.0 - f64::from(v) / y_max) * (H - TOP - BOTTOM);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="22" font-size="14">{}</text>"#,
        escape(&format!("wasmcni simulate: {trace}"))
    );
    // Axes and grid.
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let yy = TOP + (1.0 - v / y_max) * (y1 - y0);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{yy:.1}" x2="{x1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            x0 - 6.0,
            yy + 4.0
        );
    }
    let minutes = t_max / 60_000.0;
    for i in 0..=6 {
        let t = t_max * f64::from(i) / 6.0;
        let xx = LEFT + (t / t_max) * (x1 - x0);
        let label = if minutes >= 2.0 {
            format!("{:.0} min", t / 60_000.0)
        } else {
            format!("{:.0} s", t / 1000.0)
        };
        let _ = writeln!(
            out,
            r##"<line x1="{xx:.1}" y1="{y1}" x2="{xx:.1}" y2="{}" stroke="#888"/><text x="{xx:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            y1 + 4.0,
            y1 + 18.0
        );
    }
    let _ = writeln!(
        out,
        r##"<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#444"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#444"/>"##
    );
    let polyline = |samples: &[Sample], value: fn(&Sample) -> u32| {
        let mut points = String::new();
        for s in samples {
            let _ = write!(points, "{:.1},{:.1} ", x(s.t_ms), y(value(s)));
        }
        points
    };
    if let Some(baseline) = outcomes.first() {
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="#777" stroke-width="2" points="{}"/>"##,
            polyline(&baseline.samples, |s| s.pods)
        );
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            polyline(&outcome.samples, |s| s.assigned)
        );
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1" stroke-dasharray="4 3" points="{}"/>"#,
            polyline(&outcome.samples, Sample::idle)
        );
    }
    // Legend.
    let mut ly = H - BOTTOM + 40.0;
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{ly}" x2="{}" y2="{ly}" stroke="#777" stroke-width="2"/><text x="{}" y="{}">pods</text>"##,
        LEFT + 24.0,
        LEFT + 30.0,
        ly + 4.0
    );
    ly += 16.0;
    let mut lx = LEFT;
    for (i, outcome) in outcomes.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let label = format!("{}: assigned (solid), idle (dashed)", outcome.strategy);
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(&label)
        );
        if i % 2 == 0 {
            lx = LEFT + (W - LEFT) / 2.0;
        } else {
            lx = LEFT;
            ly += 16.0;
        }
    }
    out.push_str("</svg>\n");
    out
}

/// The smallest of 1, 2, 2.5, 5 × 10^n at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v)
        .unwrap_or(v)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(label: &str, waits: Vec<u64>, samples: Vec<Sample>) -> Outcome {
        Outcome {
            strategy: label.into(),
            trace: "t".into(),
            samples,
            add_waits_ms: waits,
            add_retries: 0,
            pods_failed: 0,
            last_add_error: None,
            del_failures: 0,
            calls: BTreeMap::from([
                (
                    "AssignPrivateIpAddresses".to_owned(),
                    Calls {
                        calls: 6,
                        failed: 1,
                    },
                ),
                (
                    "DescribeNetworkInterfaces".to_owned(),
                    Calls {
                        calls: 2,
                        failed: 0,
                    },
                ),
            ]),
            simulated_ms: 60_000,
            wall_ms: 12.0,
            start_wall_ms: 5.0,
        }
    }

    fn sample(t_ms: u64, pods: u32, assigned: u32) -> Sample {
        Sample {
            t_ms,
            pods,
            assigned,
            enis: 2,
            subnet_free: 100,
            free_blocks: 5,
        }
    }

    #[test]
    fn the_summary_holds_the_figures_of_the_samples_and_waits() {
        let o = outcome(
            "pack <8>",
            (1..=100).collect(),
            vec![sample(0, 0, 10), sample(1000, 5, 10), sample(2000, 10, 30)],
        );
        let s = Summary::of(&o, 4);
        assert_eq!((s.ec2_calls, s.ec2_mutating, s.ec2_failed), (8, 6, 1));
        assert!((s.ec2_calls_per_pod - 2.0).abs() < 1e-9);
        assert!((s.idle_mean - 35.0 / 3.0).abs() < 1e-9, "{}", s.idle_mean);
        assert_eq!(s.idle_max, 20);
        assert_eq!(
            (
                s.add_wait_p50_ms,
                s.add_wait_p90_ms,
                s.add_wait_p99_ms,
                s.add_wait_max_ms
            ),
            (51, 90, 99, 100)
        );
        assert_eq!((s.peak_enis, s.free_blocks_min), (2, 5));
        assert!((s.fragmentation_max - 0.2).abs() < 1e-9);
        let report = Report::new("t", 4, Some("pack <8>"), std::slice::from_ref(&o), false);
        let table = report.table();
        assert!(
            table.contains("| pack <8> | 8 | 2.000 | 6 | 1 | 11.7 | 20 |"),
            "{table}"
        );
        assert!(
            table.contains("AssignPrivateIpAddresses 6 (1 refused)"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["strategies"][0]["ec2_calls"], 8);
        assert!(json.get("samples").is_none());
        let svg = svg("t <&>", &[o.clone(), o]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("pack &lt;8&gt;") && svg.contains("t &lt;&amp;&gt;"));
        assert_eq!(
            svg.matches("<polyline").count(),
            5,
            "pods + 2 × (assigned, idle)"
        );
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(180.0), 200.0);
        assert_eq!(nice_ceiling(240.0), 250.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
    }
}
