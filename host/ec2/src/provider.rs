//! The EC2 ENI provider: pod addresses are the secondary IPv4 addresses and /28 prefixes of the
//! node's ENIs. It knows the node (IMDS), its limits (`DescribeInstanceTypes`) and its ENIs
//! (`DescribeNetworkInterfaces`, authoritative where IMDS lags), and it carries out the ENI
//! requests an allocator plugin's `plan` made: create, attach, assign, unassign, detach, delete.
//!
//! The provider only talks to EC2 and keeps the picture of the node's ENIs; the daemon's
//! reconciler (`wasmcni_daemon::server::warm_pool`, through [`EniProvider`]) decides when, holds
//! the allocation lock while addresses leave the pool, and sets up each ENI's link and routing
//! table.
//!
//! Ownership: every ENI it creates is tagged, atomically with its creation, with
//! [`TAG_INSTANCE`], [`TAG_CREATED`] and (when the cluster is named) [`TAG_CLUSTER`]: AWS VPC
//! CNI's own keys, which no plugin may write (`runtime::grants::is_reserved_tag_key`). An ENI so
//! tagged that is `available` (not attached) is a leak: a crash between create and attach, or
//! a detach whose delete failed. Such ENIs of this instance are deleted at start; the
//! collector deletes the cluster's once they are older than a threshold.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, the system's outside a paused runtime: `simulate` runs the provider in
// virtual time.
use tokio::time::Instant;

use ipnet::Ipv4Net;

use super::api::{Ec2Api, NewEni, Subnet};
use super::bucket::TokenBucket;
use super::{discover, ec2_client, imds_client, max_pods};
use super::{Endpoints, InstanceLimits};
use wasmcni_config::Ec2ProviderConfig;
use wasmcni_core::eni::{Added, Ec2Error, Eni, EniProvider, NodeEni, NodeIdentity};
use wasmcni_core::ipam::{Inventory, IpFamily, Ipv6Block, Provider, ProviderView};
use wasmcni_core::{NodeInfo, NodeLimits, SubnetInfo};

/// Tag naming the instance an ENI was created for (VPC CNI's key).
pub const TAG_INSTANCE: &str = "node.k8s.amazonaws.com/instance_id";
/// Tag with the ENI's creation time, RFC 3339 (VPC CNI's key and format).
pub const TAG_CREATED: &str = "node.k8s.amazonaws.com/createdAt";
/// Tag with the cluster name (VPC CNI's key).
pub const TAG_CLUSTER: &str = "cluster.k8s.amazonaws.com/name";
/// An attached ENI tagged `node.k8s.amazonaws.com/no_manage=true` is left alone, as VPC CNI
/// leaves it: its addresses are never given to pods.
pub const TAG_NO_MANAGE: &str = "node.k8s.amazonaws.com/no_manage";

/// How long a subnet that had no free aligned /28 is not asked for one again (VPC CNI waits
/// 120 s after `InsufficientCidrBlocks`).
pub const NO_PREFIX_BACKOFF: Duration = Duration::from_secs(120);

/// How often the subnets' free counts are re-read.
const SUBNET_CACHE: Duration = Duration::from_secs(60);

/// How long an address or prefix given back to EC2 is not taken into the pool again from
/// `DescribeNetworkInterfaces`, which may still list it while EC2 settles: a pod given such an
/// address would have an address EC2 no longer routes to the node. An address still listed
/// after this long is assigned for real, and is adopted.
pub const RELEASE_SETTLE: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct State {
    /// Attached ENIs by device index (card 0).
    enis: BTreeMap<u32, NodeEni>,
    /// Device indexes being attached now.
    pending_devices: Vec<u32>,
    subnets: Vec<Subnet>,
    subnets_read: Option<Instant>,
    no_prefix_until: BTreeMap<String, Instant>,
    /// Addresses and prefixes given back to EC2, by the ENI they left, with when: not
    /// re-adopted on that ENI from a describe within [`RELEASE_SETTLE`] (EC2 may hand them to
    /// another ENI at once, which is no concern of this map).
    released: BTreeMap<(String, Ipv4Net), Instant>,
}

/// The EC2 ENI provider.
pub struct Ec2Provider {
    identity: NodeIdentity,
    limits: InstanceLimits,
    settings: Ec2ProviderConfig,
    cluster: String,
    api: Ec2Api,
    state: Mutex<State>,
}

/// `2026-11-27T12:00:00Z` for Unix seconds.
fn rfc3339(seconds: u64) -> String {
    use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat};
    DateTime::from_secs(seconds as i64)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_else(|_| seconds.to_string())
}

/// Unix seconds of an RFC 3339 time (VPC CNI's and ours).
fn parse_rfc3339(text: &str) -> Option<u64> {
    use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat};
    DateTime::from_str(text, DateTimeFormat::DateTime)
        .ok()
        .and_then(|t| u64::try_from(t.secs()).ok())
}

