//! Conformance table tests of the shim: every verb, every error path, exact stdout.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::*;

/// Answers with a canned response (or failure) and records what it was sent and where.
struct FakeTransport {
    answer: Result<DaemonResponse, TransportError>,
    sent: RefCell<Vec<(PathBuf, DaemonRequest)>>,
}

impl FakeTransport {
    fn answering(answer: Result<DaemonResponse, TransportError>) -> FakeTransport {
        FakeTransport {
            answer,
            sent: RefCell::new(Vec::new()),
        }
    }
}

impl Transport for FakeTransport {
    fn exchange(
        &self,
        socket: &Path,
        request: &DaemonRequest,
        _: Duration,
    ) -> Result<DaemonResponse, TransportError> {
        self.sent
            .borrow_mut()
            .push((socket.to_owned(), request.clone()));
        self.answer.clone()
    }
}

fn env(command: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/pod"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    vars
}

/// This test process's stand-in for /run/wasmcni: the only directory sockets may lie in.
fn socket_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn run_with(vars: &HashMap<String, String>, stdin: &str, transport: &FakeTransport) -> Outcome {
    let dir = socket_dir().to_string_lossy().into_owned();
    let default = socket_dir()
        .join("wasmcni.sock")
        .to_string_lossy()
        .into_owned();
    let sockets = Sockets {
        dir: &dir,
        default: &default,
    };
    run_with_sockets(
        |k| vars.get(k).cloned(),
        stdin.as_bytes(),
        transport,
        sockets,
    )
}

fn config(version: &str, socket: &Path) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"pods","type":"wasmcni","daemonSocket":"{}"}}"#,
        socket.display()
    )
}

const RESULT: &str = r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eni0123456789a"}],"ips":[{"address":"10.88.0.2/32","interface":0}]}"#;

#[test]
fn forwarded_verbs_print_the_daemons_stdout_verbatim() {
    let socket = socket_dir().join("d.sock");
    for command in ["ADD", "DEL", "CHECK", "GC", "STATUS"] {
        let transport = FakeTransport::answering(Ok(DaemonResponse::Success {
            stdout: RESULT.into(),
        }));
        let vars = if matches!(command, "GC" | "STATUS") {
            // libcni sends the attachment variables empty on GC and STATUS.
            env(
                command,
                &[
                    ("CNI_CONTAINERID", ""),
                    ("CNI_NETNS", ""),
                    ("CNI_IFNAME", ""),
                ],
            )
        } else {
            env(command, &[])
        };
        let stdin = config("1.1.0", &socket);
        let outcome = run_with(&vars, &stdin, &transport);
        assert_eq!(outcome.exit_code, 0, "{command}: {outcome:?}");
        assert_eq!(String::from_utf8(outcome.stdout).unwrap(), RESULT);
        let sent = transport.sent.borrow();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, socket, "daemonSocket from the config is used");
        assert_eq!(
            sent[0].1.config, stdin,
            "the config is forwarded byte for byte"
        );
        assert_eq!(sent[0].1.request.command.as_str(), command);
        assert_eq!(sent[0].1.protocol, PROTOCOL_VERSION);
    }
}

#[test]
fn del_with_empty_netns_is_forwarded() {
    let transport = FakeTransport::answering(Ok(DaemonResponse::Success {
        stdout: String::new(),
    }));
    let vars = env("DEL", &[("CNI_NETNS", "")]);
    let outcome = run_with(
        &vars,
        &config("1.0.0", &socket_dir().join("x.sock")),
        &transport,
    );
    assert_eq!((outcome.exit_code, outcome.stdout.len()), (0, 0));
    assert_eq!(transport.sent.borrow()[0].1.request.netns, "");
}

#[test]
fn daemon_failures_are_printed_and_exit_1() {
    let error = CniError::new(codes::POOL_EXHAUSTED, "no free IPv4 address");
    let transport = FakeTransport::answering(Ok(DaemonResponse::Failure {
        stdout: String::from_utf8(error.to_stdout_bytes("1.0.0")).unwrap(),
        error,
    }));
    let outcome = run_with(
        &env("ADD", &[]),
        &config("1.0.0", &socket_dir().join("x.sock")),
        &transport,
    );
    assert_eq!(outcome.exit_code, 1);
    assert_eq!(
        String::from_utf8(outcome.stdout).unwrap(),
        r#"{"cniVersion":"1.0.0","code":101,"msg":"no free IPv4 address"}"#
    );
}

