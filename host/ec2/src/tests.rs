//! Discovery and limits through the real aws-config IMDS client and aws-sdk-ec2, against the
//! EC2 + IMDS emulator on loopback. Every call is bounded: no test can hang.

use std::future::Future;
use std::time::Duration;

use ec2_emulator::{AssignPrivateIpAddresses, CreateNetworkInterface, Emulator, Scenario};

use ipnet::Ipv4Net;

use super::*;
use wasmcni_core::eni::EniProvider;

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 30 s"))
}

/// The emulator with the default scenario on an m5.large node.
async fn m5_large() -> ec2_emulator::EmulatorHandle {
    within(
        "starting the emulator",
        Emulator::start(Scenario::default().with_node_instance_type("m5.large")),
    )
    .await
    .expect("emulator")
}

fn endpoints(emulator: &ec2_emulator::EmulatorHandle) -> Endpoints {
    Endpoints {
        ec2: Some(emulator.ec2_url()),
        imds: Some(emulator.imds_url()),
        static_credentials: Some(("AKIDWASMCNI".into(), "secret".into())),
        max_attempts: 2,
        call_timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_the_node_its_enis_and_its_limits() {
    let emulator = m5_large().await;
    let resources = emulator.resources().expect("scenario").clone();
    let node = resources.instance_id.clone().expect("node");
    let second = emulator.with_model(|model| {
        let eni = model
            .create_network_interface(CreateNetworkInterface::new(&resources.subnet_ids[1]))
            .expect("eni");
        model
            .attach_network_interface(&eni.id, &node, 1, None)
            .expect("attach");
        model
            .assign_private_ip_addresses(AssignPrivateIpAddresses::count(&eni.id, 2))
            .expect("ips");
        model
            .assign_private_ip_addresses(AssignPrivateIpAddresses::prefix_count(&eni.id, 1))
            .expect("prefix");
        eni.id
    });
    let endpoints = endpoints(&emulator);
    let imds = imds_client(&endpoints).expect("imds client");
    let identity = within("discover", discover(&imds)).await.expect("discover");
    assert_eq!(identity.instance_id, node);
    assert_eq!(identity.instance_type, "m5.large");
    assert_eq!(identity.region, "us-west-2");
    assert!(
        identity.availability_zone.starts_with("us-west-2"),
        "{identity:?}"
    );
    assert_eq!(identity.enis.len(), 2, "{identity:?}");
    let primary = identity.primary().expect("primary ENI");
    assert_eq!(Some(&primary.id), resources.primary_eni_id.as_ref());
    assert_eq!(primary.mac, identity.primary_mac);
    assert_eq!(primary.subnet_id, resources.subnet_ids[0]);
    assert_eq!(primary.security_groups, vec![resources.security_group_id]);
    assert!(primary.subnet_cidr.contains(&primary.ipv4s[0]));
    assert!(primary.ipv4_prefixes.is_empty(), "404 means none");
    assert_eq!(
        primary.vpc_cidrs,
        ["10.0.0.0/16".parse::<Ipv4Net>().unwrap()]
    );
    let eni = &identity.enis[1];
    assert_eq!((eni.id.as_str(), eni.device_number), (second.as_str(), 1));
    assert_eq!(
        eni.ipv4s.len(),
        3,
        "its own address and two secondary: {eni:?}"
    );
    assert_eq!(eni.ipv4_prefixes.len(), 1);
    assert_eq!(eni.ipv4_prefixes[0].prefix_len(), 28);

    let ec2 = ec2_client(&identity.region, &endpoints).await;
    let limits = within("limits", instance_limits(&ec2, &identity.instance_type))
        .await
        .expect("limits");
    assert_eq!(
        limits,
        InstanceLimits {
            instance_type: "m5.large".into(),
            max_enis: 3,
            ipv4_per_eni: 10,
            prefix_delegation: true,
            vcpus: 2,
        }
    );
    assert_eq!(max_pods(&limits, false, false), 29);

    let err = within("unknown type", instance_limits(&ec2, "m5.huge"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Ec2Error::Api { action: "DescribeInstanceTypes", code, .. } if code == "InvalidInstanceType"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_imds_is_an_error_naming_the_path() {
    // A port nothing listens on: connection refused, bounded by one attempt.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let endpoints = Endpoints {
        imds: Some(url),
        max_attempts: 1,
        call_timeout: Duration::from_secs(2),
        ..Endpoints::default()
    };
    let imds = imds_client(&endpoints).unwrap();
    let err = within("discover", discover(&imds)).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("IMDS /latest/meta-data/instance-id: "),
        "{err}"
    );
}

async fn provider_on(emulator: &ec2_emulator::EmulatorHandle, cluster: &str) -> crate::Ec2Provider {
    let settings = wasmcni_config::Ec2ProviderConfig {
        ec2_endpoint: Some(emulator.ec2_url()),
        imds_endpoint: Some(emulator.imds_url()),
        max_attempts: 3,
        ..Default::default()
    };
    within(
        "provider start",
        crate::Ec2Provider::start_with(
            &settings,
            cluster,
            Some(("AKIDWASMCNI".into(), "secret".into())),
        ),
    )
    .await
    .expect("provider")
}

/// An unattached ENI in `subnet` tagged as a wasmcni (VPC CNI) ENI of `instance` in
/// `cluster`, created `age_s` seconds ago.
fn tagged_eni(
    emulator: &ec2_emulator::EmulatorHandle,
    subnet: &str,
    instance: &str,
    cluster: &str,
    age_s: u64,
) -> String {
    let created = std::time::SystemTime::now() - Duration::from_secs(age_s);
    let secs = created
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut request = CreateNetworkInterface::new(subnet);
    request.tags = [
        (provider::TAG_INSTANCE.to_owned(), instance.to_owned()),
        (
            provider::TAG_CREATED.to_owned(),
            aws_sdk_ec2::primitives::DateTime::from_secs(secs as i64)
                .fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime)
                .unwrap(),
        ),
        (provider::TAG_CLUSTER.to_owned(), cluster.to_owned()),
    ]
    .into();
    emulator
        .with_model(|m| m.create_network_interface(request))
        .expect("eni")
        .id
}

fn exists(emulator: &ec2_emulator::EmulatorHandle, id: &str) -> bool {
    emulator.with_model(|m| m.network_interface(id).is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_deletes_only_old_unattached_enis_of_its_own_cluster() {
    let emulator = m5_large().await;
    let resources = emulator.resources().expect("scenario").clone();
    let subnet = &resources.subnet_ids[0];
    let node = resources.instance_id.clone().expect("node");
    // Left by this instance before a crash: deleted at start, whatever its age.
    let own_young = tagged_eni(&emulator, subnet, &node, "prod", 5);
    let other_node_old = tagged_eni(&emulator, subnet, "i-0other", "prod", 900);
    let other_node_young = tagged_eni(&emulator, subnet, "i-0other", "prod", 30);
    let other_cluster_old = tagged_eni(&emulator, subnet, "i-0other", "staging", 900);
    let untagged = emulator
        .with_model(|m| m.create_network_interface(CreateNetworkInterface::new(subnet)))
        .expect("eni")
        .id;
    let provider = provider_on(&emulator, "prod").await;
    assert!(
        !exists(&emulator, &own_young),
        "own unattached ENI deleted at start"
    );
    assert!(
        exists(&emulator, &other_node_old),
        "start deletes only its own"
    );

    let deleted = within(
        "collector",
        provider.delete_unattached(false, Duration::from_secs(300)),
    )
    .await
    .expect("collector");
    assert_eq!(deleted, 1);
    assert!(
        !exists(&emulator, &other_node_old),
        "old leak of the cluster deleted"
    );
    assert!(
        exists(&emulator, &other_node_young),
        "younger than the threshold: kept"
    );
    assert!(
        exists(&emulator, &other_cluster_old),
        "another cluster's: kept"
    );
    assert!(exists(&emulator, &untagged), "not wasmcni's: kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attach_leaves_no_eni_and_a_failed_unassign_restores_only_what_ec2_still_has() {
    let emulator = m5_large().await;
    let resources = emulator.resources().expect("scenario").clone();
    let provider = provider_on(&emulator, "").await;
    let enis_before = emulator.with_model(|m| {
        m.describe_network_interfaces(&[], &[], &ec2_emulator::Page::default())
            .unwrap()
            .items
            .len()
    });
    emulator.fail_next(
        "AttachNetworkInterface",
        3,
        ec2_emulator::InjectedError::InternalError,
    );
    let err = within(
        "create",
        provider.create_and_attach(
            &resources.subnet_ids[0],
            std::slice::from_ref(&resources.security_group_id),
            2,
            0,
            provider.ownership_tags(),
        ),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("AttachNetworkInterface"), "{err}");
    let enis_after = emulator.with_model(|m| {
        m.describe_network_interfaces(&[], &[], &ec2_emulator::Page::default())
            .unwrap()
            .items
            .len()
    });
    assert_eq!(
        enis_after, enis_before,
        "the ENI whose attach failed was deleted"
    );

    // Unassign: EC2 refuses every attempt, so every address is still EC2's and comes back.
    let primary = resources.primary_eni_id.clone().unwrap();
    let added = within("assign", provider.assign(&primary, 3, false))
        .await
        .expect("assign");
    provider.withdraw(&primary, &added.ips, &[]);
    emulator.fail_next(
        "UnassignPrivateIpAddresses",
        3,
        ec2_emulator::InjectedError::InternalError,
    );
    assert!(
        within("unassign", provider.unassign(&primary, &added.ips, &[]))
            .await
            .is_err()
    );
    let (ips, _) = within("still", provider.still_assigned(&primary, &added.ips, &[])).await;
    assert_eq!(ips, added.ips, "all still assigned in EC2: all restored");
    // EC2 took one back behind the daemon's back: that one is not restored.
    emulator.with_model(|m| {
        m.unassign_private_ip_addresses(ec2_emulator::UnassignPrivateIpAddresses {
            network_interface_id: primary.clone(),
            private_ip_addresses: vec![added.ips[0]],
            ..Default::default()
        })
        .expect("unassign in the model")
    });
    let (ips, _) = within("still", provider.still_assigned(&primary, &added.ips, &[])).await;
    assert_eq!(ips, added.ips[1..].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_given_back_is_not_readopted_while_ec2_still_lists_it() {
    use wasmcni_core::ipam::Provider as _;
    let emulator = m5_large().await;
    let resources = emulator.resources().expect("scenario").clone();
    let provider = provider_on(&emulator, "").await;
    let primary = resources.primary_eni_id.clone().unwrap();
    let added = within("assign", provider.assign(&primary, 3, false))
        .await
        .expect("assign");
    let in_pool = |provider: &crate::Ec2Provider| -> Vec<std::net::Ipv4Addr> {
        provider
            .inventory()
            .blocks
            .iter()
            .map(|b| b.cidr.network())
            .collect()
    };
    // Given back, but EC2's DescribeNetworkInterfaces still lists it (it settles later; here
    // the model never unassigns it): a refresh does not take it back into the pool...
    let released = added.ips[0];
    provider.withdraw(&primary, &[released], &[]);
    within("refresh", provider.refresh())
        .await
        .expect("refresh");
    let pool = in_pool(&provider);
    assert!(!pool.contains(&released), "{released} re-adopted: {pool:?}");
    assert!(pool.contains(&added.ips[1]) && pool.contains(&added.ips[2]));
    // ...while an unassign that failed puts it back at once.
    provider.restore(&primary, &[released], &[]);
    within("refresh", provider.refresh())
        .await
        .expect("refresh");
    assert!(in_pool(&provider).contains(&released));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_waits_out_ec2_throttling_and_server_errors() {
    use ec2_emulator::{FaultConfig, InjectedError};
    let emulator = m5_large().await;
    // Every EC2 call throttled or failing with a 500 for the first 2.5 s; IMDS answers.
    emulator.set_faults(FaultConfig {
        throttle_rate: 0.5,
        error_rate: 1.0,
        error_kind: InjectedError::InternalError,
        ..FaultConfig::default()
    });
    let started = std::time::Instant::now();
    let settings = wasmcni_config::Ec2ProviderConfig {
        ec2_endpoint: Some(emulator.ec2_url()),
        imds_endpoint: Some(emulator.imds_url()),
        max_attempts: 1,
        ..Default::default()
    };
    let start = crate::Ec2Provider::start_with(
        &settings,
        "test",
        Some(("AKIDWASMCNI".into(), "secret".into())),
    );
    let heal = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        emulator.set_faults(FaultConfig::default());
    };
    let (provider, ()) = within("provider start", async { tokio::join!(start, heal) }).await;
    let provider = provider.expect("the start waits the faults out");
    assert!(started.elapsed() >= Duration::from_millis(2500));
    assert_eq!(provider.identity().instance_type, "m5.large");
    let counters = emulator.counters();
    assert!(
        counters
            .values()
            .map(|c| c.throttled + c.injected)
            .sum::<u64>()
            > 0,
        "{counters:?}"
    );
}

#[tokio::test]
async fn start_patience_gives_up_at_its_deadline_with_ec2s_last_answer() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let api_error = |code: &str| Ec2Error::Api {
        code: code.into(),
        action: "DescribeSubnets",
        message: "Request limit exceeded.".into(),
    };
    // EC2 throttles for ever: attempts at 0, 1 and 3 s (waits double), then the next wait
    // would pass the deadline, so the last answer is returned, by the deadline. (Real time on
    // a loaded machine: a late wake-up may cost the third attempt, never the deadline.)
    let calls = AtomicU32::new(0);
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_millis(3500);
    let outcome: Result<(), Ec2Error> = crate::provider::patiently("subnets", deadline, || {
        calls.fetch_add(1, Ordering::Relaxed);
        async { Err(api_error("RequestLimitExceeded")) }
    })
    .await;
    let elapsed = started.elapsed();
    assert!(
        matches!(&outcome, Err(Ec2Error::Api { code, .. }) if code == "RequestLimitExceeded"),
        "{outcome:?}"
    );
    assert!(
        (2..=3).contains(&calls.load(Ordering::Relaxed)),
        "{} attempts",
        calls.load(Ordering::Relaxed)
    );
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_millis(3500 + 1000),
        "gave up after {elapsed:?}"
    );
    // A refusal EC2 would repeat is returned at once.
    let calls = AtomicU32::new(0);
    let started = tokio::time::Instant::now();
    let outcome: Result<(), Ec2Error> =
        crate::provider::patiently("subnets", started + Duration::from_secs(60), || {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(api_error("UnauthorizedOperation")) }
        })
        .await;
    assert!(matches!(outcome, Err(Ec2Error::Api { .. })));
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert!(started.elapsed() < Duration::from_secs(1));
}
