//! `namespace-guard`: a policy hook deciding which pods may attach, from their namespace and
//! annotations, which subnets their addresses may come from, and which MTU their interface gets.
//!
//! Settings (`[plugins.config]`, every value a string; quote the dotted keys in TOML):
//!
//! ```toml
//! [plugins.config]
//! allow_namespaces = "payments, team-*, kube-system"  # absent: every namespace may attach
//! deny_namespaces = "team-sandbox"                     # wins over allow_namespaces
//! "annotations.*" = "example.com/owner"                # every pod needs this annotation...
//! "annotations.payments" = "example.com/owner, example.com/pci=approved"
//! "annotations.kube-system" = ""                       # ...except kube-system's
//! "subnets.payments" = "subnet-0abc, subnet-0def"      # payments' addresses only from these
//! "subnets.*" = "subnet-0123"                          # everyone else's only from this one
//! "subnets.kube-system" = "*"                          # kube-system: any subnet
//! "mtu.payments" = "1400"                              # payments' pods get MTU 1400
//! ```
//!
//! - A namespace pattern is a name (`payments`), a prefix with a trailing `*` (`team-*`), or
//!   `*` alone (every pod, including one whose runtime passed no namespace).
//! - Per-namespace rules (`annotations.`, `subnets.`, `mtu.`): only the most specific matching
//!   entry applies — an exact name over any wildcard, a longer prefix over a shorter one — and
//!   it replaces, not adds to, the less specific ones. A pod no entry matches has no such rule.
//! - `annotations.<pattern>`: `key` (present, any value) or `key=value` (exactly that value),
//!   comma separated; `""` requires nothing. Annotations reach the hook only when the runtime
//!   passes them (containerd and CRI-O do): elsewhere every required annotation is missing.
//! - `subnets.<pattern>`: subnet ids, comma separated, or `*` for any. An attachment with no
//!   subnet (the static provider, or wasmcni chained after another plugin) passes this check.
//! - `mtu.<pattern>`: 576 to 65535, set on ADD through `netlink.set-mtu`; the grant's `mtu`
//!   range must include it, otherwise the ADD is denied with the host's reason.
//! - Unknown keys and malformed values refuse the plugin at load (`init`), naming the setting;
//!   the daemon does not start, a reload is rejected and the running configuration stays.
//!
//! DEL is always allowed (a pod must always be able to go away); what would have been denied is
//! logged. Grants it needs: `log` and `netlink` (both always imported); the `netlink` grant's
//! `mtu` range must cover every `mtu.` rule (without a range, `set-mtu` is refused).

use wasmcni_plugin_sdk::policy::types::Pod;
use wasmcni_plugin_sdk::policy::{config, log, netlink, Attachment, Guest, Verb, Verdict};

/// Smallest MTU a pod may be given (IPv4's minimum reassembly size).
pub const MIN_MTU: u32 = 576;
/// Largest MTU a pod may be given.
pub const MAX_MTU: u32 = 65535;

/// Which namespaces a setting names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly this namespace.
    Exact(String),
    /// Every namespace starting with this prefix (`team-*`); the empty prefix is `*`.
    Prefix(String),
}

impl Pattern {
    /// Parses `name`, `prefix*` or `*`.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let text = text.trim();
        let (name, wildcard) = match text.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (text, false),
        };
        let valid = name.len() <= 63
            && (wildcard || !name.is_empty())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(format!(
                "{text:?} is not a namespace pattern (a namespace name, a prefix ending in `*` \
                 such as `team-*`, or `*`)"
            ));
        }
        Ok(if wildcard {
            Pattern::Prefix(name.to_string())
        } else {
            Pattern::Exact(name.to_string())
        })
    }

    /// Whether the pattern names `namespace` (`""` for a pod without one, which only `*` names).
    pub fn matches(&self, namespace: &str) -> bool {
        match self {
            Pattern::Exact(name) => name == namespace,
            Pattern::Prefix(prefix) => namespace.starts_with(prefix.as_str()),
        }
    }

    /// Higher is more specific: an exact name over any prefix, a longer prefix over a shorter.
    fn specificity(&self) -> usize {
        match self {
            Pattern::Exact(_) => usize::MAX,
            Pattern::Prefix(prefix) => prefix.len(),
        }
    }
}

