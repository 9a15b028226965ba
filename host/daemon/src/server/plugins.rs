//! The plugins a daemon runs — allocator, tagger, policy hooks — as one swappable set, and the
//! policy-hook pass of ADD, DEL and CHECK with each hook's failure policy.
//!
//! A configuration reload builds a whole new set (every digest verified, every component
//! linked) before it replaces the running one in a single pointer swap: a request runs with
//! the set it started with, and an invalid configuration never replaces a working one.

use std::sync::Arc;
use std::time::Instant;

use wasmcni_cni::error::{codes, CniError};
use wasmcni_config::ClusterConfig;
use wasmcni_core::{Attachment, FailureMode, NetlinkRequest, Verb, Verdict};
pub(crate) use wasmcni_runtime::now_unix_ms;
use wasmcni_runtime::{AuditEntry, AuditLog, Plugin, PluginError, PluginRuntime};

/// The loaded plugins of one configuration.
pub struct PluginSet {
    /// Chooses addresses; `None`: the built-in allocator.
    pub allocator: Option<Arc<Plugin>>,
    /// Tags new ENIs.
    pub tagger: Option<Arc<Plugin>>,
    /// Policy hooks, asked in order.
    pub policies: Vec<Arc<Plugin>>,
    /// Counts loads: 1 at start, +1 per applied reload.
    pub generation: u64,
}

impl PluginSet {
    /// No plugins: built-in allocator, no tagger, no hooks.
    pub fn empty() -> PluginSet {
        PluginSet {
            allocator: None,
            tagger: None,
            policies: Vec::new(),
            generation: 1,
        }
    }

    /// Loads every plugin `config` uses (digests verified, grants linked), each only with
    /// the approvals `[trust]` requires.
    pub fn load(
        runtime: &PluginRuntime,
        config: &ClusterConfig,
        generation: u64,
    ) -> Result<PluginSet, PluginError> {
        if let Some(trust) = &config.trust {
            check_approvals(runtime, trust, &used_specs(config))?;
        }
        let load = |spec: &wasmcni_core::PluginSpec| runtime.load(spec).map(Arc::new);
        Ok(PluginSet {
            allocator: config.allocator_spec().map(load).transpose()?,
            tagger: config.tagger_spec().map(load).transpose()?,
            policies: config
                .policy_specs()
                .into_iter()
                .map(load)
                .collect::<Result<_, _>>()?,
            generation,
        })
    }

    /// Makes sure the component cache holds every plugin `config` uses that comes from a
    /// registry (`oci = ...`), pulling what it lacks; logs where each came from. Before
    /// [`PluginSet::load`], which verifies the digests again and checks approvals.
    pub async fn fetch(config: &ClusterConfig) -> Result<(), PluginError> {
        let used = used_specs(config);
        // With [trust], nothing nobody approved is even pulled: some trusted approval must
        // name each digest before the node asks a registry for it.
        if let Some(trust) = config.trust.clone() {
            let pulled: Vec<wasmcni_core::PluginSpec> = used
                .iter()
                .filter(|spec| spec.origin.is_some())
                .map(|spec| (*spec).clone())
                .collect();
            if !pulled.is_empty() {
                tokio::task::spawn_blocking(move || vouch_for(&trust, &pulled))
                    .await
                    .map_err(|e| PluginError::Invalid {
                        plugin: "(registry)".into(),
                        message: format!("checking approvals before the pull failed: {e}"),
                    })??;
            }
        }
        let fetched = wasmcni_registry::ensure_cached(&used, &config.registry)
            .await
            .map_err(|e| match e {
                wasmcni_registry::RegistryError::Pull { plugin, detail } => PluginError::Invalid {
                    plugin,
                    message: detail,
                },
                other => PluginError::Invalid {
                    plugin: "(registry)".into(),
                    message: other.to_string(),
                },
            })?;
        for (plugin, how) in fetched {
            let reference = used
                .iter()
                .find(|spec| spec.name == plugin)
                .and_then(|spec| spec.origin.as_ref())
                .map(ToString::to_string)
                .unwrap_or_default();
            match how {
                wasmcni_registry::Fetched::Cached => {
                    tracing::info!(%plugin, %reference, "component from the cache")
                }
                wasmcni_registry::Fetched::Pulled { bytes, elapsed } => tracing::info!(
                    %plugin,
                    %reference,
                    bytes,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "component pulled from its registry"
                ),
            }
        }
        Ok(())
    }

