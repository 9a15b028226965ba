//! The warm-pool reconciler of the EC2 provider: asks the allocator plugin to `plan` the pool
//! and carries out the ENI requests it queued, one at a time, within its grant.
//!
//! It runs when woken (an ADD found the pool empty or took an address, a DEL freed one) and
//! every `reconcile_interval_ms` otherwise. Growing is simple: EC2 adds addresses, then the
//! pool serves them. Shrinking is where a pod could lose: addresses leave the pool under the
//! allocation lock after a check that no pod holds them and none is cooling, so no ADD can
//! choose one between the check and the EC2 call; if EC2 refuses, they come back.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use ipnet::Ipv4Net;

use super::plugins::{now_unix_ms, PluginSet};
use super::Handler;
use wasmcni_config::Ec2ProviderConfig;
use wasmcni_core::eni::{Ec2Error, EniProvider, NodeEni};
use wasmcni_core::ipam::IpFamily;
use wasmcni_core::{EniRequest, EniTagRequest, FailureMode, Hook, RequestFailure};
use wasmcni_datapath::{parse_mac, Datapath, EniLink};
use wasmcni_runtime::{AuditEntry, Plugin};

/// Passes of plan-then-execute in a row while each made progress (a grown ENI may need
/// addresses next).
const ROUNDS_PER_PASS: usize = 4;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Requests carried out.
    pub executed: usize,
    /// Requests that failed (the first failure ends the round).
    pub failed: usize,
    /// Whether the plan asked for nothing at the end (the pool is where the plugin wants it).
    pub settled: bool,
}

/// Why the node could not be prepared for the EC2 provider.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The primary ENI, its MAC or its link on the node is missing.
    #[error("{0}")]
    PrimaryEni(String),
    /// A data path step failed (a sysctl, a link lookup, the SNAT rules, the connmark rule).
    #[error(transparent)]
    Datapath(#[from] wasmcni_datapath::DatapathError),
}

/// Sets up what the node needs before it serves: every secondary ENI's link and routing
/// table (idempotent; after a reboot they are gone, after a daemon restart they are there).
pub async fn prepare<D: Datapath>(
    handler: &Handler<D>,
    provider: &dyn EniProvider,
) -> Result<(), PrepareError> {
    if provider.family() == IpFamily::Ipv6 {
        // IPv6 prefix mode: no secondary ENIs, no SNAT (pods use their global address).
        let primary_link = primary_link(handler, provider).await?;
        handler.datapath.prepare_ipv6(Some(&primary_link)).await?;
        handler.refresh_inventory();
        warn_outside_pool(handler);
        return Ok(());
    }
    if provider.family() == IpFamily::Dual {
        // Dual stack: the IPv4 pool as in IPv4 mode, and the primary ENI's /80 for the /128s
        // (which need the node's IPv6 forwarding; they are not translated).
        let primary_link = primary_link(handler, provider).await?;
        handler.datapath.prepare_ipv6(Some(&primary_link)).await?;
    }
    link_unlinked(handler, provider).await;
    warn_outside_pool(handler);
    prepare_snat(handler, provider).await
}

fn warn_outside_pool<D: Datapath>(handler: &Handler<D>) {
    for (key, ip) in handler.allocations_outside_pool() {
        tracing::warn!(container_id = %key.container_id, ifname = %key.ifname, %ip, "a pod's address is no longer on any of the node's ENIs in EC2; its record is kept (the pod exists until its DEL), but its traffic may not route");
    }
}

/// The name of the primary ENI's link on the node (`eth0` or `ens5`, by its MAC).
async fn primary_link<D: Datapath>(
    handler: &Handler<D>,
    provider: &dyn EniProvider,
) -> Result<String, PrepareError> {
    let primary = provider
        .enis()
        .into_iter()
        .find(NodeEni::primary)
        .ok_or_else(|| PrepareError::PrimaryEni("the node has no primary ENI".into()))?;
    let mac = parse_mac(&primary.eni.mac).ok_or_else(|| {
        PrepareError::PrimaryEni(format!("the primary ENI has MAC {:?}", primary.eni.mac))
    })?;
    handler.datapath.link_with_mac(mac).await?.ok_or_else(|| {
        PrepareError::PrimaryEni(format!(
            "no link has the primary ENI's MAC {}",
            primary.eni.mac
        ))
    })
}

