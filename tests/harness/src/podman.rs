//! A private podman (Debian's podman 4, CNI backend) for tests that drive it as its users do:
//! `podman run --network A,B:ip=…,mac=…`, `podman network connect|disconnect`, `podman rm -f`.
//!
//! Its storage (vfs), run root, temporary directory, network configurations and plugin
//! directory live in a temporary directory; containers run from a busybox root filesystem
//! (`--rootfs`), so no image and no registry is needed. podman runs in the root mount namespace
//! with only its network namespace switched to the test node's (`nsenter --net`): the pod
//! namespaces it bind-mounts under /run/netns then reach the wasmcni daemon's mount namespace
//! as they would on a real node (`ip netns exec` would keep them private). What podman writes
//! outside the temporary directory is libcni's result cache (removed by the DELs of `podman
//! rm`, which drop runs for every container left).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::netns::NetNs;

/// A podman instance private to a test; its containers are removed on drop.
pub struct Podman {
    dir: tempfile::TempDir,
    node: String,
}

impl Podman {
    /// A podman whose containers are attached in `node`'s network namespace (where the wasmcni
    /// daemon runs).
    pub fn new(node: &NetNs) -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("wasmcni-podman")
            .tempdir()
            .expect("podman temporary directory");
        for sub in ["net", "bin", "root", "runroot", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("podman directories");
        }
        let path = dir.path().display().to_string();
        // runc (crun is not installed), no systemd, and ulimits the container may set here.
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["{path}/bin", "/usr/lib/cni"]
network_config_dir = "{path}/net"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{path}/tmp"
"#
        );
        std::fs::write(dir.path().join("containers.conf"), conf).expect("containers.conf");
        Podman {
            dir,
            node: node.path(),
        }
    }

    /// Writes a network configuration; its `name` is the network's name for `--network`.
    pub fn set_conflist(&self, conflist: &Value) {
        let name = conflist["name"].as_str().expect("conflist name");
        let path = self.dir.path().join(format!("net/{name}.conflist"));
        std::fs::write(&path, serde_json::to_vec_pretty(conflist).unwrap()).expect("conflist");
    }

    /// Puts plugin `name` (a symlink to `binary`) first in podman's plugin directories.
    pub fn install_plugin(&self, name: &str, binary: &Path) {
        let binary = binary
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        let link = self.dir.path().join("bin").join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(binary, link).expect("symlink plugin");
    }

    /// A busybox root filesystem for `--rootfs`.
    pub fn busybox_rootfs(&self) -> PathBuf {
        crate::rootfs::busybox(self.dir.path())
    }

    /// `podman ARGS...` in the node's network namespace, with this instance's configuration.
    pub fn command(&self) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.node))
            .arg("podman")
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("runroot"))
            .args(["--storage-driver", "vfs"])
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"));
        command
    }

    /// Runs `podman ARGS...` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("podman {args:?}: {e} (apt-get install podman)"))
    }

    /// Runs `podman ARGS...`, panicking with its stderr unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "podman {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The network namespace path (`/run/netns/netns-…`) of a running container.
    pub fn netns_of(&self, container: &str) -> String {
        self.ok(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.SandboxKey}}",
            container,
        ])
        .trim()
        .to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // DELs for whatever a failed test left running; storage goes with the directory.
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
    }
}
