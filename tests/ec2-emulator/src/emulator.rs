//! The running emulator: the model, IMDS, faults and hypervisor mode behind two loopback
//! listeners, and the handle tests use to reach into it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use ipnet::{Ipv4Net, Ipv6Net};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::addressing::AllocationPolicy;
use crate::api::{self, ActionClass};
use crate::error::{Ec2Error, Ec2Result};
use crate::faults::{
    ActionCounters, BucketConfig, FaultConfig, Faults, InjectedError, RequestLog, RequestRecord,
};
use crate::hypervisor::{HypervisorConfig, HypervisorError, NetlinkLinks, NodeLinks};
use crate::imds::{Imds, ImdsRequest, TOKEN_HEADER, TOKEN_TTL_HEADER};
use crate::requests::RunInstance;
use crate::server::{self, PlainRequest};
use crate::wire::Params;
use crate::{Ec2Model, DEFAULT_REGION};

/// What the emulator starts with.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Seed of every id, MAC address, chosen address and injected fault.
    pub seed: u64,
    /// Region the model pretends to be in.
    pub region: String,
    /// How EC2 chooses addresses.
    pub allocation_policy: AllocationPolicy,
    /// The VPC to create, or `None` for an empty account.
    pub vpc_cidr: Option<Ipv4Net>,
    /// Give the VPC an IPv6 /56 and each subnet a /64 of it.
    pub ipv6: bool,
    /// Subnets of the VPC: CIDR and availability zone.
    pub subnets: Vec<(Ipv4Net, String)>,
    /// Launch a node instance of this type in the first subnet; IMDS speaks for it.
    pub node_instance_type: Option<String>,
    /// Fault knobs at start.
    pub faults: FaultConfig,
    /// Put ENI links of the node into network namespaces.
    pub hypervisor: Option<HypervisorConfig>,
    /// Listen address of the EC2 API (port 0: any free port).
    pub ec2_listen: SocketAddr,
    /// Listen address of IMDS (port 0: any free port).
    pub imds_listen: SocketAddr,
}

impl Default for Scenario {
    /// A VPC 10.0.0.0/16 with two subnets (10.0.0.0/20, 10.0.16.0/20) in us-west-2a and a
    /// t3.medium node in the first, on 127.0.0.1 with free ports, no faults.
    fn default() -> Self {
        let zone = format!("{DEFAULT_REGION}a");
        Self {
            seed: 1,
            region: DEFAULT_REGION.to_owned(),
            allocation_policy: AllocationPolicy::default(),
            vpc_cidr: Some(Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 16).unwrap_or_default()),
            ipv6: false,
            subnets: vec![
                (
                    Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 20).unwrap_or_default(),
                    zone.clone(),
                ),
                (
                    Ipv4Net::new(Ipv4Addr::new(10, 0, 16, 0), 20).unwrap_or_default(),
                    zone,
                ),
            ],
            node_instance_type: Some("t3.medium".to_owned()),
            faults: FaultConfig::default(),
            hypervisor: None,
            ec2_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            imds_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

impl Scenario {
    /// An account with nothing in it (tests create everything through the API).
    pub fn empty() -> Self {
        Self {
            vpc_cidr: None,
            subnets: Vec::new(),
            node_instance_type: None,
            ..Self::default()
        }
    }

    /// Use this seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Launch the node as this instance type.
    pub fn with_node_instance_type(mut self, instance_type: impl Into<String>) -> Self {
        self.node_instance_type = Some(instance_type.into());
        self
    }

    /// Start with these faults.
    pub fn with_faults(mut self, faults: FaultConfig) -> Self {
        self.faults = faults;
        self
    }

    /// Turn on hypervisor mode.
    pub fn with_hypervisor(mut self, hypervisor: HypervisorConfig) -> Self {
        self.hypervisor = Some(hypervisor);
        self
    }

    /// Give the VPC and subnets IPv6.
    pub fn with_ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }
}

