//! One simulated node: the real daemon, warm pool and EC2 provider over EC2 in process, on a
//! paused current-thread runtime, replaying a trace as kubelet would.
//!
//! Every pod of the trace is a task: it sleeps until its ADD time, sends CNI ADD to the
//! handler (retrying a failed one a second later, as kubelet retries a sandbox), holds the
//! pod until its DEL time and sends DEL. A sampler reads the EC2 model at a fixed period:
//! the addresses EC2 has assigned to the node's ENIs, its ENIs, the subnet's free addresses
//! and free /28 blocks. Nothing here decides anything the daemon decides.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use ipnet::Ipv4Net;
use wasmcni_cni::proto::DaemonResponse;
use wasmcni_cni::request::{CniRequest, Command};
use wasmcni_config::ClusterConfig;
use wasmcni_core::eni::EniProvider;
use wasmcni_daemon::server::{self, warm_pool, Handler};
use wasmcni_datapath::fake::FakeDatapath;
use wasmcni_ec2::in_process::InProcessEc2;
use wasmcni_ec2::Ec2Provider;
use wasmcni_ec2_model::{Ec2Model, RequestRecord, RunInstance};

use crate::sample::{Sample, Sampling};
use crate::trace::{Op, Trace};
use crate::{Scenario, SimError, Strategy};

/// The VPC of the simulated account (as the EC2 emulator's default scenario).
const VPC: &str = "10.0.0.0/16";
/// The node's subnet, and a second one in the same zone.
const SUBNETS: [&str; 2] = ["10.0.0.0/20", "10.0.16.0/20"];
/// The zone of both.
const ZONE: &str = "us-west-2a";
/// The CNI network configuration of every request.
const NETCONF: &str = r#"{"cniVersion":"1.1.0","name":"simulate","type":"wasmcni"}"#;
/// How long kubelet waits before it retries a failed ADD, and how often it tries.
const ADD_RETRY: Duration = Duration::from_secs(1);
const ADD_ATTEMPTS: u32 = 60;
/// How long a node may take to become ready (in the simulation's time).
const READY_WITHIN: Duration = Duration::from_secs(600);
/// Samples over a trace when the scenario sets no period, and the most it may ask for.
const SAMPLES: u64 = 2000;
const MAX_SAMPLES: u64 = 100_000;

/// EC2 calls of one action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Calls {
    /// Every call.
    pub calls: u32,
    /// Calls EC2 answered with an error (throttling included).
    pub failed: u32,
}

/// What one node saw over the trace.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The strategy's label.
    pub strategy: String,
    /// The trace's name.
    pub trace: String,
    /// The node over time.
    pub samples: Vec<Sample>,
    /// How long each pod's ADD took, from its time in the trace to its answer, retries
    /// included (ms of the simulation's time); pods whose ADD never succeeded are left out.
    pub add_waits_ms: Vec<u64>,
    /// ADDs the daemon refused and kubelet retried.
    pub add_retries: u32,
    /// Pods that never got an address (every attempt refused).
    pub pods_failed: u32,
    /// The daemon's last refusal of an ADD, if any.
    pub last_add_error: Option<String>,
    /// DELs the daemon refused.
    pub del_failures: u32,
    /// EC2 calls during the trace, by action.
    pub calls: BTreeMap<String, Calls>,
    /// The simulation's time the trace took (to its last answer).
    pub simulated_ms: u64,
    /// Real time of the whole run, the node's start included.
    pub wall_ms: f64,
    /// Real time the node took to start and become ready (the plugin's compilation
    /// included).
    pub start_wall_ms: f64,
}

impl Outcome {
    /// EC2 calls during the trace.
    pub fn total_calls(&self) -> u32 {
        self.calls.values().map(|c| c.calls).sum()
    }

    /// EC2 calls during the trace that change something (every action but `Describe*`).
    pub fn mutating_calls(&self) -> u32 {
        self.calls
            .iter()
            .filter(|(action, _)| !action.starts_with("Describe"))
            .map(|(_, c)| c.calls)
            .sum()
    }
}

