//! Faults as the SDK sees them: throttling retried by the standard retry strategy, injected
//! 5xx errors, added latency, and the request log and counters.

use std::time::{Duration, Instant};

use ec2_emulator::{codes, ActionClass, BucketConfig, InjectedError, Scenario};

use crate::common::{code, ec2_client, start, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_retries_scripted_throttling() {
    let (emulator, _) = start(Scenario::default()).await;
    let eni = emulator
        .resources()
        .and_then(|r| r.primary_eni_id.clone())
        .expect("primary");
    emulator.fail_next("AssignPrivateIpAddresses", 2, InjectedError::Throttle);
    let retrying = ec2_client(&emulator.ec2_url(), 3);
    let assigned = within(
        "AssignPrivateIpAddresses with retries",
        retrying
            .assign_private_ip_addresses()
            .network_interface_id(&eni)
            .secondary_private_ip_address_count(1)
            .send(),
    )
    .await
    .expect("third attempt succeeds");
    assert_eq!(assigned.assigned_private_ip_addresses().len(), 1);
    let counters = emulator.counter("AssignPrivateIpAddresses");
    assert_eq!(
        (counters.calls, counters.throttled, counters.succeeded),
        (3, 2, 1)
    );
    let outcomes: Vec<String> = emulator
        .request_log()
        .iter()
        .map(|r| format!("{} {} {}", r.action, r.status, r.outcome()))
        .collect();
    assert_eq!(
        outcomes,
        [
            "AssignPrivateIpAddresses 503 RequestLimitExceeded",
            "AssignPrivateIpAddresses 503 RequestLimitExceeded",
            "AssignPrivateIpAddresses 200 OK",
        ]
    );
    assert_eq!(
        emulator.request_log()[2]
            .params
            .get("SecondaryPrivateIpAddressCount")
            .map(String::as_str),
        Some("1")
    );

    // Without retries the code reaches the caller.
    emulator.fail_next("AssignPrivateIpAddresses", 1, InjectedError::Throttle);
    let once = ec2_client(&emulator.ec2_url(), 1);
    let throttled = within(
        "AssignPrivateIpAddresses without retries",
        once.assign_private_ip_addresses()
            .network_interface_id(&eni)
            .secondary_private_ip_address_count(1)
            .send(),
    )
    .await;
    assert_eq!(code(throttled), codes::REQUEST_LIMIT_EXCEEDED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_bucket_throttles_a_burst_and_the_sdk_rides_it_out() {
    let (emulator, no_retry) = start(Scenario::default()).await;
    emulator.set_throttling(ActionClass::NonMutating, Some(BucketConfig::new(2.0, 10.0)));
    // Without retries: two calls pass, the third is throttled.
    for _ in 0..2 {
        within("DescribeSubnets", no_retry.describe_subnets().send())
            .await
            .expect("within the burst");
    }
    let third = within("DescribeSubnets", no_retry.describe_subnets().send()).await;
    assert_eq!(code(third), codes::REQUEST_LIMIT_EXCEEDED);
    // Mutating calls have their own bucket (none configured).
    let subnet = emulator.resources().expect("scenario").subnet_ids[0].clone();
    within(
        "CreateNetworkInterface",
        no_retry
            .create_network_interface()
            .subnet_id(&subnet)
            .send(),
    )
    .await
    .expect("not throttled");

    // With retries a burst of 8 calls all succeed while the bucket refills at 10/s.
    let retrying = ec2_client(&emulator.ec2_url(), 10);
    for _ in 0..8 {
        within(
            "DescribeSubnets (retrying)",
            retrying.describe_subnets().send(),
        )
        .await
        .expect("retried until a token was free");
    }
    let counters = emulator.counter("DescribeSubnets");
    assert_eq!(counters.succeeded, 2 + 8);
    assert!(counters.throttled >= 1, "{counters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_server_errors_and_latency() {
    let (emulator, no_retry) = start(Scenario::default()).await;
    emulator.set_error_rate(1.0, InjectedError::InternalError);
    let failed = within("DescribeInstances", no_retry.describe_instances().send()).await;
    assert_eq!(code(failed), codes::INTERNAL_ERROR);
    assert_eq!(emulator.request_log()[0].status, 500);
    emulator.set_error_rate(1.0, InjectedError::Unavailable);
    let failed = within("DescribeInstances", no_retry.describe_instances().send()).await;
    assert_eq!(code(failed), codes::UNAVAILABLE);
    assert_eq!(emulator.request_log()[1].status, 503);
    assert_eq!(emulator.counter("DescribeInstances").injected, 2);

    // A seeded rate of 0.5 with retries: every call eventually succeeds.
    emulator.set_error_rate(0.5, InjectedError::InternalError);
    let retrying = ec2_client(&emulator.ec2_url(), 8);
    for _ in 0..5 {
        within(
            "DescribeInstances (retrying)",
            retrying.describe_instances().send(),
        )
        .await
        .expect("retried past injected errors");
    }
    emulator.set_error_rate(0.0, InjectedError::InternalError);

    emulator.set_latency(Duration::from_millis(150));
    let started = Instant::now();
    within("DescribeVpcs", no_retry.describe_vpcs().send())
        .await
        .expect("slow but fine");
    assert!(started.elapsed() >= Duration::from_millis(150));
}
