//! Network-namespace entry, kept in one place: the only module that calls `setns`.
//!
//! `setns(CLONE_NEWNET)` switches the *calling OS thread*. A tokio worker that did so would
//! carry the pod's namespace into unrelated tasks after the next `.await`. So namespace work
//! happens on a short-lived OS thread that does nothing else: it enters the namespace, opens a
//! netlink socket (which stays bound to that namespace for its whole life) and exits. The
//! socket is then driven by rtnetlink on the normal runtime.
//!
//! It holds unsafe code (allowed here only): netlink-sys hands the socket over as a raw
//! descriptor, which becomes an owned one; each conversion says why it is sound.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use netlink_sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use nix::sched::{setns, CloneFlags};

use super::DatapathError;

/// Opens the network namespace file at `path` (a bind mount under /run/netns or
/// `/proc/<pid>/ns/net`), and checks that it is one: a runtime pins a pod's namespace by
/// mounting it over an empty file, and where that mount does not reach the daemon's mount
/// namespace the daemon sees only the empty file, which `setns` would refuse with a bare
/// "Invalid argument".
pub fn open(path: &str) -> Result<File, DatapathError> {
    let failed = |step, source| DatapathError::Netns {
        path: path.to_owned(),
        step,
        source,
    };
    let file = File::open(path).map_err(|e| failed("open", e))?;
    let fs =
        nix::sys::statfs::fstatfs(&file).map_err(|e| failed("statfs", std::io::Error::from(e)))?;
    // nsfs: the file system of namespace files, bind-mounted or under /proc.
    if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(failed(
            "check it",
            std::io::Error::other(
                "not a namespace but a plain file: the mount that pins the pod's namespace \
                 does not reach the daemon's mount namespace (give the daemon the runtime's \
                 netns directory with mount propagation; docs/operating.md)",
            ),
        ));
    }
    Ok(file)
}

/// Creates a NETLINK_ROUTE socket inside the namespace `netns` from a dedicated thread; the
/// caller awaits it instead of blocking a runtime worker on `join`. With `enable_ipv6` the
/// thread also switches IPv6 on in the namespace (`all` and `default` `disable_ipv6=0`, as VPC
/// CNI does for IPv6 pods): a runtime may create pod namespaces with it off, and an IPv6
/// address on an interface without IPv6 is refused.
async fn route_socket_in(
    netns: &File,
    path: &str,
    enable_ipv6: bool,
) -> Result<OwnedFd, DatapathError> {
    let failed = |(step, source): (&'static str, std::io::Error)| DatapathError::Netns {
        path: path.to_owned(),
        step,
        source,
    };
    let netns = netns.try_clone().map_err(|e| failed(("dup", e)))?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("wasmcni-netns".into())
        .spawn(move || {
            // This thread exists only to be moved into the namespace; it exits right after.
            let opened = setns(&netns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| ("setns", std::io::Error::from(e)))
                .and_then(|()| {
                    if enable_ipv6 {
                        enable_ipv6_here()
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| Socket::new(NETLINK_ROUTE).map_err(|e| ("open a netlink socket", e)))
                // SAFETY: `into_raw_fd` hands over sole ownership of a valid, open descriptor.
                .map(|socket| unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) });
            let _ = sender.send(opened);
        })
        .map_err(|e| failed(("spawn the namespace thread", e)))?;
    receiver
        .await
        .map_err(|_| {
            failed((
                "wait for the namespace thread",
                std::io::Error::other("it ended without an answer"),
            ))
        })?
        .map_err(failed)
}

/// Writes `disable_ipv6=0` for every interface of the calling thread's namespace, present
/// (`all`) and future (`default`). /proc/sys/net answers for the opener's namespace.
fn enable_ipv6_here() -> Result<(), (&'static str, std::io::Error)> {
    for (step, path) in [
        (
            "enable IPv6 (write /proc/sys/net/ipv6/conf/all/disable_ipv6)",
            "/proc/sys/net/ipv6/conf/all/disable_ipv6",
        ),
        (
            "enable IPv6 (write /proc/sys/net/ipv6/conf/default/disable_ipv6)",
            "/proc/sys/net/ipv6/conf/default/disable_ipv6",
        ),
    ] {
        std::fs::write(path, b"0").map_err(|e| (step, e))?;
    }
    Ok(())
}

/// An rtnetlink handle whose socket lives in the namespace `netns`. Must be called on a tokio
/// runtime: the connection task is spawned there and ends when the handle is dropped.
pub async fn handle_in(netns: &File, path: &str) -> Result<rtnetlink::Handle, DatapathError> {
    handle_with(netns, path, false).await
}

/// As [`handle_in`], with IPv6 switched on in the namespace first (for an IPv6 pod).
pub async fn handle_in_with_ipv6(
    netns: &File,
    path: &str,
) -> Result<rtnetlink::Handle, DatapathError> {
    handle_with(netns, path, true).await
}

async fn handle_with(
    netns: &File,
    path: &str,
    enable_ipv6: bool,
) -> Result<rtnetlink::Handle, DatapathError> {
    let fd = route_socket_in(netns, path, enable_ipv6).await?;
    // SAFETY: `fd` is an open netlink socket we own; TokioSocket takes ownership of it.
    let socket = unsafe { TokioSocket::from_raw_fd(fd.into_raw_fd()) };
    let (connection, handle, _) = rtnetlink::from_socket(socket);
    tokio::spawn(connection);
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_file_where_a_namespace_should_be_is_named_for_what_it_is() {
        let file = std::env::temp_dir().join(format!("wasmcni-netns-test-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let path = file.display().to_string();
        let error = open(&path).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!(
                "cannot use network namespace {path}: check it: not a namespace but a plain file"
            )),
            "{error}"
        );
        assert!(error.contains("mount propagation"), "{error}");
        std::fs::remove_file(&file).unwrap();
        // A namespace, as the kernel shows one under /proc, opens.
        open("/proc/self/ns/net").expect("a real network namespace");
        let missing = open("/nonexistent/netns").unwrap_err().to_string();
        assert!(missing.contains(": open: "), "{missing}");
    }
}
