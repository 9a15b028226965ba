//! `ec2-emulator`: the EC2 API and IMDS on loopback, seeded with a VPC, subnets in one AZ and
//! a node instance, for the demo and for poking at by hand.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ec2_emulator::{
    ActionClass, BucketConfig, Emulator, FaultConfig, HypervisorConfig, InjectedError, Scenario,
};

/// Serve an emulated EC2 API and IMDS on loopback.
#[derive(Debug, Parser)]
#[command(name = "ec2-emulator", version)]
struct Args {
    /// Seed of every id, MAC, chosen address and injected fault.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Instance type of the node instance IMDS speaks for.
    #[arg(long, default_value = "t3.medium")]
    instance_type: String,
    /// Give the VPC an IPv6 /56 and each subnet a /64.
    #[arg(long)]
    ipv6: bool,
    /// Address of the EC2 API listener.
    #[arg(long, default_value = "127.0.0.1:0")]
    ec2_listen: SocketAddr,
    /// Address of the IMDS listener.
    #[arg(long, default_value = "127.0.0.1:0")]
    imds_listen: SocketAddr,
    /// Throttle with EC2's default token buckets (non-mutating 100 @ 20/s, mutating 200 @ 5/s).
    #[arg(long)]
    throttle: bool,
    /// Token bucket of non-mutating actions, CAPACITY/REFILL_PER_SECOND (e.g. 10/2).
    #[arg(long, value_parser = parse_bucket)]
    throttle_describe: Option<BucketConfig>,
    /// Token bucket of mutating actions, CAPACITY/REFILL_PER_SECOND.
    #[arg(long, value_parser = parse_bucket)]
    throttle_mutating: Option<BucketConfig>,
    /// Probability (0..1) of answering a request with an injected server error.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Probability (0..1) of answering a request RequestLimitExceeded (drawn before and
    /// independently of --error-rate).
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    /// The injected error: internal (500 InternalError) or unavailable (503 Unavailable).
    #[arg(long, default_value = "internal", value_parser = parse_error_kind)]
    error_kind: InjectedError,
    /// Milliseconds added before every EC2 response.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Milliseconds before new ENIs and addresses show in IMDS.
    #[arg(long, default_value_t = 0)]
    imds_lag_ms: u64,
    /// Answer IMDS GETs without a session token (IMDSv1).
    #[arg(long)]
    allow_imdsv1: bool,
    /// Hypervisor mode: create a link per attached ENI in this namespace (/run/netns/NAME).
    #[arg(long)]
    node_netns: Option<String>,
    /// Make the links veths with their peers in this namespace (default: dummy links).
    #[arg(long, requires = "node_netns")]
    fabric_netns: Option<String>,
    /// Node-side link names: PREFIX + device index.
    #[arg(long, default_value = "eth", requires = "node_netns")]
    link_prefix: String,
}

fn parse_bucket(text: &str) -> Result<BucketConfig, String> {
    let (capacity, rate) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not CAPACITY/REFILL_PER_SECOND"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<f64>()
            .map_err(|e| format!("{s:?} in {text:?}: {e}"))
    };
    Ok(BucketConfig::new(number(capacity)?, number(rate)?))
}

fn parse_error_kind(text: &str) -> Result<InjectedError, String> {
    match text {
        "internal" => Ok(InjectedError::InternalError),
        "unavailable" => Ok(InjectedError::Unavailable),
        "throttle" => Ok(InjectedError::Throttle),
        other => Err(format!(
            "{other:?}: expected internal, unavailable or throttle"
        )),
    }
}

fn scenario(args: &Args) -> Scenario {
    let mut faults = FaultConfig {
        error_rate: args.error_rate,
        error_kind: args.error_kind,
        throttle_rate: args.throttle_rate,
        latency: Duration::from_millis(args.latency_ms),
        imds_lag: Duration::from_millis(args.imds_lag_ms),
        ..FaultConfig::default()
    };
    if args.throttle {
        faults = faults.with_ec2_throttling();
    }
    for (class, bucket) in [
        (ActionClass::NonMutating, args.throttle_describe),
        (ActionClass::Mutating, args.throttle_mutating),
    ] {
        if let Some(bucket) = bucket {
            faults.throttling.insert(class, bucket);
        }
    }
    let mut scenario = Scenario::default()
        .with_seed(args.seed)
        .with_node_instance_type(&args.instance_type)
        .with_faults(faults);
    scenario.ec2_listen = args.ec2_listen;
    scenario.imds_listen = args.imds_listen;
    if args.ipv6 {
        scenario = scenario.with_ipv6();
    }
    if let Some(node) = &args.node_netns {
        let mut hypervisor = HypervisorConfig::new(node).with_link_prefix(&args.link_prefix);
        if let Some(fabric) = &args.fabric_netns {
            hypervisor = hypervisor.with_fabric(fabric);
        }
        scenario = scenario.with_hypervisor(hypervisor);
    }
    scenario
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let emulator = match Emulator::start(scenario(&args)).await {
        Ok(emulator) => emulator,
        Err(e) => {
            eprintln!("ec2-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    emulator.allow_imdsv1(args.allow_imdsv1);
    println!("EC2_URL={}", emulator.ec2_url());
    println!("IMDS_URL={}", emulator.imds_url());
    if let Some(resources) = emulator.resources() {
        println!("VPC_ID={}", resources.vpc_id);
        println!("SECURITY_GROUP_ID={}", resources.security_group_id);
        println!("SUBNET_IDS={}", resources.subnet_ids.join(","));
        if let Some(instance) = &resources.instance_id {
            println!("INSTANCE_ID={instance}");
        }
        if let Some(eni) = &resources.primary_eni_id {
            println!("PRIMARY_ENI_ID={eni}");
            let primary = emulator.with_model(|m| {
                m.network_interface(eni)
                    .map(|e| (e.private_ip_address, e.subnet_id.clone()))
            });
            if let Some((ip, subnet)) = primary {
                println!("PRIMARY_IP={ip}");
                let cidr = emulator.with_model(|m| m.subnet(&subnet).map(|s| s.cidr_block));
                if let Some(cidr) = cidr {
                    println!("PRIMARY_SUBNET_CIDR={cidr}");
                }
            }
        }
    }
    eprintln!("ec2-emulator: serving; Ctrl-C or SIGTERM stops it");
    wait_for_stop().await;
    match emulator.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ec2-emulator: removing hypervisor links: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
