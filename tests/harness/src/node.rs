//! A test "node": a network namespace with an uplink to an "outside" namespace and the
//! wasmcni daemon running inside it, as on a Kubernetes node.
//!
//! Topology: node `eth0` 172.31.0.1/24 <-> outside `uplink` 172.31.0.2/24. Both namespaces
//! are private to the test, so every test may use the same addresses.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmcni_cni::proto::{
    read_frame, write_frame, DaemonRequest, DaemonResponse, PROTOCOL_VERSION,
};
use wasmcni_cni::request::{CniRequest, Command as CniCommand};

use crate::chain::{Attachment, Conflist, PluginFailure};
use crate::netns::NetNs;

/// The node's address on its uplink.
pub const NODE_IP: &str = "172.31.0.1";
/// The outside namespace's address.
pub const OUTSIDE_IP: &str = "172.31.0.2";
/// The node's IPv6 address on its uplink (nodes with an IPv6 pod CIDR).
pub const NODE_IP6: &str = "fd00:31::1";
/// The outside namespace's IPv6 address (nodes with an IPv6 pod CIDR).
pub const OUTSIDE_IP6: &str = "fd00:31::2";

/// A node namespace, its outside peer, and (optionally running) the daemon.
pub struct TestNode {
    /// The node's network namespace (the daemon and the "runtime" run here).
    pub node: NetNs,
    /// A namespace standing for the rest of the network, reached through the node's `eth0`.
    pub outside: NetNs,
    dir: tempfile::TempDir,
    /// The socket's and the shim log's directories (the shim uses no others).
    confined: crate::ConfinedDirs,
    pod_cidr: String,
    /// The daemon runs on the embedded default configuration (no `--config`).
    embedded_default: bool,
    /// The socket a caller-supplied configuration names.
    socket_override: Option<PathBuf>,
    daemon: std::sync::Mutex<Option<Child>>,
    /// Extra environment of the daemon (e.g. AWS credentials for the emulator).
    daemon_env: Vec<(String, String)>,
}

impl TestNode {
    /// Builds the namespaces and writes a cluster configuration with `pod_cidr` as the static
    /// pool (several CIDRs separated by commas: `"10.88.5.0/24,fd00:88::/120"` is a dual-stack
    /// pool); the daemon is not started yet.
    pub fn new(pod_cidr: &str) -> TestNode {
        Self::build(pod_cidr, false)
    }

    /// A node whose daemon runs on the embedded default configuration: socket
    /// /run/wasmcni/wasmcni.sock, state in /var/lib/wasmcni, the default static pool.
    pub fn with_embedded_default() -> TestNode {
        let config = wasmcni_config::ClusterConfig::embedded_default().expect("embedded default");
        let pool = config.static_pool("embedded default").expect("static pool");
        Self::build(&pool.cidrs[0].to_string(), true)
    }

    /// A node whose daemon runs on the cluster configuration `text` (its socket and pool).
    pub fn with_cluster_config(text: &str) -> TestNode {
        let config = wasmcni_config::ClusterConfig::parse(text, "test configuration")
            .expect("valid configuration");
        let pool = config
            .static_pool("test configuration")
            .expect("static pool");
        let mut node = Self::build(&pool.cidrs[0].to_string(), false);
        node.socket_override = Some(config.daemon.socket.clone());
        std::fs::write(node.config_path(), text).expect("write config");
        node
    }

    /// A node namespace without the uplink: on an EC2 node the emulator's hypervisor mode
    /// creates `eth0` (the primary ENI) and every attached ENI's link, with `outside` as the
    /// fabric behind them. No configuration is written; see [`TestNode::write_config`].
    pub fn without_uplink() -> TestNode {
        let dir = tempfile::Builder::new()
            .prefix("wasmcni-test")
            .tempdir()
            .expect("tempdir");
        TestNode {
            node: NetNs::new("wn"),
            outside: NetNs::new("wo"),
            dir,
            confined: crate::ConfinedDirs::new("tn"),
            pod_cidr: String::new(),
            embedded_default: false,
            socket_override: None,
            daemon: std::sync::Mutex::new(None),
            daemon_env: Vec::new(),
        }
    }

