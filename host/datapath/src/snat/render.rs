//! The rules as text: `iptables-restore --noflush` input and an `nft -f` script.

use std::fmt::Write as _;

use super::*;

/// The rules as `iptables-restore --noflush` input: per table (`nat`, `mangle`) the
/// declarations of wasmcni's chains (which, in noflush mode, create or empty them), their
/// rules, and the jumps appended to the built-in chains. Empty with
/// [`SnatRules::external_snat`]. The rules are written the way `iptables-save` prints them
/// back (`--set-xmark`, `--nfmask`/`--ctmask`, no `-d` for 0.0.0.0/0), so [`apply`] can tell
/// that the node already has them.
pub fn render_iptables(cfg: &SnatRules) -> String {
    if cfg.external_snat {
        return String::new();
    }
    let comment = format!("-m comment --comment {RULE_COMMENT}");
    let mark = format!("{:#x}", cfg.connmark);
    let set_mark = format!("-j CONNMARK --set-xmark {mark}/{mark}");
    let restore_mark = format!("-j CONNMARK --restore-mark --nfmask {mark} --ctmask {mark}");
    let veths = format!("{}+", cfg.veth_prefix);
    let exempt = cfg.exempt_cidrs();
    let random = match cfg.randomize {
        Randomize::Fully => " --random-fully",
        Randomize::Hash => " --random",
        Randomize::None => "",
    };
    let returns = |chain: &str, out: &mut String| {
        for net in &exempt {
            // iptables drops "-d 0.0.0.0/0" (it matches everything), so it is not written.
            let destination = if net.prefix_len() == 0 {
                String::new()
            } else {
                format!("-d {net} ")
            };
            let _ = writeln!(out, "-A {chain} {destination}{comment} -j RETURN");
        }
    };

    let mut out = String::new();
    out.push_str("*nat\n");
    let _ = writeln!(out, ":{SNAT_CHAIN} - [0:0]");
    let _ = writeln!(out, ":{CONNMARK_CHAIN} - [0:0]");
    returns(SNAT_CHAIN, &mut out);
    let _ = writeln!(
        out,
        "-A {SNAT_CHAIN} ! -o vlan+ {comment} -m addrtype ! --dst-type LOCAL -j SNAT \
         --to-source {}{random}",
        cfg.primary_ip
    );
    returns(CONNMARK_CHAIN, &mut out);
    let _ = writeln!(out, "-A {CONNMARK_CHAIN} {comment} {set_mark}");
    let _ = writeln!(
        out,
        "-A PREROUTING -i {veths} {comment} -j {CONNMARK_CHAIN}"
    );
    let _ = writeln!(out, "-A PREROUTING {comment} {restore_mark}");
    let _ = writeln!(out, "-A POSTROUTING {comment} -j {SNAT_CHAIN}");
    out.push_str("COMMIT\n*mangle\n");
    let _ = writeln!(out, ":{MANGLE_CHAIN} - [0:0]");
    let _ = writeln!(
        out,
        "-A {MANGLE_CHAIN} -i {} {comment} -m addrtype --dst-type LOCAL --limit-iface-in \
         {set_mark}",
        cfg.primary_link
    );
    let _ = writeln!(out, "-A {MANGLE_CHAIN} -i {veths} {comment} {restore_mark}");
    let _ = writeln!(out, "-A PREROUTING {comment} -j {MANGLE_CHAIN}");
    out.push_str("COMMIT\n");
    out
}

/// The rules as `nft -f` input that replaces the table `ip wasmcni` atomically (declare it,
/// delete it, define it anew, all in one transaction). Empty with
/// [`SnatRules::external_snat`].
///
/// Chains: `postrouting` (nat, priority srcnat + 10, so other software's SNAT such as
/// kube-proxy's masquerade decides first, as after VPC CNI's appended jump) translates;
/// `prerouting-nat` (nat, dstnat + 10: after kube-proxy's DNAT, so it sees the pod address,
/// not the ClusterIP, as VPC CNI's own nftables chain) skips local destinations, runs
/// `connmark` for pod veths and copies the connmark to the packet mark; `prerouting-mangle`
/// (filter, priority mangle) holds the NodePort rules. nftables cannot combine two registers,
/// so iptables' `--restore-mark --mask M` becomes, per bit of M, one rule clearing and one
/// setting that bit of the packet mark, as VPC CNI writes it.
pub fn render_nftables(cfg: &SnatRules) -> String {
    if cfg.external_snat {
        return String::new();
    }
    let mark = format!("{:#x}", cfg.connmark);
    let veths = format!("\"{}*\"", cfg.veth_prefix);
    let exempt = cfg.exempt_cidrs();
    let random = match cfg.randomize {
        Randomize::Fully => " fully-random",
        Randomize::Hash => " random",
        Randomize::None => "",
    };
    let returns = |out: &mut String| {
        for net in &exempt {
            let _ = writeln!(out, "\t\tip daddr {net} return");
        }
    };
    let restore_mark = |matches: &str, out: &mut String| {
        for bit in (0..32).map(|shift| 1u32 << shift) {
            if cfg.connmark & bit != 0 {
                let _ = writeln!(
                    out,
                    "\t\t{matches}ct mark & {bit:#x} == 0x0 meta mark set meta mark & {:#x}",
                    !bit
                );
                let _ = writeln!(
                    out,
                    "\t\t{matches}ct mark & {bit:#x} == {bit:#x} meta mark set meta mark | {bit:#x}"
                );
            }
        }
    };

    let mut out = String::new();
    let _ = writeln!(out, "table ip {NFT_TABLE} {{}}");
    let _ = writeln!(out, "delete table ip {NFT_TABLE}");
    let _ = writeln!(out, "table ip {NFT_TABLE} {{");
    out.push_str("\tchain postrouting {\n");
    out.push_str("\t\ttype nat hook postrouting priority srcnat + 10; policy accept;\n");
    returns(&mut out);
    let _ = writeln!(
        out,
        "\t\toifname != \"vlan*\" fib daddr type != local snat to {}{random}",
        cfg.primary_ip
    );
    out.push_str("\t}\n\n");
    out.push_str("\tchain prerouting-nat {\n");
    out.push_str("\t\ttype nat hook prerouting priority dstnat + 10; policy accept;\n");
    out.push_str("\t\tfib daddr type local return\n");
    let _ = writeln!(out, "\t\tiifname {veths} jump connmark");
    restore_mark("", &mut out);
    out.push_str("\t}\n\n");
    out.push_str("\tchain connmark {\n");
    returns(&mut out);
    let _ = writeln!(out, "\t\tct mark set ct mark | {mark}");
    out.push_str("\t}\n\n");
    out.push_str("\tchain prerouting-mangle {\n");
    out.push_str("\t\ttype filter hook prerouting priority mangle; policy accept;\n");
    let _ = writeln!(
        out,
        "\t\tiifname \"{}\" fib daddr . iif type local ct mark set ct mark | {mark}",
        cfg.primary_link
    );
    restore_mark(&format!("iifname {veths} "), &mut out);
    out.push_str("\t}\n}\n");
    out
}