/// Simulates `strategy` on `scenario` over `trace`, on a node of its own.
pub fn run(scenario: &Scenario, strategy: &Strategy, trace: &Trace) -> Result<Outcome, SimError> {
    let wall = std::time::Instant::now();
    let dir = state_dir()?;
    let config = node_config(scenario, strategy, dir.path())?;
    let (ec2, node, subnet) = account(scenario)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| SimError::Io(format!("the simulation's runtime: {e}")))?;
    let sampling = Sampling {
        ec2: ec2.clone(),
        node,
        subnet,
    };
    let mut outcome = runtime.block_on(replay(config, ec2, sampling, scenario, strategy, trace))?;
    drop(runtime);
    outcome.wall_ms = wall.elapsed().as_secs_f64() * 1e3;
    Ok(outcome)
}

/// The node's state directory: in memory where the machine has `/dev/shm` (the datastore's
/// `fdatasync` costs nothing there; a simulation needs no durability).
fn state_dir() -> Result<tempfile::TempDir, SimError> {
    let shm = Path::new("/dev/shm");
    let made = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("wasmcni-simulate.")
            .tempdir_in(shm)
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix("wasmcni-simulate.")
                    .tempdir()
            })
    } else {
        tempfile::Builder::new()
            .prefix("wasmcni-simulate.")
            .tempdir()
    };
    made.map_err(|e| SimError::Io(format!("the node's state directory: {e}")))
}

/// The cluster configuration of the simulated node: the EC2 provider with the scenario's
/// settings, `strategy` as the allocator and its only plugin, state under `dir`.
fn node_config(
    scenario: &Scenario,
    strategy: &Strategy,
    dir: &Path,
) -> Result<ClusterConfig, SimError> {
    let mut ec2 = scenario
        .cluster_config
        .as_ref()
        .and_then(|c| c.get("provider")?.get("ec2")?.as_table().cloned())
        .unwrap_or_default();
    ec2.extend(scenario.ec2_settings.clone());
    // The simulated node answers no shim and binds nothing. Its socket names a directory of its
    // own that does not exist, so the daemon's start (which replays DELs spooled beside the
    // socket) can never see a real node's spool.
    let socket_dir = dir.file_name().map_or_else(
        || "wasmcni-simulate".to_owned(),
        |name| name.to_string_lossy().into_owned(),
    );
    let socket = format!("/run/wasmcni/{socket_dir}/wasmcni.sock");
    if Path::new(&socket).parent().is_some_and(Path::exists) {
        return Err(SimError::Io(format!(
            "{socket}'s directory exists; a simulation never uses a real node's"
        )));
    }
    let mut daemon = toml::Table::new();
    daemon.insert("socket".into(), socket.into());
    daemon.insert(
        "state_dir".into(),
        dir.join("state").display().to_string().into(),
    );
    let mut provider = toml::Table::new();
    provider.insert("kind".into(), "ec2".into());
    provider.insert("ec2".into(), ec2.into());
    let mut allocator = toml::Table::new();
    allocator.insert("plugin".into(), strategy.name.clone().into());
    let mut config = toml::Table::new();
    config.insert("version".into(), 1.into());
    config.insert("daemon".into(), daemon.into());
    config.insert("datapath".into(), toml::Table::new().into());
    config.insert("provider".into(), provider.into());
    config.insert("allocator".into(), allocator.into());
    // `[cluster]` names the cluster to taggers; `[registry]` says how a strategy given by an
    // `oci` reference is pulled (into this node's own cache: every run pulls it). `[trust]`
    // is not copied: a strategy being evaluated needs no reviewers' approval yet.
    for table in ["cluster", "registry"] {
        if let Some(value) = scenario.cluster_config.as_ref().and_then(|c| c.get(table)) {
            config.insert(table.into(), value.clone());
        }
    }
    config.insert(
        "plugins".into(),
        toml::Value::Array(vec![strategy.entry.clone().into()]),
    );
    let text = toml::to_string(&config).map_err(|e| SimError::Strategy {
        strategy: strategy.label.clone(),
        message: format!("its configuration does not serialize: {e}"),
    })?;
    Ok(ClusterConfig::parse(
        &text,
        &format!("the simulated node of {}", strategy.label),
    )?)
}

