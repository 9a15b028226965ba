//! `cluster-tags`: the tags of every new ENI — which cluster and instance it belongs to, when it
//! was created, and the extra tags an operator configures (VPC CNI's `ADDITIONAL_ENI_TAGS`).
//!
//! Settings (`[plugins.config]`, every value a string):
//!
//! | key | meaning |
//! |---|---|
//! | `"tag.<Key>"` | one extra tag `<Key>` = the value, e.g. `"tag.team" = "payments"` (quote the whole TOML key: unquoted, the dot would make a nested table) |
//! | `ADDITIONAL_ENI_TAGS` | a JSON object of extra tags, as VPC CNI takes it, for migration: `'{"team": "payments"}'`; a `tag.<Key>` setting for the same key wins |
//!
//! Always written: `wasmcni.io/cluster` (the daemon's cluster name; omitted when it has none),
//! `wasmcni.io/instance-id` and `wasmcni.io/created-at` (RFC 3339, UTC, whole seconds). An extra
//! tag may not replace one of these.
//!
//! The daemon refuses the whole answer of a tagger that returns a reserved key, so this plugin
//! drops reserved extra keys itself, with a warning, as VPC CNI does: `aws:*` keys (EC2 refuses
//! them) and keys containing `k8s.amazonaws.com` (the daemon writes its own ownership tags).
//! Anything else EC2 would refuse — an empty or over-long key or value, more than 50 tags, an
//! unknown setting, `ADDITIONAL_ENI_TAGS` that is not a JSON object of strings — is an error
//! naming the offending setting: `init` finds it when the daemon loads the plugin, which refuses
//! the load.
//!
//! The plugin entry's `tag_keys` must list the three built-in keys and every extra key, exactly
//! (no patterns). The daemon's own ownership tags count toward EC2's 50 as well: it refuses an
//! answer that leaves no room for them, so keep well under 47 extra tags.

use std::collections::BTreeMap;

use wasmcni_plugin_sdk::tagger::{clock, config, log, EniRequest, Guest, Pair};

/// The key of the cluster-name tag.
pub const CLUSTER_KEY: &str = "wasmcni.io/cluster";
/// The key of the instance-id tag.
pub const INSTANCE_KEY: &str = "wasmcni.io/instance-id";
/// The key of the creation-time tag.
pub const CREATED_AT_KEY: &str = "wasmcni.io/created-at";
/// The settings prefix of one extra tag.
pub const TAG_PREFIX: &str = "tag.";
/// The setting VPC CNI users already have: a JSON object of extra tags.
pub const ADDITIONAL_ENI_TAGS: &str = "ADDITIONAL_ENI_TAGS";

/// Tags per ENI EC2 accepts (and the daemon enforces).
pub const MAX_TAGS: usize = 50;
/// Longest tag key, in characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest tag value, in characters.
pub const MAX_VALUE_CHARS: usize = 256;

/// What [`tags_for`] decided: the tags, and the warnings to log about extra tags it dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct Tagging {
    /// The built-in tags first, then the extra tags by key.
    pub tags: Vec<(String, String)>,
    /// One line per extra tag dropped, naming it and why.
    pub warnings: Vec<String>,
}

/// The tags of a new ENI for `request`, created at `now_ms` (Unix milliseconds), with the
/// plugin's `settings`.
pub fn tags_for(
    request: &EniRequest,
    now_ms: u64,
    settings: &[(String, String)],
) -> Result<Tagging, String> {
    let mut tags = Vec::new();
    if !request.cluster_name.is_empty() {
        tags.push((CLUSTER_KEY.to_string(), request.cluster_name.clone()));
    }
    tags.push((INSTANCE_KEY.to_string(), request.instance_id.clone()));
    tags.push((CREATED_AT_KEY.to_string(), rfc3339_utc(now_ms)));

    let mut warnings = Vec::new();
    for (key, value) in extra_tags(settings, &mut warnings)? {
        if is_builtin(&key) {
            warnings.push(format!(
                "extra tag {key:?} dropped: cluster-tags writes this key itself"
            ));
        } else if is_reserved(&key) {
            warnings.push(format!(
                "extra tag {key:?} dropped: keys starting with `aws:` or containing \
                 `k8s.amazonaws.com` are reserved"
            ));
        } else {
            tags.push((key, value));
        }
    }
    for (key, value) in &tags {
        check_tag(key, value)?;
    }
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "{} tags configured, EC2 allows {MAX_TAGS} per ENI (3 are built in): remove some \
             `tag.<Key>` / ADDITIONAL_ENI_TAGS entries",
            tags.len()
        ));
    }
    Ok(Tagging { tags, warnings })
}

