//! The ADD result (spec §5): one internal model, the 1.1.0 superset, converted to and from every
//! supported version.
//!
//! Formats by version:
//! * 0.3.0, 0.3.1, 0.4.0: `ips[].version` (`"4"`/`"6"`) is written; on parse it is checked
//!   against the address family when present and inferred when absent.
//! * 1.0.0: no `ips[].version` (ignored when a 1.x result still carries it).
//! * 1.1.0: adds interface `mtu`/`socketPath`/`pciID` and route
//!   `mtu`/`advmss`/`priority`/`table`/`scope`; rendering for older versions drops them.
//!   Parsing keeps them whatever the version, so a newer peer's extras survive a pass-through.
//!
//! Output follows the Go `types100`/`types040` structs that every peer plugin prints: keys in
//! their declaration order, `interfaces`, `ips`, `routes` omitted when empty, empty optional
//! fields omitted (never `null`), and `dns` always present, as `{}` when empty (Go's
//! `omitempty` has no effect on the `DNS` struct, so ptp and friends print `"dns":{}` too).

use crate::decode::{
    as_array, as_object, as_str, field, index, join, opt_nonempty_string, opt_str, opt_uint,
    string_list, FieldError,
};
use crate::error::CniError;
use crate::version::CniVersion;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// An ADD result in the version-independent model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniResult {
    /// Interfaces created or used, host side and sandbox side.
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    pub ips: Vec<IpConfig>,
    /// Routes installed in the sandbox.
    pub routes: Vec<Route>,
    /// DNS settings for the sandbox.
    pub dns: Dns,
}

/// One `interfaces[]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    /// Interface name (in its namespace).
    pub name: String,
    /// Hardware address, as text.
    pub mac: Option<String>,
    /// MTU (1.1.0).
    pub mtu: Option<u32>,
    /// Netns path of the sandbox holding the interface; `None` for host interfaces.
    pub sandbox: Option<String>,
    /// Socket path for userspace interfaces such as vhost-user (1.1.0).
    pub socket_path: Option<String>,
    /// PCI address of a device interface (1.1.0).
    pub pci_id: Option<String>,
}

/// One `ips[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with prefix length, host bits kept (`10.0.0.5/24`).
    pub address: IpNet,
    /// Default gateway of the subnet, if any.
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`]; absent in IPAM results. Not checked against the
    /// interface list on parse (a DEL must not fail over a sloppy prevResult): look it up with
    /// `get`.
    pub interface: Option<usize>,
}

/// One `routes[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dst: IpNet,
    /// Next hop; `None` for the default gateway / on-link.
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0).
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    pub advmss: Option<u32>,
    /// Route priority / metric (1.1.0).
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    pub table: Option<u32>,
    /// Route scope (1.1.0), 0-255 as in `rtm_scope`.
    pub scope: Option<u8>,
}

/// The `dns` object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dns {
    /// Name server addresses, in priority order.
    pub nameservers: Vec<String>,
    /// Local domain.
    pub domain: Option<String>,
    /// Search domains, in order.
    pub search: Vec<String>,
    /// Resolver options.
    pub options: Vec<String>,
}

impl Dns {
    /// True when no DNS setting is present.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// Parses a result in `version`'s format. A `cniVersion` inside `value` is ignored (the
    /// caller knows the format, as libcni's `version.NewResult` does). Errors are code 6
    /// naming the offending value's path, such as
    /// `failed to decode result: result.ips[0].address: '10.0.0.5' is not an address in CIDR notation`.
    pub fn parse(value: &Value, version: CniVersion) -> Result<CniResult, CniError> {
        Self::decode(value, version, "result").map_err(|e| CniError::decode("result", e))
    }

