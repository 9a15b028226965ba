use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::iptables::*;
use super::runner::*;
use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test CIDR")
}

fn config() -> SnatRules {
    SnatRules {
        primary_ip: Ipv4Addr::new(10, 0, 0, 5),
        primary_link: "eth0".into(),
        veth_prefix: "eni".into(),
        vpc_cidrs: vec![net("10.0.0.0/16")],
        exclude_cidrs: vec![],
        external_snat: false,
        randomize: Randomize::Fully,
        connmark: DEFAULT_CONNMARK,
    }
}

#[test]
fn iptables_default_config() {
    let expected = "\
*nat
:WASMCNI-SNAT - [0:0]
:WASMCNI-CONNMARK - [0:0]
-A WASMCNI-SNAT -d 10.0.0.0/16 -m comment --comment wasmcni -j RETURN
-A WASMCNI-SNAT ! -o vlan+ -m comment --comment wasmcni -m addrtype ! --dst-type LOCAL -j SNAT --to-source 10.0.0.5 --random-fully
-A WASMCNI-CONNMARK -d 10.0.0.0/16 -m comment --comment wasmcni -j RETURN
-A WASMCNI-CONNMARK -m comment --comment wasmcni -j CONNMARK --set-xmark 0x80/0x80
-A PREROUTING -i eni+ -m comment --comment wasmcni -j WASMCNI-CONNMARK
-A PREROUTING -m comment --comment wasmcni -j CONNMARK --restore-mark --nfmask 0x80 --ctmask 0x80
-A POSTROUTING -m comment --comment wasmcni -j WASMCNI-SNAT
COMMIT
*mangle
:WASMCNI-MANGLE - [0:0]
-A WASMCNI-MANGLE -i eth0 -m comment --comment wasmcni -m addrtype --dst-type LOCAL --limit-iface-in -j CONNMARK --set-xmark 0x80/0x80
-A WASMCNI-MANGLE -i eni+ -m comment --comment wasmcni -j CONNMARK --restore-mark --nfmask 0x80 --ctmask 0x80
-A PREROUTING -m comment --comment wasmcni -j WASMCNI-MANGLE
COMMIT
";
    assert_eq!(render_iptables(&config()), expected);
}

#[test]
fn nftables_default_config() {
    let expected = "\
table ip wasmcni {}
delete table ip wasmcni
table ip wasmcni {
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat + 10; policy accept;
\t\tip daddr 10.0.0.0/16 return
\t\toifname != \"vlan*\" fib daddr type != local snat to 10.0.0.5 fully-random
\t}

\tchain prerouting-nat {
\t\ttype nat hook prerouting priority dstnat + 10; policy accept;
\t\tfib daddr type local return
\t\tiifname \"eni*\" jump connmark
\t\tct mark & 0x80 == 0x0 meta mark set meta mark & 0xffffff7f
\t\tct mark & 0x80 == 0x80 meta mark set meta mark | 0x80
\t}

\tchain connmark {
\t\tip daddr 10.0.0.0/16 return
\t\tct mark set ct mark | 0x80
\t}

\tchain prerouting-mangle {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tiifname \"eth0\" fib daddr . iif type local ct mark set ct mark | 0x80
\t\tiifname \"eni*\" ct mark & 0x80 == 0x0 meta mark set meta mark & 0xffffff7f
\t\tiifname \"eni*\" ct mark & 0x80 == 0x80 meta mark set meta mark | 0x80
\t}
}
";
    assert_eq!(render_nftables(&config()), expected);
}

#[test]
fn external_snat_renders_nothing() {
    let cfg = SnatRules {
        external_snat: true,
        ..config()
    };
    assert_eq!(render_iptables(&cfg), "");
    assert_eq!(render_nftables(&cfg), "");
}