/// IPv6 prefix mode's background pass: nothing to plan (the /80 is never released, as with
/// VPC CNI), so it only re-reads the node's ENIs every refresh interval and reports pods whose
/// address left the prefix behind the daemon's back.
pub async fn run_ipv6<D: Datapath>(handler: Arc<Handler<D>>, provider: Arc<dyn EniProvider>) {
    loop {
        tokio::time::sleep(REFRESH_INTERVAL).await;
        handler.refresh_node_held().await;
        if let Err(e) = provider.refresh().await {
            tracing::warn!(error = %e, "re-reading the node's ENIs failed");
            continue;
        }
        keep_ipv6_prefix(provider.as_ref()).await;
        handler.refresh_inventory();
        warn_outside_pool(&handler);
    }
}

/// Delegates a new IPv6 prefix to the primary ENI if it lost its own (after a refresh).
async fn keep_ipv6_prefix(provider: &dyn EniProvider) {
    if provider.has_ipv6_prefix() {
        return;
    }
    // Unassigned behind the daemon's back: pods on it lost their routing anyway; new pods
    // need a prefix again.
    match provider.ensure_ipv6_prefix().await {
        Ok(prefix) => {
            tracing::warn!(%prefix, "the primary ENI had lost its IPv6 prefix; delegated a new one")
        }
        Err(e) => {
            tracing::error!(error = %e, "the primary ENI has no IPv6 prefix and delegating one failed; ADDs fail until it succeeds")
        }
    }
}

/// SNAT and connmark for traffic leaving the VPC (VPC CNI's rules under wasmcni's names), and
/// the `fwmark` rule that sends marked traffic out through the primary ENI.
async fn prepare_snat<D: Datapath>(
    handler: &Handler<D>,
    provider: &dyn EniProvider,
) -> Result<(), PrepareError> {
    use wasmcni_config::{SnatBackend, SnatRandomize};
    use wasmcni_datapath::snat;
    let settings = &handler.config.ec2().snat;
    let primary_link = primary_link(handler, provider).await?;
    let primary_ip = provider
        .primary_ip()
        .ok_or_else(|| PrepareError::PrimaryEni("the node has no primary ENI".into()))?;
    let config = snat::SnatRules {
        primary_ip,
        primary_link,
        veth_prefix: handler.config.datapath.veth_prefix.clone(),
        vpc_cidrs: provider.vpc_cidrs(),
        exclude_cidrs: settings.exclude_cidrs.clone(),
        external_snat: settings.external,
        randomize: match settings.randomize {
            SnatRandomize::Prng => snat::Randomize::Fully,
            SnatRandomize::Hashrandom => snat::Randomize::Hash,
            SnatRandomize::None => snat::Randomize::None,
        },
        connmark: settings.connmark.unwrap_or(snat::DEFAULT_CONNMARK),
    };
    let backend = match settings.backend {
        SnatBackend::Iptables => Some(snat::Backend::Iptables),
        SnatBackend::Nftables => Some(snat::Backend::Nftables),
        SnatBackend::Auto => None,
    };
    let backend = handler.datapath.apply_snat(&config, backend).await?;
    if !config.external_snat {
        handler
            .datapath
            .ensure_connmark_rule(config.connmark)
            .await?;
    }
    tracing::info!(%backend, external = config.external_snat, primary_ip = %config.primary_ip, link = %config.primary_link, "SNAT rules in place");
    Ok(())
}

