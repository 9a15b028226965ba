//! The protocol parameters of one CNI invocation (`CNI_*` environment variables, spec §2).
//!
//! Validation follows the spec, bent where real runtimes bend it (reference §1.2): libcni sets
//! every variable and leaves the inapplicable ones empty, containerd and `ctr` send DEL with an
//! empty `CNI_NETNS`, podman probes VERSION with `dummy` values, and `CNI_PATH` is never
//! required (wasmcni does not exec other plugins from it).

use crate::decode::{is_identifier, IDENTIFIER_PATTERN};
use crate::error::{codes, CniError};
use crate::version::CniVersion;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A CNI verb (`CNI_COMMAND`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    /// Attach a container to the network.
    Add,
    /// Detach a container; best effort and idempotent.
    Del,
    /// Verify an earlier ADD is still in place (0.4.0+).
    Check,
    /// Remove resources of attachments not in the valid list (1.1.0+).
    Gc,
    /// Report whether ADD can be served (1.1.0+).
    Status,
    /// Report the supported spec versions.
    Version,
}

impl Command {
    /// Every verb, in the order error messages list them.
    pub const ALL: [Command; 6] = [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Gc,
        Command::Status,
        Command::Version,
    ];

    /// The verb as in `CNI_COMMAND`, such as `"ADD"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    /// Parses a `CNI_COMMAND` value (exact, upper case); anything else is a code 4 error naming
    /// the value and the known verbs.
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Command::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Command::ALL.iter().map(|c| c.as_str()).collect();
                CniError::new(
                    codes::INVALID_ENVIRONMENT,
                    format!(
                        "unknown CNI_COMMAND '{s}': expected one of {}",
                        known.join(", ")
                    ),
                )
            })
    }

    /// True for verbs about one attachment (ADD, DEL, CHECK), which carry container ID,
    /// network namespace and interface name.
    pub fn is_attachment_verb(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    /// Checks that the configuration's `version` has this verb: CHECK needs 0.4.0, GC and
    /// STATUS need 1.1.0. Otherwise a code 1 error, as Go's skel answers.
    pub fn check_version(self, version: CniVersion) -> Result<(), CniError> {
        let (ok, needs) = match self {
            Command::Check => (version.supports_check(), CniVersion::V0_4_0),
            Command::Gc | Command::Status => (version.supports_gc_and_status(), CniVersion::V1_1_0),
            Command::Add | Command::Del | Command::Version => return Ok(()),
        };
        if ok {
            Ok(())
        } else {
            Err(CniError::new(
                codes::INCOMPATIBLE_VERSION,
                format!(
                    "config version {version} does not allow {self}: it needs cniVersion {needs} or later"
                ),
            ))
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Command {
    type Err = CniError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Command::parse(s)
    }
}

/// One invocation's protocol parameters, validated for its verb.
///
/// Serialisable (camelCase) because the shim forwards it to the daemon over a Unix socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniRequest {
    /// The verb.
    pub command: Command,
    /// `CNI_CONTAINERID`; `""` for GC, STATUS and VERSION, which have no attachment.
    pub container_id: String,
    /// `CNI_NETNS`; may be `""` on DEL (netns already gone), always `""` for GC, STATUS and
    /// VERSION.
    pub netns: String,
    /// `CNI_IFNAME`; `""` for GC, STATUS and VERSION.
    pub ifname: String,
    /// `CNI_ARGS` as `(key, value)` pairs in the order given.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH` as given; may be `""`.
    pub path: String,
}

const CONTAINER_ID: &str = "CNI_CONTAINERID";
const NETNS: &str = "CNI_NETNS";
const IFNAME: &str = "CNI_IFNAME";

/// Linux `IFNAMSIZ` minus the terminating NUL.
const MAX_IFNAME_BYTES: usize = 15;

impl CniRequest {
    /// Reads the `CNI_*` variables through `var` (so tests need no real environment) and
    /// validates them for the verb.
    ///
    /// * `CNI_COMMAND` missing or empty: code 4 naming it; unknown verb: code 4
    ///   `unknown CNI_COMMAND 'FOO': expected one of ...`.
    /// * ADD and CHECK need non-empty `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`; DEL needs
    ///   `CNI_CONTAINERID` and `CNI_IFNAME`. All missing variables are named in one code 4 error.
    /// * GC, STATUS and VERSION need nothing else; their container ID, netns and ifname are
    ///   ignored and left empty (libcni sends them empty, podman's VERSION probe sends `dummy`).
    /// * `CNI_CONTAINERID` must match `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`; `CNI_IFNAME` must be a
    ///   usable Linux name (at most 15 bytes, no `/`, `:` or whitespace, not `.` or `..`).
    /// * `CNI_ARGS` is parsed for every verb; a non-empty pair without `=` or with an empty
    ///   key is a code 4 error naming the pair. Empty pairs (`a=1;;b=2`, a trailing `;`) are
    ///   skipped, and a value may itself contain `=` (split at the first one).
    /// * `CNI_PATH` is never required.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<CniRequest, CniError> {
        let command_text = var("CNI_COMMAND").unwrap_or_default();
        if command_text.is_empty() {
            return Err(CniError::invalid_environment(
                &["CNI_COMMAND"],
                "required but missing or empty",
            ));
        }
        let command = Command::parse(&command_text)?;
        let args = parse_args(&var("CNI_ARGS").unwrap_or_default())?;
        let path = var("CNI_PATH").unwrap_or_default();

        if !command.is_attachment_verb() {
            return Ok(CniRequest {
                command,
                container_id: String::new(),
                netns: String::new(),
                ifname: String::new(),
                args,
                path,
            });
        }

        let request = CniRequest {
            command,
            container_id: var(CONTAINER_ID).unwrap_or_default(),
            netns: var(NETNS).unwrap_or_default(),
            ifname: var(IFNAME).unwrap_or_default(),
            args,
            path,
        };
        request.validate()?;
        Ok(request)
    }

    /// Checks the attachment parameters for the verb, as [`CniRequest::from_env`] does. The
    /// daemon calls it again on what arrives over its socket or from the pending-DEL spool:
    /// never trust a decoded request more than the environment it came from.
    pub fn validate(&self) -> Result<(), CniError> {
        let command = self.command;
        if !command.is_attachment_verb() {
            return Ok(());
        }
        let mut missing = Vec::new();
        if self.container_id.is_empty() {
            missing.push(CONTAINER_ID);
        }
        if self.netns.is_empty() && command != Command::Del {
            missing.push(NETNS);
        }
        if self.ifname.is_empty() {
            missing.push(IFNAME);
        }
        if !missing.is_empty() {
            return Err(CniError::invalid_environment(
                &missing,
                format!("required for {command} but missing or empty"),
            ));
        }
        let container_id = &self.container_id;
        if !is_identifier(container_id) {
            return Err(CniError::invalid_environment(
                &[CONTAINER_ID],
                format!("'{container_id}' is not a valid container ID: it must match {IDENTIFIER_PATTERN}"),
            ));
        }
        let ifname = &self.ifname;
        if let Err(why) = check_ifname(ifname) {
            return Err(CniError::invalid_environment(
                &[IFNAME],
                format!("'{ifname}' is not a usable interface name: {why}"),
            ));
        }
        Ok(())
    }

    /// The value of `CNI_ARGS` key `key`; when a key repeats, the last value wins, as in Go's
    /// `types.LoadArgs`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `(K8S_POD_NAMESPACE, K8S_POD_NAME)` when both are present and non-empty.
    pub fn k8s_pod(&self) -> Option<(&str, &str)> {
        let namespace = self.arg("K8S_POD_NAMESPACE").filter(|s| !s.is_empty())?;
        let name = self.arg("K8S_POD_NAME").filter(|s| !s.is_empty())?;
        Some((namespace, name))
    }
}

