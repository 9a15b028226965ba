//! The node's SNAT and connmark rules for pod traffic leaving the VPC, as AWS VPC CNI installs
//! them (`buildIptablesSNATRules`, `iptables_connmark.go`, `nftables_connmark.go`).
//!
//! Three things happen to a pod's connection to an address outside the VPC (and outside
//! [`SnatRules::exclude_cidrs`]):
//!
//! * **SNAT** (nat POSTROUTING): the source becomes the primary ENI's own address, because
//!   the VPC only routes replies to addresses it assigned to an instance.
//! * **connmark** (nat PREROUTING): the connection is marked with [`SnatRules::connmark`]
//!   and the mark is copied to the packet, so the caller's rule
//!   `fwmark <mark>/<mark> lookup main` at [`FWMARK_RULE_PRIORITY`] sends it out through the
//!   primary ENI, which owns the SNAT address, even for a pod whose address belongs to a
//!   secondary ENI (whose `from <pod> lookup <eni table>` rule comes later, at 1536).
//! * **NodePort return path** (mangle PREROUTING): connections arriving on the primary link
//!   for a local address are marked, and every later packet from a pod veth gets the
//!   connection's mark back, so a pod's replies leave through the primary ENI the request
//!   came in on, not through the secondary ENI that owns the pod's address.
//!
//! With [`SnatRules::external_snat`] (a NAT gateway does the translation) none of this is
//! installed and [`apply`] removes what an earlier configuration installed. VPC CNI keeps the
//! NodePort rules in that case (they follow `AWS_VPC_CNI_NODE_PORT_SUPPORT` instead), and it
//! also restores the mark for `vlan+` (security-group-for-pods branch interfaces), which
//! wasmcni does not have.
//!
//! # Backends and ownership
//!
//! [`Backend::Iptables`] keeps the rules in chains of wasmcni's own, [`SNAT_CHAIN`] and
//! [`CONNMARK_CHAIN`] in `nat` and [`MANGLE_CHAIN`] in `mangle`, each reached by one jump from
//! the built-in chain; every rule carries the comment [`RULE_COMMENT`]. In the `nat` and
//! `mangle` tables a rule with that comment, or one jumping into those chains, is this
//! module's: [`apply`] replaces such rules and [`remove`] deletes them. Any other rule, chain
//! or table is never touched. Both go through one `iptables-restore --noflush` transaction per
//! table, so there is no moment with half the rules, and nothing runs when the node already
//! has exactly the wanted rules.
//!
//! [`Backend::Nftables`] keeps everything in the table `ip wasmcni` ([`NFT_TABLE`]), replaced
//! as a whole in one `nft -f` transaction.
//!
//! The policy route itself (`fwmark ... lookup main`) is netlink work and the caller's.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ipnet::Ipv4Net;

/// Priority of the rule `fwmark <connmark>/<connmark> lookup main` (VPC CNI's prio 1024) that
/// sends connmarked pod traffic out through the primary ENI. The caller adds that rule over
/// netlink; this module only provides the marks it matches.
pub const FWMARK_RULE_PRIORITY: u32 = 1024;
/// VPC CNI's default connmark bit (`AWS_VPC_K8S_CNI_CONNMARK`).
pub const DEFAULT_CONNMARK: u32 = 0x80;
/// Comment on every iptables rule of this module; in `nat` and `mangle` it marks the rule as
/// wasmcni's SNAT/connmark rule, to be replaced or removed by this module alone.
pub const RULE_COMMENT: &str = "wasmcni";
/// The `nat` chain holding the SNAT rule and its RETURN exceptions (from POSTROUTING).
pub const SNAT_CHAIN: &str = "WASMCNI-SNAT";
/// The `nat` chain that connmarks pod connections leaving the VPC (from PREROUTING).
pub const CONNMARK_CHAIN: &str = "WASMCNI-CONNMARK";
/// The `mangle` chain holding the NodePort connmark rules (from PREROUTING).
pub const MANGLE_CHAIN: &str = "WASMCNI-MANGLE";
/// The nftables table (family `ip`) that holds all the rules of [`Backend::Nftables`].
pub const NFT_TABLE: &str = "wasmcni";

