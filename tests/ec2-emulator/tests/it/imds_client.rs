//! aws-config's IMDS client (IMDSv2, as the host will use it) against the emulator's IMDS:
//! identity, the per-MAC paths VPC CNI reads, 404 for absent keys, and lag.

use std::time::{Duration, Instant};

use aws_config::imds::client::error::ImdsError;
use aws_config::imds::Client as ImdsClient;
use aws_config::provider_config::ProviderConfig;
use ec2_emulator::{AssignPrivateIpAddresses, CreateNetworkInterface, EmulatorHandle, Scenario};

use crate::common::{http_client, start, within};

fn imds_client(emulator: &EmulatorHandle) -> ImdsClient {
    let config = ProviderConfig::without_region().with_http_client(http_client());
    ImdsClient::builder()
        .configure(&config)
        .endpoint(emulator.imds_url())
        .expect("endpoint url")
        .max_attempts(1)
        .build()
}

async fn get(imds: &ImdsClient, path: &str) -> Result<String, ImdsError> {
    within(path, imds.get(path))
        .await
        .map(|value| value.as_ref().to_owned())
}

fn status(result: Result<String, ImdsError>) -> u16 {
    match result {
        Err(ImdsError::ErrorResponse(response)) => response.response().status().as_u16(),
        other => panic!("expected an IMDS error response, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_identity_and_per_mac_paths() {
    let (emulator, _) = start(Scenario::default().with_node_instance_type("m5.large")).await;
    let resources = emulator.resources().expect("scenario").clone();
    let node = resources.instance_id.clone().expect("node");
    let eni = emulator.with_model(|model| {
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
        model.network_interface(&eni.id).expect("eni").clone()
    });
    let imds = imds_client(&emulator);

    assert_eq!(
        get(&imds, "/latest/meta-data/instance-id")
            .await
            .expect("id"),
        node
    );
    assert_eq!(
        get(&imds, "/latest/meta-data/instance-type")
            .await
            .expect("type"),
        "m5.large"
    );
    assert_eq!(
        get(&imds, "/latest/meta-data/placement/availability-zone")
            .await
            .expect("az"),
        "us-west-2a"
    );
    let document = get(&imds, "/latest/dynamic/instance-identity/document")
        .await
        .expect("document");
    let document: serde_json::Value = serde_json::from_str(&document).expect("json");
    assert_eq!(document["instanceId"], node.as_str());

    let macs = get(&imds, "/latest/meta-data/network/interfaces/macs/")
        .await
        .expect("macs");
    assert_eq!(macs.lines().count(), 2);
    assert!(macs.lines().any(|l| l == format!("{}/", eni.mac_address)));
    let base = format!(
        "/latest/meta-data/network/interfaces/macs/{}",
        eni.mac_address
    );
    let read = |name: &'static str| {
        let path = format!("{base}/{name}");
        let imds = imds.clone();
        async move { get(&imds, &path).await }
    };
    assert_eq!(read("device-number").await.expect("device"), "1");
    assert_eq!(read("interface-id").await.expect("id"), eni.id);
    assert_eq!(
        read("subnet-id").await.expect("subnet"),
        resources.subnet_ids[1]
    );
    assert_eq!(
        read("subnet-ipv4-cidr-block").await.expect("cidr"),
        "10.0.16.0/20"
    );
    assert_eq!(read("vpc-id").await.expect("vpc"), resources.vpc_id);
    assert_eq!(
        read("vpc-ipv4-cidr-blocks").await.expect("vpc cidrs"),
        "10.0.0.0/16"
    );
    assert_eq!(
        read("security-group-ids").await.expect("groups"),
        resources.security_group_id
    );
    assert_eq!(read("network-card").await.expect("card"), "0");
    let ipv4s = read("local-ipv4s").await.expect("ips");
    assert_eq!(
        ipv4s.lines().next(),
        Some(eni.private_ip_address.to_string().as_str())
    );
    assert_eq!(ipv4s.lines().count(), 3);
    assert_eq!(
        read("ipv4-prefix").await.expect("prefix"),
        eni.ipv4_prefixes[0].to_string()
    );
    assert_eq!(status(read("ipv6s").await), 404);
    assert_eq!(status(read("ipv6-prefix").await), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attached_eni_shows_up_after_the_lag() {
    let (emulator, ec2) = start(Scenario::default()).await;
    let resources = emulator.resources().expect("scenario").clone();
    let node = resources.instance_id.clone().expect("node");
    let lag = Duration::from_millis(600);
    emulator.set_imds_lag(lag);
    let imds = imds_client(&emulator);
    let macs = "/latest/meta-data/network/interfaces/macs/";
    assert_eq!(get(&imds, macs).await.expect("macs").lines().count(), 1);

    let eni = within(
        "CreateNetworkInterface",
        ec2.create_network_interface()
            .subnet_id(&resources.subnet_ids[0])
            .send(),
    )
    .await
    .expect("create");
    let eni_id = eni
        .network_interface()
        .and_then(|e| e.network_interface_id())
        .expect("id")
        .to_owned();
    let attached_at = Instant::now();
    within(
        "AttachNetworkInterface",
        ec2.attach_network_interface()
            .network_interface_id(&eni_id)
            .instance_id(&node)
            .device_index(1)
            .send(),
    )
    .await
    .expect("attach");
    // Right after the attach IMDS still shows one ENI.
    assert_eq!(get(&imds, macs).await.expect("macs").lines().count(), 1);
    let seen_at = within("waiting for IMDS to catch up", async {
        loop {
            if get(&imds, macs).await.expect("macs").lines().count() == 2 {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(seen_at.duration_since(attached_at) >= lag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imdsv2_is_required() {
    let (emulator, _) = start(Scenario::default()).await;
    let url = format!("{}/latest/meta-data/instance-id", emulator.imds_url());
    let response = within("token-less GET", raw_get(&url)).await;
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    emulator.allow_imdsv1(true);
    let response = within("token-less GET (IMDSv1 allowed)", raw_get(&url)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

async fn raw_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (address, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}