    /// Like [`CniResult::parse`], for a result found at JSON path `path` (such as
    /// `"prevResult"`); the error names that path.
    pub(crate) fn decode(
        value: &Value,
        version: CniVersion,
        path: &str,
    ) -> Result<CniResult, FieldError> {
        let obj = as_object(value, path)?;
        let list = |key: &str| -> Result<&[Value], FieldError> {
            match field(obj, key) {
                None => Ok(&[]),
                Some(v) => as_array(v, &join(path, key)),
            }
        };
        let interfaces_path = join(path, "interfaces");
        let interfaces = list("interfaces")?
            .iter()
            .enumerate()
            .map(|(i, v)| decode_interface(v, &index(&interfaces_path, i)))
            .collect::<Result<_, _>>()?;
        let ips_path = join(path, "ips");
        let ips = list("ips")?
            .iter()
            .enumerate()
            .map(|(i, v)| decode_ip(v, version, &index(&ips_path, i)))
            .collect::<Result<_, _>>()?;
        let routes_path = join(path, "routes");
        let routes = list("routes")?
            .iter()
            .enumerate()
            .map(|(i, v)| decode_route(v, &index(&routes_path, i)))
            .collect::<Result<_, _>>()?;
        let dns = match field(obj, "dns") {
            None => Dns::default(),
            Some(v) => decode_dns(v, &join(path, "dns"))?,
        };
        Ok(CniResult {
            interfaces,
            ips,
            routes,
            dns,
        })
    }

    /// The result as JSON for `version`, `cniVersion` included; see the module docs for what
    /// each version keeps. A `Value` map sorts keys: print with [`CniResult::to_stdout_bytes`].
    pub fn to_json(&self, version: CniVersion) -> Value {
        // The output structs hold only strings, integers and lists, which always convert.
        serde_json::to_value(self.render(version)).unwrap_or_default()
    }

    /// Compact JSON for stdout, keys in the order `cniVersion`, `interfaces`, `ips`, `routes`,
    /// `dns` (and the Go structs' order inside each entry).
    pub fn to_stdout_bytes(&self, version: CniVersion) -> Vec<u8> {
        // As in `to_json`: serialising these structs into memory cannot fail.
        serde_json::to_vec(&self.render(version)).unwrap_or_default()
    }

    /// `self` followed by `other`: interfaces, ips and routes appended, `other`'s
    /// `ips[].interface` shifted by `self.interfaces.len()`; DNS lists united without
    /// duplicates, `self`'s domain preferred. Used when wasmcni runs after another plugin and
    /// passes its prevResult through with its own additions.
    pub fn merged_with(&self, other: &CniResult) -> CniResult {
        let offset = self.interfaces.len();
        let mut merged = self.clone();
        merged.interfaces.extend(other.interfaces.iter().cloned());
        merged.ips.extend(other.ips.iter().map(|ip| IpConfig {
            interface: ip.interface.map(|i| i + offset),
            ..ip.clone()
        }));
        merged.routes.extend(other.routes.iter().cloned());
        let union = |mine: &mut Vec<String>, theirs: &[String]| {
            for item in theirs {
                if !mine.contains(item) {
                    mine.push(item.clone());
                }
            }
        };
        union(&mut merged.dns.nameservers, &other.dns.nameservers);
        union(&mut merged.dns.search, &other.dns.search);
        union(&mut merged.dns.options, &other.dns.options);
        if merged.dns.domain.is_none() {
            merged.dns.domain = other.dns.domain.clone();
        }
        merged
    }

    fn render(&self, version: CniVersion) -> ResultOut<'_> {
        let v11 = version >= CniVersion::V1_1_0;
        ResultOut {
            cni_version: version.as_str(),
            interfaces: self
                .interfaces
                .iter()
                .map(|i| InterfaceOut {
                    name: &i.name,
                    mac: nonempty(&i.mac),
                    mtu: i.mtu.filter(|_| v11),
                    sandbox: nonempty(&i.sandbox),
                    socket_path: nonempty(&i.socket_path).filter(|_| v11),
                    pci_id: nonempty(&i.pci_id).filter(|_| v11),
                })
                .collect(),
            ips: self
                .ips
                .iter()
                .map(|ip| IpOut {
                    version: version
                        .has_ip_version_field()
                        .then_some(family(&ip.address)),
                    interface: ip.interface,
                    address: ip.address.to_string(),
                    gateway: ip.gateway.map(|g| g.to_string()),
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| RouteOut {
                    dst: r.dst.to_string(),
                    gw: r.gw.map(|g| g.to_string()),
                    mtu: r.mtu.filter(|_| v11),
                    advmss: r.advmss.filter(|_| v11),
                    priority: r.priority.filter(|_| v11),
                    table: r.table.filter(|_| v11),
                    scope: r.scope.filter(|_| v11),
                })
                .collect(),
            dns: DnsOut {
                nameservers: &self.dns.nameservers,
                domain: nonempty(&self.dns.domain),
                search: &self.dns.search,
                options: &self.dns.options,
            },
        }
    }
}

