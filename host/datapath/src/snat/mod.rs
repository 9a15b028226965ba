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

use std::fmt;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
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
    /// What applying these rules needs: a valid configuration, unless SNAT is external (then
    /// nothing is rendered; the node's rules are only removed). Every [`crate::Datapath`]
    /// checks it first, the fake too.
    pub fn check_before_apply(&self) -> Result<(), SnatError> {
        if self.external_snat {
            Ok(())
        } else {
            self.validate()
        }
    }

    /// Checks what the rules would be built from: interface names the kernel accepts (and no
    /// characters a firewall parser would read as syntax), a veth prefix that does not also
    /// match the primary link, a non-zero mark, a SNAT address, and at least one VPC CIDR
    /// (without one, traffic between pods would be translated too). [`apply`] calls it first
    /// (through [`SnatRules::check_before_apply`]); the `render_*` functions assume a valid
    /// configuration.
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
    cfg.check_before_apply()?;
    if cfg.external_snat {
        tracing::info!(%backend, "external SNAT: removing the node's SNAT and connmark rules");
        remove_with(runner, backend)?;
    } else {
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

mod egress;
mod iptables;
mod render;
mod runner;

pub use egress::{apply_egress, render_egress_iptables, render_egress_nftables, EgressRules};
use iptables::sync_iptables;
pub use render::{render_iptables, render_nftables};
use runner::Runner;
pub use runner::{system_program, SYSTEM_PROGRAM_DIRS};

#[cfg(test)]
mod tests;
