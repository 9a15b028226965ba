//! The CNI error object (spec §5 "Error") and the codes wasmcni answers with.
//!
//! Every failure a runtime can see leaves wasmcni as one [`CniError`], printed on stdout by
//! [`CniError::to_stdout_bytes`] (libcni reads errors from stdout first; logs go to stderr).

use crate::version::CniVersion;
use serde::{Deserialize, Serialize};
use std::fmt::Display;

/// Error codes: 0-99 are the spec's well-known codes, 100 and up are wasmcni's own.
pub mod codes {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration; the message names key and value.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist; the runtime need not call DEL.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables; the message names them.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure, such as failing to read stdin.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (JSON).
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Transient failure; the runtime may retry.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: the plugin cannot serve ADD and existing containers may have limited connectivity.
    pub const NOT_AVAILABLE_DEGRADED: u32 = 51;
    /// wasmcni: programming the data path (links, addresses, routes, rules) failed.
    pub const DATAPATH_FAILURE: u32 = 100;
    /// wasmcni: no free address in the node's IP pool.
    pub const POOL_EXHAUSTED: u32 = 101;
    /// wasmcni: reading or writing the node datastore failed.
    pub const DATASTORE_FAILURE: u32 = 102;
    /// wasmcni: ADD for a (container ID, ifname) pair that is already attached.
    pub const ATTACHMENT_EXISTS: u32 = 103;
    /// wasmcni: CHECK found the attachment missing or different from the ADD result.
    pub const CHECK_FAILED: u32 = 104;
    /// wasmcni: the shim and the daemon could not talk (socket, framing, protocol version).
    pub const PROTOCOL_FAILURE: u32 = 105;
    /// A plugin failed (trap, resource limit, refusal) or proposed something the host refused.
    pub const PLUGIN_FAILURE: u32 = 106;
    /// A policy hook denied the attachment; the message names the hook and its reason.
    pub const POLICY_DENIED: u32 = 107;
    /// wasmcni: the runtime asked for an address (the `ips` capability, `CNI_ARGS` `IP=`) the
    /// pool cannot give: held, outside the pool, excluded; the message says which.
    pub const REQUESTED_ADDRESS_UNAVAILABLE: u32 = 108;
    /// wasmcni: a bug; the message says where.
    pub const INTERNAL: u32 = 199;
}

/// A CNI error: a code from [`codes`], a message naming the offending value, optional details.
///
/// Its serde form is the Go `types.Error` shape (`code`, `msg`, `details`), which is also what
/// travels between the shim and the daemon; the form printed for runtimes, with `cniVersion`
/// first, comes from [`CniError::to_stdout_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("CNI error {code}: {msg}")]
pub struct CniError {
    /// The error code, see [`codes`].
    pub code: u32,
    /// A one-line message saying what was wrong, with the offending value.
    pub msg: String,
    /// Longer details (such as an underlying error), when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// The error object as printed on stdout, in the spec's key order.
#[derive(Serialize)]
struct ErrorOut<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a str>,
}

impl CniError {
    /// An error with `code` and `msg` and no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    /// The same error with `details` attached (replacing any earlier details).
    pub fn with_details(self, details: impl Into<String>) -> Self {
        CniError {
            details: Some(details.into()),
            ..self
        }
    }