impl Serialize for CniResult {
    /// Writes the 1.1.0 format (lossless), `cniVersion` included.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.render(CniVersion::LATEST).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CniResult {
    /// Reads a result in the format its `cniVersion` names, or 1.1.0 when that is absent or
    /// not a supported version.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let version = value
            .get("cniVersion")
            .and_then(Value::as_str)
            .and_then(|s| CniVersion::parse(s).ok())
            .unwrap_or(CniVersion::LATEST);
        CniResult::decode(&value, version, "result").map_err(serde::de::Error::custom)
    }
}

/// The text of an optional string field, `None` when absent or empty (Go's `omitempty`).
fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// `"4"` or `"6"`, the 0.3.x/0.4.0 `ips[].version` of an address.
fn family(address: &IpNet) -> &'static str {
    match address {
        IpNet::V4(_) => "4",
        IpNet::V6(_) => "6",
    }
}

fn decode_interface(value: &Value, path: &str) -> Result<Interface, FieldError> {
    let obj = as_object(value, path)?;
    let name = opt_str(obj, "name", path)?
        .ok_or_else(|| FieldError::new(join(path, "name"), "missing"))?
        .to_string();
    Ok(Interface {
        name,
        mac: opt_nonempty_string(obj, "mac", path)?,
        mtu: opt_u32(obj, "mtu", path)?,
        sandbox: opt_nonempty_string(obj, "sandbox", path)?,
        socket_path: opt_nonempty_string(obj, "socketPath", path)?,
        pci_id: opt_nonempty_string(obj, "pciID", path)?,
    })
}

fn decode_ip(value: &Value, version: CniVersion, path: &str) -> Result<IpConfig, FieldError> {
    let obj = as_object(value, path)?;
    let address_path = join(path, "address");
    let address = opt_str(obj, "address", path)?
        .ok_or_else(|| FieldError::new(&address_path, "missing"))
        .and_then(|text| parse_cidr(text, &address_path))?;
    if version.has_ip_version_field() {
        if let Some(v) = field(obj, "version") {
            let version_path = join(path, "version");
            let stated = as_str(v, &version_path)?;
            if stated != "4" && stated != "6" {
                return Err(FieldError::new(
                    version_path,
                    format!("'{stated}' is not an IP version (expected \"4\" or \"6\")"),
                ));
            }
            if stated != family(&address) {
                return Err(FieldError::new(
                    version_path,
                    format!(
                        "'{stated}' does not match address {address}, which is IPv{}",
                        family(&address)
                    ),
                ));
            }
        }
    }
    let interface = opt_uint(obj, "interface", path, usize::MAX as u64)?
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    Ok(IpConfig {
        address,
        gateway: opt_ip(obj, "gateway", path)?,
        interface,
    })
}

fn decode_route(value: &Value, path: &str) -> Result<Route, FieldError> {
    let obj = as_object(value, path)?;
    let dst_path = join(path, "dst");
    let dst = opt_str(obj, "dst", path)?
        .ok_or_else(|| FieldError::new(&dst_path, "missing"))
        .and_then(|text| parse_cidr(text, &dst_path))?;
    let scope = opt_uint(obj, "scope", path, u64::from(u8::MAX))?
        .map(|n| u8::try_from(n).unwrap_or(u8::MAX));
    Ok(Route {
        dst,
        gw: opt_ip(obj, "gw", path)?,
        mtu: opt_u32(obj, "mtu", path)?,
        advmss: opt_u32(obj, "advmss", path)?,
        priority: opt_u32(obj, "priority", path)?,
        table: opt_u32(obj, "table", path)?,
        scope,
    })
}

fn decode_dns(value: &Value, path: &str) -> Result<Dns, FieldError> {
    let obj = as_object(value, path)?;
    Ok(Dns {
        nameservers: string_list(obj, "nameservers", path)?,
        domain: opt_nonempty_string(obj, "domain", path)?,
        search: string_list(obj, "search", path)?,
        options: string_list(obj, "options", path)?,
    })
}