/// The EC2 account: a VPC, two subnets, the node running in the first; EC2 and IMDS in
/// process with the scenario's faults. Returns the service, the node's instance id and its
/// subnet's id.
fn account(scenario: &Scenario) -> Result<(InProcessEc2, String, String), SimError> {
    let fail = |e: wasmcni_ec2_model::Ec2Error| SimError::Scenario(e.to_string());
    let mut model = Ec2Model::new(scenario.seed);
    model.set_clock(wasmcni_clock::unix_ms());
    let net = |cidr: &str| {
        cidr.parse::<Ipv4Net>()
            .map_err(|e| SimError::Scenario(e.to_string()))
    };
    let vpc = model.create_vpc(net(VPC)?).map_err(fail)?;
    let subnet = model
        .create_subnet(&vpc.id, net(SUBNETS[0])?, ZONE)
        .map_err(fail)?;
    model
        .create_subnet(&vpc.id, net(SUBNETS[1])?, ZONE)
        .map_err(fail)?;
    let node = model
        .run_instance(RunInstance::new(&scenario.instance_type, &subnet.id))
        .map_err(|e| {
            SimError::Scenario(format!(
                "the node ({}) cannot run: {e}",
                scenario.instance_type
            ))
        })?;
    let ec2 = InProcessEc2::new(
        model,
        Some(node.id.clone()),
        scenario.faults.clone(),
        scenario.seed,
    );
    Ok((ec2, node.id, subnet.id))
}

/// One pod's life in the trace: ADD at `add_ms`, DEL at `del_ms` (never, if it stays).
#[derive(Debug, Clone)]
struct Life {
    pod: String,
    add_ms: u64,
    del_ms: Option<u64>,
}

fn lives(trace: &Trace) -> Vec<Life> {
    let mut lives: Vec<Life> = Vec::new();
    let mut open: HashMap<&str, usize> = HashMap::new();
    for event in trace.events() {
        match event.op {
            Op::Add => {
                open.insert(&event.pod, lives.len());
                lives.push(Life {
                    pod: event.pod.clone(),
                    add_ms: event.t_ms,
                    del_ms: None,
                });
            }
            // A trace is checked: every DEL has its ADD.
            Op::Del => {
                if let Some(index) = open.remove(event.pod.as_str()) {
                    lives[index].del_ms = Some(event.t_ms);
                }
            }
        }
    }
    lives
}

/// What one pod's task saw.
#[derive(Debug, Default)]
struct PodResult {
    wait_ms: Option<u64>,
    retries: u32,
    last_error: Option<String>,
    del_failed: bool,
}

fn request(command: Command, index: usize, pod: &str) -> CniRequest {
    let (namespace, name) = pod.split_once('/').unwrap_or(("default", pod));
    CniRequest {
        command,
        container_id: format!("simulated-{index:07}"),
        netns: format!("/run/netns/simulated-{index:07}"),
        ifname: "eth0".into(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), namespace.into()),
            ("K8S_POD_NAME".into(), name.into()),
        ],
        path: String::new(),
    }
}

