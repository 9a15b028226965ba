//! Instance-type networking limits (ENIs, IPs per ENI, network cards, hypervisor, trunking),
//! loaded from the crate's `data/instance-types.toml`, which holds AWS's published numbers.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

/// The instance-type table compiled into the crate.
const BUILTIN_TOML: &str = include_str!("../data/instance-types.toml");

/// The virtualisation platform of an instance type; only Nitro supports prefix delegation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hypervisor {
    /// AWS Nitro: prefix delegation, trunking (on most types).
    Nitro,
    /// Xen: older generations (t2, m4); no prefix delegation.
    Xen,
}

impl Hypervisor {
    /// EC2's spelling in DescribeInstanceTypes.
    pub fn as_str(self) -> &'static str {
        match self {
            Hypervisor::Nitro => "nitro",
            Hypervisor::Xen => "xen",
        }
    }
}

/// One network card of an instance type and how many interfaces it takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCardInfo {
    /// NetworkCardIndex.
    pub index: u32,
    /// MaximumNetworkInterfaces on this card.
    pub maximum_network_interfaces: u32,
}

/// The networking facts of one instance type, as DescribeInstanceTypes reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceTypeInfo {
    /// Instance type name, e.g. `m5.large`.
    pub name: String,
    /// Nitro or Xen.
    pub hypervisor: Hypervisor,
    /// Whether this is a `.metal` type (prefix delegation works there even without Nitro).
    pub bare_metal: bool,
    /// Default vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// MaximumNetworkInterfaces over all network cards.
    pub maximum_network_interfaces: u32,
    /// Ipv4AddressesPerInterface: primary and secondary addresses plus /28 prefixes.
    pub ipv4_addresses_per_interface: u32,
    /// Ipv6AddressesPerInterface: IPv6 addresses plus /80 prefixes.
    pub ipv6_addresses_per_interface: u32,
    /// Whether the type supports IPv6 at all.
    pub ipv6_supported: bool,
    /// The card the primary ENI is on.
    pub default_network_card_index: u32,
    /// Network cards and their interface limits.
    pub network_cards: Vec<NetworkCardInfo>,
    /// Whether a trunk ENI can be attached (security groups for pods).
    pub trunking_compatible: bool,
    /// How many branch ENIs one trunk ENI on this type can carry.
    pub branch_interfaces: u32,
}

impl InstanceTypeInfo {
    /// Whether EC2 lets ENIs on this type carry IPv4 /28 or IPv6 /80 prefixes.
    pub fn supports_prefix_delegation(&self) -> bool {
        // VPC CNI uses the same test: Nitro hypervisor or bare metal.
        self.hypervisor == Hypervisor::Nitro || self.bare_metal
    }

    /// How many interfaces the given network card takes, or `None` if the card does not exist.
    pub fn card_limit(&self, card_index: u32) -> Option<u32> {
        self.network_cards
            .iter()
            .find(|card| card.index == card_index)
            .map(|card| card.maximum_network_interfaces)
    }

    /// The number of network cards (MaximumNetworkCards).
    pub fn maximum_network_cards(&self) -> u32 {
        u32::try_from(self.network_cards.len()).unwrap_or(u32::MAX)
    }

    /// VPC CNI's max pods without prefix delegation: `ENIs × (IPv4 per ENI − 1) + 2`, where
    /// ENIs are those of the default network card only (as in VPC CNI's `eni-max-pods.txt`).
    pub fn vpc_cni_max_pods(&self) -> u32 {
        let enis = self
            .card_limit(self.default_network_card_index)
            .unwrap_or(self.maximum_network_interfaces);
        enis * self.ipv4_addresses_per_interface.saturating_sub(1) + 2
    }
}

/// Why an instance-type table could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The TOML did not parse into instance types.
    #[error("instance-type table is not valid TOML for the expected schema: {0}")]
    Parse(#[from] toml::de::Error),
    /// A type's numbers contradict each other.
    #[error("instance type {name}: {problem}")]
    Inconsistent {
        /// The instance type.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
}

#[derive(Deserialize)]
struct CatalogFile {
    instance_type: Vec<InstanceTypeInfo>,
}

/// A set of instance types, looked up by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceTypeCatalog {
    types: BTreeMap<String, InstanceTypeInfo>,
}

impl InstanceTypeCatalog {
    /// The table compiled into the crate (`data/instance-types.toml`).
    pub fn builtin() -> Arc<InstanceTypeCatalog> {
        static BUILTIN: OnceLock<Arc<InstanceTypeCatalog>> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                // The embedded file is fixed at compile time and parsed by a unit test, so
                // this cannot fail in a build that passed its tests.
                let catalog = InstanceTypeCatalog::from_toml_str(BUILTIN_TOML)
                    .expect("data/instance-types.toml is checked by the crate's tests");
                Arc::new(catalog)
            })
            .clone()
    }

    /// Parse a table in the format of `data/instance-types.toml` and check its consistency.
    pub fn from_toml_str(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text)?;
        let mut types = BTreeMap::new();
        for info in file.instance_type {
            check_consistency(&info)?;
            types.insert(info.name.clone(), info);
        }
        Ok(Self { types })
    }

    /// A catalog of the given types (for tests that need made-up limits).
    pub fn from_types(
        types: impl IntoIterator<Item = InstanceTypeInfo>,
    ) -> Result<Self, CatalogError> {
        let mut map = BTreeMap::new();
        for info in types {
            check_consistency(&info)?;
            map.insert(info.name.clone(), info);
        }
        Ok(Self { types: map })
    }

    /// The type with this name.
    pub fn get(&self, name: &str) -> Option<&InstanceTypeInfo> {
        self.types.get(name)
    }

    /// All types, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &InstanceTypeInfo> {
        self.types.values()
    }

    /// The most IPv4 addresses any type allows per ENI: the limit an unattached ENI gets,
    /// since EC2 only knows the instance type once the ENI is attached.
    pub fn max_ipv4_per_interface(&self) -> u32 {
        self.iter()
            .map(|t| t.ipv4_addresses_per_interface)
            .max()
            .unwrap_or(0)
    }

    /// The most IPv6 addresses any type allows per ENI (the unattached-ENI limit).
    pub fn max_ipv6_per_interface(&self) -> u32 {
        self.iter()
            .map(|t| t.ipv6_addresses_per_interface)
            .max()
            .unwrap_or(0)
    }
}

