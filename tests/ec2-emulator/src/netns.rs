//! Network-namespace entry for hypervisor mode, kept in one place: the only module that calls
//! `setns`.
//!
//! `setns(CLONE_NEWNET)` moves the calling OS thread. A tokio worker moved so would carry the
//! namespace into unrelated tasks, so a throwaway thread enters the namespace, opens a
//! NETLINK_ROUTE socket (which stays bound to that namespace) and exits; rtnetlink then drives
//! the socket on the normal runtime. [`new_anonymous`] makes a namespace the same way.
//!
//! It holds unsafe code (allowed here only): netlink-sys hands the socket over as a raw
//! descriptor, which becomes an owned one; each conversion says why it is sound.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use netlink_sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use nix::sched::{setns, CloneFlags};

/// Where named network namespaces (`ip netns add NAME`) live.
pub const NETNS_DIR: &str = "/run/netns";

/// A network namespace could not be entered.
#[derive(Debug, thiserror::Error)]
#[error("network namespace {path}: {reason}")]
pub struct NetnsError {
    /// Path of the namespace file.
    pub path: String,
    /// What failed.
    pub reason: String,
}

/// The path of the named namespace `name`.
pub fn path_of(name: &str) -> String {
    format!("{NETNS_DIR}/{name}")
}

/// Open the namespace file at `path`.
pub fn open(path: &str) -> Result<File, NetnsError> {
    File::open(path).map_err(|e| NetnsError {
        path: path.to_owned(),
        reason: format!("{e} (create it with `ip netns add`)"),
    })
}

/// A new network namespace that no name refers to: it lives as long as the returned file is
/// open. Made by a throwaway thread that unshares its network namespace and opens it.
pub fn new_anonymous() -> Result<File, NetnsError> {
    let failed = |reason: String| NetnsError {
        path: "(anonymous)".to_owned(),
        reason,
    };
    std::thread::Builder::new()
        .name("ec2-emulator-unshare".into())
        .spawn(|| {
            // This thread exists only to own the new namespace until its file is open.
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare: {e}"))
                .and_then(|()| {
                    File::open("/proc/thread-self/ns/net")
                        .map_err(|e| format!("open /proc/thread-self/ns/net: {e}"))
                })
        })
        .map_err(|e| failed(format!("spawning the unshare thread: {e}")))?
        .join()
        .map_err(|_| failed("the unshare thread panicked".into()))?
        .map_err(failed)
}

/// An rtnetlink handle whose socket lives in `netns`. Must be called on a tokio runtime: the
/// connection task is spawned there and ends when the handle is dropped.
pub async fn handle_in(netns: &File, path: &str) -> Result<rtnetlink::Handle, NetnsError> {
    let failed = |reason: String| NetnsError {
        path: path.to_owned(),
        reason,
    };
    let netns = netns.try_clone().map_err(|e| failed(format!("dup: {e}")))?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ec2-emulator-netns".into())
        .spawn(move || {
            // This thread exists only to be moved into the namespace; it exits right after.
            let opened = setns(&netns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns: {e}"))
                .and_then(|()| {
                    Socket::new(NETLINK_ROUTE).map_err(|e| format!("netlink socket: {e}"))
                })
                // SAFETY: `into_raw_fd` hands over sole ownership of a valid, open descriptor.
                .map(|socket| unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) });
            let _ = sender.send(opened);
        })
        .map_err(|e| failed(format!("spawning the namespace thread: {e}")))?;
    let fd = receiver
        .await
        .map_err(|_| failed("the namespace thread ended without an answer".into()))?
        .map_err(failed)?;
    // SAFETY: `fd` is an open netlink socket we own; TokioSocket takes ownership of it.
    let socket = unsafe { TokioSocket::from_raw_fd(fd.into_raw_fd()) };
    let (connection, handle, _) = rtnetlink::from_socket(socket);
    tokio::spawn(connection);
    Ok(handle)
}