async fn pod_life(
    handler: Arc<Handler<FakeDatapath>>,
    live: Arc<AtomicU32>,
    index: usize,
    life: Life,
    start: Instant,
) -> PodResult {
    let mut result = PodResult::default();
    // Spawned at its ADD time by the feeder.
    let asked = Instant::now();
    let deleted_at = life.del_ms.map(|ms| start + Duration::from_millis(ms));
    let add = request(Command::Add, index, &life.pod);
    for attempt in 1..=ADD_ATTEMPTS {
        match handler.handle(&add, NETCONF).await {
            DaemonResponse::Success { .. } => {
                result.wait_ms = Some(asked.elapsed().as_millis() as u64);
                break;
            }
            DaemonResponse::Failure { error, .. } => {
                result.last_error = Some(format!("{} (code {})", error.msg, error.code));
                // Kubelet stops retrying a pod that was deleted meanwhile.
                let retry_at = Instant::now() + ADD_RETRY;
                if attempt == ADD_ATTEMPTS || deleted_at.is_some_and(|at| retry_at >= at) {
                    break;
                }
                result.retries += 1;
                tokio::time::sleep_until(retry_at).await;
            }
        }
    }
    if result.wait_ms.is_some() {
        live.fetch_add(1, Ordering::Relaxed);
    }
    let Some(del_ms) = life.del_ms else {
        return result;
    };
    tokio::time::sleep_until(start + Duration::from_millis(del_ms)).await;
    if result.wait_ms.is_some() {
        live.fetch_sub(1, Ordering::Relaxed);
    }
    // A pod that never got an address is deleted too, as kubelet would.
    let del = request(Command::Del, index, &life.pod);
    if let DaemonResponse::Failure { .. } = handler.handle(&del, NETCONF).await {
        result.del_failed = true;
    }
    result
}

/// Stops the daemon as a node's stops: its background tasks first, then the handler, so the
/// veth reaper sees it go rather than being cut off with the runtime (and says so).
async fn stop(background: [tokio::task::JoinHandle<()>; 2], handler: Arc<Handler<FakeDatapath>>) {
    for task in background {
        task.abort();
        let _ = task.await;
    }
    drop(handler);
    tokio::task::yield_now().await;
}

fn tally(records: &[RequestRecord]) -> BTreeMap<String, Calls> {
    let mut calls: BTreeMap<String, Calls> = BTreeMap::new();
    for record in records {
        let entry = calls.entry(record.action.clone()).or_default();
        entry.calls += 1;
        if record.error_code.is_some() {
            entry.failed += 1;
        }
    }
    calls
}