/// Parses `CNI_ARGS` (`K=V;K2=V2`), keeping order.
fn parse_args(text: &str) -> Result<Vec<(String, String)>, CniError> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            Some(_) => Err(CniError::invalid_environment(
                &["CNI_ARGS"],
                format!("pair '{pair}' has an empty key: expected K=V pairs separated by ';'"),
            )),
            None => Err(CniError::invalid_environment(
                &["CNI_ARGS"],
                format!("pair '{pair}' has no '=': expected K=V pairs separated by ';'"),
            )),
        })
        .collect()
}

/// Why `name` cannot be a Linux interface name (the kernel's `dev_valid_name` rules, which the
/// Go plugins' `ValidateInterfaceName` also applies).
fn check_ifname(name: &str) -> Result<(), String> {
    if name.len() > MAX_IFNAME_BYTES {
        return Err(format!(
            "it is {} bytes long, the limit is {MAX_IFNAME_BYTES}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are reserved".to_string());
    }
    if name.contains('/') {
        return Err("it must not contain '/'".to_string());
    }
    if name.contains(':') {
        return Err("it must not contain ':'".to_string());
    }
    if name.chars().any(char::is_whitespace) {
        return Err("it must not contain whitespace".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn request(vars: &[(&str, &str)]) -> Result<CniRequest, CniError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniRequest::from_env(|k| map.get(k).cloned())
    }

    const FULL: [(&str, &str); 6] = [
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", ""),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_COMMAND", "ADD"),
    ];

    fn with(
        command: &str,
        overrides: &[(&'static str, &'static str)],
    ) -> Vec<(&'static str, String)> {
        let mut vars: Vec<(&str, String)> = FULL
            .iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        vars.retain(|(k, _)| *k != "CNI_COMMAND");
        vars.push(("CNI_COMMAND", command.to_string()));
        vars.extend(overrides.iter().map(|(k, v)| (*k, v.to_string())));
        vars
    }

    fn run(vars: &[(&str, String)]) -> Result<CniRequest, CniError> {
        let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(&borrowed)
    }

    #[test]
    fn verbs_and_their_required_variables() {
        // (command, overrides, Ok(()) or Err((code, message substring)))
        type Case = (
            &'static str,
            Vec<(&'static str, &'static str)>,
            Result<(), (u32, &'static str)>,
        );
        let table: Vec<Case> = vec![
            ("ADD", vec![], Ok(())),
            ("CHECK", vec![], Ok(())),
            ("DEL", vec![], Ok(())),
            ("DEL", vec![("CNI_NETNS", "")], Ok(())),
            ("GC", vec![("CNI_CONTAINERID", ""), ("CNI_NETNS", ""), ("CNI_IFNAME", ""), ("CNI_PATH", "")], Ok(())),
            ("STATUS", vec![("CNI_CONTAINERID", ""), ("CNI_NETNS", ""), ("CNI_IFNAME", "")], Ok(())),
            ("VERSION", vec![("CNI_CONTAINERID", ""), ("CNI_NETNS", "dummy"), ("CNI_IFNAME", "dummy")], Ok(())),
            ("ADD", vec![("CNI_PATH", "")], Ok(())),
            ("ADD", vec![("CNI_NETNS", "")], Err((4, "CNI_NETNS: required for ADD but missing or empty"))),
            ("CHECK", vec![("CNI_NETNS", "")], Err((4, "CNI_NETNS: required for CHECK"))),
            (
                "ADD",
                vec![("CNI_CONTAINERID", ""), ("CNI_NETNS", ""), ("CNI_IFNAME", "")],
                Err((4, "CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME: required for ADD but missing or empty")),
            ),
            (
                "DEL",
                vec![("CNI_CONTAINERID", ""), ("CNI_NETNS", ""), ("CNI_IFNAME", "")],
                Err((4, "CNI_CONTAINERID, CNI_IFNAME: required for DEL but missing or empty")),
            ),
            ("FOO", vec![], Err((4, "unknown CNI_COMMAND 'FOO': expected one of ADD, DEL, CHECK, GC, STATUS, VERSION"))),
            ("add", vec![], Err((4, "unknown CNI_COMMAND 'add'"))),
            ("", vec![], Err((4, "CNI_COMMAND: required but missing or empty"))),
            (
                "ADD",
                vec![("CNI_CONTAINERID", "-bad id")],
                Err((4, "CNI_CONTAINERID: '-bad id' is not a valid container ID: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")),
            ),
            ("DEL", vec![("CNI_CONTAINERID", "a/b")], Err((4, "'a/b' is not a valid container ID"))),
            ("ADD", vec![("CNI_IFNAME", "eth/0")], Err((4, "CNI_IFNAME: 'eth/0' is not a usable interface name: it must not contain '/'"))),
            ("ADD", vec![("CNI_IFNAME", "a234567890123456")], Err((4, "'a234567890123456' is not a usable interface name: it is 16 bytes long, the limit is 15"))),
            ("ADD", vec![("CNI_IFNAME", "a23456789012345")], Ok(())),
            ("ADD", vec![("CNI_IFNAME", "eth 0")], Err((4, "must not contain whitespace"))),
            ("ADD", vec![("CNI_IFNAME", "eth0:1")], Err((4, "must not contain ':'"))),
            ("DEL", vec![("CNI_IFNAME", ".")], Err((4, "CNI_IFNAME: '.' is not a usable interface name"))),
            ("CHECK", vec![("CNI_IFNAME", "..")], Err((4, "'.' and '..' are reserved"))),
            ("ADD", vec![("CNI_ARGS", "IgnoreUnknown=1;broken")], Err((4, "CNI_ARGS: pair 'broken' has no '='"))),
            ("GC", vec![("CNI_ARGS", "=v")], Err((4, "CNI_ARGS: pair '=v' has an empty key"))),
        ];
        for (command, overrides, want) in table {
            let got = run(&with(command, &overrides));
            match (got, want) {
                (Ok(req), Ok(())) => assert_eq!(req.command.as_str(), command),
                (Err(e), Err((code, substring))) => {
                    assert_eq!(e.code, code, "{command} {overrides:?}: {e}");
                    assert!(
                        e.msg.contains(substring),
                        "{command} {overrides:?}: {:?} lacks {substring:?}",
                        e.msg
                    );
                }
                (got, want) => panic!("{command} {overrides:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn missing_command_variable_is_named() {
        let e = request(&[]).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (4, "CNI_COMMAND: required but missing or empty")
        );
    }

    #[test]
    fn fields_are_kept_for_attachment_verbs_and_blanked_otherwise() {
        let add = run(&with("ADD", &[])).unwrap();
        assert_eq!(
            add,
            CniRequest {
                command: Command::Add,
                container_id: "abc123".into(),
                netns: "/run/netns/x".into(),
                ifname: "eth0".into(),
                args: vec![],
                path: "/opt/cni/bin".into(),
            }
        );
        let del = run(&with("DEL", &[("CNI_NETNS", "")])).unwrap();
        assert_eq!(del.netns, "");
        let version = run(&with(
            "VERSION",
            &[
                ("CNI_NETNS", "dummy"),
                ("CNI_IFNAME", "dummy"),
                ("CNI_PATH", "dummy"),
            ],
        ))
        .unwrap();
        assert_eq!(
            (
                version.container_id.as_str(),
                version.netns.as_str(),
                version.ifname.as_str()
            ),
            ("", "", "")
        );
        assert_eq!(version.path, "dummy");
        // Only CNI_COMMAND is needed for the non-attachment verbs.
        for verb in ["GC", "STATUS", "VERSION"] {
            let req = request(&[("CNI_COMMAND", verb)]).unwrap();
            assert_eq!(req.command.as_str(), verb);
            assert_eq!(req.path, "");
        }
    }

    #[test]
    fn cni_args_parse_in_order_and_k8s_pod_needs_both() {
        let req = run(&with(
            "ADD",
            &[("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;X=a=b;")],
        ))
        .unwrap();
        let pairs: Vec<(&str, &str)> = req
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("IgnoreUnknown", "1"),
                ("K8S_POD_NAMESPACE", "ns"),
                ("K8S_POD_NAME", "p"),
                ("K8S_POD_INFRA_CONTAINER_ID", "abc"),
                ("X", "a=b"),
            ]
        );
        assert_eq!(req.arg("K8S_POD_NAME"), Some("p"));
        assert_eq!(req.arg("X"), Some("a=b"));
        assert_eq!(req.arg("missing"), None);
        assert_eq!(req.k8s_pod(), Some(("ns", "p")));

        let podman = run(&with(
            "ADD",
            &[("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web")],
        ))
        .unwrap();
        assert_eq!(podman.k8s_pod(), None);
        let empty_ns = run(&with(
            "ADD",
            &[("CNI_ARGS", "K8S_POD_NAMESPACE=;K8S_POD_NAME=p")],
        ))
        .unwrap();
        assert_eq!(empty_ns.k8s_pod(), None);
        let repeated = run(&with("ADD", &[("CNI_ARGS", "A=1;A=2")])).unwrap();
        assert_eq!(repeated.arg("A"), Some("2"));
    }

    #[test]
    fn command_version_gates() {
        assert!(Command::Check.check_version(CniVersion::V0_4_0).is_ok());
        let e = Command::Check
            .check_version(CniVersion::V0_3_1)
            .unwrap_err();
        assert_eq!(e.code, 1);
        assert_eq!(
            e.msg,
            "config version 0.3.1 does not allow CHECK: it needs cniVersion 0.4.0 or later"
        );
        assert_eq!(
            Command::Gc
                .check_version(CniVersion::V1_0_0)
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(
            Command::Status
                .check_version(CniVersion::V0_4_0)
                .unwrap_err()
                .code,
            1
        );
        assert!(Command::Gc.check_version(CniVersion::V1_1_0).is_ok());
        assert!(Command::Add.check_version(CniVersion::V0_3_0).is_ok());
        assert!(Command::Del.check_version(CniVersion::V0_3_0).is_ok());
    }

    #[test]
    fn request_serde_is_camel_case_and_round_trips() {
        let req = run(&with(
            "DEL",
            &[("CNI_NETNS", ""), ("CNI_ARGS", "K8S_POD_NAME=p")],
        ))
        .unwrap();
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"command":"DEL","containerId":"abc123","netns":"","ifname":"eth0","args":[["K8S_POD_NAME","p"]],"path":"/opt/cni/bin"}"#
        );
        assert_eq!(serde_json::from_str::<CniRequest>(&text).unwrap(), req);
        for c in Command::ALL {
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
            assert_eq!(c.as_str().parse::<Command>().unwrap(), c);
        }
    }
}
