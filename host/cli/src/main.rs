//! `wasmcni-host`: the privileged node daemon behind the `wasmcni` CNI shim.

mod approve;
mod push;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;
use wasmcni_cni::text::escape_controls;
use wasmcni_config::{ClusterConfig, ProviderKind};
use wasmcni_core::eni::EniProvider;
use wasmcni_daemon::server;
use wasmcni_datapath::netlink::NetlinkDatapath;
use wasmcni_ec2::Ec2Provider;

#[derive(Parser)]
#[command(
    name = "wasmcni-host",
    version,
    about = "wasmcni node daemon: IP pool, datastore and pod data path"
)]
struct Cli {
    /// Cluster configuration (TOML). Without it the embedded default (policies/default.toml) is used.
    #[arg(long, global = true, env = "WASMCNI_CONFIG")]
    config: Option<PathBuf>,
    /// A file with the `[trust]` table that applies whatever the cluster configuration says
    /// (keep it where plugin editors cannot write: the node image, a separate mount).
    #[arg(long, global = true, env = "WASMCNI_TRUST")]
    trust: Option<PathBuf>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Recover the datastore, reconcile the node and serve the CNI shim until SIGTERM/SIGINT.
    Run,
    /// Validate the cluster configuration and print it as the daemon understood it (JSON, with
    /// its defaults, as `inspect config` shows a running daemon's; an unset `datapath.mtu`
    /// stays unset: the daemon reads the uplink's when it starts).
    CheckConfig,
    /// For every plugin: verified digest, real imports and exports, grants, what is under- or
    /// over-granted, limits and failure policy. Exits 1 if a plugin would be refused.
    Audit {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Keep components pulled from registries here instead of the configuration's
        /// `<state_dir>/components` (for an audit away from a node).
        #[arg(long, value_name = "DIR")]
        component_cache: Option<PathBuf>,
        /// Instead of the report, print a reviewer's signed approval of this plugin with its
        /// grants, limits and failure policy (a DSSE envelope for `[trust] approvals`).
        #[arg(long, value_name = "PLUGIN", requires = "key")]
        approve: Option<String>,
        /// The reviewer's private key (`wasmcni-host keygen`, or an ed25519 PKCS#8 PEM).
        #[arg(long, value_name = "FILE", requires = "approve")]
        key: Option<PathBuf>,
        /// Add this signature to an existing approval of the same terms instead.
        #[arg(long, value_name = "FILE", requires = "approve")]
        cosign: Option<PathBuf>,
    },
    /// Work with plugin components in OCI registries.
    Plugin {
        #[command(subcommand)]
        command: PluginCommands,
    },
    /// Make a reviewer's ed25519 key pair: `<out>.key` (private, 0600) and `<out>.pub`.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long)]
        out: PathBuf,
    },
    /// Ask the running daemon (over its operations socket) what it holds: `pool` (who holds
    /// which address, on which ENI), `plugins` (digests, grants), `config` (effective),
    /// `audit` (recent plugin calls) or `metrics`.
    Inspect {
        /// pool, plugins, config, audit or metrics.
        what: String,
        /// Print the daemon's JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Operations socket (default: the configuration's `daemon.ops_socket`).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Compile one plugin component into the daemon's artifact cache. The daemon runs this in
    /// a child process for every component its cache lacks, so that the compiler's memory
    /// never becomes the daemon's; not meant to be run by hand.
    #[command(hide = true)]
    CompilePlugin {
        /// The artifact cache (`<state_dir>/plugin-cache`).
        #[arg(long)]
        cache_dir: PathBuf,
        /// The component's sha256 (`sha256:<hex>`); a file with another is refused.
        #[arg(long)]
        digest: String,
        /// The component file.
        component: PathBuf,
    },
    /// Read this node from IMDS (instance, zone, every ENI with its addresses and prefixes)
    /// and its instance-type limits from EC2, and print them with the max-pods figures.
    Discover {
        /// IMDS endpoint (default http://169.254.169.254).
        #[arg(long, env = "AWS_EC2_METADATA_SERVICE_ENDPOINT")]
        imds: Option<String>,
        /// EC2 endpoint (default: the region's).
        #[arg(long, env = "AWS_ENDPOINT_URL_EC2")]
        ec2: Option<String>,
    },
    /// Replay a pod-churn trace against allocation strategies in virtual time, each on a node
    /// of its own (the real daemon, warm pool, plugin runtime and EC2 provider; EC2 and IMDS
    /// answered in process by the EC2 model; no root, no namespaces), with `vpc-warm-pool` on
    /// VPC CNI's defaults as the baseline; print EC2 calls, idle addresses, ADD waits, /28
    /// fragmentation and ENIs (a table, `--json`, `--svg`).
    Simulate(simulate::Args),
}

