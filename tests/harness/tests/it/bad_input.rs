//! Bad input: each gets the right CNI error object on stdout, and the daemon keeps serving.
//! And the shim on its own: VERSION without a daemon, and with nothing of the node beside it.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{json, Value};
use wasmcni_harness::chain::{exec_plugin, Attachment, Execution};

use crate::support::{pod, running_node, wasmcni_only};

fn shim(command: &str, attachment: &Attachment, stdin: &[u8]) -> Execution {
    exec_plugin(
        "wasmcni",
        command,
        attachment,
        &wasmcni_harness::cni_path(),
        stdin,
    )
}

/// The shim the daemon installs on a node must run whatever that node's OS is: alone in an
/// otherwise empty root (no dynamic loader, no libc, no /proc), it still answers.
#[test]
fn the_shim_runs_with_nothing_of_the_node_beside_it() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: it runs the shim in a chroot (run the tests as root)"
    );
    let shim = wasmcni_harness::shim();
    // A hard link, not a copy: a copy's write descriptor, inherited by another test's fork
    // for an instant, would make the exec fail with ETXTBSY.
    let root = tempfile::tempdir_in(shim.parent().unwrap()).unwrap();
    std::fs::hard_link(&shim, root.path().join("wasmcni")).unwrap();
    let mut child = std::process::Command::new("/usr/sbin/chroot")
        .arg(root.path())
        .arg("/wasmcni")
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/sbin/chroot, from coreutils");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"cniVersion":"1.0.0"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the shim did not run alone in an empty root (is it static?): {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        r#"{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
    );
}

fn error_of(execution: &Execution) -> Value {
    assert_eq!(execution.exit_code, 1, "an error exits 1: {execution:?}");
    serde_json::from_str(&execution.stdout)
        .unwrap_or_else(|e| panic!("stdout is not an error object ({e}): {execution:?}"))
}

fn some_attachment() -> Attachment {
    Attachment {
        container_id: "c0ffee".into(),
        netns: "/run/netns/does-not-exist".into(),
        ifname: "eth0".into(),
        ..Attachment::default()
    }
}

#[test]
fn version_answers_without_a_daemon_with_exact_json() {
    let out = shim(
        "VERSION",
        &Attachment::default(),
        br#"{"cniVersion":"0.4.0"}"#,
    );
    assert_eq!(out.exit_code, 0);
    assert_eq!(
        out.stdout,
        r#"{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
    );
    // podman's probe: dummy variables, and stdin with only a version.
    let probe = Attachment {
        netns: "dummy".into(),
        ifname: "dummy".into(),
        ..Attachment::default()
    };
    assert_eq!(
        shim("VERSION", &probe, br#"{"cniVersion":"1.0.0"}"#).exit_code,
        0
    );
}

#[test]
fn malformed_invocations_get_the_specified_codes() {
    let config = br#"{"cniVersion":"1.0.0","name":"n","type":"wasmcni","daemonSocket":"/run/wasmcni/nonexistent/wasmcni.sock"}"#;
    let cases: Vec<(&str, Attachment, Vec<u8>, u64, &str)> = vec![
        (
            "ADD",
            some_attachment(),
            b"this is not json".to_vec(),
            6,
            "",
        ),
        ("FROB", some_attachment(), config.to_vec(), 4, "FROB"),
        (
            "ADD",
            Attachment {
                ifname: "eth0".into(),
                ..Attachment::default()
            },
            config.to_vec(),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "ADD",
            some_attachment(),
            br#"{"cniVersion":"9.9.9","name":"n","type":"wasmcni"}"#.to_vec(),
            1,
            "9.9.9",
        ),
        (
            "ADD",
            some_attachment(),
            br#"{"cniVersion":"1.0.0","type":"wasmcni"}"#.to_vec(),
            7,
            "name",
        ),
        (
            "CHECK",
            some_attachment(),
            br#"{"cniVersion":"0.3.1","name":"n","type":"wasmcni"}"#.to_vec(),
            1,
            "CHECK",
        ),
        ("GC", Attachment::default(), config.to_vec(), 1, "GC"),
        ("ADD", some_attachment(), vec![b' '; 2 << 20], 7, "limit"),
    ];
    for (command, attachment, stdin, code, needle) in cases {
        let out = shim(command, &attachment, &stdin);
        let error = error_of(&out);
        assert_eq!(
            error["code"],
            json!(code),
            "{command} with {:?}: {error}",
            String::from_utf8_lossy(&stdin[..stdin.len().min(60)])
        );
        assert!(
            error["msg"].as_str().unwrap().contains(needle),
            "{error} should mention {needle}"
        );
        assert!(
            out.stderr.contains("wasmcni:"),
            "errors are also logged to stderr: {out:?}"
        );
    }
}

#[test]
fn the_daemon_survives_junk_slow_and_oversized_clients() {
    let node = running_node();
    let socket = node.socket();
    // Root-only: the socket 0600 in a 0700 directory, and no TCP listener at all.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);
    let tcp = node.node.exec("ss", &["-Hltn"]);
    assert!(
        String::from_utf8_lossy(&tcp.stdout).trim().is_empty(),
        "a TCP listener in the node namespace: {tcp:?}"
    );
    // A client that connects and says nothing holds its connection while others are served.
    let silent = UnixStream::connect(&socket).expect("connect");
    // A client that sends junk.
    let mut junk = UnixStream::connect(&socket).expect("connect");
    junk.write_all(b"\x00\x00\x00\x05hello").unwrap();
    // A client announcing a 1 GiB frame.
    let mut huge = UnixStream::connect(&socket).expect("connect");
    huge.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
    // A client that connects and hangs up at once.
    drop(UnixStream::connect(&socket).expect("connect"));

    for (stream, expected_code) in [(&mut junk, 6), (&mut huge, 7)] {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let response: wasmcni_cni::proto::DaemonResponse =
            wasmcni_cni::proto::read_frame(stream, 1 << 20).expect("an answer");
        match response {
            wasmcni_cni::proto::DaemonResponse::Failure { error, .. } => {
                assert_eq!(error.code, expected_code, "{error:?}")
            }
            other => panic!("junk was accepted: {other:?}"),
        }
    }

    let chain = wasmcni_only(&node, "1.1.0");
    let p = pod("afterjunk");
    let result = node.add(&chain, &p.attachment);
    assert!(
        result.is_ok(),
        "the daemon stopped serving after bad clients: {result:?}"
    );
    drop(silent);
}

#[test]
fn a_hung_daemon_does_not_hang_the_runtime() {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    // A "daemon" that listens but never accepts, with its backlog already full.
    let dir = wasmcni_harness::ConfinedDirs::new("hung");
    let path = dir.run.join("hung.sock");
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&listener),
        &UnixAddr::new(&path).unwrap(),
    )
    .unwrap();
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let filler = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        let _ = nix::sys::socket::connect(
            std::os::fd::AsRawFd::as_raw_fd(&filler),
            &UnixAddr::new(&path).unwrap(),
        );
        fillers.push(filler);
    }
    let config = format!(
        r#"{{"cniVersion":"1.0.0","name":"n","type":"wasmcni","daemonSocket":"{}"}}"#,
        path.display()
    );
    let started = std::time::Instant::now();
    let out = shim("ADD", &some_attachment(), config.as_bytes());
    let error = error_of(&out);
    assert_eq!(error["code"], json!(11), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the shim waited {:?}",
        started.elapsed()
    );
    drop(fillers);
}