#[test]
fn exclude_cidrs_return_in_both_chains_without_repeats() {
    let cfg = SnatRules {
        // A host address with host bits is written as its network; a repeat of a VPC CIDR
        // and 0.0.0.0/0 (which iptables writes without -d) are handled too.
        vpc_cidrs: vec![net("10.0.0.0/16"), net("100.64.7.1/16")],
        exclude_cidrs: vec![net("192.168.0.0/24"), net("10.0.0.0/16"), net("0.0.0.0/0")],
        ..config()
    };
    let ipt = render_iptables(&cfg);
    for chain in [SNAT_CHAIN, CONNMARK_CHAIN] {
        let returns: Vec<&str> = ipt
            .lines()
            .filter(|l| l.starts_with(&format!("-A {chain} ")) && l.ends_with("-j RETURN"))
            .collect();
        assert_eq!(
            returns,
            [
                format!("-A {chain} -d 10.0.0.0/16 -m comment --comment wasmcni -j RETURN"),
                format!("-A {chain} -d 100.64.0.0/16 -m comment --comment wasmcni -j RETURN"),
                format!("-A {chain} -d 192.168.0.0/24 -m comment --comment wasmcni -j RETURN"),
                format!("-A {chain} -m comment --comment wasmcni -j RETURN"),
            ]
        );
    }
    let nft = render_nftables(&cfg);
    for cidr in [
        "10.0.0.0/16",
        "100.64.0.0/16",
        "192.168.0.0/24",
        "0.0.0.0/0",
    ] {
        let rule = format!("\t\tip daddr {cidr} return\n");
        assert_eq!(
            nft.matches(&rule).count(),
            2,
            "{cidr} in postrouting and connmark"
        );
    }
}

#[test]
fn each_randomize_mode() {
    for (randomize, iptables, nftables) in [
        (
            Randomize::Fully,
            "--to-source 10.0.0.5 --random-fully\n",
            "snat to 10.0.0.5 fully-random\n",
        ),
        (
            Randomize::Hash,
            "--to-source 10.0.0.5 --random\n",
            "snat to 10.0.0.5 random\n",
        ),
        (
            Randomize::None,
            "--to-source 10.0.0.5\n",
            "snat to 10.0.0.5\n",
        ),
    ] {
        let cfg = SnatRules {
            randomize,
            ..config()
        };
        assert_eq!(
            render_iptables(&cfg).matches(iptables).count(),
            1,
            "{randomize:?}"
        );
        assert_eq!(
            render_nftables(&cfg).matches(nftables).count(),
            1,
            "{randomize:?}"
        );
    }
    assert_eq!(Randomize::default(), Randomize::Fully);
}

#[test]
fn nftables_restores_every_bit_of_a_wider_mark() {
    let cfg = SnatRules {
        connmark: 0x180,
        ..config()
    };
    let nft = render_nftables(&cfg);
    for bit in ["0x80", "0x100"] {
        let set = format!("ct mark & {bit} == {bit} meta mark set meta mark | {bit}");
        assert_eq!(nft.matches(&set).count(), 2, "{bit}: nat and mangle");
    }
    assert!(nft.contains("meta mark set meta mark & 0xfffffeff"));
    assert!(nft.contains("ct mark set ct mark | 0x180"));
    assert!(render_iptables(&cfg).contains("--set-xmark 0x180/0x180"));
}

#[test]
fn backend_detection_rule() {
    let nft_variant = Some("iptables v1.8.9 (nf_tables)");
    let legacy = Some("iptables v1.8.9 (legacy)");
    assert_eq!(backend_for(nft_variant, true), Some(Backend::Nftables));
    assert_eq!(backend_for(legacy, true), Some(Backend::Iptables));
    assert_eq!(backend_for(legacy, false), Some(Backend::Iptables));
    assert_eq!(backend_for(None, true), Some(Backend::Nftables));
    assert_eq!(backend_for(None, false), None);
}

#[test]
fn detects_this_nodes_backend() {
    let Ok(version) = Command::new("iptables").arg("-V").output() else {
        eprintln!("skipping detects_this_nodes_backend: no iptables here");
        return;
    };
    let version = String::from_utf8_lossy(&version.stdout);
    let expected = if version.contains("nf_tables") {
        Backend::Nftables
    } else {
        Backend::Iptables
    };
    assert_eq!(detect_backend().expect("detection"), expected, "{version}");
}

