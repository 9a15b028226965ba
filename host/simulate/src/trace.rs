//! Pod-churn traces: what a simulation replays.
//!
//! The format is JSON lines, one event per line, so an operator can export one from a real
//! cluster's pod events (`kubectl get events --watch -o json`, an audit log, a controller's
//! informer) with a line of `jq`:
//!
//! ```text
//! {"t_ms": 0, "op": "add", "pod": "web/web-7d4b9-xk2p1"}
//! {"t_ms": 1250, "op": "del", "pod": "web/web-7d4b9-xk2p1"}
//! ```
//!
//! `t_ms` is milliseconds from the start of the trace, `op` `add` (the pod's sandbox is
//! created: CNI ADD) or `del` (it is removed: CNI DEL), `pod` `namespace/name`. Events need not
//! be in order (they are sorted by time, stably); a pod is added before it is deleted, and a
//! name may be added again after its deletion (a StatefulSet's pod). Pods still present at the
//! end stay. Blank lines are skipped. Every error names its line.
//!
//! Built-in traces ([`Builtin`]) are seeded and the same on every run.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// The most events a trace may hold (about a week of a busy node's pod churn).
pub const MAX_EVENTS: usize = 1_000_000;
/// The latest an event may be: 30 days.
pub const MAX_T_MS: u64 = 30 * 24 * 3600 * 1000;
/// The longest pod name (`namespace/name`: 63 + 1 + 253).
const MAX_POD: usize = 317;

/// What happens to a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// CNI ADD: the pod's sandbox is created.
    Add,
    /// CNI DEL: it is removed.
    Del,
}

/// One line of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Milliseconds from the start of the trace.
    pub t_ms: u64,
    /// ADD or DEL.
    pub op: Op,
    /// `namespace/name`.
    pub pod: String,
}

/// A trace that failed to parse or to hold together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceError {
    /// A line is not an event.
    #[error("{origin}:{line}: {message}")]
    Line {
        /// Where the trace came from.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The trace is too big.
    #[error("{origin}: more than {MAX_EVENTS} events")]
    TooLong {
        /// Where the trace came from.
        origin: String,
    },
    /// Nothing to replay.
    #[error("{origin}: no events")]
    Empty {
        /// Where the trace came from.
        origin: String,
    },
}

/// Events in time order, checked: every DEL follows its pod's ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// What it is (a built-in's name, a file's path).
    pub name: String,
    events: Vec<Event>,
}

impl Trace {
    /// A trace from JSON lines; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Trace, TraceError> {
        let mut lines = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            if lines.len() == MAX_EVENTS {
                return Err(TraceError::TooLong {
                    origin: origin.to_owned(),
                });
            }
            let event: Event = serde_json::from_str(line).map_err(|e| TraceError::Line {
                origin: origin.to_owned(),
                line: index + 1,
                message: format!(
                    "not an event ({{\"t_ms\": N, \"op\": \"add\"|\"del\", \"pod\": \"namespace/name\"}}): {e}"
                ),
            })?;
            lines.push((index + 1, event));
        }
        Self::from_lines(lines, origin)
    }

    /// A trace of `events` (each its own "line" in errors, from 1).
    pub fn from_events(events: Vec<Event>, name: &str) -> Result<Trace, TraceError> {
        let lines = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i + 1, e))
            .collect();
        Self::from_lines(lines, name)
    }

    fn from_lines(mut lines: Vec<(usize, Event)>, origin: &str) -> Result<Trace, TraceError> {
        if lines.is_empty() {
            return Err(TraceError::Empty {
                origin: origin.to_owned(),
            });
        }
        if lines.len() > MAX_EVENTS {
            return Err(TraceError::TooLong {
                origin: origin.to_owned(),
            });
        }
        let fail = |line: usize, message: String| TraceError::Line {
            origin: origin.to_owned(),
            line,
            message,
        };
        for (line, event) in &lines {
            if event.t_ms > MAX_T_MS {
                return Err(fail(
                    *line,
                    format!(
                        "t_ms {} is past the longest trace (30 days = {MAX_T_MS} ms)",
                        event.t_ms
                    ),
                ));
            }
            check_pod(&event.pod).map_err(|why| fail(*line, why))?;
        }
        // Stable: events of one millisecond keep the file's order.
        lines.sort_by_key(|(_, event)| event.t_ms);
        let mut live = HashSet::new();
        for (line, event) in &lines {
            match event.op {
                Op::Add if !live.insert(event.pod.as_str()) => {
                    return Err(fail(
                        *line,
                        format!(
                        "pod {:?} is added at {} ms while it is still there (no DEL since its ADD)",
                        event.pod, event.t_ms
                    ),
                    ))
                }
                Op::Del if !live.remove(event.pod.as_str()) => {
                    return Err(fail(
                        *line,
                        format!(
                            "pod {:?} is deleted at {} ms but was not added before",
                            event.pod, event.t_ms
                        ),
                    ))
                }
                _ => {}
            }
        }
        Ok(Trace {
            name: origin.to_owned(),
            events: lines.into_iter().map(|(_, event)| event).collect(),
        })
    }

    /// The events in time order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// How many pods it adds (a name added twice counts twice).
    pub fn adds(&self) -> usize {
        self.events.iter().filter(|e| e.op == Op::Add).count()
    }

    /// When its last event happens.
    pub fn duration_ms(&self) -> u64 {
        self.events.last().map_or(0, |e| e.t_ms)
    }

    /// The trace as JSON lines (what [`Trace::parse`] reads).
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for event in &self.events {
            // An Event always serializes.
            if let Ok(line) = serde_json::to_string(event) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }
}

