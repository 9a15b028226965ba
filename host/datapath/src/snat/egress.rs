//! IPv6 pods' IPv4 egress (VPC CNI's egress-cni): traffic from the node-local egress range to
//! anywhere else leaves translated to the address of the interface it leaves by, the node's own
//! IPv4 address (masquerade, so the rule needs no address and follows the node's routing).
//!
//! The rules are wasmcni's like the IPv4 pods' SNAT rules (same chain `WASMCNI-SNAT` and
//! comment, same table `ip wasmcni`), and a node runs one or the other: pods are of one family
//! per node, and changing it needs a restart, whose first [`apply_egress`] replaces what the
//! other left.

use std::fmt::Write as _;

use super::*;

/// The egress rule as `iptables-restore --noflush` input (what `iptables-save` prints back).
pub fn render_egress_iptables(range: Ipv4Net) -> String {
    let range = range.trunc();
    let comment = format!("-m comment --comment {RULE_COMMENT}");
    let mut out = String::new();
    out.push_str("*nat\n");
    let _ = writeln!(out, ":{SNAT_CHAIN} - [0:0]");
    let _ = writeln!(
        out,
        "-A {SNAT_CHAIN} -s {range} ! -d {range} {comment} -j MASQUERADE --random-fully"
    );
    let _ = writeln!(out, "-A POSTROUTING {comment} -j {SNAT_CHAIN}");
    out.push_str("COMMIT\n");
    out
}

/// The egress rule as `nft -f` input replacing the table `ip wasmcni` (priority srcnat + 10,
/// after other software's translation, as the IPv4 pods' rule).
pub fn render_egress_nftables(range: Ipv4Net) -> String {
    let range = range.trunc();
    let mut out = String::new();
    let _ = writeln!(out, "table ip {NFT_TABLE} {{}}");
    let _ = writeln!(out, "delete table ip {NFT_TABLE}");
    let _ = writeln!(out, "table ip {NFT_TABLE} {{");
    out.push_str("\tchain postrouting {\n");
    out.push_str("\t\ttype nat hook postrouting priority srcnat + 10; policy accept;\n");
    let _ = writeln!(
        out,
        "\t\tip saddr {range} ip daddr != {range} masquerade fully-random"
    );
    out.push_str("\t}\n}\n");
    out
}

/// Makes the node's rules of ours the egress rule for `range` (and nothing else) in
/// `backend`; idempotent, serialised with [`apply`] and [`remove`].
pub fn apply_egress(range: Ipv4Net, backend: Backend) -> Result<(), SnatError> {
    let _serialised = lock_firewall();
    let runner = Runner::current_namespace();
    match backend {
        Backend::Iptables => sync_iptables(&runner, &render_egress_iptables(range)),
        Backend::Nftables => runner
            .run("nft", &["-f", "-"], Some(&render_egress_nftables(range)))
            .map(drop),
    }?;
    tracing::info!(%backend, %range, "IPv4 egress of IPv6 pods: translated to the node's address");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_egress_rule_masquerades_the_range_leaving_for_anywhere_else() {
        let range: Ipv4Net = "169.254.172.0/22".parse().unwrap();
        assert_eq!(
            render_egress_iptables(range),
            "*nat\n:WASMCNI-SNAT - [0:0]\n\
             -A WASMCNI-SNAT -s 169.254.172.0/22 ! -d 169.254.172.0/22 -m comment --comment wasmcni -j MASQUERADE --random-fully\n\
             -A POSTROUTING -m comment --comment wasmcni -j WASMCNI-SNAT\nCOMMIT\n"
        );
        let nft = render_egress_nftables(range);
        assert!(
            nft.contains("\t\tip saddr 169.254.172.0/22 ip daddr != 169.254.172.0/22 masquerade fully-random\n"),
            "{nft}"
        );
        assert!(
            nft.starts_with("table ip wasmcni {}\ndelete table ip wasmcni\n"),
            "{nft}"
        );
        // What is ours in it is exactly the rendered rules, so a second apply changes nothing.
        let owned = iptables::owned_iptables_rules(&render_egress_iptables(range));
        assert_eq!(owned["nat"].len(), 2, "{owned:?}");
    }
}
