//! The operations endpoint: Prometheus metrics and introspection over HTTP/1.1 on a root-only
//! Unix socket (`daemon.ops_socket`, default `ops.sock` beside the CNI socket), and `/metrics`
//! alone on a loopback TCP address when `daemon.metrics_listen` is set.
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | OpenMetrics text ([`wasmcni_telemetry::metrics`]) |
//! | `GET /v1/pool` | the pool: blocks (with their ENI and table), who holds which address, cooling and draining addresses, addresses held by pods the store does not record, ENIs |
//! | `GET /v1/plugins` | the plugins in force: digest (verified again), world, imports, grants, limits, failure policy |
//! | `GET /v1/config` | the effective configuration |
//! | `GET /v1/audit?n=N` | the last N (default 50, at most 1000) audit-log entries |
//!
//! Everything is read-only; nothing here changes the node.

use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, UnixListener};

use super::Handler;
use wasmcni_datapath::Datapath;
use wasmcni_telemetry::metrics::Metrics;

/// Largest tail of the audit log read for `/v1/audit`.
const AUDIT_TAIL_BYTES: u64 = 1 << 20;

/// Connections served at once, per listener; more are closed at once. A client that opens many
/// and sends nothing cannot take the daemon's memory or its file descriptors.
pub const MAX_OPS_CONNECTIONS: usize = 64;

/// Time a client gets to send a request's headers.
pub const OPS_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest a connection lives (one request: keep-alive is off), slow readers included.
pub const OPS_CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Which requests a listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Everything (the root-only Unix socket).
    All,
    /// `/metrics` only (the loopback TCP listener).
    MetricsOnly,
}

