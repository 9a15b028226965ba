//! What one plugin call may cost the node: fuel and memory (wasmtime's), a wall-clock deadline,
//! a budget of host calls, the bytes one host call may pass in, and the size of every string
//! and list the host keeps or renders. Pure data, the one place the bounds are written down
//! (docs/security.md tabulates them).
//!
//! Fuel bounds guest instructions only. The host's own work on a plugin's behalf is bounded
//! separately: every host call is charged against [`Limits::host_calls`] and checks the
//! deadline, wasmtime's hostcall fuel caps the bytes copied out of the guest per host call
//! (lists of strings that alias one buffer included) before anything is allocated, and each
//! argument is size-checked before it is rendered or kept.

use std::fmt;
use std::time::Duration;

use crate::grants::PluginKind;

/// An export the host calls, each with its own deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Export {
    /// Allocator `allocate` (on the ADD path).
    Allocate,
    /// Allocator `plan` (in the background).
    Plan,
    /// Tagger `tags` (before an ENI is created).
    Tags,
    /// Policy `evaluate` (on ADD, DEL and CHECK).
    Evaluate,
}

impl Export {
    /// The export's WIT name.
    pub fn as_str(self) -> &'static str {
        match self {
            Export::Allocate => "allocate",
            Export::Plan => "plan",
            Export::Tags => "tags",
            Export::Evaluate => "evaluate",
        }
    }

    /// The exports of a plugin kind.
    pub fn of(kind: PluginKind) -> &'static [Export] {
        match kind {
            PluginKind::Allocator => &[Export::Allocate, Export::Plan],
            PluginKind::Tagger => &[Export::Tags],
            PluginKind::Policy => &[Export::Evaluate],
        }
    }

    /// The default deadline: tens of milliseconds on a request's path (a call costs tens of
    /// microseconds, so this is a thousandfold margin for a loaded node), hundreds for `plan`,
    /// which runs in the background.
    pub fn default_deadline(self) -> Duration {
        match self {
            Export::Allocate | Export::Tags | Export::Evaluate => Duration::from_millis(50),
            Export::Plan => Duration::from_millis(500),
        }
    }
}

impl fmt::Display for Export {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The default memory limit of a plugin granted `wasi`: its component bundles an interpreter
/// whose memory starts large (BENCHMARKS.md, "Plugins in Python and JavaScript": the Python
/// allocator needs 13 MiB, the JavaScript one 10 MiB, a Rust one 2). JavaScript plugins built
/// here import no WASI and keep the 16 MiB default, 6 MiB above what they need.
pub const INTERPRETER_MEMORY_BYTES: usize = 32 << 20;

/// The longest deadline a configuration may give a call: beyond it a runtime's own CNI
/// timeout could pass first.
pub const MAX_DEADLINE: Duration = Duration::from_secs(10);

/// How often the epoch ticker advances while calls run: the resolution of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Host calls a call may make by default (reading the whole pool is 8, a plan that logs and
/// requests a dozen changes stays under 100).
pub const DEFAULT_HOST_CALLS: u32 = 1_000;

/// The most host calls a configuration may allow per call.
pub const MAX_HOST_CALLS: u32 = 1_000_000;

/// Bytes one host call may copy out of the guest (its arguments, or an export's answer),
/// counted as wasmtime lifts them, before anything is allocated on the host. `kv` grants with
/// a larger quota raise it to one value of that quota.
pub const HOSTCALL_BYTES: usize = 64 << 10;

/// Longest `config` or `kv` key.
pub const MAX_KEY_BYTES: usize = 256;

/// Longest ENI, subnet or security group id accepted (EC2's are 21 to 24 characters).
pub const MAX_ID_BYTES: usize = 64;

/// Most security groups a `create-eni` may name (EC2 allows 16 per ENI at most).
pub const MAX_SECURITY_GROUPS: usize = 16;

/// Most addresses or prefixes one `release-*` request may list (no instance type has more than
/// 50 address slots per ENI).
pub const MAX_RELEASE_LIST: usize = 64;

/// Most ENI requests one `plan` may leave queued (requests for the same ENI are merged).
pub const MAX_ENI_REQUESTS: usize = 32;

/// Most datapath adjustments one policy call may queue.
pub const MAX_NETLINK_REQUESTS: usize = 16;

/// Most log messages a plugin may write per call; the rest are dropped with one warning.
pub const MAX_LOGS_PER_CALL: u32 = 64;

/// Most privileged requests recorded for the audit log per call; beyond it only a count is kept.
pub const MAX_RECORDED_CALLS: usize = 64;

/// Largest plugin message kept (log lines, refusal reasons, deny reasons).
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Plugin calls that may run at once; more wait for a slot until their deadline.
pub const CONCURRENT_CALLS: u32 = 32;

/// Largest `memory_bytes` a plugin may be given (the pooling allocator's slot size).
pub const MAX_PLUGIN_MEMORY: usize = 256 << 20;

/// Per-call resource limits of one plugin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Fuel per call (roughly one unit per wasm instruction).
    pub fuel: u64,
    /// Largest linear memory, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock deadline of each export, milliseconds (instantiation included).
    pub deadline_ms: std::collections::BTreeMap<Export, u64>,
    /// Host calls one call may make.
    pub host_calls: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000,
            memory_bytes: 16 << 20,
            deadline_ms: [
                Export::Allocate,
                Export::Plan,
                Export::Tags,
                Export::Evaluate,
            ]
            .into_iter()
            .map(|export| (export, export.default_deadline().as_millis() as u64))
            .collect(),
            host_calls: DEFAULT_HOST_CALLS,
        }
    }
}