fn parse_cidr(text: &str, path: &str) -> Result<IpNet, FieldError> {
    text.parse::<IpNet>().map_err(|_| {
        FieldError::new(
            path,
            format!("'{text}' is not an address in CIDR notation (such as 10.0.0.5/24)"),
        )
    })
}

/// Optional IP address member; `""` counts as absent, as Go's `net.IP` decoding treats it.
fn opt_ip(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<IpAddr>, FieldError> {
    match opt_str(obj, key, path)? {
        None | Some("") => Ok(None),
        Some(text) => text.parse::<IpAddr>().map(Some).map_err(|_| {
            FieldError::new(join(path, key), format!("'{text}' is not an IP address"))
        }),
    }
}

fn opt_u32(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u32>, FieldError> {
    Ok(
        opt_uint(obj, key, path, u64::from(u32::MAX))?
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
    )
}

/// The printed result, fields in Go's declaration order.
#[derive(Serialize)]
struct ResultOut<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<InterfaceOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<IpOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<RouteOut>,
    dns: DnsOut<'a>,
}

#[derive(Serialize)]
struct InterfaceOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<&'a str>,
    #[serde(rename = "socketPath", skip_serializing_if = "Option::is_none")]
    socket_path: Option<&'a str>,
    #[serde(rename = "pciID", skip_serializing_if = "Option::is_none")]
    pci_id: Option<&'a str>,
}

#[derive(Serialize)]
struct IpOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
}

#[derive(Serialize)]
struct RouteOut {
    dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advmss: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<u8>,
}