/// What the scenario created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioResources {
    /// The VPC.
    pub vpc_id: String,
    /// Its default security group.
    pub security_group_id: String,
    /// The subnets, in scenario order.
    pub subnet_ids: Vec<String>,
    /// The node instance, if one was launched.
    pub instance_id: Option<String>,
    /// The node's primary ENI.
    pub primary_eni_id: Option<String>,
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The scenario is not valid for the model.
    #[error("scenario: {0}")]
    Scenario(#[from] Ec2Error),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Hypervisor mode needs a node instance in the scenario.
    #[error("hypervisor mode needs a node instance: set Scenario::node_instance_type")]
    HypervisorWithoutNode,
    /// Hypervisor mode could not set up the node's links.
    #[error("hypervisor mode: {0}")]
    Hypervisor(#[from] HypervisorError),
}

/// Namespace for [`Emulator::start`].
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// Build the scenario's model and serve it: the EC2 API and IMDS on their own
    /// listeners. Must be called inside a tokio runtime.
    pub async fn start(scenario: Scenario) -> Result<EmulatorHandle, StartError> {
        let mut model = Ec2Model::new(scenario.seed)
            .with_region(scenario.region.clone())
            .with_allocation_policy(scenario.allocation_policy);
        let resources = build(&mut model, &scenario)?;
        let node = resources.as_ref().and_then(|r| r.instance_id.clone());
        let mut imds = Imds::new(node.clone(), scenario.seed);
        imds.observe_at_boot(&model);
        let links = match (&scenario.hypervisor, &node) {
            (Some(config), Some(instance_id)) => {
                let ops = NetlinkLinks::open(config)?;
                let mut links = NodeLinks::new(ops, config.clone(), instance_id.clone());
                links.reconcile(links.desired(&model)?).await?;
                Some(tokio::sync::Mutex::new(links))
            }
            (Some(_), None) => return Err(StartError::HypervisorWithoutNode),
            _ => None,
        };
        let ec2_listener = bind(scenario.ec2_listen).await?;
        let imds_listener = bind(scenario.imds_listen).await?;
        let ec2_addr = local_addr(&ec2_listener, scenario.ec2_listen)?;
        let imds_addr = local_addr(&imds_listener, scenario.imds_listen)?;
        let shared = Arc::new(Shared {
            model: Mutex::new(model),
            imds: Mutex::new(imds),
            faults: Mutex::new(Faults::new(scenario.faults.clone(), scenario.seed)),
            log: Mutex::new(RequestLog::default()),
            links,
            link_errors: Mutex::new(Vec::new()),
            next_request: AtomicU64::new(0),
            started: Instant::now(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let ec2_shared = Arc::clone(&shared);
        let ec2_task = tokio::spawn(server::serve(
            ec2_listener,
            shutdown_rx.clone(),
            move |request| answer_ec2(Arc::clone(&ec2_shared), request),
        ));
        let imds_shared = Arc::clone(&shared);
        let imds_task = tokio::spawn(server::serve(imds_listener, shutdown_rx, move |request| {
            let shared = Arc::clone(&imds_shared);
            async move { shared.answer_imds(&request) }
        }));
        Ok(EmulatorHandle {
            shared,
            resources,
            ec2_addr,
            imds_addr,
            shutdown,
            tasks: vec![ec2_task, imds_task],
        })
    }
}

async fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind { address, source })
}

fn local_addr(listener: &TcpListener, address: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { address, source })
}

/// Create the scenario's VPC, subnets and node.
fn build(model: &mut Ec2Model, scenario: &Scenario) -> Ec2Result<Option<ScenarioResources>> {
    let Some(cidr) = scenario.vpc_cidr else {
        return Ok(None);
    };
    let vpc = model.create_vpc(cidr)?;
    let vpc_ipv6 = if scenario.ipv6 {
        Some(model.assign_vpc_ipv6_cidr_block(&vpc.id)?)
    } else {
        None
    };
    let mut subnet_ids = Vec::new();
    for (index, (cidr, zone)) in scenario.subnets.iter().enumerate() {
        let subnet = model.create_subnet(&vpc.id, *cidr, zone)?;
        if let Some(block) = vpc_ipv6 {
            model.associate_subnet_ipv6_cidr_block(&subnet.id, nth_64(block, index)?)?;
        }
        subnet_ids.push(subnet.id);
    }
    let mut instance_id = None;
    let mut primary_eni_id = None;
    if let (Some(instance_type), Some(subnet_id)) =
        (&scenario.node_instance_type, subnet_ids.first())
    {
        let instance = model.run_instance(RunInstance::new(instance_type, subnet_id))?;
        primary_eni_id = Some(instance.primary_network_interface_id.clone());
        instance_id = Some(instance.id);
    }
    Ok(Some(ScenarioResources {
        vpc_id: vpc.id,
        security_group_id: vpc.default_security_group_id,
        subnet_ids,
        instance_id,
        primary_eni_id,
    }))
}

/// The `index`-th /64 of a /56.
fn nth_64(block: Ipv6Net, index: usize) -> Ec2Result<Ipv6Net> {
    let base = u128::from(block.network());
    let index = u128::try_from(index).unwrap_or(u128::MAX) & 0xff;
    Ipv6Net::new((base | (index << 64)).into(), 64)
        .map_err(|e| Ec2Error::invalid_value(e.to_string()))
}

