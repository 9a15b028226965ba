//! Daemon start-up with four plugins from an OCI registry beside the same four from files,
//! measured in one run against Debian's docker-registry on loopback (plain HTTP and TLS):
//!
//! - files: engine + digest checks + deserialize from the precompiled cache + link (the
//!   reference: what a start costs today);
//! - registry, cold: the component cache empty, all four pulled (manifest, blob, digests,
//!   rename), then loaded as from files;
//! - registry, warm: all four in the component cache (each file hashed), then loaded.
//!
//! A measurement: it asserts nothing. Needs the plugins built and docker-registry installed.
//!
//! Run: `cargo run --release -p wasmcni-plugin-build && cargo bench -p wasmcni-registry --bench startup`

use std::path::Path;
use std::time::{Duration, Instant};

use wasmcni_config::{ClusterConfig, RegistryConfig};
use wasmcni_core::PluginSpec;
use wasmcni_harness::plugin_entry;
use wasmcni_harness::registry::{RegistryOptions, TestRegistry};
use wasmcni_registry::{ensure_cached, Artifact, PushTarget, Registry};
use wasmcni_runtime::PluginRuntime;

const ALLOCATOR: &str = "[plugins.grants]\npool-view = {}\neni-ops = { subnets = [\"node\"], security_groups = [\"node\"] }\nlog = {}\n";
const FOUR: [(&str, &str, &str); 4] = [
    ("pack", "allocator", ALLOCATOR),
    ("vpc-warm-pool", "allocator", ALLOCATOR),
    ("cluster-tags", "tagger", "tag_keys = [\"wasmcni.io/cluster\", \"wasmcni.io/instance-id\", \"wasmcni.io/created-at\"]\n[plugins.grants]\nlog = {}\nclock = {}\n"),
    ("namespace-guard", "policy", "[plugins.grants]\nlog = {}\nnetlink = { mtu = [1280, 9001] }\n[plugins.config]\nallow_namespaces = \"default, team-*\"\n"),
];

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// A fresh runtime on the precompiled cache `compiled`, loading every spec.
fn load_all(specs: &[PluginSpec], compiled: &Path) -> Duration {
    let started = Instant::now();
    let runtime = PluginRuntime::new()
        .expect("engine")
        .with_cache(compiled)
        .expect("precompiled cache");
    for spec in specs {
        std::hint::black_box(runtime.load(spec).expect("load"));
    }
    started.elapsed()
}

fn main() {
    let state = tempfile::tempdir().expect("a state directory");
    let compiled = state.path().join("plugin-cache");
    let base = wasmcni_config::DEFAULT_CONFIG.replace(
        "state_dir = \"/var/lib/wasmcni\"",
        &format!("state_dir = \"{}\"", state.path().display()),
    );
    let entries: String = FOUR
        .iter()
        .map(|(name, kind, extra)| plugin_entry(name, kind, extra))
        .collect();
    let from_files =
        ClusterConfig::parse(&format!("{base}{entries}"), "bench").expect("the four from files");
    let file_specs = from_files.plugin_specs().to_vec();
    load_all(&file_specs, &compiled); // fills the precompiled cache once

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let mut rows = Vec::new();
    let mut file_runs: Vec<Duration> = (0..20).map(|_| load_all(&file_specs, &compiled)).collect();
    let file_median = median(&mut file_runs);
    rows.push((
        "files (precompiled cache), 20 runs".to_owned(),
        file_median,
        None,
    ));

    for tls in [false, true] {
        let registry = TestRegistry::start(RegistryOptions {
            tls,
            ..Default::default()
        });
        let mut settings = RegistryConfig::default();
        match registry.ca_file() {
            Some(ca) => settings.ca_files.push(ca),
            None => settings.plain_http.push(registry.host()),
        }
        let client = Registry::new(&settings).expect("client");
        let mut text = format!("{base}{}", registry.registry_section(""));
        for (spec, (_, kind, extra)) in file_specs.iter().zip(FOUR) {
            let bytes = std::fs::read(&spec.path).expect("component");
            let artifact = Artifact::new(bytes, None, None, Default::default()).expect("layout");
            let target =
                PushTarget::parse(&format!("oci://{}/bench/{}:1", registry.host(), spec.name))
                    .expect("target");
            let reference = runtime
                .block_on(client.push(&artifact, &target))
                .expect("push");
            text.push_str(&format!(
                "\n[[plugins]]\nname = \"{}\"\nkind = \"{kind}\"\noci = \"{reference}\"\ndigest = \"{}\"\n{extra}\n",
                spec.name, spec.digest
            ));
        }
        let config = ClusterConfig::parse(&text, "bench").expect("the four from the registry");
        let owned = config.plugin_specs().to_vec();
        let specs: Vec<&PluginSpec> = owned.iter().collect();
        let scheme = if tls { "TLS" } else { "plain HTTP" };
        let (mut pulls, mut cold) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            let _ = std::fs::remove_dir_all(config.component_cache_dir());
            let started = Instant::now();
            runtime
                .block_on(ensure_cached(&specs, &config.registry))
                .expect("pull");
            let pulled = started.elapsed();
            pulls.push(pulled);
            cold.push(pulled + load_all(&owned, &compiled));
        }
        let (mut checks, mut warm) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let started = Instant::now();
            runtime
                .block_on(ensure_cached(&specs, &config.registry))
                .expect("cached");
            let checked = started.elapsed();
            checks.push(checked);
            warm.push(checked + load_all(&owned, &compiled));
        }
        rows.push((
            format!("registry over {scheme}, cold: pull of four, 10 runs"),
            median(&mut pulls),
            None,
        ));
        rows.push((
            format!("registry over {scheme}, cold: pull + load, 10 runs"),
            median(&mut cold),
            Some(file_median),
        ));
        rows.push((
            format!("registry over {scheme}, warm: cache check of four, 20 runs"),
            median(&mut checks),
            None,
        ));
        rows.push((
            format!("registry over {scheme}, warm: check + load, 20 runs"),
            median(&mut warm),
            Some(file_median),
        ));
    }
    let bytes: u64 = file_specs
        .iter()
        .map(|s| std::fs::metadata(&s.path).map_or(0, |m| m.len()))
        .sum();
    println!("\nfour plugins, {} KiB of components in all", bytes >> 10);
    println!("\n| start-up | median | beside files |");
    println!("|---|---|---|");
    for (what, took, reference) in rows {
        let ms = took.as_secs_f64() * 1e3;
        let beside = reference.map_or_else(String::new, |r| {
            format!("+{:.2} ms", ms - r.as_secs_f64() * 1e3)
        });
        println!("| {what} | {ms:.2} ms | {beside} |");
    }
}
