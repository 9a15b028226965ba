//! IMDS paths, tokens and lag, against a model without sockets.

use super::*;
use crate::{AssignPrivateIpAddresses, CreateNetworkInterface, RunInstance};

struct Fixture {
    model: Ec2Model,
    imds: Imds,
    node: String,
    subnet: String,
    token: String,
    now: Instant,
}

impl Fixture {
    fn new() -> Self {
        let mut model = Ec2Model::new(9);
        let vpc = model
            .create_vpc("10.0.0.0/16".parse().expect("cidr"))
            .expect("vpc");
        model
            .associate_vpc_cidr_block(&vpc.id, "100.64.0.0/16".parse().expect("cidr"))
            .expect("secondary cidr");
        let subnet = model
            .create_subnet(&vpc.id, "10.0.1.0/24".parse().expect("cidr"), "us-west-2b")
            .expect("subnet");
        let node = model
            .run_instance(RunInstance::new("m5.large", &subnet.id))
            .expect("node");
        let mut imds = Imds::new(Some(node.id.clone()), 1);
        imds.observe_at_boot(&model);
        let now = Instant::now();
        let token = imds
            .handle(
                ImdsRequest {
                    method: "PUT",
                    path: "/latest/api/token",
                    token: None,
                    token_ttl: Some("60"),
                },
                &model,
                now,
                Duration::ZERO,
            )
            .body;
        Self {
            model,
            imds,
            node: node.id,
            subnet: subnet.id,
            token,
            now,
        }
    }

    fn get_at(&mut self, path: &str, at: Instant, lag: Duration) -> ImdsResponse {
        let token = self.token.clone();
        self.imds.handle(
            ImdsRequest {
                method: "GET",
                path,
                token: Some(&token),
                token_ttl: None,
            },
            &self.model,
            at,
            lag,
        )
    }

    fn get(&mut self, path: &str) -> ImdsResponse {
        self.get_at(path, self.now, Duration::ZERO)
    }

    fn body(&mut self, path: &str) -> String {
        let response = self.get(path);
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        response.body
    }
}

#[test]
fn token_flow_and_ttl_header() {
    let mut f = Fixture::new();
    let now = f.now;
    let issue = |imds: &mut Imds, ttl: Option<&str>, model: &Ec2Model| {
        imds.handle(
            ImdsRequest {
                method: "PUT",
                path: "/latest/api/token",
                token: None,
                token_ttl: ttl,
            },
            model,
            now,
            Duration::ZERO,
        )
    };
    let response = issue(&mut f.imds, Some("21600"), &f.model);
    assert_eq!((response.status, response.token_ttl), (200, Some(21600)));
    assert_eq!(issue(&mut f.imds, None, &f.model).status, 400);
    assert_eq!(issue(&mut f.imds, Some("0"), &f.model).status, 400);
    assert_eq!(issue(&mut f.imds, Some("21601"), &f.model).status, 400);

    let unauthenticated = f.imds.handle(
        ImdsRequest {
            method: "GET",
            path: "/latest/meta-data/instance-id",
            token: None,
            token_ttl: None,
        },
        &f.model,
        now,
        Duration::ZERO,
    );
    assert_eq!(unauthenticated.status, 401);
    let node = f.node.clone();
    assert_eq!(f.body("/latest/meta-data/instance-id"), node);
    // The 60-second token expires.
    let later = f.get_at(
        "/latest/meta-data/instance-id",
        now + Duration::from_secs(61),
        Duration::ZERO,
    );
    assert_eq!(later.status, 401);
}