#[test]
fn unreachable_daemon_table() {
    let socket = socket_dir().join("run/wasmcni.sock");
    let down = || {
        FakeTransport::answering(Err(TransportError::Unreachable(
            "connect: No such file or directory".into(),
        )))
    };
    let cases = [
        (
            "ADD",
            "1.0.0",
            1,
            r#"{"cniVersion":"1.0.0","code":11,"msg":"the wasmcni daemon is not available (connect: No such file or directory); try again later"}"#,
        ),
        (
            "CHECK",
            "0.4.0",
            1,
            r#"{"cniVersion":"0.4.0","code":11,"msg":"the wasmcni daemon is not available (connect: No such file or directory); try again later"}"#,
        ),
        (
            "GC",
            "1.1.0",
            1,
            r#"{"cniVersion":"1.1.0","code":11,"msg":"the wasmcni daemon is not available (connect: No such file or directory); try again later"}"#,
        ),
        (
            "STATUS",
            "1.1.0",
            1,
            r#"{"cniVersion":"1.1.0","code":50,"msg":"the wasmcni daemon is not available (connect: No such file or directory)"}"#,
        ),
        ("DEL", "1.0.0", 0, ""),
    ];
    for (command, version, exit_code, stdout) in cases {
        let outcome = run_with(&env(command, &[]), &config(version, &socket), &down());
        assert_eq!(outcome.exit_code, exit_code, "{command}");
        assert_eq!(
            String::from_utf8(outcome.stdout).unwrap(),
            stdout,
            "{command}"
        );
    }
    // The DEL was recorded for the daemon to replay, atomically and privately.
    let pending = wasmcni_cni::proto::pending_del_dir(&socket);
    let files: Vec<_> = std::fs::read_dir(&pending)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let recorded: wasmcni_cni::proto::PendingDel =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(recorded.request.request.command, Command::Del);
    assert_eq!(recorded.request.request.container_id, "abc123");
    assert!(recorded.recorded_unix_ms > 0);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&pending).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_daemon_that_broke_mid_request_means_try_again_even_for_del() {
    // The daemon may have done the DEL before it broke; only the runtime's retry can tell, and
    // DEL is idempotent. Nothing is spooled: a replay could hit a newer attachment.
    let socket = socket_dir().join("broken/wasmcni.sock");
    let broken =
        || FakeTransport::answering(Err(TransportError::Broken("read: connection reset".into())));
    for command in ["ADD", "DEL"] {
        let outcome = run_with(&env(command, &[]), &config("1.1.0", &socket), &broken());
        assert_eq!(outcome.exit_code, 1, "{command}");
        assert_eq!(
            String::from_utf8(outcome.stdout).unwrap(),
            r#"{"cniVersion":"1.1.0","code":11,"msg":"the wasmcni daemon is not available (read: connection reset); try again later"}"#
        );
    }
    assert!(!wasmcni_cni::proto::pending_del_dir(&socket).exists());
}

