//! Discovery and limits through the real aws-config IMDS client and aws-sdk-ec2, against the
//! EC2 + IMDS emulator on loopback. Every call is bounded: no test can hang.

use std::future::Future;
use std::time::Duration;

use ec2_emulator::{AssignPrivateIpAddresses, CreateNetworkInterface, Emulator, Scenario};

use super::*;

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 30 s"))
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
    let emulator = within(
        "starting the emulator",
        Emulator::start(Scenario::default().with_node_instance_type("m5.large")),
    )
    .await
    .expect("emulator");
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
