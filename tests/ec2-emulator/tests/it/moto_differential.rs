//! Differential test against moto: the same scenario through `aws-sdk-ec2` against moto's
//! server and against the emulator, comparing response shapes and error codes on the calls
//! where moto is faithful (see the README for which calls and why).
//!
//! moto must be installed (`scripts/test.sh` installs it); a missing moto fails the test with
//! the install command rather than skipping it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, InstanceType, NetworkInterface, ResourceType, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use ec2_emulator::Scenario;
use ipnet::Ipv4Net;

use crate::common::{ec2_client, start, within};

const INSTALL: &str = "python3 -m pip install --quiet 'moto>=5.2,<6' flask flask-cors";

/// moto's server on a free loopback port, killed on drop.
struct MotoServer {
    child: Child,
    url: String,
}

impl MotoServer {
    fn start() -> Self {
        let probe = Command::new("python3")
            .args(["-c", "import moto.server, flask, flask_cors"])
            .stderr(Stdio::null())
            .status();
        assert!(
            probe.is_ok_and(|s| s.success()),
            "moto's server is not installed for python3; install it with: {INSTALL}"
        );
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting moto ({INSTALL}): {e}"));
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        server.wait_until_ready(port);
        server
    }

    fn wait_until_ready(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto did not listen on port {port} within 60 s");
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces ids with stable placeholders (`eni#1`, `subnet#1`, …) in order of first
/// appearance, so two servers' answers compare equal when their shapes are equal.
#[derive(Default)]
struct Ids {
    seen: BTreeMap<String, String>,
    per_kind: BTreeMap<String, usize>,
}

impl Ids {
    fn name(&mut self, id: Option<&str>) -> String {
        let Some(id) = id else {
            return "<none>".into();
        };
        if let Some(name) = self.seen.get(id) {
            return name.clone();
        }
        let kind = id.rsplit_once('-').map_or("?", |(kind, _)| kind).to_owned();
        let n = self.per_kind.entry(kind.clone()).or_default();
        *n += 1;
        let name = format!("{kind}#{n}");
        self.seen.insert(id.to_owned(), name.clone());
        name
    }
}

/// What one server answered, step by step.
#[derive(Default)]
struct Observations {
    steps: Vec<(String, String)>,
}

impl Observations {
    fn note(&mut self, step: &str, value: impl std::fmt::Debug) {
        self.steps.push((step.to_owned(), format!("{value:?}")));
    }
}

fn error_of<E: ProvideErrorMetadata, R>(
    result: Result<impl Sized, SdkError<E, R>>,
) -> (Option<String>, Option<u16>)
where
    R: std::fmt::Debug,
    SdkError<E, R>: ProvideErrorMetadata,
{
    match result {
        Ok(_) => (None, None),
        Err(e) => {
            let status = match &e {
                SdkError::ServiceError(context) => raw_status(context.raw()),
                _ => None,
            };
            (e.code().map(str::to_owned), status)
        }
    }
}

fn raw_status<R: std::fmt::Debug>(raw: &R) -> Option<u16> {
    // The raw response type is the SDK's HttpResponse; its Debug output starts with the
    // status. Parse it rather than depend on aws-smithy-runtime-api directly.
    let text = format!("{raw:?}");
    text.split("status: StatusCode(")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
}

fn in_subnet(address: Option<&str>, subnet: Ipv4Net) -> bool {
    address
        .and_then(|a| a.parse::<Ipv4Addr>().ok())
        .is_some_and(|a| subnet.contains(&a))
}

/// An ENI reduced to what both servers should agree on.
fn eni_shape(eni: &NetworkInterface, ids: &mut Ids, subnet: Ipv4Net) -> Vec<String> {
    let addresses: Vec<&str> = eni
        .private_ip_addresses()
        .iter()
        .filter_map(|a| a.private_ip_address())
        .collect();
    let mut unique = addresses.clone();
    unique.sort_unstable();
    unique.dedup();
    let mut tags: Vec<(String, String)> = eni
        .tag_set()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    tags.sort();
    vec![
        format!("id {}", ids.name(eni.network_interface_id())),
        format!("subnet {}", ids.name(eni.subnet_id())),
        format!("vpc {}", ids.name(eni.vpc_id())),
        format!("az {:?}", eni.availability_zone()),
        format!("status {:?}", eni.status().map(|s| s.as_str())),
        // moto describes a primary ENI as "Primary network interface"; EC2 leaves the
        // description of an ENI created by RunInstances empty, as the emulator does.
        if eni.attachment().and_then(|a| a.device_index()) == Some(0) {
            "description (primary: not compared)".to_owned()
        } else {
            format!("description {:?}", eni.description())
        },
        format!(
            "groups {:?}",
            eni.groups()
                .iter()
                .map(|g| ids.name(g.group_id()))
                .collect::<Vec<_>>()
        ),
        format!("addresses {}", addresses.len()),
        format!("unique addresses {}", unique.len()),
        format!(
            "all in subnet {}",
            addresses.iter().all(|a| in_subnet(Some(a), subnet))
        ),
        format!(
            "primary in subnet {}",
            in_subnet(eni.private_ip_address(), subnet)
        ),
        format!(
            "primaries {}",
            eni.private_ip_addresses()
                .iter()
                .filter(|a| a.primary() == Some(true))
                .count()
        ),
        format!(
            "mac {}",
            eni.mac_address()
                .is_some_and(|m| m.len() == 17 && m.split(':').count() == 6)
        ),
        format!("tags {tags:?}"),
        format!(
            "attachment {:?}",
            eni.attachment().map(|a| (
                a.device_index(),
                a.status().map(|s| s.as_str().to_owned()),
                a.attachment_id()
                    .is_some_and(|id| id.starts_with("eni-attach-"))
            ))
        ),
    ]
}

async fn describe_eni(ec2: &Client, id: &str) -> NetworkInterface {
    within(
        "DescribeNetworkInterfaces",
        ec2.describe_network_interfaces()
            .network_interface_ids(id)
            .send(),
    )
    .await
    .expect("describe eni")
    .network_interfaces()[0]
        .clone()
}

/// The scenario, run against one server.
#[allow(clippy::too_many_lines)]
async fn run_scenario(ec2: &Client) -> Observations {
    let mut obs = Observations::default();
    let mut ids = Ids::default();
    let subnet_cidr: Ipv4Net = "10.20.1.0/24".parse().expect("cidr");

    let vpc = within(
        "CreateVpc",
        ec2.create_vpc().cidr_block("10.20.0.0/16").send(),
    )
    .await
    .expect("vpc");
    let vpc = vpc.vpc().expect("vpc");
    let vpc_id = vpc.vpc_id().expect("id").to_owned();
    obs.note("CreateVpc", (ids.name(Some(&vpc_id)), vpc.cidr_block()));

    let subnet = within(
        "CreateSubnet",
        ec2.create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(subnet_cidr.to_string())
            .availability_zone("us-west-2a")
            .send(),
    )
    .await
    .expect("subnet");
    let subnet = subnet.subnet().expect("subnet");
    let subnet_id = subnet.subnet_id().expect("id").to_owned();
    obs.note(
        "CreateSubnet",
        (
            ids.name(Some(&subnet_id)),
            ids.name(subnet.vpc_id()),
            subnet.cidr_block(),
            subnet.availability_zone(),
            subnet.available_ip_address_count(),
        ),
    );

    let groups = within(
        "DescribeSecurityGroups",
        ec2.describe_security_groups()
            .filters(Filter::builder().name("vpc-id").values(&vpc_id).build())
            .send(),
    )
    .await
    .expect("groups");
    let group = groups.security_groups()[0].clone();
    let group_id = group.group_id().expect("id").to_owned();
    obs.note(
        "DescribeSecurityGroups",
        (
            groups.security_groups().len(),
            ids.name(Some(&group_id)),
            group.group_name(),
            ids.name(group.vpc_id()),
        ),
    );

    let run = within(
        "RunInstances",
        ec2.run_instances()
            .image_id("ami-12c6146b")
            .instance_type(InstanceType::T3Medium)
            .subnet_id(&subnet_id)
            .min_count(1)
            .max_count(1)
            .send(),
    )
    .await
    .expect("run instances");
    let instance_id = run.instances()[0].instance_id().expect("id").to_owned();
    obs.note(
        "RunInstances",
        (run.instances().len(), ids.name(Some(&instance_id))),
    );

    let described = within(
        "DescribeInstances",
        ec2.describe_instances().instance_ids(&instance_id).send(),
    )
    .await
    .expect("describe instances");
    let instance = described.reservations()[0].instances()[0].clone();
    obs.note(
        "DescribeInstances",
        (
            instance.instance_type().map(|t| t.as_str().to_owned()),
            instance
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_owned()),
            ids.name(instance.subnet_id()),
            ids.name(instance.vpc_id()),
            in_subnet(instance.private_ip_address(), subnet_cidr),
            instance
                .network_interfaces()
                .iter()
                .map(|eni| {
                    (
                        ids.name(eni.network_interface_id()),
                        eni.attachment().and_then(|a| a.device_index()),
                        in_subnet(eni.private_ip_address(), subnet_cidr),
                    )
                })
                .collect::<Vec<_>>(),
        ),
    );

    let created = within(
        "CreateNetworkInterface",
        ec2.create_network_interface()
            .subnet_id(&subnet_id)
            .description("pods")
            .groups(&group_id)
            .secondary_private_ip_address_count(2)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::NetworkInterface)
                    .tags(Tag::builder().key("node").value("n1").build())
                    .tags(Tag::builder().key("cluster").value("demo").build())
                    .build(),
            )
            .send(),
    )
    .await
    .expect("create eni");
    let eni = created.network_interface().expect("eni").clone();
    let eni_id = eni.network_interface_id().expect("id").to_owned();
    obs.note(
        "CreateNetworkInterface",
        eni_shape(&eni, &mut ids, subnet_cidr),
    );

    let subnets = within(
        "DescribeSubnets",
        ec2.describe_subnets().subnet_ids(&subnet_id).send(),
    )
    .await
    .expect("subnets");
    obs.note(
        "DescribeSubnets AvailableIpAddressCount",
        subnets.subnets()[0].available_ip_address_count(),
    );

    let attached = within(
        "AttachNetworkInterface",
        ec2.attach_network_interface()
            .network_interface_id(&eni_id)
            .instance_id(&instance_id)
            .device_index(1)
            .send(),
    )
    .await
    .expect("attach");
    let attachment_id = attached.attachment_id().expect("attachment").to_owned();
    obs.note(
        "AttachNetworkInterface",
        attachment_id.starts_with("eni-attach-"),
    );

    let on_node = within(
        "DescribeNetworkInterfaces (attachment.instance-id)",
        ec2.describe_network_interfaces()
            .filters(
                Filter::builder()
                    .name("attachment.instance-id")
                    .values(&instance_id)
                    .build(),
            )
            .send(),
    )
    .await
    .expect("enis on node");
    let mut on_node: Vec<Vec<String>> = on_node
        .network_interfaces()
        .iter()
        .map(|eni| eni_shape(eni, &mut ids, subnet_cidr))
        .collect();
    on_node.sort();
    obs.note("DescribeNetworkInterfaces attachment.instance-id", on_node);

    within(
        "AssignPrivateIpAddresses",
        ec2.assign_private_ip_addresses()
            .network_interface_id(&eni_id)
            .secondary_private_ip_address_count(2)
            .send(),
    )
    .await
    .expect("assign");
    let eni = describe_eni(ec2, &eni_id).await;
    obs.note(
        "after AssignPrivateIpAddresses",
        eni_shape(&eni, &mut ids, subnet_cidr),
    );
    let secondary = eni
        .private_ip_addresses()
        .iter()
        .find(|a| a.primary() == Some(false))
        .and_then(|a| a.private_ip_address())
        .expect("a secondary")
        .to_owned();
    within(
        "UnassignPrivateIpAddresses",
        ec2.unassign_private_ip_addresses()
            .network_interface_id(&eni_id)
            .private_ip_addresses(&secondary)
            .send(),
    )
    .await
    .expect("unassign");
    let eni = describe_eni(ec2, &eni_id).await;
    obs.note(
        "after UnassignPrivateIpAddresses",
        eni_shape(&eni, &mut ids, subnet_cidr),
    );

    within(
        "CreateTags",
        ec2.create_tags()
            .resources(&eni_id)
            .tags(Tag::builder().key("owner").value("ipamd").build())
            .send(),
    )
    .await
    .expect("tags");
    within(
        "DeleteTags",
        ec2.delete_tags()
            .resources(&eni_id)
            .tags(Tag::builder().key("node").build())
            .send(),
    )
    .await
    .expect("untag");
    let tagged = within(
        "DescribeNetworkInterfaces (tag filter)",
        ec2.describe_network_interfaces()
            .filters(Filter::builder().name("tag:owner").values("ipamd").build())
            .send(),
    )
    .await
    .expect("tag filter");
    let tagged: Vec<Vec<String>> = tagged
        .network_interfaces()
        .iter()
        .map(|eni| eni_shape(eni, &mut ids, subnet_cidr))
        .collect();
    obs.note("DescribeNetworkInterfaces tag:owner", tagged);

    let types = within(
        "DescribeInstanceTypes",
        ec2.describe_instance_types()
            .instance_types(InstanceType::T3Medium)
            .instance_types(InstanceType::M5Large)
            .instance_types(InstanceType::M4Large)
            .send(),
    )
    .await
    .expect("types");
    let mut types: Vec<_> = types
        .instance_types()
        .iter()
        .map(|t| {
            let net = t.network_info();
            (
                t.instance_type().map(|t| t.as_str().to_owned()),
                t.hypervisor().map(|h| h.as_str().to_owned()),
                net.and_then(|n| n.maximum_network_interfaces()),
                net.and_then(|n| n.ipv4_addresses_per_interface()),
                net.and_then(|n| n.ipv6_addresses_per_interface()),
            )
        })
        .collect();
    types.sort();
    obs.note("DescribeInstanceTypes", types);

    let unknown_eni = "eni-0123456789abcdef0";
    obs.note(
        "error DescribeNetworkInterfaces unknown id",
        error_of(
            within(
                "DescribeNetworkInterfaces",
                ec2.describe_network_interfaces()
                    .network_interface_ids(unknown_eni)
                    .send(),
            )
            .await,
        ),
    );
    obs.note(
        "error CreateNetworkInterface unknown subnet",
        error_of(
            within(
                "CreateNetworkInterface",
                ec2.create_network_interface()
                    .subnet_id("subnet-0123456789abcdef0")
                    .send(),
            )
            .await,
        ),
    );
    obs.note(
        "error DeleteNetworkInterface unknown id",
        error_of(
            within(
                "DeleteNetworkInterface",
                ec2.delete_network_interface()
                    .network_interface_id(unknown_eni)
                    .send(),
            )
            .await,
        ),
    );
    obs.note(
        "error DetachNetworkInterface unknown attachment",
        error_of(
            within(
                "DetachNetworkInterface",
                ec2.detach_network_interface()
                    .attachment_id("eni-attach-0123456789abcdef0")
                    .send(),
            )
            .await,
        ),
    );
    obs.note(
        "error AttachNetworkInterface unknown instance",
        error_of(
            within(
                "AttachNetworkInterface",
                ec2.attach_network_interface()
                    .network_interface_id(&eni_id)
                    .instance_id("i-0123456789abcdef0")
                    .device_index(2)
                    .send(),
            )
            .await,
        ),
    );
    obs.note(
        "error DescribeInstanceTypes unknown type",
        error_of(
            within(
                "DescribeInstanceTypes",
                ec2.describe_instance_types()
                    .instance_types(InstanceType::from("m5.bogus"))
                    .send(),
            )
            .await,
        ),
    );
    obs.note(
        "error CreateNetworkInterface DryRun",
        error_of(
            within(
                "CreateNetworkInterface",
                ec2.create_network_interface()
                    .subnet_id(&subnet_id)
                    .dry_run(true)
                    .send(),
            )
            .await,
        ),
    );

    within(
        "DetachNetworkInterface",
        ec2.detach_network_interface()
            .attachment_id(&attachment_id)
            .send(),
    )
    .await
    .expect("detach");
    let eni = describe_eni(ec2, &eni_id).await;
    obs.note(
        "after DetachNetworkInterface",
        eni_shape(&eni, &mut ids, subnet_cidr),
    );
    within(
        "DeleteNetworkInterface",
        ec2.delete_network_interface()
            .network_interface_id(&eni_id)
            .send(),
    )
    .await
    .expect("delete");
    obs.note(
        "error DescribeNetworkInterfaces deleted id",
        error_of(
            within(
                "DescribeNetworkInterfaces",
                ec2.describe_network_interfaces()
                    .network_interface_ids(&eni_id)
                    .send(),
            )
            .await,
        ),
    );
    obs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_as_moto_where_moto_is_faithful() {
    // moto draws addresses at random and may give an ENI one it already holds (a few percent
    // of runs of this scenario): such a run is not EC2's behaviour to compare against, so it
    // is discarded and the scenario runs again on a fresh moto. The emulator's answers are
    // compared in full either way (and its no-duplicates rule is tested on its own).
    let mut discarded = 0;
    let from_moto = loop {
        let moto = MotoServer::start();
        // Retries ride out moto's lazy start (its first EC2 call loads the backend).
        let moto_client = ec2_client(&moto.url, 3);
        let observed = run_scenario(&moto_client).await;
        if !observed
            .steps
            .iter()
            .any(|(_, value)| duplicate_addresses(value))
        {
            break observed;
        }
        discarded += 1;
        assert!(
            discarded < 5,
            "moto gave an ENI a duplicate address in 5 runs in a row"
        );
        eprintln!("moto gave an ENI a duplicate address; running the scenario again");
    };

    let (emulator, _) = start(Scenario::empty()).await;
    let emulator_client = ec2_client(&emulator.ec2_url(), 1);
    let from_emulator = run_scenario(&emulator_client).await;

    let mut differences = Vec::new();
    for ((step, moto_value), (_, emulator_value)) in
        from_moto.steps.iter().zip(&from_emulator.steps)
    {
        if moto_value != emulator_value {
            differences.push(format!(
                "{step}:\n    moto:     {moto_value}\n    emulator: {emulator_value}"
            ));
        }
    }
    assert_eq!(from_moto.steps.len(), from_emulator.steps.len());
    // The error steps must really be errors on both sides, not two agreeing successes.
    for (step, value) in &from_emulator.steps {
        eprintln!("{step}: {value}");
        if step.starts_with("error") {
            assert!(value.starts_with("(Some("), "{step}: {value}");
        }
    }
    assert!(
        differences.is_empty(),
        "the emulator differs from moto:\n{}",
        differences.join("\n")
    );
}

/// Whether an observation shows an ENI with fewer distinct addresses than addresses.
fn duplicate_addresses(value: &str) -> bool {
    value.split("\"addresses ").skip(1).any(|rest| {
        let total = rest.split('"').next();
        let unique = rest
            .split("\"unique addresses ")
            .nth(1)
            .and_then(|r| r.split('"').next());
        total != unique
    })
}

#[test]
fn a_duplicate_address_in_an_observation_is_recognised() {
    let seen = |total: u32, unique: u32| {
        format!(
            "[\"id eni#2\", \"addresses {total}\", \"unique addresses {unique}\", \"mac true\"]"
        )
    };
    assert!(duplicate_addresses(&seen(3, 2)));
    assert!(!duplicate_addresses(&seen(3, 3)));
    assert!(!duplicate_addresses(
        "(Some(\"InvalidInstanceType\"), Some(400))"
    ));
    assert!(duplicate_addresses(&format!(
        "[{}, {}]",
        seen(1, 1),
        seen(5, 4)
    )));
}
