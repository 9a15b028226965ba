//! The per-plugin network configuration a runtime writes on stdin (spec §3 "Deriving request
//! configuration").
//!
//! libcni builds it from the plugin's object in the conflist and injects `name`, `cniVersion`,
//! `prevResult`, `runtimeConfig` and, for GC, the list of still valid attachments under
//! `cni.dev/valid-attachments` and/or `cni.dev/attachments` (the spec text and libcni disagreed
//! on the name; libcni ≥ 1.2.1 sends both, reference §1.3). Unknown keys are kept in
//! [`NetConf::raw`], which the spec requires plugins to pass through.

use crate::decode::{
    as_array, as_object, as_str, describe, field, index, is_identifier, join, kind,
    opt_nonempty_string, FieldError, IDENTIFIER_PATTERN,
};
use crate::error::CniError;
use crate::result::CniResult;
use crate::routes::RouteConfig;
use crate::runtime_config::RuntimeConfig;
use crate::version::CniVersion;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// GC key used by libcni and the spec since PR #1103.
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// GC key of the spec-v1.1.0 text, also sent by libcni ≥ 1.2.1.
pub const ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// One plugin's configuration for one invocation, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConf {
    /// The negotiated spec version; results and errors are written in it.
    pub cni_version: CniVersion,
    /// The network name (unique on the host).
    pub name: String,
    /// The plugin type (`type`), the executable's name.
    pub plugin_type: String,
    /// The previous plugin's result (ADD) or the cached final result (CHECK, DEL), parsed in
    /// `cni_version`'s format.
    pub prev_result: Option<CniResult>,
    /// Capability arguments; empty when absent.
    pub runtime_config: RuntimeConfig,
    /// GC only: the still valid attachments, the union of both GC keys without duplicates
    /// (first appearance order, `cni.dev/valid-attachments` first). `None` when neither key is
    /// present, which is how `cnitool gc` calls (libcni then has already DEL'd every cached
    /// attachment of the network, so nothing of it is meant to stay); `Some(vec![])` is an
    /// explicit "nothing is valid".
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// wasmcni's `daemonSocket`: path of the daemon's Unix socket (`""` counts as absent).
    pub daemon_socket: Option<String>,
    /// wasmcni's `logFile`: where the shim appends its log (`""` counts as absent).
    pub log_file: Option<String>,
    /// wasmcni's `mode`: `"chained"` runs only the policy hooks on the `prevResult` of the
    /// main plugin before it (no interface, no address); absent or `"main"`: wasmcni is the
    /// main plugin.
    pub chained: bool,
    /// wasmcni's `defaultRoute`, `routes` and `routeTable`: what the interface routes inside
    /// the pod.
    pub routes: RouteConfig,
    /// The whole configuration as given, unknown keys included.
    pub raw: Value,
}

/// One `(containerID, ifname)` attachment of the GC valid list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValidAttachment {
    /// The attachment's `CNI_CONTAINERID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The attachment's `CNI_IFNAME`.
    pub ifname: String,
}

