//! containerd's CRI plugin, the path kubelet drives, with a small CRI client.
//!
//! A private containerd (see [`crate::containerd`]) runs with its CRI plugin on, inside the
//! node's network namespace only (`nsenter --net`), so the CNI plugins it executes run where the
//! wasmcni daemon and the routes are. It pins pod network namespaces where kubelet's
//! containerd does, `/run/netns/cni-<uuid>`: a shared mount (`ip netns` makes it one), so the
//! daemon, which runs in a mount namespace of its own as it does in its pod on a real node,
//! sees them (under containerd's state directory it would see empty files). Everything else it
//! makes stays in its temporary directory: runc's state, the sandbox image, the CRI's files;
//! cgroups go under a parent unique to the instance. On drop, sandboxes still there are stopped
//! and removed, and a namespace file left behind is unmounted and deleted.
//!
//! `restrict_oom_score_adj`: a VM without `CAP_SYS_RESOURCE` cannot give the sandbox the
//! oom_score_adj of -998 the CRI asks for, and runc would fail to start it.
//!
//! The client speaks `runtime.v1` over containerd's socket with tonic, the calls kubelet makes
//! for a pod's sandbox ([`api`]). The sandbox image is made here from Debian's busybox-static
//! and imported into the CRI's containerd namespace (`k8s.io`): no registry is involved.

pub mod api;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tonic::codegen::http::uri::PathAndQuery;

use crate::containerd::Containerd;
use crate::netns::NetNs;

/// The containerd namespace the CRI keeps its sandboxes and images in.
pub const K8S_NAMESPACE: &str = "k8s.io";

/// The sandbox ("pause") image, made locally by [`CriRuntime::start`].
pub const SANDBOX_IMAGE: &str = "localhost/wasmcni-test/pause:1";

/// How long one CRI call may take (a RunPodSandbox includes the whole CNI ADD chain).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The blocking CRI client: one connection, shared by the threads of a test.
struct Client {
    runtime: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
}

impl Client {
    fn connect(socket: &Path) -> Client {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let socket = socket.to_owned();
        let channel = runtime.block_on(async move {
            // The URI is required by the API and unused: every connection is to the socket.
            tonic::transport::Endpoint::from_static("http://cri.invalid")
                .connect_with_connector(tower::service_fn(move |_| {
                    let socket = socket.clone();
                    async move {
                        tokio::net::UnixStream::connect(socket)
                            .await
                            .map(hyper_util::rt::TokioIo::new)
                    }
                }))
                .await
                .expect("connect to containerd's CRI socket")
        });
        Client { runtime, channel }
    }

    /// One unary call of `runtime.v1.RuntimeService/<method>`.
    fn call<Request, Response>(
        &self,
        method: &str,
        request: Request,
    ) -> Result<Response, tonic::Status>
    where
        Request: prost::Message + Send + 'static,
        Response: prost::Message + Default + Send + 'static,
    {
        let path = PathAndQuery::try_from(format!("/{}/{method}", api::SERVICE))
            .expect("a method name is a path");
        let channel = self.channel.clone();
        self.runtime.block_on(async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let mut request = tonic::Request::new(request);
            request.set_timeout(CALL_TIMEOUT);
            grpc.unary(request, path, tonic_prost::ProstCodec::default())
                .await
                .map(tonic::Response::into_inner)
        })
    }
}

/// A sandbox as PodSandboxStatus reports it.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    /// SANDBOX_READY.
    pub ready: bool,
    /// `status.network.ip`: the pod IP kubelet would publish (empty when none).
    pub ip: String,
    /// The pod's network namespace (the `CNI_NETNS` the plugins were given).
    pub netns: PathBuf,
}

/// A private containerd with its CRI plugin, and a client for it; every sandbox still there is
/// stopped and removed on drop (so the CNI DELs run), then containerd stops.
pub struct CriRuntime {
    client: Client,
    /// Taken on drop, so that containerd stops before the cgroup parent is removed.
    containerd: Option<Containerd>,
    cgroup_parent: String,
}

impl CriRuntime {
    /// Starts containerd with the CRI plugin inside `node`'s network namespace, reading CNI
    /// configurations from `cni_conf_dir` and plugins from `cni_bin_dir` (which must hold
    /// `loopback`: the CRI attaches every sandbox's `lo` with it), and imports the sandbox
    /// image.
    pub fn start(node: &NetNs, cni_bin_dir: &Path, cni_conf_dir: &Path) -> CriRuntime {
        // Unique, so that a test's sandbox cgroups are its own and can be removed.
        let cgroup_parent = format!("/{}", crate::unique_name("wasmcni-cri"));
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        let mut containerd = Containerd::start_with(Some(node), "", |dir| {
            format!(
                "  [{cri}]\n    sandbox_image = \"{SANDBOX_IMAGE}\"\n\
                 \x20   restrict_oom_score_adj = true\n    disable_tcp_service = true\n\
                 \x20   stream_server_address = \"127.0.0.1\"\n    stream_server_port = \"0\"\n\
                 \x20   enable_selinux = false\n\
                 \x20   [{cri}.containerd]\n      snapshotter = \"overlayfs\"\n\
                 \x20     default_runtime_name = \"runc\"\n\
                 \x20     [{cri}.containerd.runtimes.runc]\n\
                 \x20       runtime_type = \"io.containerd.runc.v2\"\n\
                 \x20       [{cri}.containerd.runtimes.runc.options]\n\
                 \x20         Root = \"{runc}\"\n\
                 \x20   [{cri}.cni]\n      bin_dir = \"{bin}\"\n      conf_dir = \"{conf}\"\n\
                 \x20     max_conf_num = 1\n",
                runc = dir.join("runc").display(),
                bin = cni_bin_dir.display(),
                conf = cni_conf_dir.display(),
            )
        });
        containerd.set_namespace(K8S_NAMESPACE);
        import_sandbox_image(&containerd);
        let client = Client::connect(&containerd.socket());
        CriRuntime {
            client,
            containerd: Some(containerd),
            cgroup_parent,
        }
    }

