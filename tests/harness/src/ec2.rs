//! An EC2 node for tests: a [`TestNode`] whose `eth0` is the primary ENI of an emulated
//! instance, with the EC2 emulator (in-process, hypervisor mode) serving the EC2 API and IMDS
//! on the node namespace's loopback, as the real ones are reachable from a real node.
//!
//! The emulator runs on its own thread, which entered the node namespace before binding its
//! listeners, on a current-thread runtime that lives until the node is dropped. Every attached
//! ENI appears as `eth<device>` in the node namespace, a veth whose peer sits in the node's
//! `outside` namespace (the VPC fabric). The test keeps the emulator's handle: it reads the
//! model, the request log and the counters, and injects faults while the daemon runs.

use std::fs::File;
use std::sync::Arc;

use ec2_emulator::{CreateNetworkInterface, Emulator, EmulatorHandle, HypervisorConfig, Scenario};
use nix::sched::{setns, CloneFlags};

use crate::node::TestNode;

/// Static credentials the daemon presents to the emulator (it checks none).
pub const ACCESS_KEY: &str = "AKIDWASMCNITEST";

/// An emulated EC2 node.
pub struct Ec2Node {
    /// The node (namespaces, daemon, chain helpers).
    pub node: TestNode,
    /// The emulator.
    pub emulator: Arc<EmulatorHandle>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The node instance.
    pub instance_id: String,
    /// The primary ENI.
    pub primary_eni: String,
    /// The primary ENI's address (on `eth0`).
    pub primary_ip: std::net::Ipv4Addr,
    /// The node's subnet.
    pub subnet_id: String,
    /// The node subnet's CIDR.
    pub subnet_cidr: ipnet::Ipv4Net,
}