/// A fresh idempotency token for one create. Without randomness there is none: a constant
/// token would make EC2 answer every later create with the first ENI (or refuse it as a
/// mismatched duplicate), so the create fails instead.
fn token() -> Result<String, Ec2Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Ec2Error::Api {
        action: "CreateNetworkInterface",
        code: "NoRandomness".into(),
        message: format!("cannot draw a random ClientToken: {e}"),
    })?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("wasmcni-{hex}"))
}

/// How long the provider's start waits out EC2 throttling and server errors.
pub const START_PATIENCE: Duration = Duration::from_secs(120);

/// Runs `call` until it succeeds, fails for good (an error EC2 would answer again), or
/// `deadline` passes; between attempts that failed transiently (throttled, a server error,
/// a timeout), waits 1, 2, 4 … 16 s, saying so.
pub(crate) async fn patiently<T, F, Fut>(
    what: &str,
    deadline: Instant,
    mut call: F,
) -> Result<T, Ec2Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Ec2Error>>,
{
    let mut wait = Duration::from_secs(1);
    loop {
        match call().await {
            Err(Ec2Error::Api {
                code,
                action,
                message,
            }) if super::api::retryable(&code) && Instant::now() + wait < deadline => {
                tracing::warn!(%action, %code, wait_ms = wait.as_millis() as u64, "starting: reading {what} from EC2 failed ({message}); trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(16));
            }
            other => return other,
        }
    }
}

impl Ec2Provider {
    /// Discovers the node through IMDS, reads its limits and its ENIs from EC2, and deletes
    /// ENIs this instance created but never attached (a crash between create and attach).
    pub async fn start(
        settings: &Ec2ProviderConfig,
        cluster: &str,
    ) -> Result<Ec2Provider, Ec2Error> {
        Self::start_with(settings, cluster, None).await
    }

    /// As [`Ec2Provider::start`], with static credentials (tests against the emulator).
    pub async fn start_with(
        settings: &Ec2ProviderConfig,
        cluster: &str,
        static_credentials: Option<(String, String)>,
    ) -> Result<Ec2Provider, Ec2Error> {
        Self::start_over(settings, cluster, static_credentials, None).await
    }

    /// As [`Ec2Provider::start`], against EC2 and IMDS in process (`simulate`): the same
    /// SDK clients and calls, `ec2` answering them; the settings' endpoints are not used.
    pub async fn start_in_process(
        settings: &Ec2ProviderConfig,
        cluster: &str,
        ec2: &crate::in_process::InProcessEc2,
    ) -> Result<Ec2Provider, Ec2Error> {
        let settings = Ec2ProviderConfig {
            ec2_endpoint: Some(crate::in_process::EC2_ENDPOINT.to_owned()),
            imds_endpoint: Some(crate::in_process::IMDS_ENDPOINT.to_owned()),
            ..settings.clone()
        };
        let credentials = Some(("AKIDINPROCESS".to_owned(), "in-process".to_owned()));
        Self::start_over(&settings, cluster, credentials, Some(ec2.http_client())).await
    }

    async fn start_over(
        settings: &Ec2ProviderConfig,
        cluster: &str,
        static_credentials: Option<(String, String)>,
        http: Option<aws_smithy_runtime_api::client::http::SharedHttpClient>,
    ) -> Result<Ec2Provider, Ec2Error> {
        let endpoints = Endpoints {
            ec2: settings.ec2_endpoint.clone(),
            imds: settings.imds_endpoint.clone(),
            static_credentials,
            // Retries are Ec2Api's, each through the bucket.
            max_attempts: 1,
            call_timeout: Duration::from_millis(settings.call_timeout_ms),
        };
        let imds_endpoints = Endpoints {
            max_attempts: 3,
            ..endpoints.clone()
        };
        let imds = match &http {
            Some(http) => crate::imds_client_over(&imds_endpoints, http.clone())?,
            None => imds_client(&imds_endpoints)?,
        };
        let identity = discover(&imds).await?;
        let client = match http {
            Some(http) => crate::ec2_client_over(&identity.region, &endpoints, http).await,
            None => ec2_client(&identity.region, &endpoints).await,
        };
        let api = Ec2Api::new(
            client,
            TokenBucket::new(settings.api_burst, settings.api_rate_per_s),
            settings.max_attempts,
        );
        // EC2 throttling and server errors at start are waited out (each call already retried
        // `max_attempts` times): a node whose daemon exits on them comes back only after the
        // kubelet's crash-loop back-off.
        let deadline = Instant::now() + START_PATIENCE;
        let limits = patiently("instance limits", deadline, || {
            api.instance_limits(&identity.instance_type)
        })
        .await?;
        let provider = Ec2Provider {
            identity,
            limits,
            settings: settings.clone(),
            cluster: cluster.to_owned(),
            api,
            state: Mutex::new(State::default()),
        };
        patiently("subnets", deadline, || provider.refresh_subnets(true)).await?;
        patiently("ENIs", deadline, || provider.refresh()).await?;
        if provider.family().has_ipv6() {
            let prefix =
                patiently("IPv6 prefix", deadline, || provider.ensure_ipv6_prefix()).await?;
            tracing::info!(%prefix, family = %provider.family(), "IPv6 prefix delegated: pods get /128s of the primary ENI's prefix");
        }
        let removed = patiently("unattached ENIs", deadline, || {
            provider.delete_unattached(true, Duration::ZERO)
        })
        .await?;
        if removed > 0 {
            tracing::warn!(
                removed,
                "deleted ENIs this instance created but never attached"
            );
        }
        Ok(provider)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instance type's limits.
    pub fn limits(&self) -> &InstanceLimits {
        &self.limits
    }

    /// EC2 attempts made so far.
    pub fn api_calls(&self) -> u64 {
        self.api.calls()
    }

    /// The node's VPC (the primary ENI's).
    fn vpc_id(&self) -> &str {
        self.identity.primary().map_or("", |p| p.vpc_id.as_str())
    }

    /// Drops from a described ENI the addresses and prefixes given back to EC2 less than
    /// [`RELEASE_SETTLE`] ago (and forgets older releases).
    fn without_settling(&self, eni: &mut Eni) {
        let mut state = self.state();
        state.released.retain(|_, at| at.elapsed() < RELEASE_SETTLE);
        if state.released.is_empty() {
            return;
        }
        let settling = |net: Ipv4Net| state.released.contains_key(&(eni.id.clone(), net));
        eni.secondary_ips.retain(|ip| !settling(Ipv4Net::from(*ip)));
        eni.prefixes.retain(|p| !settling(*p));
    }

    /// Whether an ENI's description marks it as this daemon's to change: the primary ENI, or
    /// one tagged for this instance (and this cluster, when the cluster is named).
    pub fn owns(&self, eni: &NodeEni) -> bool {
        let tag = |key: &str| {
            eni.eni
                .tags
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        eni.primary()
            || (tag(TAG_INSTANCE) == Some(self.identity.instance_id.as_str())
                && (self.cluster.is_empty() || tag(TAG_CLUSTER) == Some(self.cluster.as_str())))
    }

    fn subnet_cidrs(&self) -> BTreeMap<String, Ipv4Net> {
        self.state()
            .subnets
            .iter()
            .map(|s| (s.id.clone(), s.cidr))
            .collect()
    }

    /// Re-reads the VPC's subnets when the cache is older than a minute (or `force`).
    pub async fn refresh_subnets(&self, force: bool) -> Result<(), Ec2Error> {
        let fresh = self
            .state()
            .subnets_read
            .is_some_and(|at| at.elapsed() < SUBNET_CACHE);
        if fresh && !force {
            return Ok(());
        }
        let subnets = self.api.describe_subnets(self.vpc_id()).await?;
        let mut state = self.state();
        state.subnets = subnets;
        state.subnets_read = Some(Instant::now());
        Ok(())
    }

    fn subnet_takes_prefix(&self, subnet_id: &str) -> bool {
        self.state()
            .no_prefix_until
            .get(subnet_id)
            .is_none_or(|until| Instant::now() >= *until)
    }

    fn no_prefix_for_a_while(&self, subnet_id: &str) {
        self.state()
            .no_prefix_until
            .insert(subnet_id.to_owned(), Instant::now() + NO_PREFIX_BACKOFF);
    }

    async fn create_and_attach_at(
        &self,
        device: u32,
        subnet_id: &str,
        security_groups: &[String],
        secondary_ips: u32,
        prefixes: u32,
        tags: Vec<(String, String)>,
    ) -> Result<(NodeEni, Option<String>), Ec2Error> {
        self.refresh_subnets(false).await?;
        let subnet_cidr =
            self.subnet_cidrs()
                .get(subnet_id)
                .copied()
                .ok_or_else(|| Ec2Error::Api {
                    action: "CreateNetworkInterface",
                    code: "InvalidSubnetID.NotFound".into(),
                    message: format!("{subnet_id} is not a subnet of the node's VPC"),
                })?;
        let mut new = NewEni {
            subnet_id: subnet_id.to_owned(),
            security_groups: security_groups.to_vec(),
            secondary_ips,
            prefixes,
            tags,
            description: format!("wasmcni pod ENI of {}", self.identity.instance_id),
            client_token: token()?,
        };
        let mut fell_back = None;
        if new.prefixes > 0 && !self.subnet_takes_prefix(subnet_id) && self.settings.prefix_fallback
        {
            fell_back = Some(self.fallback_note(subnet_id, new.prefixes));
            new.secondary_ips = self.fallback_ips(new.prefixes, 0);
            new.prefixes = 0;
        }
        let created = match self.api.create_eni(&new).await {
            Err(Ec2Error::Api { code, .. })
                if code == "InsufficientCidrBlocks"
                    && new.prefixes > 0
                    && self.settings.prefix_fallback =>
            {
                self.no_prefix_for_a_while(subnet_id);
                fell_back = Some(self.fallback_note(subnet_id, new.prefixes));
                new.secondary_ips = self.fallback_ips(new.prefixes, 0);
                new.prefixes = 0;
                new.client_token = token()?;
                self.api.create_eni(&new).await?
            }
            other => other?,
        };
        let attachment_id = match self
            .api
            .attach_eni(&created.id, &self.identity.instance_id, device)
            .await
        {
            Ok(id) => id,
            Err(error) => match self
                .attachment_after_failed_attach(&created.id, device)
                .await
            {
                // EC2 attached it although the answer said otherwise (a lost reply, then a
                // retry refused as a duplicate): carry on with it.
                Some(id) => id,
                None => {
                    if let Err(cleanup) = self.api.delete_eni(&created.id).await {
                        tracing::error!(eni = %created.id, error = %cleanup, "deleting an ENI whose attach failed also failed; the leaked-ENI collector will");
                    }
                    return Err(error);
                }
            },
        };
        if let Err(e) = self
            .api
            .set_delete_on_termination(&created.id, &attachment_id)
            .await
        {
            // Not fatal: the periodic refresh sets it on every ENI of ours that lacks it.
            tracing::warn!(eni = %created.id, error = %e, "setting DeleteOnTermination failed; the next refresh retries");
        }
        Ok((
            NodeEni {
                eni: created,
                device,
                attachment_id,
                subnet_cidr,
                attached_unix_ms: wasmcni_clock::unix_ms(),
                managed: true,
                linked: false,
            },
            fell_back,
        ))
    }

    /// After a failed attach: the attachment id if EC2 did attach `eni_id` here at `device`.
    async fn attachment_after_failed_attach(&self, eni_id: &str, device: u32) -> Option<String> {
        let eni = self.api.describe_eni(eni_id).await.ok()??;
        let attachment = eni.attachment?;
        (attachment.instance_id == self.identity.instance_id && attachment.device_index == device)
            .then_some(attachment.id)
    }

    /// Changes the attached ENI `eni_id`, if it is one.
    fn update_eni(&self, eni_id: &str, change: impl FnOnce(&mut NodeEni)) {
        if let Some(eni) = self.state().enis.values_mut().find(|e| e.eni.id == eni_id) {
            change(eni);
        }
    }

    fn fallback_note(&self, subnet_id: &str, prefixes: u32) -> String {
        format!("{subnet_id} has no free aligned /28: {prefixes} prefix(es) asked, secondary IPs given instead")
    }

    /// Secondary IPs in place of `prefixes` /28s on an ENI with `used` slots: as many
    /// addresses as the prefixes would have given, within the ENI's free slots.
    fn fallback_ips(&self, prefixes: u32, used: u32) -> u32 {
        let room = self
            .limits
            .ipv4_per_eni
            .saturating_sub(1)
            .saturating_sub(used);
        (prefixes * 16).min(room)
    }

    fn node_info(&self) -> NodeInfo {
        NodeInfo {
            provider: wasmcni_core::pool_view::ProviderKind::Ec2,
            instance_id: self.identity.instance_id.clone(),
            instance_type: self.identity.instance_type.clone(),
            availability_zone: self.identity.availability_zone.clone(),
            vpc_cidrs: self.vpc_cidrs(),
            limits: NodeLimits {
                max_enis: self.limits.max_enis,
                ipv4_per_eni: self.limits.ipv4_per_eni,
                prefix_delegation: self.limits.prefix_delegation,
                max_pods: self.max_pods(),
            },
        }
    }
}

#[async_trait::async_trait]
impl EniProvider for Ec2Provider {
    /// The node's identity.
    fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The primary ENI's own address (the SNAT source).
    fn primary_ip(&self) -> Option<Ipv4Addr> {
        self.state().enis.get(&0).map(|e| e.eni.primary_ip)
    }

    /// The VPC's CIDRs.
    fn vpc_cidrs(&self) -> Vec<Ipv4Net> {
        self.identity
            .primary()
            .map(|p| p.vpc_cidrs.clone())
            .unwrap_or_default()
    }

    /// The attached ENIs, by device.
    fn enis(&self) -> Vec<NodeEni> {
        self.state().enis.values().cloned().collect()
    }

    /// The ENI with `id`.
    fn eni(&self, id: &str) -> Option<NodeEni> {
        self.state().enis.values().find(|e| e.eni.id == id).cloned()
    }

    /// Pods the node may run (in IPv6 prefix mode the EKS AMI's prefix-delegation figure).
    fn max_pods(&self) -> u32 {
        let ipv6 = self.family() == IpFamily::Ipv6;
        self.settings
            .max_pods
            .unwrap_or_else(|| max_pods(&self.limits, false, ipv6))
    }

    /// The family pods get their address in.
    fn family(&self) -> IpFamily {
        self.settings.ip_family
    }

    /// Whether the primary ENI holds an IPv6 prefix now (as last read from EC2).
    fn has_ipv6_prefix(&self) -> bool {
        self.state()
            .enis
            .get(&0)
            .is_some_and(|e| !e.eni.ipv6_prefixes.is_empty())
    }

    /// IPv6 prefix mode: the primary ENI's /80, delegated now if it has none (once per node:
    /// it is never released, as with VPC CNI). EC2 refuses on instances that are not Nitro and
    /// in subnets without an IPv6 CIDR; the error names why.
    async fn ensure_ipv6_prefix(&self) -> Result<ipnet::Ipv6Net, Ec2Error> {
        let refused = |code: &str, message: String| Ec2Error::Api {
            action: "AssignIpv6Addresses",
            code: code.to_owned(),
            message,
        };
        let primary = self.state().enis.get(&0).cloned();
        let primary = primary
            .ok_or_else(|| refused("NoPrimaryEni", "the node has no ENI at device 0".into()))?;
        if let Some(prefix) = primary.eni.ipv6_prefixes.first() {
            return Ok(*prefix);
        }
        if !self.limits.prefix_delegation {
            return Err(refused(
                "PrefixDelegationUnsupported",
                format!(
                    "not asked: IPv6 prefix mode needs a Nitro instance, and {} cannot hold prefixes",
                    self.identity.instance_type
                ),
            ));
        }
        let assigned = self
            .api
            .assign_ipv6_prefixes(&primary.eni.id, 1)
            .await
            .map_err(|e| match e {
                Ec2Error::Api {
                    action,
                    code,
                    message,
                } => Ec2Error::Api {
                    action,
                    code,
                    message: format!(
                        "delegating an IPv6 /80 to the primary ENI {} in {}: {message}",
                        primary.eni.id, primary.eni.subnet_id
                    ),
                },
                other => other,
            })?;
        let prefix = assigned.first().copied().ok_or_else(|| {
            refused(
                "Malformed",
                "EC2 answered without the delegated prefix".into(),
            )
        })?;
        self.update_eni(&primary.eni.id, |e| e.eni.ipv6_prefixes.push(prefix));
        Ok(prefix)
    }

    /// Re-reads the node's ENIs from EC2 (authoritative; IMDS may lag behind an attach).
    async fn refresh(&self) -> Result<(), Ec2Error> {
        let instance = self.identity.instance_id.as_str();
        let described = self
            .api
            .describe_enis(&[("attachment.instance-id", &[instance])])
            .await?;
        let subnets = self.subnet_cidrs();
        let linked: Vec<String> = self
            .state()
            .enis
            .values()
            .filter(|e| e.linked)
            .map(|e| e.eni.id.clone())
            .collect();
        let mut enis = BTreeMap::new();
        for eni in described {
            let Some(attachment) = eni.attachment.clone() else {
                continue;
            };
            if attachment.instance_id != instance
                || !matches!(attachment.status.as_str(), "attached" | "attaching")
            {
                continue;
            }
            let subnet_cidr = match subnets.get(&eni.subnet_id) {
                Some(cidr) => *cidr,
                None => {
                    // A subnet of another VPC cannot be; the cache is stale.
                    self.refresh_subnets(true).await?;
                    self.subnet_cidrs()
                        .get(&eni.subnet_id)
                        .copied()
                        .ok_or_else(|| Ec2Error::Api {
                            action: "DescribeSubnets",
                            code: "Missing".into(),
                            message: format!("{} of {} is not in the VPC", eni.subnet_id, eni.id),
                        })?
                }
            };
            let no_manage = eni
                .tags
                .iter()
                .any(|(k, v)| k == TAG_NO_MANAGE && v.eq_ignore_ascii_case("true"));
            // A trunk (security groups for pods), EFA or service interface is never the pool's:
            // its addresses are not handed out and its link is never set up by the daemon.
            let managed = !no_manage && attachment.network_card == 0 && eni.is_plain();
            let mut eni = eni;
            self.without_settling(&mut eni);
            let node_eni = NodeEni {
                device: attachment.device_index,
                attachment_id: attachment.id.clone(),
                subnet_cidr,
                attached_unix_ms: attachment.attached_unix_ms,
                managed,
                linked: attachment.device_index == 0 || linked.contains(&eni.id),
                eni,
            };
            if attachment.network_card == 0 {
                enis.insert(node_eni.device, node_eni);
            }
        }
        self.state().enis = enis;
        Ok(())
    }

    /// The host's ownership tags for a new ENI.
    fn ownership_tags(&self) -> Vec<(String, String)> {
        let mut tags = vec![
            (TAG_INSTANCE.to_owned(), self.identity.instance_id.clone()),
            (
                TAG_CREATED.to_owned(),
                rfc3339(wasmcni_clock::unix_ms() / 1000),
            ),
        ];
        if !self.cluster.is_empty() {
            tags.push((TAG_CLUSTER.to_owned(), self.cluster.clone()));
        }
        tags
    }

    /// Creates an ENI and attaches it at the lowest free device index, with
    /// DeleteOnTermination. A prefix request in a subnet without a free aligned /28 becomes
    /// secondary IPs when `prefix_fallback` is on. If the attach fails the ENI is deleted (a
    /// failed delete leaves a tagged, unattached ENI for the collector). The ENI is not in
    /// the pool until [`EniProvider::adopt`].
    async fn create_and_attach(
        &self,
        subnet_id: &str,
        security_groups: &[String],
        secondary_ips: u32,
        prefixes: u32,
        tags: Vec<(String, String)>,
    ) -> Result<(NodeEni, Option<String>), Ec2Error> {
        let device = {
            let mut state = self.state();
            let taken: Vec<u32> = state
                .enis
                .keys()
                .copied()
                .chain(state.pending_devices.iter().copied())
                .collect();
            let device = (1..self.limits.max_enis.max(1))
                .find(|d| !taken.contains(d))
                .ok_or_else(|| Ec2Error::Api {
                    action: "AttachNetworkInterface",
                    code: "NoFreeDevice".into(),
                    message: format!(
                        "all {} ENI device indexes of {} are in use",
                        self.limits.max_enis, self.limits.instance_type
                    ),
                })?;
            state.pending_devices.push(device);
            device
        };
        let outcome = self
            .create_and_attach_at(
                device,
                subnet_id,
                security_groups,
                secondary_ips,
                prefixes,
                tags,
            )
            .await;
        self.state().pending_devices.retain(|d| *d != device);
        outcome
    }

    /// Sets DeleteOnTermination on every attached ENI this instance created that lacks it
    /// (its first attempt failed). Returns how many were fixed.
    async fn repair_delete_on_termination(&self) -> usize {
        let instance = self.identity.instance_id.clone();
        let lacking: Vec<(String, String)> = self
            .state()
            .enis
            .values()
            .filter(|e| !e.primary())
            .filter(|e| {
                e.eni
                    .tags
                    .iter()
                    .any(|(k, v)| k == TAG_INSTANCE && *v == instance)
                    && e.eni
                        .attachment
                        .as_ref()
                        .is_some_and(|a| !a.delete_on_termination)
            })
            .map(|e| (e.eni.id.clone(), e.attachment_id.clone()))
            .collect();
        let mut fixed = 0;
        for (eni, attachment) in lacking {
            match self.api.set_delete_on_termination(&eni, &attachment).await {
                Ok(()) => fixed += 1,
                Err(e) => tracing::warn!(%eni, error = %e, "setting DeleteOnTermination failed"),
            }
        }
        fixed
    }

    /// Marks an ENI's link and table as set up: its addresses join the pool.
    fn mark_linked(&self, eni_id: &str) {
        self.update_eni(eni_id, |eni| eni.linked = true);
    }

    /// Managed secondary ENIs whose link is not set up yet (found by a refresh).
    fn unlinked(&self) -> Vec<NodeEni> {
        self.state()
            .enis
            .values()
            .filter(|e| e.managed && !e.primary() && !e.linked)
            .cloned()
            .collect()
    }

    /// After a failed unassign: what EC2 still lists of `ips` and `prefixes` on the ENI (a
    /// lost reply may hide a success, and an address EC2 took back must not return to the
    /// pool). When EC2 cannot be asked, nothing is restored: an address missing from the
    /// pool only costs a warm address; one wrongly restored could reach two pods.
    async fn still_assigned(
        &self,
        eni_id: &str,
        ips: &[Ipv4Addr],
        prefixes: &[Ipv4Net],
    ) -> (Vec<Ipv4Addr>, Vec<Ipv4Net>) {
        match self.api.describe_eni(eni_id).await {
            Ok(Some(eni)) => (
                ips.iter()
                    .copied()
                    .filter(|ip| eni.secondary_ips.contains(ip))
                    .collect(),
                prefixes
                    .iter()
                    .copied()
                    .filter(|p| eni.prefixes.contains(p))
                    .collect(),
            ),
            Ok(None) | Err(_) => (Vec::new(), Vec::new()),
        }
    }

    /// Puts an attached ENI, its link set up, into the pool.
    fn adopt(&self, mut eni: NodeEni) {
        eni.linked = true;
        self.state().enis.insert(eni.device, eni);
    }

    /// Assigns secondary IPs (`prefixes = false`) or /28 prefixes to `eni_id` and puts them
    /// in the pool; prefixes fall back to IPs as at creation.
    async fn assign(&self, eni_id: &str, count: u32, prefixes: bool) -> Result<Added, Ec2Error> {
        let eni = self.eni(eni_id).ok_or_else(|| Ec2Error::Api {
            action: "AssignPrivateIpAddresses",
            code: "NotAttached".into(),
            message: format!("{eni_id} is not attached to the node"),
        })?;
        let subnet = eni.eni.subnet_id.clone();
        let mut added = Added::default();
        let fallback = |added: &mut Added| {
            added.fell_back = Some(self.fallback_note(&subnet, count));
            self.fallback_ips(count, eni.slots_used())
        };
        if prefixes && self.subnet_takes_prefix(&subnet) {
            match self.api.assign_prefixes(eni_id, count).await {
                Ok(got) => added.prefixes = got,
                Err(Ec2Error::Api { code, .. })
                    if code == "InsufficientCidrBlocks" && self.settings.prefix_fallback =>
                {
                    self.no_prefix_for_a_while(&subnet);
                    let ips = fallback(&mut added);
                    added.ips = self.api.assign_ips(eni_id, ips).await?;
                }
                Err(e) => return Err(e),
            }
        } else if prefixes && self.settings.prefix_fallback {
            let ips = fallback(&mut added);
            added.ips = self.api.assign_ips(eni_id, ips).await?;
        } else if prefixes {
            added.prefixes = self.api.assign_prefixes(eni_id, count).await?;
        } else {
            added.ips = self.api.assign_ips(eni_id, count).await?;
        }
        self.restore(eni_id, &added.ips, &added.prefixes);
        Ok(added)
    }

    async fn assign_address(&self, eni_id: &str, ip: Ipv4Addr) -> Result<(), Ec2Error> {
        let eni = self.eni(eni_id).ok_or_else(|| Ec2Error::Api {
            action: "AssignPrivateIpAddresses",
            code: "NotAttached".into(),
            message: format!("{eni_id} is not attached to the node"),
        })?;
        if !eni.subnet_cidr.contains(&ip) {
            return Err(Ec2Error::Api {
                action: "AssignPrivateIpAddresses",
                code: "InvalidParameterValue".into(),
                message: format!("{ip} is not in {eni_id}'s subnet {}", eni.subnet_cidr),
            });
        }
        let assigned = self.api.assign_ip(eni_id, ip).await?;
        // EC2 answers with what it assigned; anything else is not put in the pool (a refresh
        // reads what the ENI really holds).
        if !assigned.is_empty() && assigned != [ip] {
            return Err(Ec2Error::Api {
                action: "AssignPrivateIpAddresses",
                code: "UnexpectedAnswer".into(),
                message: format!("asked for {ip}, EC2 reported {assigned:?}"),
            });
        }
        self.restore(eni_id, &[ip], &[]);
        Ok(())
    }

    /// Takes addresses out of the pool (the caller holds the allocation lock and checked that
    /// no pod holds them); [`EniProvider::unassign`] then gives them back to EC2.
    fn withdraw(&self, eni_id: &str, ips: &[Ipv4Addr], prefixes: &[Ipv4Net]) {
        self.update_eni(eni_id, |eni| {
            eni.eni.secondary_ips.retain(|ip| !ips.contains(ip));
            eni.eni.prefixes.retain(|p| !prefixes.contains(p));
        });
        let now = Instant::now();
        let mut state = self.state();
        for net in ips
            .iter()
            .map(|ip| Ipv4Net::from(*ip))
            .chain(prefixes.iter().copied())
        {
            state.released.insert((eni_id.to_owned(), net), now);
        }
    }

    /// Puts addresses into the ENI's part of the pool: newly assigned ones, or withdrawn ones
    /// whose unassign failed.
    fn restore(&self, eni_id: &str, ips: &[Ipv4Addr], prefixes: &[Ipv4Net]) {
        {
            let mut state = self.state();
            for net in ips
                .iter()
                .map(|ip| Ipv4Net::from(*ip))
                .chain(prefixes.iter().copied())
            {
                state.released.remove(&(eni_id.to_owned(), net));
            }
        }
        self.update_eni(eni_id, |eni| {
            eni.eni.secondary_ips.extend(ips.iter().copied());
            eni.eni.prefixes.extend(prefixes.iter().copied());
        });
    }

    /// Gives withdrawn addresses back to EC2.
    async fn unassign(
        &self,
        eni_id: &str,
        ips: &[Ipv4Addr],
        prefixes: &[Ipv4Net],
    ) -> Result<(), Ec2Error> {
        self.api.unassign(eni_id, ips, prefixes).await
    }

    /// Takes a whole ENI out of the pool (caller: allocation lock held, no pod on it).
    fn forget(&self, eni_id: &str) -> Option<NodeEni> {
        let mut state = self.state();
        let device = state
            .enis
            .iter()
            .find(|(_, e)| e.eni.id == eni_id)
            .map(|(d, _)| *d)?;
        state.enis.remove(&device)
    }

    /// Detaches a forgotten ENI, waits until EC2 reports it `available`, and deletes it. If
    /// the delete does not happen, the ENI stays tagged and unattached for the collector.
    async fn detach_and_delete(&self, eni: &NodeEni) -> Result<(), Ec2Error> {
        self.api.detach(&eni.attachment_id).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pause = Duration::from_millis(200);
        loop {
            match self.api.describe_eni(&eni.eni.id).await? {
                None => return Ok(()),
                Some(now) if now.status == "available" => break,
                Some(_) if Instant::now() >= deadline => {
                    return Err(Ec2Error::Api {
                        action: "DetachNetworkInterface",
                        code: "DetachTimeout".into(),
                        message: format!("{} still not available 30 s after detach", eni.eni.id),
                    })
                }
                Some(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.api.delete_eni(&eni.eni.id).await
    }

    /// At start `own_only` with `min_age` zero: this instance's, any age (only this daemon
    /// creates them and it is not creating one now); the collector: the cluster's, old enough.
    async fn delete_unattached(
        &self,
        own_only: bool,
        min_age: Duration,
    ) -> Result<usize, Ec2Error> {
        let instance = [self.identity.instance_id.as_str()];
        let cluster = [self.cluster.as_str()];
        let vpc = [self.vpc_id()];
        let mut filters: Vec<(&str, &[&str])> = vec![("status", &["available"]), ("vpc-id", &vpc)];
        let own_filter = format!("tag:{TAG_INSTANCE}");
        let cluster_filter = format!("tag:{TAG_CLUSTER}");
        // Without a cluster name, other clusters' ENIs cannot be told apart: only this
        // instance's own are collected.
        if own_only || self.cluster.is_empty() {
            filters.push((&own_filter, &instance));
        } else {
            filters.push(("tag-key", &[TAG_INSTANCE]));
            filters.push((&cluster_filter, &cluster));
        }
        let now_s = wasmcni_clock::unix_ms() / 1000;
        let mut deleted = 0;
        for eni in self.api.describe_enis(&filters).await? {
            let created = eni
                .tags
                .iter()
                .find(|(k, _)| k == TAG_CREATED)
                .and_then(|(_, v)| parse_rfc3339(v));
            let old_enough = match created {
                Some(at) => now_s.saturating_sub(at) >= min_age.as_secs(),
                None => min_age.is_zero(),
            };
            if eni.status != "available" || !old_enough {
                continue;
            }
            match self.api.delete_eni(&eni.id).await {
                Ok(()) => {
                    tracing::info!(eni = %eni.id, "deleted a leaked ENI");
                    deleted += 1;
                }
                Err(e) => {
                    tracing::warn!(eni = %eni.id, error = %e, "could not delete a leaked ENI")
                }
            }
        }
        Ok(deleted)
    }
}

impl Provider for Ec2Provider {
    fn name(&self) -> &'static str {
        "ec2"
    }

    fn inventory(&self) -> Inventory {
        let state = self.state();
        let family = self.family();
        // IPv6 (and dual stack): every pod gets a /128 of the primary ENI's prefix.
        let ipv6 = state
            .enis
            .get(&0)
            .into_iter()
            .filter(|_| family.has_ipv6())
            .flat_map(|e| {
                e.eni.ipv6_prefixes.iter().map(|p| Ipv6Block {
                    cidr: *p,
                    eni_id: Some(e.eni.id.clone()),
                })
            })
            .collect();
        // IPv4 (and dual stack): the ENIs' secondary addresses and /28 prefixes.
        let blocks = if family.has_ipv4() {
            state.enis.values().flat_map(NodeEni::blocks).collect()
        } else {
            Vec::new()
        };
        Inventory {
            blocks,
            excluded: Default::default(),
            ipv6,
            excluded_v6: Default::default(),
        }
    }

    fn view(&self) -> ProviderView {
        let now = wasmcni_clock::unix_ms();
        let state = self.state();
        let az = &self.identity.availability_zone;
        ProviderView {
            node: self.node_info(),
            enis: state
                .enis
                .values()
                .filter(|e| e.managed)
                .map(|e| e.info(self.owns(e), now))
                .collect(),
            subnets: state
                .subnets
                .iter()
                .filter(|s| &s.availability_zone == az)
                .map(|s| SubnetInfo {
                    id: s.id.clone(),
                    cidr: s.cidr,
                    free_addresses: s.free_addresses,
                    tags: s.tags.clone(),
                })
                .collect(),
            cooldown: Duration::from_millis(self.settings.ip_cooldown_ms),
            // The IPv6 prefix is in place before the first request and never changes; an IPv4
            // pool (also dual stack's) grows and shrinks.
            dynamic: self.family().has_ipv4(),
            family: self.family(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_times_are_rfc3339_both_ways() {
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(parse_rfc3339("2026-11-18T11:06:40Z"), Some(1_795_000_000));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
