//! ENI lifecycle rules: interfaces per instance, device indexes, the primary ENI, in-use ENIs,
//! unknown ids, termination, DeleteOnTermination and ClientToken idempotency.

use super::{code, strings, Fixture};
use crate::types::{InstanceState, InterfaceType, NetworkInterfaceStatus};
use crate::{codes, CreateNetworkInterface, ModifyNetworkInterfaceAttribute, RunInstance};

fn new_eni(f: &mut Fixture) -> String {
    f.ec2
        .create_network_interface(CreateNetworkInterface::new(&f.subnet.id))
        .expect("eni")
        .id
}

#[test]
fn run_instance_creates_an_attached_primary_eni() {
    let mut f = Fixture::new();
    let node = f.instance("m5.large");
    assert_eq!(node.state, InstanceState::Running);
    let primary = f
        .ec2
        .network_interface(&node.primary_network_interface_id)
        .expect("primary eni");
    let attachment = primary.attachment.as_ref().expect("attached");
    assert_eq!(
        (attachment.device_index, attachment.network_card_index),
        (0, 0)
    );
    assert!(attachment.delete_on_termination);
    assert_eq!(primary.status, NetworkInterfaceStatus::InUse);
    assert_eq!(Some(primary.private_ip_address), node.private_ip_address);
    // The lowest-free policy hands out the first address after the four reserved ones.
    assert_eq!(primary.private_ip_address.to_string(), "10.0.1.4");
    assert_eq!(
        primary.security_group_ids,
        vec![f.vpc.default_security_group_id.clone()]
    );
}

#[test]
fn enis_per_instance_are_limited_by_the_instance_type() {
    let mut f = Fixture::new();
    let node = f.instance("t3.medium"); // 3 interfaces
    for device in 1..=2 {
        let eni = new_eni(&mut f);
        f.ec2
            .attach_network_interface(&eni, &node.id, device, None)
            .expect("within limit");
    }
    let eni = new_eni(&mut f);
    let err = f
        .ec2
        .attach_network_interface(&eni, &node.id, 3, None)
        .expect_err("fourth ENI");
    assert_eq!(err.code, codes::ATTACHMENT_LIMIT_EXCEEDED);
    assert_eq!(
        err.message,
        "Interface count 4 exceeds the limit for t3.medium"
    );
    // Nothing changed.
    assert_eq!(
        f.ec2.network_interface(&eni).map(|e| e.status),
        Some(NetworkInterfaceStatus::Available)
    );
    f.ec2.check_invariants().expect("invariants");
}

#[test]
fn multi_card_types_limit_each_card_and_accept_its_device_indexes() {
    let mut f = Fixture::new();
    let node = f.instance("p4d.24xlarge"); // 4 cards × 15
    let eni = new_eni(&mut f);
    // Device index 0 is free on card 1 even though the primary sits at (0, 0).
    let attachment = f
        .ec2
        .attach_network_interface(&eni, &node.id, 0, Some(1))
        .expect("card 1");
    assert_eq!(attachment.network_card_index, 1);
    let eni = new_eni(&mut f);
    assert_eq!(
        code(f.ec2.attach_network_interface(&eni, &node.id, 1, Some(4))),
        codes::INVALID_PARAMETER_VALUE
    );
    for device in 1..15 {
        let eni = new_eni(&mut f);
        f.ec2
            .attach_network_interface(&eni, &node.id, device, Some(0))
            .expect("card 0 has 15");
    }
    let eni = new_eni(&mut f);
    assert_eq!(
        code(f.ec2.attach_network_interface(&eni, &node.id, 15, Some(0))),
        codes::ATTACHMENT_LIMIT_EXCEEDED
    );
    f.ec2.check_invariants().expect("invariants");
}

#[test]
fn a_used_device_index_is_refused() {
    let mut f = Fixture::new();
    let node = f.instance("m5.large");
    let first = new_eni(&mut f);
    f.ec2
        .attach_network_interface(&first, &node.id, 1, None)
        .expect("attach");
    let second = new_eni(&mut f);
    let err = f
        .ec2
        .attach_network_interface(&second, &node.id, 1, None)
        .expect_err("index 1 taken");
    assert_eq!(err.code, codes::INVALID_PARAMETER_VALUE);
    assert_eq!(
        err.message,
        format!(
            "Instance '{}' already has an interface attached at device index '1'.",
            node.id
        )
    );
    assert_eq!(
        code(f.ec2.attach_network_interface(&second, &node.id, 0, None)),
        codes::INVALID_PARAMETER_VALUE
    );
}

