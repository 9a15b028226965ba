//! The Wasm cost of wasmcni's plugins, measured in one run against the built-in allocator:
//!
//! - per ADD: the allocator's `allocate` plus one policy hook's `evaluate`, each in a fresh
//!   instance from the pooling allocator, as the daemon runs them;
//! - daemon start-up with four plugins (pack, vpc-warm-pool, cluster-tags, namespace-guard):
//!   engine + digest checks + compile (cold) or deserialize (precompiled cache) + link.
//!
//! A measurement: it asserts nothing.
//!
//! Run: `cargo run --release -p wasmcni-plugin-build && cargo bench -p wasmcni-runtime --bench plugin_call`

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmcni_core::ipam::{AddressBlock, BlockKind, Inventory, Pool};
use wasmcni_core::{
    Attachment, Capability, Grants, PluginKind, PluginSpec, PodInfo, PoolSnapshot, Verb,
};
use wasmcni_runtime::{digest_of_file, PluginRuntime};

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * q).round() as usize]
}

fn spec(dir: &Path, name: &str, kind: PluginKind, grants: &[Capability]) -> PluginSpec {
    let path = dir.join(format!("{name}.wasm"));
    let digest = digest_of_file(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the plugins first: cargo run --release -p wasmcni-plugin-build",
            path.display()
        )
    });
    let mut spec = PluginSpec::new(name, kind, path, digest, Grants::of(grants));
    match kind {
        PluginKind::Allocator => {
            spec.grants.eni_ops.subnets = ["node".to_owned()].into();
            spec.grants.eni_ops.security_groups = ["node".to_owned()].into();
        }
        PluginKind::Tagger => {
            spec.tag_keys = [
                "wasmcni.io/cluster",
                "wasmcni.io/instance-id",
                "wasmcni.io/created-at",
            ]
            .map(String::from)
            .into();
        }
        PluginKind::Policy => {
            spec.grants.netlink.mtu = Some((1280, 9001));
            spec.settings = [("allow_namespaces".to_owned(), "default, team-*".to_owned())].into();
        }
    }
    spec
}

/// Loads every spec on a fresh runtime (with `cache` if given); returns the wall time.
fn start_up(specs: &[PluginSpec], cache: Option<&Path>) -> Duration {
    let started = Instant::now();
    let mut runtime = PluginRuntime::new().expect("engine");
    if let Some(dir) = cache {
        runtime = runtime.with_cache(dir).expect("cache");
    }
    for spec in specs {
        std::hint::black_box(runtime.load(spec).expect("load"));
    }
    started.elapsed()
}

