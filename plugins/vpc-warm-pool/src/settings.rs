//! The plugin's settings: VPC CNI's environment variables under the same names, so operators
//! copy their `aws-node` values, and VPC CNI's rules for which combinations it refuses.

/// Subnet tag VPC CNI's subnet discovery reads: `1` opts a secondary subnet in, `0` opts any
/// subnet (the node's included) out.
pub const SUBNET_DISCOVERY_TAG: &str = "kubernetes.io/role/cni";

/// Prefix of the subnet tags that scope a subnet to clusters (`<prefix><cluster name>`).
pub const CLUSTER_TAG_PREFIX: &str = "cni.networking.k8s.aws/cluster/";

/// Every setting, after parsing; numbers left unset are 0, as VPC CNI reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `WARM_ENI_TARGET` (default 1): keep this many ENIs' worth of addresses free.
    pub warm_eni_target: u32,
    /// `WARM_IP_TARGET` (default 0, unset): keep this many addresses free.
    pub warm_ip_target: u32,
    /// `MINIMUM_IP_TARGET` (default 0, unset): keep at least this many addresses in total.
    pub minimum_ip_target: u32,
    /// `WARM_PREFIX_TARGET` (default 0): with prefix delegation, keep this many /28s unused.
    pub warm_prefix_target: u32,
    /// `ENABLE_PREFIX_DELEGATION` (default false): /28 prefixes instead of secondary IPs.
    pub prefix_delegation: bool,
    /// `MAX_ENI` (default: the instance's limit, which it can only lower).
    pub max_eni: Option<u32>,
    /// `AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG` (default false): new ENIs in the ENIConfig's
    /// subnet and security groups; the primary ENI gives no addresses to pods.
    pub custom_networking: bool,
    /// `ENI_CONFIG_SUBNET`: the ENIConfig's `subnet`; `ENI_CONFIG_SUBNET.<availability zone>`
    /// wins on nodes in that zone (VPC CNI's one ENIConfig per zone, named by
    /// `ENI_CONFIG_LABEL_DEF=topology.kubernetes.io/zone`).
    pub eni_config_subnet: Option<String>,
    /// `ENI_CONFIG_SECURITY_GROUPS`: the ENIConfig's `securityGroups`, comma separated; empty
    /// means the primary ENI's, as VPC CNI does. Also per zone, as `ENI_CONFIG_SUBNET`.
    pub eni_config_security_groups: Vec<String>,
    /// `ENABLE_SUBNET_DISCOVERY` (default true): new ENIs go to the subnet with the most free
    /// addresses among the node's and those tagged `kubernetes.io/role/cni=1`.
    pub subnet_discovery: bool,
    /// `CLUSTER_NAME`: scopes subnet discovery to subnets tagged for this cluster (or for none).
    pub cluster_name: Option<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            warm_eni_target: 1,
            warm_ip_target: 0,
            minimum_ip_target: 0,
            warm_prefix_target: 0,
            prefix_delegation: false,
            max_eni: None,
            custom_networking: false,
            eni_config_subnet: None,
            eni_config_security_groups: Vec::new(),
            subnet_discovery: true,
            cluster_name: None,
        }
    }
}

/// Parses a boolean the way VPC CNI does (Go's `strconv.ParseBool`).
pub fn parse_flag(key: &str, text: &str) -> Result<bool, String> {
    match text.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!(
            "config key {key} = {other:?} is not a boolean: use true or false (1/0, t/f, as VPC CNI accepts)"
        )),
    }
}