/// State shared by the listeners and the handle.
struct Shared {
    model: Mutex<Ec2Model>,
    imds: Mutex<Imds>,
    faults: Mutex<Faults>,
    log: Mutex<RequestLog>,
    links: Option<tokio::sync::Mutex<NodeLinks<NetlinkLinks>>>,
    link_errors: Mutex<Vec<String>>,
    next_request: AtomicU64,
    started: Instant,
}

/// Lock a mutex, ignoring poisoning: every critical section leaves the state consistent (the
/// model changes nothing on failure), so a panicked holder leaves nothing half-done.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn next_request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{n:012x}")
    }

    /// Bring hypervisor links in line with the model; failures are kept for
    /// [`EmulatorHandle::link_errors`] (EC2's API does not report hypervisor trouble either).
    async fn sync_links(&self) {
        let Some(links) = &self.links else { return };
        let mut links = links.lock().await;
        let desired = links.desired(&lock(&self.model));
        let result = match desired {
            Ok(desired) => links.reconcile(desired).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            lock(&self.link_errors).push(e.to_string());
        }
    }

    fn answer_imds(&self, request: &PlainRequest) -> Response<Full<Bytes>> {
        let lag = lock(&self.faults).config().imds_lag;
        let response = {
            let model = lock(&self.model);
            lock(&self.imds).handle(
                ImdsRequest {
                    method: &request.method,
                    path: &request.path,
                    token: request.header(TOKEN_HEADER),
                    token_ttl: request.header(TOKEN_TTL_HEADER),
                },
                &model,
                Instant::now(),
                lag,
            )
        };
        let headers: Vec<(&str, String)> = response
            .token_ttl
            .map(|ttl| (TOKEN_TTL_HEADER, ttl.to_string()))
            .into_iter()
            .collect();
        let content_type = if request.path.ends_with("/document") {
            "application/json"
        } else {
            "text/plain"
        };
        server::respond(response.status, content_type, response.body, &headers)
    }
}

/// One EC2 API request: route, faults, dry run, the model, IMDS observation, hypervisor
/// links, the log; then the XML answer.
async fn answer_ec2(shared: Arc<Shared>, request: PlainRequest) -> Response<Full<Bytes>> {
    let received_at = SystemTime::now();
    let since_start = shared.started.elapsed();
    let request_id = shared.next_request_id();
    let mut params = Params::from_form(request.query.as_deref().unwrap_or_default().as_bytes());
    if let Some(body) = &request.body {
        params.extend(Params::from_form(body));
    }
    let latency = lock(&shared.faults).config().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let answered = run_action(&shared, &params, &request_id, &request).await;
    let (status, body) = answered.response(&request_id);
    lock(&shared.log).record(
        answered.record(&params, &request_id, received_at, since_start),
        answered.injected,
    );
    server::respond(
        status,
        "text/xml;charset=UTF-8",
        body,
        &[("x-amzn-requestid", request_id)],
    )
}

/// The answer to one request (see [`api::answer`]), with what a change of the model brings
/// here: IMDS observes it, hypervisor links follow it.
async fn run_action(
    shared: &Shared,
    params: &Params,
    request_id: &str,
    request: &PlainRequest,
) -> api::Answered {
    if request.body.is_none() {
        return api::Answered {
            result: Err(Ec2Error::invalid_value(format!(
                "The request body is larger than {} bytes or unreadable",
                server::MAX_BODY_BYTES
            ))),
            action: None,
            injected: false,
        };
    }
    let answered = {
        let mut faults = lock(&shared.faults);
        let mut model = lock(&shared.model);
        let answered = api::answer(
            &mut model,
            &mut faults,
            params,
            request_id,
            Instant::now(),
            wasmcni_clock::unix_ms(),
        );
        if answered.changed() {
            lock(&shared.imds).observe(&model, Instant::now());
        }
        answered
    };
    if answered.changed() {
        shared.sync_links().await;
    }
    answered
}

/// A running emulator. Dropping it stops the listeners; [`EmulatorHandle::shutdown`] also
/// removes hypervisor links.
pub struct EmulatorHandle {
    shared: Arc<Shared>,
    resources: Option<ScenarioResources>,
    ec2_addr: SocketAddr,
    imds_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("ec2_addr", &self.ec2_addr)
            .field("imds_addr", &self.imds_addr)
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// Base URL of the EC2 API, e.g. `http://127.0.0.1:41234`.
    pub fn ec2_url(&self) -> String {
        format!("http://{}", self.ec2_addr)
    }