#[test]
fn identity_and_per_mac_paths() {
    let mut f = Fixture::new();
    let eni = f
        .model
        .create_network_interface(CreateNetworkInterface::new(&f.subnet))
        .expect("eni");
    f.model
        .attach_network_interface(&eni.id, &f.node, 1, None)
        .expect("attach");
    f.model
        .assign_private_ip_addresses(AssignPrivateIpAddresses::count(&eni.id, 2))
        .expect("ips");
    f.model
        .assign_private_ip_addresses(AssignPrivateIpAddresses::prefix_count(&eni.id, 1))
        .expect("prefix");
    let eni = f.model.network_interface(&eni.id).expect("eni").clone();
    let instance = f.model.instance(&f.node).expect("node").clone();
    let primary = f
        .model
        .network_interface(&instance.primary_network_interface_id)
        .expect("primary")
        .clone();

    assert_eq!(f.body("/latest/meta-data/instance-type"), "m5.large");
    assert_eq!(
        f.body("/latest/meta-data/placement/availability-zone"),
        "us-west-2b"
    );
    assert_eq!(f.body("/latest/meta-data/mac"), primary.mac_address);
    assert_eq!(
        f.body("/latest/meta-data/local-ipv4"),
        primary.private_ip_address.to_string()
    );
    let macs = f.body("/latest/meta-data/network/interfaces/macs/");
    let mut expected = vec![
        format!("{}/", primary.mac_address),
        format!("{}/", eni.mac_address),
    ];
    expected.sort();
    assert_eq!(macs.lines().collect::<Vec<_>>(), expected);

    let base = format!(
        "/latest/meta-data/network/interfaces/macs/{}",
        eni.mac_address
    );
    assert_eq!(f.body(&format!("{base}/device-number")), "1");
    assert_eq!(f.body(&format!("{base}/network-card")), "0");
    assert_eq!(f.body(&format!("{base}/interface-id")), eni.id);
    assert_eq!(f.body(&format!("{base}/subnet-id")), f.subnet);
    assert_eq!(
        f.body(&format!("{base}/subnet-ipv4-cidr-block")),
        "10.0.1.0/24"
    );
    assert_eq!(
        f.body(&format!("{base}/vpc-ipv4-cidr-blocks")),
        "10.0.0.0/16\n100.64.0.0/16"
    );
    let ipv4s = f.body(&format!("{base}/local-ipv4s"));
    let ipv4s: Vec<&str> = ipv4s.lines().collect();
    assert_eq!(ipv4s.len(), 3);
    assert_eq!(
        ipv4s[0],
        eni.private_ip_address.to_string(),
        "primary first"
    );
    assert_eq!(
        f.body(&format!("{base}/ipv4-prefix")),
        eni.ipv4_prefixes[0].to_string()
    );
    assert_eq!(
        f.body(&format!("{base}/security-group-ids")),
        eni.security_group_ids.join("\n")
    );
    // Absent keys are plain 404s, as VPC CNI expects.
    assert_eq!(f.get(&format!("{base}/ipv6s")).status, 404);
    assert_eq!(f.get(&format!("{base}/ipv6-prefix")).status, 404);
    let primary_base = format!(
        "/latest/meta-data/network/interfaces/macs/{}",
        primary.mac_address
    );
    assert_eq!(f.get(&format!("{primary_base}/ipv4-prefix")).status, 404);
    let listing = f.body(&format!("{base}/"));
    assert!(listing.lines().any(|l| l == "local-ipv4s"));

    let document: serde_json::Value =
        serde_json::from_str(&f.body("/latest/dynamic/instance-identity/document")).expect("json");
    assert_eq!(document["instanceId"], f.node.as_str());
    assert_eq!(document["region"], "us-west-2");
    assert_eq!(document["availabilityZone"], "us-west-2b");
}

#[test]
fn new_enis_and_addresses_appear_after_the_lag() {
    let mut f = Fixture::new();
    let lag = Duration::from_secs(5);
    let eni = f
        .model
        .create_network_interface(CreateNetworkInterface::new(&f.subnet))
        .expect("eni");
    f.model
        .attach_network_interface(&eni.id, &f.node, 1, None)
        .expect("attach");
    let t0 = f.now + Duration::from_secs(1);
    f.imds.observe(&f.model, t0);
    let macs = "/latest/meta-data/network/interfaces/macs/";
    let listing = f.get_at(macs, t0 + Duration::from_secs(4), lag).body;
    assert_eq!(
        listing.lines().count(),
        1,
        "only the boot ENI is visible yet"
    );
    let listing = f.get_at(macs, t0 + lag, lag).body;
    assert_eq!(listing.lines().count(), 2);

    let t1 = t0 + Duration::from_secs(10);
    f.model
        .assign_private_ip_addresses(AssignPrivateIpAddresses::count(&eni.id, 1))
        .expect("ip");
    f.imds.observe(&f.model, t1);
    let path = format!("{macs}{}/local-ipv4s", eni.mac_address);
    assert_eq!(f.get_at(&path, t1, lag).body.lines().count(), 1);
    assert_eq!(f.get_at(&path, t1 + lag, lag).body.lines().count(), 2);
}

#[test]
fn terminated_or_unknown_instance_has_no_metadata() {
    let mut f = Fixture::new();
    f.model
        .terminate_instance(&f.node.clone())
        .expect("terminate");
    assert_eq!(f.get("/latest/meta-data/instance-id").status, 404);
    let mut none = Imds::new(None, 1);
    let token = none
        .handle(
            ImdsRequest {
                method: "PUT",
                path: "/latest/api/token",
                token: None,
                token_ttl: Some("10"),
            },
            &f.model,
            f.now,
            Duration::ZERO,
        )
        .body;
    let response = none.handle(
        ImdsRequest {
            method: "GET",
            path: "/latest/meta-data/mac",
            token: Some(&token),
            token_ttl: None,
        },
        &f.model,
        f.now,
        Duration::ZERO,
    );
    assert_eq!(response.status, 404);
}
