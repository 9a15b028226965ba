//! IPv6 pods' IPv4 egress (VPC CNI's egress-cni): traffic from the node-local egress range to
//! anywhere else leaves translated to the address of the interface it leaves by, the node's own
//! IPv4 address (masquerade, so the rule needs no address and follows the node's routing).
//!
//! The rules are wasmcni's like the IPv4 pods' SNAT rules (same chain `WASMCNI-SNAT` and
//! comment, same table `ip wasmcni`), and a node runs one or the other: pods are of one family
//! per node, and changing it needs a restart. Applying either set replaces everything of ours
//! in that backend (the IPv4 pods' [`apply`] removes an egress rule an IPv6 configuration
//! left); the first call in the process also removes ours from the other backend.

use std::fmt::Write as _;

use super::*;

/// What the egress rule is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRules {
    /// The pods' node-local egress addresses (`datapath.ipv4_egress_range`).
    pub range: Ipv4Net,
    /// Port randomisation of the translation.
    pub randomize: Randomize,
}

impl EgressRules {
    fn random(&self, iptables: bool) -> &'static str {
        match (self.randomize, iptables) {
            (Randomize::Fully, true) => " --random-fully",
            (Randomize::Hash, true) => " --random",
            (Randomize::Fully, false) => " fully-random",
            (Randomize::Hash, false) => " random",
            (Randomize::None, _) => "",
        }
    }
}

/// The egress rule as `iptables-restore --noflush` input (what `iptables-save` prints back).
pub fn render_egress_iptables(rules: &EgressRules) -> String {
    let range = rules.range.trunc();
    let comment = format!("-m comment --comment {RULE_COMMENT}");
    let mut out = String::new();
    out.push_str("*nat\n");
    let _ = writeln!(out, ":{SNAT_CHAIN} - [0:0]");
    let _ = writeln!(
        out,
        "-A {SNAT_CHAIN} -s {range} ! -d {range} {comment} -j MASQUERADE{}",
        rules.random(true)
    );
    let _ = writeln!(out, "-A POSTROUTING {comment} -j {SNAT_CHAIN}");
    out.push_str("COMMIT\n");
    out
}

/// The egress rule as `nft -f` input replacing the table `ip wasmcni` (priority srcnat + 10,
/// after other software's translation, as the IPv4 pods' rule).
pub fn render_egress_nftables(rules: &EgressRules) -> String {
    let range = rules.range.trunc();
    let mut out = String::new();
    let _ = writeln!(out, "table ip {NFT_TABLE} {{}}");
    let _ = writeln!(out, "delete table ip {NFT_TABLE}");
    let _ = writeln!(out, "table ip {NFT_TABLE} {{");
    out.push_str("\tchain postrouting {\n");
    out.push_str("\t\ttype nat hook postrouting priority srcnat + 10; policy accept;\n");
    let _ = writeln!(
        out,
        "\t\tip saddr {range} ip daddr != {range} masquerade{}",
        rules.random(false)
    );
    out.push_str("\t}\n}\n");
    out
}

/// Makes the node's rules of ours the egress rule (`Some`) or nothing (`None`: IPv4 egress
/// switched off) in `backend`; idempotent, serialised with [`apply`] and [`remove`]. The first
/// call in the process (or after a change of backend) also removes ours from the other
/// backend, as [`apply`] does.
pub fn apply_egress(rules: Option<&EgressRules>, backend: Backend) -> Result<(), SnatError> {
    let mut cleaned_for = lock_firewall();
    let clean_other = *cleaned_for != Some(backend);
    let runner = Runner::current_namespace();
    match (rules, backend) {
        (None, backend) => remove_with(&runner, backend)?,
        (Some(rules), Backend::Iptables) => sync_iptables(&runner, &render_egress_iptables(rules))?,
        (Some(rules), Backend::Nftables) => runner
            .run("nft", &["-f", "-"], Some(&render_egress_nftables(rules)))
            .map(drop)?,
    }
    if clean_other {
        let other = match backend {
            Backend::Iptables => Backend::Nftables,
            Backend::Nftables => Backend::Iptables,
        };
        if let Err(e) = remove_with(&runner, other) {
            tracing::warn!(error = %e, "could not remove leftover {other} rules of ours");
        }
        *cleaned_for = Some(backend);
    }
    match rules {
        Some(rules) => {
            tracing::info!(%backend, range = %rules.range, "IPv4 egress of IPv6 pods: translated to the node's address")
        }
        None => tracing::info!(%backend, "IPv4 egress is off: no translation rule of ours"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_egress_rule_masquerades_the_range_leaving_for_anywhere_else() {
        let rules = EgressRules {
            range: "169.254.172.0/22".parse().unwrap(),
            randomize: Randomize::Fully,
        };
        assert_eq!(
            render_egress_iptables(&rules),
            "*nat\n:WASMCNI-SNAT - [0:0]\n\
             -A WASMCNI-SNAT -s 169.254.172.0/22 ! -d 169.254.172.0/22 -m comment --comment wasmcni -j MASQUERADE --random-fully\n\
             -A POSTROUTING -m comment --comment wasmcni -j WASMCNI-SNAT\nCOMMIT\n"
        );
        let nft = render_egress_nftables(&rules);
        assert!(
            nft.contains("\t\tip saddr 169.254.172.0/22 ip daddr != 169.254.172.0/22 masquerade fully-random\n"),
            "{nft}"
        );
        assert!(
            nft.starts_with("table ip wasmcni {}\ndelete table ip wasmcni\n"),
            "{nft}"
        );
        // What is ours in it is exactly the rendered rules, so a second apply changes nothing.
        let owned = iptables::owned_iptables_rules(&render_egress_iptables(&rules));
        assert_eq!(owned["nat"].len(), 2, "{owned:?}");
        // The node's port randomisation setting is honoured.
        let hashed = EgressRules {
            randomize: Randomize::Hash,
            ..rules
        };
        assert!(render_egress_iptables(&hashed).contains("-j MASQUERADE --random\n"));
        assert!(render_egress_nftables(&hashed).contains("masquerade random\n"));
    }
}
