//! Where a plugin may come from besides a file: an OCI registry, named by manifest digest.
//!
//! `oci://registry[:port]/repository@sha256:<64 hex>` — a digest, never a tag: a tag can be
//! moved to other bytes after the review, a digest cannot. The parse is strict (the OCI
//! distribution spec's repository grammar, lowercase hex) so a reference that reaches the
//! registry client is one the registry would read the same way.

use std::fmt;

/// A component's manifest in a registry, pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OciReference {
    /// `host` or `host:port`.
    pub registry: String,
    /// `team/plugins/pack`.
    pub repository: String,
    /// `sha256:<64 lowercase hex>` of the manifest.
    pub digest: String,
}

/// The scheme an OCI plugin source starts with.
pub const OCI_SCHEME: &str = "oci://";

impl OciReference {
    /// Parses `oci://registry/repository@sha256:<hex>`, naming what is wrong.
    pub fn parse(text: &str) -> Result<OciReference, String> {
        let rest = text
            .strip_prefix(OCI_SCHEME)
            .ok_or_else(|| format!("must start with {OCI_SCHEME:?}"))?;
        let (name, digest) = rest.rsplit_once('@').ok_or_else(|| {
            "must name the manifest by digest (…@sha256:<64 hex>); tags are refused, since a \
             tag can be moved after the review (`wasmcni-host plugin push` prints the digest)"
                .to_owned()
        })?;
        if !is_sha256_digest(digest) {
            return Err(format!(
                "digest {digest:?} must be \"sha256:\" followed by 64 lowercase hex digits"
            ));
        }
        let (registry, repository) = name.split_once('/').ok_or_else(|| {
            "must name a registry and a repository (registry/repository)".to_owned()
        })?;
        check_registry(registry)?;
        let last = repository.rsplit('/').next().unwrap_or(repository);
        if last.contains(':') {
            return Err(format!(
                "{repository:?} carries a tag; name the manifest by digest alone"
            ));
        }
        check_repository(repository)?;
        Ok(OciReference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            digest: digest.to_owned(),
        })
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{OCI_SCHEME}{}/{}@{}",
            self.registry, self.repository, self.digest
        )
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `host` or `host:port`: a DNS name or IPv4 address, lowercase.
pub fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !host_ok {
        return Err(format!(
            "registry {registry:?} must be a lowercase host name or IPv4 address, with an \
             optional :port"
        ));
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!(
                "registry {registry:?}: port {port:?} is not 1-65535"
            ));
        }
    }
    Ok(())
}

/// The OCI distribution spec's repository grammar: lowercase path components of
/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`; at most 255 characters.
pub fn check_repository(repository: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if alnum(b) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
            if !ok {
                return false;
            }
        }
        true
    };
    if repository.is_empty() || repository.len() > 255 || !repository.split('/').all(component_ok) {
        return Err(format!(
            "repository {repository:?} must be lowercase path components of letters and digits \
             joined by '.', '_', '__' or '-' (at most 255 characters)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_a_reference_by_digest_and_prints_it_back() {
        let text = format!("oci://127.0.0.1:5000/team/plugins/vpc-warm-pool@{D}");
        let r = OciReference::parse(&text).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/plugins/vpc-warm-pool");
        assert_eq!(r.digest, D);
        assert_eq!(r.to_string(), text);
        let r =
            OciReference::parse(&format!("oci://registry.example.com/a.b__c--d_e@{D}")).unwrap();
        assert_eq!(r.repository, "a.b__c--d_e");
    }

    #[test]
    fn refuses_tags_and_other_shapes_naming_the_fault() {
        let cases = [
            ("oci://registry/repo:v1", "must name the manifest by digest"),
            (
                &format!("oci://registry/repo:v1@{D}") as &str,
                "carries a tag",
            ),
            (&format!("https://registry/repo@{D}"), "must start with"),
            ("oci://registry/repo@sha256:abc", "64 lowercase hex"),
            (
                &format!("oci://registry/repo@{}", D.to_uppercase()),
                "64 lowercase hex",
            ),
            (
                &format!("oci://registry/repo@sha512:{}", &D[7..]),
                "64 lowercase hex",
            ),
            (&format!("oci://registry@{D}"), "registry and a repository"),
            (&format!("oci://Registry/repo@{D}"), "lowercase host name"),
            (&format!("oci://registry:0/repo@{D}"), "not 1-65535"),
            (&format!("oci://registry:99999/repo@{D}"), "not 1-65535"),
            (&format!("oci://registry/Repo@{D}"), "repository \"Repo\""),
            (
                &format!("oci://registry/a//b@{D}"),
                "lowercase path components",
            ),
            (
                &format!("oci://registry/a...b@{D}"),
                "lowercase path components",
            ),
            (
                &format!("oci://registry/-a@{D}"),
                "lowercase path components",
            ),
            (
                &format!("oci://registry/{}@{D}", "a".repeat(256)),
                "at most 255",
            ),
            (&format!("oci://reg istry/repo@{D}"), "lowercase host name"),
        ];
        for (text, want) in cases {
            let err = OciReference::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
