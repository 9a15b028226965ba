//! Network-namespace entry, kept in one place: the only module that calls `setns`.
//!
//! `setns(CLONE_NEWNET)` switches the *calling OS thread*. A tokio worker that stayed switched
//! would carry the pod's namespace into unrelated tasks after the next `.await`. So a socket
//! for a pod's namespace is opened by one synchronous call, with no `.await` inside, that
//! enters the namespace, opens a netlink socket (which stays bound to that namespace for its
//! whole life) and enters the thread's own namespace again before it returns: no task ever
//! runs in another namespace. Should that return fail, the daemon aborts rather than run on a
//! thread in a pod's namespace (restart recovery finishes or undoes the request). The socket
//! is then driven by rtnetlink on the normal runtime. (It was a short-lived thread per
//! socket: ≈ 0.2 ms of every ADD on this project's machines, for a thread start.)
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

/// Creates a NETLINK_ROUTE socket inside the namespace `netns` from the calling thread, which
/// enters it and returns to its own namespace before this returns (see the module's doc).
/// With `enable_ipv6` it also switches IPv6 on in the namespace (`all` and `default`
/// `disable_ipv6=0`, as VPC CNI does for IPv6 pods): a runtime may create pod namespaces with it
/// off, and an IPv6 address on an interface without IPv6 is refused.
fn route_socket_in(netns: &File, path: &str, enable_ipv6: bool) -> Result<OwnedFd, DatapathError> {
    let failed = |(step, source): (&'static str, std::io::Error)| DatapathError::Netns {
        path: path.to_owned(),
        step,
        source,
    };
    HOME.with(|home| {
        let mut home = home.borrow_mut();
        let home = match &mut *home {
            Some(own) => &*own,
            // Opened while the thread is in it: before its first `setns` (every later one
            // returns). A failure is not kept: the next socket tries again.
            empty => &*empty.insert(
                File::open("/proc/thread-self/ns/net")
                    .map_err(|e| failed(("open the thread's own namespace", e)))?,
            ),
        };
        setns(netns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| failed(("setns", std::io::Error::from(e))))?;
        let opened = if enable_ipv6 {
            enable_ipv6_here()
        } else {
            Ok(())
        }
        .and_then(|()| Socket::new(NETLINK_ROUTE).map_err(|e| ("open a netlink socket", e)))
        // SAFETY: `into_raw_fd` hands over sole ownership of a valid, open descriptor.
        .map(|socket| unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) });
        if let Err(e) = setns(home, CloneFlags::CLONE_NEWNET) {
            // Every later socket and /proc/sys/net write of this thread would act on the pod.
            tracing::error!(error = %e, netns = path, "cannot return to the daemon's network namespace; aborting");
            std::process::abort();
        }
        opened.map_err(failed)
    })
}

thread_local! {
    /// The namespace this thread runs in (the node's), once opened.
    static HOME: std::cell::RefCell<Option<File>> = const { std::cell::RefCell::new(None) };
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
    let fd = route_socket_in(netns, path, enable_ipv6)?;
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

    /// The namespace the calling thread is in, by its inode.
    fn thread_namespace() -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/thread-self/ns/net")
            .expect("the thread's namespace")
            .ino()
    }

    #[test]
    fn a_pod_socket_is_in_the_pod_and_the_thread_stays_in_its_own_namespace() {
        use futures_util::TryStreamExt;
        use rtnetlink::LinkVeth;
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root: it creates a network namespace (run the tests as root)"
        );
        // A namespace of the test's own, pinned by a descriptor: a thread unshares into it,
        // opens it and exits; the namespace ends with the descriptor.
        let pod = std::thread::spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare");
            File::open("/proc/thread-self/ns/net").expect("open the new namespace")
        })
        .join()
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let own = thread_namespace();
            let pod_handle = handle_in_with_ipv6(&pod, "the test's namespace")
                .await
                .unwrap();
            assert_eq!(
                thread_namespace(),
                own,
                "the thread is back in its namespace"
            );
            pod_handle
                .link()
                .add(LinkVeth::new("wcnsprobe0", "wcnsprobe1").build())
                .execute()
                .await
                .unwrap();
            let named = |handle: rtnetlink::Handle| async move {
                handle
                    .link()
                    .get()
                    .match_name("wcnsprobe0".to_owned())
                    .execute()
                    .try_next()
                    .await
                    .ok()
                    .flatten()
                    .is_some()
            };
            assert!(named(pod_handle.clone()).await, "made in the pod namespace");
            // A socket the thread opens now is in the thread's own namespace, without the link.
            let (connection, own_handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(connection);
            assert!(
                !named(own_handle).await,
                "the thread's own namespace has no such link"
            );
            // Again and again on the same thread, and a descriptor that is no namespace is
            // refused by setns with the thread still at home.
            for _ in 0..3 {
                handle_in(&pod, "the test's namespace").await.unwrap();
                assert_eq!(thread_namespace(), own);
            }
            let not_a_namespace = File::open("/proc/self/status").unwrap();
            let error = handle_in(&not_a_namespace, "/proc/self/status")
                .await
                .unwrap_err()
                .to_string();
            assert!(error.contains("setns"), "{error}");
            assert_eq!(thread_namespace(), own);
        });
    }
}
