//! Real packets between namespaces: ping and a TCP echo.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::netns::NetNs;

/// Sends `count` ICMP echoes from inside `from` to `to`; true when all were answered.
pub fn ping(from: &NetNs, to: &str) -> bool {
    from.exec("ping", &["-c", "1", "-W", "2", "-q", to])
        .status
        .success()
}

/// What [`EchoServer`] answers when started with this reply: the connection's source address
/// as the server saw it (after any NAT on the way).
pub const PEER_ADDRESS: &str = "{peer}";

/// A TCP server inside a namespace that answers one line per connection with `reply`
/// ([`PEER_ADDRESS`]: the client's address as seen by the server).
pub struct EchoServer {
    handle: Option<std::thread::JoinHandle<()>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl EchoServer {
    /// Listens on `addr` inside `ns`; every connection gets `reply` followed by a newline.
    pub fn start(ns: &NetNs, addr: SocketAddr, reply: &str) -> EchoServer {
        Self::start_in(std::path::Path::new(&ns.path()), addr, reply)
    }

    /// [`EchoServer::start`] inside the network namespace file `netns` (e.g. a pod's).
    pub fn start_in(netns: &std::path::Path, addr: SocketAddr, reply: &str) -> EchoServer {
        let listener = crate::netns::run_in(netns, move || {
            TcpListener::bind(addr).expect("bind echo server")
        });
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reply = format!("{reply}\n");
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = stream.set_nonblocking(false);
                        let line = reply.replace(PEER_ADDRESS, &peer.ip().to_string());
                        let _ = stream.write_all(line.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        EchoServer {
            handle: Some(handle),
            stop,
            addr,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Connects from inside `ns` to `addr` and returns the line the server sent, if any.
pub fn tcp_fetch(ns: &NetNs, addr: SocketAddr) -> Option<String> {
    ns.run(move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text.trim().to_owned())
    })
}
