//! `my-tagger`: the smallest complete wasmcni tagger, to copy and change.
//!
//! - `init`: checks the settings once per load; an error refuses the load, naming the setting.
//! - `tags`: one tag per `"tag.<Key>" = "<value>"` setting (quote the whole TOML key), on every
//!   new ENI.
//!
//! The decision is a pure function of the settings ([`tags_from`]), tested natively below; the
//! `Guest` impl only reads the settings and calls it. The daemon refuses the whole answer of a
//! tagger that returns a reserved key or a key outside its entry's `tag_keys`, so list every
//! key there.

use wasmcni_plugin_sdk::tagger::{config, is_reserved, EniRequest, Guest, Pair};

/// The settings prefix of one tag.
pub const TAG_PREFIX: &str = "tag.";
/// Longest tag key EC2 accepts, in characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest tag value EC2 accepts, in characters.
pub const MAX_VALUE_CHARS: usize = 256;

/// The tags the settings ask for, by key; an error names the setting EC2 or the daemon would
/// refuse.
pub fn tags_from(settings: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
    let mut tags = Vec::new();
    for (key, value) in settings {
        let tag = key.strip_prefix(TAG_PREFIX).ok_or_else(|| {
            format!("unknown setting {key:?}: this tagger reads `\"tag.<Key>\" = \"<value>\"`")
        })?;
        let chars = tag.chars().count();
        if chars == 0 || chars > MAX_KEY_CHARS {
            return Err(format!(
                "setting {key:?}: a tag key has 1 to {MAX_KEY_CHARS} characters"
            ));
        }
        if value.chars().count() > MAX_VALUE_CHARS {
            return Err(format!(
                "setting {key:?}: a tag value has at most {MAX_VALUE_CHARS} characters"
            ));
        }
        if is_reserved(tag) {
            return Err(format!(
                "setting {key:?}: {tag:?} is reserved (aws:* keys belong to AWS, \
                 *k8s.amazonaws.com* keys to the daemon)"
            ));
        }
        tags.push((tag.to_owned(), value.clone()));
    }
    Ok(tags)
}

/// The plugin's settings as pairs (sorted by key).
fn settings() -> Vec<(String, String)> {
    config::all()
        .into_iter()
        .map(|pair| (pair.key, pair.value))
        .collect()
}

struct MyTagger;

impl Guest for MyTagger {
    fn init() -> Result<(), String> {
        tags_from(&settings()).map(drop)
    }

    fn tags(_request: EniRequest) -> Result<Vec<Pair>, String> {
        Ok(tags_from(&settings())?
            .into_iter()
            .map(|(key, value)| Pair { key, value })
            .collect())
    }
}

wasmcni_plugin_sdk::tagger::export_tagger!(MyTagger);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_tag_setting_is_one_tag() {
        assert_eq!(
            tags_from(&settings(&[
                ("tag.team", "payments"),
                ("tag.cost-center", "42")
            ])),
            Ok(vec![
                ("team".into(), "payments".into()),
                ("cost-center".into(), "42".into())
            ])
        );
        assert_eq!(tags_from(&[]), Ok(vec![]));
    }

    #[test]
    fn what_would_be_refused_is_an_error_naming_the_setting() {
        for (pairs, expected) in [
            (vec![("team", "x")], "unknown setting \"team\""),
            (vec![("tag.", "x")], "1 to 128 characters"),
            (vec![("tag.aws:owner", "x")], "is reserved"),
            (vec![("tag.eks.k8s.amazonaws.com/x", "x")], "is reserved"),
        ] {
            let err = tags_from(&settings(&pairs)).unwrap_err();
            assert!(err.contains(expected), "{pairs:?}: {err}");
        }
        let long = "v".repeat(MAX_VALUE_CHARS + 1);
        assert!(tags_from(&settings(&[("tag.team", &long)]))
            .unwrap_err()
            .contains("at most 256"));
    }
}
