//! The `runtimeConfig` object: capability arguments the runtime injects (CONVENTIONS.md).
//!
//! Keys match case-insensitively, as Go's `encoding/json` does: containerd/go-cni marshals its
//! capability structs without json tags, so a kubelet ADD carries `HostPort`, `ContainerPort`,
//! `IngressRate`..., while podman and cnitool send `hostPort`, `ingressRate`... (reference §1.12).
//! Decoding is therefore written by hand over `serde_json::Value`; the serde impls route through
//! it, so every way in is lenient, and every way out writes the conventional camelCase.

use crate::decode::{
    self, as_array, as_object, as_str, as_uint, field, index, join, key_matches, FieldError,
};
use crate::error::CniError;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

const PORT_MAPPINGS: &str = "portMappings";
const BANDWIDTH: &str = "bandwidth";
const POD_ANNOTATIONS: &str = "io.kubernetes.cri.pod-annotations";

/// Capability arguments of one invocation; empty when the runtime sent none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `portMappings`: host ports to forward into the container.
    pub port_mappings: Vec<PortMapping>,
    /// `bandwidth`: traffic shaping limits, when requested.
    pub bandwidth: Option<Bandwidth>,
    /// `io.kubernetes.cri.pod-annotations`: the pod's annotations (containerd CRI).
    pub pod_annotations: BTreeMap<String, String>,
    /// Every other capability (`ips`, `mac`, `dns`, `cgroupPath`...), under its key as given.
    pub other: BTreeMap<String, Value>,
}

/// One `portMappings` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// Port on the host, 1-65535.
    pub host_port: u16,
    /// Port in the container, 1-65535.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`, lower-cased; `tcp` when absent or empty.
    pub protocol: String,
    /// Host address to bind, validated as an IP address; `""` and absent give `None`.
    pub host_ip: Option<String>,
}

/// The `bandwidth` capability: rates in bits per second, bursts in bits; absent values are 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bandwidth {
    /// Ingress rate limit in bit/s (0: unlimited).
    pub ingress_rate: u64,
    /// Ingress burst in bits.
    pub ingress_burst: u64,
    /// Egress rate limit in bit/s (0: unlimited).
    pub egress_rate: u64,
    /// Egress burst in bits.
    pub egress_burst: u64,
}

impl RuntimeConfig {
    /// A capability argument kept in [`RuntimeConfig::other`] (`ips`, `mac`, ...), found as Go
    /// finds a struct field: the exact key first, else case-insensitively; `null` is absent.
    pub fn capability(&self, key: &str) -> Option<&Value> {
        self.other
            .get(key)
            .or_else(|| {
                self.other
                    .iter()
                    .find(|(k, _)| key_matches(k, key))
                    .map(|(_, v)| v)
            })
            .filter(|v| !v.is_null())
    }

    /// Decodes a `runtimeConfig` object found at JSON path `path` (such as `"runtimeConfig"`).
    ///
    /// Errors are code 7 naming the offending value's path, for example
    /// `runtimeConfig.portMappings[0].hostPort: 70000 is not a port (expected 1-65535)`.
    /// `null` gives an empty configuration.
    pub fn from_value(value: &Value, path: &str) -> Result<RuntimeConfig, CniError> {
        Self::decode(value, path).map_err(|e| CniError::invalid_config(e.to_string()))
    }

