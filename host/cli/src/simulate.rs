//! `wasmcni-host simulate`: the command line of `wasmcni_simulate`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use wasmcni_ec2_model::FaultConfig;
use wasmcni_simulate::report::{self, Report};
use wasmcni_simulate::{strategy, Builtin, Scenario, SimError, Strategy, Trace, BASELINE};

/// The largest trace file read: a million events of a few hundred bytes.
const MAX_TRACE_BYTES: u64 = 512 << 20;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// A built-in trace (churn, steady, rollout, scale-up, cron) or a JSON-lines file of
    /// `{"t_ms": N, "op": "add"|"del", "pod": "namespace/name"}`.
    #[arg(long, default_value = "churn")]
    trace: String,
    /// Pods a built-in trace adds.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Seed of a built-in trace (0: `churn` is `benches/ec2_churn`'s trace exactly).
    #[arg(long, default_value_t = 0)]
    trace_seed: u64,
    /// Write the trace as JSON lines to this file and go on (a built-in as a starting point).
    #[arg(long, value_name = "FILE")]
    write_trace: Option<PathBuf>,
    /// A strategy beside the baseline: `NAME[,KEY=VALUE...]` (a `[[plugins]]` allocator of
    /// `--config`, else `<plugins-dir>/NAME.wasm`) or `PATH.wasm[,KEY=VALUE...]`; the settings
    /// go to its `[plugins.config]`. Repeatable. Default: `pack`.
    #[arg(long = "strategy", value_name = "SPEC")]
    strategies: Vec<String>,
    /// Where built components are (`wasmcni-plugin-build` writes them to target/plugins).
    #[arg(
        long,
        env = "WASMCNI_PLUGINS_DIR",
        default_value = "target/plugins",
        value_name = "DIR"
    )]
    plugins_dir: PathBuf,
    /// The node's instance type.
    #[arg(long, default_value = "m5.4xlarge")]
    instance_type: String,
    /// Seed of the EC2 model (ids, addresses EC2 picks, injected faults).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A `[provider.ec2]` setting of the node, over `--config`'s (e.g.
    /// `reconcile_interval_ms=500`). Repeatable.
    #[arg(long = "ec2", value_name = "KEY=VALUE")]
    ec2_settings: Vec<String>,
    /// Latency EC2 adds to every call (ms of the simulation's time).
    #[arg(long, default_value_t = 0)]
    ec2_latency_ms: u64,
    /// Throttle EC2 calls with EC2's default token buckets per action class.
    #[arg(long)]
    ec2_throttling: bool,
    /// Share of EC2 calls answered RequestLimitExceeded whatever the buckets say (0..=1).
    #[arg(long, default_value_t = 0.0)]
    ec2_throttle_rate: f64,
    /// Share of EC2 calls answered InternalError (0..=1).
    #[arg(long, default_value_t = 0.0)]
    ec2_error_rate: f64,
    /// How long new ENIs and addresses stay invisible in IMDS (ms).
    #[arg(long, default_value_t = 0)]
    imds_lag_ms: u64,
    /// Sample the node this often (ms of the simulation's time; default: 2000 samples).
    #[arg(long, value_name = "MS")]
    sample_ms: Option<u64>,
    /// Write the report as JSON to this file (`-`: stdout, instead of the table).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Put every sample in the JSON too.
    #[arg(long, requires = "json")]
    with_samples: bool,
    /// Write an SVG plot of pods, assigned and idle addresses over time to this file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// Runs `simulate`; `config` is the global `--config` (strategies by name, `[provider.ec2]`).
pub(crate) fn run(args: Args, config: Option<&Path>) -> ExitCode {
    match simulate(args, config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasmcni-host simulate: {e}");
            ExitCode::from(2)
        }
    }
}

