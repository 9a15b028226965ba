//! What a plugin written in Python or JavaScript costs beside one written in Rust, measured in
//! one run: the namespace-subnets allocator in Python (`ns-subnets-py`, componentize-py) and
//! in JavaScript (`ns-subnets-js`, componentize-js), against the same strategy in Rust
//! (`ns-subnets`) and `pack` and `vpc-warm-pool`, each on the same EC2 node (3 ENIs of 9 secondary addresses, 13 held).
//!
//! Per plugin: component size; compile time (cold, no cache) and load time (precompiled
//! cache); `allocate` and `plan` wall time (fresh instance each call, as the daemon runs
//! them); fuel per call (the runtime's own counter); and the least memory limit, in MiB, under
//! which `allocate` and `plan` both succeed (found by trying limits). A measurement: it
//! asserts nothing.
//!
//! Run: `./target/release/wasmcni-plugin-build && cargo bench -p wasmcni-runtime --bench interpreted`
//! (the Python and JavaScript plugins need their toolchains: scripts/install-deps.sh).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmcni_core::ipam::{AddressBlock, BlockKind, Inventory};
use wasmcni_core::pool_view::ProviderKind;
use wasmcni_core::{
    Capability, EniInfo, Grants, NodeInfo, NodeLimits, PluginKind, PluginSpec, PodInfo,
    PoolSnapshot, SubnetInfo,
};
use wasmcni_runtime::{digest_of_file, PluginRuntime};
use wasmcni_telemetry::metrics::{Metrics, PluginCallLabel};

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * 0.99).round() as usize]
}