#[test]
fn validation_names_the_field() {
    let field_of = |cfg: SnatRules| match cfg.validate() {
        Err(SnatError::InvalidConfig { field, .. }) => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    assert!(config().validate().is_ok());
    let bad_link = SnatRules {
        primary_link: "eth0\n-A".into(),
        ..config()
    };
    assert_eq!(field_of(bad_link), "primary_link");
    let long_prefix = SnatRules {
        veth_prefix: "abcdefghijklmno".into(),
        ..config()
    };
    assert_eq!(field_of(long_prefix), "veth_prefix");
    for prefix in ["eth", "e", "lo", "eni+", ""] {
        let cfg = SnatRules {
            veth_prefix: prefix.into(),
            ..config()
        };
        assert_eq!(field_of(cfg), "veth_prefix", "{prefix:?}");
    }
    let no_mark = SnatRules {
        connmark: 0,
        ..config()
    };
    assert_eq!(field_of(no_mark), "connmark");
    let no_vpc = SnatRules {
        vpc_cidrs: vec![],
        ..config()
    };
    assert_eq!(field_of(no_vpc), "vpc_cidrs");
    let no_ip = SnatRules {
        primary_ip: Ipv4Addr::UNSPECIFIED,
        ..config()
    };
    assert_eq!(field_of(no_ip), "primary_ip");
    let message = SnatRules {
        veth_prefix: "eth".into(),
        ..config()
    }
    .validate()
    .map_err(|e| e.to_string());
    assert!(
        matches!(&message, Err(m) if m.contains("veth_prefix = \"eth\"")),
        "{message:?}"
    );
}

/// `iptables-save -t nat` of a node with VPC CNI, kube-proxy-like rules, a stale copy of
/// our jump (older veth prefix) and a duplicate.
const SAVED_NAT: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables) on Fri Nov 27 12:21:01 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-POSTROUTING - [0:0]
:WASMCNI-SNAT - [0:0]
-A PREROUTING -i old+ -m comment --comment wasmcni -j WASMCNI-CONNMARK
-A PREROUTING -i eni+ -m comment --comment \"AWS, outbound connections\" -j AWS-CONNMARK-CHAIN-0
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A POSTROUTING -m comment --comment wasmcni -j WASMCNI-SNAT
-A POSTROUTING -m comment --comment wasmcni -j WASMCNI-SNAT
-A POSTROUTING -m comment --comment \"wasmcni other\" -j MASQUERADE
-A POSTROUTING -j WASMCNI-SNAT
-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE
-A WASMCNI-SNAT -d 10.0.0.0/16 -m comment --comment wasmcni -j RETURN
COMMIT
# Completed on Fri Nov 27 12:21:01 2026
";

#[test]
fn finds_only_our_rules_in_iptables_save_output() {
    let owned = owned_iptables_rules(SAVED_NAT);
    assert_eq!(owned.keys().collect::<Vec<_>>(), ["nat"]);
    let nat = &owned["nat"];
    assert_eq!(
        nat.chains,
        BTreeMap::from([(
            SNAT_CHAIN.to_owned(),
            vec!["-A WASMCNI-SNAT -d 10.0.0.0/16 -m comment --comment wasmcni -j RETURN".into()]
        )])
    );
    assert_eq!(
        nat.hooks,
        BTreeMap::from([
            (
                "POSTROUTING".to_owned(),
                vec![
                    "-A POSTROUTING -m comment --comment wasmcni -j WASMCNI-SNAT".to_owned(),
                    "-A POSTROUTING -m comment --comment wasmcni -j WASMCNI-SNAT".to_owned(),
                    "-A POSTROUTING -j WASMCNI-SNAT".to_owned(),
                ]
            ),
            (
                "PREROUTING".to_owned(),
                vec![
                    "-A PREROUTING -i old+ -m comment --comment wasmcni -j WASMCNI-CONNMARK"
                        .to_owned()
                ]
            ),
        ])
    );
    // A table with nothing of ours is not reported, so "nothing" compares equal.
    assert!(owned_iptables_rules("*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n").is_empty());
}

#[test]
fn rendered_rules_parse_as_ours() {
    let owned = owned_iptables_rules(&render_iptables(&config()));
    assert_eq!(owned["nat"].len(), 7);
    assert_eq!(owned["mangle"].len(), 3);
    assert_eq!(
        owned["nat"].chains.keys().collect::<Vec<_>>(),
        [CONNMARK_CHAIN, SNAT_CHAIN]
    );
}

