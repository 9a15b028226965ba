use super::*;

fn with(replace: &str, by: &str) -> String {
    assert!(
        DEFAULT_CONFIG.contains(replace),
        "fixture drifted: {replace}"
    );
    DEFAULT_CONFIG.replacen(replace, by, 1)
}

#[test]
fn embedded_default_is_valid() {
    let config = ClusterConfig::embedded_default().expect("default config");
    assert_eq!(config.datapath.veth_prefix, "eni");
    let pool = config.static_pool("t").unwrap();
    assert_eq!(pool.cidrs, vec!["10.88.0.0/24".parse::<Ipv4Net>().unwrap()]);
}

#[test]
fn a_static_pool_of_ipv6_prefixes_gives_ipv6_pods() {
    let config = ClusterConfig::parse(
        &with(
            "cidrs = [\"10.88.0.0/24\"]",
            "cidrs = [\"fd00:88::/112\", \"fd00:89::/64\"]",
        )
        .replace("exclude = []", "exclude = [\"fd00:88::1\"]"),
        "t",
    )
    .unwrap();
    let pool = config.static_pool("t").unwrap();
    assert!(pool.cidrs.is_empty() && pool.exclude.is_empty(), "{pool:?}");
    assert_eq!(
        pool.ipv6,
        vec![
            "fd00:88::/112".parse::<ipnet::Ipv6Net>().unwrap(),
            "fd00:89::/64".parse().unwrap()
        ]
    );
    assert_eq!(
        pool.exclude_v6,
        vec!["fd00:88::1".parse::<std::net::Ipv6Addr>().unwrap()]
    );
    // The host hands out the /128s: an allocator plugin has nothing to plan.
    let with_allocator = format!(
        "{}\n[allocator]\nplugin = \"pack\"\n",
        with("cidrs = [\"10.88.0.0/24\"]", "cidrs = [\"fd00:88::/112\"]")
    );
    let error = ClusterConfig::parse(&with_allocator, "t")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`allocator.plugin` = \"pack\": with only IPv6 CIDRs in provider.static.cidrs every pod gets the next free /128"),
        "{error}"
    );
    // Both families: dual stack, each pod one address of each; the allocator (if any) chooses
    // the IPv4 one.
    let config = ClusterConfig::parse(
        &with(
            "cidrs = [\"10.88.0.0/24\"]",
            "cidrs = [\"fd00:88::/112\", \"10.88.0.0/24\"]",
        )
        .replace("exclude = []", "exclude = [\"fd00:88::1\", \"10.88.0.1\"]"),
        "t",
    )
    .unwrap();
    let pool = config.static_pool("t").unwrap();
    assert_eq!(
        pool.cidrs,
        vec!["10.88.0.0/24".parse::<ipnet::Ipv4Net>().unwrap()]
    );
    assert_eq!(
        pool.ipv6,
        vec!["fd00:88::/112".parse::<ipnet::Ipv6Net>().unwrap()]
    );
    assert_eq!(
        pool.exclude,
        vec!["10.88.0.1".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(pool.exclude_v6.len(), 1);
    use wasmcni_core::ipam::Provider as _;
    assert_eq!(
        wasmcni_core::ipam::StaticProvider::new(&pool).view().family,
        wasmcni_core::ipam::IpFamily::Dual
    );
}

#[test]
fn example_under_policies_matches_embedded_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default.toml");
    assert_eq!(
        ClusterConfig::load(&path).unwrap(),
        ClusterConfig::embedded_default().unwrap()
    );
}

