//! The Wasm cost of an allocation: loading the `pack` component (digest check, Cranelift
//! compile, link) and one `allocate` call in a fresh store, against the built-in allocator
//! choosing from the same pool, measured in the same run. A measurement: it asserts nothing.
//!
//! Run: `cargo run --release -p wasmcni-plugin-build && cargo bench -p wasmcni --bench plugin_call`

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmcni::ipam::{AddressBlock, Inventory, Pool};
use wasmcni::runtime::{
    digest_of_file, Capability, Limits, PluginRuntime, PluginSpec, PodInfo, PoolSnapshot,
};

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * q).round() as usize]
}

fn main() {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("plugins/pack.wasm");
    let spec = PluginSpec {
        name: "pack".into(),
        digest: digest_of_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (build the plugins first)", path.display())),
        path,
        grants: Capability::ALL.into_iter().collect(),
        limits: Limits::default(),
    };
    let inventory = Inventory {
        blocks: vec![AddressBlock {
            cidr: "10.88.0.0/24".parse().expect("cidr"),
            route_table: None,
            source: "static".into(),
        }],
        excluded: Default::default(),
    };
    // A node with 100 pods: every other address of the first 200 in use.
    let in_use: Vec<Ipv4Addr> = (0..100u32)
        .map(|i| Ipv4Addr::from(0x0a58_0001 + 2 * i))
        .collect();
    let pod = PodInfo {
        namespace: Some("default".into()),
        name: Some("web".into()),
        container_id: "c1".into(),
        ifname: "eth0".into(),
    };

    let runtime = PluginRuntime::new().expect("engine");
    let mut loads = Vec::new();
    let mut plugin = None;
    for _ in 0..10 {
        let started = Instant::now();
        plugin = Some(runtime.load_allocator(&spec).expect("load pack"));
        loads.push(started.elapsed());
    }
    let plugin = plugin.expect("loaded");
    // With the precompiled cache (what a daemon restart sees): first load fills it.
    let cache = std::env::temp_dir().join(format!("wasmcni-bench-cache-{}", std::process::id()));
    let cached_runtime = PluginRuntime::new()
        .and_then(|r| r.with_cache(&cache))
        .expect("cache");
    cached_runtime
        .load_allocator(&spec)
        .expect("fill the cache");
    let mut cached_loads = Vec::new();
    for _ in 0..10 {
        let fresh = PluginRuntime::new()
            .and_then(|r| r.with_cache(&cache))
            .expect("cache");
        let started = Instant::now();
        fresh
            .load_allocator(&spec)
            .expect("load pack from the cache");
        cached_loads.push(started.elapsed());
    }
    let _ = std::fs::remove_dir_all(&cache);

    let iterations = 2000;
    let mut calls = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let snapshot = PoolSnapshot {
            inventory: inventory.clone(),
            in_use: in_use.clone(),
        };
        let started = Instant::now();
        let ip = plugin.allocate(snapshot, &pod).expect("allocate");
        calls.push(started.elapsed());
        std::hint::black_box(ip);
    }
    let mut builtin = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let mut pool = Pool::new(inventory.clone());
        let started = Instant::now();
        let choice = pool.choose(|ip| in_use.contains(&ip));
        builtin.push(started.elapsed());
        std::hint::black_box(choice);
    }
    let us = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6);
    println!("\n| what | median (µs) | p90 (µs) |");
    println!("|---|---|---|");
    println!(
        "| load pack (digest + compile + link), 10 runs | {} | {} |",
        us(percentile(&mut loads, 0.5)),
        us(percentile(&mut loads, 0.9))
    );
    println!(
        "| load pack from the precompiled cache (digest + deserialize + link), 10 runs | {} | {} |",
        us(percentile(&mut cached_loads, 0.5)),
        us(percentile(&mut cached_loads, 0.9))
    );
    println!("| pack `allocate`: fresh store + instantiate + call, /24 with 100 pods, {iterations} runs | {} | {} |", us(percentile(&mut calls, 0.5)), us(percentile(&mut calls, 0.9)));
    println!(
        "| built-in allocator, same pool, {iterations} runs | {} | {} |",
        us(percentile(&mut builtin, 0.5)),
        us(percentile(&mut builtin, 0.9))
    );
}
