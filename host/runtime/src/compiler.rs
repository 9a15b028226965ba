//! Where a component that is not in the artifact cache yet gets compiled.
//!
//! Compiling is the one thing the runtime does whose memory outlives it: Cranelift's working
//! set for a few small plugins is tens of MiB of heap, and the allocator keeps most of it after
//! (measured: four plugins compiled cold left a process 16 MiB bigger after `malloc_trim`;
//! loaded from the cache, 2 MiB). So the daemon compiles in a child process — itself, run as
//! `wasmcni-host compile-plugin` — which writes the artifact into the cache and exits, and
//! then loads the artifact like any cached one. A child that fails, crashes or hangs past its
//! deadline costs a warning: the component is then compiled in the daemon, as before.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a compiling child may run before it is killed (a large plugin — an interpreter
/// bundled as a component — compiles in tens of seconds on a small node).
pub const CHILD_COMPILE_TIMEOUT: Duration = Duration::from_secs(300);

/// What of a child's standard error is kept for the warning.
const KEPT_STDERR: usize = 4096;

/// Where a component missing from the cache is compiled. (A cache file that is there but
/// damaged is compiled again in the daemon, with a warning: rare enough not to pay a second
/// read of every artifact at every start to find out.)
#[derive(Debug, Clone, Default)]
pub enum Compiler {
    /// In this process (tools, tests, a runtime without a cache).
    #[default]
    InProcess,
    /// In a child process: `program args… --cache-dir <dir> --digest <sha256:…> <component>`,
    /// which must compile the component with this runtime's engine settings into the cache
    /// (the daemon runs itself: `/proc/self/exe compile-plugin`).
    Child {
        /// The program.
        program: PathBuf,
        /// Its first arguments.
        args: Vec<String>,
        /// Killed after this long.
        timeout: Duration,
    },
}

impl Compiler {
    /// The daemon's: itself, `wasmcni-host compile-plugin`, through `/proc/self/exe` (which
    /// names the running binary even if a package upgrade replaced the file).
    pub fn this_executable(subcommand: &str) -> Compiler {
        Compiler::Child {
            program: PathBuf::from("/proc/self/exe"),
            args: vec![subcommand.to_owned()],
            timeout: CHILD_COMPILE_TIMEOUT,
        }
    }
}

/// Why a child compiler did not succeed.
pub(super) struct ChildFailed {
    /// Its exit status and what it printed on standard error, or why it did not run.
    pub message: String,
    /// Its process id, when it was started.
    pub pid: Option<u32>,
}

/// Runs `program args… --cache-dir cache_dir --digest digest -- component` and waits for it at
/// most `timeout`.
pub(super) fn run_child(
    program: &Path,
    args: &[String],
    timeout: Duration,
    component: &Path,
    digest: &str,
    cache_dir: &Path,
) -> Result<(), ChildFailed> {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .arg("--cache-dir")
        .arg(cache_dir)
        .arg("--digest")
        .arg(digest)
        .arg("--")
        .arg(component)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ChildFailed {
            message: format!("starting {}: {e}", program.display()),
            pid: None,
        })?;
    let pid = child.id();
    let failed = |message: String| ChildFailed {
        message,
        pid: Some(pid),
    };
    // Drained by a thread, so a chatty child never blocks on a full pipe; what is kept is
    // bounded.
    let reader = child.stderr.take().map(|mut stderr| {
        std::thread::spawn(move || {
            let (mut kept, mut buffer) = (Vec::new(), [0u8; 4096]);
            while let Ok(n @ 1..) = stderr.read(&mut buffer) {
                let room = KEPT_STDERR - kept.len();
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
            kept
        })
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "{} did not finish within {} s and was killed",
                    program.display(),
                    timeout.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!("waiting for {}: {e}", program.display())));
            }
        }
    };
    let said = reader
        .and_then(|r| r.join().ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    if status.success() {
        Ok(())
    } else if said.is_empty() {
        Err(failed(format!(
            "{} exited with {status}",
            program.display()
        )))
    } else {
        Err(failed(format!(
            "{} exited with {status}: {said}",
            program.display()
        )))
    }
}