/// The extra tags of the settings by key: `ADDITIONAL_ENI_TAGS`, then `tag.<Key>` over it.
fn extra_tags(
    settings: &[(String, String)],
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut extra = BTreeMap::new();
    if let Some((_, json)) = settings.iter().find(|(k, _)| k == ADDITIONAL_ENI_TAGS) {
        extra = serde_json::from_str::<BTreeMap<String, String>>(json).map_err(|e| {
            format!(
                "setting {ADDITIONAL_ENI_TAGS} = {json:?} is not a JSON object of string \
                 values ({e}); example: '{{\"team\": \"payments\"}}'"
            )
        })?;
    }
    for (key, value) in settings {
        if key == ADDITIONAL_ENI_TAGS {
            continue;
        }
        let tag_key = key.strip_prefix(TAG_PREFIX).ok_or_else(|| {
            format!(
                "unknown setting {key:?}: cluster-tags reads `\"tag.<Key>\" = \"<value>\"` and \
                 {ADDITIONAL_ENI_TAGS}"
            )
        })?;
        if let Some(old) = extra.insert(tag_key.to_string(), value.clone()) {
            if old != *value {
                warnings.push(format!(
                    "extra tag {tag_key:?}: setting {key:?} = {value:?} replaces \
                     {ADDITIONAL_ENI_TAGS}'s {old:?}"
                ));
            }
        }
    }
    Ok(extra)
}

fn is_builtin(key: &str) -> bool {
    [CLUSTER_KEY, INSTANCE_KEY, CREATED_AT_KEY].contains(&key)
}

/// Whether the daemon refuses `key` whatever the grant says (the rule of the SDK's
/// `tagger::is_reserved`, spelled out here so the tests run natively).
pub fn is_reserved(key: &str) -> bool {
    key.to_ascii_lowercase().starts_with("aws:") || key.contains("k8s.amazonaws.com")
}