fn check_pod(pod: &str) -> Result<(), String> {
    let Some((namespace, name)) = pod.split_once('/') else {
        return Err(format!("pod {pod:?} is not namespace/name"));
    };
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return Err(format!("pod {pod:?} is not namespace/name"));
    }
    if pod.len() > MAX_POD {
        return Err(format!(
            "pod name of {} bytes is longer than Kubernetes allows ({MAX_POD})",
            pod.len()
        ));
    }
    if let Some(c) = pod
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/')))
    {
        return Err(format!(
            "pod {:?} holds {c:?}: a pod is namespace/name of letters, digits, '-', '.' and '_'",
            pod.escape_debug().to_string()
        ));
    }
    Ok(())
}

/// The traces built in, each seeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `benches/ec2_churn`'s trace: the live-pod count follows a slow wave between about 5
    /// and 75 with noise, one operation every `pace` (23 ms, the bench's measured pace).
    Churn,
    /// A steady service mix: a pod every 3 s on average, each living 2 minutes on average
    /// (exponential), about 40 at a time.
    Steady,
    /// Deployment rollouts: 60 replicas replaced every 10 minutes, 15 at a time (a new
    /// batch 5 s after the previous, each old pod deleted 20 s after its replacement starts).
    Rollout,
    /// Node scale-up: the node joins empty and 110 pending pods land on it within 3 s; after 10
    /// minutes they are scaled down over a minute, and the cycle repeats.
    ScaleUp,
    /// Cron spikes: 20 long-lived pods, and every 5 minutes 60 jobs starting within a second,
    /// each running 20–60 s.
    Cron,
}

impl Builtin {
    /// Every built-in, in the order help lists them.
    pub const ALL: [Builtin; 5] = [
        Builtin::Churn,
        Builtin::Steady,
        Builtin::Rollout,
        Builtin::ScaleUp,
        Builtin::Cron,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Churn => "churn",
            Builtin::Steady => "steady",
            Builtin::Rollout => "rollout",
            Builtin::ScaleUp => "scale-up",
            Builtin::Cron => "cron",
        }
    }

    /// The built-in called `name`.
    pub fn named(name: &str) -> Option<Builtin> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The trace with `pods` ADDs, drawn from `seed`: refused when it would hold no pod or
    /// more than a trace may (events, or 30 days).
    pub fn trace(self, pods: usize, seed: u64) -> Result<Trace, TraceError> {
        let name = format!("{} ({pods} pods, seed {seed})", self.name());
        if pods == 0 {
            return Err(TraceError::Empty { origin: name });
        }
        if pods > MAX_EVENTS / 2 {
            return Err(TraceError::TooLong { origin: name });
        }
        let mut gen = Generator::new(seed);
        match self {
            Builtin::Churn => gen.churn(pods),
            Builtin::Steady => gen.steady(pods),
            Builtin::Rollout => gen.rollout(pods),
            Builtin::ScaleUp => gen.scale_up(pods),
            Builtin::Cron => gen.cron(pods),
        }
        // The generators keep every pod's ADD before its DEL; a long one may pass 30 days.
        Trace::from_events(gen.events, &name)
    }
}