    /// containerd's log so far.
    pub fn log_text(&self) -> String {
        self.containerd
            .as_ref()
            .map(Containerd::log_text)
            .unwrap_or_default()
    }

    /// The runtime's `NetworkReady` condition: `Ok` when ready, else its reason and message
    /// (the CRI reports the network ready once a CNI configuration is loaded).
    pub fn network_ready(&self) -> Result<(), String> {
        let response: api::StatusResponse = self
            .client
            .call("Status", api::StatusRequest { verbose: false })
            .unwrap_or_else(|e| panic!("CRI Status: {e}"));
        let conditions = response.status.map(|s| s.conditions).unwrap_or_default();
        match conditions.iter().find(|c| c.r#type == "NetworkReady") {
            Some(c) if c.status => Ok(()),
            Some(c) => Err(format!("{}: {}", c.reason, c.message)),
            None => Err(format!("no NetworkReady condition in {conditions:?}")),
        }
    }

    /// What kubelet sends for pod `namespace/name`: unique uid, attempt 0, this instance's
    /// cgroup parent; no annotations or host ports (add them to the result).
    pub fn sandbox_config(&self, namespace: &str, name: &str) -> api::PodSandboxConfig {
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.to_owned(),
                uid: crate::unique_name("uid"),
                namespace: namespace.to_owned(),
                attempt: 0,
            }),
            hostname: name.to_owned(),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox: the sandbox id, or the CRI's error (which carries the CNI plugin's).
    pub fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String, tonic::Status> {
        let response: api::RunPodSandboxResponse = self.client.call(
            "RunPodSandbox",
            api::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            },
        )?;
        Ok(response.pod_sandbox_id)
    }

    /// PodSandboxStatus (verbose, for the sandbox's network namespace).
    pub fn pod_sandbox_status(&self, id: &str) -> SandboxStatus {
        let response: api::PodSandboxStatusResponse = self
            .client
            .call(
                "PodSandboxStatus",
                api::PodSandboxStatusRequest {
                    pod_sandbox_id: id.to_owned(),
                    verbose: true,
                },
            )
            .unwrap_or_else(|e| panic!("CRI PodSandboxStatus {id}: {e}"));
        let status = response.status.expect("PodSandboxStatus without a status");
        let info: Value = response
            .info
            .get("info")
            .map(|text| serde_json::from_str(text).expect("verbose info is JSON"))
            .unwrap_or_else(|| json!({}));
        SandboxStatus {
            ready: status.state == api::PodSandboxState::SandboxReady as i32,
            ip: status.network.map(|n| n.ip).unwrap_or_default(),
            netns: network_namespace(&info).unwrap_or_default(),
        }
    }

    /// StopPodSandbox (which kubelet may send more than once).
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), tonic::Status> {
        self.sandbox_call("StopPodSandbox", id)
    }

    /// RemovePodSandbox.
    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), tonic::Status> {
        self.sandbox_call("RemovePodSandbox", id)
    }

    fn sandbox_call(&self, method: &str, id: &str) -> Result<(), tonic::Status> {
        let _: api::Empty = self.client.call(
            method,
            api::PodSandboxIdRequest {
                pod_sandbox_id: id.to_owned(),
            },
        )?;
        Ok(())
    }

    /// ListPodSandbox: every sandbox the CRI knows.
    pub fn list_pod_sandbox(&self) -> Vec<api::PodSandbox> {
        let response: api::ListPodSandboxResponse = self
            .client
            .call("ListPodSandbox", api::ListPodSandboxRequest {})
            .unwrap_or_else(|e| panic!("CRI ListPodSandbox: {e}"));
        response.items
    }
}