#[derive(Subcommand)]
enum PluginCommands {
    /// Publish a built component as a Wasm OCI artifact and print the `[[plugins]]` lines
    /// that pin it by digest. Reaches the registry as `[registry]` of `--config` says, plus
    /// these options.
    Push {
        /// The component file.
        component: PathBuf,
        /// `oci://registry/repository[:tag]` (the tag is for people; nodes pull by digest).
        target: String,
        /// Reach the registry over plain HTTP (a loopback registry, a test).
        #[arg(long)]
        plain_http: bool,
        /// Trust this CA (PEM) beside the system's; repeatable.
        #[arg(long = "ca", value_name = "FILE")]
        ca_files: Vec<PathBuf>,
        /// Basic-auth user name (with --password-file).
        #[arg(long)]
        username: Option<String>,
        /// A file holding the password.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Print JSON (`oci`, `digest`, `kind`, `bytes`, `imports`).
        #[arg(long)]
        json: bool,
    },
}

fn load(config: Option<&PathBuf>) -> Result<ClusterConfig, wasmcni_config::ConfigError> {
    match config {
        Some(path) => ClusterConfig::load(path),
        None => ClusterConfig::embedded_default(),
    }
}

/// The daemon log's timestamps: RFC 3339 in UTC with milliseconds, as the shim's log and the
/// plugin audit log write them (one field schema: docs/operating.md).
struct Rfc3339Millis;

