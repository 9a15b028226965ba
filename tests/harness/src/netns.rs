//! Throwaway network namespaces (`ip netns add`), removed on drop.

use std::fs::File;
use std::path::Path;
use std::process::Command;

use nix::sched::{setns, CloneFlags};

/// A named network namespace under /run/netns, deleted when dropped.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace with a unique name starting with `tag`, with `lo` up.
    pub fn new(tag: &str) -> NetNs {
        let name = crate::unique_name(tag);
        run("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path a runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `ip <args>` inside the namespace; panics with its stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `ip <args>` inside the namespace and returns whether it succeeded.
    pub fn try_ip(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Waits until the link `name` no longer exists here (a DEL answers before the kernel has
    /// finished deleting its veth); whether it went within `limit`.
    pub fn link_gone_within(&self, name: &str, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if !self.try_ip(&["link", "show", name]) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Runs any command inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {program}: {e}", self.name))
    }

    /// Runs `f` on a fresh OS thread that has entered this namespace (so sockets it opens and
    /// processes it spawns live there), and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in(Path::new(&self.path()), f)
    }

    /// Deletes the namespace now (the drop then does nothing).
    pub fn delete(&mut self) {
        if !self.name.is_empty() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
            self.name.clear();
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.delete();
    }
}

/// [`NetNs::run`] for any network namespace file, e.g. one a runtime pinned for a pod.
pub fn run_in<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(netns).unwrap_or_else(|e| panic!("open {}: {e}", netns.display()));
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread inside the namespace panicked")
}

/// Runs a command, panicking with its stderr when it fails; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
