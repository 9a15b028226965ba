//! CNI spec versions wasmcni speaks, and the VERSION verb's answer.
//!
//! 0.3.0, 0.3.1 and 0.4.0 share one result format (with `ips[].version`); 1.0.0 dropped that
//! field; 1.1.0 added GC, STATUS and the interface/route attributes (spec §1.10 of the
//! reference). Older versions (0.1.0, 0.2.0) are refused with code 1.

use crate::error::CniError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A CNI specification version wasmcni supports, ordered oldest first.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.3.0: first version with the `interfaces`/`ips` result.
    V0_3_0,
    /// 0.3.1: same formats as 0.3.0.
    V0_3_1,
    /// 0.4.0: adds CHECK and `prevResult` on DEL.
    V0_4_0,
    /// 1.0.0: drops `ips[].version`, lists only.
    V1_0_0,
    /// 1.1.0: adds GC, STATUS, `cniVersions` and new interface/route attributes.
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, oldest first (the order of `supportedVersions`).
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest version wasmcni speaks.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The version as written in JSON, such as `"0.4.0"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parses an exact version string; anything else (older, newer, malformed) is a code 1
    /// error naming the version and listing the supported ones.
    pub fn parse(s: &str) -> Result<CniVersion, CniError> {
        CniVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| CniError::incompatible_version(s))
    }

    /// True when the CHECK verb exists in this version (0.4.0 and later).
    pub fn supports_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// True when the GC and STATUS verbs exist in this version (1.1.0 and later).
    pub fn supports_gc_and_status(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// True when results carry `ips[].version` (0.3.x and 0.4.0).
    pub fn has_ip_version_field(self) -> bool {
        self < CniVersion::V1_0_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = CniError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniVersion::parse(s)
    }
}

impl Serialize for CniVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CniVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        CniVersion::parse(&s).map_err(|e| serde::de::Error::custom(e.msg))
    }
}

/// The VERSION verb's answer: `{"cniVersion": <requested as given>, "supportedVersions":
/// ["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}`.
///
/// `requested` is echoed even when wasmcni does not support it, as the spec's VERSION output
/// describes; the runtime compares it against `supportedVersions` itself.
pub fn version_info(requested: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": requested,
        "supportedVersions": CniVersion::ALL.map(CniVersion::as_str),
    })
}

/// The VERSION answer as compact stdout bytes, keys in the order `cniVersion`,
/// `supportedVersions`.
pub fn version_info_bytes(requested: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct VersionInfo<'a> {
        #[serde(rename = "cniVersion")]
        cni_version: &'a str,
        #[serde(rename = "supportedVersions")]
        supported_versions: [&'static str; 5],
    }
    let info = VersionInfo {
        cni_version: requested,
        supported_versions: CniVersion::ALL.map(CniVersion::as_str),
    };
    // A struct of strings always serialises; the fallback keeps this total without a panic.
    serde_json::to_vec(&info).unwrap_or_default()
}

/// The version a VERSION request asks about: stdin's `cniVersion`, or [`CniVersion::LATEST`]
/// (`"1.1.0"`) when stdin is empty, not JSON or has no string `cniVersion`.
///
/// VERSION must not fail over its input: libcni and podman probe with minimal stdin, and Go's
/// skel ignores stdin for VERSION altogether.
pub fn requested_version(stdin: &[u8]) -> String {
    crate::netconf::peek_version(stdin).unwrap_or_else(|| CniVersion::LATEST.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_order_is_chronological() {
        for v in CniVersion::ALL {
            assert_eq!(CniVersion::parse(v.as_str()).unwrap(), v);
            assert_eq!(v.to_string().parse::<CniVersion>().unwrap(), v);
        }
        assert!(CniVersion::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(CniVersion::LATEST, CniVersion::V1_1_0);
    }

    #[test]
    fn unknown_versions_are_code_1_naming_them() {
        for bad in ["9.9.9", "0.2.0", "0.1.0", "1.1", "v1.1.0", "", "1.2.0"] {
            let e = CniVersion::parse(bad).unwrap_err();
            assert_eq!(e.code, 1, "{bad}");
            assert_eq!(
                e.msg,
                format!("unsupported cniVersion '{bad}': wasmcni supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0")
            );
        }
    }

    #[test]
    fn verb_support_by_version() {
        let table = [
            (CniVersion::V0_3_0, false, false, true),
            (CniVersion::V0_3_1, false, false, true),
            (CniVersion::V0_4_0, true, false, true),
            (CniVersion::V1_0_0, true, false, false),
            (CniVersion::V1_1_0, true, true, false),
        ];
        for (v, check, gc, ipver) in table {
            assert_eq!(v.supports_check(), check, "{v}");
            assert_eq!(v.supports_gc_and_status(), gc, "{v}");
            assert_eq!(v.has_ip_version_field(), ipver, "{v}");
        }
    }

    #[test]
    fn version_info_is_exact() {
        assert_eq!(
            version_info("0.4.0").to_string(),
            r#"{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
        assert_eq!(
            String::from_utf8(version_info_bytes("9.9.9")).unwrap(),
            r#"{"cniVersion":"9.9.9","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
    }

    #[test]
    fn requested_version_defaults_to_latest() {
        let table: [(&[u8], &str); 6] = [
            (br#"{"cniVersion":"0.3.1"}"#, "0.3.1"),
            (br#"{"cniVersion":"9.9.9"}"#, "9.9.9"),
            (b"", "1.1.0"),
            (b"{}", "1.1.0"),
            (br#"{"cniVersion":3}"#, "1.1.0"),
            (b"garbage", "1.1.0"),
        ];
        for (stdin, want) in table {
            assert_eq!(requested_version(stdin), want);
        }
    }

    #[test]
    fn serde_uses_the_version_string() {
        assert_eq!(
            serde_json::to_string(&CniVersion::V0_4_0).unwrap(),
            r#""0.4.0""#
        );
        assert_eq!(
            serde_json::from_str::<CniVersion>(r#""1.0.0""#).unwrap(),
            CniVersion::V1_0_0
        );
        assert!(serde_json::from_str::<CniVersion>(r#""2.0.0""#).is_err());
    }
}
