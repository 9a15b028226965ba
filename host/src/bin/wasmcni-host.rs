//! `wasmcni-host`: the privileged node daemon behind the `wasmcni` CNI shim.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wasmcni::config::ClusterConfig;
use wasmcni::datapath::netlink::NetlinkDatapath;
use wasmcni::server;

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
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Recover the datastore, reconcile the node and serve the CNI shim until SIGTERM/SIGINT.
    Run,
    /// Validate the cluster configuration and print it as the daemon understood it.
    CheckConfig,
    /// For every plugin: verified digest, real imports and exports, grants, what is under- or
    /// over-granted, limits and failure policy. Exits 1 if a plugin would be refused.
    Audit {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
}

fn load(config: Option<&PathBuf>) -> Result<ClusterConfig, wasmcni::config::ConfigError> {
    match config {
        Some(path) => ClusterConfig::load(path),
        None => ClusterConfig::embedded_default(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("WASMCNI_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = match load(cli.config.as_ref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wasmcni-host: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Commands::CheckConfig => {
            println!("{config:#?}");
            ExitCode::SUCCESS
        }
        Commands::Audit { json } => match wasmcni::audit::AuditReport::of(&config) {
            Err(e) => {
                eprintln!("wasmcni-host: {e}");
                ExitCode::FAILURE
            }
            Ok(report) => {
                if json {
                    match serde_json::to_string_pretty(&report) {
                        Ok(text) => println!("{text}"),
                        Err(e) => {
                            eprintln!("wasmcni-host: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                } else {
                    print!("{}", report.render_table());
                }
                if report.is_clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
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
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("wasmcni-host: {e}");
                    ExitCode::FAILURE
                }
            }
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
            match runtime.block_on(run(config, cli.config)) {
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

/// `discover`: the node and its limits, as JSON.
async fn discover(
    imds: Option<String>,
    ec2: Option<String>,
) -> Result<String, wasmcni::ec2::Ec2Error> {
    use wasmcni::ec2;
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
    serde_json::to_string_pretty(&report).map_err(|e| wasmcni::ec2::Ec2Error::Setup(e.to_string()))
}

async fn run(
    config: ClusterConfig,
    path: Option<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let socket = config.daemon.socket.clone();
    // Bind first: it refuses to run beside another daemon before the datastore is touched, and
    // shims that connect during recovery wait in the backlog instead of spooling their DELs.
    let listener = server::bind(&socket)?;
    let datapath = NetlinkDatapath::connect()?;
    let (handler, _report) = server::start(config, datapath).await?;
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
    server::serve(handler, listener, shutdown).await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