impl Ec2Node {
    /// An instance of `instance_type` in the default scenario (VPC 10.0.0.0/16, subnets
    /// 10.0.0.0/20 and 10.0.16.0/20, the node in the first), `scenario` applied on top.
    pub fn start(instance_type: &str, scenario: impl FnOnce(Scenario) -> Scenario) -> Ec2Node {
        let node = TestNode::without_uplink();
        let hypervisor = HypervisorConfig::new(node.node.name()).with_fabric(node.outside.name());
        let scenario = scenario(
            Scenario::default()
                .with_node_instance_type(instance_type)
                .with_hypervisor(hypervisor),
        );
        let netns = File::open(node.node.path()).expect("open the node namespace");
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            setns(&netns, CloneFlags::CLONE_NEWNET).expect("setns into the node namespace");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("emulator runtime");
            runtime.block_on(async move {
                let started = Emulator::start(scenario).await.map(Arc::new);
                let handle = match started {
                    Ok(handle) => handle,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(handle.clone()));
                // Serve until the node is dropped; poll the stop channel without blocking
                // the runtime's only thread.
                while let Err(std::sync::mpsc::TryRecvError::Empty) = stop_rx.try_recv() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                drop(handle);
            });
        });
        let emulator = handle_rx
            .recv()
            .expect("emulator thread")
            .unwrap_or_else(|e| panic!("emulator did not start: {e}"));
        let resources = emulator.resources().expect("scenario resources").clone();
        let instance_id = resources.instance_id.clone().expect("node instance");
        let primary_eni = resources.primary_eni_id.clone().expect("primary ENI");
        let (primary_ip, subnet_id) = emulator.with_model(|m| {
            let eni = m
                .network_interface(&primary_eni)
                .expect("primary ENI in the model");
            (eni.private_ip_address, eni.subnet_id.clone())
        });
        let subnet_cidr = emulator
            .with_model(|m| m.subnet(&subnet_id).map(|s| s.cidr_block))
            .expect("node subnet");
        // What the instance's OS does at boot: the primary ENI up with its address.
        node.node.ip(&[
            "addr",
            "add",
            &format!("{primary_ip}/{}", subnet_cidr.prefix_len()),
            "dev",
            "eth0",
        ]);
        node.node.ip(&["link", "set", "eth0", "up"]);
        let mut ec2 = Ec2Node {
            node,
            emulator,
            stop: Some(stop_tx),
            thread: Some(thread),
            instance_id,
            primary_eni,
            primary_ip,
            subnet_id,
            subnet_cidr,
        };
        ec2.node.set_daemon_env("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        ec2.node
            .set_daemon_env("AWS_SECRET_ACCESS_KEY", "wasmcni-test-secret");
        ec2.node.set_daemon_env("AWS_EC2_METADATA_DISABLED", "true");
        ec2
    }

    /// Brings the node's links in line with the model now (after the test changed the model
    /// directly: hypervisor links otherwise follow at the next mutating API call), as the
    /// hypervisor does when an ENI is attached. Panics on a link error.
    pub fn sync_links(&self) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(self.emulator.sync_links());
        let errors = self.emulator.link_errors();
        assert!(errors.is_empty(), "hypervisor link errors: {errors:?}");
    }

    /// A whole cluster configuration: this node's base sections, `[provider]` ec2 pointed at
    /// the emulator with `ec2_extra` keys, then `rest` (allocator, plugins).
    pub fn config(&self, ec2_extra: &str, rest: &str) -> String {
        format!(
            "{}[provider]\nkind = \"ec2\"\n[provider.ec2]\nec2_endpoint = \"{}\"\nimds_endpoint = \"{}\"\n{ec2_extra}\n{rest}",
            self.node.base_config(),
            self.emulator.ec2_url(),
            self.emulator.imds_url(),
        )
    }

    /// ENIs attached to the node instance now, by device index: (device, id, secondary IPs,
    /// prefixes).
    pub fn attached_enis(&self) -> Vec<(u32, String, usize, usize)> {
        self.emulator.with_model(|m| {
            m.instance_network_interfaces(&self.instance_id)
                .into_iter()
                .map(|eni| {
                    (
                        eni.attachment.as_ref().map_or(0, |a| a.device_index),
                        eni.id.clone(),
                        eni.secondary_private_ip_addresses.len(),
                        eni.ipv4_prefixes.len(),
                    )
                })
                .collect()
        })
    }

    /// The pod addresses of the ENI at `device`: its secondary IPs and every address of its
    /// prefixes.
    pub fn eni_addresses(&self, device: u32) -> Vec<std::net::Ipv4Addr> {
        self.emulator.with_model(|m| {
            m.instance_network_interfaces(&self.instance_id)
                .into_iter()
                .find(|eni| eni.attachment.as_ref().map(|a| a.device_index) == Some(device))
                .map(|eni| {
                    let mut addresses = eni.secondary_private_ip_addresses.clone();
                    for prefix in &eni.ipv4_prefixes {
                        let first = u32::from(prefix.network());
                        let last = u32::from(prefix.broadcast());
                        addresses.extend((first..=last).map(std::net::Ipv4Addr::from));
                    }
                    addresses
                })
                .unwrap_or_default()
        })
    }

    /// The tags and DeleteOnTermination of the ENI at `device`.
    pub fn eni_tags(&self, device: u32) -> (std::collections::BTreeMap<String, String>, bool) {
        self.emulator.with_model(|m| {
            m.instance_network_interfaces(&self.instance_id)
                .into_iter()
                .find(|eni| eni.attachment.as_ref().map(|a| a.device_index) == Some(device))
                .map(|eni| {
                    (
                        eni.tags.clone(),
                        eni.attachment
                            .as_ref()
                            .is_some_and(|a| a.delete_on_termination),
                    )
                })
                .unwrap_or_default()
        })
    }

    /// Makes the fabric the VPC router of the node's subnet behind the primary ENI and gives it
    /// an address "on the internet" (192.0.2.10, outside the VPC), with the node's default
    /// route through the primary ENI, as a real node has. Returns that address.
    pub fn route_to_internet(&self) -> std::net::Ipv4Addr {
        let suffix = self.primary_eni.trim_start_matches("eni-");
        let fabric_link = format!("f{}", &suffix[suffix.len().saturating_sub(12)..]);
        let gateway = u32::from(self.subnet_cidr.network()) + 1;
        let gateway = std::net::Ipv4Addr::from(gateway);
        self.node.outside.ip(&[
            "addr",
            "add",
            &format!("{gateway}/{}", self.subnet_cidr.prefix_len()),
            "dev",
            &fabric_link,
        ]);
        self.node
            .outside
            .ip(&["addr", "add", "192.0.2.10/32", "dev", "lo"]);
        self.node.node.ip(&[
            "route",
            "add",
            "default",
            "via",
            &gateway.to_string(),
            "dev",
            "eth0",
        ]);
        std::net::Ipv4Addr::new(192, 0, 2, 10)
    }

    /// The VPC's IPv6 routing for an IPv6 node (a scenario `with_ipv6`): gives the primary
    /// ENI an IPv6 address of its own (EC2 does so in an IPv6 cluster) and puts it on `eth0`;
    /// makes the fabric the VPC router (`fe80:ec2::1`, EC2's IPv6 gateway) with the node's
    /// default route through it; routes every IPv6 prefix delegated to the primary ENI to the
    /// node, as the VPC does; and gives the fabric an address "on the internet"
    /// (2001:db8::10). Call after the daemon delegated its prefix. Returns that address.
    pub fn route_ipv6(&self) -> std::net::Ipv6Addr {
        let suffix = self.primary_eni.trim_start_matches("eni-");
        let fabric_link = format!("f{}", &suffix[suffix.len().saturating_sub(12)..]);
        let (node_ip, prefixes) = self.emulator.with_model(|m| {
            let assigned = m
                .assign_ipv6_addresses(ec2_emulator::AssignIpv6Addresses::count(
                    &self.primary_eni,
                    1,
                ))
                .expect("an IPv6 address for the primary ENI");
            let eni = m.network_interface(&self.primary_eni).expect("primary ENI");
            (
                assigned.assigned_ipv6_addresses[0],
                eni.ipv6_prefixes.clone(),
            )
        });
        assert!(
            !prefixes.is_empty(),
            "no IPv6 prefix on the primary ENI yet"
        );
        let node = &self.node.node;
        let fabric = &self.node.outside;
        node.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{node_ip}/128"),
            "dev",
            "eth0",
            "nodad",
        ]);
        fabric.ip(&[
            "-6",
            "addr",
            "add",
            "fe80:ec2::1/64",
            "dev",
            &fabric_link,
            "nodad",
        ]);
        fabric.ip(&[
            "-6",
            "route",
            "add",
            &format!("{node_ip}/128"),
            "dev",
            &fabric_link,
        ]);
        for prefix in &prefixes {
            fabric.ip(&[
                "-6",
                "route",
                "add",
                &prefix.to_string(),
                "via",
                &node_ip.to_string(),
                "dev",
                &fabric_link,
            ]);
        }
        fabric.ip(&["-6", "addr", "add", "2001:db8::10/128", "dev", "lo"]);
        node.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fe80:ec2::1",
            "dev",
            "eth0",
        ]);
        "2001:db8::10".parse().expect("documentation address")
    }

    /// The primary ENI's IPv6 prefixes in EC2 now.
    pub fn ipv6_prefixes(&self) -> Vec<ipnet::Ipv6Net> {
        self.emulator.with_model(|m| {
            m.network_interface(&self.primary_eni)
                .map(|e| e.ipv6_prefixes.clone())
                .unwrap_or_default()
        })
    }

    /// Free addresses of the node's subnet, as EC2 counts them.
    pub fn subnet_free(&self) -> u32 {
        self.emulator.with_model(|m| {
            m.subnet(&self.subnet_id)
                .map_or(0, |s| s.available_ip_address_count)
        })
    }

    /// Another tenant takes addresses of the node's subnet until `leave_free` remain
    /// (unattached ENIs of up to 50 addresses). Returns the fillers' ids.
    pub fn fill_subnet(&self, leave_free: u32) -> Vec<String> {
        let mut fillers = Vec::new();
        loop {
            let surplus = self.subnet_free().saturating_sub(leave_free);
            if surplus == 0 {
                return fillers;
            }
            let mut request = CreateNetworkInterface::new(&self.subnet_id);
            request.secondary_private_ip_address_count = Some((surplus - 1).min(49));
            let eni = self
                .emulator
                .with_model(|m| m.create_network_interface(request))
                .expect("filler ENI");
            fillers.push(eni.id);
        }
    }

    /// Another tenant takes one address in every /28 of the node's subnet that is wholly
    /// free, so no prefix can be carved although most addresses are free. Returns the
    /// fillers' ids.
    pub fn fragment_subnet(&self) -> Vec<String> {
        let cidr = self.subnet_cidr;
        let used: std::collections::BTreeSet<u32> = self.emulator.with_model(|m| {
            let all = m
                .describe_network_interfaces(&[], &[], &ec2_emulator::Page::default())
                .expect("describe");
            all.items
                .iter()
                .filter(|eni| eni.subnet_id == self.subnet_id)
                .flat_map(|eni| {
                    let mut addresses: Vec<u32> = std::iter::once(eni.private_ip_address)
                        .chain(eni.secondary_private_ip_addresses.iter().copied())
                        .map(u32::from)
                        .collect();
                    for prefix in &eni.ipv4_prefixes {
                        addresses
                            .extend(u32::from(prefix.network())..=u32::from(prefix.broadcast()));
                    }
                    addresses
                })
                .collect()
        });
        let first = u32::from(cidr.network());
        let last = u32::from(cidr.broadcast());
        let takes: Vec<std::net::Ipv4Addr> = (first..=last)
            .step_by(16)
            .filter(|block| {
                // EC2 reserves the first four addresses and the last one.
                *block != first
                    && *block + 15 != last
                    && !(*block..=*block + 15).any(|ip| used.contains(&ip))
            })
            .map(|block| std::net::Ipv4Addr::from(block + 7))
            .collect();
        takes
            .chunks(50)
            .map(|chunk| {
                let mut request = CreateNetworkInterface::new(&self.subnet_id);
                request.private_ip_address = Some(chunk[0]);
                request.private_ip_addresses = chunk[1..].to_vec();
                self.emulator
                    .with_model(|m| m.create_network_interface(request))
                    .expect("fragmenting ENI")
                    .id
            })
            .collect()
    }

    /// Another tenant takes `ip` of the node's subnet (an unattached ENI with that primary
    /// address). Returns the ENI's id, for [`Ec2Node::release_fillers`].
    pub fn take_address(&self, ip: std::net::Ipv4Addr) -> String {
        let mut request = CreateNetworkInterface::new(&self.subnet_id);
        request.private_ip_address = Some(ip);
        self.emulator
            .with_model(|m| m.create_network_interface(request))
            .expect("another tenant's ENI")
            .id
    }

    /// Deletes the other tenant's ENIs.
    pub fn release_fillers(&self, fillers: &[String]) {
        for id in fillers {
            self.emulator
                .with_model(|m| m.delete_network_interface(id))
                .expect("delete filler");
        }
    }

    /// Every tagged ENI in the account that is not attached: the daemon tags every ENI it
    /// creates, so these are its leaks (the fillers above carry no tags).
    pub fn unattached_enis(&self) -> Vec<String> {
        self.emulator.with_model(|m| {
            let all = m
                .describe_network_interfaces(&[], &[], &ec2_emulator::Page::default())
                .expect("describe");
            all.items
                .into_iter()
                .filter(|eni| eni.attachment.is_none() && !eni.tags.is_empty())
                .map(|eni| eni.id)
                .collect()
        })
    }
}

impl Drop for Ec2Node {
    fn drop(&mut self) {
        // The daemon first (it talks to the emulator), then the emulator.
        self.node.stop_daemon("TERM");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
