//! ENI trunking for security groups for pods: AssociateTrunkInterface (a branch ENI on a VLAN
//! of an attached trunk ENI, up to the instance type's branch limit),
//! DisassociateTrunkInterface and DescribeTrunkInterfaceAssociations.

use super::{idempotent_mismatch, Ec2Model, TokenUse};
use crate::error::{codes, Ec2Error, Ec2Result};
use crate::requests::AssociateTrunkInterface;
use crate::types::{InterfaceType, NetworkInterfaceStatus, TrunkInterfaceAssociation};

const ASSOCIATE_TRUNK_INTERFACE: &str = "AssociateTrunkInterface";

impl Ec2Model {
    /// AssociateTrunkInterface: make an unattached ENI a branch of an attached trunk ENI on
    /// `vlan_id`. The VLAN must be free on the trunk and the trunk's instance type must have
    /// room for another branch.
    pub fn associate_trunk_interface(
        &mut self,
        request: AssociateTrunkInterface,
    ) -> Ec2Result<TrunkInterfaceAssociation> {
        if let Some(used) = self.token_use(ASSOCIATE_TRUNK_INTERFACE, request.client_token.as_ref())
        {
            return match used {
                TokenUse::AssociateTrunkInterface {
                    request: first,
                    result,
                } if *first == request => Ok(self
                    .trunk_associations
                    .get(&result.association_id)
                    .unwrap_or(result)
                    .clone()),
                _ => Err(idempotent_mismatch(
                    request.client_token.as_deref().unwrap_or_default(),
                )),
            };
        }
        if !(1..=4094).contains(&request.vlan_id) {
            return Err(Ec2Error::invalid_value(format!(
                "Value ({}) for parameter vlanId is invalid. Valid values are 1-4094.",
                request.vlan_id
            )));
        }
        let trunk = self.eni_ref(&request.trunk_interface_id)?;
        let branch = self.eni_ref(&request.branch_interface_id)?;
        if trunk.interface_type != InterfaceType::Trunk {
            return Err(Ec2Error::invalid_value(format!(
                "Interface {} is not a trunk interface.",
                trunk.id
            )));
        }
        let Some(instance_type) = self.attached_instance_type(trunk) else {
            return Err(Ec2Error::invalid_value(format!(
                "Trunk interface {} is not attached to an instance.",
                trunk.id
            )));
        };
        if branch.interface_type == InterfaceType::Trunk {
            return Err(Ec2Error::invalid_value(format!(
                "Interface {} is a trunk interface and cannot be a branch.",
                branch.id
            )));
        }
        if branch.status != NetworkInterfaceStatus::Available {
            return Err(Ec2Error::eni_in_use_for_attach(&branch.id));
        }
        if branch.vpc_id != trunk.vpc_id {
            return Err(Ec2Error::invalid_value(format!(
                "Branch interface {} and trunk interface {} are in different VPCs.",
                branch.id, trunk.id
            )));
        }
        let on_trunk: Vec<&TrunkInterfaceAssociation> = self
            .trunk_associations
            .values()
            .filter(|a| a.trunk_interface_id == trunk.id)
            .collect();
        if on_trunk.iter().any(|a| a.vlan_id == request.vlan_id) {
            return Err(Ec2Error::invalid_value(format!(
                "VLAN id {} is already in use on trunk interface {}.",
                request.vlan_id, trunk.id
            )));
        }
        if on_trunk.len() >= instance_type.branch_interfaces as usize {
            return Err(Ec2Error::invalid_value(format!(
                "Trunk interface {} already has the maximum of {} branch interfaces for {}.",
                trunk.id, instance_type.branch_interfaces, instance_type.name
            )));
        }

        let association = TrunkInterfaceAssociation {
            association_id: self.new_id("trunk-assoc"),
            trunk_interface_id: request.trunk_interface_id.clone(),
            branch_interface_id: request.branch_interface_id.clone(),
            vlan_id: request.vlan_id,
            interface_protocol: "VLAN".into(),
        };
        let branch = self.eni_mut(&request.branch_interface_id)?;
        branch.interface_type = InterfaceType::Branch;
        branch.status = NetworkInterfaceStatus::InUse;
        self.trunk_associations
            .insert(association.association_id.clone(), association.clone());
        let token = request.client_token.clone();
        self.remember_token(
            ASSOCIATE_TRUNK_INTERFACE,
            token.as_ref(),
            TokenUse::AssociateTrunkInterface {
                request,
                result: association.clone(),
            },
        );
        self.touch();
        Ok(association)
    }

    /// DisassociateTrunkInterface: the branch ENI becomes available (still typed `branch`).
    pub fn disassociate_trunk_interface(&mut self, association_id: &str) -> Ec2Result<()> {
        let association = self
            .trunk_associations
            .remove(association_id)
            .ok_or_else(|| {
                Ec2Error::new(
                    codes::INVALID_ASSOCIATION_ID_NOT_FOUND,
                    format!("The association ID '{association_id}' does not exist"),
                )
            })?;
        if let Some(branch) = self.enis.get_mut(&association.branch_interface_id) {
            branch.status = NetworkInterfaceStatus::Available;
        }
        self.touch();
        Ok(())
    }

    /// DescribeTrunkInterfaceAssociations by association id (all when `ids` is empty), in id
    /// order.
    pub fn describe_trunk_interface_associations(
        &self,
        ids: &[String],
    ) -> Ec2Result<Vec<TrunkInterfaceAssociation>> {
        if let Some(missing) = ids
            .iter()
            .find(|id| !self.trunk_associations.contains_key(*id))
        {
            return Err(Ec2Error::new(
                codes::INVALID_ASSOCIATION_ID_NOT_FOUND,
                format!("The association ID '{missing}' does not exist"),
            ));
        }
        Ok(self
            .trunk_associations
            .values()
            .filter(|a| ids.is_empty() || ids.contains(&a.association_id))
            .cloned()
            .collect())
    }
}