#[test]
fn local_errors_never_reach_the_daemon() {
    let never = FakeTransport::answering(Err(TransportError::Unreachable(
        "must not be called".into(),
    )));
    let cases: Vec<(HashMap<String, String>, String, u32)> = vec![
        (env("ADD", &[]), "garbage".into(), codes::DECODE_FAILURE),
        (
            env("ADD", &[]),
            r#"{"cniVersion":"9.9.9","name":"n","type":"wasmcni"}"#.into(),
            codes::INCOMPATIBLE_VERSION,
        ),
        (
            env("ADD", &[]),
            r#"{"cniVersion":"1.0.0","type":"wasmcni"}"#.into(),
            codes::INVALID_CONFIG,
        ),
        (
            env("ADD", &[("CNI_NETNS", "")]),
            config("1.0.0", Path::new("/x")),
            codes::INVALID_ENVIRONMENT,
        ),
        (
            env("NOPE", &[]),
            config("1.0.0", Path::new("/x")),
            codes::INVALID_ENVIRONMENT,
        ),
        (
            env("CHECK", &[]),
            config("0.3.1", Path::new("/x")),
            codes::INCOMPATIBLE_VERSION,
        ),
        (
            env("STATUS", &[]),
            config("1.0.0", Path::new("/x")),
            codes::INCOMPATIBLE_VERSION,
        ),
        (
            env("ADD", &[]),
            " ".repeat(MAX_CONFIG_BYTES + 1),
            codes::INVALID_CONFIG,
        ),
    ];
    for (vars, stdin, code) in cases {
        let outcome = run_with(&vars, &stdin, &never);
        assert_eq!(outcome.exit_code, 1);
        let error: CniError =
            serde_json::from_slice(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {outcome:?}"));
        assert_eq!(
            error.code,
            code,
            "{}: {}",
            &stdin[..stdin.len().min(50)],
            error.msg
        );
        assert!(never.sent.borrow().is_empty());
    }
    let missing = env("ADD", &[])
        .into_iter()
        .filter(|(k, _)| k == "CNI_COMMAND")
        .collect();
    let outcome = run_with(&missing, &config("1.0.0", Path::new("/x")), &never);
    let error: CniError = serde_json::from_slice(&outcome.stdout).unwrap();
    assert!(
        error.msg.contains("CNI_CONTAINERID")
            && error.msg.contains("CNI_NETNS")
            && error.msg.contains("CNI_IFNAME"),
        "{}",
        error.msg
    );
}

#[test]
fn version_is_answered_locally_with_exact_json() {
    let never = FakeTransport::answering(Err(TransportError::Unreachable(
        "must not be called".into(),
    )));
    let cases = [
        (
            r#"{"cniVersion":"0.3.1"}"#,
            r#"{"cniVersion":"0.3.1","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#,
        ),
        (
            "",
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#,
        ),
    ];
    for (stdin, expected) in cases {
        let outcome = run_with(
            &env(
                "VERSION",
                &[("CNI_CONTAINERID", ""), ("CNI_NETNS", "dummy")],
            ),
            stdin,
            &never,
        );
        assert_eq!(outcome.exit_code, 0);
        assert_eq!(String::from_utf8(outcome.stdout).unwrap(), expected);
    }
}

#[test]
fn del_with_a_config_that_no_longer_decodes_is_still_forwarded() {
    let transport = FakeTransport::answering(Ok(DaemonResponse::Success {
        stdout: String::new(),
    }));
    // A cached prevResult with a bad address: ADD would refuse it, DEL must not.
    let socket = socket_dir().join("d.sock");
    let stdin = format!(
        r#"{{"cniVersion":"1.0.0","name":"pods","type":"wasmcni","daemonSocket":"{}","prevResult":{{"ips":[{{"address":"not-an-ip"}}]}}}}"#,
        socket.display()
    );
    let stdin = stdin.as_str();
    let outcome = run_with(&env("DEL", &[]), stdin, &transport);
    assert_eq!(
        (outcome.exit_code, outcome.stdout.len()),
        (0, 0),
        "{outcome:?}"
    );
    assert_eq!(transport.sent.borrow()[0].0, socket);
    let refused = run_with(&env("ADD", &[]), stdin, &transport);
    assert_eq!(refused.exit_code, 1);
}

#[test]
fn a_socket_or_log_outside_their_directories_fails_every_verb_but_del() {
    let answered = || {
        FakeTransport::answering(Ok(DaemonResponse::Success {
            stdout: String::new(),
        }))
    };
    for (socket, log) in [
        ("/tmp/evil.sock", "/var/log/wasmcni/cni.log"),
        (
            &*socket_dir().join("../escape.sock").to_string_lossy(),
            "/var/log/wasmcni/cni.log",
        ),
        (
            &*socket_dir().join("ok.sock").to_string_lossy(),
            "/etc/passwd",
        ),
    ] {
        let stdin = format!(
            r#"{{"cniVersion":"1.0.0","name":"pods","type":"wasmcni","daemonSocket":"{socket}","logFile":"{log}"}}"#
        );
        for command in ["ADD", "CHECK"] {
            let transport = answered();
            let outcome = run_with(&env(command, &[]), &stdin, &transport);
            assert_eq!(outcome.exit_code, 1, "{command} {socket} {log}");
            let error: CniError = serde_json::from_slice(&outcome.stdout).unwrap();
            assert_eq!(error.code, codes::INVALID_CONFIG, "{}", error.msg);
            assert!(
                error.msg.contains("the shim only uses paths below"),
                "{}",
                error.msg
            );
            assert!(transport.sent.borrow().is_empty(), "nothing was sent");
        }
        // DEL goes on with the defaults, and says what it ignored.
        let transport = answered();
        let outcome = run_with(&env("DEL", &[]), &stdin, &transport);
        assert_eq!(outcome.exit_code, 0, "{outcome:?}");
        assert!(
            outcome.log.contains("ignored in the network configuration"),
            "{}",
            outcome.log
        );
        let sent_to = transport.sent.borrow()[0].0.clone();
        assert!(sent_to.starts_with(socket_dir()), "{}", sent_to.display());
        assert!(outcome
            .log_file
            .as_deref()
            .is_none_or(|p| p.starts_with(confine::LOG_DIR)));
    }
}