impl Drop for CriRuntime {
    fn drop(&mut self) {
        // A test that failed may leave sandboxes: their CNI DELs run now, while the daemon
        // still does (the node is dropped after this).
        for sandbox in self.list_pod_sandbox_quietly() {
            let netns = self.pod_sandbox_status_quietly(&sandbox);
            let _ = self.stop_pod_sandbox(&sandbox);
            let _ = self.remove_pod_sandbox(&sandbox);
            // The CRI unpins the namespace when it stops the sandbox; if that failed, the
            // mount would outlive the test.
            if let Some(netns) = netns.filter(|path| path.exists()) {
                let _ = Command::new("umount").arg("--lazy").arg(&netns).output();
                let _ = std::fs::remove_file(&netns);
            }
        }
        // containerd stops (killing any task left), then the cgroup parent, this instance's,
        // is empty and goes.
        drop(self.containerd.take());
        remove_cgroup_parent(&self.cgroup_parent);
    }
}

impl CriRuntime {
    fn list_pod_sandbox_quietly(&self) -> Vec<String> {
        self.client
            .call::<_, api::ListPodSandboxResponse>("ListPodSandbox", api::ListPodSandboxRequest {})
            .map(|r| r.items.into_iter().map(|s| s.id).collect())
            .unwrap_or_default()
    }

    /// The sandbox's network namespace file, without panicking.
    fn pod_sandbox_status_quietly(&self, id: &str) -> Option<PathBuf> {
        let response: api::PodSandboxStatusResponse = self
            .client
            .call(
                "PodSandboxStatus",
                api::PodSandboxStatusRequest {
                    pod_sandbox_id: id.to_owned(),
                    verbose: true,
                },
            )
            .ok()?;
        let info: Value = serde_json::from_str(response.info.get("info")?).ok()?;
        network_namespace(&info)
    }
}

/// The network namespace path in a sandbox's verbose info (its OCI runtime spec).
fn network_namespace(info: &Value) -> Option<PathBuf> {
    info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// Removes the (by then empty) directory `parent` from the cgroup tree: from every hierarchy
/// of cgroup v1, or from the one of cgroup v2.
fn remove_cgroup_parent(parent: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let parent = parent.trim_start_matches('/');
    let _ = std::fs::remove_dir(root.join(parent));
    let Ok(hierarchies) = std::fs::read_dir(root) else {
        return;
    };
    for hierarchy in hierarchies.flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join(parent));
    }
}

/// The OCI architecture name of this machine.
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes `bytes` as a blob of the OCI layout `layout`; its descriptor's digest and size.
fn add_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let staging = layout.join("blob.tmp");
    std::fs::write(&staging, bytes).expect("write blob");
    let digest = wasmcni_runtime::digest_of_file(&staging).expect("digest of blob");
    let hex = digest.trim_start_matches("sha256:");
    std::fs::rename(&staging, layout.join("blobs/sha256").join(hex)).expect("store blob");
    (digest, bytes.len())
}

/// Builds the sandbox image (busybox sleeping, as pause does nothing but hold the namespaces)
/// as an OCI archive and imports it with `ctr images import` into the CRI's namespace.
fn import_sandbox_image(containerd: &Containerd) {
    let dir = containerd.dir().join("sandbox-image");
    let rootfs = dir.join("rootfs");
    let layout = dir.join("layout");
    std::fs::create_dir_all(rootfs.join("bin")).expect("image rootfs");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("image layout");
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("copy /bin/busybox: {e} (apt-get install busybox-static)"));
    let layer = dir.join("layer.tar");
    let tar = |args: &[&str]| crate::netns::run("tar", args);
    let (layer_text, rootfs_text) = (layer.display().to_string(), rootfs.display().to_string());
    tar(&[
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--mtime=@0",
        "-C",
        &rootfs_text,
        "-cf",
        &layer_text,
        ".",
    ]);
    let (layer_digest, layer_size) = add_blob(&layout, &std::fs::read(&layer).expect("layer"));
    let config = json!({
        "architecture": oci_architecture(),
        "os": "linux",
        "config": { "Entrypoint": ["/bin/busybox", "sleep", "2147483647"] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    });
    let (config_digest, config_size) = add_blob(&layout, config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = add_blob(&layout, manifest.to_string().as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": { "architecture": oci_architecture(), "os": "linux" },
            "annotations": { "io.containerd.image.name": SANDBOX_IMAGE },
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index.json");
    std::fs::write(
        layout.join("oci-layout"),
        json!({ "imageLayoutVersion": "1.0.0" }).to_string(),
    )
    .expect("oci-layout");
    let archive = dir.join("image.tar");
    let (archive_text, layout_text) = (archive.display().to_string(), layout.display().to_string());
    tar(&["-C", &layout_text, "-cf", &archive_text, "."]);
    let import = containerd
        .ctr()
        .args(["images", "import"])
        .arg(&archive)
        .output()
        .expect("ctr images import");
    assert!(
        import.status.success(),
        "ctr images import {}: {}{}",
        archive.display(),
        String::from_utf8_lossy(&import.stdout),
        String::from_utf8_lossy(&import.stderr)
    );
    let listing = containerd
        .ctr()
        .args(["images", "ls", "--quiet"])
        .output()
        .expect("ctr images ls");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.lines().any(|l| l.trim() == SANDBOX_IMAGE),
        "{SANDBOX_IMAGE} not imported: {listing}"
    );
}
