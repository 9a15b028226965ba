//! Trunk and branch ENIs: association on a VLAN, the per-type branch limit, unique VLANs,
//! disassociation, and cleanup when the trunk goes away.

use super::{code, Fixture};
use crate::types::{InterfaceType, NetworkInterfaceStatus};
use crate::{codes, AssociateTrunkInterface, CreateNetworkInterface};

/// An m5.large (9 branches) with a trunk ENI at device index 1; returns (instance, trunk).
fn trunk_node(f: &mut Fixture) -> (String, String) {
    let node = f.instance("m5.large");
    let mut request = CreateNetworkInterface::new(&f.subnet.id);
    request.interface_type = InterfaceType::Trunk;
    let trunk = f.ec2.create_network_interface(request).expect("trunk");
    f.ec2
        .attach_network_interface(&trunk.id, &node.id, 1, None)
        .expect("attach trunk");
    (node.id, trunk.id)
}

fn branch(f: &mut Fixture) -> String {
    f.ec2
        .create_network_interface(CreateNetworkInterface::new(&f.subnet.id))
        .expect("branch eni")
        .id
}

fn associate(branch: &str, trunk: &str, vlan_id: u16) -> AssociateTrunkInterface {
    AssociateTrunkInterface {
        branch_interface_id: branch.to_owned(),
        trunk_interface_id: trunk.to_owned(),
        vlan_id,
        client_token: None,
    }
}

#[test]
fn branches_associate_up_to_the_type_limit_with_unique_vlans() {
    let mut f = Fixture::new();
    let (_node, trunk) = trunk_node(&mut f);
    let first = branch(&mut f);
    let association = f
        .ec2
        .associate_trunk_interface(associate(&first, &trunk, 1))
        .expect("associate");
    assert_eq!(association.interface_protocol, "VLAN");
    let eni = f.ec2.network_interface(&first).expect("branch");
    assert_eq!(eni.interface_type, InterfaceType::Branch);
    assert_eq!(eni.status, NetworkInterfaceStatus::InUse);
    let second = branch(&mut f);
    assert_eq!(
        code(
            f.ec2
                .associate_trunk_interface(associate(&second, &trunk, 1))
        ),
        codes::INVALID_PARAMETER_VALUE,
        "VLAN 1 taken"
    );
    assert_eq!(
        code(
            f.ec2
                .associate_trunk_interface(associate(&first, &trunk, 2))
        ),
        codes::INVALID_NETWORK_INTERFACE_IN_USE,
        "already a branch"
    );
    for vlan in 2..=9 {
        let eni = branch(&mut f);
        f.ec2
            .associate_trunk_interface(associate(&eni, &trunk, vlan))
            .expect("within 9 branches");
    }
    let tenth = branch(&mut f);
    assert_eq!(
        code(
            f.ec2
                .associate_trunk_interface(associate(&tenth, &trunk, 10))
        ),
        codes::INVALID_PARAMETER_VALUE
    );
    assert_eq!(
        code(
            f.ec2
                .associate_trunk_interface(associate(&tenth, &trunk, 0))
        ),
        codes::INVALID_PARAMETER_VALUE
    );
    f.ec2.check_invariants().expect("invariants");

    f.ec2
        .disassociate_trunk_interface(&association.association_id)
        .expect("disassociate");
    assert_eq!(
        f.ec2.network_interface(&first).map(|e| e.status),
        Some(NetworkInterfaceStatus::Available)
    );
    assert_eq!(
        code(
            f.ec2
                .disassociate_trunk_interface(&association.association_id)
        ),
        codes::INVALID_ASSOCIATION_ID_NOT_FOUND
    );
    f.ec2
        .associate_trunk_interface(associate(&tenth, &trunk, 1))
        .expect("VLAN 1 and a branch slot are free again");
    assert_eq!(
        f.ec2
            .describe_trunk_interface_associations(&[])
            .expect("list")
            .len(),
        9
    );
}

#[test]
fn trunks_must_be_trunks_and_attached() {
    let mut f = Fixture::new();
    let plain = branch(&mut f);
    let other = branch(&mut f);
    assert_eq!(
        code(
            f.ec2
                .associate_trunk_interface(associate(&other, &plain, 1))
        ),
        codes::INVALID_PARAMETER_VALUE
    );
    let mut request = CreateNetworkInterface::new(&f.subnet.id);
    request.interface_type = InterfaceType::Trunk;
    let detached_trunk = f.ec2.create_network_interface(request).expect("trunk");
    assert_eq!(
        code(
            f.ec2
                .associate_trunk_interface(associate(&other, &detached_trunk.id, 1))
        ),
        codes::INVALID_PARAMETER_VALUE
    );
}

#[test]
fn terminating_the_trunk_node_releases_its_branches() {
    let mut f = Fixture::new();
    let (node, trunk) = trunk_node(&mut f);
    let attachment = f
        .ec2
        .network_interface(&trunk)
        .and_then(|e| e.attachment.clone())
        .expect("attached");
    f.ec2
        .modify_network_interface_attribute(crate::ModifyNetworkInterfaceAttribute {
            network_interface_id: trunk.clone(),
            attachment_delete_on_termination: Some((attachment.attachment_id, true)),
            ..crate::ModifyNetworkInterfaceAttribute::default()
        })
        .expect("delete trunk on termination");
    let eni = branch(&mut f);
    f.ec2
        .associate_trunk_interface(associate(&eni, &trunk, 7))
        .expect("associate");
    f.ec2.terminate_instance(&node).expect("terminate");
    assert!(f.ec2.network_interface(&trunk).is_none());
    assert!(f
        .ec2
        .describe_trunk_interface_associations(&[])
        .expect("list")
        .is_empty());
    assert_eq!(
        f.ec2.network_interface(&eni).map(|e| e.status),
        Some(NetworkInterfaceStatus::Available)
    );
    f.ec2
        .delete_network_interface(&eni)
        .expect("branch deletable");
    f.ec2.check_invariants().expect("invariants");
}

#[test]
fn associate_is_idempotent_with_a_client_token() {
    let mut f = Fixture::new();
    let (_node, trunk) = trunk_node(&mut f);
    let eni = branch(&mut f);
    let mut request = associate(&eni, &trunk, 3);
    request.client_token = Some("assoc-1".into());
    let first = f
        .ec2
        .associate_trunk_interface(request.clone())
        .expect("first");
    let again = f
        .ec2
        .associate_trunk_interface(request.clone())
        .expect("repeat");
    assert_eq!(first, again);
    request.vlan_id = 4;
    assert_eq!(
        code(f.ec2.associate_trunk_interface(request)),
        codes::IDEMPOTENT_PARAMETER_MISMATCH
    );
}
