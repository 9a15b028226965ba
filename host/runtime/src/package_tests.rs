//! The package version rule and `init`, against real components: `built-for-0-2` and the
//! `newer-minor-*` plugins of `tests/plugins` (built against 0.2.0 and a would-be 0.3.9), and
//! the default plugins' `init` refusing malformed settings at load.

use super::testing::{pod, snapshot, spec, with_settings};
use super::*;

fn allocator(name: &str, grants: &[Capability]) -> PluginSpec {
    spec(name, PluginKind::Allocator, grants)
}

#[test]
fn a_component_built_against_0_2_is_refused_naming_both_versions() {
    let runtime = PluginRuntime::new().unwrap();
    let spec = allocator("built-for-0-2", &[Capability::PoolView, Capability::Log]);
    let err = runtime.load(&spec).err().expect("0.2 is not 0.3");
    assert_eq!(
        err.to_string(),
        "plugin built-for-0-2: built against wasmcni:plugin@0.2.0, but this daemon implements \
         wasmcni:plugin@0.3.0 (it loads components built against any 0.3.x): rebuild it with \
         this release's SDK"
    );
    let report = runtime.inspect(&spec);
    let problem = report.problem.expect("audit names the version");
    assert!(
        problem.contains("wasmcni:plugin@0.2.0") && problem.contains("wasmcni:plugin@0.3.0"),
        "{problem}"
    );
    assert_eq!(report.world, None, "bare 0.2 exports are no 0.3 world");
}

#[test]
fn a_newer_0_3_component_loads_when_it_uses_nothing_this_version_lacks() {
    let runtime = PluginRuntime::new().unwrap();
    let plugin = runtime
        .load(&allocator("newer-minor-unused", &[Capability::Clock]))
        .unwrap();
    assert_eq!(
        plugin.imports(),
        ["wasmcni:plugin/clock@0.3.9", "wasmcni:plugin/types@0.3.9"]
    );
    let ip = plugin
        .allocate(snapshot(&["10.0.0.0/30"], &[]), &pod())
        .unwrap();
    assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 1));
    let report = runtime.inspect(&allocator("newer-minor-unused", &[Capability::Clock]));
    assert_eq!(report.problem, None);
    assert_eq!(report.world, Some(PluginKind::Allocator));
}

#[test]
fn a_newer_0_3_component_using_an_addition_is_refused_naming_it() {
    let runtime = PluginRuntime::new().unwrap();
    let err = runtime
        .load(&allocator("newer-minor-addition", &[Capability::Clock]))
        .err()
        .expect("now-monotonic-ns is not in 0.3.0");
    let message = err.to_string();
    assert!(
        message.starts_with(
            "plugin newer-minor-addition: linking: built against wasmcni:plugin@0.3.9, newer \
             than this daemon's 0.3.0, and it uses something 0.3.0 does not have: "
        ),
        "{message}"
    );
    assert!(message.contains("now-monotonic-ns"), "{message}");
}

