//! Shared by the integration tests: SDK clients pointed at the emulator, and a timeout around
//! every call so no test can hang.

use std::future::Future;
use std::time::Duration;

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use ec2_emulator::{Emulator, EmulatorHandle, Scenario};

/// No single client call (retries included) may take longer than this.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Await `future` or fail the test naming `what`.
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {CALL_TIMEOUT:?}"),
    }
}

/// A plain-HTTP client for loopback endpoints (no TLS needed).
pub(crate) fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_http()
}

/// An EC2 client for `endpoint` with static credentials, region us-west-2, standard retry
/// with `max_attempts` and short backoff, and an operation timeout.
pub(crate) fn ec2_client(endpoint: &str, max_attempts: u32) -> aws_sdk_ec2::Client {
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(Credentials::new(
            "AKIDEMULATOR",
            "emulator-secret",
            None,
            None,
            "ec2-emulator-tests",
        ))
        .endpoint_url(endpoint)
        .http_client(http_client())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(max_attempts)
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(200)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(CALL_TIMEOUT)
                .build(),
        )
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

/// The emulator with `scenario` and a client without retries (errors surface at once).
pub(crate) async fn start(scenario: Scenario) -> (EmulatorHandle, aws_sdk_ec2::Client) {
    let emulator = within("starting the emulator", Emulator::start(scenario))
        .await
        .expect("emulator starts");
    let client = ec2_client(&emulator.ec2_url(), 1);
    (emulator, client)
}

/// The EC2 error code of a failed SDK call.
pub(crate) fn code<T, E: ProvideErrorMetadata + std::fmt::Debug>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => panic!("the call succeeded; an EC2 error was expected"),
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("error without an EC2 code: {e:?}"))
            .to_owned(),
    }
}
