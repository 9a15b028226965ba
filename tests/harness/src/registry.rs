//! A real OCI distribution server for tests: Debian's `docker-registry` (the CNCF
//! distribution project, v2.8), on a loopback port of its own, over plain HTTP or TLS with a
//! CA generated for the test, optionally behind HTTP basic auth. Its storage is a directory the
//! test owns, so a test can tamper with a blob as a compromised registry would. The server
//! is killed and its directory removed on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the test registry is reached.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Serve TLS with a certificate for 127.0.0.1 from a generated CA.
    pub tls: bool,
    /// Require these basic-auth credentials.
    pub auth: Option<(String, String)>,
    /// Serve inside this network namespace (its file, e.g. a test node's), on its loopback.
    pub netns: Option<PathBuf>,
}

/// A running `docker-registry`.
pub struct TestRegistry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    options: RegistryOptions,
}

const BINARY: &str = "docker-registry";

impl TestRegistry {
    /// Starts one; panics naming what failed (the binary comes from Debian's
    /// `docker-registry`, which `scripts/install-deps.sh` installs).
    pub fn start(options: RegistryOptions) -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("wasmcni-registry-")
            .tempdir()
            .expect("a directory for the registry");
        if options.tls {
            make_certificates(dir.path());
        }
        if let Some((user, password)) = &options.auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd: {out:?}");
            std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
        }
        let mut registry = TestRegistry {
            child: None,
            dir,
            addr: "127.0.0.1:0".parse().unwrap(),
            options,
        };
        registry.restart();
        registry
    }

    /// (Re)starts the server on a new free port, with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = self.in_netns(|| {
                TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("a free loopback port")
                    .port()
            });
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let config = self.dir.path().join("config.yml");
            std::fs::write(&config, self.config_yaml(addr)).unwrap();
            let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
            let mut child = self.in_netns(move || {
                Command::new(BINARY)
                    .arg("serve")
                    .arg(&config)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap_or_else(|e| {
                        panic!("start {BINARY}: {e} (Debian's docker-registry; scripts/install-deps.sh)")
                    })
            });
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!(
                        "{BINARY} exited ({status}): {}",
                        std::fs::read_to_string(self.dir.path().join("registry.log"))
                            .unwrap_or_default()
                    );
                    break;
                }
                let up = self.in_netns(move || {
                    TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
                });
                if up {
                    self.child = Some(child);
                    self.addr = addr;
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{BINARY} did not listen on {addr} within 15 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("{last_error}");
    }

    /// Runs `f` in the registry's network namespace.
    fn in_netns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match &self.options.netns {
            Some(netns) => crate::netns::run_in(netns, f),
            None => f(),
        }
    }

    /// Stops the server (its storage stays); nothing listens on its port afterwards.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The directory the password file of [`TestRegistry::registry_section`] lies in (for
    /// `WASMCNI_REGISTRY_AUTH_DIR`).
    pub fn auth_dir(&self) -> PathBuf {
        self.dir.path().join("auth")
    }

    /// The file holding the password, when the registry requires one.
    pub fn password_file(&self) -> Option<PathBuf> {
        let (_, password) = self.options.auth.as_ref()?;
        let file = self.auth_dir().join("password");
        std::fs::create_dir_all(self.auth_dir()).unwrap();
        std::fs::write(&file, format!("{password}\n")).unwrap();
        Some(file)
    }

    /// The generated CA's certificate (PEM), when serving TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.dir.path().join("ca.pem"))
    }

    /// The `[registry]` table a node needs to reach this registry, plus `extra` lines (its
    /// password file lies in [`TestRegistry::auth_dir`]).
    pub fn registry_section(&self, extra: &str) -> String {
        let mut text = String::from("\n[registry]\n");
        match self.ca_file() {
            Some(ca) => text.push_str(&format!("ca_files = [\"{}\"]\n", ca.display())),
            None => text.push_str(&format!("plain_http = [\"{}\"]\n", self.host())),
        }
        text.push_str(extra);
        if let (Some((user, _)), Some(file)) = (&self.options.auth, self.password_file()) {
            text.push_str(&format!(
                "\n[registry.auth.\"{}\"]\nusername = \"{user}\"\npassword_file = \"{}\"\n",
                self.host(),
                file.display()
            ));
        }
        text
    }

    /// The file the registry stores the blob `digest` in (for a test to tamper with).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn config_yaml(&self, addr: SocketAddr) -> String {
        let dir = self.dir.path().display();
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  \
             filesystem:\n    rootdirectory: {dir}/storage\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n"
        );
        if self.options.tls {
            yaml.push_str(&format!(
                "  tls:\n    certificate: {dir}/server.pem\n    key: {dir}/server.key\n"
            ));
        }
        if self.options.auth.is_some() {
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wasmcni-test\n    path: {dir}/htpasswd\n"
            ));
        }
        yaml
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and a server certificate for 127.0.0.1 it signed, made with the openssl CLI.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=wasmcni test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}
