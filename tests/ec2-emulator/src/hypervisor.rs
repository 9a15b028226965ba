//! "Hypervisor" mode: ENIs attached to the emulated node instance appear as links carrying the
//! ENI's MAC address in the node's network namespace, and disappear when detached (or when
//! the instance terminates), so the host under test sees interfaces come and go as on EC2.
//!
//! With a fabric namespace each link is a veth whose peer sits in the fabric (up), so tests can
//! route between ENIs; without one it is a dummy link, or, on kernels without the dummy
//! driver, a veth whose peer sits in an unnamed namespace the emulator owns (it vanishes with
//! the emulator, taking the links with it). Node-side links are left down, as a
//! hot-plugged NIC is until the OS (here: the CNI under test) brings it up.
//!
//! The planning ([`NodeLinks`]) is pure and tested with a recording [`LinkOps`]; the kernel
//! side ([`NetlinkLinks`]) is tested for real, as root, in the crate's integration tests.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkMessage};
use rtnetlink::{Handle, LinkDummy, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::netns::{self, NetnsError};
use crate::Ec2Model;

/// Where hypervisor mode puts links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypervisorConfig {
    /// Name of the node's network namespace under /run/netns.
    pub node_netns: String,
    /// Name of the fabric namespace under /run/netns; `None` makes dummy links.
    pub fabric_netns: Option<String>,
    /// Node-side link names are this prefix plus the device index (`eth1`, `eth2`, …).
    pub link_prefix: String,
}

impl HypervisorConfig {
    /// Links in `node_netns`, dummies, named `eth<device index>`.
    pub fn new(node_netns: impl Into<String>) -> Self {
        Self {
            node_netns: node_netns.into(),
            fabric_netns: None,
            link_prefix: "eth".into(),
        }
    }

    /// Make veth links whose peers go into `fabric_netns`.
    pub fn with_fabric(mut self, fabric_netns: impl Into<String>) -> Self {
        self.fabric_netns = Some(fabric_netns.into());
        self
    }

    /// Name node-side links `<prefix><device index>`.
    pub fn with_link_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.link_prefix = prefix.into();
        self
    }
}

/// A link standing for one attached ENI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EniLink {
    /// The ENI.
    pub eni_id: String,
    /// The attachment it stands for (a re-attachment is a new link).
    pub attachment_id: String,
    /// The ENI's MAC address, `02:…`.
    pub mac: [u8; 6],
    /// Link name in the node namespace.
    pub name: String,
    /// Peer name in the fabric namespace, when there is one.
    pub fabric_name: Option<String>,
}

/// Why hypervisor mode could not create or remove a link.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// A namespace could not be opened or entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A netlink request failed.
    #[error("{operation}: {reason}")]
    Netlink {
        /// What was attempted, with the link name.
        operation: String,
        /// The kernel's answer.
        reason: String,
    },
    /// An ENI's MAC address is not `xx:xx:xx:xx:xx:xx`.
    #[error("ENI {eni_id} has a malformed MAC address {mac:?}")]
    BadMac {
        /// The ENI.
        eni_id: String,
        /// The MAC address as the model has it.
        mac: String,
    },
}

/// Creates and removes ENI links; the real implementation is [`NetlinkLinks`].
pub trait LinkOps {
    /// Create the link for `link`.
    fn create(&self, link: &EniLink) -> impl Future<Output = Result<(), HypervisorError>> + Send;
    /// Remove the link for `link`; a link that is already gone is not an error.
    fn remove(&self, link: &EniLink) -> impl Future<Output = Result<(), HypervisorError>> + Send;
}

/// The links of one node instance, kept in step with the model.
#[derive(Debug)]
pub struct NodeLinks<L> {
    ops: L,
    config: HypervisorConfig,
    instance_id: String,
    links: BTreeMap<String, EniLink>,
}

impl<L: LinkOps> NodeLinks<L> {
    /// Links for the ENIs of `instance_id`, made by `ops`.
    pub fn new(ops: L, config: HypervisorConfig, instance_id: impl Into<String>) -> Self {
        Self {
            ops,
            config,
            instance_id: instance_id.into(),
            links: BTreeMap::new(),
        }
    }

    /// The links that exist now, by ENI id.
    pub fn links(&self) -> &BTreeMap<String, EniLink> {
        &self.links
    }

    /// The links the model's state calls for: one per ENI attached to the instance.
    pub fn desired(&self, model: &Ec2Model) -> Result<Vec<EniLink>, HypervisorError> {
        model
            .instance_network_interfaces(&self.instance_id)
            .into_iter()
            .filter_map(|eni| eni.attachment.as_ref().map(|a| (eni, a)))
            .map(|(eni, attachment)| {
                let name = if attachment.network_card_index == 0 {
                    format!("{}{}", self.config.link_prefix, attachment.device_index)
                } else {
                    format!(
                        "{}{}n{}",
                        self.config.link_prefix,
                        attachment.network_card_index,
                        attachment.device_index
                    )
                };
                let suffix = eni.id.strip_prefix("eni-").unwrap_or(&eni.id);
                let short = &suffix[suffix.len().saturating_sub(12)..];
                Ok(EniLink {
                    eni_id: eni.id.clone(),
                    attachment_id: attachment.attachment_id.clone(),
                    mac: parse_mac(&eni.id, &eni.mac_address)?,
                    name,
                    fabric_name: self
                        .config
                        .fabric_netns
                        .as_ref()
                        .map(|_| format!("f{short}")),
                })
            })
            .collect()
    }

