//! Instance-type limits and VPC CNI's max-pods figure (pure).

/// What EC2 allows one instance type, for pod networking.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstanceLimits {
    /// The type.
    pub instance_type: String,
    /// ENIs on the default network card (VPC CNI counts only those).
    pub max_enis: u32,
    /// Private IPv4 addresses per ENI, the ENI's own primary included.
    pub ipv4_per_eni: u32,
    /// Whether /28 prefixes can be delegated (Nitro or bare metal).
    pub prefix_delegation: bool,
    /// Default vCPUs (the prefix-delegation cap depends on it).
    pub vcpus: u32,
}

/// The pods a node may run, as VPC CNI and the EKS AMI compute it:
/// `ENIs × (IPs per ENI − 1) + 2` (each ENI's own address is not a pod's; +2 for host-network
/// pods); with custom networking the primary ENI carries no pods, so one ENI fewer; with prefix
/// delegation every slot is a /28 of 16 addresses, capped as the EKS AMI's
/// `max-pods-calculator.sh` does (110 below 30 vCPUs, else 250).
pub fn max_pods(limits: &InstanceLimits, custom_networking: bool, prefix_delegation: bool) -> u32 {
    let enis = if custom_networking {
        limits.max_enis.saturating_sub(1)
    } else {
        limits.max_enis
    };
    let slots = enis * limits.ipv4_per_eni.saturating_sub(1);
    if prefix_delegation && limits.prefix_delegation {
        let cap = if limits.vcpus < 30 { 110 } else { 250 };
        (slots * 16 + 2).min(cap)
    } else {
        slots + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(instance_type: &str, enis: u32, ips: u32, vcpus: u32) -> InstanceLimits {
        InstanceLimits {
            instance_type: instance_type.into(),
            max_enis: enis,
            ipv4_per_eni: ips,
            prefix_delegation: true,
            vcpus,
        }
    }

    #[test]
    fn max_pods_matches_vpc_cni_and_the_eks_ami() {
        // reference/vpc-cni.md §3.7 and VPC CNI's eni-max-pods.txt.
        let cases = [
            (limits("t3.medium", 3, 6, 2), false, false, 17),
            (limits("m5.large", 3, 10, 2), false, false, 29),
            (limits("m5.xlarge", 4, 15, 4), false, false, 58),
            (limits("c5.4xlarge", 8, 30, 16), false, false, 234),
            (limits("m5.24xlarge", 15, 50, 96), false, false, 737),
            // Custom networking: (ENIs − 1) × (IPs − 1) + 2 (VPC CNI #527).
            (limits("m5.large", 3, 10, 2), true, false, 20),
            // Prefix delegation, capped by vCPUs as max-pods-calculator.sh does.
            (limits("m5.large", 3, 10, 2), false, true, 110),
            (limits("m5.24xlarge", 15, 50, 96), false, true, 250),
        ];
        for (limits, custom, pd, expected) in cases {
            assert_eq!(
                max_pods(&limits, custom, pd),
                expected,
                "{} custom={custom} pd={pd}",
                limits.instance_type
            );
        }
        // Prefix delegation asked on a type that cannot: the secondary-IP figure.
        let mut xen = limits("m4.large", 2, 10, 2);
        xen.prefix_delegation = false;
        assert_eq!(max_pods(&xen, false, true), 20);
    }
}