/// EC2's rules for one tag: a key of 1 to 128 characters, a value of at most 256.
fn check_tag(key: &str, value: &str) -> Result<(), String> {
    let key_chars = key.chars().count();
    if key_chars == 0 || key_chars > MAX_KEY_CHARS {
        return Err(format!(
            "tag key {key:?} has {key_chars} characters; EC2 accepts 1 to {MAX_KEY_CHARS}"
        ));
    }
    let value_chars = value.chars().count();
    if value_chars > MAX_VALUE_CHARS {
        return Err(format!(
            "the value of tag {key:?} has {value_chars} characters; EC2 accepts at most \
             {MAX_VALUE_CHARS}"
        ));
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix milliseconds (what Go's `time.RFC3339` gives in UTC, the
/// format of VPC CNI's `createdAt` tag).
pub fn rfc3339_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, second_of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

struct ClusterTags;

/// The plugin's settings as pairs.
fn settings() -> Vec<(String, String)> {
    config::all()
        .into_iter()
        .map(|pair| (pair.key, pair.value))
        .collect()
}

impl Guest for ClusterTags {
    /// Checks the settings by tagging an example ENI of a named cluster (every key and value the
    /// settings add is the same for any ENI, and the cluster tag counts toward EC2's 50), so a
    /// misconfiguration refuses the load rather than the first ENI.
    fn init() -> Result<(), String> {
        let example = EniRequest {
            instance_id: "i-00000000000000000".into(),
            instance_type: String::new(),
            availability_zone: String::new(),
            subnet_id: String::new(),
            cluster_name: "example".into(),
        };
        tags_for(&example, 0, &settings()).map(drop)
    }

    fn tags(request: EniRequest) -> Result<Vec<Pair>, String> {
        let tagging = tags_for(&request, clock::now_unix_ms(), &settings())?;
        for warning in &tagging.warnings {
            log::log(log::Level::Warn, warning);
        }
        Ok(tagging
            .tags
            .into_iter()
            .map(|(key, value)| Pair { key, value })
            .collect())
    }
}

wasmcni_plugin_sdk::tagger::export_tagger!(ClusterTags);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cluster_name: &str) -> EniRequest {
        EniRequest {
            instance_id: "i-0123456789abcdef0".into(),
            instance_type: "m5.large".into(),
            availability_zone: "eu-west-1a".into(),
            subnet_id: "subnet-0abc".into(),
            cluster_name: cluster_name.into(),
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pairs(tags: &[(&str, &str)]) -> Vec<(String, String)> {
        settings(tags)
    }

    // 2024-02-29T12:34:56Z
    const LEAP_DAY_MS: u64 = 1_709_210_096_789;

    #[test]
    fn rfc3339_dates() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (999, "1970-01-01T00:00:00Z"),
            (86_399_000, "1970-01-01T23:59:59Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (978_307_199_000, "2000-12-31T23:59:59Z"),
            (LEAP_DAY_MS, "2024-02-29T12:34:56Z"),
            (1_709_251_200_000, "2024-03-01T00:00:00Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00Z"),
            (253_402_300_799_000, "9999-12-31T23:59:59Z"),
        ];
        for (ms, text) in cases {
            assert_eq!(rfc3339_utc(ms), text, "{ms} ms");
        }
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            cluster: &'static str,
            settings: &'static [(&'static str, &'static str)],
            tags: &'static [(&'static str, &'static str)],
            warnings: usize,
        }
        let builtin = [
            (CLUSTER_KEY, "prod"),
            (INSTANCE_KEY, "i-0123456789abcdef0"),
            (CREATED_AT_KEY, "2024-02-29T12:34:56Z"),
        ];
        let cases = [
            Case {
                name: "built-in tags only",
                cluster: "prod",
                settings: &[],
                tags: &[],
                warnings: 0,
            },
            Case {
                name: "tag.<Key> settings, sorted by key",
                cluster: "prod",
                settings: &[("tag.team", "payments"), ("tag.cost-center", "42")],
                tags: &[("cost-center", "42"), ("team", "payments")],
                warnings: 0,
            },
            Case {
                name: "ADDITIONAL_ENI_TAGS, as VPC CNI takes it",
                cluster: "prod",
                settings: &[(
                    ADDITIONAL_ENI_TAGS,
                    r#"{"team": "payments", "env": "prod"}"#,
                )],
                tags: &[("env", "prod"), ("team", "payments")],
                warnings: 0,
            },
            Case {
                name: "tag.<Key> wins over ADDITIONAL_ENI_TAGS, with a warning",
                cluster: "prod",
                settings: &[
                    (
                        ADDITIONAL_ENI_TAGS,
                        r#"{"team": "payments", "env": "prod"}"#,
                    ),
                    ("tag.team", "search"),
                ],
                tags: &[("env", "prod"), ("team", "search")],
                warnings: 1,
            },
            Case {
                name: "reserved keys dropped with a warning, as VPC CNI does",
                cluster: "prod",
                settings: &[
                    (
                        ADDITIONAL_ENI_TAGS,
                        r#"{"node.k8s.amazonaws.com/instance_id": "i-x", "team": "payments"}"#,
                    ),
                    ("tag.aws:cloudformation:stack-name", "stack"),
                    ("tag.AWS:other", "x"),
                    ("tag.cluster.k8s.amazonaws.com/name", "prod"),
                ],
                tags: &[("team", "payments")],
                warnings: 4,
            },
            Case {
                name: "an extra tag cannot replace a built-in one",
                cluster: "prod",
                settings: &[("tag.wasmcni.io/cluster", "other")],
                tags: &[],
                warnings: 1,
            },
            Case {
                name: "an empty value is a valid tag",
                cluster: "prod",
                settings: &[("tag.owner", "")],
                tags: &[("owner", "")],
                warnings: 0,
            },
        ];
        for case in cases {
            let tagging = tags_for(
                &request(case.cluster),
                LEAP_DAY_MS,
                &settings(case.settings),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let mut expected = pairs(&builtin);
            expected.extend(pairs(case.tags));
            assert_eq!(tagging.tags, expected, "{}", case.name);
            assert_eq!(
                tagging.warnings.len(),
                case.warnings,
                "{}: {:?}",
                case.name,
                tagging.warnings
            );
        }
    }

    #[test]
    fn no_cluster_tag_without_a_cluster_name() {
        let tagging = tags_for(&request(""), LEAP_DAY_MS, &[]).unwrap();
        let keys: Vec<&str> = tagging.tags.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, [INSTANCE_KEY, CREATED_AT_KEY]);
    }

    #[test]
    fn no_answer_carries_a_reserved_key() {
        let hostile = settings(&[
            (
                ADDITIONAL_ENI_TAGS,
                r#"{"k8s.amazonaws.com/role": "x", "aws:x": "y"}"#,
            ),
            ("tag.eks:eni:owner", "amazon-vpc-cni"),
            ("tag.x.k8s.amazonaws.com", "y"),
        ]);
        let tagging = tags_for(&request("prod"), 0, &hostile).unwrap();
        assert!(tagging.tags.iter().all(|(k, _)| !is_reserved(k)));
        assert!(tagging.tags.iter().any(|(k, _)| k == "eks:eni:owner"));
    }

    #[test]
    fn errors_name_the_offending_setting() {
        let long_key = format!("tag.{}", "k".repeat(129));
        let long_value = "v".repeat(257);
        let too_many: Vec<(String, String)> = (0..48)
            .map(|i| (format!("tag.t{i:02}"), "x".to_string()))
            .collect();
        let cases: Vec<(Vec<(String, String)>, &str)> = vec![
            (
                settings(&[(ADDITIONAL_ENI_TAGS, "team=payments")]),
                "not a JSON object",
            ),
            (
                settings(&[(ADDITIONAL_ENI_TAGS, r#"{"n": 1}"#)]),
                "not a JSON object",
            ),
            (settings(&[("TAGS", "x")]), "unknown setting \"TAGS\""),
            (settings(&[("tag.", "x")]), "1 to 128"),
            (settings(&[(long_key.as_str(), "x")]), "129 characters"),
            (
                settings(&[("tag.team", long_value.as_str())]),
                "257 characters",
            ),
            (too_many, "51 tags configured"),
        ];
        for (settings, needle) in cases {
            let error = tags_for(&request("prod"), 0, &settings).unwrap_err();
            assert!(
                error.contains(needle),
                "{error:?} should contain {needle:?}"
            );
        }
        let limit: Vec<(String, String)> = (0..47)
            .map(|i| (format!("tag.t{i:02}"), "x".to_string()))
            .collect();
        assert_eq!(
            tags_for(&request("prod"), 0, &limit).unwrap().tags.len(),
            50
        );
    }
}