/// How long `iptables-restore` waits for the xtables lock (held by kube-proxy at times) before
/// giving up. The nf_tables variant accepts and ignores the option.
const IPTABLES_LOCK_WAIT: &str = "--wait=10";
/// Interfaces whose names start with these cannot be pod veths (VPC CNI refuses them too):
/// `eth` are ENIs, `lo` is loopback and `vlan` are the branch ENIs the SNAT rule skips.
const RESERVED_VETH_PREFIXES: [&str; 3] = ["eth", "lo", "vlan"];
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const MAX_INTERFACE_NAME: usize = 15;

/// Port randomisation of the SNAT rule (VPC CNI's `AWS_VPC_K8S_CNI_RANDOMIZESNAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Randomize {
    /// `prng`, the default: `--random-fully` (nft `fully-random`), source ports from a PRNG,
    /// which avoids the port collisions many pods behind one address cause.
    #[default]
    Fully,
    /// `hashrandom`: `--random` (nft `random`), a hash-based port choice.
    Hash,
    /// `none`: the kernel keeps source ports where it can.
    None,
}

/// Which firewall holds the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// iptables chains, through the node's default `iptables-save` / `iptables-restore`.
    Iptables,
    /// The nftables table `ip wasmcni`, through `nft`.
    Nftables,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        })
    }
}

/// What the SNAT and connmark rules are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnatRules {
    /// The SNAT source: the primary ENI's own address.
    pub primary_ip: Ipv4Addr,
    /// The primary ENI's interface (`eth0`), where NodePort connections arrive.
    pub primary_link: String,
    /// Name prefix of the pods' host veths (`eni`); matched as `eni+` (iptables) or `eni*`
    /// (nftables).
    pub veth_prefix: String,
    /// The VPC's CIDRs: traffic to them is neither translated nor connmarked.
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// More destinations that skip SNAT and connmark (`AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS`).
    pub exclude_cidrs: Vec<Ipv4Net>,
    /// A NAT gateway translates (`AWS_VPC_K8S_CNI_EXTERNALSNAT`): no SNAT and no connmark
    /// rules at all, the NodePort ones included, and [`apply`] removes any installed earlier.
    pub external_snat: bool,
    /// Port randomisation of the SNAT rule.
    pub randomize: Randomize,
    /// The connmark bits ([`DEFAULT_CONNMARK`]); also the fwmark the caller's rule at
    /// [`FWMARK_RULE_PRIORITY`] matches.
    pub connmark: u32,
}

impl SnatRules {
    /// Checks what the rules would be built from: interface names the kernel accepts (and no
    /// characters a firewall parser would read as syntax), a veth prefix that does not also
    /// match the primary link, a non-zero mark, a SNAT address, and at least one VPC CIDR
    /// (without one, traffic between pods would be translated too). [`apply`] calls it first;
    /// the `render_*` functions assume a valid configuration.
    pub fn validate(&self) -> Result<(), SnatError> {
        let invalid = |field: &'static str, value: String, reason: String| {
            Err(SnatError::InvalidConfig {
                field,
                value,
                reason,
            })
        };
        check_interface_name("primary_link", &self.primary_link, MAX_INTERFACE_NAME)?;
        // One character less: the wildcard is appended when matching.
        check_interface_name("veth_prefix", &self.veth_prefix, MAX_INTERFACE_NAME - 1)?;
        if RESERVED_VETH_PREFIXES.contains(&self.veth_prefix.as_str()) {
            return invalid(
                "veth_prefix",
                self.veth_prefix.clone(),
                format!(
                    "reserved (VPC CNI refuses {}); choose another prefix such as \"eni\"",
                    RESERVED_VETH_PREFIXES.join(", ")
                ),
            );
        }
        if self.primary_link.starts_with(&self.veth_prefix) {
            return invalid(
                "veth_prefix",
                self.veth_prefix.clone(),
                format!(
                    "it also matches the primary link {:?}, whose traffic would then be treated \
                     as pod traffic; choose a prefix the primary link does not start with",
                    self.primary_link
                ),
            );
        }
        if self.connmark == 0 {
            return invalid(
                "connmark",
                "0x0".into(),
                "the mark needs at least one bit set (VPC CNI uses 0x80)".into(),
            );
        }
        if self.primary_ip.is_unspecified() {
            return invalid(
                "primary_ip",
                self.primary_ip.to_string(),
                "the SNAT source must be the primary ENI's address".into(),
            );
        }
        if self.vpc_cidrs.is_empty() {
            return invalid(
                "vpc_cidrs",
                "[]".into(),
                "at least one VPC CIDR is needed, or all pod traffic, even inside the VPC, \
                 would be translated"
                    .into(),
            );
        }
        Ok(())
    }

    /// VPC then exclude CIDRs, as networks (host bits cleared, as iptables prints them),
    /// without repeats.
    fn exempt_cidrs(&self) -> Vec<Ipv4Net> {
        let mut exempt: Vec<Ipv4Net> = Vec::new();
        for net in self.vpc_cidrs.iter().chain(&self.exclude_cidrs) {
            let net = net.trunc();
            if !exempt.contains(&net) {
                exempt.push(net);
            }
        }
        exempt
    }
}

