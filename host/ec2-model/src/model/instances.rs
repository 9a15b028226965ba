//! Instances: RunInstances (one instance, with its primary ENI at device index 0) and
//! TerminateInstances (detach every ENI, delete those marked DeleteOnTermination).

use super::addresses::{plan_ipv4, Ipv4Ask};
use super::interfaces::unknown_type;
use super::{idempotent_mismatch, Ec2Model, TokenUse, ACCOUNT_ID};
use crate::error::{Ec2Error, Ec2Result};
use crate::requests::RunInstance;
use crate::tags;
use crate::types::{
    Attachment, AttachmentStatus, Instance, InstanceState, InterfaceType, NetworkInterface,
    NetworkInterfaceStatus, Tags,
};

const RUN_INSTANCES: &str = "RunInstances";

impl Ec2Model {
    /// RunInstances for one instance: creates the instance and its primary ENI (device index
    /// 0 on the default network card, DeleteOnTermination true) with the primary address.
    pub fn run_instance(&mut self, request: RunInstance) -> Ec2Result<Instance> {
        if let Some(used) = self.token_use(RUN_INSTANCES, request.client_token.as_ref()) {
            return match used {
                TokenUse::RunInstance {
                    request: first,
                    result,
                } if *first == request => {
                    Ok(self.instances.get(&result.id).unwrap_or(result).clone())
                }
                _ => Err(idempotent_mismatch(
                    request.client_token.as_deref().unwrap_or_default(),
                )),
            };
        }
        let instance_type = self
            .catalog
            .get(&request.instance_type)
            .ok_or_else(|| unknown_type(&request.instance_type))?;
        let hypervisor = instance_type.hypervisor;
        let card = instance_type.default_network_card_index;
        let record = self.subnet_record(&request.subnet_id)?;
        let subnet_id = record.subnet.id.clone();
        let vpc_id = record.subnet.vpc_id.clone();
        let availability_zone = record.subnet.availability_zone.clone();
        let security_group_ids =
            self.resolve_security_groups(&vpc_id, &request.security_group_ids)?;
        tags::validate_map(&request.tags)?;
        let ask = Ipv4Ask {
            primary: Some(request.private_ip_address),
            run_instances_wording: true,
            ..Ipv4Ask::default()
        };
        let record = self
            .subnets
            .get(&subnet_id)
            .ok_or_else(|| Ec2Error::subnet_not_found(&subnet_id))?;
        let choice = plan_ipv4(&record.ipv4, &ask, self.policy, &mut self.rng)?;
        let Some(primary) = choice.primary else {
            return Err(Ec2Error::insufficient_addresses());
        };

        let instance_id = self.new_id("i");
        let eni_id = self.new_id("eni");
        let attachment_id = self.new_id("eni-attach");
        let mac_address = self.new_mac();
        let pool = self.pool4_mut(&subnet_id)?;
        pool.claim_address(primary, &eni_id);
        let address = pool.address(primary);
        let eni = NetworkInterface {
            id: eni_id.clone(),
            subnet_id: subnet_id.clone(),
            vpc_id: vpc_id.clone(),
            availability_zone: availability_zone.clone(),
            owner_id: ACCOUNT_ID.into(),
            description: String::new(),
            interface_type: InterfaceType::Interface,
            mac_address,
            private_ip_address: address,
            secondary_private_ip_addresses: Vec::new(),
            ipv4_prefixes: Vec::new(),
            ipv6_addresses: Vec::new(),
            ipv6_prefixes: Vec::new(),
            security_group_ids: security_group_ids.clone(),
            source_dest_check: true,
            status: NetworkInterfaceStatus::InUse,
            attachment: Some(Attachment {
                attachment_id: attachment_id.clone(),
                instance_id: instance_id.clone(),
                instance_owner_id: ACCOUNT_ID.into(),
                device_index: 0,
                network_card_index: card,
                status: AttachmentStatus::Attached,
                delete_on_termination: true,
                attach_time_unix_ms: self.now_unix_ms,
            }),
            requester_managed: false,
            tags: Tags::new(),
        };
        let instance = Instance {
            id: instance_id.clone(),
            instance_type: request.instance_type.clone(),
            hypervisor,
            state: InstanceState::Running,
            subnet_id,
            vpc_id,
            availability_zone,
            private_ip_address: Some(address),
            primary_network_interface_id: eni_id.clone(),
            security_group_ids,
            owner_id: ACCOUNT_ID.into(),
            tags: request.tags.clone(),
        };
        self.enis.insert(eni_id.clone(), eni);
        self.attachments.insert(attachment_id, eni_id);
        self.instances.insert(instance_id, instance.clone());
        let token = request.client_token.clone();
        self.remember_token(
            RUN_INSTANCES,
            token.as_ref(),
            TokenUse::RunInstance {
                request,
                result: instance.clone(),
            },
        );
        self.touch();
        Ok(instance)
    }

    /// TerminateInstances for one instance: every attached ENI is detached, and those with
    /// DeleteOnTermination (the primary ENI unless changed) are deleted with their addresses.
    /// Terminating a terminated instance is a no-op, as in EC2.
    pub fn terminate_instance(&mut self, instance_id: &str) -> Ec2Result<Instance> {
        let instance = self.instance_ref(instance_id)?;
        if instance.state == InstanceState::Terminated {
            return Ok(instance.clone());
        }
        let attached: Vec<(String, bool)> = self
            .instance_network_interfaces(instance_id)
            .into_iter()
            .map(|eni| {
                let delete = eni
                    .attachment
                    .as_ref()
                    .is_some_and(|a| a.delete_on_termination);
                (eni.id.clone(), delete)
            })
            .collect();
        for (eni_id, delete) in attached {
            self.detach_unchecked(&eni_id)?;
            if delete {
                self.remove_eni(&eni_id)?;
            }
        }
        let instance = self
            .instances
            .get_mut(instance_id)
            .ok_or_else(|| Ec2Error::instance_not_found(instance_id))?;
        instance.state = InstanceState::Terminated;
        instance.private_ip_address = None;
        let instance = instance.clone();
        self.touch();
        Ok(instance)
    }
}
