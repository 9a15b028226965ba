//! Faults and limits on demand: EC2-style throttling (a token bucket per action class,
//! answering `RequestLimitExceeded`), injected server errors with a seeded probability,
//! scripted failures of the next N calls of an action, added latency and IMDS lag; plus the
//! request log and per-action counters tests read.
//!
//! Everything here is pure: the caller passes the current [`Instant`], so the buckets are
//! unit-tested without sleeping.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use crate::api::{Action, ActionClass};
use crate::error::{codes, Ec2Error};
use crate::rng::SeededRng;

/// A token bucket: `capacity` requests at once, refilled at `refill_per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketConfig {
    /// Largest burst (bucket size).
    pub capacity: f64,
    /// Tokens added per second, up to `capacity`.
    pub refill_per_second: f64,
}

impl BucketConfig {
    /// A bucket of `capacity` tokens refilled at `refill_per_second`.
    pub fn new(capacity: f64, refill_per_second: f64) -> Self {
        Self {
            capacity,
            refill_per_second,
        }
    }

    /// EC2's documented default bucket for the class: non-mutating actions 100 tokens
    /// refilled at 20/s, mutating actions 200 tokens refilled at 5/s.
    pub fn ec2_default(class: ActionClass) -> Self {
        match class {
            ActionClass::NonMutating => Self::new(100.0, 20.0),
            ActionClass::Mutating => Self::new(200.0, 5.0),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct BucketState {
    config: BucketConfig,
    tokens: f64,
    last_refill: Instant,
}

impl BucketState {
    fn new(config: BucketConfig, now: Instant) -> Self {
        Self {
            config,
            tokens: config.capacity,
            last_refill: now,
        }
    }

    /// Take one token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.config.refill_per_second).min(self.config.capacity);
        self.last_refill = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A server-side error to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedError {
    /// `RequestLimitExceeded`, HTTP 503 (what throttling answers).
    Throttle,
    /// `InternalError`, HTTP 500.
    InternalError,
    /// `Unavailable`, HTTP 503.
    Unavailable,
}

impl InjectedError {
    /// The EC2 error this fault answers with.
    pub fn to_error(self, action: &str) -> Ec2Error {
        match self {
            InjectedError::Throttle => Ec2Error::new(
                codes::REQUEST_LIMIT_EXCEEDED,
                format!("Request limit exceeded for {action}."),
            ),
            InjectedError::InternalError => {
                Ec2Error::new(codes::INTERNAL_ERROR, "An internal error has occurred")
            }
            InjectedError::Unavailable => Ec2Error::new(
                codes::UNAVAILABLE,
                "The server is overloaded and cannot handle the request",
            ),
        }
    }
}

/// The fault knobs. The default injects nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Token bucket per action class; a class without one is never throttled.
    pub throttling: BTreeMap<ActionClass, BucketConfig>,
    /// Probability (0..=1) that a request fails with `error_kind`.
    pub error_rate: f64,
    /// The error injected at `error_rate`.
    pub error_kind: InjectedError,
    /// Probability (0..=1) that a request is answered `RequestLimitExceeded` whatever the
    /// buckets say (checked before `error_rate`, drawn independently): "30 % of calls
    /// throttled" without modelling the account's other clients.
    pub throttle_rate: f64,
    /// Delay added before every EC2 response.
    pub latency: Duration,
    /// How long newly attached ENIs and newly assigned addresses stay invisible in IMDS.
    pub imds_lag: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            throttling: BTreeMap::new(),
            error_rate: 0.0,
            error_kind: InjectedError::InternalError,
            throttle_rate: 0.0,
            latency: Duration::ZERO,
            imds_lag: Duration::ZERO,
        }
    }
}

impl FaultConfig {
    /// Throttle every class with EC2's default buckets.
    pub fn with_ec2_throttling(mut self) -> Self {
        for class in [ActionClass::NonMutating, ActionClass::Mutating] {
            self.throttling
                .insert(class, BucketConfig::ec2_default(class));
        }
        self
    }
}

/// The fault state of a running emulator: configuration, bucket levels, the seeded
/// generator behind `error_rate`, and scripted failures.
#[derive(Debug)]
pub struct Faults {
    config: FaultConfig,
    buckets: BTreeMap<ActionClass, BucketState>,
    rng: SeededRng,
    scripted: BTreeMap<String, VecDeque<InjectedError>>,
}

impl Faults {
    /// Faults as `config` says, with random draws from `seed`.
    pub fn new(config: FaultConfig, seed: u64) -> Self {
        Self {
            config,
            buckets: BTreeMap::new(),
            rng: SeededRng::new(seed),
            scripted: BTreeMap::new(),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// Replace the configuration; buckets restart full.
    pub fn set_config(&mut self, config: FaultConfig) {
        self.config = config;
        self.buckets.clear();
    }

    /// Fail the next `count` calls of `action` with `error`, before any other fault.
    pub fn fail_next(&mut self, action: &str, count: usize, error: InjectedError) {
        self.scripted
            .entry(action.to_owned())
            .or_default()
            .extend(std::iter::repeat_n(error, count));
    }

    /// The fault to answer this request with, if any: a scripted failure first, then the
    /// class's token bucket, then the random error rate.
    pub fn decide(&mut self, action: &Action, now: Instant) -> Option<Ec2Error> {
        if let Some(error) = self
            .scripted
            .get_mut(action.name)
            .and_then(VecDeque::pop_front)
        {
            return Some(error.to_error(action.name));
        }
        let class = action.class();
        if let Some(config) = self.config.throttling.get(&class).copied() {
            let bucket = self
                .buckets
                .entry(class)
                .or_insert_with(|| BucketState::new(config, now));
            if !bucket.take(now) {
                return Some(InjectedError::Throttle.to_error(action.name));
            }
        }
        if self.draw(self.config.throttle_rate) {
            return Some(InjectedError::Throttle.to_error(action.name));
        }
        if self.draw(self.config.error_rate) {
            return Some(self.config.error_kind.to_error(action.name));
        }
        None
    }

    /// A seeded draw that is true with probability `rate` (no draw at all for 0, so a
    /// configuration without the knob keeps its sequence).
    fn draw(&mut self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        const SCALE: u64 = 1_000_000;
        // Truncation is fine: the rate only needs millionth resolution.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let threshold = (rate.clamp(0.0, 1.0) * SCALE as f64) as u64;
        self.rng.below(SCALE) < threshold
    }
}

/// One answered EC2 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Order of arrival, from 0.
    pub sequence: u64,
    /// The Action parameter (empty if missing).
    pub action: String,
    /// Every request parameter.
    pub params: BTreeMap<String, String>,
    /// HTTP status answered.
    pub status: u16,
    /// EC2 error code, or `None` on success.
    pub error_code: Option<String>,
    /// The requestId of the response.
    pub request_id: String,
    /// Wall-clock time the request arrived.
    pub received_at: SystemTime,
    /// Time from the emulator's start to the request's arrival.
    pub since_start: Duration,
}

impl RequestRecord {
    /// `OK` or the error code: what a test usually asserts on.
    pub fn outcome(&self) -> &str {
        self.error_code.as_deref().unwrap_or("OK")
    }
}

/// Counters of one action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActionCounters {
    /// Requests received.
    pub calls: u64,
    /// Requests answered successfully.
    pub succeeded: u64,
    /// Requests answered with an error from the model (a client error).
    pub failed: u64,
    /// Requests answered `RequestLimitExceeded`.
    pub throttled: u64,
    /// Requests answered with an injected 5xx (other than throttling).
    pub injected: u64,
}

/// The request log and counters.
#[derive(Debug, Default)]
pub struct RequestLog {
    records: Vec<RequestRecord>,
    counters: BTreeMap<String, ActionCounters>,
}

impl RequestLog {
    /// Record an answered request; `injected` says whether a fault (not the model) answered.
    pub fn record(&mut self, mut record: RequestRecord, injected: bool) {
        record.sequence = u64::try_from(self.records.len()).unwrap_or(u64::MAX);
        let counters = self.counters.entry(record.action.clone()).or_default();
        counters.calls += 1;
        match record.error_code.as_deref() {
            None => counters.succeeded += 1,
            Some(codes::REQUEST_LIMIT_EXCEEDED) => counters.throttled += 1,
            Some(_) if injected => counters.injected += 1,
            Some(_) => counters.failed += 1,
        }
        self.records.push(record);
    }