    /// Remove links whose ENI is no longer attached (or was re-attached), then create the
    /// missing ones. Stops at the first failure; the next call retries what is left.
    pub async fn reconcile(&mut self, desired: Vec<EniLink>) -> Result<(), HypervisorError> {
        let wanted: BTreeMap<String, EniLink> = desired
            .into_iter()
            .map(|link| (link.eni_id.clone(), link))
            .collect();
        let stale: Vec<EniLink> = self
            .links
            .values()
            .filter(|link| wanted.get(&link.eni_id) != Some(*link))
            .cloned()
            .collect();
        for link in stale {
            self.ops.remove(&link).await?;
            self.links.remove(&link.eni_id);
        }
        for (eni_id, link) in wanted {
            if !self.links.contains_key(&eni_id) {
                self.ops.create(&link).await?;
                self.links.insert(eni_id, link);
            }
        }
        Ok(())
    }

    /// Remove every link this node has.
    pub async fn remove_all(&mut self) -> Result<(), HypervisorError> {
        self.reconcile(Vec::new()).await
    }
}

fn parse_mac(eni_id: &str, mac: &str) -> Result<[u8; 6], HypervisorError> {
    let bad = || HypervisorError::BadMac {
        eni_id: eni_id.to_owned(),
        mac: mac.to_owned(),
    };
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|part| u8::from_str_radix(part, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

/// [`LinkOps`] on the kernel: links in the node namespace, peers in the fabric namespace.
#[derive(Debug)]
pub struct NetlinkLinks {
    node_path: String,
    node: File,
    fabric: Option<(String, File)>,
    /// Where veth peers go when there is no fabric and the kernel has no dummy driver.
    parking: std::sync::Mutex<Option<std::sync::Arc<File>>>,
}

impl NetlinkLinks {
    /// Open the namespaces named in `config`.
    pub fn open(config: &HypervisorConfig) -> Result<Self, HypervisorError> {
        let node_path = netns::path_of(&config.node_netns);
        let node = netns::open(&node_path)?;
        let fabric = match &config.fabric_netns {
            Some(name) => {
                let path = netns::path_of(name);
                let file = netns::open(&path)?;
                Some((path, file))
            }
            None => None,
        };
        Ok(Self {
            node_path,
            node,
            fabric,
            parking: std::sync::Mutex::new(None),
        })
    }

    /// The unnamed namespace for veth peers, made on first use.
    fn parking(&self) -> Result<std::sync::Arc<File>, HypervisorError> {
        let mut parking = self
            .parking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(file) = parking.as_ref() {
            return Ok(std::sync::Arc::clone(file));
        }
        let file = std::sync::Arc::new(netns::new_anonymous()?);
        *parking = Some(std::sync::Arc::clone(&file));
        Ok(file)
    }

    async fn node_handle(&self) -> Result<Handle, HypervisorError> {
        Ok(netns::handle_in(&self.node, &self.node_path).await?)
    }
}

fn netlink_error(operation: String) -> impl FnOnce(rtnetlink::Error) -> HypervisorError {
    move |e| HypervisorError::Netlink {
        operation,
        reason: match e {
            rtnetlink::Error::NetlinkError(message) => message.to_io().to_string(),
            other => other.to_string(),
        },
    }
}

async fn find_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, HypervisorError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(rtnetlink::Error::NetlinkError(message))
            if [ENODEV, ENOENT].contains(&-message.raw_code()) =>
        {
            Ok(None)
        }
        Err(e) => Err(netlink_error(format!("look up link {name}"))(e)),
    }
}

/// A veth named `link.name` with the ENI's MAC in the node namespace (`node`), its peer
/// `peer_name` in `peer_netns`.
async fn add_veth(
    node: &Handle,
    link: &EniLink,
    peer_name: &str,
    peer_netns: &File,
) -> Result<(), rtnetlink::Error> {
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer_name.to_owned())
        .setns_by_fd(peer_netns.as_raw_fd())
        .build();
    let veth = LinkVeth::new(&link.name, peer_name)
        .address(link.mac.to_vec())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    node.link().add(veth).execute().await
}

/// The peer's name in the unnamed namespace: unique per ENI.
fn parked_peer_name(link: &EniLink) -> String {
    let suffix = link.eni_id.strip_prefix("eni-").unwrap_or(&link.eni_id);
    format!("p{}", &suffix[suffix.len().saturating_sub(12)..])
}

/// The kernel's answer when a link kind (here: dummy) is not available.
const EOPNOTSUPP: i32 = nix::errno::Errno::EOPNOTSUPP as i32;
/// The kernel's answers for "no such link".
const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;

