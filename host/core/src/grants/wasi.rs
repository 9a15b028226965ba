//! WASI as a capability. Components that bundle an interpreter (`componentize-py`,
//! `componentize-js`) import the WASI 0.2 command interfaces whether or not the plugin's own
//! code uses them. Granting `wasi` links them, and by default they hold nothing: no
//! environment, arguments or working directory, no files, no network, an empty stdin, stdout
//! and stderr kept only to explain a failed call, and clocks and randomness that are
//! deterministic. The scope opens, one by one, the real clocks, the system's randomness and
//! read-only directories.

use std::path::PathBuf;

/// The WASI 0.2 interfaces the daemon can link (`wasi:<package>/<interface>`, without the
/// version), with what each gives a plugin and what it is kin to.
pub const INTERFACES: [(&str, Area); 27] = [
    ("wasi:io/error", Area::Io),
    ("wasi:io/poll", Area::Io),
    ("wasi:io/streams", Area::Io),
    ("wasi:clocks/monotonic-clock", Area::Clocks),
    ("wasi:clocks/wall-clock", Area::Clocks),
    ("wasi:random/random", Area::Random),
    ("wasi:random/insecure", Area::Random),
    ("wasi:random/insecure-seed", Area::Random),
    ("wasi:cli/environment", Area::Environment),
    ("wasi:cli/exit", Area::Exit),
    ("wasi:cli/stdin", Area::Stdin),
    ("wasi:cli/stdout", Area::Output),
    ("wasi:cli/stderr", Area::Output),
    ("wasi:cli/terminal-input", Area::Terminal),
    ("wasi:cli/terminal-output", Area::Terminal),
    ("wasi:cli/terminal-stdin", Area::Terminal),
    ("wasi:cli/terminal-stdout", Area::Terminal),
    ("wasi:cli/terminal-stderr", Area::Terminal),
    ("wasi:filesystem/types", Area::Filesystem),
    ("wasi:filesystem/preopens", Area::Filesystem),
    ("wasi:sockets/network", Area::Sockets),
    ("wasi:sockets/instance-network", Area::Sockets),
    ("wasi:sockets/tcp", Area::Sockets),
    ("wasi:sockets/tcp-create-socket", Area::Sockets),
    ("wasi:sockets/udp", Area::Sockets),
    ("wasi:sockets/udp-create-socket", Area::Sockets),
    ("wasi:sockets/ip-name-lookup", Area::Sockets),
];

/// What a WASI interface is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Errors, polls and streams: the plumbing of the others.
    Io,
    /// Wall and monotonic clocks, and sleeping.
    Clocks,
    /// Random bytes.
    Random,
    /// Environment variables, arguments, working directory.
    Environment,
    /// `exit`.
    Exit,
    /// Standard input.
    Stdin,
    /// Standard output and error.
    Output,
    /// Terminal handles.
    Terminal,
    /// Files and directories.
    Filesystem,
    /// Network.
    Sockets,
}

/// Most directories one `wasi` grant may open.
pub const MAX_READ_DIRS: usize = 8;

/// Bytes of a plugin's stdout and stderr the daemon keeps per call (the last ones written):
/// shown when the call fails, where an interpreter prints its traceback.
pub const MAX_CAPTURED_OUTPUT: usize = 4 << 10;

/// Random bytes one call of `get-random-bytes` may ask for (the host allocates them).
pub const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// `wasi` scope: what the WASI a plugin sees holds. Everything is closed by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WasiScope {
    /// The real clocks (the daemon's wall clock; a monotonic clock counting real time from
    /// the call's start; sleeps that wait, up to the call's deadline). Without it both clocks start at zero (1970 for the
    /// wall clock) and move only by the plugin's own sleeps, which return at once.
    pub clocks: bool,
    /// The system's randomness. Without it every call draws the same fixed-seed stream.
    pub random: bool,
    /// Host directories the plugin may read (not write), each under its own path; absolute.
    pub read_dirs: Vec<PathBuf>,
}

impl WasiScope {
    /// Whether the scope opens nothing.
    pub fn is_closed(&self) -> bool {
        *self == WasiScope::default()
    }
}

/// The known interface a WASI 0.2 import name (`wasi:cli/environment@0.2.9`) is, if it is one.
pub fn interface_of(import: &str) -> Option<&'static str> {
    let (name, version) = import.split_once('@')?;
    let numbers = super::version_numbers(version)?;
    if numbers[..2] != [0, 2] {
        return None;
    }
    area_of(name).map(|(known, _)| known)
}

/// A known WASI interface name (without version) and its area.
fn area_of(interface: &str) -> Option<(&'static str, Area)> {
    INTERFACES
        .iter()
        .find(|(known, _)| *known == interface)
        .copied()
}

