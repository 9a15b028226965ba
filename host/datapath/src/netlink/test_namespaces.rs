//! Network namespaces of a test's own, for the root tests of the netlink data path: nothing
//! they do touches the machine's namespaces, and each goes when its test ends, pass or fail.

use super::*;

/// A thread in a network namespace of its own, parked until dropped; its namespace is
/// reachable by path while it lives.
pub(super) struct PrivateNamespace {
    pub(super) path: String,
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PrivateNamespace {
    pub(super) fn new() -> PrivateNamespace {
        assert_root();
        let (ready, path) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            let tid = nix::unistd::gettid();
            ready
                .send(format!("/proc/{}/task/{tid}/ns/net", std::process::id()))
                .unwrap();
            let _ = stopped.recv();
        });
        PrivateNamespace {
            path: path.recv().unwrap(),
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PrivateNamespace {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `body` on a thread of its own in a namespace of the test's own (the node), on a
/// runtime of its own, so nothing touches the machine's namespaces.
pub(super) fn in_private_node<F, T>(body: impl FnOnce() -> F + Send + 'static) -> T
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    assert_root();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body())
    })
    .join()
    .unwrap()
}

pub(super) fn pod_attachment(host_veth: &str, ip: &str, netns: &str) -> PodAttachment {
    PodAttachment {
        host: HostSide {
            host_veth: host_veth.into(),
            ip: ip.parse().unwrap(),
            ipv6: None,
            route_table: None,
            pod_rule: None,
        },
        netns: netns.to_owned(),
        pod_ifname: "eth0".into(),
        mtu: 1500,
        pod_mac: None,
        routes: PodRoutes::default(),
        egress_v4: None,
    }
}

fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: it makes network namespaces, veths, routes and rules (run the tests as root)"
    );
}