#[test]
fn the_primary_eni_cannot_be_detached_and_attached_enis_cannot_be_deleted() {
    let mut f = Fixture::new();
    let node = f.instance("m5.large");
    let primary = f
        .ec2
        .network_interface(&node.primary_network_interface_id)
        .expect("primary")
        .clone();
    let attachment_id = primary
        .attachment
        .as_ref()
        .expect("attached")
        .attachment_id
        .clone();
    let err = f
        .ec2
        .detach_network_interface(&attachment_id, false)
        .expect_err("primary");
    assert_eq!(err.code, codes::OPERATION_NOT_PERMITTED);
    assert_eq!(
        err.message,
        "The network interface at device index 0 cannot be detached."
    );
    let err = f
        .ec2
        .delete_network_interface(&primary.id)
        .expect_err("attached primary");
    assert_eq!(err.code, codes::INVALID_PARAMETER_VALUE);
    assert_eq!(
        err.message,
        format!("Network interface '{}' is currently in use.", primary.id)
    );

    let eni = new_eni(&mut f);
    let attachment = f
        .ec2
        .attach_network_interface(&eni, &node.id, 1, None)
        .expect("attach");
    assert_eq!(
        code(f.ec2.delete_network_interface(&eni)),
        codes::INVALID_PARAMETER_VALUE
    );
    f.ec2
        .detach_network_interface(&attachment.attachment_id, false)
        .expect("detach secondary ENI");
    assert_eq!(
        code(
            f.ec2
                .detach_network_interface(&attachment.attachment_id, false)
        ),
        codes::INVALID_ATTACHMENT_ID_NOT_FOUND
    );
    f.ec2
        .delete_network_interface(&eni)
        .expect("delete detached ENI");
    assert!(f.ec2.network_interface(&eni).is_none());
    f.ec2.check_invariants().expect("invariants");
}

#[test]
fn attaching_an_attached_eni_is_in_use() {
    let mut f = Fixture::new();
    let a = f.instance("m5.large");
    let b = f.instance("m5.large");
    let eni = new_eni(&mut f);
    f.ec2
        .attach_network_interface(&eni, &a.id, 1, None)
        .expect("attach");
    let err = f
        .ec2
        .attach_network_interface(&eni, &b.id, 1, None)
        .expect_err("already attached");
    assert_eq!(err.code, codes::INVALID_NETWORK_INTERFACE_IN_USE);
    assert_eq!(err.message, format!("Interface: [{eni}] in use."));
}

#[test]
fn attaching_across_availability_zones_is_refused() {
    let mut f = Fixture::new();
    let node = f.instance("m5.large");
    let other = f.subnet("10.0.2.0/24", "us-west-2b");
    let eni = f
        .ec2
        .create_network_interface(CreateNetworkInterface::new(&other.id))
        .expect("eni in 2b");
    assert_eq!(
        code(f.ec2.attach_network_interface(&eni.id, &node.id, 1, None)),
        codes::INVALID_PARAMETER_COMBINATION
    );
}

#[test]
fn unknown_and_malformed_ids_have_their_own_codes() {
    let mut f = Fixture::new();
    let node = f.instance("m5.large");
    let missing_eni = "eni-0123456789abcdef0";
    assert_eq!(
        code(f.ec2.delete_network_interface(missing_eni)),
        codes::INVALID_NETWORK_INTERFACE_ID_NOT_FOUND
    );
    let err = f
        .ec2
        .attach_network_interface(missing_eni, &node.id, 1, None)
        .expect_err("missing");
    assert_eq!(
        err.message,
        format!("The networkInterface ID '{missing_eni}' does not exist")
    );
    assert_eq!(
        code(f.ec2.delete_network_interface("not-an-eni")),
        codes::INVALID_NETWORK_INTERFACE_ID_MALFORMED
    );
    let eni = new_eni(&mut f);
    assert_eq!(
        code(
            f.ec2
                .attach_network_interface(&eni, "i-0123456789abcdef0", 1, None)
        ),
        codes::INVALID_INSTANCE_ID_NOT_FOUND
    );
    assert_eq!(
        code(
            f.ec2
                .create_network_interface(CreateNetworkInterface::new("subnet-0123456789abcdef0"))
        ),
        codes::INVALID_SUBNET_ID_NOT_FOUND
    );
    assert_eq!(
        code(
            f.ec2
                .run_instance(RunInstance::new("m5.large", "subnet-0123456789abcdef0"))
        ),
        codes::INVALID_SUBNET_ID_NOT_FOUND
    );
    let mut request = CreateNetworkInterface::new(&f.subnet.id);
    request.security_group_ids = strings(&["sg-0123456789abcdef0"]);
    assert_eq!(
        code(f.ec2.create_network_interface(request)),
        codes::INVALID_GROUP_NOT_FOUND
    );
    assert_eq!(
        code(
            f.ec2
                .run_instance(RunInstance::new("m5.bogus", &f.subnet.id))
        ),
        codes::INVALID_PARAMETER_VALUE
    );
    assert_eq!(
        code(f.ec2.terminate_instance("i-0123456789abcdef0")),
        codes::INVALID_INSTANCE_ID_NOT_FOUND
    );
}

