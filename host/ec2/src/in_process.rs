//! EC2 and IMDS in process: the real SDK clients (aws-sdk-ec2, aws-config's IMDS client),
//! their serialization and every call the provider makes, answered by the EC2 model of
//! [`wasmcni_ec2_model`] through its Query front and its IMDS, with no socket between. It is
//! plugged into the SDK as its HTTP client, so what runs above it is exactly the code that
//! talks to EC2 on a node.
//!
//! For `simulate`, which runs the daemon against it in virtual time: its clock is tokio's
//! (paused in a simulation), so the latency [`FaultConfig::latency`] adds is a tokio sleep,
//! and throttling buckets refill, cooldowns end and IMDS lags in the simulation's time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use wasmcni_ec2_model::faults::{Faults, RequestLog};
use wasmcni_ec2_model::imds::{Imds, ImdsRequest, TOKEN_HEADER, TOKEN_TTL_HEADER};
use wasmcni_ec2_model::wire::Params;
use wasmcni_ec2_model::{api, ActionCounters, Ec2Model, FaultConfig, RequestRecord};

/// EC2's API endpoint in process.
pub const EC2_ENDPOINT: &str = "http://ec2.in-process";
/// IMDS's endpoint in process.
pub const IMDS_ENDPOINT: &str = "http://imds.in-process";
/// The host of [`IMDS_ENDPOINT`]: requests to it are IMDS's, every other one EC2's API.
const IMDS_HOST: &str = "imds.in-process";

/// One EC2 account and region, and one node's IMDS, answering in process. Clones share it.
#[derive(Clone)]
pub struct InProcessEc2 {
    shared: Arc<Mutex<Shared>>,
}

struct Shared {
    model: Ec2Model,
    imds: Imds,
    faults: Faults,
    log: RequestLog,
    next_request: u64,
    started: tokio::time::Instant,
}

impl std::fmt::Debug for InProcessEc2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessEc2").finish_non_exhaustive()
    }
}