    /// The `version`, `[daemon]` and `[datapath]` sections for this node (socket and state in
    /// its temporary directory, MTU 1500); a caller appends the provider and plugins.
    pub fn base_config(&self) -> String {
        format!(
            "version = 1\n[daemon]\nsocket = \"{}\"\nstate_dir = \"{}\"\n[datapath]\nveth_prefix = \"eni\"\nmtu = 1500\n",
            self.socket().display(),
            self.state_dir().display(),
        )
    }

    /// Sets an environment variable of the daemon (from its next start).
    pub fn set_daemon_env(&mut self, key: &str, value: &str) {
        self.daemon_env.push((key.to_owned(), value.to_owned()));
    }

    /// Replaces the configuration file.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).expect("write config");
    }

    fn build(pod_cidr: &str, embedded_default: bool) -> TestNode {
        let node = NetNs::new("wn");
        let outside = NetNs::new("wo");
        let uplink = crate::unique_name("up");
        node.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", &uplink,
        ]);
        node.ip(&["link", "set", &uplink, "netns", outside.name()]);
        outside.ip(&["link", "set", &uplink, "name", "uplink"]);
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"]);
        node.ip(&["link", "set", "eth0", "up"]);
        outside.ip(&["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "uplink"]);
        outside.ip(&["link", "set", "uplink", "up"]);
        if pod_cidr.contains(':') {
            // IPv6 pods: the uplink carries IPv6 too, and the node's IPv6 default route points
            // outside (as a router advertisement would have set it).
            for (ns, link, address) in
                [(&node, "eth0", NODE_IP6), (&outside, "uplink", OUTSIDE_IP6)]
            {
                ns.ip(&[
                    "addr",
                    "add",
                    &format!("{address}/64"),
                    "dev",
                    link,
                    "nodad",
                ]);
            }
            node.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                OUTSIDE_IP6,
                "dev",
                "eth0",
            ]);
            for cidr in pod_cidr.split(',').filter(|c| c.contains(':')) {
                outside.ip(&["-6", "route", "add", cidr, "via", NODE_IP6]);
            }
            // A link just brought up has a tentative link-local address for about a second
            // (duplicate address detection), and neighbour discovery cannot resolve anything
            // from it: the first packets would be lost. A real node's uplink is long up.
            let deadline = Instant::now() + Duration::from_secs(10);
            while [&node, &outside].iter().any(|ns| {
                !ns.ip(&["-6", "addr", "show", "tentative"])
                    .trim()
                    .is_empty()
            }) {
                assert!(
                    Instant::now() < deadline,
                    "IPv6 addresses still tentative after 10 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for cidr in pod_cidr.split(',').filter(|c| !c.contains(':')) {
            outside.ip(&["route", "add", cidr, "via", NODE_IP]);
        }
        let dir = tempfile::Builder::new()
            .prefix("wasmcni-test")
            .tempdir()
            .expect("tempdir");
        let node = TestNode {
            node,
            outside,
            dir,
            confined: crate::ConfinedDirs::new("tn"),
            pod_cidr: pod_cidr.to_owned(),
            embedded_default,
            socket_override: None,
            daemon: std::sync::Mutex::new(None),
            daemon_env: Vec::new(),
        };
        std::fs::write(node.config_path(), node.config_text()).expect("write config");
        node
    }

    /// The cluster configuration file the daemon reads.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("cluster.toml")
    }

    /// Appends sections (e.g. `[allocator]` and `[[plugins]]`) to this node's configuration.
    pub fn append_config(&self, sections: &str) {
        let mut text = std::fs::read_to_string(self.config_path()).expect("read config");
        text.push_str(sections);
        std::fs::write(self.config_path(), text).expect("write config");
    }

    /// The daemon's socket.
    pub fn socket(&self) -> PathBuf {
        if let Some(socket) = &self.socket_override {
            return socket.clone();
        }
        if self.embedded_default {
            return PathBuf::from(wasmcni_cni::proto::DEFAULT_SOCKET);
        }
        self.confined.run.join("wasmcni.sock")
    }

    /// The daemon's operations socket (metrics, introspection): `ops.sock` beside the socket.
    pub fn ops_socket(&self) -> PathBuf {
        self.socket()
            .parent()
            .map(|dir| dir.join("ops.sock"))
            .unwrap_or_else(|| PathBuf::from("/run/wasmcni/ops.sock"))
    }

    /// Runs `wasmcni-host inspect <what>` (with `--json` when asked) against this node's
    /// daemon, as an operator would; panics with its stderr if it fails.
    pub fn inspect(&self, what: &str, json: bool) -> String {
        let mut command = Command::new(crate::bin_dir().join("wasmcni-host"));
        command
            .args(["inspect", what, "--socket"])
            .arg(self.ops_socket());
        if json {
            command.arg("--json");
        }
        let output = command.output().expect("run wasmcni-host inspect");
        assert!(
            output.status.success(),
            "inspect {what}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The daemon's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The shim's log file.
    pub fn shim_log(&self) -> PathBuf {
        self.confined.log.join("cni.log")
    }

    /// The daemon's stderr log.
    pub fn daemon_log(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    fn config_text(&self) -> String {
        format!(
            "{}[provider]\nkind = \"static\"\n[provider.static]\ncidrs = [\"{}\"]\n",
            self.base_config(),
            self.pod_cidr.replace(',', "\", \"")
        )
    }

    /// The wasmcni plugin object for a conflist pointing at this node's daemon.
    pub fn wasmcni_plugin(&self) -> Value {
        json!({
            "type": "wasmcni",
            "capabilities": { "io.kubernetes.cri.pod-annotations": true },
            "daemonSocket": self.socket().display().to_string(),
            "logFile": self.shim_log().display().to_string(),
        })
    }

    /// Starts the daemon inside the node namespace and waits until it accepts connections.
    pub fn start_daemon(&mut self) {
        self.start_daemon_shared();
    }

    /// [`TestNode::start_daemon`] through a shared reference (the daemon handle is behind a
    /// lock), for tests that restart it while other threads run ADDs.
    fn start_daemon_shared(&self) {
        let mut daemon = self.daemon.lock().unwrap_or_else(|p| p.into_inner());
        assert!(daemon.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.daemon_log())
            .expect("daemon log");
        let binary = crate::bin_dir().join("wasmcni-host");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.node.name()])
            .arg(&binary)
            .arg("run")
            .envs(self.daemon_env.iter().map(|(k, v)| (k, v)));
        if !self.embedded_default {
            command.arg("--config").arg(self.config_path());
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        *daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // The socket is bound before recovery; a STATUS answer means recovery is done.
            if self.status_answered() {
                return;
            }
            if let Some(status) = daemon.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("daemon exited with {status}: {}", self.daemon_log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("daemon not ready after 20 s: {}", self.daemon_log_text());
    }

    /// Kills the daemon with SIGKILL (a crash: nothing is flushed or cleaned up) and starts
    /// it again, through a shared reference.
    pub fn crash_and_restart_daemon(&self) {
        self.kill_daemon("KILL");
        self.start_daemon_shared();
    }

    /// [`TestNode::crash_and_restart_daemon`] with `pause` between the kill and the start.
    pub fn crash_and_restart_daemon_after(&self, pause: Duration) {
        self.kill_daemon("KILL");
        std::thread::sleep(pause);
        self.start_daemon_shared();
    }

    fn kill_daemon(&self, signal: &str) {
        let taken = self.daemon.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut child) = taken {
            // `ip netns exec` execs the daemon, so the child's pid is the daemon's.
            let _ = Command::new("kill")
                .args(["-s", signal, &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts the daemon and expects it to refuse to run; returns its log.
    pub fn start_daemon_expecting_failure(&mut self) -> String {
        let binary = crate::bin_dir().join("wasmcni-host");
        let output = Command::new("ip")
            .args(["netns", "exec", self.node.name()])
            .arg(&binary)
            .args(["run", "--config"])
            .arg(self.config_path())
            .envs(self.daemon_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        assert!(
            !output.status.success(),
            "the daemon started although it should have refused"
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// Sends STATUS straight over the socket (as the shim would) and reports whether the daemon
    /// answered at all.
    fn status_answered(&self) -> bool {
        let Ok(mut stream) = UnixStream::connect(self.socket()) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
        let request = DaemonRequest {
            protocol: PROTOCOL_VERSION,
            request: CniRequest {
                command: CniCommand::Status,
                container_id: String::new(),
                netns: String::new(),
                ifname: String::new(),
                args: Vec::new(),
                path: String::new(),
            },
            config: r#"{"cniVersion":"1.1.0","name":"probe","type":"wasmcni"}"#.into(),
        };
        write_frame(&mut stream, &request).is_ok()
            && read_frame::<DaemonResponse>(&mut stream, 1 << 20).is_ok()
    }

    /// The daemon's log so far.
    pub fn daemon_log_text(&self) -> String {
        std::fs::read_to_string(self.daemon_log()).unwrap_or_default()
    }

    /// Kills the daemon with `signal` ("KILL", "TERM") and waits for it to exit.
    pub fn stop_daemon(&self, signal: &str) {
        self.kill_daemon(signal);
    }

    /// Runs `chain`'s ADD inside the node namespace, as the node's container runtime would.
    pub fn add(&self, chain: &Conflist, attachment: &Attachment) -> Result<Value, PluginFailure> {
        let (chain, attachment) = (chain.clone(), attachment.clone());
        self.node.run(move || chain.add(&attachment))
    }

    /// Runs `chain`'s DEL inside the node namespace with the cached result.
    pub fn del(
        &self,
        chain: &Conflist,
        attachment: &Attachment,
        cached: Option<&Value>,
    ) -> Result<(), PluginFailure> {
        let (chain, attachment, cached) = (chain.clone(), attachment.clone(), cached.cloned());
        self.node
            .run(move || chain.del(&attachment, cached.as_ref()))
    }

    /// Runs `chain`'s CHECK inside the node namespace with the cached result.
    pub fn check(
        &self,
        chain: &Conflist,
        attachment: &Attachment,
        cached: &Value,
    ) -> Result<(), PluginFailure> {
        let (chain, attachment, cached) = (chain.clone(), attachment.clone(), cached.clone());
        self.node.run(move || chain.check(&attachment, &cached))
    }

    /// Runs `chain`'s GC inside the node namespace with the valid attachments.
    pub fn gc(&self, chain: &Conflist, valid: &[(String, String)]) -> Vec<PluginFailure> {
        let (chain, valid) = (chain.clone(), valid.to_vec());
        self.node.run(move || chain.gc(&valid))
    }

    /// Runs `chain`'s STATUS inside the node namespace.
    pub fn status(&self, chain: &Conflist) -> Result<(), PluginFailure> {
        let chain = chain.clone();
        self.node.run(move || chain.status())
    }

    /// The daemon's process id, while it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Child::id)
    }

    /// The daemon's resident memory now and at its peak (`VmRSS`, `VmHWM`), in KiB.
    pub fn daemon_memory_kib(&self) -> (u64, u64) {
        let pid = self.daemon_pid().expect("the daemon runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Whether the daemon process is alive.
    pub fn daemon_running(&mut self) -> bool {
        self.daemon
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.stop_daemon("TERM");
        // Pod veths live in the node namespace and go with it; iptables state is per namespace.
    }
}