/// xorshift64* with the events it has made.
struct Generator {
    state: u64,
    events: Vec<Event>,
    next_pod: usize,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        Generator {
            // A zero state would stay zero.
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            events: Vec::new(),
            next_pod: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with this mean.
    fn exponential(&mut self, mean_ms: f64) -> u64 {
        (-(1.0 - self.unit()).ln() * mean_ms) as u64
    }

    fn pod(&mut self, namespace: &str) -> String {
        self.next_pod += 1;
        format!("{namespace}/pod-{}", self.next_pod)
    }

    fn push(&mut self, t_ms: u64, op: Op, pod: &str) {
        self.events.push(Event {
            t_ms,
            op,
            pod: pod.to_owned(),
        });
    }

    /// A pod from `start` for `life` ms.
    fn life(&mut self, namespace: &str, start: u64, life: u64) {
        let pod = self.pod(namespace);
        self.push(start, Op::Add, &pod);
        self.push(start + life.max(1), Op::Del, &pod);
    }

    fn churn(&mut self, pods: usize) {
        const PACE_MS: u64 = 23;
        let mut live: Vec<String> = Vec::new();
        let (mut added, mut step, mut t) = (0, 0.0f64, 0);
        while added < pods {
            let wave = 40.0 + 35.0 * (step * std::f64::consts::TAU / 300.0).sin();
            let target = wave + (self.below(11) as f64 - 5.0);
            if (live.len() as f64) < target {
                let pod = self.pod("churn");
                self.push(t, Op::Add, &pod);
                live.push(pod);
                added += 1;
                t += PACE_MS;
            } else if !live.is_empty() {
                let at = self.below(live.len() as u64) as usize;
                let pod = live.swap_remove(at);
                self.push(t, Op::Del, &pod);
                t += PACE_MS;
            }
            step += 1.0;
        }
        for pod in live {
            self.push(t, Op::Del, &pod);
            t += PACE_MS;
        }
    }

    fn steady(&mut self, pods: usize) {
        let mut t = 0;
        for _ in 0..pods {
            let life = self.exponential(120_000.0).max(1000);
            self.life("services", t, life);
            t += self.exponential(3000.0);
        }
    }

    fn rollout(&mut self, pods: usize) {
        const REPLICAS: usize = 60;
        const BATCH: usize = 15;
        let mut current: Vec<String> = Vec::new();
        for _ in 0..REPLICAS.min(pods) {
            let pod = self.pod("web");
            let t = self.below(2000);
            self.push(t, Op::Add, &pod);
            current.push(pod);
        }
        let mut added = current.len();
        let mut t = 600_000;
        while added < pods {
            // One rollout: batches of new pods, each old one deleted once its replacement ran.
            let mut next = Vec::new();
            let mut batch_start = t;
            for chunk in current.chunks(BATCH) {
                for old in chunk {
                    if added == pods {
                        next.push(old.clone());
                        continue;
                    }
                    let pod = self.pod("web");
                    let start = batch_start + self.below(1000);
                    self.push(start, Op::Add, &pod);
                    let end = start + 20_000 + self.below(2000);
                    self.push(end, Op::Del, old);
                    next.push(pod);
                    added += 1;
                }
                batch_start += 5000;
            }
            current = next;
            t += 600_000;
        }
        for pod in &current {
            self.push(t, Op::Del, pod);
        }
    }

    fn scale_up(&mut self, pods: usize) {
        const WAVE: usize = 110;
        let mut added = 0;
        let mut t = 0;
        while added < pods {
            let wave = WAVE.min(pods - added);
            for _ in 0..wave {
                let start = t + self.below(3000);
                let end = t + 600_000 + self.below(60_000);
                self.life("batch", start, end - start);
            }
            added += wave;
            t += 15 * 60_000;
        }
    }

    fn cron(&mut self, pods: usize) {
        const BASE: usize = 20;
        const SPIKE: usize = 60;
        let base = BASE.min(pods);
        let base_pods: Vec<String> = (0..base).map(|_| self.pod("services")).collect();
        for pod in &base_pods {
            let t = self.below(5000);
            self.push(t, Op::Add, pod);
        }
        let mut added = base;
        let mut t = 60_000;
        while added < pods {
            let spike = SPIKE.min(pods - added);
            for _ in 0..spike {
                let start = t + self.below(1000);
                let run = 20_000 + self.below(40_000);
                self.life("jobs", start, run);
            }
            added += spike;
            t += 300_000;
        }
        for pod in &base_pods {
            self.push(t, Op::Del, pod);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_error(text: &str) -> (usize, String) {
        match Trace::parse(text, "t.jsonl") {
            Err(TraceError::Line { line, message, .. }) => (line, message),
            other => panic!("expected a line error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_trace_is_parsed_sorted_and_round_trips() {
        let text = "{\"t_ms\":50,\"op\":\"del\",\"pod\":\"a/x\"}\n\n{\"t_ms\":10,\"op\":\"add\",\"pod\":\"a/x\"}\n{\"t_ms\":60,\"op\":\"add\",\"pod\":\"a/x\"}\n";
        let trace = Trace::parse(text, "t.jsonl").expect("parse");
        let ops: Vec<(u64, Op)> = trace.events().iter().map(|e| (e.t_ms, e.op)).collect();
        assert_eq!(ops, [(10, Op::Add), (50, Op::Del), (60, Op::Add)]);
        assert_eq!(trace.adds(), 2);
        assert_eq!(trace.duration_ms(), 60);
        assert_eq!(
            Trace::parse(&trace.to_json_lines(), "t.jsonl").unwrap(),
            trace
        );
    }

    #[test]
    fn every_bad_line_is_named() {
        let (line, message) = line_error("{\"t_ms\":1,\"op\":\"add\",\"pod\":\"a/x\"}\nnot json\n");
        assert_eq!(line, 2);
        assert!(message.contains("not an event"), "{message}");
        let (line, message) = line_error("{\"t_ms\":1,\"op\":\"restart\",\"pod\":\"a/x\"}");
        assert_eq!(line, 1);
        assert!(message.contains("restart"), "{message}");
        let (_, message) = line_error("{\"t_ms\":1,\"op\":\"add\",\"pod\":\"a/x\",\"node\":\"n\"}");
        assert!(message.contains("node"), "{message}");
        let (_, message) = line_error("{\"t_ms\":-1,\"op\":\"add\",\"pod\":\"a/x\"}");
        assert!(message.contains("not an event"), "{message}");
        for pod in ["x", "/x", "a/", "a/b/c", "a/b c", "a/\u{1b}[2J"] {
            let (_, message) = line_error(&format!(
                "{{\"t_ms\":1,\"op\":\"add\",\"pod\":{}}}",
                serde_json::to_string(pod).unwrap()
            ));
            assert!(message.contains("pod"), "{pod:?}: {message}");
            assert!(!message.contains('\u{1b}'), "escaped: {message}");
        }
        let long = format!("a/{}", "x".repeat(400));
        let (_, message) = line_error(&format!("{{\"t_ms\":1,\"op\":\"add\",\"pod\":\"{long}\"}}"));
        assert!(message.contains("longer"), "{message}");
        let (_, message) = line_error(&format!(
            "{{\"t_ms\":{},\"op\":\"add\",\"pod\":\"a/x\"}}",
            MAX_T_MS + 1
        ));
        assert!(message.contains("30 days"), "{message}");
    }

    #[test]
    fn a_pod_is_added_before_it_is_deleted_and_not_twice() {
        let (line, message) = line_error("{\"t_ms\":5,\"op\":\"del\",\"pod\":\"a/x\"}");
        assert_eq!(line, 1);
        assert!(message.contains("not added"), "{message}");
        let (line, message) = line_error(
            "{\"t_ms\":1,\"op\":\"add\",\"pod\":\"a/x\"}\n{\"t_ms\":2,\"op\":\"add\",\"pod\":\"a/x\"}",
        );
        assert_eq!(line, 2);
        assert!(message.contains("still there"), "{message}");
        assert_eq!(
            Trace::parse("\n\n", "empty.jsonl"),
            Err(TraceError::Empty {
                origin: "empty.jsonl".into()
            })
        );
    }

    #[test]
    fn built_in_traces_are_seeded_whole_and_add_what_they_say() {
        for builtin in Builtin::ALL {
            let trace = builtin.trace(1000, 7).unwrap();
            assert!(builtin.trace(0, 7).is_err());
            assert_eq!(trace.adds(), 1000, "{}", trace.name);
            assert_eq!(
                trace,
                builtin.trace(1000, 7).unwrap(),
                "{} is seeded",
                trace.name
            );
            assert_ne!(
                trace,
                builtin.trace(1000, 8).unwrap(),
                "{} follows its seed",
                trace.name
            );
            // Whole: it went through the checks (every DEL after its ADD).
            assert!(!trace.events().is_empty(), "{}", trace.name);
            assert_eq!(Builtin::named(builtin.name()), Some(builtin));
            let live_peak = trace
                .events()
                .iter()
                .scan(0i64, |live, e| {
                    *live += if e.op == Op::Add { 1 } else { -1 };
                    Some(*live)
                })
                .max()
                .unwrap();
            // Every built-in fits on the default node (m5.4xlarge, 234 pods).
            assert!(
                (10..=234).contains(&live_peak),
                "{}: {live_peak}",
                trace.name
            );
        }
        assert_eq!(Builtin::named("chaos"), None);
        // A rollout of 300 000 pods would last past 30 days: refused, not emptied.
        let error = Builtin::Rollout.trace(300_000, 0).unwrap_err().to_string();
        assert!(error.contains("30 days"), "{error}");
    }
}