    fn decode(value: &Value, path: &str) -> Result<RuntimeConfig, FieldError> {
        if value.is_null() {
            return Ok(RuntimeConfig::default());
        }
        let obj = as_object(value, path)?;
        let mut config = RuntimeConfig::default();
        if let Some(list) = field(obj, PORT_MAPPINGS) {
            let list_path = join(path, PORT_MAPPINGS);
            config.port_mappings = as_array(list, &list_path)?
                .iter()
                .enumerate()
                .map(|(i, item)| PortMapping::decode(item, &index(&list_path, i)))
                .collect::<Result<_, _>>()?;
        }
        if let Some(bandwidth) = field(obj, BANDWIDTH) {
            config.bandwidth = Some(Bandwidth::decode(bandwidth, &join(path, BANDWIDTH))?);
        }
        if let Some(annotations) = field(obj, POD_ANNOTATIONS) {
            let map_path = join(path, POD_ANNOTATIONS);
            for (key, v) in as_object(annotations, &map_path)? {
                let text = as_str(v, &join(&map_path, key))?;
                config.pod_annotations.insert(key.clone(), text.to_string());
            }
        }
        config.other = obj
            .iter()
            .filter(|(k, _)| {
                ![PORT_MAPPINGS, BANDWIDTH, POD_ANNOTATIONS]
                    .iter()
                    .any(|known| key_matches(k, known))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(config)
    }

    /// True when the runtime sent no capability arguments at all.
    pub fn is_empty(&self) -> bool {
        self.port_mappings.is_empty()
            && self.bandwidth.is_none()
            && self.pod_annotations.is_empty()
            && self.other.is_empty()
    }
}

impl PortMapping {
    /// Decodes one `portMappings` entry at `path` (code 7 on failure).
    pub fn from_value(value: &Value, path: &str) -> Result<PortMapping, CniError> {
        Self::decode(value, path).map_err(|e| CniError::invalid_config(e.to_string()))
    }

    fn decode(value: &Value, path: &str) -> Result<PortMapping, FieldError> {
        let obj = as_object(value, path)?;
        let port = |key: &str| -> Result<u16, FieldError> {
            let port_path = join(path, key);
            let v = field(obj, key).ok_or_else(|| {
                FieldError::new(&port_path, "missing (a port 1-65535 is required)")
            })?;
            match v.as_u64() {
                Some(n @ 1..=65535) => u16::try_from(n)
                    .map_err(|_| FieldError::new(&port_path, format!("{n} is not a port"))),
                _ => Err(FieldError::new(
                    &port_path,
                    format!("{} is not a port (expected 1-65535)", decode::describe(v)),
                )),
            }
        };
        let host_port = port("hostPort")?;
        let container_port = port("containerPort")?;

        let protocol_path = join(path, "protocol");
        let protocol = match field(obj, "protocol") {
            None => "tcp".to_string(),
            Some(v) => {
                let text = as_str(v, &protocol_path)?.to_ascii_lowercase();
                match text.as_str() {
                    "" => "tcp".to_string(),
                    "tcp" | "udp" | "sctp" => text,
                    _ => {
                        return Err(FieldError::new(
                            protocol_path,
                            format!(
                                "{} is not a protocol (expected tcp, udp or sctp)",
                                decode::describe(v)
                            ),
                        ))
                    }
                }
            }
        };

        let host_ip_path = join(path, "hostIP");
        let host_ip = match field(obj, "hostIP") {
            None => None,
            Some(v) => {
                let text = as_str(v, &host_ip_path)?;
                if text.is_empty() {
                    None
                } else if text.parse::<IpAddr>().is_ok() {
                    Some(text.to_string())
                } else {
                    return Err(FieldError::new(
                        host_ip_path,
                        format!("'{text}' is not an IP address"),
                    ));
                }
            }
        };

        Ok(PortMapping {
            host_port,
            container_port,
            protocol,
            host_ip,
        })
    }
}

impl Bandwidth {
    /// Decodes a `bandwidth` object at `path` (code 7 on failure).
    pub fn from_value(value: &Value, path: &str) -> Result<Bandwidth, CniError> {
        Self::decode(value, path).map_err(|e| CniError::invalid_config(e.to_string()))
    }

    fn decode(value: &Value, path: &str) -> Result<Bandwidth, FieldError> {
        let obj = as_object(value, path)?;
        let get = |key: &str| -> Result<u64, FieldError> {
            field(obj, key)
                .map(|v| as_uint(v, &join(path, key), u64::MAX))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        Ok(Bandwidth {
            ingress_rate: get("ingressRate")?,
            ingress_burst: get("ingressBurst")?,
            egress_rate: get("egressRate")?,
            egress_burst: get("egressBurst")?,
        })
    }
}

impl Serialize for RuntimeConfig {
    /// Writes the conventional camelCase form; empty capabilities are omitted.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if !self.port_mappings.is_empty() {
            map.serialize_entry(PORT_MAPPINGS, &self.port_mappings)?;
        }
        if let Some(bandwidth) = &self.bandwidth {
            map.serialize_entry(BANDWIDTH, bandwidth)?;
        }
        if !self.pod_annotations.is_empty() {
            map.serialize_entry(POD_ANNOTATIONS, &self.pod_annotations)?;
        }
        for (key, value) in &self.other {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for RuntimeConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        RuntimeConfig::decode(&value, "runtimeConfig").map_err(serde::de::Error::custom)
    }
}

impl Serialize for PortMapping {
    /// Writes `{"hostPort","containerPort","protocol","hostIP"?}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("hostPort", &self.host_port)?;
        map.serialize_entry("containerPort", &self.container_port)?;
        map.serialize_entry("protocol", &self.protocol)?;
        if let Some(host_ip) = &self.host_ip {
            map.serialize_entry("hostIP", host_ip)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for PortMapping {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        PortMapping::decode(&value, "portMapping").map_err(serde::de::Error::custom)
    }
}

impl Serialize for Bandwidth {
    /// Writes `{"ingressRate","ingressBurst","egressRate","egressBurst"}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("ingressRate", &self.ingress_rate)?;
        map.serialize_entry("ingressBurst", &self.ingress_burst)?;
        map.serialize_entry("egressRate", &self.egress_rate)?;
        map.serialize_entry("egressBurst", &self.egress_burst)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for Bandwidth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Bandwidth::decode(&value, "bandwidth").map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<RuntimeConfig, CniError> {
        RuntimeConfig::from_value(&v, "runtimeConfig")
    }

    #[test]
    fn containerd_pascal_case_is_accepted() {
        let config = parse(json!({
            "portMappings": [{"HostPort": 8082, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
            "bandwidth": {"IngressRate": 0, "IngressBurst": 0, "EgressRate": 10000000, "EgressBurst": 4294967295u64},
            "io.kubernetes.cri.pod-annotations": {"kubernetes.io/config.source": "api", "a": "b"}
        }))
        .unwrap();
        assert_eq!(
            config.port_mappings,
            [PortMapping {
                host_port: 8082,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None
            }]
        );
        assert_eq!(
            config.bandwidth,
            Some(Bandwidth {
                ingress_rate: 0,
                ingress_burst: 0,
                egress_rate: 10_000_000,
                egress_burst: 4_294_967_295
            })
        );
        assert_eq!(
            config
                .pod_annotations
                .get("kubernetes.io/config.source")
                .map(String::as_str),
            Some("api")
        );
        assert_eq!(config.pod_annotations.len(), 2);
        assert!(config.other.is_empty());
    }

    #[test]
    fn podman_camel_case_is_accepted() {
        let config = parse(json!({
            "portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "udp", "hostIP": "127.0.0.1"},
                {"hostPort": 443, "containerPort": 8443}
            ],
            "bandwidth": {"ingressRate": 1000, "egressBurst": 64},
            "ips": ["10.0.0.5/24"],
            "MAC": "aa:bb:cc:dd:ee:ff"
        }))
        .unwrap();
        assert_eq!(
            config.port_mappings,
            [
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "udp".into(),
                    host_ip: Some("127.0.0.1".into())
                },
                PortMapping {
                    host_port: 443,
                    container_port: 8443,
                    protocol: "tcp".into(),
                    host_ip: None
                },
            ]
        );
        assert_eq!(
            config.bandwidth,
            Some(Bandwidth {
                ingress_rate: 1000,
                ingress_burst: 0,
                egress_rate: 0,
                egress_burst: 64
            })
        );
        assert_eq!(config.other.get("ips"), Some(&json!(["10.0.0.5/24"])));
        assert_eq!(config.other.get("MAC"), Some(&json!("aa:bb:cc:dd:ee:ff")));
    }

    #[test]
    fn errors_name_the_path_and_value() {
        let table = [
            (json!({"portMappings": [{"hostPort": 70000, "containerPort": 80}]}), "runtimeConfig.portMappings[0].hostPort: 70000 is not a port (expected 1-65535)"),
            (json!({"portMappings": [{"hostPort": 80, "containerPort": 80}, {"HostPort": 0, "ContainerPort": 80}]}), "runtimeConfig.portMappings[1].hostPort: 0 is not a port (expected 1-65535)"),
            (json!({"portMappings": [{"hostPort": 80}]}), "runtimeConfig.portMappings[0].containerPort: missing (a port 1-65535 is required)"),
            (json!({"portMappings": [{"hostPort": "80", "containerPort": 80}]}), "runtimeConfig.portMappings[0].hostPort: \"80\" is not a port (expected 1-65535)"),
            (json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]}), "runtimeConfig.portMappings[0].protocol: \"icmp\" is not a protocol (expected tcp, udp or sctp)"),
            (json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "hostIP": "localhost"}]}), "runtimeConfig.portMappings[0].hostIP: 'localhost' is not an IP address"),
            (json!({"portMappings": {"hostPort": 80}}), "runtimeConfig.portMappings: expected an array, got an object"),
            (json!({"bandwidth": {"ingressRate": -5}}), "runtimeConfig.bandwidth.ingressRate: expected a non-negative integer, got a number -5"),
            (json!({"io.kubernetes.cri.pod-annotations": {"a": 1}}), "runtimeConfig.io.kubernetes.cri.pod-annotations.a: expected a string, got a number 1"),
            (json!([1]), "runtimeConfig: expected an object, got an array [1]"),
        ];
        for (input, want) in table {
            let e = parse(input.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{input}");
            assert!(
                e.msg.starts_with(want),
                "{input}: {:?} does not start with {want:?}",
                e.msg
            );
        }
    }

    #[test]
    fn paths_use_the_conventional_key_spelling() {
        // Keys match whatever their case, so messages name them in the CONVENTIONS.md spelling.
        let e =
            parse(json!({"PortMappings": [{"HostPort": 1, "ContainerPort": 99999}]})).unwrap_err();
        assert_eq!(
            e.msg,
            "runtimeConfig.portMappings[0].containerPort: 99999 is not a port (expected 1-65535)"
        );
    }

    #[test]
    fn protocol_is_lowercased_and_defaults_to_tcp() {
        let config = parse(json!({"portMappings": [
            {"hostPort": 1, "containerPort": 2, "protocol": "UDP"},
            {"hostPort": 1, "containerPort": 2, "protocol": ""},
            {"hostPort": 1, "containerPort": 2, "protocol": null}
        ]}))
        .unwrap();
        let protocols: Vec<&str> = config
            .port_mappings
            .iter()
            .map(|p| p.protocol.as_str())
            .collect();
        assert_eq!(protocols, ["udp", "tcp", "tcp"]);
    }

    #[test]
    fn null_and_empty_give_an_empty_config() {
        assert!(parse(Value::Null).unwrap().is_empty());
        assert!(parse(json!({})).unwrap().is_empty());
        assert!(parse(json!({"portMappings": null, "bandwidth": null}))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn serde_writes_camel_case_and_reads_leniently() {
        let config = parse(json!({
            "portMappings": [{"HostPort": 8082, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
            "bandwidth": {"EgressRate": 7},
            "io.kubernetes.cri.pod-annotations": {"k": "v"},
            "cgroupPath": "/x"
        }))
        .unwrap();
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(
            text,
            r#"{"portMappings":[{"hostPort":8082,"containerPort":80,"protocol":"tcp"}],"bandwidth":{"ingressRate":0,"ingressBurst":0,"egressRate":7,"egressBurst":0},"io.kubernetes.cri.pod-annotations":{"k":"v"},"cgroupPath":"/x"}"#
        );
        assert_eq!(
            serde_json::from_str::<RuntimeConfig>(&text).unwrap(),
            config
        );
        let err = serde_json::from_str::<RuntimeConfig>(r#"{"portMappings":[{"hostPort":0}]}"#)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("runtimeConfig.portMappings[0].hostPort: 0 is not a port"),
            "{err}"
        );
    }
}