    /// Every request so far, in arrival order.
    pub fn records(&self) -> &[RequestRecord] {
        &self.records
    }

    /// Counters per action name.
    pub fn counters(&self) -> &BTreeMap<String, ActionCounters> {
        &self.counters
    }

    /// Forget everything recorded so far.
    pub fn clear(&mut self) {
        self.records.clear();
        self.counters.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::find;

    fn action(name: &str) -> &'static Action {
        find(name).expect("known action")
    }

    #[test]
    fn bucket_allows_a_burst_then_refills() {
        let start = Instant::now();
        let mut config = FaultConfig::default();
        config
            .throttling
            .insert(ActionClass::Mutating, BucketConfig::new(3.0, 2.0));
        let mut faults = Faults::new(config, 1);
        let assign = action("AssignPrivateIpAddresses");
        for _ in 0..3 {
            assert_eq!(faults.decide(assign, start), None);
        }
        let throttled = faults.decide(assign, start).expect("bucket empty");
        assert_eq!(throttled.code, codes::REQUEST_LIMIT_EXCEEDED);
        assert_eq!(throttled.http_status(), 503);
        // Half a second refills one token at 2/s.
        assert_eq!(
            faults.decide(assign, start + Duration::from_millis(500)),
            None
        );
        assert!(faults
            .decide(assign, start + Duration::from_millis(500))
            .is_some());
        // Describe calls have their own (absent) bucket.
        assert_eq!(faults.decide(action("DescribeSubnets"), start), None);
    }

