//! `my-policy`: the smallest complete wasmcni policy hook, to copy and change.
//!
//! - `init`: checks the settings once per load; an error refuses the load, naming the setting.
//! - `evaluate`: denies the ADD (and CHECK) of a pod whose namespace is listed in the
//!   `DENY_NAMESPACES` setting (comma separated); allows everything else, and every DEL (a pod
//!   must always be able to go away).
//!
//! The decision is a pure function of the settings and the attachment ([`Rules::decide`]),
//! tested natively below; the `Guest` impl only reads the settings and calls it.

use wasmcni_plugin_sdk::policy::{setting, Attachment, Guest, Pod, Verb, Verdict};

/// What the settings say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// Namespaces whose pods may not attach.
    pub denied: Vec<String>,
}

impl Rules {
    /// Parses `DENY_NAMESPACES` (absent: nothing is denied); an error names the bad entry.
    pub fn parse(deny_namespaces: Option<&str>) -> Result<Rules, String> {
        let mut denied = Vec::new();
        for name in deny_namespaces
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
        {
            if name.is_empty() {
                continue;
            }
            let valid = name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                return Err(format!(
                    "setting DENY_NAMESPACES: {name:?} is not a Kubernetes namespace name"
                ));
            }
            denied.push(name.to_owned());
        }
        Ok(Rules { denied })
    }

    /// The verdict for `verb` on `pod`.
    pub fn decide(&self, verb: Verb, pod: &Pod) -> Verdict {
        let namespace = pod.namespace.as_deref().unwrap_or_default();
        match verb {
            Verb::Del => Verdict::Allow,
            _ if self.denied.iter().any(|d| d == namespace) => Verdict::Deny(format!(
                "pods of namespace {namespace} may not attach (DENY_NAMESPACES)"
            )),
            _ => Verdict::Allow,
        }
    }
}

/// The rules of the plugin's settings.
fn rules() -> Result<Rules, String> {
    Rules::parse(setting::<String>("DENY_NAMESPACES")?.as_deref())
}

struct MyPolicy;

impl Guest for MyPolicy {
    fn init() -> Result<(), String> {
        rules().map(drop)
    }

    fn evaluate(attachment: Attachment) -> Verdict {
        match rules() {
            Ok(rules) => rules.decide(attachment.verb, &attachment.pod),
            // Checked at load, so only a reload racing this call could get here; DEL passes.
            Err(_) if matches!(attachment.verb, Verb::Del) => Verdict::Allow,
            Err(e) => Verdict::Deny(e),
        }
    }
}

wasmcni_plugin_sdk::policy::export_policy!(MyPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: Option<&str>) -> Pod {
        Pod {
            namespace: namespace.map(str::to_owned),
            name: Some("web-0".into()),
            ..Pod::default()
        }
    }

    #[test]
    fn listed_namespaces_are_denied_on_add_and_check_never_on_del() {
        let rules = Rules::parse(Some("sandbox, team-x")).unwrap();
        for verb in [Verb::Add, Verb::Check] {
            assert!(matches!(
                rules.decide(verb, &pod(Some("sandbox"))),
                Verdict::Deny(reason) if reason.contains("sandbox")
            ));
            assert!(matches!(
                rules.decide(verb, &pod(Some("default"))),
                Verdict::Allow
            ));
            assert!(matches!(rules.decide(verb, &pod(None)), Verdict::Allow));
        }
        assert!(matches!(
            rules.decide(Verb::Del, &pod(Some("sandbox"))),
            Verdict::Allow
        ));
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(Rules::parse(None), Ok(Rules::default()));
        assert_eq!(Rules::parse(Some(" , ")), Ok(Rules::default()));
        let err = Rules::parse(Some("ok, Not_OK")).unwrap_err();
        assert!(err.contains("\"Not_OK\""), "{err}");
    }
}