impl core::fmt::Display for Pattern {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Pattern::Exact(name) => f.write_str(name),
            Pattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// A per-namespace rule: the settings `<kind>.<pattern>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules<T>(Vec<(Pattern, T)>);

impl<T> Default for Rules<T> {
    fn default() -> Self {
        Rules(Vec::new())
    }
}

impl<T> Rules<T> {
    /// The most specific entry naming `namespace`, with its pattern.
    pub fn for_namespace(&self, namespace: &str) -> Option<(&Pattern, &T)> {
        self.0
            .iter()
            .filter(|(pattern, _)| pattern.matches(namespace))
            .max_by_key(|(pattern, _)| pattern.specificity())
            .map(|(pattern, rule)| (pattern, rule))
    }
}

/// A required annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The annotation key.
    pub key: String,
    /// The value it must have; `None`: any.
    pub value: Option<String>,
}

/// The subnets a namespace may get addresses from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subnets {
    /// Any subnet (`*`).
    Any,
    /// Only these.
    Only(Vec<String>),
}

/// The parsed settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// `allow_namespaces`; `None`: every namespace.
    pub allow: Option<Vec<Pattern>>,
    /// `deny_namespaces`.
    pub deny: Vec<Pattern>,
    /// `annotations.<pattern>`.
    pub annotations: Rules<Vec<Requirement>>,
    /// `subnets.<pattern>`.
    pub subnets: Rules<Subnets>,
    /// `mtu.<pattern>`.
    pub mtu: Rules<u32>,
}

impl Guard {
    /// Parses the plugin's settings; an error names the setting and says what is expected.
    pub fn from_settings(settings: &[(String, String)]) -> Result<Guard, String> {
        let mut guard = Guard::default();
        for (key, value) in settings {
            let named = |e: String| format!("setting {key:?} = {value:?}: {e}");
            match key.split_once('.') {
                None if key == "allow_namespaces" => {
                    guard.allow = Some(patterns(value).map_err(named)?);
                }
                None if key == "deny_namespaces" => guard.deny = patterns(value).map_err(named)?,
                Some(("annotations", pattern)) => {
                    let pattern = Pattern::parse(pattern).map_err(named)?;
                    let required = requirements(value).map_err(named)?;
                    guard.annotations.0.push((pattern, required));
                }
                Some(("subnets", pattern)) => {
                    let pattern = Pattern::parse(pattern).map_err(named)?;
                    guard
                        .subnets
                        .0
                        .push((pattern, subnets(value).map_err(named)?));
                }
                Some(("mtu", pattern)) => {
                    let pattern = Pattern::parse(pattern).map_err(named)?;
                    let mtu = value
                        .trim()
                        .parse()
                        .ok()
                        .filter(|mtu| (MIN_MTU..=MAX_MTU).contains(mtu))
                        .ok_or_else(|| named(format!("expected {MIN_MTU} to {MAX_MTU}")))?;
                    guard.mtu.0.push((pattern, mtu));
                }
                _ => {
                    return Err(format!(
                        "unknown setting {key:?}: namespace-guard reads allow_namespaces, \
                         deny_namespaces, \"annotations.<pattern>\", \"subnets.<pattern>\" \
                         and \"mtu.<pattern>\""
                    ))
                }
            }
        }
        Ok(guard)
    }
}

fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn patterns(text: &str) -> Result<Vec<Pattern>, String> {
    let patterns = items(text)
        .map(Pattern::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if patterns.is_empty() {
        return Err("an empty list; remove the setting instead".into());
    }
    Ok(patterns)
}

fn requirements(text: &str) -> Result<Vec<Requirement>, String> {
    items(text)
        .map(|item| {
            let (key, value) = match item.split_once('=') {
                Some((key, value)) => (key.trim(), Some(value.trim().to_string())),
                None => (item, None),
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(format!("{item:?} is not `key` or `key=value`"));
            }
            Ok(Requirement {
                key: key.to_string(),
                value,
            })
        })
        .collect()
}

fn subnets(text: &str) -> Result<Subnets, String> {
    if text.trim() == "*" {
        return Ok(Subnets::Any);
    }
    let ids: Vec<String> = items(text).map(str::to_string).collect();
    if ids.is_empty() {
        return Err("no subnets; use `*` for any, or deny the namespace".into());
    }
    if let Some(bad) = ids.iter().find(|id| !id.starts_with("subnet-")) {
        return Err(format!("{bad:?} is not a subnet id (subnet-…)"));
    }
    Ok(Subnets::Only(ids))
}

/// What the hook answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allow; on ADD, set the pod's MTU to this first.
    Allow {
        /// The MTU to request through `netlink.set-mtu`.
        mtu: Option<u32>,
    },
    /// Refuse, with the reason the runtime shows.
    Deny(String),
}