fn check_interface_name(field: &'static str, name: &str, max_len: usize) -> Result<(), SnatError> {
    let reason = if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > max_len {
        Some(format!("longer than {max_len} characters"))
    } else if name == "." || name == ".." {
        Some("not a valid interface name".to_owned())
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("only ASCII letters, digits, '-', '_' and '.' are accepted".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SnatError::InvalidConfig {
            field,
            value: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A failure to configure the node's SNAT or connmark rules.
#[derive(Debug, thiserror::Error)]
pub enum SnatError {
    /// The configuration cannot be turned into rules.
    #[error("invalid SNAT configuration: {field} = {value:?}: {reason}")]
    InvalidConfig {
        /// The [`SnatRules`] field at fault.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it and what to do.
        reason: String,
    },
    /// A firewall command could not be started.
    #[error(
        "cannot run `{command}`: {source} (is it installed in /usr/sbin, /sbin, /usr/bin or /bin?)"
    )]
    Spawn {
        /// The command line.
        command: String,
        /// Why it could not run.
        #[source]
        source: std::io::Error,
    },
    /// A firewall command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr, with the offending input line when it named one.
        stderr: String,
    },
    /// [`detect_backend`] found neither firewall tool.
    #[error(
        "neither `iptables` nor `nft` is on PATH; install iptables or nftables, which the node's \
         SNAT and connmark rules need"
    )]
    NoFirewall,
}

