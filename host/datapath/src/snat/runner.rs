//! Running the firewall tools: from the system's directories only, never `PATH`; in the current
//! network namespace or (tests) a named one.

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::*;

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
pub(super) struct IptablesTools {
    pub(super) save: &'static str,
    pub(super) restore: &'static str,
}

impl IptablesTools {
    /// Whatever the node's `iptables` alternative is.
    pub(super) const DEFAULT: IptablesTools = IptablesTools {
        save: "iptables-save",
        restore: "iptables-restore",
    };
}

/// Runs the firewall tools, in the current network namespace or (tests) in a named one
/// through `ip netns exec`, which keeps `setns` out of this module.
#[derive(Debug, Clone)]
pub(super) struct Runner {
    pub(super) netns: Option<String>,
    pub(super) iptables: IptablesTools,
}

impl Runner {
    pub(super) fn current_namespace() -> Runner {
        Runner {
            netns: None,
            iptables: IptablesTools::DEFAULT,
        }
    }

    /// Runs `program args`, feeding `input` on stdin; its stdout on success. Programs are
    /// taken from the system directories only ([`system_program`]), never from `PATH`.
    pub(super) fn run(
        &self,
        program: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, SnatError> {
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