/// The decision for `attachment` under `guard`, and a line to log when a DEL is let through
/// that an ADD would have been refused.
pub fn decide(guard: &Guard, attachment: &Attachment) -> (Decision, Option<String>) {
    let verdict = judge(guard, &attachment.pod, attachment.subnet_id.as_deref());
    match (&attachment.verb, verdict) {
        (Verb::Del, Decision::Deny(reason)) => (
            Decision::Allow { mtu: None },
            Some(format!(
                "DEL allowed although an ADD would be denied: {reason}"
            )),
        ),
        (Verb::Del | Verb::Check, Decision::Allow { .. }) => (Decision::Allow { mtu: None }, None),
        (_, verdict) => (verdict, None),
    }
}

fn judge(guard: &Guard, pod: &Pod, subnet_id: Option<&str>) -> Decision {
    let namespace = pod.namespace.as_deref().unwrap_or("");
    let who = match (&pod.namespace, &pod.name) {
        (Some(ns), Some(name)) => format!("pod {ns}/{name}"),
        (Some(ns), None) => format!("container {} in namespace {ns}", pod.container_id),
        (None, _) => format!("container {} (no namespace)", pod.container_id),
    };
    if let Some(pattern) = guard.deny.iter().find(|p| p.matches(namespace)) {
        return Decision::Deny(format!(
            "{who}: namespace {namespace:?} is denied (deny_namespaces: {pattern})"
        ));
    }
    if let Some(allow) = &guard.allow {
        if !allow.iter().any(|p| p.matches(namespace)) {
            let list: Vec<String> = allow.iter().map(Pattern::to_string).collect();
            return Decision::Deny(format!(
                "{who}: namespace {namespace:?} is not allowed (allow_namespaces: {})",
                list.join(", ")
            ));
        }
    }
    if let Some((pattern, required)) = guard.annotations.for_namespace(namespace) {
        for requirement in required {
            let found = pod
                .annotations
                .iter()
                .find(|pair| pair.key == requirement.key);
            match (found, &requirement.value) {
                (None, _) => {
                    return Decision::Deny(format!(
                        "{who}: annotation {:?} is required (annotations.{pattern})",
                        requirement.key
                    ))
                }
                (Some(pair), Some(value)) if pair.value != *value => {
                    return Decision::Deny(format!(
                        "{who}: annotation {:?} must be {value:?}, not {:?} \
                         (annotations.{pattern})",
                        requirement.key, pair.value
                    ))
                }
                _ => {}
            }
        }
    }
    if let (Some(subnet), Some((pattern, Subnets::Only(allowed)))) =
        (subnet_id, guard.subnets.for_namespace(namespace))
    {
        if !allowed.iter().any(|id| id == subnet) {
            return Decision::Deny(format!(
                "{who}: the address comes from {subnet}, namespace {namespace:?} may use only \
                 {} (subnets.{pattern})",
                allowed.join(", ")
            ));
        }
    }
    Decision::Allow {
        mtu: guard.mtu.for_namespace(namespace).map(|(_, mtu)| *mtu),
    }
}

struct NamespaceGuard;

/// The guard the settings describe.
fn configured() -> Result<Guard, String> {
    let settings: Vec<(String, String)> = config::all()
        .into_iter()
        .map(|pair| (pair.key, pair.value))
        .collect();
    Guard::from_settings(&settings)
}

impl Guest for NamespaceGuard {
    fn init() -> Result<(), String> {
        configured().map(drop)
    }

    fn evaluate(attachment: Attachment) -> Verdict {
        let guard = match configured() {
            Ok(guard) => guard,
            Err(e) if matches!(attachment.verb, Verb::Del) => {
                log::log(log::Level::Error, &format!("DEL allowed; {e}"));
                return Verdict::Allow;
            }
            Err(e) => return Verdict::Deny(format!("namespace-guard configuration: {e}")),
        };
        let (decision, note) = decide(&guard, &attachment);
        if let Some(note) = note {
            log::log(log::Level::Info, &note);
        }
        match decision {
            Decision::Deny(reason) => Verdict::Deny(format!("namespace-guard: {reason}")),
            Decision::Allow { mtu: Some(mtu) } if matches!(attachment.verb, Verb::Add) => {
                match netlink::set_mtu(mtu) {
                    Ok(()) => Verdict::Allow,
                    Err(e) => Verdict::Deny(format!(
                        "namespace-guard: MTU {mtu} for this namespace was refused: {e}"
                    )),
                }
            }
            Decision::Allow { .. } => Verdict::Allow,
        }
    }
}