impl FormatTime for Rfc3339Millis {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(
            w,
            "{}",
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon's child compiler: no configuration, no log set-up; errors on stderr, which
    // the daemon keeps for its warning.
    if let Commands::CompilePlugin {
        cache_dir,
        digest,
        component,
    } = &cli.command
    {
        return compile_plugin(cache_dir, digest, component);
    }
    // A simulation runs whole daemons: their log is errors only unless WASMCNI_LOG says more.
    if matches!(cli.command, Commands::Simulate(_)) {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(
                EnvFilter::try_from_env("WASMCNI_LOG").unwrap_or_else(|_| EnvFilter::new("error")),
            )
            .init();
        if let Commands::Simulate(args) = cli.command {
            return simulate::run(args, cli.config.as_deref());
        }
    }
    let filter =
        || EnvFilter::try_from_env("WASMCNI_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // The daemon logs to its file (rotated) when the configuration names one, else to stderr;
    // every event carries the fields of the request it belongs to (verb, container, pod,
    // ifname).
    let loaded = load(cli.config.as_ref()).and_then(|mut config| {
        if let Some(pin) = &cli.trust {
            config.pin_trust(pin)?;
        }
        Ok(config)
    });
    let log_file = match (&cli.command, &loaded) {
        (Commands::Run, Ok(config)) => config.daemon.log_file.as_ref().map(|path| {
            wasmcni_telemetry::logfile::RotatingLog::open(
                path,
                config.daemon.log_max_bytes,
                config.daemon.log_keep,
            )
            .map_err(|e| format!("log file {}: {e}", path.display()))
        }),
        _ => None,
    };
    let writer = match log_file {
        Some(Ok(log)) => BoxMakeWriter::new(log),
        Some(Err(e)) => {
            eprintln!("wasmcni-host: {e}");
            return ExitCode::FAILURE;
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    tracing_subscriber::fmt()
        .json()
        .with_timer(Rfc3339Millis)
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(writer)
        .with_env_filter(filter())
        .init();
    let mut config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wasmcni-host: {e}");
            return ExitCode::from(2);
        }
    };
    // `audit` reads every component as the daemon would load it: those from registries are
    // pulled into the configuration's component cache first.
    if let Commands::Audit {
        component_cache, ..
    } = &cli.command
    {
        if let Some(dir) = component_cache {
            config.relocate_component_cache(dir);
        }
        if let Err(e) = fetch_components(&config) {
            eprintln!("wasmcni-host audit: {e}");
            return ExitCode::FAILURE;
        }
    }
    match cli.command {
        Commands::CheckConfig => match serde_json::to_string_pretty(&config) {
            Ok(text) => output(&text, ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("wasmcni-host: {e}");
                ExitCode::FAILURE
            }
        },
        Commands::Audit {
            approve: Some(plugin),
            key: Some(key),
            cosign,
            ..
        } => match approve::approve(&config, &plugin, &key, cosign.as_deref()) {
            Ok(text) => output(&text, ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("wasmcni-host audit --approve: {e}");
                ExitCode::FAILURE
            }
        },
        Commands::Audit { json, .. } => match wasmcni_daemon::audit::AuditReport::of(&config) {
            Err(e) => {
                eprintln!("wasmcni-host: {e}");
                ExitCode::FAILURE
            }
            Ok(report) => {
                let verdict = if report.is_clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
                if !json {
                    return output(report.render_table().trim_end(), verdict);
                }
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => output(&text, verdict),
                    Err(e) => {
                        eprintln!("wasmcni-host: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
        },
        Commands::Inspect { what, json, socket } => {
            let socket = socket.unwrap_or_else(|| config.ops_socket());
            match inspect(&socket, &what, json) {
                Ok(text) => output(&text, ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("wasmcni-host inspect: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Plugin {
            command:
                PluginCommands::Push {
                    component,
                    target,
                    plain_http,
                    ca_files,
                    username,
                    password_file,
                    json,
                },
        } => {
            let options = push::PushOptions {
                plain_http,
                ca_files,
                username,
                password_file,
                json,
            };
            match push::push(&config, &component, &target, options) {
                Ok(text) => output(&text, ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("wasmcni-host plugin push: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Keygen { out } => match approve::keygen(&out) {
            Ok(text) => output(&text, ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("wasmcni-host keygen: {e}");
                ExitCode::FAILURE
            }
        },
        Commands::Discover { imds, ec2 } => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("wasmcni-host: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(discover(imds, ec2)) {
                Ok(report) => output(&report, ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("wasmcni-host: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::CompilePlugin { .. } | Commands::Simulate(_) => {
            unreachable!("handled before the configuration")
        }
        Commands::Run => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("wasmcni-host: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let outcome = runtime.block_on(run(config, cli.config));
            // Blocking threads still running (a netlink deletion, a plugin call ending at its
            // next tick) get a moment, not a veto: SIGTERM ends the daemon within a second.
            runtime.shutdown_timeout(std::time::Duration::from_millis(300));
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "wasmcni-host stopped");
                    eprintln!("wasmcni-host: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Pulls every `[[plugins]]` entry from a registry that the component cache lacks.
fn fetch_components(config: &ClusterConfig) -> Result<(), String> {
    let specs: Vec<&wasmcni_core::PluginSpec> = config.plugin_specs().iter().collect();
    if specs.iter().all(|spec| spec.origin.is_none()) {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime
        .block_on(wasmcni_registry::ensure_cached(&specs, &config.registry))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `wasmcni-host compile-plugin`: compiles `component` (whose sha256 must be `digest`) with the
/// daemon's engine settings into `cache_dir`.
fn compile_plugin(
    cache_dir: &std::path::Path,
    digest: &str,
    component: &std::path::Path,
) -> ExitCode {
    let compiled = wasmcni_runtime::PluginRuntime::new()
        .and_then(|runtime| runtime.with_cache(cache_dir))
        .and_then(|runtime| runtime.precompile(component, digest));
    match compiled {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmcni-host compile-plugin: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes a command's output and a newline to stdout, then answers `status`. A reader that
/// went away (`wasmcni-host check-config | head`) ends the output early but is no failure of
/// the command; any other write error is.
fn output(text: &str, status: ExitCode) -> ExitCode {
    match write_output(&mut std::io::stdout().lock(), text) {
        Ok(()) => status,
        Err(e) => {
            eprintln!("wasmcni-host: writing the output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_output(out: &mut impl std::io::Write, text: &str) -> std::io::Result<()> {
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// `discover`: the node and its limits, as JSON.
async fn discover(
    imds: Option<String>,
    ec2: Option<String>,
) -> Result<String, wasmcni_ec2::Ec2Error> {
    use wasmcni_ec2 as ec2;
    let endpoints = ec2::Endpoints {
        ec2,
        imds,
        ..ec2::Endpoints::default()
    };
    let identity = ec2::discover(&ec2::imds_client(&endpoints)?).await?;
    let client = ec2::ec2_client(&identity.region, &endpoints).await;
    let limits = ec2::instance_limits(&client, &identity.instance_type).await?;
    let report = serde_json::json!({
        "node": identity,
        "limits": limits,
        "maxPods": {
            "secondaryIps": ec2::max_pods(&limits, false, false),
            "customNetworking": ec2::max_pods(&limits, true, false),
            "prefixDelegation": ec2::max_pods(&limits, false, true),
        },
    });
    serde_json::to_string_pretty(&report).map_err(|e| wasmcni_ec2::Ec2Error::Setup(e.to_string()))
}

/// One GET over the operations socket (plain HTTP/1.0, so no client library is needed).
fn ops_get(socket: &std::path::Path, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("{}: {e} (is wasmcni-host running?)", socket.display()))?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: wasmcni\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("reading the answer: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed answer: {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "{path}: {} {}",
            head.lines().next().unwrap_or(head),
            body.trim()
        ));
    }
    Ok(body.to_owned())
}

fn inspect(socket: &std::path::Path, what: &str, json: bool) -> Result<String, String> {
    let path = match what {
        "pool" => "/v1/pool",
        "plugins" => "/v1/plugins",
        "config" => "/v1/config",
        "audit" => "/v1/audit?n=50",
        "metrics" => return ops_get(socket, "/metrics"),
        other => {
            return Err(format!(
                "{other:?}: inspect pool, plugins, config, audit or metrics"
            ))
        }
    };
    let body = ops_get(socket, path)?;
    if json {
        return Ok(body.trim_end().to_owned());
    }
    let value: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{path}: not JSON: {e}"))?;
    Ok(match what {
        "pool" => pool_table(&value),
        "audit" => audit_lines(&value),
        _ => serde_json::to_string_pretty(&value).unwrap_or(body),
    })
}

fn pool_table(pool: &serde_json::Value) -> String {
    // A value the daemon left out or null (a static pool's addresses are on no ENI) is "-".
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let count = |field: &str| pool[field].as_array().map_or(0, Vec::len);
    // A dual-stack pool: each family apart (a pod needs one of each, and the /80's count
    // would hide an IPv4 pool running out).
    let kinds: Vec<&str> = pool["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["kind"].as_str())
        .collect();
    let dual = kinds.contains(&"ipv6-prefix") && kinds.iter().any(|k| *k != "ipv6-prefix");
    let free = if dual {
        format!(
            "{} free address(es) (IPv4 {}, IPv6 {})",
            pool["free"], pool["freeV4"], pool["freeV6"]
        )
    } else {
        format!("{} free address(es)", pool["free"])
    };
    let mut out = format!(
        "provider {}; {}; {} cooling; {} draining; {} held outside the store; pod MTU {}\n",
        text(&pool["provider"]),
        free,
        count("cooling"),
        count("draining"),
        count("heldOutsideStore"),
        text(&pool["podMtu"])
    );
    if let Some(enis) = pool["enis"].as_array().filter(|enis| !enis.is_empty()) {
        out.push_str("\nENI                    device  subnet                     primary IP\n");
        for eni in enis {
            out.push_str(&format!(
                "{:<22} {:<7} {:<26} {}\n",
                text(&eni["id"]),
                eni["device_number"],
                text(&eni["subnet_id"]),
                text(&eni["primary_ip"])
            ));
        }
    }
    let blocks = pool["blocks"].as_array().cloned().unwrap_or_default();
    let allocations = pool["allocations"].as_array().cloned().unwrap_or_default();
    // A dual-stack pod's two addresses in one column, IPv4 first.
    let addresses = |a: &serde_json::Value| match a["ipv6"].as_str() {
        Some(v6) => format!("{},{v6}", text(&a["ip"])),
        None => text(&a["ip"]),
    };
    // IPv6 pod addresses are wider than the IPv4 column.
    let width = allocations
        .iter()
        .map(|a| addresses(a).len())
        .max()
        .unwrap_or(0)
        .max(16);
    out.push_str(&format!(
        "\n{:<width$} {:<32} {:<22} {:<6} state\n",
        "IP", "pod", "ENI", "table"
    ));
    for a in allocations {
        let ip = text(&a["ip"]);
        let eni = blocks
            .iter()
            .find(|b| {
                let cidr: Option<ipnet::IpNet> = b["cidr"].as_str().and_then(|c| c.parse().ok());
                let ip: Option<std::net::IpAddr> = ip.parse().ok();
                matches!((cidr, ip), (Some(c), Some(i)) if c.contains(&i))
            })
            .map_or_else(|| "-".to_owned(), |b| text(&b["eni"]));
        out.push_str(&format!(
            "{:<width$} {:<32} {:<22} {:<6} {}\n",
            addresses(&a),
            a["pod"].as_str().unwrap_or("-"),
            eni,
            a["routeTable"]
                .as_u64()
                .map_or_else(|| "main".to_owned(), |t| t.to_string()),
            text(&a["state"])
        ));
    }
    out.trim_end().to_owned()
}

fn audit_lines(audit: &serde_json::Value) -> String {
    audit["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            // A plugin chose the result's text: no control character reaches the terminal.
            let text = |key: &str| escape_controls(e[key].as_str().unwrap_or("?"));
            let when = match (&e["timestamp"], e["tsMs"].as_u64()) {
                (serde_json::Value::String(when), _) => escape_controls(when),
                // A line an older daemon wrote, before the shared log schema: milliseconds.
                (_, Some(ms)) => wasmcni_runtime::timestamp_of_unix_ms(ms).to_string(),
                _ => "?".to_owned(),
            };
            format!(
                "{when} {:<16} {:<10} {:<8} {}",
                text("plugin"),
                text("call"),
                text("outcome"),
                text("result")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn run(
    config: ClusterConfig,
    path: Option<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let socket = config.daemon.socket.clone();
    // Bind first: it refuses to run beside another daemon before the datastore is touched, and
    // shims that connect during recovery wait in the backlog instead of spooling their DELs.
    let listener = server::bind(&socket)?;
    let ops_socket = config.ops_socket();
    let ops = server::bind_ops(&config).await?;
    let datapath = NetlinkDatapath::connect()?;
    let ec2: Option<Arc<dyn EniProvider>> = match config.provider.kind {
        ProviderKind::Ec2 => Some(Arc::new(
            Ec2Provider::start(&config.ec2(), &config.cluster.name)
                .await
                .map_err(server::StartError::Provider)?,
        )),
        ProviderKind::Static => None,
    };
    // Components missing from the plugin cache are compiled by a child process (this binary),
    // so that the compiler's memory never becomes the daemon's.
    let compiler = wasmcni_runtime::Compiler::this_executable("compile-plugin");
    let (handler, _report) = server::start(config, datapath, ec2, compiler).await?;
    tracing::info!(socket = %socket.display(), "ready");
    // A changed configuration file (or SIGHUP) swaps the plugins without a restart.
    let watcher = path.map(|path| {
        server::plugins::watch(handler.clone(), path, std::time::Duration::from_secs(2))
    });
    let shutdown = async {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM; stop with SIGINT");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    server::serve(handler, listener, Some(ops), shutdown).await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&ops_socket);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_to_a_reader_that_went_away_is_not_a_failure() {
        // `wasmcni-host check-config | head -1`: head exits after one line.
        let (reader, mut writer) = std::io::pipe().unwrap();
        drop(reader);
        write_output(&mut writer, "{\n  \"cluster\": {}\n}")
            .expect("a closed pipe ends the output quietly");
        // Any other failure to write still is one.
        let mut full = std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let error = write_output(&mut full, "text").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28), "{error}");
    }

    #[test]
    fn the_pool_table_of_a_static_pool_shows_no_null() {
        let pool = serde_json::json!({
            "provider": "static",
            "podMtu": 1400,
            "free": 253,
            "cooling": [],
            "enis": [],
            "blocks": [{ "cidr": "10.88.0.0/24", "eni": null, "routeTable": null }],
            "allocations": [{ "ip": "10.88.0.2", "pod": "default/web", "routeTable": null, "state": "committed" }],
        });
        let table = pool_table(&pool);
        assert!(!table.contains("null"), "{table}");
        assert!(
            table.lines().next().unwrap().ends_with("pod MTU 1400"),
            "{table}"
        );
        let row = table.lines().last().unwrap();
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            columns,
            ["10.88.0.2", "default/web", "-", "main", "committed"],
            "{table}"
        );
        // A dual-stack pod: both addresses, IPv4 first.
        let mut dual = pool.clone();
        dual["allocations"][0]["ipv6"] = serde_json::json!("fd00:88::2");
        dual["blocks"] = serde_json::json!([
            { "cidr": "10.88.0.0/24", "kind": "static-range" },
            { "cidr": "fd00:88::/120", "kind": "ipv6-prefix" },
        ]);
        dual["freeV4"] = serde_json::json!(0);
        dual["freeV6"] = serde_json::json!(253);
        let table = pool_table(&dual);
        assert!(
            table
                .lines()
                .next()
                .unwrap()
                .contains("253 free address(es) (IPv4 0, IPv6 253)"),
            "{table}"
        );
        let row = table.lines().last().unwrap();
        assert_eq!(
            row.split_whitespace().next(),
            Some("10.88.0.2,fd00:88::2"),
            "{table}"
        );
    }

    #[test]
    fn audit_lines_read_both_schemas_and_escape_what_plugins_wrote() {
        let audit = serde_json::json!({ "entries": [
            { "timestamp": "2026-12-04T15:20:01.123Z", "plugin": "pack", "call": "allocate",
              "outcome": "error", "result": "no\nfake line\u{1b}[31m" },
            // A line an older daemon wrote.
            { "tsMs": 1_764_851_234_567_u64, "plugin": "pack", "call": "allocate",
              "outcome": "ok", "result": "10.0.0.5" },
        ]});
        let text = audit_lines(&audit);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("2026-12-04T15:20:01.123Z pack"),
            "{text}"
        );
        assert!(!lines[0].contains('\u{1b}'), "{text}");
        assert!(
            lines[1].starts_with("2025-12-04T12:27:14.567Z pack"),
            "{text}"
        );
        assert!(lines[1].ends_with("10.0.0.5"), "{text}");
    }
}
