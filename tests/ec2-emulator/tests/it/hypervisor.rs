//! Hypervisor mode on the real kernel (needs root): attaching an ENI makes a link with its
//! MAC appear in the node's namespace, detaching removes it.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use ec2_emulator::{HypervisorConfig, Scenario};

use crate::common::{start, within};

/// A named network namespace, deleted on drop (also when the test fails).
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn new(role: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ec2emu-{role}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        Self { name }
    }

    /// `(name, mac, flags)` of every link but `lo`, from `ip -o link show`.
    fn links(&self) -> Vec<(String, String, String)> {
        let output = ip(&["-n", &self.name, "-o", "link", "show"]);
        output
            .lines()
            .filter_map(|line| {
                // "2: eth1@if5: <BROADCAST,MULTICAST> mtu 1500 ... link/ether 02:.. brd ..."
                let mut fields = line.split_whitespace();
                fields.next()?;
                let name = fields.next()?.trim_end_matches(':');
                let name = name.split('@').next()?.to_owned();
                let flags = fields.next()?.to_owned();
                let mac = line
                    .split("link/ether ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .to_owned();
                Some((name, mac, flags))
            })
            .collect()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e} (install iproute2)"));
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "hypervisor-mode tests create network namespaces and need root"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veth_links_follow_attach_and_detach() {
    require_root();
    let node_ns = TestNetns::new("node");
    let fabric_ns = TestNetns::new("fabric");
    let (emulator, ec2) = start(
        Scenario::default()
            .with_node_instance_type("m5.large")
            .with_hypervisor(HypervisorConfig::new(&node_ns.name).with_fabric(&fabric_ns.name)),
    )
    .await;
    let resources = emulator.resources().expect("scenario").clone();
    let node = resources.instance_id.clone().expect("node");
    let primary_mac = emulator.with_model(|m| {
        m.network_interface(resources.primary_eni_id.as_deref().expect("primary"))
            .expect("eni")
            .mac_address
            .clone()
    });
    let links = node_ns.links();
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(
        (links[0].0.as_str(), links[0].1.as_str()),
        ("eth0", primary_mac.as_str())
    );

    let eni = within(
        "CreateNetworkInterface",
        ec2.create_network_interface()
            .subnet_id(&resources.subnet_ids[0])
            .send(),
    )
    .await
    .expect("create");
    let eni = eni.network_interface().expect("eni").clone();
    let attachment = within(
        "AttachNetworkInterface",
        ec2.attach_network_interface()
            .network_interface_id(eni.network_interface_id().expect("id"))
            .instance_id(&node)
            .device_index(1)
            .send(),
    )
    .await
    .expect("attach");
    // The link exists by the time the API answers.
    let links = node_ns.links();
    let eth1 = links
        .iter()
        .find(|(name, _, _)| name == "eth1")
        .unwrap_or_else(|| panic!("no eth1 in {links:?}"));
    assert_eq!(Some(eth1.1.as_str()), eni.mac_address());
    assert!(!eth1.2.contains(",UP"), "node side starts down: {}", eth1.2);
    let fabric = fabric_ns.links();
    assert_eq!(fabric.len(), 2, "one peer per ENI: {fabric:?}");
    assert!(fabric.iter().all(|(_, _, flags)| flags.contains("UP")));

    within(
        "DetachNetworkInterface",
        ec2.detach_network_interface()
            .attachment_id(attachment.attachment_id().expect("attachment"))
            .send(),
    )
    .await
    .expect("detach");
    let names: Vec<String> = node_ns.links().into_iter().map(|l| l.0).collect();
    assert_eq!(names, ["eth0"]);
    assert_eq!(fabric_ns.links().len(), 1);
    assert!(
        emulator.link_errors().is_empty(),
        "{:?}",
        emulator.link_errors()
    );

    emulator.shutdown().await.expect("links removed");
    assert!(node_ns.links().is_empty());
    assert!(fabric_ns.links().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dummy_links_without_a_fabric_and_terminate_removes_them() {
    require_root();
    let node_ns = TestNetns::new("node");
    let (emulator, ec2) = start(
        Scenario::default()
            .with_hypervisor(HypervisorConfig::new(&node_ns.name).with_link_prefix("ens")),
    )
    .await;
    let node = emulator
        .resources()
        .and_then(|r| r.instance_id.clone())
        .expect("node");
    let names: Vec<String> = node_ns.links().into_iter().map(|l| l.0).collect();
    assert_eq!(names, ["ens0"]);
    // A dummy link, or a veth into the emulator's own namespace where the kernel has no
    // dummy driver (as in some sandboxes).
    let details = ip(&["-n", &node_ns.name, "-d", "link", "show", "ens0"]);
    assert!(
        details.contains("dummy") || details.contains("veth"),
        "{details}"
    );

    within(
        "TerminateInstances",
        ec2.terminate_instances().instance_ids(&node).send(),
    )
    .await
    .expect("terminate");
    assert!(node_ns.links().is_empty());
    assert!(
        emulator.link_errors().is_empty(),
        "{:?}",
        emulator.link_errors()
    );
}