#[test]
fn errors_name_the_key_and_the_value() {
    let cases: &[(String, &str)] = &[
        (
            with("version = 1", "version = 2"),
            "`version` = 2: this build reads schema version 1",
        ),
        (
            with(
                "cidrs = [\"10.88.0.0/24\"]",
                "cidrs = [\"10.88.0.0/24\", \"10.0.0.0/33\"]",
            ),
            "`provider.static.cidrs[1]` = \"10.0.0.0/33\": not a CIDR",
        ),
        (
            with("cidrs = [\"10.88.0.0/24\"]", "cidrs = [\"10.88.0.5/24\"]"),
            "host bits are set; did you mean 10.88.0.0/24?",
        ),
        (
            with(
                "cidrs = [\"10.88.0.0/24\"]",
                "cidrs = [\"10.88.0.0/24\", \"10.88.0.128/25\"]",
            ),
            "`provider.static.cidrs[1]` = \"10.88.0.128/25\": overlaps 10.88.0.0/24",
        ),
        (
            with(
                "cidrs = [\"10.88.0.0/24\"]",
                "cidrs = [\"10.88.0.0/24\", \"fd00:88::/112\", \"fd00:88::/120\"]",
            ),
            "`provider.static.cidrs[2]` = \"fd00:88::/120\": overlaps fd00:88::/112",
        ),
        (
            with(
                "cidrs = [\"10.88.0.0/24\"]",
                "cidrs = [\"10.88.0.0/24\", \"fd00:88::/112\"]",
            )
            .replace("# mtu = 9001", "mtu = 1200"),
            "`datapath.mtu` = 1200: with IPv6 CIDRs in provider.static.cidrs it must be at least 1280",
        ),
        (
            with("cidrs = [\"10.88.0.0/24\"]", "cidrs = [\"fd00:88::/48\"]"),
            "`provider.static.cidrs[0]` = \"fd00:88::/48\": a node never needs more than a /64",
        ),
        (
            with("cidrs = [\"10.88.0.0/24\"]", "cidrs = [\"fd00:88::1/128\"]"),
            "a /128 holds no pod address",
        ),
        (
            with("cidrs = [\"10.88.0.0/24\"]", "cidrs = [\"fd00:88::/112\", \"fd00:88::/120\"]"),
            "`provider.static.cidrs[1]` = \"fd00:88::/120\": overlaps fd00:88::/112",
        ),
        (
            with("cidrs = [\"10.88.0.0/24\"]", "cidrs = [\"fd00:88::/112\"]")
                .replace("exclude = []", "exclude = [\"10.88.0.1\"]"),
            "`provider.static.exclude[0]` = \"10.88.0.1\": is outside every CIDR",
        ),
        (
            with("cidrs = [\"10.88.0.0/24\"]", "cidrs = [\"fd00:88::/112\"]")
                .replace("# mtu = 9001", "mtu = 1200"),
            "`datapath.mtu` = 1200: with IPv6 CIDRs in provider.static.cidrs it must be at least 1280",
        ),
        (
            with(
                "veth_prefix = \"eni\"",
                "veth_prefix = \"eni\"\nipv4_egress_range = \"169.254.0.0/16\"",
            ),
            "`datapath.ipv4_egress_range` = \"169.254.0.0/16\": holds 169.254.1.1, the pods' IPv4 gateway",
        ),
        (
            with(
                "veth_prefix = \"eni\"",
                "veth_prefix = \"eni\"\nipv4_egress_range = \"169.254.168.0/22\"",
            ),
            "holds 169.254.169.254, the instance metadata service (IMDS)",
        ),
        (
            with(
                "veth_prefix = \"eni\"",
                "veth_prefix = \"eni\"\nipv4_egress_range = \"10.0.0.0/24\"",
            ),
            "must be inside 169.254.0.0/16",
        ),
        (
            with(
                "veth_prefix = \"eni\"",
                "veth_prefix = \"eni\"\nipv4_egress_range = \"169.254.172.0/31\"",
            ),
            "`datapath.ipv4_egress_range` = \"169.254.172.0/31\": must be a /16 to a /30",
        ),
        (
            with(
                "veth_prefix = \"eni\"",
                "veth_prefix = \"eni\"\nipv4_egress_range = \"169.254.172.9/22\"",
            ),
            "host bits are set; did you mean 169.254.172.0/22?",
        ),
        (
            with("exclude = []", "exclude = [\"10.1.0.1\"]"),
            "`provider.static.exclude[0]` = \"10.1.0.1\": is outside every CIDR",
        ),
        (
            with("veth_prefix = \"eni\"", "veth_prefix = \"toolong\""),
            "`datapath.veth_prefix` = \"toolong\"",
        ),
        (
            with("cidrs = [\"10.88.0.0/24\"]", "cidrs = [\"10.0.0.0/8\"]"),
            "`provider.static.cidrs[0]` = \"10.0.0.0/8\": a node never needs more than a /16",
        ),
        (
            with("# mtu = 9001", "mtu = 70000"),
            "`datapath.mtu` = 70000",
        ),
        (
            with("kind = \"static\"", "kind = \"ec3\""),
            "kind = \"ec3\"\n   |        ^^^^^\nunknown variant `ec3`, expected `static` or `ec2`",
        ),
        (
            with("socket = \"/run", "socket = \"run"),
            "`daemon.socket` = \"run/wasmcni/wasmcni.sock\": must be an absolute path",
        ),
    ];
    for (text, expected) in cases {
        let err = ClusterConfig::parse(text, "test.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert!(err.starts_with("cluster configuration test.toml"), "{err}");
    }
}

/// The embedded default turned into an EC2 configuration with `ec2` as `[provider.ec2]`
/// and pack as allocator.
fn ec2_config(ec2: &str) -> String {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let base = DEFAULT_CONFIG
        .replace("kind = \"static\"", "kind = \"ec2\"")
        .replace("[provider.static]\ncidrs = [\"10.88.0.0/24\"]", "")
        .replace("exclude = []", "");
    format!(
        "{base}\n[provider.ec2]\n{ec2}\n[allocator]\nplugin = \"pack\"\n\n[[plugins]]\nname = \"pack\"\nkind = \"allocator\"\npath = \"/usr/lib/wasmcni/pack.wasm\"\ndigest = \"{digest}\"\n[plugins.grants]\npool-view = {{}}\neni-ops = {{ subnets = [\"node\"], security_groups = [\"node\"] }}\n"
    )
}

#[test]
fn the_ec2_provider_has_defaults_for_every_key() {
    let config = ClusterConfig::parse(&ec2_config(""), "t").unwrap();
    assert_eq!(config.provider.kind, ProviderKind::Ec2);
    let ec2 = config.ec2();
    assert_eq!(ec2, Ec2ProviderConfig::default());
    assert_eq!(
        (
            ec2.ip_cooldown_ms,
            ec2.add_wait_ms,
            ec2.api_burst,
            ec2.max_attempts
        ),
        (30_000, 10_000, 20, 8)
    );
    assert!(ec2.prefix_fallback && !ec2.snat.external);
    let tuned = ClusterConfig::parse(
        &ec2_config("ec2_endpoint = \"http://127.0.0.1:4566\"\nmax_pods = 110\n[provider.ec2.snat]\nexternal = true\nexclude_cidrs = [\"192.168.0.0/16\"]\nrandomize = \"hashrandom\"\nbackend = \"nftables\""),
        "t",
    )
    .unwrap();
    assert_eq!(tuned.ec2().max_pods, Some(110));
    assert_eq!(
        tuned.ec2().snat,
        SnatConfig {
            external: true,
            exclude_cidrs: vec!["192.168.0.0/16".parse::<Ipv4Net>().unwrap()],
            randomize: SnatRandomize::Hashrandom,
            connmark: None,
            backend: SnatBackend::Nftables,
        }
    );
}

#[test]
fn ec2_settings_are_validated_key_by_key() {
    let cases = [
        (
            "max_attempts = 0",
            "`provider.ec2.max_attempts` = 0: must be between 1 and 20",
        ),
        (
            "api_rate_per_s = 0.0",
            "`provider.ec2.api_rate_per_s` = 0: must be between 0.1 and 1000",
        ),
        (
            "ec2_endpoint = \"ftp://x\"",
            "`provider.ec2.ec2_endpoint` = \"ftp://x\": must be an http:// or https:// URL",
        ),
        (
            "leaked_eni_min_age_s = 5",
            "`provider.ec2.leaked_eni_min_age_s` = 5: must be between 60 and 86400",
        ),
        (
            "add_wait_ms = 600000",
            "`provider.ec2.add_wait_ms` = 600000: must be at most 120000",
        ),
        (
            "[provider.ec2.snat]\nexclude_cidrs = [\"10.0.0.0/40\"]",
            "exclude_cidrs = [\"10.0.0.0/40\"]\n   |                 ^^^^^^^^^^^^^^^\n[0] = \"10.0.0.0/40\": not an IPv4 CIDR (expected a.b.c.d/len)",
        ),
        (
            "[provider.ec2.snat]\nconnmark = 3",
            "`provider.ec2.snat.connmark` = 0x3: must be a single bit",
        ),
        (
            "[provider.ec2.snat]\nrandomize = \"maybe\"",
            "randomize = \"maybe\"\n   |             ^^^^^^^\nunknown variant `maybe`, expected one of `prng`, `hashrandom`, `none`",
        ),
        (
            "[provider.ec2.snat]\nbackend = \"pf\"",
            "unknown variant `pf`, expected one of `auto`, `iptables`, `nftables`",
        ),
        ("warm_ips = 3", "unknown field `warm_ips`"),
    ];
    for (ec2, expected) in cases {
        let err = ClusterConfig::parse(&ec2_config(ec2), "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expected),
            "{ec2}: expected {expected:?} in {err:?}"
        );
    }
    let no_allocator = ec2_config("").replace("[allocator]\nplugin = \"pack\"", "");
    let err = ClusterConfig::parse(&no_allocator, "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`allocator.plugin` = absent: the ec2 provider grows and shrinks the pool on an allocator plugin's plan"), "{err}");
    // IPv6 prefix mode: the host hands out /128s; an allocator plugin has nothing to do.
    let ipv6 = ec2_config("ip_family = \"ipv6\"");
    let err = ClusterConfig::parse(&ipv6, "t").unwrap_err().to_string();
    assert!(
        err.contains("`allocator.plugin` = \"pack\": with provider.ec2.ip_family = \"ipv6\" every pod gets a /128 of the node's /80"),
        "{err}"
    );
    let ipv6 = ipv6.replace("[allocator]\nplugin = \"pack\"", "");
    let small = ipv6.replace("# mtu = 9001", "mtu = 1200");
    assert_ne!(small, ipv6, "the default configuration shows datapath.mtu");
    let err = ClusterConfig::parse(&small, "t").unwrap_err().to_string();
    assert!(err.contains("`datapath.mtu` = 1200: with provider.ec2.ip_family = \"ipv6\" it must be at least 1280"), "{err}");
    let config = ClusterConfig::parse(&ipv6, "t").unwrap();
    assert_eq!(config.ec2().ip_family, wasmcni_core::ipam::IpFamily::Ipv6);
    assert_eq!(
        ClusterConfig::parse(&ec2_config(""), "t")
            .unwrap()
            .ec2()
            .ip_family,
        wasmcni_core::ipam::IpFamily::Ipv4,
        "IPv4 unless asked"
    );
    // Dual stack: the allocator plans the IPv4 pool as in IPv4 mode, so it is required.
    let dual = ClusterConfig::parse(&ec2_config("ip_family = \"dual\""), "t").unwrap();
    assert_eq!(dual.ec2().ip_family, wasmcni_core::ipam::IpFamily::Dual);
    let spelled = ClusterConfig::parse(&ec2_config("ip_family = \"dual-stack\""), "t").unwrap();
    assert_eq!(spelled.ec2().ip_family, wasmcni_core::ipam::IpFamily::Dual);
    let err = ClusterConfig::parse(
        &ec2_config("ip_family = \"dual\"").replace("[allocator]\nplugin = \"pack\"", ""),
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`allocator.plugin` = absent"), "{err}");
    let err = ClusterConfig::parse(
        &ec2_config("ip_family = \"dual\"").replace("# mtu = 9001", "mtu = 1200"),
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`datapath.mtu` = 1200: with provider.ec2.ip_family = \"dual\" it must be at least 1280"), "{err}");
    let err = ClusterConfig::parse(&ec2_config("ip_family = \"both\""), "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ip_family") && err.contains("dual"), "{err}");
    let both = ec2_config("").replace(
        "[provider.ec2]",
        "[provider.static]\ncidrs = [\"10.1.0.0/24\"]\n[provider.ec2]",
    );
    let err = ClusterConfig::parse(&both, "t").unwrap_err().to_string();
    assert!(
        err.contains("`provider.static` = a table: is for kind = \"static\""),
        "{err}"
    );
}