#[test]
fn restore_input_replaces_stale_rules_in_one_transaction_per_table() {
    let current = owned_iptables_rules(SAVED_NAT);
    let desired = owned_iptables_rules(&render_iptables(&config()));
    let input = iptables_restore_input(&current, &desired);
    let nat = input
        .split("*nat\n")
        .nth(1)
        .and_then(|rest| rest.split("COMMIT\n").next())
        .expect("a nat section");
    let expected_deletes = [
        "-D POSTROUTING -m comment --comment wasmcni -j WASMCNI-SNAT",
        "-D POSTROUTING -m comment --comment wasmcni -j WASMCNI-SNAT",
        "-D POSTROUTING -j WASMCNI-SNAT",
        "-D PREROUTING -i old+ -m comment --comment wasmcni -j WASMCNI-CONNMARK",
    ];
    let deletes: Vec<&str> = nat.lines().filter(|l| l.starts_with("-D ")).collect();
    assert_eq!(deletes, expected_deletes);
    // Chains first, then deletes, then the new rules.
    let lines: Vec<&str> = nat.lines().collect();
    assert_eq!(
        &lines[..2],
        [":WASMCNI-CONNMARK - [0:0]", ":WASMCNI-SNAT - [0:0]"]
    );
    assert!(lines[2].starts_with("-D "));
    assert_eq!(lines.len(), 2 + expected_deletes.len() + 7);
    assert!(!input.contains("KUBE") && !input.contains("AWS") && !input.contains(":POST"));
    assert!(input.contains("*mangle\n:WASMCNI-MANGLE - [0:0]\n"));

    // Removing: delete the jumps, empty and drop our chains.
    let removal = iptables_restore_input(&current, &BTreeMap::new());
    assert!(removal.starts_with("*nat\n:WASMCNI-SNAT - [0:0]\n-D "));
    assert!(removal.ends_with("-X WASMCNI-SNAT\nCOMMIT\n"));
    assert!(!removal.contains("-A "));
    assert!(!removal.contains("mangle"));
}

#[test]
fn restore_errors_quote_the_failing_line() {
    let error = SnatError::Command {
        command: "iptables-restore --noflush --wait=10".into(),
        status: "exit status: 1".into(),
        stderr: "iptables-restore: line 2 failed: Bad rule".into(),
    };
    let message = annotate_restore_error(error, "*nat\n-D PREROUTING -j X\nCOMMIT\n");
    assert_eq!(
        message.to_string(),
        "`iptables-restore --noflush --wait=10` failed (exit status: 1): iptables-restore: \
         line 2 failed: Bad rule (input line 2: -D PREROUTING -j X)"
    );
}

#[test]
fn missing_program_is_a_spawn_error_naming_it() {
    let runner = Runner::current_namespace();
    let error = runner
        .run("wasmcni-no-such-program", &["-V"], None)
        .expect_err("a missing program");
    assert!(error.is_missing_program());
    assert!(error.to_string().contains("`wasmcni-no-such-program -V`"));
}

// ---- As root, in throwaway network namespaces. ----

static NAMESPACES: AtomicUsize = AtomicUsize::new(0);