fn spec(dir: &Path, name: &str) -> PluginSpec {
    let path = dir.join(format!("{name}.wasm"));
    let digest = digest_of_file(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the plugins first (wasmcni-plugin-build)",
            path.display()
        )
    });
    let mut grants = Grants::of(&[Capability::PoolView, Capability::EniOps, Capability::Log]);
    if name.ends_with("-py") {
        grants.capabilities.insert(Capability::Wasi);
    }
    grants.eni_ops.subnets = ["node", "subnet-0000000b"].map(String::from).into();
    grants.eni_ops.security_groups = ["node".to_owned()].into();
    let mut spec = PluginSpec::new(name, PluginKind::Allocator, path, digest, grants);
    spec.settings = [
        ("NAMESPACES", "team-a=subnet-0000000b"),
        ("WARM_IPS", "4"),
        ("WARM_IP_TARGET", "4"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    spec.limits.memory_bytes = 64 << 20;
    spec.limits.fuel = 2_000_000_000;
    for export in [wasmcni_core::Export::Allocate, wasmcni_core::Export::Plan] {
        spec.limits.deadline_ms.insert(export, 5_000);
    }
    spec
}

/// Three ENIs (the primary and one shared in the node's subnet, one in team-a's), 9 secondary
/// addresses each, the first 13 of them held.
fn node() -> PoolSnapshot {
    let eni = |n: u32, subnet: &str| EniInfo {
        id: format!("eni-{n}"),
        device_number: n,
        primary: n == 0,
        subnet_id: subnet.into(),
        subnet_cidr: "10.0.0.0/16".parse().expect("a valid network"),
        security_groups: vec!["sg-0000000a".into()],
        primary_ip: Ipv4Addr::new(10, 0, n as u8, 10),
        age_ms: 600_000,
        tags: vec![],
        owned: true,
    };
    let enis = vec![
        eni(0, "subnet-0000000a"),
        eni(1, "subnet-0000000a"),
        eni(2, "subnet-0000000b"),
    ];
    let blocks = (0..3u8)
        .flat_map(|e| {
            (1..=9u8).map(move |i| AddressBlock {
                cidr: format!("10.0.{e}.{}/32", 10 + i)
                    .parse()
                    .expect("a valid network"),
                route_table: None,
                kind: BlockKind::SecondaryIp,
                eni_id: Some(format!("eni-{e}")),
            })
        })
        .collect::<Vec<_>>();
    let in_use = blocks.iter().take(13).map(|b| b.cidr.addr()).collect();
    let subnet = |id: &str| SubnetInfo {
        id: id.into(),
        cidr: "10.0.0.0/16".parse().expect("a valid network"),
        free_addresses: 4000,
        tags: vec![],
    };
    PoolSnapshot {
        node: NodeInfo {
            provider: ProviderKind::Ec2,
            instance_id: "i-0000000a".into(),
            instance_type: "m5.xlarge".into(),
            availability_zone: "us-west-2a".into(),
            vpc_cidrs: vec!["10.0.0.0/16".parse().expect("a valid network")],
            limits: NodeLimits {
                max_enis: 4,
                ipv4_per_eni: 15,
                prefix_delegation: false,
                max_pods: 58,
            },
        },
        enis,
        subnets: vec![subnet("subnet-0000000a"), subnet("subnet-0000000b")],
        inventory: Inventory {
            blocks,
            ..Inventory::default()
        },
        in_use,
        ..PoolSnapshot::default()
    }
}

fn fuel(name: &str, call: &str) -> u64 {
    Metrics::global()
        .plugin_fuel
        .get_or_create(&PluginCallLabel {
            plugin: name.to_owned(),
            call: call.to_owned(),
        })
        .get()
}

fn main() {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("plugins");
    let pod = PodInfo {
        namespace: Some("team-a".into()),
        name: Some("web".into()),
        container_id: "c0".into(),
        ifname: "eth0".into(),
        ..PodInfo::default()
    };
    println!(
        "| plugin | component | compile (cold) | load (cached) | allocate p50 / p99 | plan p50 / p99 | fuel allocate / plan | least memory limit |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for name in [
        "pack",
        "vpc-warm-pool",
        "ns-subnets",
        "ns-subnets-js",
        "ns-subnets-py",
    ] {
        let spec = spec(&dir, name);
        let size = std::fs::metadata(&spec.path).map(|m| m.len()).unwrap_or(0);
        let cold_cache = tempfile::tempdir().expect("tempdir");
        let started = Instant::now();
        let runtime = PluginRuntime::new()
            .and_then(|r| r.with_cache(&cold_cache.path().join("c")))
            .expect("runtime");
        runtime.load(&spec).unwrap_or_else(|e| panic!("{e}"));
        let compile = started.elapsed();
        let mut loads: Vec<Duration> = (0..5)
            .map(|_| {
                let started = Instant::now();
                let runtime = PluginRuntime::new()
                    .and_then(|r| r.with_cache(&cold_cache.path().join("c")))
                    .expect("runtime");
                std::hint::black_box(runtime.load(&spec).expect("load"));
                started.elapsed()
            })
            .collect();
        let plugin = runtime.load(&spec).expect("load");
        let (allocate_fuel, plan_fuel) = (fuel(name, "allocate"), fuel(name, "plan"));
        let calls = if name.ends_with("-py") || name.ends_with("-js") {
            200
        } else {
            2000
        };
        let mut allocate: Vec<Duration> = (0..calls)
            .map(|_| {
                let snapshot = node();
                let started = Instant::now();
                plugin.allocate(snapshot, &pod).expect("allocate");
                started.elapsed()
            })
            .collect();
        let mut plan: Vec<Duration> = (0..calls / 4)
            .map(|_| {
                let snapshot = node();
                let started = Instant::now();
                plugin.plan(snapshot).expect("plan");
                started.elapsed()
            })
            .collect();
        let per_allocate = (fuel(name, "allocate") - allocate_fuel) / calls as u64;
        let per_plan = (fuel(name, "plan") - plan_fuel) / (calls / 4) as u64;
        // The least memory limit (whole MiB) under which init, allocate and plan succeed.
        let fits = |mib: usize| {
            let mut limited = spec.clone();
            limited.limits.memory_bytes = mib << 20;
            runtime.load(&limited).is_ok_and(|plugin| {
                plugin.allocate(node(), &pod).is_ok() && plugin.plan(node()).is_ok()
            })
        };
        let (mut low, mut high) = (0usize, 64usize);
        while high - low > 1 {
            let mid = (low + high) / 2;
            if fits(mid) {
                high = mid;
            } else {
                low = mid;
            }
        }
        println!(
            "| {name} | {:.1} MB | {:.2} s | {:.1} ms | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {:.2} M / {:.2} M | {high} MiB |",
            size as f64 / 1e6,
            compile.as_secs_f64(),
            median(&mut loads).as_secs_f64() * 1e3,
            median(&mut allocate).as_secs_f64() * 1e6,
            p99(&mut allocate).as_secs_f64() * 1e6,
            median(&mut plan).as_secs_f64() * 1e6,
            p99(&mut plan).as_secs_f64() * 1e6,
            per_allocate as f64 / 1e6,
            per_plan as f64 / 1e6,
        );
    }
}