fn check_consistency(info: &InstanceTypeInfo) -> Result<(), CatalogError> {
    let problem = |problem: String| CatalogError::Inconsistent {
        name: info.name.clone(),
        problem,
    };
    if info.network_cards.is_empty() {
        return Err(problem("no network cards".into()));
    }
    let card_sum: u32 = info
        .network_cards
        .iter()
        .map(|c| c.maximum_network_interfaces)
        .sum();
    if card_sum != info.maximum_network_interfaces {
        return Err(problem(format!(
            "network cards take {card_sum} interfaces but maximum_network_interfaces is {}",
            info.maximum_network_interfaces
        )));
    }
    if info.card_limit(info.default_network_card_index).is_none() {
        return Err(problem(format!(
            "default network card {} is not among its cards",
            info.default_network_card_index
        )));
    }
    if info.ipv4_addresses_per_interface == 0 {
        return Err(problem("ipv4_addresses_per_interface is 0".into()));
    }
    if !info.trunking_compatible && info.branch_interfaces != 0 {
        return Err(problem("branch interfaces without trunking".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `type maxPods` lines from aws/amazon-vpc-cni-k8s misc/eni-max-pods.txt at b52188387f2e.
    const ENI_MAX_PODS: &[(&str, u32)] = &[
        ("c5.12xlarge", 234),
        ("c5.18xlarge", 737),
        ("c5.2xlarge", 58),
        ("c5.4xlarge", 234),
        ("c5.9xlarge", 234),
        ("c5.large", 29),
        ("c5.xlarge", 58),
        ("c6g.large", 29),
        ("m4.large", 20),
        ("m5.12xlarge", 234),
        ("m5.16xlarge", 737),
        ("m5.24xlarge", 737),
        ("m5.2xlarge", 58),
        ("m5.4xlarge", 234),
        ("m5.8xlarge", 234),
        ("m5.large", 29),
        ("m5.xlarge", 58),
        ("m6i.32xlarge", 737),
        ("m6i.large", 29),
        ("m6i.xlarge", 58),
        ("p4d.24xlarge", 737),
        ("r5.large", 29),
        ("r5.xlarge", 58),
        ("t2.medium", 17),
        ("t2.micro", 4),
        ("t3.2xlarge", 58),
        ("t3.large", 35),
        ("t3.medium", 17),
        ("t3.micro", 4),
        ("t3.nano", 4),
        ("t3.small", 11),
        ("t3.xlarge", 58),
        ("t3a.large", 35),
        ("t3a.medium", 17),
    ];

    #[test]
    fn builtin_table_parses_and_covers_the_required_types() {
        let catalog = InstanceTypeCatalog::builtin();
        assert_eq!(catalog.iter().count(), ENI_MAX_PODS.len());
        for (name, _) in ENI_MAX_PODS {
            assert!(catalog.get(name).is_some(), "{name} missing");
        }
    }

    #[test]
    fn vpc_cni_formula_reproduces_eni_max_pods() {
        let catalog = InstanceTypeCatalog::builtin();
        for (name, expected) in ENI_MAX_PODS {
            let info = catalog.get(name).expect("listed type");
            assert_eq!(info.vpc_cni_max_pods(), *expected, "{name}");
        }
    }

    #[test]
    fn known_limits_and_hypervisors() {
        let catalog = InstanceTypeCatalog::builtin();
        let m5 = catalog.get("m5.large").expect("m5.large");
        assert_eq!(
            (
                m5.maximum_network_interfaces,
                m5.ipv4_addresses_per_interface,
                m5.ipv6_addresses_per_interface
            ),
            (3, 10, 10)
        );
        assert!(m5.supports_prefix_delegation());
        assert_eq!((m5.trunking_compatible, m5.branch_interfaces), (true, 9));
        let t2 = catalog.get("t2.medium").expect("t2.medium");
        assert_eq!(t2.hypervisor, Hypervisor::Xen);
        assert!(!t2.supports_prefix_delegation());
        let p4d = catalog.get("p4d.24xlarge").expect("p4d");
        assert_eq!(p4d.maximum_network_cards(), 4);
        assert_eq!(p4d.maximum_network_interfaces, 60);
        assert_eq!(p4d.card_limit(3), Some(15));
        assert_eq!(catalog.max_ipv4_per_interface(), 50);
    }

    #[test]
    fn inconsistent_tables_are_rejected() {
        let text = r#"
            [[instance_type]]
            name = "x.large"
            hypervisor = "nitro"
            bare_metal = false
            vcpus = 2
            memory_mib = 1024
            maximum_network_interfaces = 4
            ipv4_addresses_per_interface = 10
            ipv6_addresses_per_interface = 10
            ipv6_supported = true
            default_network_card_index = 0
            network_cards = [{ index = 0, maximum_network_interfaces = 3 }]
            trunking_compatible = false
            branch_interfaces = 0
        "#;
        let err = InstanceTypeCatalog::from_toml_str(text).expect_err("card sum mismatch");
        assert!(err.to_string().contains("x.large"), "{err}");
    }
}