#[test]
fn plugin_entries_are_validated_key_by_key() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let plugin = |extra: &str| {
        format!(
            "{DEFAULT_CONFIG}\n[allocator]\nplugin = \"pack\"\n\n[[plugins]]\nname = \"pack\"\nkind = \"allocator\"\npath = \"/usr/lib/wasmcni/pack.wasm\"\ndigest = \"{digest}\"\n{extra}\n[plugins.grants]\npool-view = {{}}\nlog = {{}}\neni-ops = {{ subnets = [\"node\", \"subnet-0123abcd\"], security_groups = [\"node\"], max_enis = 3 }}\n[plugins.config]\nWARM_IPS = 8\nMODE = \"dense\"\n"
        )
    };
    let config = ClusterConfig::parse(&plugin(""), "t").unwrap();
    let spec = config.allocator_spec().unwrap();
    assert_eq!(spec.grants.capabilities.len(), 3);
    assert!(!spec.grants.has(wasmcni_core::Capability::Wasi));
    // `wasi = {}` links a WASI that holds nothing; each scope key opens one thing.
    let wasi = ClusterConfig::parse(
        &plugin("").replace(
            "log = {}",
            "wasi = { clocks = true, read_dirs = [\"/etc/wasmcni/data/\"] }",
        ),
        "t",
    )
    .unwrap();
    let grants = &wasi.allocator_spec().unwrap().grants;
    assert!(grants.has(wasmcni_core::Capability::Wasi));
    assert!(grants.wasi.clocks && !grants.wasi.random);
    assert_eq!(
        grants.wasi.read_dirs,
        vec![std::path::PathBuf::from("/etc/wasmcni/data")]
    );
    assert_eq!(spec.grants.eni_ops.max_enis, Some(3));
    assert!(spec.grants.eni_ops.subnets.contains("subnet-0123abcd"));
    assert_eq!(spec.settings["WARM_IPS"], "8");
    assert_eq!(spec.limits, wasmcni_core::Limits::default());
    assert_eq!(
        spec.on_failure.of(wasmcni_core::Hook::Allocate),
        wasmcni_core::FailureMode::Closed
    );
    let open = ClusterConfig::parse(&plugin("on_failure = { allocate = \"open\" }"), "t").unwrap();
    assert_eq!(
        open.allocator_spec()
            .unwrap()
            .on_failure
            .of(wasmcni_core::Hook::Allocate),
        wasmcni_core::FailureMode::Open
    );
    let cases = [
        (plugin("").replace("log = {}", "netlnk = {}"), "unknown field `netlnk`, expected one of `pool-view`, `eni-ops`, `netlink`, `log`, `kv`, `clock`"),
        (plugin("").replace("log = {}", "netlink = {}"), "`plugins[0].grants.netlink` = {...}: the allocator world does not import netlink; a allocator may be granted pool-view, eni-ops, log, kv, clock"),
        (plugin("").replace("\"subnet-0123abcd\"", "\"subnet-x\""), "`plugins[0].grants.eni-ops.subnets[1]` = \"subnet-x\": must be \"node\" or a subnet id"),
        (plugin("").replace("max_enis = 3", "max_enis = 0"), "`plugins[0].grants.eni-ops.max_enis` = 0"),
        (plugin("").replace(&digest, "sha256:1234"), "`plugins[0].digest` = \"sha256:1234\": must be"),
        (plugin("").replace("/usr/lib/wasmcni/pack.wasm", "pack.wasm"), "`plugins[0].path` = \"pack.wasm\": must be an absolute path"),
        (plugin("").replace("plugin = \"pack\"", "plugin = \"packer\""), "`allocator.plugin` = \"packer\": no [[plugins]] entry"),
        (plugin("fuel = 10"), "`plugins[0].fuel` = 10"),
        (plugin("").replace("kind = \"allocator\"", "kind = \"tagger\""), "`plugins[0].grants.pool-view` = {...}: the tagger world does not import pool-view"),
        (plugin("").replace("kind = \"allocator\"", "kind = \"shaper\""), "`plugins[0].kind` = \"shaper\": must be \"allocator\", \"tagger\" or \"policy\""),
        (plugin("on_failure = { add = \"open\" }"), "`plugins[0].on_failure.add` = \"open\": a allocator has no hook \"add\"; its hooks are allocate"),
        (plugin("on_failure = { allocate = \"maybe\" }"), "`plugins[0].on_failure.allocate` = \"maybe\": must be \"closed\" or \"open\""),
        (plugin("tag_keys = [\"team\"]"), "`plugins[0].tag_keys` = [\"team\"]: only taggers set tags; this is a allocator"),
        (plugin("").replace("MODE = \"dense\"", "MODE = [1]"), "`plugins[0].config.MODE` = a array: settings are strings, numbers or booleans"),
        (plugin("").replace("[allocator]\nplugin = \"pack\"", "[policy]\nplugins = [\"pack\"]"), "`policy.plugins[0]` = \"pack\": is a allocator, not a policy"),
        (plugin("").replace("log = {}", "wasi = { read_dirs = [\"data\"] }"), "`plugins[0].grants.wasi.read_dirs[0]` = \"data\": must be an absolute path"),
        (plugin("").replace("log = {}", "wasi = { read_dirs = [\"/etc/../root\"] }"), "`plugins[0].grants.wasi.read_dirs[0]` = \"/etc/../root\": must be a plain path"),
        (plugin("").replace("log = {}", "wasi = { read_dirs = [\"/\"] }"), "`plugins[0].grants.wasi.read_dirs[0]` = \"/\": must not be /"),
        (plugin("").replace("log = {}", "wasi = { read_dirs = [\"/srv/a\", \"/srv/a/\"] }"), "`plugins[0].grants.wasi.read_dirs[1]` = \"/srv/a/\": granted twice"),
        (plugin("").replace("log = {}", "wasi = { network = true }"), "unknown field `network`, expected one of `clocks`, `random`, `read_dirs`"),
        (plugin("").replace("log = {}", "wasi = { read_dirs = [\"/srv/d0\", \"/srv/d1\", \"/srv/d2\", \"/srv/d3\", \"/srv/d4\", \"/srv/d5\", \"/srv/d6\", \"/srv/d7\", \"/srv/d8\"] }"), "`plugins[0].grants.wasi.read_dirs` = 9 directories: at most 8 directories may be granted"),
    ];
    for (text, expected) in cases {
        let err = ClusterConfig::parse(&text, "t").unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}