async fn replay(
    config: ClusterConfig,
    ec2: InProcessEc2,
    sampling: Sampling,
    scenario: &Scenario,
    strategy: &Strategy,
    trace: &Trace,
) -> Result<Outcome, SimError> {
    let label = strategy.label.clone();
    let failed = |message: String| SimError::Start {
        strategy: label.clone(),
        message,
    };
    let booted = Instant::now();
    let booted_wall = std::time::Instant::now();
    let provider = Ec2Provider::start_in_process(&config.ec2(), &config.cluster.name, &ec2)
        .await
        .map_err(|e| failed(format!("the EC2 provider: {e}")))?;
    let provider: Arc<dyn EniProvider> = Arc::new(provider);
    let settings = config.ec2();
    let (handler, _) = server::start(
        config,
        FakeDatapath::new(),
        Some(provider.clone()),
        wasmcni_runtime::Compiler::InProcess,
    )
    .await
    .map_err(|e| failed(e.to_string()))?;
    let background = [
        tokio::spawn(warm_pool::run(handler.clone(), provider.clone())),
        tokio::spawn(warm_pool::collect_leaks(provider.clone(), settings)),
    ];
    let status = request(Command::Status, 0, "simulate/status");
    loop {
        let why = match handler.handle(&status, NETCONF).await {
            DaemonResponse::Success { .. } => break,
            DaemonResponse::Failure { error, .. } => error.msg,
        };
        if booted.elapsed() > READY_WITHIN {
            stop(background, handler).await;
            return Err(failed(format!(
                "not ready after {} s of simulated time (STATUS: {why})",
                READY_WITHIN.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start_wall_ms = booted_wall.elapsed().as_secs_f64() * 1e3;
    // Calls until the node was ready (discovery, limits, the first warm pool) are left out.
    let first_call = ec2.requests().len();

    // A period the trace's length would turn into more than MAX_SAMPLES is stretched; a run
    // that goes on longer (ADDs retried past the trace's end) halves its samples as it goes.
    let mut every = if scenario.sample_every.is_zero() {
        Duration::from_millis(trace.duration_ms() / SAMPLES)
    } else {
        scenario.sample_every
    }
    .max(Duration::from_millis(trace.duration_ms() / MAX_SAMPLES))
    .clamp(
        Duration::from_millis(1),
        Duration::from_millis(crate::trace::MAX_T_MS),
    );
    let live = Arc::new(AtomicU32::new(0));
    let start = Instant::now();
    // Pods are spawned at their ADD times (lives are in ADD order), so a long trace holds only
    // the tasks of pods that exist.
    let mut lives = lives(trace).into_iter().enumerate().peekable();
    let mut pods = tokio::task::JoinSet::new();
    let mut results = Vec::new();
    let mut samples = Vec::new();
    let mut next_sample = start;
    let mut last_answer = start;
    loop {
        while let Some((index, life)) =
            lives.next_if(|(_, life)| start + Duration::from_millis(life.add_ms) <= Instant::now())
        {
            pods.spawn(pod_life(handler.clone(), live.clone(), index, life, start));
        }
        if Instant::now() >= next_sample {
            let t_ms = start.elapsed().as_millis() as u64;
            samples.push(sampling.sample(t_ms, live.load(Ordering::Relaxed)));
            if samples.len() as u64 >= MAX_SAMPLES {
                let mut keep = false;
                samples.retain(|_| {
                    keep = !keep;
                    keep
                });
                every = (every * 2).min(Duration::from_millis(crate::trace::MAX_T_MS));
            }
            next_sample += every;
        }
        if pods.is_empty() && lives.peek().is_none() {
            break;
        }
        let next_add = lives
            .peek()
            .map(|(_, life)| start + Duration::from_millis(life.add_ms));
        let wake = next_add.map_or(next_sample, |at| at.min(next_sample));
        tokio::select! {
            Some(done) = pods.join_next(), if !pods.is_empty() => {
                match done {
                    Ok(result) => results.push(result),
                    Err(e) => {
                        pods.abort_all();
                        while pods.join_next().await.is_some() {}
                        stop(background, handler).await;
                        return Err(failed(format!("a pod's task failed: {e}")));
                    }
                }
                last_answer = Instant::now();
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    // The node at the end: after the last answer, not at the next tick.
    // A sample of the same instant was taken before the last answers: it gives way.
    let end_ms = last_answer.duration_since(start).as_millis() as u64;
    if samples.last().is_some_and(|s| s.t_ms == end_ms) {
        samples.pop();
    }
    samples.push(sampling.sample(end_ms, live.load(Ordering::Relaxed)));
    let simulated_ms = last_answer.duration_since(start).as_millis() as u64;
    stop(background, handler).await;
    let records = ec2.requests();
    let mut add_waits_ms: Vec<u64> = results.iter().filter_map(|r| r.wait_ms).collect();
    add_waits_ms.sort_unstable();
    Ok(Outcome {
        strategy: strategy.label.clone(),
        trace: trace.name.clone(),
        samples,
        pods_failed: results.iter().filter(|r| r.wait_ms.is_none()).count() as u32,
        add_retries: results.iter().map(|r| r.retries).sum(),
        last_add_error: results.iter().rev().find_map(|r| r.last_error.clone()),
        del_failures: results.iter().filter(|r| r.del_failed).count() as u32,
        add_waits_ms,
        calls: tally(records.get(first_call..).unwrap_or_default()),
        simulated_ms,
        wall_ms: 0.0,
        start_wall_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lives_pair_each_add_with_its_del() {
        let trace = Trace::parse(
            "{\"t_ms\":0,\"op\":\"add\",\"pod\":\"a/x\"}\n{\"t_ms\":5,\"op\":\"del\",\"pod\":\"a/x\"}\n{\"t_ms\":7,\"op\":\"add\",\"pod\":\"a/x\"}\n",
            "t",
        )
        .unwrap();
        let lives = lives(&trace);
        assert_eq!(lives.len(), 2);
        assert_eq!((lives[0].add_ms, lives[0].del_ms), (0, Some(5)));
        assert_eq!((lives[1].add_ms, lives[1].del_ms), (7, None));
    }
}