impl InProcessEc2 {
    /// `model` served with `faults`, IMDS answering for the instance `node` (random draws of
    /// both from `seed`).
    pub fn new(model: Ec2Model, node: Option<String>, faults: FaultConfig, seed: u64) -> Self {
        let mut imds = Imds::new(node, seed);
        imds.observe_at_boot(&model);
        InProcessEc2 {
            shared: Arc::new(Mutex::new(Shared {
                model,
                imds,
                faults: Faults::new(faults, seed),
                log: RequestLog::default(),
                next_request: 0,
                started: tokio::time::Instant::now(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Every critical section leaves the state whole (a failed action changes nothing).
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the model (a test or a simulation changing EC2 behind the node's back). `f`
    /// runs under the service's lock: it must not call the service.
    pub fn with_model<R>(&self, f: impl FnOnce(&mut Ec2Model) -> R) -> R {
        let mut shared = self.lock();
        let result = f(&mut shared.model);
        let Shared { model, imds, .. } = &mut *shared;
        imds.observe(model, tokio::time::Instant::now().into_std());
        result
    }

    /// Calls answered so far, per action.
    pub fn counters(&self) -> BTreeMap<String, ActionCounters> {
        self.lock().log.counters().clone()
    }

    /// Every call answered so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.records().to_vec()
    }

    /// This service as the SDK's HTTP client.
    pub fn http_client(&self) -> SharedHttpClient {
        SharedHttpClient::new(self.clone())
    }

    /// The answer to one request: IMDS by host, every other request EC2's API.
    fn answer(&self, request: &HttpRequest) -> HttpResponse {
        let now = tokio::time::Instant::now();
        let uri = request.uri();
        let (authority, path_and_query) = split_uri(uri);
        let mut shared = self.lock();
        let Shared {
            model,
            imds,
            faults,
            log,
            next_request,
            started,
        } = &mut *shared;
        if is_imds(authority) {
            let path = path_and_query.split('?').next().unwrap_or_default();
            let answer = imds.handle(
                ImdsRequest {
                    method: request.method(),
                    path,
                    token: request.headers().get(TOKEN_HEADER),
                    token_ttl: request.headers().get(TOKEN_TTL_HEADER),
                },
                model,
                now.into_std(),
                faults.config().imds_lag,
            );
            let mut response = response(answer.status, answer.body);
            if let Some(ttl) = answer.token_ttl {
                response
                    .headers_mut()
                    .insert(TOKEN_TTL_HEADER, ttl.to_string());
            }
            return response;
        }
        let mut params = path_and_query
            .split_once('?')
            .map(|(_, query)| Params::from_form(query.as_bytes()))
            .unwrap_or_default();
        params.extend(Params::from_form(
            request.body().bytes().unwrap_or_default(),
        ));
        let request_id = format!("00000000-0000-4000-8000-{:012x}", *next_request);
        *next_request += 1;
        let answered = api::answer(
            model,
            faults,
            &params,
            &request_id,
            now.into_std(),
            wasmcni_clock::unix_ms(),
        );
        if answered.changed() {
            imds.observe(model, now.into_std());
        }
        let (status, body) = answered.response(&request_id);
        log.record(
            answered.record(
                &params,
                &request_id,
                wasmcni_clock::now(),
                now.duration_since(*started),
            ),
            answered.injected,
        );
        let mut response = response(status, body);
        response
            .headers_mut()
            .insert("x-amzn-requestid", request_id);
        response
    }
}

/// Whether a request's authority (`host[:port]`) is the in-process IMDS's.
fn is_imds(authority: &str) -> bool {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    host.eq_ignore_ascii_case(IMDS_HOST)
}

/// `http://host[:port]/path?query` as (host[:port], /path?query).
fn split_uri(uri: &str) -> (&str, &str) {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    }
}

fn response(status: u16, body: String) -> HttpResponse {
    // Every status the model and IMDS answer is a valid one; 500 stands in otherwise.
    let status = StatusCode::try_from(status)
        .or_else(|_| StatusCode::try_from(500))
        .unwrap_or_else(|_| unreachable!("500 is a status code"));
    HttpResponse::new(status, SdkBody::from(body))
}

impl HttpConnector for InProcessEc2 {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let service = self.clone();
        HttpConnectorFuture::new(async move {
            // EC2's latency; IMDS answers at once (its lag is how late it sees changes).
            let (authority, _) = split_uri(request.uri());
            let latency = if is_imds(authority) {
                std::time::Duration::ZERO
            } else {
                service.lock().faults.config().latency
            };
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            Ok(service.answer(&request))
        })
    }
}

impl HttpClient for InProcessEc2 {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wasmcni_core::eni::EniProvider;
    use wasmcni_ec2_model::{ActionClass, BucketConfig, RunInstance};

    use super::*;

    /// A VPC with one subnet and an m5.large node in it: (EC2 in process, subnet, node).
    fn node(faults: FaultConfig) -> (InProcessEc2, String, String) {
        let mut model = Ec2Model::new(7);
        let vpc = model.create_vpc("10.0.0.0/16".parse().unwrap()).unwrap();
        let subnet = model
            .create_subnet(&vpc.id, "10.0.1.0/24".parse().unwrap(), "us-west-2a")
            .unwrap();
        let node = model
            .run_instance(RunInstance::new("m5.large", &subnet.id))
            .unwrap();
        let ec2 = InProcessEc2::new(model, Some(node.id.clone()), faults, 7);
        (ec2, subnet.id, node.id)
    }

    fn settings() -> wasmcni_config::Ec2ProviderConfig {
        wasmcni_config::Ec2ProviderConfig {
            max_attempts: 6,
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_provider_runs_its_real_calls_against_ec2_in_process_in_virtual_time() {
        let latency = Duration::from_millis(80);
        let (ec2, subnet, node) = node(FaultConfig {
            latency,
            ..Default::default()
        });
        let started = tokio::time::Instant::now();
        let provider = crate::Ec2Provider::start_in_process(&settings(), "sim", &ec2)
            .await
            .expect("start");
        // Discovery went through IMDS in process, limits and ENIs through EC2's API.
        assert_eq!(provider.identity().instance_id, node);
        assert_eq!(provider.identity().instance_type, "m5.large");
        assert_eq!(provider.limits().max_enis, 3);
        let (eni, _) = provider
            .create_and_attach(&subnet, &[], 2, 0, provider.ownership_tags())
            .await
            .expect("create and attach");
        let primary = provider.identity().primary().expect("primary").id.clone();
        let added = provider.assign(&primary, 3, false).await.expect("assign");
        assert_eq!(added.ips.len(), 3);

        // The model holds what the calls did.
        let (attached, on_primary) = ec2.with_model(|m| {
            let describe = |id: &str| {
                m.describe_network_interfaces(&[id.to_owned()], &[], &Default::default())
                    .unwrap()
                    .items
                    .remove(0)
            };
            (describe(&eni.eni.id), describe(&primary))
        });
        assert_eq!(
            attached.attachment.as_ref().map(|a| a.instance_id.clone()),
            Some(node.clone())
        );
        assert_eq!(attached.private_ip_addresses().count(), 3, "primary + 2");
        assert_eq!(on_primary.private_ip_addresses().count(), 4, "primary + 3");
        let counters = ec2.counters();
        for action in [
            "CreateNetworkInterface",
            "AttachNetworkInterface",
            "ModifyNetworkInterfaceAttribute",
        ] {
            assert_eq!(counters[action].succeeded, 1, "{action}: {counters:?}");
        }
        assert!(counters["AssignPrivateIpAddresses"].succeeded >= 1);

        // Every EC2 call waited its latency in the simulation's time, one after another.
        let calls: u64 = counters.values().map(|c| c.calls).sum();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= latency * u32::try_from(calls).unwrap(),
            "{calls} calls of {latency:?} in {elapsed:?}"
        );
    }

    /// An ENI's age is the simulation's: EC2 stamps `attachTime` with the clock that follows
    /// tokio's, and the provider reads it back on a refresh (before, the model stamped none,
    /// so every emulated ENI looked attached at the epoch).
    #[tokio::test(start_paused = true)]
    async fn an_enis_attach_time_and_age_follow_the_simulations_clock() {
        let (ec2, subnet, _) = node(FaultConfig::default());
        let provider = crate::Ec2Provider::start_in_process(&settings(), "sim", &ec2)
            .await
            .expect("start");
        let before = wasmcni_clock::unix_ms();
        let (eni, _) = provider
            .create_and_attach(&subnet, &[], 2, 0, provider.ownership_tags())
            .await
            .expect("create and attach");
        let after = wasmcni_clock::unix_ms();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        provider.refresh().await.expect("refresh");
        let read = provider
            .enis()
            .into_iter()
            .find(|e| e.eni.id == eni.eni.id)
            .expect("the ENI after the refresh");
        assert!(
            (before..=after).contains(&read.attached_unix_ms),
            "attached at {} (between {before} and {after})",
            read.attached_unix_ms
        );
        let age = read.info(true, wasmcni_clock::unix_ms()).age_ms;
        assert!(
            (3_600_000..=3_600_000 + (after - before) + 1).contains(&age),
            "an hour later the ENI is {age} ms old"
        );
    }

    #[test]
    fn imds_is_told_from_ec2_by_its_host() {
        assert!(is_imds("imds.in-process"));
        assert!(is_imds("imds.in-process:80"));
        assert!(is_imds("IMDS.in-process"));
        for other in [
            "",
            "process",
            "s.in-process",
            "ec2.in-process",
            "imds.in-process.evil",
        ] {
            assert!(!is_imds(other), "{other:?}");
        }
        assert_eq!(
            split_uri("http://imds.in-process/latest/api/token"),
            ("imds.in-process", "/latest/api/token")
        );
        assert_eq!(split_uri("http://ec2.in-process"), ("ec2.in-process", "/"));
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_waited_out_in_virtual_time() {
        // Mutating calls: a bucket of 1 refilled at 1 per second; the provider's retries (with
        // backoff) wait for the refill.
        let mut faults = FaultConfig::default();
        faults
            .throttling
            .insert(ActionClass::Mutating, BucketConfig::new(1.0, 1.0));
        let (ec2, _, _) = node(faults);
        let provider = crate::Ec2Provider::start_in_process(&settings(), "sim", &ec2)
            .await
            .expect("start");
        let primary = provider.identity().primary().expect("primary").id.clone();
        for _ in 0..3 {
            provider.assign(&primary, 1, false).await.expect("assign");
        }
        let assign = ec2.counters()["AssignPrivateIpAddresses"];
        assert_eq!(assign.succeeded, 3, "{assign:?}");
        assert!(assign.throttled >= 1, "{assign:?}");
    }
}