/// Sets up the link and table of every managed secondary ENI that has none yet (at start, and
/// for ENIs a refresh found), then lets their addresses into the pool. One that fails stays
/// out of the pool and is retried at the next refresh.
async fn link_unlinked<D: Datapath>(handler: &Handler<D>, provider: &dyn EniProvider) {
    for eni in provider.unlinked() {
        let linked = match eni_link(handler, &eni) {
            Ok(link) => handler
                .datapath
                .setup_eni(&link)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match linked {
            Ok(name) => {
                provider.mark_linked(&eni.eni.id);
                tracing::info!(eni = %eni.eni.id, device = eni.device, link = %name, "ENI link and routing table set up");
            }
            Err(e) => {
                tracing::error!(eni = %eni.eni.id, device = eni.device, error = %e, "setting up an ENI's link failed; its addresses stay out of the pool until a retry succeeds");
            }
        }
    }
    handler.refresh_inventory();
}

fn eni_link<D: Datapath>(handler: &Handler<D>, eni: &NodeEni) -> Result<EniLink, String> {
    let table = eni
        .route_table()
        .ok_or_else(|| format!("{} is the primary ENI", eni.eni.id))?;
    Ok(EniLink {
        mac: parse_mac(&eni.eni.mac)
            .ok_or_else(|| format!("{} has MAC {:?}", eni.eni.id, eni.eni.mac))?,
        address: eni.eni.primary_ip,
        table,
        gateway: eni.gateway(),
        mtu: handler.pod_mtu,
        wait: Duration::from_millis(handler.config.ec2().link_wait_ms),
    })
}

/// How often the node's ENIs are re-read from EC2 (changes made outside the daemon).
const REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Longest pause after failed passes.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs passes until the task is aborted: when woken, and every interval. After a pass whose
/// requests failed it backs off (1 s, doubling to 30 s) so a full subnet or a failing EC2
/// does not turn waiting ADDs into a stream of calls; a successful pass resets it.
pub async fn run<D: Datapath>(handler: Arc<Handler<D>>, provider: Arc<dyn EniProvider>) {
    let interval = Duration::from_millis(handler.config.ec2().reconcile_interval_ms);
    let mut refresh = tokio::time::interval(REFRESH_INTERVAL);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await; // the first tick is immediate; start just read everything
    let mut backoff = Duration::ZERO;
    loop {
        let report = pass(&handler, provider.as_ref()).await;
        if report.executed > 0 || report.failed > 0 {
            tracing::info!(?report, "pool reconciled");
        }
        let result = if report.failed > 0 {
            "failed"
        } else if report.executed > 0 {
            "changed"
        } else {
            "settled"
        };
        wasmcni_telemetry::metrics::Metrics::global()
            .reconciler_passes
            .get_or_create(&wasmcni_telemetry::metrics::PassLabel {
                result: result.to_owned(),
            })
            .inc();
        backoff = if report.failed > 0 {
            (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF)
        } else {
            Duration::ZERO
        };
        if !backoff.is_zero() {
            tracing::debug!(?backoff, "backing off after a failed pass");
            tokio::time::sleep(backoff).await;
        }
        tokio::select! {
            () = handler.wake_warm_pool.notified() => {}
            () = tokio::time::sleep(interval) => {}
            _ = refresh.tick() => {
                match provider.refresh().await {
                    Ok(()) => {
                        handler.refresh_node_held().await;
                        if provider.family() == IpFamily::Dual {
                            keep_ipv6_prefix(provider.as_ref()).await;
                        }
                        link_unlinked(&handler, provider.as_ref()).await;
                        let fixed = provider.repair_delete_on_termination().await;
                        if fixed > 0 {
                            tracing::info!(fixed, "DeleteOnTermination set on ENIs that lacked it");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "re-reading the node's ENIs failed"),
                }
            }
        }
    }
}

/// Runs the leaked-ENI collector every `leaked_eni_interval_s` until aborted.
pub async fn collect_leaks(provider: Arc<dyn EniProvider>, settings: Ec2ProviderConfig) {
    let mut ticks = tokio::time::interval(Duration::from_secs(settings.leaked_eni_interval_s));
    loop {
        ticks.tick().await;
        match provider
            .delete_unattached(false, Duration::from_secs(settings.leaked_eni_min_age_s))
            .await
        {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "leaked-ENI collector deleted ENIs"),
            Err(e) => tracing::warn!(error = %e, "leaked-ENI collector failed"),
        }
    }
}

/// One pass: plan, execute, and again while it makes progress.
pub async fn pass<D: Datapath>(handler: &Handler<D>, provider: &dyn EniProvider) -> PassReport {
    let mut report = PassReport::default();
    for _ in 0..ROUNDS_PER_PASS {
        let plugins = handler.plugins();
        let Some(allocator) = plugins.allocator.clone() else {
            report.settled = true;
            break;
        };
        let requests = match plan(handler, &allocator).await {
            Ok(requests) => requests,
            Err(e) => {
                tracing::warn!(plugin = %allocator.name(), error = %e, "plan failed; the pool stays as it is");
                handler.set_grow_error(Some(format!("plan of {}: {e}", allocator.name())));
                report.failed += 1;
                break;
            }
        };
        if requests.is_empty() {
            report.settled = true;
            break;
        }
        let mut round_failed = false;
        for request in requests {
            let started = Instant::now();
            let outcome = execute(handler, provider, &plugins, &request).await;
            handler.audit_log.record(&AuditEntry {
                ts_ms: now_unix_ms(),
                plugin: allocator.name(),
                call: "eni-ops",
                args: serde_json::to_value(&request).unwrap_or_default(),
                outcome: if outcome.is_ok() { "ok" } else { "error" },
                result: match &outcome {
                    Ok(note) => note.clone(),
                    Err(e) => e.message.clone(),
                },
                duration_us: started.elapsed().as_micros() as u64,
            });
            let grows = matches!(
                request,
                EniRequest::CreateEni { .. }
                    | EniRequest::AssignIps { .. }
                    | EniRequest::AssignPrefixes { .. }
            );
            match outcome {
                Ok(note) => {
                    report.executed += 1;
                    if grows {
                        handler.set_grow_error(None);
                    }
                    tracing::info!(plugin = %allocator.name(), ?request, %note, "ENI request carried out");
                }
                Err(e) => {
                    report.failed += 1;
                    round_failed = true;
                    if grows {
                        handler.set_grow_error(Some(e.message.clone()));
                    }
                    tracing::warn!(plugin = %allocator.name(), ?request, code = %e.code, error = %e.message, "ENI request failed");
                    handler.record_request_failure(RequestFailure {
                        request: request.kind(),
                        eni_id: request.eni_id().map(str::to_owned),
                        subnet_id: request.subnet_id().map(str::to_owned),
                        code: e.code,
                        message: e.message,
                        age_ms: 0,
                    });
                    break;
                }
            }
        }
        if round_failed {
            break;
        }
    }
    let minimum = u64::from(handler.config.ec2().ready_min_free);
    // The pool planned is the IPv4 one (a dual-stack node's /80 alone readies nothing).
    if report.settled || handler.free_by_family().0 >= minimum {
        handler.set_ready();
    }
    report
}

/// Asks the allocator's `plan` with a snapshot whose subnets are those its grant allows.
async fn plan<D: Datapath>(
    handler: &Handler<D>,
    allocator: &Arc<Plugin>,
) -> Result<Vec<EniRequest>, String> {
    let mut snapshot = handler.pool_snapshot();
    let scope = &allocator.spec().grants.eni_ops;
    let node_subnet = snapshot
        .enis
        .iter()
        .find(|e| e.primary)
        .map(|e| e.subnet_id.clone());
    snapshot.subnets.retain(|s| {
        scope.subnets.contains(&s.id)
            || (scope.subnets.contains("node") && node_subnet.as_deref() == Some(s.id.as_str()))
    });
    let started = Instant::now();
    let plugin = allocator.clone();
    let answer = tokio::task::spawn_blocking(move || plugin.plan(snapshot))
        .await
        .map_err(|e| format!("plan task failed: {e}"))?;
    handler.audit_log.record(&AuditEntry {
        ts_ms: now_unix_ms(),
        plugin: allocator.name(),
        call: "plan",
        args: serde_json::Value::Null,
        outcome: if answer.is_ok() { "ok" } else { "error" },
        result: match &answer {
            Ok(requests) => format!("{} request(s)", requests.len()),
            Err(e) => e.to_string(),
        },
        duration_us: started.elapsed().as_micros() as u64,
    });
    answer.map_err(|e| e.to_string())
}

/// Why a request failed: EC2's error code when EC2 refused it, `HostRefused` otherwise.
#[derive(Debug, Clone)]
struct Failure {
    code: String,
    message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            code: "HostRefused".to_owned(),
            message,
        }
    }
}