impl SnatError {
    /// Whether the error means the program itself is not installed.
    fn is_missing_program(&self) -> bool {
        matches!(self, SnatError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Picks the backend the way VPC CNI does: [`Backend::Nftables`] when the node's `iptables`
/// is the nf_tables variant (`iptables -V` prints "nf_tables"; the node's other software,
/// kube-proxy included, then writes into nftables too), or when there is no `iptables` at all
/// but `nft` exists; [`Backend::Iptables`] otherwise, that is when `iptables` is the legacy
/// (x_tables) variant. Neither tool gives [`SnatError::NoFirewall`].
pub fn detect_backend() -> Result<Backend, SnatError> {
    let runner = Runner::current_namespace();
    let iptables_version = match runner.run("iptables", &["-V"], None) {
        Ok(version) => Some(version),
        Err(e) if e.is_missing_program() => None,
        Err(e) => return Err(e),
    };
    // `nft` only decides when there is no iptables.
    let nft_present = iptables_version.is_none()
        && match runner.run("nft", &["--version"], None) {
            Ok(_) => true,
            Err(e) if e.is_missing_program() => false,
            Err(e) => return Err(e),
        };
    backend_for(iptables_version.as_deref(), nft_present).ok_or(SnatError::NoFirewall)
}

/// The detection rule of [`detect_backend`] on what the node answered: the output of
/// `iptables -V` (None: not installed) and whether `nft` is installed.
fn backend_for(iptables_version: Option<&str>, nft_present: bool) -> Option<Backend> {
    match iptables_version {
        Some(version) if version.contains("nf_tables") => Some(Backend::Nftables),
        Some(_) => Some(Backend::Iptables),
        None if nft_present => Some(Backend::Nftables),
        None => None,
    }
}

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

/// Makes the node's rules those of `cfg` (with [`SnatRules::external_snat`]: removes them).
///
/// Idempotent: applying twice leaves one copy of every rule, and a changed configuration
/// replaces the earlier rules, leftovers and duplicates of ours included. Rules, chains and
/// tables of other software are never touched (see the module documentation for what is
/// ours). Calls within the process are serialised.
///
/// [`Backend::Iptables`] reads the `nat` and `mangle` tables with the node's default
/// `iptables-save` and, only if ours differ from `cfg`, rewrites them with one
/// `iptables-restore --noflush` transaction per table: our chains are declared (which empties
/// them), our old jumps deleted by their exact text and the new rules appended. The default
/// binaries, not `iptables-legacy-*`/`iptables-nft-*`, because kube-proxy and the node's
/// operators use the default too, so our rules are where they look; [`detect_backend`]
/// returns this backend only when that default is the legacy variant. [`Backend::Nftables`]
/// replaces the table `ip wasmcni` with one `nft -f -`.
///
/// The first call in the process (and the first after a change of backend) also removes what
/// the other backend holds of ours, as VPC CNI does once at start: a node that changed
/// firewall between two runs would otherwise translate and mark twice. That is skipped when
/// the other backend's tool is not installed, and a failure there is only logged.
pub fn apply(cfg: &SnatRules, backend: Backend) -> Result<(), SnatError> {
    let mut cleaned_for = lock_firewall();
    let clean_other = *cleaned_for != Some(backend);
    apply_with(&Runner::current_namespace(), cfg, backend, clean_other)?;
    if clean_other {
        *cleaned_for = Some(backend);
    }
    Ok(())
}

/// Removes every rule, chain and table of ours from `backend`, leaving other software's
/// alone. Nothing of ours, or the backend's tool not installed, is not an error.
pub fn remove(backend: Backend) -> Result<(), SnatError> {
    let _serialised = lock_firewall();
    remove_with(&Runner::current_namespace(), backend)
}

/// Serialises [`apply`] and [`remove`] (each reads the rules, then rewrites them) and
/// remembers the backend whose first [`apply`] removed the other backend's rules.
fn lock_firewall() -> MutexGuard<'static, Option<Backend>> {
    static FIREWALL: Mutex<Option<Backend>> = Mutex::new(None);
    // A panic while holding the lock leaves no state to distrust: the rules are re-read.
    FIREWALL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn apply_with(
    runner: &Runner,
    cfg: &SnatRules,
    backend: Backend,
    clean_other: bool,
) -> Result<(), SnatError> {
    if cfg.external_snat {
        tracing::info!(%backend, "external SNAT: removing the node's SNAT and connmark rules");
        remove_with(runner, backend)?;
    } else {
        cfg.validate()?;
        match backend {
            Backend::Iptables => sync_iptables(runner, &render_iptables(cfg))?,
            Backend::Nftables => {
                runner.run("nft", &["-f", "-"], Some(&render_nftables(cfg)))?;
                tracing::info!(primary_ip = %cfg.primary_ip, "nftables table ip {NFT_TABLE} replaced");
            }
        }
    }
    if clean_other {
        let other = match backend {
            Backend::Iptables => Backend::Nftables,
            Backend::Nftables => Backend::Iptables,
        };
        if let Err(e) = remove_with(runner, other) {
            tracing::warn!(error = %e, "could not remove leftover {other} SNAT/connmark rules");
        }
    }
    Ok(())
}

fn remove_with(runner: &Runner, backend: Backend) -> Result<(), SnatError> {
    match backend {
        Backend::Iptables => sync_iptables(runner, ""),
        Backend::Nftables => remove_nftables(runner),
    }
}

/// Deletes the table `ip wasmcni`; the declaration first makes the delete succeed when the
/// table does not exist.
fn remove_nftables(runner: &Runner) -> Result<(), SnatError> {
    let input = format!("table ip {NFT_TABLE} {{}}\ndelete table ip {NFT_TABLE}\n");
    match runner.run("nft", &["-f", "-"], Some(&input)) {
        Err(e) if e.is_missing_program() => Ok(()),
        other => other.map(drop),
    }
}

/// The tables iptables rules of ours live in.
const IPTABLES_TABLES: [&str; 2] = ["nat", "mangle"];
/// wasmcni's own iptables chains.
const OWN_CHAINS: [&str; 3] = [SNAT_CHAIN, CONNMARK_CHAIN, MANGLE_CHAIN];

/// Makes our part of the iptables tables what `desired` (a [`render_iptables`] output; empty:
/// nothing) says, if it is not already.
fn sync_iptables(runner: &Runner, desired: &str) -> Result<(), SnatError> {
    let desired = owned_iptables_rules(desired);
    let mut current = BTreeMap::new();
    for table in IPTABLES_TABLES {
        match runner.run(runner.iptables.save, &["-t", table], None) {
            Ok(saved) => current.extend(owned_iptables_rules(&saved)),
            // Without iptables nothing of ours can exist, and nothing has to be removed.
            Err(e) if e.is_missing_program() && desired.is_empty() => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    if current == desired {
        tracing::debug!("iptables SNAT/connmark rules already up to date");
        return Ok(());
    }
    let input = iptables_restore_input(&current, &desired);
    let args = ["--noflush", IPTABLES_LOCK_WAIT];
    runner
        .run(runner.iptables.restore, &args, Some(&input))
        .map_err(|e| annotate_restore_error(e, &input))?;
    tracing::info!(
        rules = desired.values().map(OwnedRules::len).sum::<usize>(),
        "iptables SNAT/connmark rules replaced"
    );
    Ok(())
}

/// Our part of one iptables table, lines as `iptables-save` prints them (`-A CHAIN ...`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct OwnedRules {
    /// Our chains that exist, with their rules in order.
    chains: BTreeMap<String, Vec<String>>,
    /// Our rules in other chains (the jumps into ours), by chain, in order.
    hooks: BTreeMap<String, Vec<String>>,
}

impl OwnedRules {
    fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.hooks.is_empty()
    }

    fn len(&self) -> usize {
        self.chains
            .values()
            .chain(self.hooks.values())
            .map(Vec::len)
            .sum()
    }
}

/// Our rules and chains in `iptables-save` output (or [`render_iptables`] output, which has
/// the same shape), by table; tables with nothing of ours are left out.
fn owned_iptables_rules(saved: &str) -> BTreeMap<String, OwnedRules> {
    let mut tables = BTreeMap::new();
    let mut table: Option<(String, OwnedRules)> = None;
    for line in saved.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('*') {
            table = Some((name.to_owned(), OwnedRules::default()));
        } else if line == "COMMIT" {
            if let Some((name, rules)) = table.take() {
                if !rules.is_empty() {
                    tables.insert(name, rules);
                }
            }
        } else if let Some((_, rules)) = table.as_mut() {
            if let Some(declaration) = line.strip_prefix(':') {
                let chain = declaration.split_whitespace().next().unwrap_or_default();
                if OWN_CHAINS.contains(&chain) {
                    rules.chains.entry(chain.to_owned()).or_default();
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let tokens: Vec<&str> = rule.split_whitespace().collect();
                let Some(chain) = tokens.first().copied() else {
                    continue;
                };
                if OWN_CHAINS.contains(&chain) {
                    rules
                        .chains
                        .entry(chain.to_owned())
                        .or_default()
                        .push(line.to_owned());
                } else if is_own_rule(&tokens) {
                    rules
                        .hooks
                        .entry(chain.to_owned())
                        .or_default()
                        .push(line.to_owned());
                }
            }
        }
    }
    tables
}

/// Whether a rule outside our chains is ours: it carries our comment or jumps into our chain.
fn is_own_rule(tokens: &[&str]) -> bool {
    tokens.windows(2).any(|pair| match pair {
        ["--comment", comment] => *comment == RULE_COMMENT,
        ["-j" | "-g", target] => OWN_CHAINS.contains(target),
        _ => false,
    })
}

/// `iptables-restore --noflush` input turning `current` into `desired`, one transaction per
/// table: declare the wanted chains (creates or empties them), delete our current jumps by
/// their exact text (every copy), append the wanted rules, and drop chains of ours no longer
/// wanted. Built-in chains are never declared: in noflush mode that would reset their policy.
fn iptables_restore_input(
    current: &BTreeMap<String, OwnedRules>,
    desired: &BTreeMap<String, OwnedRules>,
) -> String {
    let empty = OwnedRules::default();
    let mut names: Vec<&String> = current.keys().chain(desired.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = String::new();
    for name in names {
        let now = current.get(name).unwrap_or(&empty);
        let wanted = desired.get(name).unwrap_or(&empty);
        let stale_chains: Vec<&String> = now
            .chains
            .keys()
            .filter(|chain| !wanted.chains.contains_key(*chain))
            .collect();
        let _ = writeln!(out, "*{name}");
        for chain in wanted.chains.keys().chain(stale_chains.iter().copied()) {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for line in now.hooks.values().flatten() {
            if let Some(rule) = line.strip_prefix("-A ") {
                let _ = writeln!(out, "-D {rule}");
            }
        }
        for line in wanted
            .chains
            .values()
            .chain(wanted.hooks.values())
            .flatten()
        {
            let _ = writeln!(out, "{line}");
        }
        for chain in stale_chains {
            let _ = writeln!(out, "-X {chain}");
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// iptables-restore names a failing input line only by number ("line 4 failed"): adds the
/// line itself to the error.
fn annotate_restore_error(error: SnatError, input: &str) -> SnatError {
    let SnatError::Command {
        command,
        status,
        stderr,
    } = error
    else {
        return error;
    };
    let line = stderr.split("line ").skip(1).find_map(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let number: usize = digits.parse().ok()?;
        rest[digits.len()..]
            .starts_with(" failed")
            .then_some(number)
    });
    let stderr = match line.and_then(|n| Some((n, input.lines().nth(n.checked_sub(1)?)?))) {
        Some((number, text)) => format!("{stderr} (input line {number}: {text})"),
        None => stderr,
    };
    SnatError::Command {
        command,
        status,
        stderr,
    }
}

/// The directories the daemon takes the programs it runs from, in order: the system's own,
/// never `PATH` (which whoever started the daemon controls).
pub const SYSTEM_PROGRAM_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The path of the system program `name` (an executable file in [`SYSTEM_PROGRAM_DIRS`]).
pub fn system_program(name: &str) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    SYSTEM_PROGRAM_DIRS
        .iter()
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|path| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{name} is not in {}", SYSTEM_PROGRAM_DIRS.join(", ")),
            )
        })
}

/// The iptables programs of one variant.
#[derive(Debug, Clone, Copy)]
struct IptablesTools {
    save: &'static str,
    restore: &'static str,
}

impl IptablesTools {
    /// Whatever the node's `iptables` alternative is.
    const DEFAULT: IptablesTools = IptablesTools {
        save: "iptables-save",
        restore: "iptables-restore",
    };
}

/// Runs the firewall tools, in the current network namespace or (tests) in a named one
/// through `ip netns exec`, which keeps `setns` out of this module.
#[derive(Debug, Clone)]
struct Runner {
    netns: Option<String>,
    iptables: IptablesTools,
}

impl Runner {
    fn current_namespace() -> Runner {
        Runner {
            netns: None,
            iptables: IptablesTools::DEFAULT,
        }
    }

    /// Runs `program args`, feeding `input` on stdin; its stdout on success. Programs are
    /// taken from the system directories only ([`system_program`]), never from `PATH`.
    fn run(&self, program: &str, args: &[&str], input: Option<&str>) -> Result<String, SnatError> {
        let mut words: Vec<&str> = Vec::new();
        if let Some(netns) = &self.netns {
            words.extend(["ip", "netns", "exec", netns.as_str()]);
        }
        words.push(program);
        words.extend(args);
        let command = words.join(" ");
        let spawn_error = |source| SnatError::Spawn {
            command: command.clone(),
            source,
        };
        let program = system_program(program).map_err(spawn_error)?;
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(netns) = &self.netns {
            argv.push(system_program("ip").map_err(spawn_error)?.into());
            argv.extend(["netns", "exec", netns.as_str()].map(Into::into));
        }
        argv.push(program.into());
        argv.extend(args.iter().map(Into::into));
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SnatError::Spawn {
                command: command.clone(),
                source,
            })?;
        let stdin = child.stdin.take();
        let output = std::thread::scope(|scope| {
            if let (Some(input), Some(mut stdin)) = (input, stdin) {
                // Written from a second thread so a large input cannot deadlock against the
                // child's output. A write error (the child quit early) shows in its status.
                scope.spawn(move || {
                    let _ = stdin.write_all(input.as_bytes());
                });
            }
            child.wait_with_output()
        })
        .map_err(|source| SnatError::Spawn {
            command: command.clone(),
            source,
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            let stderr = if stderr.is_empty() {
                String::from_utf8_lossy(&output.stdout).trim().to_owned()
            } else {
                stderr
            };
            return Err(SnatError::Command {
                command,
                status: output.status.to_string(),
                stderr,
            });
        }
        // stderr of a successful run is only warnings (iptables-nft-save's "legacy tables
        // present"), which say nothing about our rules.
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::{AtomicUsize, Ordering};

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
                vec![
                    "-A WASMCNI-SNAT -d 10.0.0.0/16 -m comment --comment wasmcni -j RETURN".into()
                ]
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
    fn exchange(
        server: (&Netns, &str, u16),
        client: (&Netns, &str, u16),
    ) -> Result<String, String> {
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
}