#[test]
fn tagger_and_policy_scopes_are_validated() {
    let digest = format!("sha256:{}", "cd".repeat(32));
    let tagger = |keys: &str| {
        format!("{DEFAULT_CONFIG}\n[tagger]\nplugin = \"tags\"\n\n[[plugins]]\nname = \"tags\"\nkind = \"tagger\"\npath = \"/p/t.wasm\"\ndigest = \"{digest}\"\ntag_keys = [{keys}]\n")
    };
    let config = ClusterConfig::parse(&tagger("\"team\""), "t").unwrap();
    assert!(config.tagger_spec().unwrap().tag_keys.contains("team"));
    for (keys, expected) in [
        (
            "\"aws:owner\"",
            "`plugins[0].tag_keys[0]` = \"aws:owner\": is reserved",
        ),
        (
            "\"team\", \"cluster.k8s.amazonaws.com/name\"",
            "`plugins[0].tag_keys[1]` = \"cluster.k8s.amazonaws.com/name\": is reserved",
        ),
    ] {
        let err = ClusterConfig::parse(&tagger(keys), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
    let policy = |netlink: &str| {
        format!("{DEFAULT_CONFIG}\n[policy]\nplugins = [\"guard\"]\n\n[[plugins]]\nname = \"guard\"\nkind = \"policy\"\npath = \"/p/g.wasm\"\ndigest = \"{digest}\"\n[plugins.grants]\nnetlink = {netlink}\n")
    };
    let config = ClusterConfig::parse(
        &policy("{ mtu = [1280, 9001], routes = [\"10.0.0.0/8\"] }"),
        "t",
    )
    .unwrap();
    let spec = config.policy_specs()[0];
    assert_eq!(spec.grants.netlink.mtu, Some((1280, 9001)));
    assert_eq!(
        spec.on_failure.of(wasmcni_core::Hook::Del),
        wasmcni_core::FailureMode::Open
    );
    for (netlink, expected) in [
        (
            "{ mtu = [9001, 1280] }",
            "`plugins[0].grants.netlink.mtu` = [9001, 1280]: must be [min, max]",
        ),
        (
            "{ routes = [\"10.0.0.1/8\"] }",
            "host bits are set; did you mean 10.0.0.0/8?",
        ),
        (
            "{ routes = [\"everything\"] }",
            "`plugins[0].grants.netlink.routes[0]` = \"everything\": not an IPv4 CIDR",
        ),
    ] {
        let err = ClusterConfig::parse(&policy(netlink), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}

#[test]
fn unknown_keys_and_wrong_types_are_refused_with_position() {
    let err = ClusterConfig::parse(&with("# mtu = 9001", "mtu = 9001\nmut = 1"), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `mut`"), "{err}");
    assert!(err.contains("line"), "{err}");
    let err = ClusterConfig::parse(&with("# mtu = 9001", "mtu = \"big\""), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("mtu"), "{err}");
}

#[test]
fn the_pod_mtu_defaults_to_the_providers() {
    let statically = ClusterConfig::parse(DEFAULT_CONFIG, "t").unwrap();
    assert_eq!(
        statically.datapath.mtu, None,
        "the daemon reads the uplink's at start"
    );
    assert!(statically.pod_mtu_follows_uplink());
    assert_eq!(statically.pod_mtu(Some(1400)), 1400);
    assert_eq!(
        statically.pod_mtu(None),
        crate::FALLBACK_MTU,
        "no default route"
    );
    assert_eq!(
        statically.pod_mtu(Some(65_536)),
        65_535,
        "lo's is not a veth's"
    );
    let ec2 = ClusterConfig::parse(&ec2_config(""), "t").unwrap();
    assert!(!ec2.pod_mtu_follows_uplink());
    assert_eq!(ec2.pod_mtu(Some(1400)), crate::EC2_MTU);
    let set =
        ClusterConfig::parse(&DEFAULT_CONFIG.replace("# mtu = 9001", "mtu = 1400"), "t").unwrap();
    assert_eq!(
        (set.datapath.mtu, set.pod_mtu(Some(9001))),
        (Some(1400), 1400)
    );
}

#[test]
fn trust_names_its_keys_how_many_must_approve_and_where_approvals_are() {
    let base = with("cidrs = [\"10.88.0.0/24\"]", "cidrs = [\"10.88.0.0/24\"]");
    let trust = |section: &str| format!("{base}\n[trust]\n{section}\n");
    let config = ClusterConfig::parse(
        &trust("keys = [\"/etc/wasmcni/reviewers/a.pub\", \"/etc/wasmcni/reviewers/b.pub\"]\nrequired = 2\napprovals = \"/etc/wasmcni/approvals\""),
        "t",
    )
    .unwrap();
    let parsed = config.trust.unwrap();
    assert_eq!((parsed.keys.len(), parsed.required), (2, 2));
    // One approval is the default.
    let config =
        ClusterConfig::parse(&trust("keys = [\"/k/a.pub\"]\napprovals = \"/a\""), "t").unwrap();
    assert_eq!(config.trust.unwrap().required, 1);
    for (section, error) in [
        (
            "keys = []\napprovals = \"/a\"",
            "`trust.keys` = []: name at least one reviewer's public key file",
        ),
        (
            "keys = [\"k.pub\"]\napprovals = \"/a\"",
            "`trust.keys[0]` = \"k.pub\": must be an absolute path",
        ),
        (
            "keys = [\"/k/a.pub\", \"/k/a.pub\"]\napprovals = \"/a\"",
            "`trust.keys[1]` = \"/k/a.pub\": is listed twice",
        ),
        (
            "keys = [\"/k/a.pub\"]\nrequired = 2\napprovals = \"/a\"",
            "`trust.required` = 2: must be between 1 and the 1 key(s) in trust.keys",
        ),
        (
            "keys = [\"/k/a.pub\"]\nrequired = 0\napprovals = \"/a\"",
            "`trust.required` = 0",
        ),
        (
            "keys = [\"/k/a.pub\"]\napprovals = \"a\"",
            "`trust.approvals` = \"a\": must be an absolute path",
        ),
        ("keys = [\"/k/a.pub\"]", "missing field `approvals`"),
    ] {
        let err = ClusterConfig::parse(&trust(section), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains(error), "{section}: {err}");
    }
}

#[test]
fn a_pinned_trust_file_applies_whatever_the_cluster_configuration_says() {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("trust.toml");
    let section =
        "[trust]\nkeys = [\"/k/a.pub\", \"/k/b.pub\"]\nrequired = 2\napprovals = \"/a\"\n";
    std::fs::write(&pin, section).unwrap();
    let base = with("cidrs = [\"10.88.0.0/24\"]", "cidrs = [\"10.88.0.0/24\"]");
    // The cluster configuration says nothing of trust: the pinned one applies.
    let mut config = ClusterConfig::parse(&base, "t").unwrap();
    config.pin_trust(&pin).unwrap();
    assert_eq!(config.trust.as_ref().map(|t| t.required), Some(2));
    assert_eq!(config.trust_pin(), Some(pin.as_path()));
    // The same table in both: fine. A weaker one in the cluster configuration: refused.
    let mut same = ClusterConfig::parse(&format!("{base}\n{section}"), "t").unwrap();
    same.pin_trust(&pin).unwrap();
    let weaker = section.replace("required = 2", "required = 1");
    let mut weaker = ClusterConfig::parse(&format!("{base}\n{weaker}"), "t").unwrap();
    let err = weaker.pin_trust(&pin).unwrap_err().to_string();
    assert!(
        err.contains("`trust` = a table: differs from the [trust] pinned by"),
        "{err}"
    );
    // A pinned file is held to the same rules, and holds nothing else.
    std::fs::write(&pin, section.replace("required = 2", "required = 3")).unwrap();
    let err = ClusterConfig::parse(&base, "t")
        .unwrap()
        .pin_trust(&pin)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`trust.required` = 3"), "{err}");
    std::fs::write(&pin, format!("{section}\n[daemon]\n")).unwrap();
    let err = ClusterConfig::parse(&base, "t")
        .unwrap()
        .pin_trust(&pin)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `daemon`"), "{err}");
}

#[test]
fn a_plugin_from_a_registry_is_pinned_by_digest_and_cached_under_it() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let manifest = format!("sha256:{}", "cd".repeat(32));
    let plugin = |source: &str, registry: &str| {
        format!(
            "{DEFAULT_CONFIG}\n{registry}\n[allocator]\nplugin = \"pack\"\n\n[[plugins]]\nname = \"pack\"\nkind = \"allocator\"\n{source}\ndigest = \"{digest}\"\n[plugins.grants]\npool-view = {{}}\n"
        )
    };
    let oci = format!("oci = \"oci://registry.example.com:5000/team/pack@{manifest}\"");
    let config = ClusterConfig::parse(&plugin(&oci, ""), "t").unwrap();
    let spec = config.allocator_spec().unwrap();
    let origin = spec.origin.as_ref().unwrap();
    assert_eq!(origin.registry, "registry.example.com:5000");
    assert_eq!(origin.repository, "team/pack");
    assert_eq!(origin.digest, manifest);
    assert_eq!(
        spec.path,
        config
            .daemon
            .state_dir
            .join("components")
            .join(format!("sha256-{}.wasm", "ab".repeat(32)))
    );
    assert_eq!(config.registry, RegistryConfig::default());
    // A reviewer's audit away from the node keeps pulls elsewhere.
    let mut moved = config.clone();
    moved.relocate_component_cache(std::path::Path::new("/home/r/.cache/wasmcni"));
    assert_eq!(
        moved.allocator_spec().unwrap().path,
        std::path::Path::new("/home/r/.cache/wasmcni")
            .join(format!("sha256-{}.wasm", "ab".repeat(32)))
    );
    assert_eq!(
        moved.component_cache_dir(),
        std::path::Path::new("/home/r/.cache/wasmcni")
    );
    // A file entry has no origin.
    let file =
        ClusterConfig::parse(&plugin("path = \"/usr/lib/wasmcni/pack.wasm\"", ""), "t").unwrap();
    assert!(file.allocator_spec().unwrap().origin.is_none());
    let mut file_moved = file.clone();
    file_moved.relocate_component_cache(std::path::Path::new("/elsewhere"));
    assert_eq!(
        file_moved.allocator_spec().unwrap().path,
        std::path::Path::new("/usr/lib/wasmcni/pack.wasm")
    );
    // The settings parse with their bounds.
    let registry = "[registry]\nca_files = [\"/etc/wasmcni/ca.pem\"]\nplain_http = [\"127.0.0.1:5000\"]\ntimeout_ms = 5000\nmax_component_bytes = 1048576\n[registry.auth.\"registry.example.com:5000\"]\nusername = \"AWS\"\npassword_file = \"/etc/wasmcni/registry-auth/ecr\"\n";
    let config = ClusterConfig::parse(&plugin(&oci, registry), "t").unwrap();
    assert_eq!(config.registry.timeout_ms, 5000);
    assert_eq!(
        config.registry.auth["registry.example.com:5000"].username,
        "AWS"
    );

    let cases = [
        (
            plugin("", ""),
            "`plugins[0].path` = (missing): name the component",
        ),
        (
            plugin(&format!("path = \"/p.wasm\"\n{oci}"), ""),
            "`plugins[0].oci` = \"oci://registry.example.com:5000/team/pack@",
        ),
        (
            plugin("oci = \"oci://registry.example.com/team/pack:v1\"", ""),
            "must name the manifest by digest",
        ),
        (
            plugin(
                &format!("oci = \"oci://registry.example.com/team/pack:v1@{manifest}\""),
                "",
            ),
            "carries a tag",
        ),
        (
            plugin(
                &format!("oci = \"registry.example.com/team/pack@{manifest}\""),
                "",
            ),
            "must start with \"oci://\"",
        ),
        (
            plugin(&oci, &registry.replace("/etc/wasmcni/ca.pem", "ca.pem")),
            "`registry.ca_files[0]` = \"ca.pem\": must be an absolute path",
        ),
        (
            plugin(
                &oci,
                &registry.replace("127.0.0.1:5000", "http://127.0.0.1:5000"),
            ),
            "`registry.plain_http[0]`",
        ),
        (
            plugin(
                &oci,
                &registry.replace("timeout_ms = 5000", "timeout_ms = 0"),
            ),
            "`registry.timeout_ms` = 0: must be between 1 and 600000",
        ),
        (
            plugin(
                &oci,
                &registry.replace(
                    "max_component_bytes = 1048576",
                    "max_component_bytes = 1073741824",
                ),
            ),
            "`registry.max_component_bytes` = 1073741824",
        ),
        (
            plugin(
                &oci,
                &registry.replace("\"/etc/wasmcni/registry-auth/ecr\"", "\"ecr\""),
            ),
            "password_file` = \"ecr\": must be an absolute path",
        ),
        (
            plugin(
                &oci,
                &registry.replace("/etc/wasmcni/registry-auth/ecr", "/etc/shadow"),
            ),
            "password_file` = \"/etc/shadow\": must lie in /etc/wasmcni/registry-auth",
        ),
        (
            plugin(
                &oci,
                &registry.replace(
                    "/etc/wasmcni/registry-auth/ecr",
                    "/etc/wasmcni/registry-auth/../../shadow",
                ),
            ),
            "must lie in /etc/wasmcni/registry-auth",
        ),
        (
            plugin(
                &oci,
                &registry.replace("127.0.0.1:5000", "registry.example.com:5000"),
            ),
            "is also in registry.plain_http: credentials are not sent in clear text",
        ),
        (
            plugin(&oci, &registry.replace("\"AWS\"", "\"a:b\"")),
            "username` = \"a:b\": must be a non-empty name without ':'",
        ),
    ];
    for (text, expected) in cases {
        let err = ClusterConfig::parse(&text, "t").unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}
