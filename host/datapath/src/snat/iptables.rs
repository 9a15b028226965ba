//! The iptables backend: read what `iptables-save` shows of ours, and replace exactly that
//! with one `iptables-restore --noflush` transaction per table.

use std::collections::BTreeMap;

use super::*;

/// The tables iptables rules of ours live in.
pub(super) const IPTABLES_TABLES: [&str; 2] = ["nat", "mangle"];
/// wasmcni's own iptables chains.
pub(super) const OWN_CHAINS: [&str; 3] = [SNAT_CHAIN, CONNMARK_CHAIN, MANGLE_CHAIN];

/// Makes our part of the iptables tables what `desired` (a [`render_iptables`] output; empty:
/// nothing) says, if it is not already.
pub(super) fn sync_iptables(runner: &Runner, desired: &str) -> Result<(), SnatError> {
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
pub(super) struct OwnedRules {
    /// Our chains that exist, with their rules in order.
    pub(super) chains: BTreeMap<String, Vec<String>>,
    /// Our rules in other chains (the jumps into ours), by chain, in order.
    pub(super) hooks: BTreeMap<String, Vec<String>>,
}

impl OwnedRules {
    pub(super) fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.hooks.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.chains
            .values()
            .chain(self.hooks.values())
            .map(Vec::len)
            .sum()
    }
}

/// Our rules and chains in `iptables-save` output (or [`render_iptables`] output, which has
/// the same shape), by table; tables with nothing of ours are left out.
pub(super) fn owned_iptables_rules(saved: &str) -> BTreeMap<String, OwnedRules> {
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
pub(super) fn is_own_rule(tokens: &[&str]) -> bool {
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
pub(super) fn iptables_restore_input(
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
pub(super) fn annotate_restore_error(error: SnatError, input: &str) -> SnatError {
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