impl NetConf {
    /// Parses and validates stdin.
    ///
    /// * not JSON, or not an object: code 6 saying where parsing failed;
    /// * `cniVersion`, `name` or `type` missing or not a string: code 7 naming the key;
    /// * unsupported `cniVersion`: code 1;
    /// * `name` not matching `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`, or `type` empty or containing
    ///   `/`: code 7 with the value;
    /// * `prevResult` that does not parse in `cniVersion`'s format: code 6 naming the path
    ///   inside `prevResult`;
    /// * bad `runtimeConfig`, GC attachment lists, `daemonSocket`, `logFile` or route keys
    ///   (`defaultRoute`, `routes`, `routeTable`): code 7 naming the path.
    ///
    /// `cniVersions` is accepted and ignored (the runtime already chose). Keys match
    /// case-insensitively, as in Go plugins.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode("network configuration", e))?;
        NetConf::from_value(value)
    }

    /// Like [`NetConf::parse`], for an already decoded JSON value.
    pub fn from_value(value: Value) -> Result<NetConf, CniError> {
        let obj = value.as_object().ok_or_else(|| {
            CniError::decode(
                "network configuration",
                format!(
                    "expected a JSON object, got {} {}",
                    kind(&value),
                    describe(&value)
                ),
            )
        })?;
        let config_error = |e: FieldError| CniError::invalid_config(e.to_string());

        let cni_version =
            CniVersion::parse(required_str(obj, "cniVersion").map_err(config_error)?)?;

        let name = required_str(obj, "name").map_err(config_error)?;
        if !is_identifier(name) {
            return Err(CniError::invalid_config(format!(
                "name: '{name}' is not a valid network name: it must match {IDENTIFIER_PATTERN}"
            )));
        }

        let plugin_type = required_str(obj, "type").map_err(config_error)?;
        if plugin_type.is_empty() || plugin_type.contains('/') {
            return Err(CniError::invalid_config(format!(
                "type: '{plugin_type}' is not a plugin name: it must be a non-empty file name without '/'"
            )));
        }

        // wasmcni is its own IPAM (the provider in the cluster configuration); silently
        // ignoring a delegated IPAM section would hand out addresses the operator did not ask for.
        if let Some(ipam) = field(obj, "ipam") {
            return Err(CniError::unsupported_field("ipam", &ipam.to_string()).with_details(
                "wasmcni allocates pod addresses itself: configure the pool in the cluster configuration's [provider] and remove \"ipam\" from the network configuration",
            ));
        }

        let prev_result = field(obj, "prevResult")
            .map(|v| CniResult::decode(v, cni_version, "prevResult"))
            .transpose()
            .map_err(|e| CniError::decode("network configuration", e))?;

        let runtime_config = match field(obj, "runtimeConfig") {
            None => RuntimeConfig::default(),
            Some(v) => RuntimeConfig::from_value(v, "runtimeConfig")?,
        };

        let valid_attachments = gc_attachments(obj).map_err(config_error)?;
        let daemon_socket = opt_nonempty_string(obj, "daemonSocket", "").map_err(config_error)?;
        let log_file = opt_nonempty_string(obj, "logFile", "").map_err(config_error)?;
        let chained = match opt_nonempty_string(obj, "mode", "").map_err(config_error)? {
            None => false,
            Some(mode) if mode == "main" => false,
            Some(mode) if mode == "chained" => true,
            Some(other) => {
                return Err(CniError::invalid_config(format!(
                    "mode: '{other}' is not a mode: use \"main\" (wasmcni creates the interface) or \"chained\" (policy hooks only, after another main plugin)"
                )))
            }
        };

        let routes = RouteConfig::from_object(obj).map_err(config_error)?;

        Ok(NetConf {
            cni_version,
            name: name.to_string(),
            plugin_type: plugin_type.to_string(),
            prev_result,
            runtime_config,
            valid_attachments,
            daemon_socket,
            log_file,
            chained,
            routes,
            raw: value,
        })
    }
}

impl Serialize for NetConf {
    /// Writes [`NetConf::raw`], the configuration exactly as received.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NetConf {
    /// Reads and validates like [`NetConf::parse`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        NetConf::from_value(value).map_err(|e| serde::de::Error::custom(e.msg))
    }
}

/// Extracts `cniVersion` from stdin leniently, to choose the version an error is written in
/// even when the rest of the configuration is bad.
///
/// Returns the string as given (possibly a version wasmcni does not support), or `None` when
/// there is none. When the bytes are not valid JSON, the first `"cniVersion": "..."` pair in
/// them is used.
pub fn peek_version(bytes: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => value
            .as_object()
            .and_then(|obj| field(obj, "cniVersion"))
            .and_then(Value::as_str)
            .map(str::to_string),
        Err(_) => scan_version(bytes),
    }
}