const LEGACY: IptablesTools = IptablesTools {
    save: "iptables-legacy-save",
    restore: "iptables-legacy-restore",
};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| {
            status
                .lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Fails the test when not run as root: a root test that returned early would count as
/// passed without having run.
fn require_root(test: &str) {
    assert!(
        is_root(),
        "{test} needs root (network namespaces, firewall rules): run the tests as root"
    );
}

/// Runs a command, panicking with its stderr if it fails; returns stdout.
fn sh(argv: &[&str]) -> String {
    let output = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        output.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A network namespace `snat-<pid>-<n>`, deleted when dropped (also on panic).
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let n = NAMESPACES.fetch_add(1, Ordering::SeqCst);
        let name = format!("snat-{}-{n}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        Netns { name }
    }

    fn exec(&self, argv: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend(argv);
        sh(&full)
    }

    fn runner(&self, iptables: IptablesTools) -> Runner {
        Runner {
            netns: Some(self.name.clone()),
            iptables,
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `iptables-save` without comments and counters, which differ between runs.
fn saved(ns: &Netns, tools: IptablesTools) -> String {
    ns.exec(&[tools.save])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn iptables_apply_and_remove(tools: IptablesTools) {
    let ns = Netns::new();
    let runner = ns.runner(tools);
    let cmd = |args: &str| -> Vec<String> {
        let mut argv = vec![tools.save.replace("-save", "")];
        argv.extend(args.split_whitespace().map(str::to_owned));
        argv
    };
    // Other software's rules, chain and a rule whose comment only starts like ours.
    for args in [
        "-t nat -A POSTROUTING -s 10.99.0.0/16 -m comment --comment other -j MASQUERADE",
        "-t nat -N OTHER",
        "-t nat -A OTHER -d 1.2.3.4/32 -j RETURN",
        "-t nat -A PREROUTING -m comment --comment wasmcni-policy -j OTHER",
        "-t mangle -A PREROUTING -i eth9 -j MARK --set-xmark 0x4000/0x4000",
    ] {
        let argv = cmd(args);
        ns.exec(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let before = saved(&ns, tools);

    let cfg = SnatRules {
        veth_prefix: "enitest".into(),
        ..config()
    };
    apply_with(&runner, &cfg, Backend::Iptables, true).expect("first apply");
    // A duplicate jump (as a crash between two steps of a non-atomic tool leaves) is
    // collapsed by the next apply.
    let duplicate = cmd("-t nat -I POSTROUTING -m comment --comment wasmcni -j WASMCNI-SNAT");
    ns.exec(&duplicate.iter().map(String::as_str).collect::<Vec<_>>());
    apply_with(&runner, &cfg, Backend::Iptables, true).expect("second apply");
    let after = saved(&ns, tools);
    let rendered = render_iptables(&cfg);
    for line in rendered.lines().filter(|l| l.starts_with("-A ")) {
        assert_eq!(
            after.lines().filter(|l| *l == line).count(),
            1,
            "{line}\n{after}"
        );
    }
    for line in before.lines() {
        assert!(
            after.contains(line),
            "other software's {line:?} lost:\n{after}"
        );
    }
    // What the node holds is what was rendered, so a third apply changes nothing.
    let mut current = BTreeMap::new();
    for table in IPTABLES_TABLES {
        let out = runner.run(tools.save, &["-t", table], None).expect("save");
        current.extend(owned_iptables_rules(&out));
    }
    assert_eq!(current, owned_iptables_rules(&rendered));

    // A changed configuration replaces ours.
    let changed = SnatRules {
        exclude_cidrs: vec![net("172.16.0.0/12")],
        veth_prefix: "pod".into(),
        randomize: Randomize::Hash,
        ..cfg.clone()
    };
    apply_with(&runner, &changed, Backend::Iptables, true).expect("changed apply");
    let after_change = saved(&ns, tools);
    assert!(!after_change.contains("enitest+"), "{after_change}");
    assert!(!after_change.contains("--random-fully"), "{after_change}");
    assert_eq!(after_change.matches("-d 172.16.0.0/12").count(), 2);
    assert_eq!(after_change.matches("-j WASMCNI-SNAT").count(), 1);
    assert_eq!(after_change.matches("-i pod+").count(), 2);

    // External SNAT removes ours; removing again is fine.
    let external = SnatRules {
        external_snat: true,
        ..changed
    };
    apply_with(&runner, &external, Backend::Iptables, true).expect("external SNAT apply");
    assert_eq!(saved(&ns, tools), before);
    remove_with(&runner, Backend::Iptables).expect("remove with nothing ours");
    apply_with(&runner, &cfg, Backend::Iptables, true).expect("apply again");
    remove_with(&runner, Backend::Iptables).expect("remove");
    assert_eq!(saved(&ns, tools), before);
}

#[test]
fn iptables_nft_variant_apply_is_idempotent_and_leaves_others_alone() {
    require_root("iptables_nft_variant_apply_is_idempotent_and_leaves_others_alone");
    iptables_apply_and_remove(IptablesTools::DEFAULT);
}

#[test]
fn iptables_legacy_apply_is_idempotent_and_leaves_others_alone() {
    require_root("iptables_legacy_apply_is_idempotent_and_leaves_others_alone");
    iptables_apply_and_remove(LEGACY);
}

#[test]
fn nftables_apply_is_idempotent_and_leaves_others_alone() {
    require_root("nftables_apply_is_idempotent_and_leaves_others_alone");
    let ns = Netns::new();
    let runner = ns.runner(IptablesTools::DEFAULT);
    let other = "table ip other {\n\tchain postrouting {\n\t\ttype nat hook postrouting \
                 priority srcnat; policy accept;\n\t\tip saddr 10.99.0.0/16 masquerade\n\t}\n}\n";
    runner
        .run("nft", &["-f", "-"], Some(other))
        .expect("other table");
    // And another program's iptables(-nft) rule, which must survive the iptables cleanup.
    ns.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-m",
        "comment",
        "--comment",
        "other",
        "-j",
        "MASQUERADE",
    ]);
    let other_before = ns.exec(&["nft", "list", "table", "ip", "other"]);
    let iptables_before = saved(&ns, IptablesTools::DEFAULT);

    let cfg = config();
    apply_with(&runner, &cfg, Backend::Nftables, true).expect("first apply");
    apply_with(&runner, &cfg, Backend::Nftables, true).expect("second apply");
    let tables = ns.exec(&["nft", "list", "tables"]);
    assert_eq!(tables.matches("table ip wasmcni").count(), 1, "{tables}");
    let ours = ns.exec(&["nft", "list", "table", "ip", "wasmcni"]);
    assert_eq!(
        ours.matches("snat to 10.0.0.5 fully-random").count(),
        1,
        "{ours}"
    );
    assert_eq!(
        ours.matches("ip daddr 10.0.0.0/16 return").count(),
        2,
        "{ours}"
    );
    assert_eq!(ours.matches("jump connmark").count(), 1, "{ours}");
    assert_eq!(ours.matches("chain ").count(), 4, "{ours}");

    let changed = SnatRules {
        exclude_cidrs: vec![net("172.16.0.0/12")],
        randomize: Randomize::None,
        ..cfg.clone()
    };
    apply_with(&runner, &changed, Backend::Nftables, true).expect("changed apply");
    let ours = ns.exec(&["nft", "list", "table", "ip", "wasmcni"]);
    assert_eq!(
        ours.matches("ip daddr 172.16.0.0/12 return").count(),
        2,
        "{ours}"
    );
    assert!(!ours.contains("fully-random"), "{ours}");
    assert_eq!(ours.matches("snat to").count(), 1, "{ours}");

    assert_eq!(
        ns.exec(&["nft", "list", "table", "ip", "other"]),
        other_before
    );
    assert_eq!(saved(&ns, IptablesTools::DEFAULT), iptables_before);

    remove_with(&runner, Backend::Nftables).expect("remove");
    remove_with(&runner, Backend::Nftables).expect("remove with nothing ours");
    let tables = ns.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("wasmcni"), "{tables}");
    assert_eq!(
        ns.exec(&["nft", "list", "table", "ip", "other"]),
        other_before
    );
    assert_eq!(saved(&ns, IptablesTools::DEFAULT), iptables_before);
}

#[test]
fn changing_backend_removes_the_other_backends_rules() {
    require_root("changing_backend_removes_the_other_backends_rules");
    let ns = Netns::new();
    let runner = ns.runner(IptablesTools::DEFAULT);
    apply_with(&runner, &config(), Backend::Iptables, true).expect("iptables apply");
    apply_with(&runner, &config(), Backend::Nftables, true).expect("nftables apply");
    // iptables-nft leaves the (empty) nat and mangle tables it created; none of ours.
    let after = saved(&ns, IptablesTools::DEFAULT);
    assert!(!after.to_lowercase().contains("wasmcni"), "{after}");
    apply_with(&runner, &config(), Backend::Iptables, true).expect("iptables apply");
    let tables = ns.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("wasmcni"), "{tables}");
    assert!(saved(&ns, IptablesTools::DEFAULT).contains(":WASMCNI-SNAT"));
}

#[test]
fn apply_reports_an_invalid_config_before_touching_anything() {
    let cfg = SnatRules {
        veth_prefix: "eth".into(),
        ..config()
    };
    // No namespace needed: validation comes first, so no command runs.
    let runner = Runner {
        netns: Some("wasmcni-never-created".into()),
        iptables: IptablesTools::DEFAULT,
    };
    let error = apply_with(&runner, &cfg, Backend::Iptables, true).expect_err("invalid");
    assert!(matches!(
        error,
        SnatError::InvalidConfig {
            field: "veth_prefix",
            ..
        }
    ));
}

/// pod (10.0.5.10) -- enitestN | node | nodeupN (192.168.77.1) -- outside (192.168.77.2).
/// The node routes like VPC CNI for a pod on a secondary ENI: `from <pod> lookup 100` at
/// 1536, where table 100 has nothing but an unreachable default, and `fwmark 0x80/0x80
/// lookup main` at 1024. Only a connmarked connection (every packet of it) gets out.
struct Topology {
    pod: Netns,
    node: Netns,
    outside: Netns,
    uplink: String,
}

impl Topology {
    fn new() -> Topology {
        let (pod, node, outside) = (Netns::new(), Netns::new(), Netns::new());
        let n = NAMESPACES.fetch_add(1, Ordering::SeqCst);
        let (veth, uplink) = (format!("enitest{n}"), format!("nodeup{n}"));
        let ip_node = |args: &str| {
            let mut argv = vec!["ip", "-n", node.name.as_str()];
            argv.extend(args.split_whitespace());
            sh(&argv);
        };
        ip_node(&format!(
            "link add {veth} type veth peer name eth0 netns {}",
            pod.name
        ));
        ip_node(&format!(
            "link add {uplink} type veth peer name eth0 netns {}",
            outside.name
        ));
        ip_node(&format!("addr add 10.0.5.1/24 dev {veth}"));
        ip_node(&format!("addr add 192.168.77.1/24 dev {uplink}"));
        ip_node(&format!("link set {veth} up"));
        ip_node(&format!("link set {uplink} up"));
        ip_node("rule add from 10.0.5.10 lookup 100 priority 1536");
        ip_node("route add unreachable default table 100");
        ip_node(&format!(
            "rule add fwmark {DEFAULT_CONNMARK:#x}/{DEFAULT_CONNMARK:#x} lookup main \
             priority {FWMARK_RULE_PRIORITY}"
        ));
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // Every blackholed attempt answers at once with "no route to host" instead of a
        // rate-limited ICMP leaving the next attempt to time out.
        node.exec(&["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]);
        for (ns, address, gateway) in [
            (&pod, "10.0.5.10/24", "10.0.5.1"),
            (&outside, "192.168.77.2/24", "192.168.77.1"),
        ] {
            let ip = |args: &[&str]| {
                let mut argv = vec!["ip", "-n", ns.name.as_str()];
                argv.extend(args);
                sh(&argv);
            };
            ip(&["addr", "add", address, "dev", "eth0"]);
            ip(&["link", "set", "eth0", "up"]);
            ip(&["link", "set", "lo", "up"]);
            ip(&["route", "add", "default", "via", gateway]);
        }
        Topology {
            pod,
            node,
            outside,
            uplink,
        }
    }

    fn config(&self) -> SnatRules {
        SnatRules {
            primary_ip: Ipv4Addr::new(192, 168, 77, 1),
            primary_link: self.uplink.clone(),
            veth_prefix: "enitest".into(),
            vpc_cidrs: vec![net("10.0.0.0/16")],
            ..config()
        }
    }

    /// Connects from the pod to a listener on 192.168.77.2 in `outside`: what it saw.
    fn pod_to_outside(&self) -> Result<String, String> {
        exchange(
            (&self.outside, "192.168.77.2", 8080),
            (&self.pod, "192.168.77.2", 8080),
        )
    }

    /// Connects from `outside` to the node's NodePort 30080, DNATed to the pod's 8080.
    fn outside_to_node_port(&self) -> Result<String, String> {
        exchange(
            (&self.pod, "10.0.5.10", 8080),
            (&self.outside, "192.168.77.1", 30080),
        )
    }
}

/// Starts a TCP listener in `server` on (address, port), connects to it from `client` at
/// (address, port) and sends "hello"; returns "<peer address> hello" as the listener saw
/// it, or why the exchange failed.
fn exchange(server: (&Netns, &str, u16), client: (&Netns, &str, u16)) -> Result<String, String> {
    let (server, bind, bind_port) = server;
    let (client, target, target_port) = client;
    let listener_code = format!(
        "import socket\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{bind}', {bind_port}))\n\
         s.listen(1)\n\
         s.settimeout(3)\n\
         print('ready', flush=True)\n\
         c, peer = s.accept()\n\
         c.settimeout(3)\n\
         print(peer[0], c.recv(100).decode(), flush=True)\n"
    );
    let client_code = format!(
        "import socket\n\
         c = socket.create_connection(('{target}', {target_port}), timeout=2)\n\
         c.sendall(b'hello')\n\
         c.close()\n"
    );
    let mut listener = Command::new("ip")
        .args([
            "netns",
            "exec",
            &server.name,
            "python3",
            "-c",
            &listener_code,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("listener: {e}"))?;
    let mut stdout = BufReader::new(listener.stdout.take().ok_or("listener stdout")?);
    let mut ready = String::new();
    stdout
        .read_line(&mut ready)
        .map_err(|e| format!("listener: {e}"))?;
    let connected = Command::new("ip")
        .args(["netns", "exec", &client.name, "python3", "-c", &client_code])
        .output()
        .map_err(|e| format!("client: {e}"))?;
    if !connected.status.success() {
        // Don't wait for the listener's accept timeout.
        let _ = listener.kill();
    }
    let mut seen = String::new();
    let _ = stdout.read_line(&mut seen);
    let status = listener.wait().map_err(|e| format!("listener: {e}"))?;
    if !connected.status.success() || !status.success() {
        let stderr = String::from_utf8_lossy(&connected.stderr);
        let reason = stderr.lines().last().unwrap_or_default();
        return Err(format!("client: {reason}; listener: {status}"));
    }
    Ok(seen.trim().to_owned())
}

/// Adds other software's NodePort DNAT (kube-proxy's part) on the node, in `backend`.
fn add_node_port(topology: &Topology, backend: Backend, tools: IptablesTools) {
    let uplink = topology.uplink.as_str();
    match backend {
        Backend::Iptables => {
            let iptables = tools.save.replace("-save", "");
            topology.node.exec(&[
                &iptables,
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                uplink,
                "-p",
                "tcp",
                "--dport",
                "30080",
                "-j",
                "DNAT",
                "--to-destination",
                "10.0.5.10:8080",
            ]);
        }
        Backend::Nftables => {
            // nft 1.0.6 rejects a ';' right before '}', so newlines end the statements.
            let table = format!(
                "table ip kube {{\nchain prerouting {{\n\
                 type nat hook prerouting priority dstnat; policy accept;\n\
                 iifname \"{uplink}\" tcp dport 30080 dnat to 10.0.5.10:8080\n}}\n}}\n"
            );
            let runner = topology.node.runner(tools);
            runner
                .run("nft", &["-f", "-"], Some(&table))
                .expect("NodePort DNAT");
        }
    }
}

fn traffic(backend: Backend, tools: IptablesTools) {
    let topology = Topology::new();
    let runner = topology.node.runner(tools);
    add_node_port(&topology, backend, tools);

    // Without marks, the secondary-ENI rule sends the pod's packets into the blackhole.
    let unmarked = topology.pod_to_outside();
    assert!(
        unmarked.is_err(),
        "pod to outside without our rules: {unmarked:?}"
    );
    let unmarked = topology.outside_to_node_port();
    assert!(
        unmarked.is_err(),
        "NodePort without our rules: {unmarked:?}"
    );

    let cfg = topology.config();
    apply_with(&runner, &cfg, backend, true).expect("apply");
    // SNAT to the primary address, and every packet of the connection connmarked.
    assert_eq!(
        topology.pod_to_outside().as_deref(),
        Ok("192.168.77.1 hello")
    );
    // NodePort: the pod's replies carry the mark of the connection that came in on the
    // primary link.
    assert_eq!(
        topology.outside_to_node_port().as_deref(),
        Ok("192.168.77.2 hello")
    );

    // Excluded: neither SNAT nor connmark, so the blackhole catches the pod again, and,
    // once the secondary-ENI rule is gone, the pod's own address arrives.
    let excluded = SnatRules {
        exclude_cidrs: vec![net("192.168.77.0/24")],
        ..cfg
    };
    apply_with(&runner, &excluded, backend, true).expect("apply with exclusion");
    let blackholed = topology.pod_to_outside();
    assert!(
        blackholed.is_err(),
        "excluded traffic was marked: {blackholed:?}"
    );
    topology
        .node
        .exec(&["ip", "rule", "del", "from", "10.0.5.10", "lookup", "100"]);
    assert_eq!(topology.pod_to_outside().as_deref(), Ok("10.0.5.10 hello"));

    remove_with(&runner, backend).expect("remove");
}

#[test]
fn iptables_nft_variant_translates_and_marks_real_traffic() {
    require_root("iptables_nft_variant_translates_and_marks_real_traffic");
    traffic(Backend::Iptables, IptablesTools::DEFAULT);
}

#[test]
fn iptables_legacy_translates_and_marks_real_traffic() {
    require_root("iptables_legacy_translates_and_marks_real_traffic");
    traffic(Backend::Iptables, LEGACY);
}

#[test]
fn nftables_translates_and_marks_real_traffic() {
    require_root("nftables_translates_and_marks_real_traffic");
    traffic(Backend::Nftables, IptablesTools::DEFAULT);
}
