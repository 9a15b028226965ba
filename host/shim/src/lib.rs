//! The `wasmcni` CNI executable's logic: parse `CNI_*` and stdin, answer VERSION, forward the
//! rest to the daemon, and produce exactly one stdout payload and an exit code.
//!
//! Synchronous and small on purpose: a kubelet exec should cost about a millisecond. The
//! socket exchange sits behind [`Transport`] so every branch (daemon down, daemon crashed
//! mid-request, bad input) is tested without a daemon.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmcni_cni::error::{codes, CniError};
use wasmcni_cni::netconf::{peek_version, NetConf};
use wasmcni_cni::proto::{
    pending_del_dir, read_frame, record_pending_del, write_frame, DaemonRequest, DaemonResponse,
    DEFAULT_SOCKET, MAX_CONFIG_BYTES, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use wasmcni_cni::request::{CniRequest, Command};
use wasmcni_cni::version::{version_info_bytes, CniVersion};

pub mod confine;
pub mod log;

/// What the process prints on stdout and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Exactly the bytes for stdout (a result, an error object, or nothing).
    pub stdout: Vec<u8>,
    /// 0 on success, 1 on error.
    pub exit_code: i32,
    /// One line for the log (never stdout).
    pub log: String,
    /// The configuration's `logFile` (below [`confine::LOG_DIR`]), when the configuration
    /// could be read and named an acceptable one.
    pub log_file: Option<PathBuf>,
}

/// Why an exchange with the daemon failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// Nothing listens on the socket (daemon down or not yet started).
    Unreachable(String),
    /// Connected, but the exchange broke (daemon crashed or timed out mid-request).
    Broken(String),
}

/// One request/response exchange with the daemon.
pub trait Transport {
    /// Sends `request` to the daemon at `socket` and waits up to `timeout` for the answer.
    fn exchange(
        &self,
        socket: &Path,
        request: &DaemonRequest,
        timeout: Duration,
    ) -> Result<DaemonResponse, TransportError>;
}

/// The real transport: a Unix stream socket.
pub struct UnixTransport;

impl Transport for UnixTransport {
    fn exchange(
        &self,
        socket: &Path,
        request: &DaemonRequest,
        timeout: Duration,
    ) -> Result<DaemonResponse, TransportError> {
        let mut stream = connect_with_timeout(socket, CONNECT_TIMEOUT)?;
        let broken = |e: &dyn std::fmt::Display| {
            TransportError::Broken(format!("{}: {e}", socket.display()))
        };
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| broken(&e))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| broken(&e))?;
        write_frame(&mut stream, request).map_err(|e| broken(&e))?;
        read_frame(&mut stream, MAX_FRAME_BYTES).map_err(|e| broken(&e))
    }
}

/// How long a connect may wait when the daemon's listen backlog is full (a hung daemon must
/// not hang kubelet).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the daemon's socket, giving up after `timeout`. A Unix-socket connect blocks
/// while the listener's backlog is full and honours `SO_SNDTIMEO`, so the timeout is set on
/// the socket before connecting. A refused, missing or timed-out connect means the request
/// never reached the daemon: [`TransportError::Unreachable`].
fn connect_with_timeout(socket: &Path, timeout: Duration) -> Result<UnixStream, TransportError> {
    use nix::sys::socket::{
        connect, setsockopt, socket as open_socket, sockopt, AddressFamily, SockFlag, SockType,
        UnixAddr,
    };
    let unreachable = |what: &str, e: nix::Error| {
        TransportError::Unreachable(format!("{what} {}: {e}", socket.display()))
    };
    let address = UnixAddr::new(socket).map_err(|e| unreachable("address", e))?;
    let fd = open_socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| unreachable("socket for", e))?;
    let limit = nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
    setsockopt(&fd, sockopt::SendTimeout, &limit).map_err(|e| unreachable("SO_SNDTIMEO on", e))?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &address)
        .map_err(|e| unreachable("connect", e))?;
    Ok(UnixStream::from(fd))
}

/// How long the shim waits for the daemon: ADD may wait for the pool to grow.
fn timeout_for(command: Command) -> Duration {
    match command {
        Command::Add => Duration::from_secs(120),
        _ => Duration::from_secs(60),
    }
}

/// Reads at most [`MAX_CONFIG_BYTES`] + 1 bytes of stdin (the extra byte detects oversize).
pub fn read_stdin(stdin: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    stdin
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Where the shim may connect: a daemon socket below `dir`, `default` when the network
/// configuration names none.
#[derive(Debug, Clone, Copy)]
pub struct Sockets<'a> {
    /// The only directory sockets may lie in.
    pub dir: &'a str,
    /// The socket used when the netconf names none (or, on DEL, names a refused one).
    pub default: &'a str,
}

impl Sockets<'static> {
    /// The node's: below `/run/wasmcni`, default `/run/wasmcni/wasmcni.sock`.
    pub const SYSTEM: Sockets<'static> = Sockets {
        dir: wasmcni_cni::proto::SOCKET_DIR,
        default: DEFAULT_SOCKET,
    };
}

/// Runs one CNI invocation. `var` reads the environment; `stdin` is what [`read_stdin`] read.
pub fn run(
    var: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    transport: &impl Transport,
) -> Outcome {
    run_with_sockets(var, stdin, transport, Sockets::SYSTEM)
}