    /// Base URL of IMDS, e.g. `http://127.0.0.1:41235`.
    pub fn imds_url(&self) -> String {
        format!("http://{}", self.imds_addr)
    }

    /// Address of the EC2 API listener.
    pub fn ec2_addr(&self) -> SocketAddr {
        self.ec2_addr
    }

    /// Address of the IMDS listener.
    pub fn imds_addr(&self) -> SocketAddr {
        self.imds_addr
    }

    /// What the scenario created, if it created a VPC.
    pub fn resources(&self) -> Option<&ScenarioResources> {
        self.resources.as_ref()
    }

    /// Read or change the model directly. Changes are visible to the API at once and to
    /// IMDS after the lag; hypervisor links follow at the next mutating API call or
    /// [`EmulatorHandle::sync_links`].
    pub fn with_model<R>(&self, f: impl FnOnce(&mut Ec2Model) -> R) -> R {
        let mut model = lock(&self.shared.model);
        let generation = model.generation();
        let result = f(&mut model);
        if model.generation() != generation {
            lock(&self.shared.imds).observe(&model, Instant::now());
        }
        result
    }

    /// Bring hypervisor links in line with the model now.
    pub async fn sync_links(&self) {
        self.shared.sync_links().await;
    }

    /// Errors hypervisor mode met so far (creating or removing links).
    pub fn link_errors(&self) -> Vec<String> {
        lock(&self.shared.link_errors).clone()
    }

    /// The current fault configuration.
    pub fn faults(&self) -> FaultConfig {
        lock(&self.shared.faults).config().clone()
    }

    /// Replace the fault configuration (token buckets restart full).
    pub fn set_faults(&self, config: FaultConfig) {
        lock(&self.shared.faults).set_config(config);
    }

    /// Change the fault configuration in place.
    pub fn update_faults(&self, change: impl FnOnce(&mut FaultConfig)) {
        let mut faults = lock(&self.shared.faults);
        let mut config = faults.config().clone();
        change(&mut config);
        faults.set_config(config);
    }

    /// Throttle `class` with `bucket`, or stop throttling it.
    pub fn set_throttling(&self, class: ActionClass, bucket: Option<BucketConfig>) {
        self.update_faults(|config| match bucket {
            Some(bucket) => {
                config.throttling.insert(class, bucket);
            }
            None => {
                config.throttling.remove(&class);
            }
        });
    }

    /// Fail requests with probability `rate` with `kind` (seeded, so runs repeat).
    pub fn set_error_rate(&self, rate: f64, kind: InjectedError) {
        self.update_faults(|config| {
            config.error_rate = rate;
            config.error_kind = kind;
        });
    }

    /// Delay every EC2 response by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.update_faults(|config| config.latency = latency);
    }

    /// Hide new ENIs and addresses from IMDS for `lag`.
    pub fn set_imds_lag(&self, lag: Duration) {
        self.update_faults(|config| config.imds_lag = lag);
    }

    /// Fail the next `count` calls of `action` with `error`.
    pub fn fail_next(&self, action: &str, count: usize, error: InjectedError) {
        lock(&self.shared.faults).fail_next(action, count, error);
    }

    /// Make IMDS speak for another instance (its current state visible at once).
    pub fn set_imds_instance(&self, instance_id: Option<String>) {
        let model = lock(&self.shared.model);
        lock(&self.shared.imds).set_instance(instance_id, &model);
    }

    /// Answer IMDS GETs without a token (IMDSv1).
    pub fn allow_imdsv1(&self, allow: bool) {
        lock(&self.shared.imds).allow_imdsv1(allow);
    }

    /// Every EC2 request answered so far.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).records().to_vec()
    }

    /// Counters per action.
    pub fn counters(&self) -> BTreeMap<String, ActionCounters> {
        lock(&self.shared.log).counters().clone()
    }

    /// Counters of one action (zero if never called).
    pub fn counter(&self, action: &str) -> ActionCounters {
        self.counters().get(action).copied().unwrap_or_default()
    }

    /// Forget the request log and counters.
    pub fn clear_request_log(&self) {
        lock(&self.shared.log).clear();
    }

    /// Stop both listeners, drop open connections and remove hypervisor links.
    pub async fn shutdown(mut self) -> Result<(), HypervisorError> {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(links) = &self.shared.links {
            links.lock().await.remove_all().await?;
        }
        Ok(())
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