/// Finds `"cniVersion"`, optional whitespace, `:`, optional whitespace and a plain string in
/// broken JSON.
fn scan_version(bytes: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"cniVersion\"";
    let mut start = 0;
    while let Some(pos) = find(&bytes[start..], KEY) {
        let after_key = start + pos + KEY.len();
        if let Some(version) = string_after_colon(&bytes[after_key..]) {
            return Some(version);
        }
        start = after_key;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn string_after_colon(rest: &[u8]) -> Option<String> {
    let rest = rest.trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"\"")?;
    let end = rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    if rest[end] != b'"' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok().map(str::to_string)
}

/// A required string member at the top level.
fn required_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, FieldError> {
    let v = field(obj, key)
        .ok_or_else(|| FieldError::new(key, "missing; the network configuration must set it"))?;
    as_str(v, key)
}

/// The union of both GC keys, or `None` when neither is present.
fn gc_attachments(obj: &Map<String, Value>) -> Result<Option<Vec<ValidAttachment>>, FieldError> {
    let mut union: Option<Vec<ValidAttachment>> = None;
    for key in [VALID_ATTACHMENTS_KEY, ATTACHMENTS_KEY] {
        let Some(list) = field(obj, key) else {
            continue;
        };
        let all = union.get_or_insert_with(Vec::new);
        for (i, item) in as_array(list, key)?.iter().enumerate() {
            let attachment = decode_attachment(item, &index(key, i))?;
            if !all.contains(&attachment) {
                all.push(attachment);
            }
        }
    }
    Ok(union)
}

fn decode_attachment(value: &Value, path: &str) -> Result<ValidAttachment, FieldError> {
    let obj = as_object(value, path)?;
    let get = |key: &str| -> Result<String, FieldError> {
        let member = join(path, key);
        let v = field(obj, key).ok_or_else(|| FieldError::new(&member, "missing"))?;
        as_str(v, &member).map(str::to_string)
    };
    Ok(ValidAttachment {
        container_id: get("containerID")?,
        ifname: get("ifname")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_config::{Bandwidth, PortMapping};
    use serde_json::json;

    fn parse(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    fn base() -> Value {
        json!({"cniVersion": "1.1.0", "name": "aws-cni", "type": "wasmcni"})
    }

    fn with(extra: Value) -> Value {
        let mut v = base();
        if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in more {
                obj.insert(k.clone(), x.clone());
            }
        }
        v
    }

    fn attachment(id: &str, ifname: &str) -> ValidAttachment {
        ValidAttachment {
            container_id: id.into(),
            ifname: ifname.into(),
        }
    }

    #[test]
    fn a_delegated_ipam_section_is_refused_with_code_2() {
        let err = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"wasmcni","ipam":{"type":"host-local"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code, crate::error::codes::UNSUPPORTED_FIELD);
        assert_eq!(
            err.msg,
            r#"unsupported field 'ipam' with value '{"type":"host-local"}'"#
        );
        assert!(err.details.unwrap().contains("[provider]"));
    }

    #[test]
    fn minimal_config() {
        let conf = parse(base()).unwrap();
        assert_eq!(conf.cni_version, CniVersion::V1_1_0);
        assert_eq!(conf.name, "aws-cni");
        assert_eq!(conf.plugin_type, "wasmcni");
        assert_eq!(conf.prev_result, None);
        assert!(conf.runtime_config.is_empty());
        assert_eq!(conf.valid_attachments, None);
        assert_eq!((conf.daemon_socket, conf.log_file), (None, None));
        assert_eq!(conf.raw, base());
    }

    #[test]
    fn invalid_configs_give_the_right_code_and_name_the_problem() {
        let table: Vec<(Vec<u8>, u32, &str)> = vec![
            (b"garbage".to_vec(), 6, "failed to decode network configuration: expected value at line 1 column 1"),
            (b"".to_vec(), 6, "failed to decode network configuration: EOF while parsing a value at line 1 column 0"),
            (b"{\"cniVersion\":\"1.1.0\",".to_vec(), 6, "failed to decode network configuration: EOF while parsing a value at line 1 column 22"),
            (b"[1,2]".to_vec(), 6, "failed to decode network configuration: expected a JSON object, got an array [1,2]"),
            (b"{}".to_vec(), 7, "cniVersion: missing; the network configuration must set it"),
            (br#"{"cniVersion":1,"name":"n","type":"t"}"#.to_vec(), 7, "cniVersion: expected a string, got a number 1"),
            (br#"{"cniVersion":"9.9.9","name":"n","type":"t"}"#.to_vec(), 1, "unsupported cniVersion '9.9.9': wasmcni supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
            (br#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#.to_vec(), 1, "unsupported cniVersion '0.2.0'"),
            (br#"{"cniVersion":"1.0.0","type":"t"}"#.to_vec(), 7, "name: missing; the network configuration must set it"),
            (br#"{"cniVersion":"1.0.0","name":["n"],"type":"t"}"#.to_vec(), 7, "name: expected a string, got an array [\"n\"]"),
            (br#"{"cniVersion":"1.0.0","name":"my net","type":"t"}"#.to_vec(), 7, "name: 'my net' is not a valid network name: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"),
            (br#"{"cniVersion":"1.0.0","name":"n"}"#.to_vec(), 7, "type: missing; the network configuration must set it"),
            (br#"{"cniVersion":"1.0.0","name":"n","type":"../bin/x"}"#.to_vec(), 7, "type: '../bin/x' is not a plugin name"),
            (br#"{"cniVersion":"1.0.0","name":"n","type":""}"#.to_vec(), 7, "type: '' is not a plugin name"),
            (br#"{"cniVersion":"1.0.0","name":"n","type":"t","daemonSocket":5}"#.to_vec(), 7, "daemonSocket: expected a string, got a number 5"),
            (br#"{"cniVersion":"1.0.0","name":"n","type":"t","logFile":{}}"#.to_vec(), 7, "logFile: expected a string, got an object {}"),
            (br#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"ips":[{"address":"x"}]}}"#.to_vec(), 6, "failed to decode network configuration: prevResult.ips[0].address: 'x' is not an address in CIDR notation"),
            (br#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":[]}"#.to_vec(), 6, "failed to decode network configuration: prevResult: expected an object, got an array []"),
            (br#"{"cniVersion":"1.0.0","name":"n","type":"t","runtimeConfig":{"portMappings":[{"hostPort":70000,"containerPort":80}]}}"#.to_vec(), 7, "runtimeConfig.portMappings[0].hostPort: 70000 is not a port (expected 1-65535)"),
            (br#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[{"containerID":"a"}]}"#.to_vec(), 7, "cni.dev/valid-attachments[0].ifname: missing"),
            (br#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/attachments":{}}"#.to_vec(), 7, "cni.dev/attachments: expected an array, got an object {}"),
        ];
        for (bytes, code, want) in table {
            let e = NetConf::parse(&bytes).unwrap_err();
            let input = String::from_utf8_lossy(&bytes);
            assert_eq!(e.code, code, "{input}: {e}");
            assert!(
                e.msg.starts_with(want),
                "{input}: {:?} does not start with {want:?}",
                e.msg
            );
        }
    }

    #[test]
    fn gc_attachment_keys_are_united_without_duplicates() {
        let a = json!([{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "eth0"}]);
        let b = json!([{"containerID": "c2", "ifname": "eth0"}, {"containerID": "c3", "ifname": "eth1"}]);
        let table = [
            (
                json!({"cni.dev/valid-attachments": a.clone()}),
                Some(vec![attachment("c1", "eth0"), attachment("c2", "eth0")]),
            ),
            (
                json!({"cni.dev/attachments": b.clone()}),
                Some(vec![attachment("c2", "eth0"), attachment("c3", "eth1")]),
            ),
            (
                json!({"cni.dev/valid-attachments": a.clone(), "cni.dev/attachments": b}),
                Some(vec![
                    attachment("c1", "eth0"),
                    attachment("c2", "eth0"),
                    attachment("c3", "eth1"),
                ]),
            ),
            // libcni ≥ 1.2.1 sends the same list under both keys.
            (
                json!({"cni.dev/valid-attachments": a.clone(), "cni.dev/attachments": a}),
                Some(vec![attachment("c1", "eth0"), attachment("c2", "eth0")]),
            ),
            (json!({"cni.dev/valid-attachments": []}), Some(vec![])),
            (json!({}), None),
        ];
        for (extra, want) in table {
            let conf = parse(with(extra.clone())).unwrap();
            assert_eq!(conf.valid_attachments, want, "{extra}");
        }
    }

    #[test]
    fn prev_result_is_parsed_in_the_config_version() {
        let prev_040 = json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"version": "4", "interface": 0, "address": "10.0.0.5/24", "gateway": "10.0.0.1"}],
            "dns": {}
        });
        let conf =
            parse(json!({"cniVersion": "0.4.0", "name": "n", "type": "t", "prevResult": prev_040}))
                .unwrap();
        let prev = conf.prev_result.unwrap();
        assert_eq!(prev.ips[0].address.to_string(), "10.0.0.5/24");
        assert_eq!(prev.ips[0].interface, Some(0));
        assert_eq!(
            String::from_utf8(prev.to_stdout_bytes(CniVersion::V0_4_0)).unwrap(),
            r#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"version":"4","interface":0,"address":"10.0.0.5/24","gateway":"10.0.0.1"}],"dns":{}}"#
        );
        // In 0.4.0 the version field is checked.
        let wrong = json!({"ips": [{"version": "6", "address": "10.0.0.5/24"}]});
        let e =
            parse(json!({"cniVersion": "0.4.0", "name": "n", "type": "t", "prevResult": wrong}))
                .unwrap_err();
        assert_eq!(e.code, 6);
        assert!(
            e.msg
                .contains("prevResult.ips[0].version: '6' does not match"),
            "{}",
            e.msg
        );

        let prev_110 = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mtu": 9001, "sandbox": "/run/netns/x"}],
            "ips": [{"interface": 0, "address": "fd00::5/64"}],
            "routes": [{"dst": "::/0", "gw": "fd00::1", "table": 10}]
        });
        let conf = parse(with(json!({"prevResult": prev_110}))).unwrap();
        let prev = conf.prev_result.unwrap();
        assert_eq!(prev.interfaces[0].mtu, Some(9001));
        assert_eq!(prev.routes[0].table, Some(10));
        assert_eq!(
            String::from_utf8(prev.to_stdout_bytes(CniVersion::V1_1_0)).unwrap(),
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mtu":9001,"sandbox":"/run/netns/x"}],"ips":[{"interface":0,"address":"fd00::5/64"}],"routes":[{"dst":"::/0","gw":"fd00::1","table":10}],"dns":{}}"#
        );
        assert_eq!(
            parse(with(json!({"prevResult": null})))
                .unwrap()
                .prev_result,
            None
        );
    }

    #[test]
    fn unknown_keys_are_kept_and_wasmcni_keys_read() {
        let input = with(json!({
            "cniVersions": ["0.4.0", "1.1.0"],
            "capabilities": {"portMappings": true},
            "dns": {"nameservers": ["10.0.0.10"]},
            "disableCheck": true,
            "x-vendor": {"nested": [1, 2]},
            "daemonSocket": "/run/wasmcni/daemon.sock",
            "logFile": ""
        }));
        let conf = parse(input.clone()).unwrap();
        assert_eq!(conf.raw, input);
        assert_eq!(conf.raw["x-vendor"]["nested"], json!([1, 2]));
        assert_eq!(
            conf.daemon_socket.as_deref(),
            Some("/run/wasmcni/daemon.sock")
        );
        assert_eq!(conf.log_file, None);
        // Serde writes the raw config back and reads it with the same validation.
        let text = serde_json::to_string(&conf).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), input);
        assert_eq!(serde_json::from_str::<NetConf>(&text).unwrap(), conf);
        assert!(serde_json::from_str::<NetConf>("{}").is_err());
    }

    #[test]
    fn runtime_config_from_containerd_and_podman() {
        let containerd = with(json!({"runtimeConfig": {
            "portMappings": [{"HostPort": 8082, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
            "bandwidth": {"IngressRate": 0, "IngressBurst": 0, "EgressRate": 10000000, "EgressBurst": 4294967295u64},
            "io.kubernetes.cri.pod-annotations": {"a": "b"}
        }}));
        let conf = parse(containerd).unwrap();
        assert_eq!(
            conf.runtime_config.port_mappings,
            [PortMapping {
                host_port: 8082,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None
            }]
        );
        assert_eq!(
            conf.runtime_config.bandwidth,
            Some(Bandwidth {
                ingress_rate: 0,
                ingress_burst: 0,
                egress_rate: 10_000_000,
                egress_burst: 4_294_967_295
            })
        );
        assert_eq!(
            conf.runtime_config
                .pod_annotations
                .get("a")
                .map(String::as_str),
            Some("b")
        );

        let podman = with(json!({"runtimeConfig": {
            "portMappings": [{"hostPort": 8080, "containerPort": 8081, "protocol": "udp", "hostIP": "::1"}],
            "bandwidth": {"ingressRate": 5, "ingressBurst": 6, "egressRate": 7, "egressBurst": 8}
        }}));
        let conf = parse(podman).unwrap();
        assert_eq!(
            conf.runtime_config.port_mappings,
            [PortMapping {
                host_port: 8080,
                container_port: 8081,
                protocol: "udp".into(),
                host_ip: Some("::1".into())
            }]
        );
        assert_eq!(
            conf.runtime_config.bandwidth,
            Some(Bandwidth {
                ingress_rate: 5,
                ingress_burst: 6,
                egress_rate: 7,
                egress_burst: 8
            })
        );
    }

    #[test]
    fn peek_version_is_lenient() {
        let table: [(&[u8], Option<&str>); 9] = [
            (
                br#"{"cniVersion":"0.4.0","name":"bad name"}"#,
                Some("0.4.0"),
            ),
            (br#"{"cniVersion":"9.9.9"}"#, Some("9.9.9")),
            (
                br#"{"name":"x","cniVersion" : "1.0.0", "type": broken"#,
                Some("1.0.0"),
            ),
            (br#"{"cniVersion": 4, "x": "#, None),
            (br#"{"cniVersion":"1.0.0\"#, None),
            (br#"{"cniVersion":3}"#, None),
            (b"[]", None),
            (b"", None),
            (b"\xff\xfe garbage", None),
        ];
        for (bytes, want) in table {
            assert_eq!(
                peek_version(bytes).as_deref(),
                want,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