#[test]
fn termination_deletes_delete_on_termination_enis_and_detaches_the_rest() {
    let mut f = Fixture::new();
    let node = f.instance("m5.large");
    let kept = new_eni(&mut f);
    let deleted = new_eni(&mut f);
    f.ec2
        .attach_network_interface(&kept, &node.id, 1, None)
        .expect("attach");
    let attachment = f
        .ec2
        .attach_network_interface(&deleted, &node.id, 2, None)
        .expect("attach");
    assert!(
        !attachment.delete_on_termination,
        "attached ENIs default to false"
    );
    f.ec2
        .modify_network_interface_attribute(ModifyNetworkInterfaceAttribute {
            network_interface_id: deleted.clone(),
            attachment_delete_on_termination: Some((attachment.attachment_id.clone(), true)),
            ..ModifyNetworkInterfaceAttribute::default()
        })
        .expect("set DeleteOnTermination");
    let available_before = f
        .ec2
        .subnet(&f.subnet.id)
        .expect("subnet")
        .available_ip_address_count;

    let terminated = f.ec2.terminate_instance(&node.id).expect("terminate");
    assert_eq!(terminated.state, InstanceState::Terminated);
    assert_eq!(terminated.private_ip_address, None);
    assert!(f
        .ec2
        .network_interface(&node.primary_network_interface_id)
        .is_none());
    assert!(f.ec2.network_interface(&deleted).is_none());
    let kept = f.ec2.network_interface(&kept).expect("kept ENI survives");
    assert_eq!(kept.status, NetworkInterfaceStatus::Available);
    assert!(kept.attachment.is_none());
    // The primary's and the deleted ENI's addresses went back to the subnet.
    let available_after = f
        .ec2
        .subnet(&f.subnet.id)
        .expect("subnet")
        .available_ip_address_count;
    assert_eq!(available_after, available_before + 2);
    // Terminated instances stay visible, accept nothing, and terminate again as a no-op.
    let eni = new_eni(&mut f);
    assert_eq!(
        code(f.ec2.attach_network_interface(&eni, &node.id, 1, None)),
        codes::INCORRECT_INSTANCE_STATE
    );
    f.ec2.terminate_instance(&node.id).expect("idempotent");
    f.ec2.check_invariants().expect("invariants");
}

#[test]
fn a_primary_with_delete_on_termination_off_survives_termination() {
    let mut f = Fixture::new();
    let node = f.instance("m5.large");
    let primary = f
        .ec2
        .network_interface(&node.primary_network_interface_id)
        .expect("primary")
        .clone();
    let attachment_id = primary.attachment.expect("attached").attachment_id;
    f.ec2
        .modify_network_interface_attribute(ModifyNetworkInterfaceAttribute {
            network_interface_id: primary.id.clone(),
            attachment_delete_on_termination: Some((attachment_id, false)),
            ..ModifyNetworkInterfaceAttribute::default()
        })
        .expect("modify");
    f.ec2.terminate_instance(&node.id).expect("terminate");
    let survivor = f.ec2.network_interface(&primary.id).expect("survives");
    assert_eq!(survivor.status, NetworkInterfaceStatus::Available);
    f.ec2
        .delete_network_interface(&primary.id)
        .expect("now deletable");
}