impl From<Ec2Error> for Failure {
    fn from(e: Ec2Error) -> Failure {
        let code = match &e {
            Ec2Error::Api { code, .. } => code.clone(),
            _ => "Unavailable".to_owned(),
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

/// Carries out one request; the answer is a note for the audit log.
async fn execute<D: Datapath>(
    handler: &Handler<D>,
    provider: &dyn EniProvider,
    plugins: &PluginSet,
    request: &EniRequest,
) -> Result<String, Failure> {
    match request {
        EniRequest::CreateEni {
            subnet_id,
            security_groups,
            secondary_ips,
            prefixes,
        } => {
            let tags = eni_tags(handler, provider, plugins, subnet_id).await?;
            let (eni, fell_back) = provider
                .create_and_attach(subnet_id, security_groups, *secondary_ips, *prefixes, tags)
                .await?;
            let link = eni_link(handler, &eni)?;
            match handler.datapath.setup_eni(&link).await {
                Ok(name) => {
                    let note = format!(
                        "{} attached at device {} as {name}, table {}{}",
                        eni.eni.id,
                        eni.device,
                        link.table,
                        fell_back.map_or_else(String::new, |f| format!("; {f}"))
                    );
                    provider.adopt(eni);
                    handler.refresh_inventory();
                    Ok(note)
                }
                Err(e) => {
                    // An ENI whose link never came up would give pods addresses that route
                    // nowhere: give it back.
                    let _ = handler.datapath.teardown_eni(link.table).await;
                    if let Err(cleanup) = provider.detach_and_delete(&eni).await {
                        tracing::error!(eni = %eni.eni.id, error = %cleanup, "rolling back an ENI without a link failed; the leaked-ENI collector will delete it once detached");
                    }
                    Err(format!("{} attached but its link failed: {e}", eni.eni.id).into())
                }
            }
        }
        EniRequest::AssignIps { eni_id, count } => {
            grow(handler, provider, eni_id, *count, false).await
        }
        EniRequest::AssignPrefixes { eni_id, count } => {
            grow(handler, provider, eni_id, *count, true).await
        }
        EniRequest::ReleaseIps { eni_id, addresses } => {
            release(handler, provider, eni_id, addresses, &[]).await
        }
        EniRequest::ReleasePrefixes { eni_id, prefixes } => {
            release(handler, provider, eni_id, &[], prefixes).await
        }
        EniRequest::DeleteEni { eni_id } => delete_eni(handler, provider, eni_id).await,
    }
}

async fn grow<D: Datapath>(
    handler: &Handler<D>,
    provider: &dyn EniProvider,
    eni_id: &str,
    count: u32,
    prefixes: bool,
) -> Result<String, Failure> {
    let added = provider.assign(eni_id, count, prefixes).await?;
    handler.refresh_inventory();
    Ok(format!(
        "{eni_id}: +{} IP(s) +{} prefix(es){}",
        added.ips.len(),
        added.prefixes.len(),
        added
            .fell_back
            .map_or_else(String::new, |f| format!("; {f}"))
    ))
}

/// The ENI's tags: the daemon's ownership tags and the tagger's (whose failure policy
/// decides whether a failing tagger stops the creation).
async fn eni_tags<D: Datapath>(
    handler: &Handler<D>,
    provider: &dyn EniProvider,
    plugins: &PluginSet,
    subnet_id: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut tags = provider.ownership_tags();
    let Some(tagger) = plugins.tagger.clone() else {
        return Ok(tags);
    };
    let identity = provider.identity();
    let request = EniTagRequest {
        instance_id: identity.instance_id.clone(),
        instance_type: identity.instance_type.clone(),
        availability_zone: identity.availability_zone.clone(),
        subnet_id: subnet_id.to_owned(),
        cluster_name: handler.config.cluster.name.clone(),
    };
    let own = tags.len();
    let started = Instant::now();
    let plugin = tagger.clone();
    let answer = tokio::task::spawn_blocking(move || plugin.tags(&request, own))
        .await
        .map_err(|e| format!("tagger task failed: {e}"))?;
    handler.audit_log.record(&AuditEntry {
        ts_ms: now_unix_ms(),
        plugin: tagger.name(),
        call: "tags",
        args: serde_json::json!({ "subnet_id": subnet_id }),
        outcome: if answer.is_ok() { "ok" } else { "error" },
        result: match &answer {
            Ok(t) => format!("{} tag(s)", t.len()),
            Err(e) => e.to_string(),
        },
        duration_us: started.elapsed().as_micros() as u64,
    });
    match answer {
        Ok(theirs) => {
            tags.extend(theirs);
            Ok(tags)
        }
        Err(e) => match tagger.spec().on_failure.of(Hook::Tags) {
            FailureMode::Open => {
                tracing::warn!(plugin = %tagger.name(), error = %e, "tags fails open: the ENI gets the daemon's tags only");
                Ok(tags)
            }
            FailureMode::Closed => Err(format!("no ENI created: {e}")),
        },
    }
}

/// Gives back addresses and prefixes no pod holds and none cooling; the rest stay.
async fn release<D: Datapath>(
    handler: &Handler<D>,
    provider: &dyn EniProvider,
    eni_id: &str,
    ips: &[Ipv4Addr],
    prefixes: &[Ipv4Net],
) -> Result<String, Failure> {
    let lock = handler.allocation_lock().await;
    let Some(eni) = provider.eni(eni_id) else {
        return Err(format!("{eni_id} is not attached to the node").into());
    };
    let ips: Vec<Ipv4Addr> = ips
        .iter()
        .copied()
        .filter(|ip| eni.eni.secondary_ips.contains(ip) && !handler.is_taken(*ip))
        .collect();
    let prefixes: Vec<Ipv4Net> = prefixes
        .iter()
        .copied()
        .filter(|p| eni.eni.prefixes.contains(p) && !addresses(*p).any(|ip| handler.is_taken(ip)))
        .collect();
    if ips.is_empty() && prefixes.is_empty() {
        return Ok(format!(
            "{eni_id}: nothing left to release (taken since the plan)"
        ));
    }
    provider.withdraw(eni_id, &ips, &prefixes);
    handler.refresh_inventory();
    drop(lock);
    match provider.unassign(eni_id, &ips, &prefixes).await {
        Ok(()) => Ok(format!(
            "{eni_id}: -{} IP(s) -{} prefix(es)",
            ips.len(),
            prefixes.len()
        )),
        Err(e) => {
            // Only what EC2 still lists comes back: a lost reply may hide a success.
            let (ips, prefixes) = provider.still_assigned(eni_id, &ips, &prefixes).await;
            provider.restore(eni_id, &ips, &prefixes);
            handler.refresh_inventory();
            Err(e.into())
        }
    }
}

/// Detaches and deletes a secondary ENI no pod uses.
async fn delete_eni<D: Datapath>(
    handler: &Handler<D>,
    provider: &dyn EniProvider,
    eni_id: &str,
) -> Result<String, Failure> {
    let lock = handler.allocation_lock().await;
    let Some(eni) = provider.eni(eni_id) else {
        return Err(format!("{eni_id} is not attached to the node").into());
    };
    if eni.primary() {
        return Err(format!("{eni_id} is the primary ENI").into());
    }
    let busy = eni
        .blocks()
        .flat_map(|b| addresses(b.cidr))
        .find(|ip| handler.is_taken(*ip));
    if let Some(ip) = busy {
        return Ok(format!(
            "{eni_id} kept: {ip} is held, cooling or draining (taken since the plan)"
        ));
    }
    if handler.is_assigning_to(eni_id) {
        return Ok(format!(
            "{eni_id} kept: a requested address is being assigned to it"
        ));
    }
    // A pod routed through its table whose address left the pool (a refresh after an
    // outside change) still uses it.
    if let Some(ip) = handler.address_routed_through(eni.route_table()) {
        return Ok(format!(
            "{eni_id} kept: pod {ip} is routed through its table"
        ));
    }
    provider.forget(eni_id);
    handler.refresh_inventory();
    drop(lock);
    let table = eni.route_table().unwrap_or_default();
    if let Err(e) = handler.datapath.teardown_eni(table).await {
        tracing::warn!(eni = %eni_id, error = %e, "emptying the ENI's routing table failed");
    }
    match provider.detach_and_delete(&eni).await {
        Ok(()) => Ok(format!("{eni_id} detached and deleted")),
        Err(e) => {
            // Still attached? Put it back as it was; otherwise the collector finishes it.
            if matches!(provider.refresh().await, Ok(())) {
                if let Some(back) = provider.eni(eni_id) {
                    if let Ok(link) = eni_link(handler, &back) {
                        let _ = handler.datapath.setup_eni(&link).await;
                    }
                }
                handler.refresh_inventory();
            }
            Err(e.into())
        }
    }
}

/// Every address of a block (a /28 prefix is all pod addresses, a /32 is one).
fn addresses(net: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    (u32::from(net.network())..=u32::from(net.broadcast())).map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests;
