//! A private containerd for tests that drive the real client `ctr run --cni`, and (through
//! [`crate::cri`]) its CRI plugin.
//!
//! For `ctr`, containerd runs in the root network namespace with its config, root, state,
//! socket, runc root, FIFOs and `opt` plugin directory (default /opt/containerd) in a
//! temporary directory (no CRI plugin, no systemd). `ctr` itself runs inside a test namespace (`ip netns exec`),
//! so the CNI plugins it executes run where the wasmcni daemon and the routes are.
//!
//! go-cni reads the first network configuration in `/etc/cni/net.d` and finds plugins in
//! `/opt/cni/bin` (Debian's build also in `/usr/lib/cni`); neither path can be changed from
//! `ctr`. Instead of touching the machine's /etc and /opt, every `ctr` that needs CNI runs in the
//! private mount namespace `ip netns exec` creates anyway, with a read-only overlay on /etc and
//! on /opt whose upper layer holds only `cni/net.d/<conflist>` and `cni/bin/<plugin symlinks>`
//! (opaque, so the machine's own /etc/cni and /opt/cni, if any, are hidden).
//! Nothing outside the temporary directory is written except what containerd and libcni
//! insist on: shim sockets in /run/containerd/s (removed when the shim exits; the directory is
//! removed on drop when this instance created it) and the libcni result cache in
//! /var/lib/cni/results (removed by the DEL; on drop as well if it was left behind).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::NetNs;

/// Where containerd puts shim sockets, whatever its configuration says.
const SHIM_SOCKET_PARENT: &str = "/run/containerd";

/// The libcni result cache go-cni uses (not configurable from `ctr`).
pub const CNI_CACHE_DIR: &str = "/var/lib/cni";