/// [`run`] with another socket directory (tests).
pub fn run_with_sockets(
    var: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    transport: &impl Transport,
    sockets: Sockets<'_>,
) -> Outcome {
    let version = peek_version(stdin).unwrap_or_else(|| CniVersion::LATEST.as_str().to_owned());
    let fail = |error: CniError| Outcome {
        stdout: error.to_stdout_bytes(&version),
        exit_code: 1,
        log: format!("error {}: {}", error.code, error.msg),
        log_file: None,
    };
    if stdin.len() > MAX_CONFIG_BYTES {
        return fail(CniError::new(
            codes::INVALID_CONFIG,
            format!("network configuration on stdin exceeds the {MAX_CONFIG_BYTES}-byte limit"),
        ));
    }
    let request = match CniRequest::from_env(&var) {
        Ok(request) => request,
        Err(error) => return fail(error),
    };
    if request.command == Command::Version {
        return Outcome {
            stdout: version_info_bytes(&version),
            exit_code: 0,
            log: "VERSION".into(),
            log_file: None,
        };
    }
    let (daemon_socket, log_file) = match NetConf::parse(stdin) {
        Ok(netconf) => {
            if let Err(error) = request.command.check_version(netconf.cni_version) {
                return fail(error);
            }
            (netconf.daemon_socket, netconf.log_file)
        }
        // DEL needs only the attachment key: a configuration that is JSON but no longer
        // decodes (a cached prevResult, a capability argument) must not make a pod
        // undeletable. The daemon deletes by key and logs the decode error.
        Err(error) if request.command == Command::Del => match lenient_keys(stdin) {
            Some(keys) => keys,
            None => return fail(error),
        },
        Err(error) => return fail(error),
    };
    // The netconf may not steer the root shim: both paths are confined to root's directories.
    // A refused path fails every verb but DEL, which goes on with the defaults so that a pod
    // can always be deleted.
    let mut refused = Vec::new();
    let log_file = log_file.and_then(|value| match confine::log_file(&value) {
        Ok(_) => Some(PathBuf::from(value)),
        Err(why) => {
            refused.push(why);
            None
        }
    });
    let socket = match daemon_socket.map(|value| {
        wasmcni_cni::paths::daemon_socket_in(&value, sockets.dir).and_then(|socket| {
            confine::check_socket(&socket)?;
            Ok(socket)
        })
    }) {
        Some(Ok(socket)) => socket,
        Some(Err(why)) => {
            refused.push(why);
            PathBuf::from(sockets.default)
        }
        None => PathBuf::from(sockets.default),
    };
    if !refused.is_empty() && request.command != Command::Del {
        return Outcome {
            log_file,
            ..fail(CniError::new(codes::INVALID_CONFIG, refused.join("; ")))
        };
    }
    let forwarded = DaemonRequest {
        protocol: PROTOCOL_VERSION,
        request: request.clone(),
        config: String::from_utf8_lossy(stdin).into_owned(),
    };
    let what = format!(
        "{} {}/{} netns={:?}",
        request.command.as_str(),
        request.container_id,
        request.ifname,
        request.netns
    );
    let outcome = match transport.exchange(&socket, &forwarded, timeout_for(request.command)) {
        Ok(DaemonResponse::Success { stdout }) => Outcome {
            stdout: stdout.into_bytes(),
            exit_code: 0,
            log: format!("{what}: ok"),
            log_file: None,
        },
        Ok(DaemonResponse::Failure { stdout, error }) => Outcome {
            stdout: stdout.into_bytes(),
            exit_code: 1,
            log: format!("{what}: error {}: {}", error.code, error.msg),
            log_file: None,
        },
        Err(problem) => daemon_unavailable(&request, &forwarded, &socket, problem, &version, &what),
    };
    let log = match refused.is_empty() {
        true => outcome.log,
        false => format!(
            "{}; ignored in the network configuration: {}",
            outcome.log,
            refused.join("; ")
        ),
    };
    Outcome {
        log_file,
        log,
        ..outcome
    }
}

/// `daemonSocket` and `logFile` from a configuration that is a JSON object but does not
/// decode as a whole; `None` when it is not even that.
fn lenient_keys(stdin: &[u8]) -> Option<(Option<String>, Option<String>)> {
    let value: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    let object = value.as_object()?;
    let text = |key: &str| {
        object
            .get(key)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Some((text("daemonSocket"), text("logFile")))
}

fn daemon_unavailable(
    request: &CniRequest,
    forwarded: &DaemonRequest,
    socket: &Path,
    problem: TransportError,
    version: &str,
    what: &str,
) -> Outcome {
    let reason = match &problem {
        TransportError::Unreachable(r) | TransportError::Broken(r) => r.clone(),
    };
    let unreachable = matches!(problem, TransportError::Unreachable(_));
    let error = match request.command {
        Command::Del if unreachable => {
            // Nothing listens: DEL must still succeed, so it is recorded for the daemon to
            // replay before it serves again. (A daemon that took the request and then broke may
            // have done it already: that case answers "try again" below instead, and the
            // runtime's retry is idempotent.)
            let spooled = record_pending_del(&pending_del_dir(socket), forwarded);
            return Outcome {
                stdout: Vec::new(),
                exit_code: 0,
                log: match spooled {
                    Ok(path) => format!(
                        "{what}: daemon unavailable ({reason}); DEL recorded in {}",
                        path.display()
                    ),
                    Err(e) => format!(
                        "{what}: daemon unavailable ({reason}); recording the DEL failed: {e}"
                    ),
                },
                log_file: None,
            };
        }
        Command::Status => CniError::new(
            codes::NOT_AVAILABLE,
            format!("the wasmcni daemon is not available ({reason})"),
        ),
        _ => CniError::new(
            codes::TRY_AGAIN_LATER,
            format!("the wasmcni daemon is not available ({reason}); try again later"),
        ),
    };
    Outcome {
        stdout: error.to_stdout_bytes(version),
        exit_code: 1,
        log: format!("{what}: error {}: {}", error.code, error.msg),
        log_file: None,
    }
}

#[cfg(test)]
mod tests;