fn simulate(args: Args, config: Option<&Path>) -> Result<ExitCode, SimError> {
    let io = |what: &str, path: &Path, e: std::io::Error| {
        SimError::Io(format!("{what} {}: {e}", path.display()))
    };
    let trace = match Builtin::named(&args.trace) {
        Some(builtin) => builtin.trace(args.pods, args.trace_seed).map_err(|e| {
            SimError::Scenario(format!("--trace {} --pods {}: {e}", args.trace, args.pods))
        })?,
        None => {
            let path = Path::new(&args.trace);
            // Read through a limit: a device or a pipe has no length to check first.
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|file| file.take(MAX_TRACE_BYTES + 1).read_to_string(&mut text))
                .map_err(|e| {
                    SimError::Io(format!(
                        "--trace {}: not a built-in ({}) and not a readable trace file: {e}",
                        args.trace,
                        Builtin::ALL.map(Builtin::name).join(", ")
                    ))
                })?;
            if text.len() as u64 > MAX_TRACE_BYTES {
                return Err(SimError::Io(format!(
                    "--trace {}: more than a trace may hold ({MAX_TRACE_BYTES} bytes)",
                    args.trace
                )));
            }
            Trace::parse(&text, &args.trace).map_err(|e| SimError::Io(e.to_string()))?
        }
    };
    if let Some(path) = &args.write_trace {
        std::fs::write(path, trace.to_json_lines()).map_err(|e| io("write", path, e))?;
    }
    let cluster = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| io("read", path, e))?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| SimError::Io(format!("{}: {e}", path.display())))?;
            Some((path.display().to_string(), text, table))
        }
        None => None,
    };
    let resolve = |spec: &str, baseline: bool| -> Result<Strategy, SimError> {
        let (subject, settings) = strategy::parse_spec(spec)?;
        if subject.ends_with(".wasm") {
            return Strategy::from_component(Path::new(&subject), &settings);
        }
        let file = args.plugins_dir.join(format!("{subject}.wasm"));
        let named_in_config = cluster.as_ref().filter(|(_, _, table)| {
            table
                .get("plugins")
                .and_then(toml::Value::as_array)
                .is_some_and(|plugins| {
                    plugins.iter().any(|p| {
                        p.get("name").and_then(toml::Value::as_str) == Some(subject.as_str())
                    })
                })
        });
        match named_in_config {
            // The baseline runs on VPC CNI's defaults, whatever the configuration sets.
            Some(_) if baseline && file.exists() => Strategy::from_component(&file, &settings),
            Some((origin, text, _)) => {
                let mut strategy =
                    Strategy::from_cluster_config(text, origin, &subject, &settings)?;
                if baseline {
                    strategy.entry.remove("config");
                }
                Ok(strategy)
            }
            None if file.exists() => Strategy::from_component(&file, &settings),
            None => Err(SimError::Strategy {
                strategy: spec.to_owned(),
                message: format!(
                    "no {} (build the plugins: wasmcni-plugin-build; or give --plugins-dir, a PATH.wasm, or a --config naming it)",
                    file.display()
                ),
            }),
        }
    };
    let mut strategies = vec![resolve(BASELINE, true)?];
    strategies[0].label = format!("{BASELINE} (VPC CNI defaults)");
    let specs = if args.strategies.is_empty() {
        vec!["pack".to_owned()]
    } else {
        args.strategies.clone()
    };
    for spec in &specs {
        strategies.push(resolve(spec, false)?);
    }
    let mut ec2_settings = toml::Table::new();
    for setting in &args.ec2_settings {
        let (key, value) = wasmcni_simulate::setting(setting)?;
        ec2_settings.insert(key, value);
    }
    let mut faults = FaultConfig {
        latency: Duration::from_millis(args.ec2_latency_ms),
        throttle_rate: args.ec2_throttle_rate,
        error_rate: args.ec2_error_rate,
        imds_lag: Duration::from_millis(args.imds_lag_ms),
        ..FaultConfig::default()
    };
    if args.ec2_throttling {
        faults = faults.with_ec2_throttling();
    }
    for (name, rate) in [
        ("--ec2-throttle-rate", args.ec2_throttle_rate),
        ("--ec2-error-rate", args.ec2_error_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(SimError::Scenario(format!(
                "{name} {rate} is not a share between 0 and 1"
            )));
        }
    }
    if args
        .sample_ms
        .is_some_and(|ms| ms > wasmcni_simulate::trace::MAX_T_MS)
    {
        return Err(SimError::Scenario(
            "--sample-ms is longer than the longest trace (30 days)".into(),
        ));
    }
    let scenario = Scenario {
        instance_type: args.instance_type.clone(),
        seed: args.seed,
        faults,
        ec2_settings,
        cluster_config: cluster.map(|(_, _, table)| table),
        sample_every: Duration::from_millis(args.sample_ms.unwrap_or(0)),
    };
    eprintln!(
        "simulating {} ({} events, {} pods, {:.0} s) on an {} against {} strateg{}",
        trace.name,
        trace.events().len(),
        trace.adds(),
        trace.duration_ms() as f64 / 1e3,
        scenario.instance_type,
        strategies.len(),
        if strategies.len() == 1 { "y" } else { "ies" }
    );
    let started = std::time::Instant::now();
    let results = wasmcni_simulate::run_all(&scenario, &strategies, &trace);
    let elapsed = started.elapsed();
    let mut outcomes = Vec::new();
    let mut failed = false;
    let mut baseline = None;
    for (index, (strategy, result)) in strategies.iter().zip(results).enumerate() {
        match result {
            Ok(outcome) => {
                if let Some(error) = &outcome.last_add_error {
                    eprintln!(
                        "{}: {} ADDs refused and retried, {} pods never got an address; the last refusal: {error}",
                        strategy.label, outcome.add_retries, outcome.pods_failed
                    );
                }
                if index == 0 {
                    baseline = Some(outcome.strategy.clone());
                }
                outcomes.push(outcome);
            }
            Err(e) => {
                eprintln!("wasmcni-host simulate: {e}");
                failed = true;
            }
        }
    }
    let report = Report::new(
        &trace.name,
        trace.adds(),
        baseline.as_deref(),
        &outcomes,
        args.with_samples,
    );
    match &args.json {
        Some(path) if path.as_os_str() == "-" => println!("{}", report.json()),
        Some(path) => {
            std::fs::write(path, report.json()).map_err(|e| io("write", path, e))?;
            print!("{}", report.table());
        }
        None => print!("{}", report.table()),
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, report::svg(&trace.name, &outcomes))
            .map_err(|e| io("write", path, e))?;
    }
    eprintln!(
        "{} strateg{} in {:.2} s",
        outcomes.len(),
        if outcomes.len() == 1 { "y" } else { "ies" },
        elapsed.as_secs_f64()
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