fn main() {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("plugins");
    let allocator_grants = [Capability::PoolView, Capability::EniOps, Capability::Log];
    let four = [
        spec(&dir, "pack", PluginKind::Allocator, &allocator_grants),
        spec(
            &dir,
            "vpc-warm-pool",
            PluginKind::Allocator,
            &allocator_grants,
        ),
        spec(
            &dir,
            "cluster-tags",
            PluginKind::Tagger,
            &[Capability::Log, Capability::Clock],
        ),
        spec(
            &dir,
            "namespace-guard",
            PluginKind::Policy,
            &[Capability::Netlink, Capability::Log],
        ),
    ];

    // Start-up: cold (compile all four) and with the precompiled cache.
    let cache = tempfile::tempdir().expect("tempdir");
    let cache_dir = cache.path().join("plugin-cache");
    let mut cold = Vec::new();
    for _ in 0..5 {
        let fresh = tempfile::tempdir().expect("tempdir");
        cold.push(start_up(&four, Some(&fresh.path().join("c"))));
    }
    start_up(&four, Some(&cache_dir)); // fill the cache
    let mut warm: Vec<Duration> = (0..20).map(|_| start_up(&four, Some(&cache_dir))).collect();

    // Per ADD: pack's allocate + namespace-guard's evaluate, fresh instances.
    let runtime = PluginRuntime::new().expect("engine");
    let pack = runtime.load(&four[0]).expect("pack");
    let guard = runtime.load(&four[3]).expect("namespace-guard");
    let inventory = Inventory {
        blocks: vec![AddressBlock {
            cidr: "10.88.0.0/24".parse().expect("a valid CIDR"),
            route_table: None,
            kind: BlockKind::StaticRange,
            eni_id: None,
        }],
        excluded: Default::default(),
        ipv6: Vec::new(),
        excluded_v6: Default::default(),
    };
    let in_use: Vec<Ipv4Addr> = (1..=100).map(|i| Ipv4Addr::new(10, 88, 0, i)).collect();
    let pod = PodInfo {
        namespace: Some("team-a".into()),
        name: Some("web".into()),
        container_id: "c0".into(),
        ifname: "eth0".into(),
        ..PodInfo::default()
    };
    let iterations = 2000;
    let (mut allocate, mut evaluate, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iterations {
        let snapshot = PoolSnapshot::of_static(inventory.clone(), in_use.clone());
        let started = Instant::now();
        let ip = pack.allocate(snapshot, &pod).expect("allocate");
        let allocated = started.elapsed();
        let attachment = Attachment {
            verb: Verb::Add,
            pod: pod.clone(),
            addresses: vec![ipnet::IpNet::V4(ipnet::Ipv4Net::from(ip))],
            eni_id: None,
            subnet_id: None,
            chained: false,
        };
        let hook_started = Instant::now();
        std::hint::black_box(guard.evaluate(&attachment).expect("evaluate"));
        let hooked = hook_started.elapsed();
        allocate.push(allocated);
        evaluate.push(hooked);
        both.push(allocated + hooked);
    }
    // The floor: a fresh instance and one call of a component that imports nothing and
    // answers a constant (the `reserved-tags` test tagger; its answer is refused, as always).
    let trivial = runtime
        .load(&spec(&dir, "reserved-tags", PluginKind::Tagger, &[]))
        .expect("reserved-tags");
    let request = wasmcni_core::EniTagRequest::default();
    let mut floor: Vec<Duration> = (0..iterations)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(trivial.tags(&request, 0).is_err());
            started.elapsed()
        })
        .collect();
    let mut builtin = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let mut pool = Pool::new(inventory.clone());
        let started = Instant::now();
        let choice = pool.choose(|ip| in_use.contains(&ip));
        builtin.push(started.elapsed());
        std::hint::black_box(choice);
    }

    let us = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6);
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
    println!("\n| what | median | p90 |");
    println!("|---|---|---|");
    println!(
        "| start-up, four plugins, cold (engine + digests + Cranelift compile + link), 5 runs | {} ms | {} ms |",
        ms(percentile(&mut cold, 0.5)),
        ms(percentile(&mut cold, 0.9))
    );
    println!(
        "| start-up, four plugins, precompiled cache (engine + digests + deserialize + link), 20 runs | {} ms | {} ms |",
        ms(percentile(&mut warm, 0.5)),
        ms(percentile(&mut warm, 0.9))
    );
    println!(
        "| per ADD: pack `allocate` + namespace-guard `evaluate`, fresh instances, /24 with 100 pods, {iterations} runs | {} µs | {} µs |",
        us(percentile(&mut both, 0.5)),
        us(percentile(&mut both, 0.9))
    );
    println!(
        "| of which pack `allocate` | {} µs | {} µs |",
        us(percentile(&mut allocate, 0.5)),
        us(percentile(&mut allocate, 0.9))
    );
    println!(
        "| of which namespace-guard `evaluate` | {} µs | {} µs |",
        us(percentile(&mut evaluate, 0.5)),
        us(percentile(&mut evaluate, 0.9))
    );
    println!(
        "| floor: fresh instance + one call of a component that imports nothing | {} µs | {} µs |",
        us(percentile(&mut floor, 0.5)),
        us(percentile(&mut floor, 0.9))
    );
    println!(
        "| built-in allocator, same pool, {iterations} runs | {} µs | {} µs |",
        us(percentile(&mut builtin, 0.5)),
        us(percentile(&mut builtin, 0.9))
    );
}