    /// Code 1: the runtime asked for `requested`, which wasmcni does not speak.
    pub fn incompatible_version(requested: &str) -> Self {
        let supported: Vec<&str> = CniVersion::ALL.iter().map(|v| v.as_str()).collect();
        CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!(
                "unsupported cniVersion '{requested}': wasmcni supports {}",
                supported.join(", ")
            ),
        )
    }

    /// Code 2: the configuration sets `key` to `value`, which wasmcni does not support.
    pub fn unsupported_field(key: &str, value: &str) -> Self {
        CniError::new(
            codes::UNSUPPORTED_FIELD,
            format!("unsupported field '{key}' with value '{value}'"),
        )
    }

    /// Code 3: the container is unknown or gone.
    pub fn unknown_container(msg: impl Into<String>) -> Self {
        CniError::new(codes::UNKNOWN_CONTAINER, msg)
    }

    /// Code 4: the variables in `missing_or_bad` are missing or invalid because of `why`.
    ///
    /// The message is `"NAME1, NAME2: why"`, so it always names the variables, as the spec
    /// demands.
    pub fn invalid_environment(missing_or_bad: &[&str], why: impl Display) -> Self {
        CniError::new(
            codes::INVALID_ENVIRONMENT,
            format!("{}: {why}", missing_or_bad.join(", ")),
        )
    }

    /// Code 5: an I/O operation (such as reading stdin) failed.
    pub fn io_failure(msg: impl Into<String>) -> Self {
        CniError::new(codes::IO_FAILURE, msg)
    }

    /// Code 6: `what` could not be decoded; `err` says where and why.
    pub fn decode(what: &str, err: impl Display) -> Self {
        CniError::new(
            codes::DECODE_FAILURE,
            format!("failed to decode {what}: {err}"),
        )
    }

    /// Code 7: the network configuration is invalid.
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        CniError::new(codes::INVALID_CONFIG, msg)
    }

    /// Code 11: a transient failure; the runtime may retry later.
    pub fn try_again_later(msg: impl Into<String>) -> Self {
        CniError::new(codes::TRY_AGAIN_LATER, msg)
    }

    /// Code 50: STATUS answer when the plugin cannot serve ADD.
    pub fn not_available(msg: impl Into<String>) -> Self {
        CniError::new(codes::NOT_AVAILABLE, msg)
    }

    /// Code 51: STATUS answer when the plugin cannot serve ADD and existing containers may have
    /// limited connectivity.
    pub fn not_available_degraded(msg: impl Into<String>) -> Self {
        CniError::new(codes::NOT_AVAILABLE_DEGRADED, msg)
    }

    /// Code 199: a bug in wasmcni.
    pub fn internal(msg: impl Into<String>) -> Self {
        CniError::new(codes::INTERNAL, msg)
    }

    /// The error object printed on stdout: `{"cniVersion", "code", "msg", "details"?}`.
    ///
    /// A `serde_json::Value` map sorts its keys; use [`CniError::to_stdout_bytes`] for the
    /// spec's key order.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert("cniVersion".into(), cni_version.into());
        map.insert("code".into(), self.code.into());
        map.insert("msg".into(), self.msg.as_str().into());
        if let Some(details) = &self.details {
            map.insert("details".into(), details.as_str().into());
        }
        serde_json::Value::Object(map)
    }

    /// Compact JSON for stdout with keys in the order `cniVersion`, `code`, `msg`, `details`.
    pub fn to_stdout_bytes(&self, cni_version: &str) -> Vec<u8> {
        let out = ErrorOut {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: self.details.as_deref(),
        };
        // Serialising a struct of strings and integers into memory cannot fail; the fallback
        // keeps the function total without a panic path.
        serde_json::to_vec(&out).unwrap_or_else(|_| {
            format!(
                "{{\"cniVersion\":\"{}\",\"code\":{},\"msg\":\"unprintable error\"}}",
                CniVersion::LATEST,
                self.code
            )
            .into_bytes()
        })
    }

    /// Parses an error object a plugin printed on stdout (any of the spec's or Go's shapes;
    /// `cniVersion` is ignored).
    pub fn from_stdout_bytes(bytes: &[u8]) -> Result<CniError, CniError> {
        serde_json::from_slice(bytes).map_err(|e| CniError::decode("plugin error object", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stdout_bytes_of_every_code_are_exact() {
        let table: Vec<(CniError, &str)> = vec![
            (
                CniError::incompatible_version("9.9.9"),
                r#"{"cniVersion":"1.1.0","code":1,"msg":"unsupported cniVersion '9.9.9': wasmcni supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"}"#,
            ),
            (
                CniError::unsupported_field("ipMasq", "yes"),
                r#"{"cniVersion":"1.1.0","code":2,"msg":"unsupported field 'ipMasq' with value 'yes'"}"#,
            ),
            (
                CniError::unknown_container("container abc is gone"),
                r#"{"cniVersion":"1.1.0","code":3,"msg":"container abc is gone"}"#,
            ),
            (
                CniError::invalid_environment(
                    &["CNI_NETNS", "CNI_IFNAME"],
                    "required for ADD but missing or empty",
                ),
                r#"{"cniVersion":"1.1.0","code":4,"msg":"CNI_NETNS, CNI_IFNAME: required for ADD but missing or empty"}"#,
            ),
            (
                CniError::io_failure("reading stdin: broken pipe"),
                r#"{"cniVersion":"1.1.0","code":5,"msg":"reading stdin: broken pipe"}"#,
            ),
            (
                CniError::decode("network configuration", "expected value at line 1 column 1"),
                r#"{"cniVersion":"1.1.0","code":6,"msg":"failed to decode network configuration: expected value at line 1 column 1"}"#,
            ),
            (
                CniError::invalid_config("name: missing"),
                r#"{"cniVersion":"1.1.0","code":7,"msg":"name: missing"}"#,
            ),
            (
                CniError::try_again_later("datastore busy"),
                r#"{"cniVersion":"1.1.0","code":11,"msg":"datastore busy"}"#,
            ),
            (
                CniError::not_available("daemon not running"),
                r#"{"cniVersion":"1.1.0","code":50,"msg":"daemon not running"}"#,
            ),
            (
                CniError::not_available_degraded("data path broken"),
                r#"{"cniVersion":"1.1.0","code":51,"msg":"data path broken"}"#,
            ),
            (
                CniError::new(codes::DATAPATH_FAILURE, "veth"),
                r#"{"cniVersion":"1.1.0","code":100,"msg":"veth"}"#,
            ),
            (
                CniError::new(codes::POOL_EXHAUSTED, "no IPs"),
                r#"{"cniVersion":"1.1.0","code":101,"msg":"no IPs"}"#,
            ),
            (
                CniError::new(codes::DATASTORE_FAILURE, "db"),
                r#"{"cniVersion":"1.1.0","code":102,"msg":"db"}"#,
            ),
            (
                CniError::new(codes::ATTACHMENT_EXISTS, "dup"),
                r#"{"cniVersion":"1.1.0","code":103,"msg":"dup"}"#,
            ),
            (
                CniError::new(codes::CHECK_FAILED, "gone"),
                r#"{"cniVersion":"1.1.0","code":104,"msg":"gone"}"#,
            ),
            (
                CniError::new(codes::PROTOCOL_FAILURE, "socket"),
                r#"{"cniVersion":"1.1.0","code":105,"msg":"socket"}"#,
            ),
            (
                CniError::internal("bug").with_details("at x.rs:1\n\"quoted\""),
                r#"{"cniVersion":"1.1.0","code":199,"msg":"bug","details":"at x.rs:1\n\"quoted\""}"#,
            ),
        ];
        for (err, want) in table {
            let got = String::from_utf8(err.to_stdout_bytes("1.1.0")).unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn stdout_bytes_use_the_given_version_and_key_order_with_details() {
        let err = CniError::invalid_config("bad").with_details("more");
        assert_eq!(
            String::from_utf8(err.to_stdout_bytes("0.4.0")).unwrap(),
            r#"{"cniVersion":"0.4.0","code":7,"msg":"bad","details":"more"}"#
        );
    }

    #[test]
    fn to_json_holds_the_same_fields() {
        let err = CniError::try_again_later("busy").with_details("d");
        assert_eq!(
            err.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 11, "msg": "busy", "details": "d"})
        );
        assert_eq!(
            CniError::new(5, "x").to_json("0.3.1"),
            json!({"cniVersion": "0.3.1", "code": 5, "msg": "x"})
        );
    }

    #[test]
    fn serde_form_is_go_shape_and_round_trips() {
        let err = CniError::new(7, "m").with_details("d");
        let text = serde_json::to_string(&err).unwrap();
        assert_eq!(text, r#"{"code":7,"msg":"m","details":"d"}"#);
        assert_eq!(serde_json::from_str::<CniError>(&text).unwrap(), err);
        let plain = CniError::new(3, "m");
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"code":3,"msg":"m"}"#
        );
    }

    #[test]
    fn parses_plugin_error_objects_from_stdout() {
        let go = br#"{"code":999,"msg":"failed to set up","details":"x"}"#;
        assert_eq!(
            CniError::from_stdout_bytes(go).unwrap(),
            CniError::new(999, "failed to set up").with_details("x")
        );
        let spec =
            br#"{"cniVersion":"1.0.0","code":4,"msg":"required env variables [CNI_PATH] missing"}"#;
        assert_eq!(CniError::from_stdout_bytes(spec).unwrap().code, 4);
        assert_eq!(
            CniError::from_stdout_bytes(b"panic: boom")
                .unwrap_err()
                .code,
            6
        );
    }

    #[test]
    fn display_names_code_and_message() {
        assert_eq!(CniError::new(7, "bad").to_string(), "CNI error 7: bad");
    }
}