impl LinkOps for NetlinkLinks {
    async fn create(&self, link: &EniLink) -> Result<(), HypervisorError> {
        let node = self.node_handle().await?;
        let what = || {
            format!(
                "create link {} for {} in {}",
                link.name, link.eni_id, self.node_path
            )
        };
        if let (Some((fabric_path, fabric)), Some(peer_name)) = (&self.fabric, &link.fabric_name) {
            add_veth(&node, link, peer_name, fabric)
                .await
                .map_err(netlink_error(what()))?;
            let handle = netns::handle_in(fabric, fabric_path).await?;
            return handle
                .link()
                .set(LinkUnspec::new_with_name(peer_name).up().build())
                .execute()
                .await
                .map_err(netlink_error(format!(
                    "set fabric link {peer_name} up in {fabric_path}"
                )));
        }
        let dummy = LinkDummy::new(&link.name)
            .address(link.mac.to_vec())
            .build();
        match node.link().add(dummy).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(message)) if -message.raw_code() == EOPNOTSUPP => {
                let parking = self.parking()?;
                add_veth(&node, link, &parked_peer_name(link), &parking)
                    .await
                    .map_err(netlink_error(what()))
            }
            Err(e) => Err(netlink_error(what())(e)),
        }
    }

    async fn remove(&self, link: &EniLink) -> Result<(), HypervisorError> {
        let node = self.node_handle().await?;
        let Some(existing) = find_link(&node, &link.name).await? else {
            return Ok(());
        };
        node.link()
            .del(existing.header.index)
            .execute()
            .await
            .map_err(netlink_error(format!(
                "delete link {} of {} in {}",
                link.name, link.eni_id, self.node_path
            )))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{CreateNetworkInterface, RunInstance};

    /// Records what it was asked to do.
    #[derive(Default, Clone)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Recorder {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().expect("lock"))
        }
    }

    impl LinkOps for Recorder {
        async fn create(&self, link: &EniLink) -> Result<(), HypervisorError> {
            self.0
                .lock()
                .expect("lock")
                .push(format!("create {} {}", link.name, link.eni_id));
            Ok(())
        }

        async fn remove(&self, link: &EniLink) -> Result<(), HypervisorError> {
            self.0
                .lock()
                .expect("lock")
                .push(format!("remove {} {}", link.name, link.eni_id));
            Ok(())
        }
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn links_follow_attach_detach_and_terminate() {
        let mut ec2 = Ec2Model::new(3);
        let vpc = ec2
            .create_vpc("10.0.0.0/16".parse().expect("cidr"))
            .expect("vpc");
        let subnet = ec2
            .create_subnet(&vpc.id, "10.0.1.0/24".parse().expect("cidr"), "us-west-2a")
            .expect("subnet");
        let node = ec2
            .run_instance(RunInstance::new("m5.large", &subnet.id))
            .expect("node");
        let recorder = Recorder::default();
        let mut links = NodeLinks::new(
            recorder.clone(),
            HypervisorConfig::new("node").with_fabric("fabric"),
            &node.id,
        );
        block_on(links.reconcile(links.desired(&ec2).expect("plan"))).expect("sync");
        let primary = &node.primary_network_interface_id;
        assert_eq!(recorder.take(), [format!("create eth0 {primary}")]);
        let primary_link = &links.links()[primary];
        assert_eq!(
            primary_link.mac,
            parse_mac(
                primary,
                &ec2.network_interface(primary).expect("eni").mac_address
            )
            .expect("mac")
        );
        assert!(primary_link
            .fabric_name
            .as_deref()
            .is_some_and(|n| n.len() <= 15));

        let eni = ec2
            .create_network_interface(CreateNetworkInterface::new(&subnet.id))
            .expect("eni");
        let attachment = ec2
            .attach_network_interface(&eni.id, &node.id, 2, None)
            .expect("attach");
        block_on(links.reconcile(links.desired(&ec2).expect("plan"))).expect("sync");
        assert_eq!(recorder.take(), [format!("create eth2 {}", eni.id)]);

        // Detach and re-attach at another index: the old link goes, a new one comes.
        ec2.detach_network_interface(&attachment.attachment_id, false)
            .expect("detach");
        ec2.attach_network_interface(&eni.id, &node.id, 1, None)
            .expect("attach");
        block_on(links.reconcile(links.desired(&ec2).expect("plan"))).expect("sync");
        assert_eq!(
            recorder.take(),
            [
                format!("remove eth2 {}", eni.id),
                format!("create eth1 {}", eni.id)
            ]
        );

        ec2.terminate_instance(&node.id).expect("terminate");
        block_on(links.reconcile(links.desired(&ec2).expect("plan"))).expect("sync");
        let mut removed = recorder.take();
        removed.sort();
        assert_eq!(
            removed,
            [
                format!("remove eth0 {primary}"),
                format!("remove eth1 {}", eni.id)
            ]
        );
        assert!(links.links().is_empty());
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("eni-1", "02:ab:00:10:ff:01").expect("mac"),
            [0x02, 0xab, 0x00, 0x10, 0xff, 0x01]
        );
        assert!(parse_mac("eni-1", "02:ab").is_err());
        assert!(parse_mac("eni-1", "zz:ab:00:10:ff:01").is_err());
    }
}