#[test]
fn malformed_settings_are_refused_at_load_by_the_plugins_init() {
    let runtime = PluginRuntime::new().unwrap();
    let mut guard = spec(
        "namespace-guard",
        PluginKind::Policy,
        &[Capability::Netlink, Capability::Log],
    );
    guard = with_settings(guard, &[("allow_namespaces", "Payments!")]);
    let err = runtime.load(&guard).err().expect("not a namespace pattern");
    let message = err.to_string();
    assert!(
        message.starts_with("plugin namespace-guard: refused to start (init): ")
            && message.contains("\"Payments!\" is not a namespace pattern"),
        "{message}"
    );
    let mut pack = allocator(
        "pack",
        &[Capability::PoolView, Capability::EniOps, Capability::Log],
    );
    pack = with_settings(pack, &[("WARM_IPS", "many")]);
    let message = runtime.load(&pack).err().expect("WARM_IPS").to_string();
    assert!(
        message.starts_with("plugin pack: refused to start (init): config key WARM_IPS"),
        "{message}"
    );
    let mut tags = spec(
        "cluster-tags",
        PluginKind::Tagger,
        &[Capability::Log, Capability::Clock],
    );
    tags = with_settings(tags, &[("ADDITIONAL_ENI_TAGS", "not json")]);
    let message = runtime.load(&tags).err().expect("not JSON").to_string();
    assert!(
        message.starts_with(
            "plugin cluster-tags: refused to start (init): setting ADDITIONAL_ENI_TAGS"
        ),
        "{message}"
    );
    // vpc-warm-pool's custom networking: refused without any ENIConfig, loaded with only
    // per-zone ones (the node's zone is known only from a call's pool).
    let grants = [
        Capability::PoolView,
        Capability::EniOps,
        Capability::Log,
        Capability::Clock,
        Capability::Kv,
    ];
    let mut warm = allocator("vpc-warm-pool", &grants);
    warm = with_settings(warm, &[("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "true")]);
    let message = runtime.load(&warm).err().expect("no ENIConfig").to_string();
    assert!(
        message.starts_with("plugin vpc-warm-pool: refused to start (init): AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true needs"),
        "{message}"
    );
    warm = with_settings(
        warm,
        &[
            ("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "true"),
            ("ENI_CONFIG_SUBNET.eu-west-1a", "subnet-0a"),
            ("ENI_CONFIG_SUBNET.eu-west-1b", "subnet-0b"),
        ],
    );
    runtime.load(&warm).unwrap();
    // The same settings, well formed, load.
    pack = with_settings(pack, &[("WARM_IPS", "4")]);
    runtime.load(&pack).unwrap();
}

#[test]
fn an_ipv6_answer_is_refused_while_pods_get_ipv4_addresses() {
    let runtime = PluginRuntime::new().unwrap();
    let plugin = runtime.load(&allocator("ipv6-answer", &[])).unwrap();
    let err = plugin
        .allocate(snapshot(&["10.0.0.0/30"], &[]), &pod())
        .expect_err("an IPv6 answer");
    assert_eq!(
        err.to_string(),
        "plugin ipv6-answer refused: answer refused by the host: 2001:db8::1 is an IPv6 address, \
         and this node's pool hands pods IPv4 addresses"
    );
}

#[test]
fn what_init_asks_for_is_never_applied_or_kept() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let runtime = PluginRuntime::new()
        .unwrap()
        .with_audit_log(AuditLog::new(audit.clone()))
        .with_kv_dir(&dir.path().join("kv"))
        .unwrap();
    let mut spec = spec(
        "init-side-effects",
        PluginKind::Policy,
        &[Capability::Kv, Capability::Netlink],
    );
    spec.grants.kv.max_bytes = 4096;
    spec.grants.netlink.mtu = Some((1280, 9001));
    let plugin = runtime.load(&spec).unwrap();
    let verdict = plugin
        .evaluate(&Attachment {
            verb: Verb::Add,
            pod: pod(),
            addresses: vec!["10.0.0.5/32".parse().unwrap()],
            eni_id: None,
            subnet_id: None,
            chained: false,
        })
        .unwrap();
    // Neither the MTU asked for in init nor its kv write reaches the call.
    assert_eq!(verdict, Verdict::Allow(vec![]));
    let kept = kv::KvStore::open(dir.path().join("kv/init-side-effects.kv"), 4096).unwrap();
    assert_eq!(kept.begin().keys(), Vec::<String>::new());
    let lines = super::testing::audit_lines(&audit);
    let made_in_init: Vec<_> = lines
        .iter()
        .filter(|l| l["call"] == "netlink.set-mtu")
        .collect();
    assert_eq!(made_in_init.len(), 1, "{lines:?}");
    assert_eq!(made_in_init[0]["outcome"], "dropped");
    assert_eq!(
        made_in_init[0]["result"],
        "made in init; init's requests are never applied"
    );
}

#[test]
fn audit_reports_a_newer_0_3_component_the_daemon_would_refuse() {
    let runtime = PluginRuntime::new().unwrap();
    let refused = runtime.inspect(&allocator("newer-minor-addition", &[Capability::Clock]));
    let problem = refused.problem.expect("it would not link");
    assert!(
        problem.starts_with(
            "linking: built against wasmcni:plugin@0.3.9, newer than this daemon's 0.3.0"
        ) && problem.contains("now-monotonic-ns"),
        "{problem}"
    );
}