impl Settings {
    /// Reads every setting through `get` (the `config` interface at run time) for a node in
    /// `zone`, parsing and checking it; an error names the key, the value and what to do.
    pub fn from_config(
        get: impl Fn(&str) -> Result<Option<String>, String>,
        zone: &str,
    ) -> Result<Settings, String> {
        let number = |key: &str, default: u32| -> Result<u32, String> {
            match get(key)? {
                None => Ok(default),
                Some(text) => text.trim().parse().map_err(|_| {
                    format!("config key {key} = {text:?} is not a whole number of 0 or more")
                }),
            }
        };
        let flag = |key: &str, default: bool| -> Result<bool, String> {
            get(key)?.map_or(Ok(default), |text| parse_flag(key, &text))
        };
        let text = |key: &str| -> Result<Option<String>, String> {
            Ok(get(key)?
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()))
        };
        // The zone's ENIConfig, else the node-wide one.
        let per_zone = |key: &str| -> Result<Option<String>, String> {
            match text(&format!("{key}.{zone}"))? {
                Some(value) if !zone.is_empty() => Ok(Some(value)),
                _ => text(key),
            }
        };
        let settings = Settings {
            warm_eni_target: number("WARM_ENI_TARGET", 1)?,
            warm_ip_target: number("WARM_IP_TARGET", 0)?,
            minimum_ip_target: number("MINIMUM_IP_TARGET", 0)?,
            warm_prefix_target: number("WARM_PREFIX_TARGET", 0)?,
            prefix_delegation: flag("ENABLE_PREFIX_DELEGATION", false)?,
            // VPC CNI ignores MAX_ENI below 1.
            max_eni: Some(number("MAX_ENI", 0)?).filter(|n| *n >= 1),
            custom_networking: flag("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", false)?,
            eni_config_subnet: per_zone("ENI_CONFIG_SUBNET")?,
            eni_config_security_groups: per_zone("ENI_CONFIG_SECURITY_GROUPS")?
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|sg| !sg.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            subnet_discovery: flag("ENABLE_SUBNET_DISCOVERY", true)?,
            cluster_name: text("CLUSTER_NAME")?,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Whether `WARM_IP_TARGET` or `MINIMUM_IP_TARGET` is set: they then replace the
    /// ENI and prefix targets for growing (VPC CNI's `warmIPTargetsDefined`).
    pub fn warm_ip_targets_defined(&self) -> bool {
        self.warm_ip_target != 0 || self.minimum_ip_target != 0
    }

    /// VPC CNI's refusals (`aws-vpc-cni` `validateEnvVars`, and custom networking without an
    /// ENIConfig, with which VPC CNI's node never becomes ready).
    pub fn validate(&self) -> Result<(), String> {
        if self.prefix_delegation
            && self.warm_ip_target == 0
            && self.warm_prefix_target == 0
            && self.minimum_ip_target == 0
        {
            return Err(
                "ENABLE_PREFIX_DELEGATION=true with WARM_PREFIX_TARGET, WARM_IP_TARGET and \
                MINIMUM_IP_TARGET all 0 (or unset) is not supported, as in VPC CNI: the pool would \
                keep no spare prefix. Set WARM_PREFIX_TARGET=1 (VPC CNI's chart default) or \
                WARM_IP_TARGET/MINIMUM_IP_TARGET"
                    .into(),
            );
        }
        if self.custom_networking && self.eni_config_subnet.is_none() {
            return Err(
                "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true needs the node's ENIConfig: set \
                ENI_CONFIG_SUBNET (and ENI_CONFIG_SECURITY_GROUPS, comma separated) to the \
                ENIConfig's subnet and security groups, or ENI_CONFIG_SUBNET.<zone> for each \
                availability zone"
                    .into(),
            );
        }
        Ok(())
    }

    /// Settings that are accepted but have no effect, as warnings for the log.
    pub fn warnings(&self, prefix_delegation_supported: bool, instance_type: &str) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.prefix_delegation && !prefix_delegation_supported {
            warnings.push(format!(
                "ENABLE_PREFIX_DELEGATION=true but {instance_type} does not support prefix \
                 delegation (not Nitro): using secondary IPs, as VPC CNI falls back"
            ));
        }
        if !self.custom_networking
            && (self.eni_config_subnet.is_some() || !self.eni_config_security_groups.is_empty())
        {
            warnings.push(
                "ENI_CONFIG_SUBNET/ENI_CONFIG_SECURITY_GROUPS are ignored: \
                 AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG is not true"
                    .into(),
            );
        }
        warnings
    }
}
