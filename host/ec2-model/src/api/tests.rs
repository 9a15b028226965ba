//! The API without sockets: parameters in, XML out.

use super::*;
use crate::wire::Params;

fn call(model: &mut Ec2Model, pairs: &[(&str, &str)]) -> Ec2Result<String> {
    let params = Params::from_pairs(pairs.iter().copied());
    route(&params)?.run(model, &params, "req-1")
}

fn scenario() -> (Ec2Model, String, String) {
    let mut model = Ec2Model::new(5);
    let vpc = model
        .create_vpc("10.0.0.0/16".parse().expect("cidr"))
        .expect("vpc");
    let subnet = model
        .create_subnet(&vpc.id, "10.0.0.0/24".parse().expect("cidr"), "us-west-2a")
        .expect("subnet");
    let node = model
        .run_instance(crate::RunInstance::new("t3.medium", &subnet.id))
        .expect("node");
    (model, subnet.id, node.id)
}

/// The text of the first `<name>` element.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

#[test]
fn unknown_and_missing_actions_are_ec2_errors() {
    let mut model = Ec2Model::new(1);
    let err = call(&mut model, &[("Action", "LaunchRockets")]).expect_err("unknown");
    assert_eq!((err.code, err.http_status()), (codes::INVALID_ACTION, 400));
    let err = call(&mut model, &[]).expect_err("missing");
    assert_eq!(err.code, codes::MISSING_ACTION);
}

#[test]
fn every_action_has_a_response_root_and_a_class() {
    for action in ACTIONS {
        assert_eq!(action.root, format!("{}Response", action.name));
        let expected = if action.name.starts_with("Describe") {
            ActionClass::NonMutating
        } else {
            ActionClass::Mutating
        };
        assert_eq!(action.class(), expected, "{}", action.name);
    }
}

#[test]
fn create_attach_assign_describe_round_trip() {
    let (mut model, subnet, node) = scenario();
    let xml = call(
        &mut model,
        &[
            ("Action", "CreateNetworkInterface"),
            ("SubnetId", &subnet),
            ("SecondaryPrivateIpAddressCount", "2"),
            ("TagSpecification.1.ResourceType", "network-interface"),
            ("TagSpecification.1.Tag.1.Key", "cluster"),
            ("TagSpecification.1.Tag.1.Value", "demo"),
            ("ClientToken", "tok-1"),
        ],
    )
    .expect("create");
    assert!(xml.contains("<CreateNetworkInterfaceResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>req-1</requestId>"));
    let eni = element(&xml, "networkInterfaceId").expect("id").to_owned();
    assert_eq!(xml.matches("<primary>false</primary>").count(), 2);
    assert!(xml.contains("<key>cluster</key><value>demo</value>"));
    assert_eq!(element(&xml, "clientToken"), Some("tok-1"));

    let xml = call(
        &mut model,
        &[
            ("Action", "AttachNetworkInterface"),
            ("NetworkInterfaceId", &eni),
            ("InstanceId", &node),
            ("DeviceIndex", "1"),
        ],
    )
    .expect("attach");
    assert!(element(&xml, "attachmentId").is_some_and(|id| id.starts_with("eni-attach-")));

    let xml = call(
        &mut model,
        &[
            ("Action", "AssignPrivateIpAddresses"),
            ("NetworkInterfaceId", &eni),
            ("Ipv4PrefixCount", "1"),
        ],
    )
    .expect("prefix");
    assert!(element(&xml, "ipv4Prefix").is_some_and(|p| p.ends_with("/28")));

    let xml = call(
        &mut model,
        &[
            ("Action", "DescribeNetworkInterfaces"),
            ("Filter.1.Name", "attachment.instance-id"),
            ("Filter.1.Value.1", &node),
            ("Filter.2.Name", "tag:cluster"),
            ("Filter.2.Value.1", "demo"),
        ],
    )
    .expect("describe");
    assert_eq!(xml.matches("<networkInterfaceId>").count(), 1);
    assert!(xml.contains("<deviceIndex>1</deviceIndex>"));
    assert!(xml.contains("<ipv4PrefixSet><item><ipv4Prefix>"));
}

#[test]
fn describe_pages_with_next_token() {
    let (mut model, subnet, _) = scenario();
    for _ in 0..6 {
        call(
            &mut model,
            &[("Action", "CreateNetworkInterface"), ("SubnetId", &subnet)],
        )
        .expect("create");
    }
    let first = call(
        &mut model,
        &[("Action", "DescribeNetworkInterfaces"), ("MaxResults", "5")],
    )
    .expect("page 1");
    assert_eq!(first.matches("<networkInterfaceId>").count(), 5);
    let token = element(&first, "nextToken").expect("token").to_owned();
    let second = call(
        &mut model,
        &[
            ("Action", "DescribeNetworkInterfaces"),
            ("MaxResults", "5"),
            ("NextToken", &token),
        ],
    )
    .expect("page 2");
    // 6 created + the node's primary ENI = 7.
    assert_eq!(second.matches("<networkInterfaceId>").count(), 2);
    assert_eq!(element(&second, "nextToken"), None);
}

#[test]
fn model_errors_keep_their_codes() {
    let (mut model, _, node) = scenario();
    let err = call(
        &mut model,
        &[
            ("Action", "DeleteNetworkInterface"),
            ("NetworkInterfaceId", "eni-0123456789abcdef0"),
        ],
    )
    .expect_err("unknown eni");
    assert_eq!(err.code, codes::INVALID_NETWORK_INTERFACE_ID_NOT_FOUND);
    let primary = model
        .instance(&node)
        .map(|i| i.primary_network_interface_id.clone())
        .expect("node");
    let attachment = model
        .network_interface(&primary)
        .and_then(|eni| eni.attachment.clone())
        .expect("attached");
    let err = call(
        &mut model,
        &[
            ("Action", "DetachNetworkInterface"),
            ("AttachmentId", &attachment.attachment_id),
        ],
    )
    .expect_err("primary");
    assert_eq!(err.code, codes::OPERATION_NOT_PERMITTED);
}

#[test]
fn dry_run_is_412() {
    let params = Params::from_pairs([("Action", "CreateTags"), ("DryRun", "true")]);
    let err = check_dry_run(&params).expect_err("dry run");
    assert_eq!(
        (err.code, err.http_status()),
        (codes::DRY_RUN_OPERATION, 412)
    );
}