/// Marks an overlay upper directory opaque: the same directory of lower layers is not merged in.
/// (`setxattr` through libc: nix has no wrapper for it.)
#[allow(unsafe_code)]
fn make_opaque(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path");
    let name = c"trusted.overlay.opaque";
    // SAFETY: valid NUL-terminated strings and a 1-byte value that outlive the call.
    let rc =
        unsafe { nix::libc::setxattr(path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    assert_eq!(
        rc,
        0,
        "setxattr trusted.overlay.opaque on {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
}

/// A containerd daemon private to a test, stopped (and its containers killed) on drop.
pub struct Containerd {
    dir: tempfile::TempDir,
    namespace: String,
    daemon: Option<Child>,
    network: Option<String>,
    created_shim_socket_parent: bool,
}

impl Containerd {
    /// Starts containerd with a private configuration (no CRI plugin) and waits until it
    /// answers.
    pub fn start() -> Containerd {
        Self::start_with(
            None,
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
            |_| String::new(),
        )
    }

    /// Starts containerd inside `netns` (its network namespace only: `nsenter --net`, so the
    /// mounts it makes, such as the CRI's pod namespaces under /run/netns, are the machine's)
    /// or in the root namespaces, with the top-level keys `top_level` and the tables
    /// `tables(dir)` (`dir`: this instance's temporary directory) added to its configuration,
    /// and waits until it answers.
    pub(crate) fn start_with(
        netns: Option<&NetNs>,
        top_level: &str,
        tables: impl FnOnce(&Path) -> String,
    ) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("wasmcni-ctr")
            .tempdir()
            .expect("tempdir");
        let root = dir.path();
        for sub in [
            "overlay/etc/cni/net.d",
            "overlay/opt/cni/bin",
            "fifo",
            "runc",
        ] {
            std::fs::create_dir_all(root.join(sub)).expect("create containerd dirs");
        }
        // The machine's own /etc/cni and /opt/cni stay hidden (a conflist there could sort
        // first).
        make_opaque(&root.join("overlay/etc/cni"));
        make_opaque(&root.join("overlay/opt/cni"));
        let config = format!(
            "version = 2\nroot = \"{root}/root\"\nstate = \"{root}/state\"\n{top_level}\
             [grpc]\n  address = \"{root}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{root}/containerd.sock.ttrpc\"\n\
             [plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"{root}/opt\"\n\
             {tables}",
            root = root.display(),
            tables = tables(root),
        );
        std::fs::write(root.join("config.toml"), config).expect("write containerd config");
        let log = std::fs::File::create(root.join("containerd.log")).expect("containerd log");
        let created_shim_socket_parent = !Path::new(SHIM_SOCKET_PARENT).exists();
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net={}", netns.path()))
                    .arg("containerd");
                command
            }
            None => Command::new("containerd"),
        };
        let daemon = command
            .arg("--config")
            .arg(root.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start containerd: {e} (apt-get install containerd busybox-static)")
            });
        let mut containerd = Containerd {
            dir,
            namespace: crate::unique_name("wctr"),
            daemon: Some(daemon),
            network: None,
            created_shim_socket_parent,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if containerd
                .ctr()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return containerd;
            }
            if let Some(status) = containerd
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("containerd exited with {status}: {}", containerd.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "containerd not ready after 20 s: {}",
                containerd.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// This instance's temporary directory (configuration, root, state, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Uses containerd namespace `namespace` for `ctr` from now on (the CRI's is `k8s.io`).
    pub(crate) fn set_namespace(&mut self, namespace: &str) {
        self.namespace = namespace.to_owned();
    }

    /// The containerd namespace the containers live in (`ctr -n`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// containerd's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The `CNI_CONTAINERID` ctr uses for container `id`: `<namespace>-<id>`.
    pub fn cni_container_id(&self, id: &str) -> String {
        format!("{}-{id}", self.namespace)
    }

    /// The libcni cache file of container `id`'s attachment (`eth0`) to the configured network.
    pub fn cni_cache_file(&self, id: &str) -> PathBuf {
        let network = self.network.as_deref().expect("no conflist configured");
        Path::new(CNI_CACHE_DIR).join(format!(
            "results/{network}-{}-eth0",
            self.cni_container_id(id)
        ))
    }

    /// Makes `conflist` the only network configuration `ctr --cni` sees.
    pub fn set_conflist(&mut self, conflist: &Value) {
        let name = conflist["name"].as_str().expect("conflist name").to_owned();
        let path = self
            .dir
            .path()
            .join("overlay/etc/cni/net.d/10-wasmcni.conflist");
        std::fs::write(&path, serde_json::to_vec_pretty(conflist).unwrap()).expect("conflist");
        self.network = Some(name);
    }

    /// Puts plugin `name` (a symlink to `binary`) into the /opt/cni/bin `ctr --cni` sees.
    pub fn install_plugin(&self, name: &str, binary: &Path) {
        let binary = binary
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        let link = self.dir.path().join("overlay/opt/cni/bin").join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(binary, link).expect("symlink plugin");
    }

    /// A busybox root filesystem with an empty /www; built once per instance.
    pub fn busybox_rootfs(&self) -> PathBuf {
        crate::rootfs::busybox(self.dir.path())
    }

    /// `ctr` with this daemon's socket and namespace, in the root namespaces (no CNI).
    pub fn ctr(&self) -> Command {
        let mut command = Command::new("ctr");
        command.arg("--address").arg(self.socket()).args([
            "--namespace",
            &self.namespace,
            "--timeout",
            "20s",
        ]);
        command
    }

    /// `ctr` with this daemon's socket and namespace, inside `netns` and a private mount
    /// namespace whose /etc/cni/net.d and /opt/cni/bin are this instance's (see the module doc).
    /// No `--timeout`: it would also cancel the DEL a foreground `ctr run` does at the end.
    pub fn ctr_cni(&self, netns: &NetNs) -> Command {
        let overlay = self.dir.path().join("overlay");
        let overlay = overlay.display();
        let script = format!(
            "mount -t overlay -o ro,lowerdir={overlay}/etc:/etc overlay /etc && \
             mount -t overlay -o ro,lowerdir={overlay}/opt:/opt overlay /opt && exec \"$@\""
        );
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                netns.name(),
                "sh",
                "-c",
                &script,
                "ctr-cni",
            ])
            .arg("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", &self.namespace]);
        command
    }

    /// Starts `ctr run --cni --rm --rootfs ROOTFS ID ARGV...` in the foreground (as a child
    /// process, inside `netns`), and waits until the task runs. The container gets a new network
    /// namespace from runc, and no cgroup parent (`--cgroup ""`, so nothing is left in
    /// /sys/fs/cgroup). Stopping the task makes `ctr` DEL the network and remove the container.
    pub fn run_cni<'a>(
        &'a self,
        netns: &NetNs,
        id: &str,
        rootfs: &Path,
        argv: &[&str],
    ) -> RunningContainer<'a> {
        let dir = self.dir.path();
        let output = dir.join(format!("ctr-run-{id}.log"));
        let pid_file = dir.join(format!("ctr-run-{id}.pid"));
        let log = std::fs::File::create(&output).expect("ctr run log");
        let child = self
            .ctr_cni(netns)
            .args(["run", "--cni", "--rm", "--cgroup", ""])
            .arg("--runc-root")
            .arg(dir.join("runc"))
            .arg("--fifo-dir")
            .arg(dir.join("fifo"))
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--rootfs")
            .arg(rootfs)
            .arg(id)
            .args(argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start ctr run: {e}"));
        let mut container = RunningContainer {
            containerd: self,
            id: id.to_owned(),
            child: Some(child),
            output,
            pid_file,
        };
        container.wait_running();
        container
    }

    fn kill_leftover_tasks(&self) {
        let Ok(listing) = self.ctr().args(["task", "ls", "--quiet"]).output() else {
            return;
        };
        for id in String::from_utf8_lossy(&listing.stdout).split_whitespace() {
            let _ = self
                .ctr()
                .args(["task", "kill", "-s", "SIGKILL", id])
                .output();
            let _ = self.ctr().args(["task", "delete", "--force", id]).output();
        }
        if let Ok(listing) = self.ctr().args(["container", "ls", "--quiet"]).output() {
            for id in String::from_utf8_lossy(&listing.stdout).split_whitespace() {
                let _ = self.ctr().args(["container", "delete", id]).output();
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            // Shims outlive containerd, so containers must go first.
            self.kill_leftover_tasks();
            let _ = Command::new("kill")
                .args(["-s", "TERM", &daemon.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        if self.created_shim_socket_parent {
            // Only empty directories go (another containerd may have started meanwhile).
            let _ = std::fs::remove_dir(Path::new(SHIM_SOCKET_PARENT).join("s"));
            let _ = std::fs::remove_dir(SHIM_SOCKET_PARENT);
        }
        // The temporary directory (config, root, state, rootfs, overlay) goes with `dir`.
    }
}

/// A container started by a foreground `ctr run --cni --rm`; stopped on drop.
pub struct RunningContainer<'a> {
    containerd: &'a Containerd,
    id: String,
    child: Option<Child>,
    output: PathBuf,
    pid_file: PathBuf,
}

impl RunningContainer<'_> {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The task's (container init's) pid.
    pub fn pid(&self) -> u32 {
        let text = std::fs::read_to_string(&self.pid_file).expect("ctr pid file");
        text.trim().parse().expect("pid in ctr pid file")
    }

    /// What `ctr run` printed so far (the container's output and ctr's own messages).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    fn wait_running(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listing = self
                .containerd
                .ctr()
                .args(["task", "ls"])
                .output()
                .expect("ctr task ls");
            let listing = String::from_utf8_lossy(&listing.stdout);
            if listing.lines().any(|l| {
                let mut words = l.split_whitespace();
                words.next() == Some(self.id.as_str()) && l.contains("RUNNING")
            }) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "ctr run exited with {status} before the task ran: {}\ncontainerd: {}",
                    self.output(),
                    self.containerd.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "task {} not running after 30 s: {}",
                self.id,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `argv` inside the container (`ctr task exec`).
    pub fn exec(&self, argv: &[&str]) -> Output {
        let exec_id = crate::unique_name("exec");
        self.containerd
            .ctr()
            .args(["task", "exec", "--exec-id", &exec_id])
            .arg("--fifo-dir")
            .arg(self.containerd.dir.path().join("fifo"))
            .arg(&self.id)
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("ctr task exec")
    }

    /// Kills the task with SIGKILL (`ctr task kill`) and waits for the foreground `ctr run` to
    /// notice, DEL the network and remove the container. Returns its exit status and output.
    pub fn stop(&mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("container already stopped");
        let kill = self
            .containerd
            .ctr()
            .args(["task", "kill", "--signal", "SIGKILL", &self.id])
            .output()
            .expect("ctr task kill");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait for ctr run") {
                return (status, self.output());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ctr run did not exit within 20 s of the kill ({}): {}",
                    String::from_utf8_lossy(&kill.stderr),
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RunningContainer<'_> {
    fn drop(&mut self) {
        // Not `stop`: no panics here. The foreground `ctr run` still does the DEL.
        if let Some(mut child) = self.child.take() {
            let _ = self
                .containerd
                .ctr()
                .args(["task", "kill", "--signal", "SIGKILL", &self.id])
                .output();
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.containerd.network.is_some() {
            // Left behind only when the DEL failed; the test has failed then.
            let _ = std::fs::remove_file(self.containerd.cni_cache_file(&self.id));
        }
    }
}