#[test]
fn modify_takes_exactly_one_attribute() {
    let mut f = Fixture::new();
    let eni = new_eni(&mut f);
    let sg = f.ec2.create_security_group(&f.vpc.id, "pods").expect("sg");
    let none = ModifyNetworkInterfaceAttribute {
        network_interface_id: eni.clone(),
        ..ModifyNetworkInterfaceAttribute::default()
    };
    assert_eq!(
        code(f.ec2.modify_network_interface_attribute(none.clone())),
        codes::MISSING_PARAMETER
    );
    let two = ModifyNetworkInterfaceAttribute {
        source_dest_check: Some(false),
        description: Some("x".into()),
        ..none.clone()
    };
    assert_eq!(
        code(f.ec2.modify_network_interface_attribute(two)),
        codes::INVALID_PARAMETER_COMBINATION
    );
    f.ec2
        .modify_network_interface_attribute(ModifyNetworkInterfaceAttribute {
            source_dest_check: Some(false),
            ..none.clone()
        })
        .expect("source/dest check");
    f.ec2
        .modify_network_interface_attribute(ModifyNetworkInterfaceAttribute {
            security_group_ids: Some(vec![sg.id.clone()]),
            ..none.clone()
        })
        .expect("groups");
    let six: Vec<String> = (0..6)
        .map(|i| {
            f.ec2
                .create_security_group(&f.vpc.id, &format!("g{i}"))
                .expect("sg")
                .id
        })
        .collect();
    assert_eq!(
        code(
            f.ec2
                .modify_network_interface_attribute(ModifyNetworkInterfaceAttribute {
                    security_group_ids: Some(six),
                    ..none.clone()
                })
        ),
        codes::SECURITY_GROUPS_PER_INTERFACE_LIMIT_EXCEEDED
    );
    assert_eq!(
        code(
            f.ec2
                .modify_network_interface_attribute(ModifyNetworkInterfaceAttribute {
                    attachment_delete_on_termination: Some((
                        "eni-attach-0123456789abcdef0".into(),
                        true
                    )),
                    ..none
                })
        ),
        codes::INVALID_ATTACHMENT_ID_NOT_FOUND
    );
    let eni = f.ec2.network_interface(&eni).expect("eni");
    assert!(!eni.source_dest_check);
    assert_eq!(eni.security_group_ids, vec![sg.id]);
}

#[test]
fn client_token_makes_create_idempotent() {
    let mut f = Fixture::new();
    let mut request = CreateNetworkInterface::new(&f.subnet.id);
    request.secondary_private_ip_address_count = Some(2);
    request.client_token = Some("token-1".into());
    let first = f
        .ec2
        .create_network_interface(request.clone())
        .expect("first");
    let available = f
        .ec2
        .subnet(&f.subnet.id)
        .expect("subnet")
        .available_ip_address_count;
    let again = f
        .ec2
        .create_network_interface(request.clone())
        .expect("repeat");
    assert_eq!(first, again);
    assert_eq!(
        f.ec2
            .subnet(&f.subnet.id)
            .expect("subnet")
            .available_ip_address_count,
        available,
        "a repeat allocates nothing"
    );
    request.secondary_private_ip_address_count = Some(3);
    assert_eq!(
        code(f.ec2.create_network_interface(request)),
        codes::IDEMPOTENT_PARAMETER_MISMATCH
    );
    let mut run = RunInstance::new("m5.large", &f.subnet.id);
    run.client_token = Some("token-1".into());
    let node = f.ec2.run_instance(run.clone()).expect("run");
    assert_eq!(f.ec2.run_instance(run).expect("repeat").id, node.id);
}

#[test]
fn trunk_enis_need_a_trunking_instance_and_branch_enis_cannot_be_attached() {
    let mut f = Fixture::new();
    let small = f.instance("t3.medium");
    let mut trunk = CreateNetworkInterface::new(&f.subnet.id);
    trunk.interface_type = InterfaceType::Trunk;
    let trunk = f.ec2.create_network_interface(trunk).expect("trunk");
    assert_eq!(
        code(
            f.ec2
                .attach_network_interface(&trunk.id, &small.id, 1, None)
        ),
        codes::INVALID_PARAMETER_VALUE
    );
    let mut branch = CreateNetworkInterface::new(&f.subnet.id);
    branch.interface_type = InterfaceType::Branch;
    let branch = f.ec2.create_network_interface(branch).expect("branch");
    assert_eq!(
        code(
            f.ec2
                .attach_network_interface(&branch.id, &small.id, 1, None)
        ),
        codes::INVALID_PARAMETER_VALUE
    );
}