/// What the daemon gives a plugin through the WASI import `import` under `scope`, in words
/// for the audit report; `None` when it is not a WASI interface the daemon links.
pub fn treatment(import: &str, scope: &WasiScope) -> Option<String> {
    let (_, area) = area_of(interface_of(import)?)?;
    Some(match area {
        Area::Io => "streams and polls of the interfaces below; nothing of its own".into(),
        Area::Clocks if scope.clocks => {
            "granted: the real clocks; a sleep waits, never past the call's deadline".into()
        }
        Area::Clocks => "stubbed: deterministic, starting at 0 (1970) and moved only by the \
                         plugin's own sleeps, which return at once"
            .into(),
        Area::Random if scope.random => "granted: the system's randomness".into(),
        Area::Random => "stubbed: the same fixed-seed stream in every call".into(),
        Area::Environment => "stubbed: no variables, no arguments, no working directory".into(),
        Area::Exit => "ends the call as a failure".into(),
        Area::Stdin => "stubbed: empty".into(),
        Area::Output => format!(
            "captured: the last {} KiB of a call are shown if it fails, then dropped",
            MAX_CAPTURED_OUTPUT >> 10
        ),
        Area::Terminal => "stubbed: no terminal".into(),
        Area::Filesystem if scope.read_dirs.is_empty() => {
            "stubbed: no directories, so every open fails".into()
        }
        Area::Filesystem => format!(
            "granted: read-only {}",
            scope
                .read_dirs
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Area::Sockets => "stubbed: no network; every socket and name lookup is refused".into(),
    })
}

/// Trees no `read_dirs` entry may be in: `/proc/1/root` is the host's root, and a device or a
/// pseudo-file can block a read past any deadline.
pub const KERNEL_TREES: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Checks a directory a `wasi` grant opens: absolute, plain (no `.`, `..` or repeated `/`),
/// and not the root. Whether it exists is checked when the plugin loads.
pub fn check_read_dir(dir: &str) -> Result<PathBuf, String> {
    if !dir.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    if dir.len() > 4096 || dir.contains('\0') {
        return Err("must be a path of at most 4096 bytes without NUL".into());
    }
    let trimmed = dir.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("must not be / (grant the directory the plugin reads, not the host)".into());
    }
    if trimmed[1..]
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("must be a plain path (no `.`, `..` or empty components)".into());
    }
    if let Some(kernel) = KERNEL_TREES
        .iter()
        .find(|tree| trimmed == **tree || trimmed.starts_with(&format!("{tree}/")))
    {
        return Err(format!(
            "must not be under {kernel} (the kernel's own files: processes' roots, devices, \
             blocking reads)"
        ));
    }
    Ok(PathBuf::from(trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_known_wasi_0_2_interfaces_are_wasi() {
        assert_eq!(
            interface_of("wasi:cli/environment@0.2.9"),
            Some("wasi:cli/environment")
        );
        assert_eq!(
            interface_of("wasi:sockets/ip-name-lookup@0.2.0"),
            Some("wasi:sockets/ip-name-lookup")
        );
        assert_eq!(interface_of("wasi:http/outgoing-handler@0.2.9"), None);
        assert_eq!(interface_of("wasi:cli/environment@0.3.0"), None);
        assert_eq!(interface_of("wasi:cli/environment"), None);
        assert_eq!(interface_of("wasmcni:plugin/log@0.3.0"), None);
    }

    #[test]
    fn the_treatment_follows_the_scope() {
        let closed = WasiScope::default();
        let open = WasiScope {
            clocks: true,
            random: true,
            read_dirs: vec![PathBuf::from("/etc/wasmcni/data")],
        };
        let of = |import, scope| treatment(import, scope).unwrap();
        assert!(of("wasi:clocks/wall-clock@0.2.9", &closed).starts_with("stubbed"));
        assert!(of("wasi:clocks/wall-clock@0.2.9", &open).starts_with("granted"));
        assert!(of("wasi:random/random@0.2.9", &closed).starts_with("stubbed"));
        assert!(of("wasi:filesystem/preopens@0.2.9", &closed).contains("every open fails"));
        assert!(of("wasi:filesystem/types@0.2.9", &open).contains("/etc/wasmcni/data"));
        assert!(of("wasi:sockets/tcp@0.2.9", &open).contains("no network"));
        assert!(of("wasi:cli/environment@0.2.9", &open).contains("no variables"));
        assert_eq!(treatment("wasi:http/types@0.2.9", &open), None);
    }

    #[test]
    fn read_dirs_must_be_plain_absolute_paths() {
        assert_eq!(
            check_read_dir("/etc/wasmcni/data/").unwrap(),
            PathBuf::from("/etc/wasmcni/data")
        );
        assert!(check_read_dir("/procedures").is_ok());
        for bad in [
            "data",
            "/",
            "//",
            "/etc/../root",
            "/etc//x",
            "/etc/./x",
            "/a\0b",
        ] {
            assert!(check_read_dir(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