impl Limits {
    /// The deadline of `export`.
    pub fn deadline(&self, export: Export) -> Duration {
        self.deadline_ms.get(&export).map_or_else(
            || export.default_deadline(),
            |ms| Duration::from_millis(*ms),
        )
    }

    /// Bytes one host call of a plugin whose `kv` quota is `kv_max_bytes` may pass in.
    pub fn hostcall_bytes(kv_max_bytes: Option<usize>) -> usize {
        kv_max_bytes
            .map_or(HOSTCALL_BYTES, |quota| {
                quota.saturating_add(MAX_KEY_BYTES + 64)
            })
            .max(HOSTCALL_BYTES)
    }
}

/// A host-side limit a call ran into; the call traps with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostLimit {
    /// The call ran past its deadline.
    #[error("ran past its deadline of {} ms (a loop, in wasm or in host calls?)", .0.as_millis())]
    Deadline(Duration),
    /// The call made more host calls than its budget.
    #[error("made more than {0} host calls in one call")]
    HostCalls(u32),
    /// The daemon is stopping and ended the call.
    #[error("was stopped: the daemon is shutting down")]
    ShuttingDown,
    /// No instance slot became free before the deadline.
    #[error("found no free plugin instance within its deadline of {} ms ({running} calls already running)", .deadline.as_millis())]
    NoSlot {
        /// The call's deadline.
        deadline: Duration,
        /// Calls running (every slot).
        running: u32,
    },
    /// A memory was to grow past the call's memory limit (the resource limiter refused it).
    #[error(
        "exceeded its memory limit of {limit} bytes (asked to grow a memory to {desired} bytes)"
    )]
    Memory {
        /// The call's memory limit in bytes.
        limit: usize,
        /// The size the guest asked for.
        desired: usize,
    },
    /// An argument was too large for what it is.
    #[error("passed {what} of {len} bytes; at most {max} are accepted")]
    Oversized {
        /// What (`a config key`, `a kv key`, ...).
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Cuts `message` to [`MAX_MESSAGE_BYTES`] (at a character boundary), marking the cut.
pub fn truncate(message: String) -> String {
    truncate_to(message, MAX_MESSAGE_BYTES)
}

/// Cuts `text` to at most `max` bytes at a character boundary, marking the cut.
pub fn truncate_to(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("… (truncated)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_export_has_a_default_deadline_within_the_maximum() {
        let limits = Limits::default();
        for kind in PluginKind::ALL {
            for export in Export::of(kind) {
                let deadline = limits.deadline(*export);
                assert!(deadline > Duration::ZERO && deadline <= MAX_DEADLINE);
            }
        }
        assert_eq!(limits.deadline(Export::Plan), Duration::from_millis(500));
        assert_eq!(limits.deadline(Export::Allocate), Duration::from_millis(50));
    }

    #[test]
    fn hostcall_bytes_follow_the_kv_quota_but_never_fall_below_the_default() {
        assert_eq!(Limits::hostcall_bytes(None), HOSTCALL_BYTES);
        assert_eq!(Limits::hostcall_bytes(Some(1024)), HOSTCALL_BYTES);
        assert_eq!(
            Limits::hostcall_bytes(Some(1 << 20)),
            (1 << 20) + MAX_KEY_BYTES + 64
        );
        assert_eq!(Limits::hostcall_bytes(Some(usize::MAX)), usize::MAX);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_to("abc".into(), 8), "abc");
        let cut = truncate_to("ééé".into(), 3);
        assert_eq!(cut, "é… (truncated)");
        let long = truncate("x".repeat(5000));
        assert!(long.starts_with(&"x".repeat(MAX_MESSAGE_BYTES)));
        assert!(long.len() < MAX_MESSAGE_BYTES + 20);
    }
}