wasmcni_plugin_sdk::policy::export_policy!(NamespaceGuard);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmcni_plugin_sdk::policy::Pair;

    fn guard(settings: &[(&str, &str)]) -> Guard {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Guard::from_settings(&settings).unwrap()
    }

    fn attachment(
        verb: Verb,
        namespace: Option<&str>,
        annotations: &[(&str, &str)],
        subnet: Option<&str>,
    ) -> Attachment {
        Attachment {
            verb,
            pod: Pod {
                namespace: namespace.map(str::to_string),
                name: Some("web-0".into()),
                container_id: "c0ffee".into(),
                ifname: "eth0".into(),
                annotations: annotations
                    .iter()
                    .map(|(k, v)| Pair {
                        key: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                cni_args: Vec::new(),
            },
            addresses: Vec::new(),
            addresses_v6: Vec::new(),
            eni_id: subnet.map(|_| "eni-0abc".to_string()),
            subnet_id: subnet.map(str::to_string),
            chained: subnet.is_none(),
        }
    }

    /// The example of the module documentation.
    fn example() -> Guard {
        guard(&[
            ("allow_namespaces", "payments, team-*, kube-system"),
            ("deny_namespaces", "team-sandbox"),
            ("annotations.*", "example.com/owner"),
            (
                "annotations.payments",
                "example.com/owner, example.com/pci=approved",
            ),
            ("annotations.kube-system", ""),
            ("subnets.payments", "subnet-0abc, subnet-0def"),
            ("subnets.*", "subnet-0123"),
            ("subnets.kube-system", "*"),
            ("mtu.payments", "1400"),
        ])
    }

    const OWNER: (&str, &str) = ("example.com/owner", "alice");
    const PCI: (&str, &str) = ("example.com/pci", "approved");

    /// Name, verb, namespace, annotations, subnet, the expected allowance (`DENY`: a denial),
    /// and what the denial's reason must contain.
    type Case<'a> = (
        &'a str,
        Verb,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        Option<Decision>,
        &'a str,
    );

    #[test]
    fn table() {
        let allow = |mtu| Some(Decision::Allow { mtu });
        const DENY: Option<Decision> = None;
        #[rustfmt::skip]
        let cases: [Case; 17] = [
            ("listed namespace, all annotations, allowed subnet", Verb::Add, Some("payments"), &[OWNER, PCI], Some("subnet-0abc"), allow(Some(1400)), ""),
            ("second allowed subnet", Verb::Add, Some("payments"), &[OWNER, PCI], Some("subnet-0def"), allow(Some(1400)), ""),
            ("wildcard allow", Verb::Add, Some("team-a"), &[OWNER], Some("subnet-0123"), allow(None), ""),
            ("deny wins over allow", Verb::Add, Some("team-sandbox"), &[OWNER], Some("subnet-0123"), DENY, "denied (deny_namespaces: team-sandbox)"),
            ("not in the allow list", Verb::Add, Some("default"), &[OWNER], Some("subnet-0123"), DENY, "not allowed (allow_namespaces: payments, team-*, kube-system)"),
            ("`team-*` does not name `team`", Verb::Add, Some("team"), &[OWNER], None, DENY, "not allowed"),
            ("no namespace, allow list set", Verb::Add, None, &[OWNER], None, DENY, "container c0ffee (no namespace): namespace \"\" is not allowed"),
            ("missing annotation", Verb::Add, Some("team-a"), &[], Some("subnet-0123"), DENY, "annotation \"example.com/owner\" is required (annotations.*)"),
            ("exact rule replaces `*`: pci required", Verb::Add, Some("payments"), &[OWNER], Some("subnet-0abc"), DENY, "annotation \"example.com/pci\" is required (annotations.payments)"),
            ("wrong annotation value", Verb::Add, Some("payments"), &[OWNER, ("example.com/pci", "pending")], Some("subnet-0abc"), DENY, "must be \"approved\", not \"pending\""),
            ("exemption: kube-system needs nothing", Verb::Add, Some("kube-system"), &[], Some("subnet-0999"), allow(None), ""),
            ("subnet outside the namespace's list", Verb::Add, Some("payments"), &[OWNER, PCI], Some("subnet-0123"), DENY, "comes from subnet-0123, namespace \"payments\" may use only subnet-0abc, subnet-0def (subnets.payments)"),
            ("`*` subnet rule for the rest", Verb::Add, Some("team-a"), &[OWNER], Some("subnet-0abc"), DENY, "may use only subnet-0123 (subnets.*)"),
            ("no subnet (static provider, chained): passes", Verb::Add, Some("payments"), &[OWNER, PCI], None, allow(Some(1400)), ""),
            ("CHECK judges like ADD, sets no MTU", Verb::Check, Some("payments"), &[OWNER, PCI], Some("subnet-0abc"), allow(None), ""),
            ("CHECK denies too", Verb::Check, Some("default"), &[OWNER], None, DENY, "not allowed"),
            ("DEL is always allowed", Verb::Del, Some("team-sandbox"), &[], Some("subnet-0999"), allow(None), ""),
        ];
        let guard = example();
        for (name, verb, namespace, annotations, subnet, expected, reason) in cases {
            let (decision, _) = decide(&guard, &attachment(verb, namespace, annotations, subnet));
            match (expected, decision) {
                (Some(expected), decision) => assert_eq!(decision, expected, "{name}"),
                (None, Decision::Deny(text)) => {
                    assert!(text.contains(reason), "{name}: {text:?} lacks {reason:?}")
                }
                (None, decision) => panic!("{name}: expected a denial, got {decision:?}"),
            }
        }
    }

    #[test]
    fn a_del_that_an_add_would_refuse_is_logged() {
        let del = attachment(Verb::Del, Some("team-sandbox"), &[], None);
        let (decision, note) = decide(&example(), &del);
        assert_eq!(decision, Decision::Allow { mtu: None });
        assert!(note
            .unwrap()
            .contains("DEL allowed although an ADD would be denied"));
        let ok = attachment(Verb::Del, Some("payments"), &[OWNER, PCI], None);
        assert_eq!(decide(&example(), &ok).1, None);
    }

    #[test]
    fn no_settings_allow_everything() {
        let add = attachment(Verb::Add, None, &[], Some("subnet-0999"));
        assert_eq!(
            decide(&Guard::default(), &add).0,
            Decision::Allow { mtu: None }
        );
    }

    #[test]
    fn most_specific_pattern_wins() {
        let guard = guard(&[
            ("mtu.*", "9001"),
            ("mtu.team-*", "1500"),
            ("mtu.team-a*", "1400"),
            ("mtu.team-a", "1300"),
        ]);
        for (namespace, mtu) in [
            ("team-a", 1300),
            ("team-ab", 1400),
            ("team-b", 1500),
            ("other", 9001),
            ("", 9001),
        ] {
            let add = attachment(Verb::Add, Some(namespace), &[], None);
            assert_eq!(
                decide(&guard, &add).0,
                Decision::Allow { mtu: Some(mtu) },
                "{namespace}"
            );
        }
    }

    #[test]
    fn settings_errors_name_the_setting() {
        let cases = [
            (("allow", "x"), "unknown setting \"allow\""),
            (("allow_namespaces", ""), "an empty list"),
            (
                ("deny_namespaces", "Team-*"),
                "\"Team-*\" is not a namespace pattern",
            ),
            (
                ("deny_namespaces", "te*am"),
                "\"te*am\" is not a namespace pattern",
            ),
            (
                ("subnets.payments", "sg-0abc"),
                "\"sg-0abc\" is not a subnet id",
            ),
            (("subnets.payments", ""), "no subnets"),
            (("subnets.pay ments", "*"), "not a namespace pattern"),
            (("mtu.payments", "100000"), "expected 576 to 65535"),
            (
                ("mtu.payments", "big"),
                "setting \"mtu.payments\" = \"big\"",
            ),
            (("annotations.*", "a b"), "not `key` or `key=value`"),
            (("annotations.*", "=x"), "not `key` or `key=value`"),
        ];
        for ((key, value), needle) in cases {
            let error = Guard::from_settings(&[(key.to_string(), value.to_string())]).unwrap_err();
            assert!(error.contains(needle), "{error:?} lacks {needle:?}");
        }
    }
}