    /// Removes from the component cache what no plugin entry of `config` names (beyond the
    /// few newest, for a rollback while the registry is down). After a load that succeeded.
    pub fn prune_cache(config: &ClusterConfig) {
        // Every entry's file, pulled or not: a `path` may point into the cache directory too.
        let named = config
            .plugin_specs()
            .iter()
            .map(|spec| spec.path.clone())
            .collect();
        for removed in wasmcni_registry::cache::prune(&config.component_cache_dir(), &named) {
            tracing::info!(path = %removed.display(), "pruned from the component cache");
        }
    }

    /// Names, for logs: `allocator=pack tagger=- policy=[namespace-guard]`.
    pub fn describe(&self) -> String {
        format!(
            "allocator={} tagger={} policy=[{}]",
            self.allocator.as_ref().map_or("built-in", |p| p.name()),
            self.tagger.as_ref().map_or("-", |p| p.name()),
            self.policies
                .iter()
                .map(|p| p.name().to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The plugins `config` uses: allocator, tagger, policy hooks (an entry nothing refers to is
/// neither pulled nor loaded).
fn used_specs(config: &ClusterConfig) -> Vec<&wasmcni_core::PluginSpec> {
    config
        .allocator_spec()
        .into_iter()
        .chain(config.tagger_spec())
        .chain(config.policy_specs())
        .collect()
}

/// What the policy hooks decided.
#[derive(Debug)]
pub enum PolicyOutcome {
    /// Go on, applying these datapath adjustments (ADD only).
    Allowed(Vec<NetlinkRequest>),
    /// Stop: the error to return (for DEL: after the cleanup).
    Denied(CniError),
}

/// Asks every policy hook of `set` about `attachment`, in order; the first deny wins. A hook
/// that fails (trap, limits, error) is handled by its failure policy for the verb. On DEL a
/// deny cannot stop the cleanup; it is reported only when the hook's `del` policy is closed.
pub async fn run_policies(
    set: &PluginSet,
    audit: &AuditLog,
    attachment: Attachment,
) -> PolicyOutcome {
    let mut adjustments = Vec::new();
    let attachment = Arc::new(attachment);
    for plugin in &set.policies {
        let started = Instant::now();
        let task = {
            let plugin = plugin.clone();
            let attachment = attachment.clone();
            tokio::task::spawn_blocking(move || plugin.evaluate(&attachment))
        };
        let answer = match task.await {
            Ok(answer) => answer,
            Err(e) => Err(PluginError::Trapped {
                plugin: plugin.name().to_owned(),
                call: "evaluate",
                reason: format!("the call's task failed: {e}"),
            }),
        };
        wasmcni_telemetry::metrics::Metrics::global()
            .policy_verdicts
            .get_or_create(&wasmcni_telemetry::metrics::VerdictLabel {
                plugin: plugin.name().to_owned(),
                hook: attachment.verb.hook().as_str().to_owned(),
                verdict: match &answer {
                    Ok(Verdict::Allow(_)) => "allow",
                    Ok(Verdict::Deny(_)) => "deny",
                    Err(_) => "error",
                }
                .to_owned(),
            })
            .inc();
        audit.record(&AuditEntry {
            ts_ms: now_unix_ms(),
            plugin: plugin.name(),
            call: "evaluate",
            args: serde_json::json!({
                "verb": attachment.verb,
                "pod": attachment.pod.audit_args(),
                "addresses": attachment.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "chained": attachment.chained,
            }),
            outcome: if answer.is_ok() { "ok" } else { "error" },
            result: match &answer {
                Ok(Verdict::Allow(adjust)) if adjust.is_empty() => "allow".to_owned(),
                Ok(Verdict::Allow(adjust)) => format!("allow with {adjust:?}"),
                Ok(Verdict::Deny(reason)) => format!("deny: {reason}"),
                Err(e) => e.to_string(),
            },
            duration_us: started.elapsed().as_micros() as u64,
        });
        let mode = plugin.spec().on_failure.of(attachment.verb.hook());
        let pod = attachment
            .pod
            .namespace
            .as_deref()
            .zip(attachment.pod.name.as_deref())
            .map_or_else(
                || format!("container {}", attachment.pod.container_id),
                |(ns, name)| format!("pod {ns}/{name}"),
            );
        let verb = match attachment.verb {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
        };
        match answer {
            Ok(Verdict::Allow(adjust)) => adjustments.extend(adjust),
            Ok(Verdict::Deny(reason))
                if attachment.verb != Verb::Del || mode == FailureMode::Closed =>
            {
                return PolicyOutcome::Denied(CniError::new(
                    codes::POLICY_DENIED,
                    format!(
                        "policy {} denied the {verb} of {pod}: {reason}",
                        plugin.name()
                    ),
                ));
            }
            Ok(Verdict::Deny(reason)) => {
                tracing::warn!(plugin = %plugin.name(), %pod, "policy denied a DEL (the cleanup goes on; del fails open): {reason}");
            }
            // Shutdown ended the call: not the plugin's failure, so no failure policy
            // applies; ADD and CHECK are to be tried again, a DEL's cleanup goes on.
            Err(e @ PluginError::Stopped { .. }) if attachment.verb != Verb::Del => {
                return PolicyOutcome::Denied(CniError::new(
                    codes::TRY_AGAIN_LATER,
                    format!("{e}; try the {verb} of {pod} again"),
                ));
            }
            Err(e @ PluginError::Stopped { .. }) => {
                tracing::warn!(plugin = %plugin.name(), %pod, "{e}; the DEL's cleanup goes on");
            }
            Err(e) if mode == FailureMode::Closed => {
                return PolicyOutcome::Denied(CniError::new(
                    codes::PLUGIN_FAILURE,
                    format!(
                        "{e}; the {verb} of {pod} fails closed (on_failure.{} = \"closed\")",
                        attachment.verb.hook().as_str()
                    ),
                ));
            }
            Err(e) => {
                tracing::warn!(plugin = %plugin.name(), %pod, "{e}; {verb} goes on (on_failure.{} = \"open\")", attachment.verb.hook().as_str());
            }
        }
    }
    PolicyOutcome::Allowed(adjustments)
}

/// Applies the configuration in `path` to a running daemon: the plugin sections (which
/// plugins, digests, grants, scopes, limits, failure policies, settings) take effect for
/// requests that start afterwards; allocations are untouched. Refused, with the running set
/// left in force, when the file is invalid, a plugin does not load, or a section that needs a
/// restart (`[daemon]`, `[datapath]`, `[provider]`) changed.
pub async fn reload<D: wasmcni_datapath::Datapath>(
    handler: &super::handler::Handler<D>,
    path: &std::path::Path,
) -> Result<String, String> {
    let mut config = ClusterConfig::load(path).map_err(|e| e.to_string())?;
    let running = &handler.config;
    // A trust policy pinned at start (`--trust`) binds every reload too.
    if let Some(pin) = running.trust_pin() {
        config.pin_trust(pin).map_err(|e| e.to_string())?;
    }
    let mut fixed = Vec::new();
    if config.daemon != running.daemon {
        fixed.push("[daemon]");
    }
    if config.datapath != running.datapath {
        fixed.push("[datapath]");
    }
    if config.provider != running.provider {
        fixed.push("[provider]");
    }
    // Whoever may edit plugins must not be able to drop the approvals they need.
    if config.trust != running.trust {
        fixed.push("[trust]");
    }
    // Nor point the node's credentials, or its pulls, somewhere new without a restart.
    if config.registry != running.registry {
        fixed.push("[registry]");
    }
    if !fixed.is_empty() {
        return Err(format!(
            "{} changed {}, which needs a restart; nothing of it was applied",
            path.display(),
            fixed.join(", ")
        ));
    }
    let generation = handler.plugins().generation + 1;
    let runtime = handler.runtime.clone();
    PluginSet::fetch(&config).await.map_err(|e| e.to_string())?;
    let loaded = config.clone();
    let set = tokio::task::spawn_blocking(move || PluginSet::load(&runtime, &config, generation))
        .await
        .map_err(|e| format!("loading the plugins failed: {e}"))?
        .map_err(|e| e.to_string())?;
    let described = set.describe();
    handler.swap_plugins(set);
    PluginSet::prune_cache(&loaded);
    Ok(format!("generation {generation} in force: {described}"))
}

/// `trust`'s reviewers' keys and the approvals in its directory.
fn load_trust(trust: &wasmcni_config::TrustConfig) -> Result<wasmcni_trust::Trust, PluginError> {
    wasmcni_trust::Trust::load(&trust.keys, trust.required, &trust.approvals).map_err(|e| {
        PluginError::Invalid {
            plugin: "(every plugin)".into(),
            message: format!("[trust]: {e}"),
        }
    })
}

/// Refuses a plugin of `specs` whose digest no approval of `trust`'s reviewers names (the
/// check before a pull; the full one, of the terms, follows the pull).
fn vouch_for(
    trust: &wasmcni_config::TrustConfig,
    specs: &[wasmcni_core::PluginSpec],
) -> Result<(), PluginError> {
    let approvals = load_trust(trust)?;
    for spec in specs {
        approvals
            .vouched(&spec.name, &spec.digest)
            .map_err(|e| not_approved(spec, e))?;
    }
    Ok(())
}

/// Refuses a plugin of `specs` that `trust`'s reviewers have not approved as configured:
/// its digest, world and imports as the component has them, its grants, limits and failure
/// policy as the configuration gives them. Logs who approved each (key ids only).
fn check_approvals(
    runtime: &PluginRuntime,
    trust: &wasmcni_config::TrustConfig,
    specs: &[&wasmcni_core::PluginSpec],
) -> Result<(), PluginError> {
    let approvals = load_trust(trust)?;
    for unread in approvals.unreadable() {
        tracing::warn!(approvals = %trust.approvals.display(), "not an approval, not read: {unread}");
    }
    for spec in specs {
        // Nothing unapproved is compiled: the file must be the pinned one, and some reviewer
        // must have approved terms for that digest, before the component is inspected.
        let actual =
            wasmcni_runtime::digest_of_file(&spec.path).map_err(|source| PluginError::Read {
                plugin: spec.name.clone(),
                path: spec.path.clone(),
                source,
            })?;
        if actual != spec.digest {
            return Err(PluginError::DigestMismatch {
                plugin: spec.name.clone(),
                path: spec.path.clone(),
                expected: spec.digest.clone(),
                actual,
            });
        }
        approvals
            .vouched(&spec.name, &spec.digest)
            .map_err(|e| not_approved(spec, e))?;
        let inspection = runtime.inspect(spec);
        if let Some(problem) = &inspection.problem {
            // The load that follows would refuse it with the same cause; say it here.
            return Err(PluginError::Invalid {
                plugin: spec.name.clone(),
                message: problem.clone(),
            });
        }
        let expected = crate::audit::approval_statement(spec, &inspection);
        let reviewers = approvals
            .check(&spec.name, &expected)
            .map_err(|e| not_approved(spec, e))?;
        tracing::info!(
            plugin = %spec.name, digest = %spec.digest, reviewers = %reviewers.join(","),
            "plugin approved as configured"
        );
    }
    Ok(())
}

fn not_approved(spec: &wasmcni_core::PluginSpec, e: wasmcni_trust::TrustError) -> PluginError {
    let message = match e {
        wasmcni_trust::TrustError::NotApproved { digest, why, .. } => {
            format!("({digest}) is not approved as configured: {why}")
        }
        other => format!("checking its approvals: {other}"),
    };
    PluginError::Invalid {
        plugin: spec.name.clone(),
        message,
    }
}

/// Watches `path` for a changed configuration — on SIGHUP, and by content every
/// `poll` (so a Kubernetes ConfigMap update applies by itself) — and reloads it. A failed
/// reload is logged with its reason; the running configuration stays.
pub fn watch<D: wasmcni_datapath::Datapath>(
    handler: Arc<super::handler::Handler<D>>,
    path: std::path::PathBuf,
    poll: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let digest = |bytes: &[u8]| wasmcni_runtime::digest_of(bytes);
        let mut seen = std::fs::read(&path).ok().map(|b| digest(&b));
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut ticks = tokio::time::interval(poll);
        ticks.tick().await;
        loop {
            let signalled = tokio::select! {
                _ = ticks.tick() => false,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let now = std::fs::read(&path).ok().map(|b| digest(&b));
            if !signalled && now == seen {
                continue;
            }
            seen = now;
            match reload(&handler, &path).await {
                Ok(message) => {
                    tracing::info!(config = %path.display(), "configuration reloaded: {message}")
                }
                Err(reason) => {
                    tracing::error!(config = %path.display(), "configuration reload refused, the running one stays: {reason}")
                }
            }
        }
    })
}