    #[test]
    fn error_rate_is_deterministic_per_seed() {
        let now = Instant::now();
        let config = FaultConfig {
            error_rate: 0.3,
            ..FaultConfig::default()
        };
        let run = |seed| {
            let mut faults = Faults::new(config.clone(), seed);
            (0..200)
                .map(|_| faults.decide(action("DescribeInstances"), now).is_some())
                .collect::<Vec<bool>>()
        };
        let first = run(7);
        assert_eq!(first, run(7));
        let failures = first.iter().filter(|&&f| f).count();
        assert!(
            (30..=90).contains(&failures),
            "{failures} of 200 at rate 0.3"
        );
    }

    #[test]
    fn scripted_failures_come_first_and_run_out() {
        let now = Instant::now();
        let mut faults = Faults::new(FaultConfig::default(), 1);
        faults.fail_next("AttachNetworkInterface", 2, InjectedError::Unavailable);
        let attach = action("AttachNetworkInterface");
        for _ in 0..2 {
            let error = faults.decide(attach, now).expect("scripted");
            assert_eq!((error.code, error.http_status()), (codes::UNAVAILABLE, 503));
        }
        assert_eq!(faults.decide(attach, now), None);
        assert_eq!(faults.decide(action("DescribeInstances"), now), None);
    }

    #[test]
    fn log_counts_by_outcome() {
        let mut log = RequestLog::default();
        let record = |code: Option<&str>| RequestRecord {
            sequence: 0,
            action: "AssignPrivateIpAddresses".into(),
            params: BTreeMap::new(),
            status: 200,
            error_code: code.map(str::to_owned),
            request_id: String::new(),
            received_at: SystemTime::now(),
            since_start: Duration::ZERO,
        };
        log.record(record(None), false);
        log.record(record(Some(codes::REQUEST_LIMIT_EXCEEDED)), true);
        log.record(record(Some(codes::INTERNAL_ERROR)), true);
        log.record(
            record(Some(codes::PRIVATE_IP_ADDRESS_LIMIT_EXCEEDED)),
            false,
        );
        let counters = log.counters()["AssignPrivateIpAddresses"];
        assert_eq!(
            counters,
            ActionCounters {
                calls: 4,
                succeeded: 1,
                failed: 1,
                throttled: 1,
                injected: 1
            }
        );
        assert_eq!(log.records()[3].sequence, 3);
        assert_eq!(log.records()[1].outcome(), codes::REQUEST_LIMIT_EXCEEDED);
    }
}