/// Serves the Unix socket (and the TCP listener, if any) until the task is aborted.
pub async fn serve<D: Datapath>(
    handler: Arc<Handler<D>>,
    unix: UnixListener,
    tcp: Option<TcpListener>,
) {
    if let Some(tcp) = tcp {
        let handler = handler.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_OPS_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                match tcp.accept().await {
                    Ok((stream, _)) => spawn_connection(
                        handler.clone(),
                        &slots,
                        TokioIo::new(stream),
                        Scope::MetricsOnly,
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_OPS_CONNECTIONS));
    loop {
        match unix.accept().await {
            Ok((stream, _)) => {
                spawn_connection(handler.clone(), &slots, TokioIo::new(stream), Scope::All)
            }
            Err(e) => {
                tracing::warn!(error = %e, "ops accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one connection: one request (no keep-alive), headers within
/// [`OPS_HEADER_TIMEOUT`], the whole exchange within [`OPS_CONNECTION_TIMEOUT`]; closed at once
/// when [`MAX_OPS_CONNECTIONS`] are already open.
fn spawn_connection<D, S>(
    handler: Arc<Handler<D>>,
    slots: &Arc<tokio::sync::Semaphore>,
    io: TokioIo<S>,
    scope: Scope,
) where
    D: Datapath,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Ok(slot) = slots.clone().try_acquire_owned() else {
        tracing::debug!("ops connection refused: {MAX_OPS_CONNECTIONS} already open");
        return;
    };
    tokio::spawn(async move {
        let _slot = slot;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(answer(&handler, &request, scope).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(OPS_HEADER_TIMEOUT)
            .keep_alive(false)
            .serve_connection(io, service);
        match tokio::time::timeout(OPS_CONNECTION_TIMEOUT, connection).await {
            Ok(Err(e)) => tracing::debug!(error = %e, "ops connection ended"),
            Err(_) => tracing::debug!("ops connection closed after {OPS_CONNECTION_TIMEOUT:?}"),
            Ok(Ok(())) => {}
        }
    });
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn json_reply(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let body =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    reply(status, "application/json", body + "\n")
}

async fn answer<D: Datapath>(
    handler: &Handler<D>,
    request: &Request<Incoming>,
    scope: Scope,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return json_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": format!("{} {}: only GET is served", request.method(), request.uri().path())}),
        );
    }
    let path = request.uri().path();
    match (path, scope) {
        ("/metrics", _) => {
            handler.update_pool_gauges();
            reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                Metrics::global().encode(),
            )
        }
        ("/v1/pool", Scope::All) => json_reply(StatusCode::OK, &pool(handler)),
        ("/v1/plugins", Scope::All) => json_reply(StatusCode::OK, &plugins(handler).await),
        ("/v1/config", Scope::All) => json_reply(
            StatusCode::OK,
            &serde_json::to_value(&handler.config)
                .unwrap_or_else(|e| json!({"error": e.to_string()})),
        ),
        ("/v1/audit", Scope::All) => {
            let n = request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("n=")))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(50)
                .clamp(1, 1000);
            json_reply(StatusCode::OK, &audit_tail(handler, n))
        }
        _ => json_reply(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no {path} here; try /metrics, /v1/pool, /v1/plugins, /v1/config, /v1/audit")}),
        ),
    }
}

fn pool<D: Datapath>(handler: &Handler<D>) -> Value {
    let snapshot = handler.pool_snapshot();
    let allocations: Vec<Value> = handler
        .store()
        .allocations()
        .map(|a| {
            json!({
                "ip": a.ip,
                "containerId": a.key.container_id,
                "ifname": a.key.ifname,
                "pod": a.pod.as_ref().map(|p| format!("{}/{}", p.namespace, p.name)),
                "hostVeth": a.host_veth,
                "routeTable": a.route_table,
                "egressV4": a.egress_v4,
                "ipv6": a.ipv6,
                "state": format!("{:?}", a.state).to_lowercase(),
                "network": a.network,
            })
        })
        .collect();
    let blocks: Vec<Value> = snapshot
        .inventory
        .blocks
        .iter()
        .map(|b| {
            json!({
                "cidr": b.cidr.to_string(),
                "kind": b.kind,
                "eni": b.eni_id,
                "routeTable": b.route_table,
            })
        })
        .chain(snapshot.inventory.ipv6.iter().map(|b| {
            json!({
                "cidr": b.cidr.to_string(),
                "kind": "ipv6-prefix",
                "eni": b.eni_id,
                "routeTable": null,
            })
        }))
        .collect();
    // One count of each family (the IPv4 blocks are walked once).
    let (free_v4, free_v6) = handler.free_by_family();
    json!({
        "provider": handler.provider.name(),
        "podMtu": handler.pod_mtu,
        "node": snapshot.node,
        "enis": snapshot.enis,
        "blocks": blocks,
        "excluded": snapshot.inventory.excluded,
        "allocations": allocations,
        "cooling": handler.cooling_now(),
        "draining": handler.draining_detail(),
        "heldOutsideStore": handler.foreign_now(),
        "failures": snapshot.failures,
        "free": free_v4.saturating_add(free_v6),
        "freeV4": free_v4,
        "freeV6": free_v6,
    })
}

async fn plugins<D: Datapath>(handler: &Handler<D>) -> Value {
    let set = handler.plugins();
    let specs: Vec<wasmcni_core::PluginSpec> = set
        .allocator
        .iter()
        .chain(set.tagger.iter())
        .chain(set.policies.iter())
        .map(|p| p.spec().clone())
        .collect();
    let runtime = handler.runtime.clone();
    // Re-reads and re-verifies every file (off the async workers).
    let inspected = tokio::task::spawn_blocking(move || {
        specs.iter().map(|s| runtime.inspect(s)).collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    json!({
        "generation": set.generation,
        "allocator": set.allocator.as_ref().map(|p| p.name()),
        "tagger": set.tagger.as_ref().map(|p| p.name()),
        "policies": set.policies.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "plugins": inspected,
    })
}

/// The last `n` entries of the audit log, oldest first.
fn audit_tail<D: Datapath>(handler: &Handler<D>, n: usize) -> Value {
    let path = handler.config.daemon.state_dir.join("plugin-audit.log");
    match read_tail(&path, AUDIT_TAIL_BYTES) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
            let entries: Vec<Value> = lines[lines.len().saturating_sub(n)..]
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            json!({ "entries": entries })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({ "entries": [] }),
        Err(e) => json!({ "error": format!("{}: {e}", path.display()) }),
    }
}

/// The whole lines among the last `max` bytes of `path`. A tail that starts inside a line (and
/// maybe inside a character) starts at the next whole line; bytes that are not UTF-8 are
/// replaced rather than failing the read.
fn read_tail(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    // One byte before the tail, to see whether the tail starts a line.
    let start = len.saturating_sub(max.saturating_add(1));
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    if start > 0 || len > max {
        let next_line = bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..next_line);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::read_tail;

    #[test]
    fn a_tail_starting_inside_a_character_yields_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin-audit.log");
        let lines = ["{\"a\":\"ééé\"}", "{\"b\":\"€€€\"}", "{\"c\":1}"];
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let total = std::fs::metadata(&path).unwrap().len();
        // Every cut, including those inside a multi-byte character, gives whole lines only.
        for max in 1..=total {
            let tail = read_tail(&path, max).unwrap();
            for line in tail.lines() {
                assert!(lines.contains(&line), "max {max}: {line:?}");
            }
        }
        assert_eq!(read_tail(&path, total).unwrap().lines().count(), 3);
        // A tail that starts exactly at a line keeps that line.
        let last_two = (lines[1].len() + lines[2].len() + 2) as u64;
        assert_eq!(read_tail(&path, last_two).unwrap().lines().count(), 2);
    }
}