#[derive(Serialize)]
struct DnsOut<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    nameservers: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    search: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    options: &'a [String],
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A result using every 1.1.0 field.
    fn rich() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "veth1234".into(),
                    mac: Some("aa:bb:cc:dd:ee:01".into()),
                    mtu: Some(9001),
                    sandbox: None,
                    socket_path: Some("/run/vhost.sock".into()),
                    pci_id: Some("0000:00:1f.6".into()),
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:0a:00:00:05".into()),
                    mtu: Some(9001),
                    sandbox: Some("/run/netns/x".into()),
                    socket_path: None,
                    pci_id: None,
                },
            ],
            ips: vec![
                IpConfig {
                    address: net("10.0.0.5/24"),
                    gateway: Some(ip("10.0.0.1")),
                    interface: Some(1),
                },
                IpConfig {
                    address: net("fd00::5/64"),
                    gateway: Some(ip("fd00::1")),
                    interface: Some(1),
                },
            ],
            routes: vec![
                Route {
                    dst: net("0.0.0.0/0"),
                    gw: Some(ip("10.0.0.1")),
                    mtu: Some(9001),
                    advmss: Some(8961),
                    priority: Some(10),
                    table: Some(100),
                    scope: Some(0),
                },
                Route {
                    dst: net("::/0"),
                    gw: None,
                    mtu: None,
                    advmss: None,
                    priority: None,
                    table: None,
                    scope: None,
                },
            ],
            dns: Dns {
                nameservers: vec!["10.0.0.2".into()],
                domain: Some("cluster.local".into()),
                search: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            },
        }
    }

    /// `rich()` without the 1.1.0-only fields: what survives rendering for older versions.
    fn rich_without_1_1_fields() -> CniResult {
        let mut r = rich();
        for i in &mut r.interfaces {
            i.mtu = None;
            i.socket_path = None;
            i.pci_id = None;
        }
        for route in &mut r.routes {
            route.mtu = None;
            route.advmss = None;
            route.priority = None;
            route.table = None;
            route.scope = None;
        }
        r
    }

    const V1_1_0: &str = r#"{"cniVersion":"1.1.0","interfaces":[{"name":"veth1234","mac":"aa:bb:cc:dd:ee:01","mtu":9001,"socketPath":"/run/vhost.sock","pciID":"0000:00:1f.6"},{"name":"eth0","mac":"0a:58:0a:00:00:05","mtu":9001,"sandbox":"/run/netns/x"}],"ips":[{"interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"},{"interface":1,"address":"fd00::5/64","gateway":"fd00::1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1","mtu":9001,"advmss":8961,"priority":10,"table":100,"scope":0},{"dst":"::/0"}],"dns":{"nameservers":["10.0.0.2"],"domain":"cluster.local","search":["svc.cluster.local"],"options":["ndots:5"]}}"#;
    const V1_0_0: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"veth1234","mac":"aa:bb:cc:dd:ee:01"},{"name":"eth0","mac":"0a:58:0a:00:00:05","sandbox":"/run/netns/x"}],"ips":[{"interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"},{"interface":1,"address":"fd00::5/64","gateway":"fd00::1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"},{"dst":"::/0"}],"dns":{"nameservers":["10.0.0.2"],"domain":"cluster.local","search":["svc.cluster.local"],"options":["ndots:5"]}}"#;

    fn v04x(version: &str) -> String {
        format!(
            r#"{{"cniVersion":"{version}","interfaces":[{{"name":"veth1234","mac":"aa:bb:cc:dd:ee:01"}},{{"name":"eth0","mac":"0a:58:0a:00:00:05","sandbox":"/run/netns/x"}}],"ips":[{{"version":"4","interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"}},{{"version":"6","interface":1,"address":"fd00::5/64","gateway":"fd00::1"}}],"routes":[{{"dst":"0.0.0.0/0","gw":"10.0.0.1"}},{{"dst":"::/0"}}],"dns":{{"nameservers":["10.0.0.2"],"domain":"cluster.local","search":["svc.cluster.local"],"options":["ndots:5"]}}}}"#
        )
    }

    #[test]
    fn rich_result_renders_exactly_for_every_version() {
        let table = [
            (CniVersion::V0_3_0, v04x("0.3.0")),
            (CniVersion::V0_3_1, v04x("0.3.1")),
            (CniVersion::V0_4_0, v04x("0.4.0")),
            (CniVersion::V1_0_0, V1_0_0.to_string()),
            (CniVersion::V1_1_0, V1_1_0.to_string()),
        ];
        for (version, want) in table {
            let got = String::from_utf8(rich().to_stdout_bytes(version)).unwrap();
            assert_eq!(got, want, "{version}");
            let value: Value = serde_json::from_str(&want).unwrap();
            assert_eq!(rich().to_json(version), value, "{version}");
        }
    }

    #[test]
    fn every_rendering_parses_back() {
        for version in CniVersion::ALL {
            let bytes = rich().to_stdout_bytes(version);
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            let parsed = CniResult::parse(&value, version).unwrap();
            let want = if version == CniVersion::V1_1_0 {
                rich()
            } else {
                rich_without_1_1_fields()
            };
            assert_eq!(parsed, want, "{version}");
            // Lossless from here on: rendering the parsed result again gives the same bytes.
            assert_eq!(parsed.to_stdout_bytes(version), bytes, "{version}");
        }
    }

    #[test]
    fn cross_version_conversion_through_the_model() {
        // A 0.4.0 result from a peer, re-printed for a 1.0.0 runtime, loses only ips[].version.
        let parsed = CniResult::parse(
            &serde_json::from_str(&v04x("0.4.0")).unwrap(),
            CniVersion::V0_4_0,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(parsed.to_stdout_bytes(CniVersion::V1_0_0)).unwrap(),
            V1_0_0
        );
        // A 1.0.0 result re-printed for 0.3.1 gains it.
        let parsed =
            CniResult::parse(&serde_json::from_str(V1_0_0).unwrap(), CniVersion::V1_0_0).unwrap();
        assert_eq!(
            String::from_utf8(parsed.to_stdout_bytes(CniVersion::V0_3_1)).unwrap(),
            v04x("0.3.1")
        );
    }

    #[test]
    fn ptp_style_0_3_1_prev_result_with_version_field() {
        let value = json!({
            "cniVersion": "0.3.1",
            "interfaces": [
                {"name": "veth5e5c8a1a", "mac": "d2:1b:8c:9e:7e:0b"},
                {"name": "eth0", "mac": "2a:9e:02:9c:5c:f5", "sandbox": "/var/run/netns/cni-1"}
            ],
            "ips": [{"version": "4", "interface": 1, "address": "10.22.0.5/16", "gateway": "10.22.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let parsed = CniResult::parse(&value, CniVersion::V0_3_1).unwrap();
        assert_eq!(parsed.interfaces.len(), 2);
        assert_eq!(
            parsed.interfaces[1].sandbox.as_deref(),
            Some("/var/run/netns/cni-1")
        );
        assert_eq!(
            parsed.ips,
            [IpConfig {
                address: net("10.22.0.5/16"),
                gateway: Some(ip("10.22.0.1")),
                interface: Some(1)
            }]
        );
        assert_eq!(parsed.routes[0].dst, net("0.0.0.0/0"));
        assert!(parsed.dns.is_empty());
        assert_eq!(
            String::from_utf8(parsed.to_stdout_bytes(CniVersion::V0_3_1)).unwrap(),
            r#"{"cniVersion":"0.3.1","interfaces":[{"name":"veth5e5c8a1a","mac":"d2:1b:8c:9e:7e:0b"},{"name":"eth0","mac":"2a:9e:02:9c:5c:f5","sandbox":"/var/run/netns/cni-1"}],"ips":[{"version":"4","interface":1,"address":"10.22.0.5/16","gateway":"10.22.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#
        );
    }

    #[test]
    fn ip_version_field_is_checked_before_1_0_and_ignored_after() {
        let mismatched = json!({"ips": [{"version": "6", "address": "10.0.0.5/24"}]});
        let e = CniResult::parse(&mismatched, CniVersion::V0_4_0).unwrap_err();
        assert_eq!(e.code, 6);
        assert_eq!(
            e.msg,
            "failed to decode result: result.ips[0].version: '6' does not match address 10.0.0.5/24, which is IPv4"
        );
        let bogus = json!({"ips": [{"version": "5", "address": "10.0.0.5/24"}]});
        assert!(CniResult::parse(&bogus, CniVersion::V0_3_0)
            .unwrap_err()
            .msg
            .contains("'5' is not an IP version"));
        let numeric = json!({"ips": [{"version": 4, "address": "10.0.0.5/24"}]});
        assert!(CniResult::parse(&numeric, CniVersion::V0_3_1)
            .unwrap_err()
            .msg
            .contains("result.ips[0].version: expected a string"));
        // 1.x: tolerated whatever it says; absent before 1.0: inferred.
        assert!(CniResult::parse(&mismatched, CniVersion::V1_0_0).is_ok());
        assert!(CniResult::parse(&numeric, CniVersion::V1_1_0).is_ok());
        assert!(CniResult::parse(
            &json!({"ips": [{"address": "10.0.0.5/24"}]}),
            CniVersion::V0_4_0
        )
        .is_ok());
    }

    #[test]
    fn parse_errors_name_the_path_and_value() {
        let table = [
            (json!([]), "result: expected an object, got an array []"),
            (
                json!({"ips": [{"address": "10.0.0.5"}]}),
                "result.ips[0].address: '10.0.0.5' is not an address in CIDR notation",
            ),
            (
                json!({"ips": [{"gateway": "10.0.0.1"}]}),
                "result.ips[0].address: missing",
            ),
            (
                json!({"ips": [{"address": "10.0.0.5/24", "gateway": "x"}]}),
                "result.ips[0].gateway: 'x' is not an IP address",
            ),
            (
                json!({"ips": [{"address": "10.0.0.5/24", "interface": -1}]}),
                "result.ips[0].interface: expected a non-negative integer",
            ),
            (
                json!({"interfaces": [{"mac": "aa"}]}),
                "result.interfaces[0].name: missing",
            ),
            (
                json!({"interfaces": [{"name": "x", "mtu": "1500"}]}),
                "result.interfaces[0].mtu: expected a non-negative integer, got a string \"1500\"",
            ),
            (
                json!({"routes": [{"dst": "0.0.0.0/0", "scope": 256}]}),
                "result.routes[0].scope: 256 is too large (maximum 255)",
            ),
            (
                json!({"routes": [{"gw": "10.0.0.1"}]}),
                "result.routes[0].dst: missing",
            ),
            (
                json!({"routes": {}}),
                "result.routes: expected an array, got an object {}",
            ),
            (
                json!({"dns": {"nameservers": "10.0.0.2"}}),
                "result.dns.nameservers: expected an array",
            ),
        ];
        for (input, want) in table {
            let e = CniResult::parse(&input, CniVersion::V1_1_0).unwrap_err();
            assert_eq!(e.code, 6, "{input}");
            let msg = e.msg.strip_prefix("failed to decode result: ").unwrap();
            assert!(
                msg.starts_with(want),
                "{input}: {msg:?} does not start with {want:?}"
            );
        }
    }

    #[test]
    fn ipam_style_and_empty_results() {
        // Delegated IPAM returns no interfaces and no ips[].interface.
        let ipam = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.7/24", "gateway": "10.1.0.1"}], "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]});
        let parsed = CniResult::parse(&ipam, CniVersion::V1_0_0).unwrap();
        assert_eq!(
            String::from_utf8(parsed.to_stdout_bytes(CniVersion::V1_0_0)).unwrap(),
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.7/24","gateway":"10.1.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}],"dns":{}}"#
        );
        assert_eq!(
            String::from_utf8(CniResult::default().to_stdout_bytes(CniVersion::V0_4_0)).unwrap(),
            r#"{"cniVersion":"0.4.0","dns":{}}"#
        );
        // Empty strings and nulls read as absent and are not printed back.
        let sloppy = json!({"interfaces": [{"name": "eth0", "mac": "", "sandbox": null}], "ips": [{"address": "10.0.0.5/24", "gateway": ""}], "dns": {"domain": ""}});
        let parsed = CniResult::parse(&sloppy, CniVersion::V1_1_0).unwrap();
        assert_eq!(
            String::from_utf8(parsed.to_stdout_bytes(CniVersion::V1_1_0)).unwrap(),
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.0.0.5/24"}],"dns":{}}"#
        );
    }

    #[test]
    fn merged_with_appends_and_reindexes() {
        let prev =
            CniResult::parse(&serde_json::from_str(V1_0_0).unwrap(), CniVersion::V1_0_0).unwrap();
        let ours = CniResult {
            interfaces: vec![Interface {
                name: "eth1".into(),
                sandbox: Some("/run/netns/x".into()),
                ..Interface::default()
            }],
            ips: vec![
                IpConfig {
                    address: net("192.168.7.9/32"),
                    gateway: None,
                    interface: Some(0),
                },
                IpConfig {
                    address: net("192.168.7.10/32"),
                    gateway: None,
                    interface: None,
                },
            ],
            routes: vec![Route {
                dst: net("192.168.0.0/16"),
                gw: None,
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            }],
            dns: Dns {
                nameservers: vec!["10.0.0.2".into(), "169.254.169.253".into()],
                domain: Some("ec2.internal".into()),
                search: vec![],
                options: vec!["ndots:5".into(), "timeout:1".into()],
            },
        };
        let merged = prev.merged_with(&ours);
        assert_eq!(
            String::from_utf8(merged.to_stdout_bytes(CniVersion::V1_0_0)).unwrap(),
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"veth1234","mac":"aa:bb:cc:dd:ee:01"},{"name":"eth0","mac":"0a:58:0a:00:00:05","sandbox":"/run/netns/x"},{"name":"eth1","sandbox":"/run/netns/x"}],"ips":[{"interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"},{"interface":1,"address":"fd00::5/64","gateway":"fd00::1"},{"interface":2,"address":"192.168.7.9/32"},{"address":"192.168.7.10/32"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"},{"dst":"::/0"},{"dst":"192.168.0.0/16"}],"dns":{"nameservers":["10.0.0.2","169.254.169.253"],"domain":"cluster.local","search":["svc.cluster.local"],"options":["ndots:5","timeout:1"]}}"#
        );
        // Merging into an empty result keeps ours unchanged.
        assert_eq!(CniResult::default().merged_with(&ours), ours);
    }

    #[test]
    fn serde_is_lossless_1_1_0_and_honours_cni_version_on_read() {
        let text = serde_json::to_string(&rich()).unwrap();
        assert_eq!(text, V1_1_0);
        assert_eq!(serde_json::from_str::<CniResult>(&text).unwrap(), rich());
        let old = v04x("0.4.0").replace(r#""version":"4""#, r#""version":"6""#);
        let err = serde_json::from_str::<CniResult>(&old).unwrap_err();
        assert!(err.to_string().contains("does not match address"), "{err}");
    }
}