#[test]
fn a_netconf_cannot_point_the_root_shim_anywhere_else() {
    let node = running_node();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.log");
    let socket = node.socket().display().to_string();
    let netconf = |socket: &str, log: &str| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"n","type":"wasmcni","daemonSocket":"{socket}","logFile":"{log}"}}"#
        )
    };
    let p = pod("confined");
    // ADD with a logFile or a daemonSocket outside their directories: a clear error, code 7,
    // naming the key and the directory, and nothing written or connected elsewhere.
    let traversal = format!("/var/log/wasmcni/../../..{}", victim.display());
    let cases = [
        (netconf(&socket, &victim.display().to_string()), "logFile"),
        (netconf(&socket, &traversal), "logFile"),
        (
            netconf("/tmp/wasmcni.sock", "/var/log/wasmcni/cni.log"),
            "daemonSocket",
        ),
    ];
    for (config, key) in &cases {
        let out = shim("ADD", &p.attachment, config.as_bytes());
        let error = error_of(&out);
        assert_eq!(error["code"], json!(7), "{error}");
        let msg = error["msg"].as_str().unwrap();
        assert!(
            msg.contains(key) && msg.contains("the shim only uses paths below"),
            "{msg}"
        );
    }
    assert!(!victim.exists());
    // A symlinked socket is not followed, even inside the directory.
    let link = node.socket().with_file_name("link.sock");
    std::os::unix::fs::symlink(node.socket(), &link).unwrap();
    let out = shim(
        "ADD",
        &p.attachment,
        netconf(&link.display().to_string(), "/var/log/wasmcni/cni.log").as_bytes(),
    );
    assert!(
        error_of(&out)["msg"]
            .as_str()
            .unwrap()
            .contains("is a symbolic link; the shim does not follow it"),
        "{out:?}"
    );
    // A symlinked directory inside the log directory cannot lead the log outside it.
    let escape = node.shim_log().with_file_name("escape");
    std::os::unix::fs::symlink(outside.path(), &escape).unwrap();
    let chain_conf = netconf(&socket, &escape.join("victim.log").display().to_string());
    let added = shim("ADD", &p.attachment, chain_conf.as_bytes());
    assert_eq!(added.exit_code, 0, "{added:?}");
    assert!(
        !victim.exists(),
        "the log followed a symlink out of /var/log/wasmcni"
    );
    assert!(added.stderr.contains("cannot write log"), "{added:?}");
    // DEL with a refused logFile still succeeds (the default log is used), and deletes.
    let out = shim(
        "DEL",
        &p.attachment,
        netconf(&socket, &victim.display().to_string()).as_bytes(),
    );
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(!victim.exists());
    assert!(node.inspect("pool", true).contains("\"allocations\": []"));
}
