//! Against a real OCI distribution server (Debian's docker-registry on loopback): push, pull
//! into the cache, TLS with a generated CA, basic auth, a tampered blob and manifest, a
//! registry that goes away, and the bounds a hostile registry meets.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use wasmcni_config::{cached_component, RegistryConfig};
use wasmcni_core::{OciReference, PluginKind, PluginSpec};
use wasmcni_harness::registry::{RegistryOptions, TestRegistry};
use wasmcni_registry::{artifact::sha256, ensure_cached, Artifact, Fetched, PushTarget, Registry};

/// Bytes standing for a component: the registry and the cache never parse them.
fn component(seed: &str) -> Vec<u8> {
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.extend(seed.as_bytes().repeat(5000));
    bytes
}

fn settings(registry: &TestRegistry) -> RegistryConfig {
    let mut settings = RegistryConfig::default();
    match registry.ca_file() {
        Some(ca) => settings.ca_files.push(ca),
        None => settings.plain_http.push(registry.host()),
    }
    settings
}

async fn push(registry: &TestRegistry, settings: &RegistryConfig, bytes: &[u8]) -> OciReference {
    let artifact = Artifact::new(
        bytes.to_vec(),
        None,
        None,
        wasmcni_registry::annotations("test", Some("1.0.0")),
    )
    .expect("lay out the artifact");
    let target = PushTarget::parse(&format!("oci://{}/plugins/test:1.0.0", registry.host()))
        .expect("a push target");
    Registry::new(settings)
        .expect("a registry client")
        .push(&artifact, &target)
        .await
        .expect("push")
}

fn spec(cache: &Path, name: &str, reference: &OciReference, digest: &str) -> PluginSpec {
    let mut spec = PluginSpec::new(
        name,
        PluginKind::Allocator,
        cached_component(cache, digest),
        digest.to_owned(),
        Default::default(),
    );
    spec.origin = Some(reference.clone());
    spec
}

fn leftovers(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn pushes_then_pulls_into_the_cache_and_starts_from_it_when_the_registry_is_gone() {
    let mut registry = TestRegistry::start(RegistryOptions::default());
    let settings = settings(&registry);
    let bytes = component("plain");
    let reference = push(&registry, &settings, &bytes).await;
    assert_eq!(reference.registry, registry.host());
    assert_eq!(reference.repository, "plugins/test");
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().join("components");
    let s = spec(&cache, "p", &reference, &sha256(&bytes));

    let report = ensure_cached(&[&s], &settings).await.unwrap();
    assert!(
        matches!(report[..], [(ref name, Fetched::Pulled { bytes: n, .. })] if name == "p" && n == bytes.len() as u64),
        "{report:?}"
    );
    assert_eq!(std::fs::read(&s.path).unwrap(), bytes);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        leftovers(&cache).len(),
        1,
        "no partial file left: {:?}",
        leftovers(&cache)
    );

    // The registry goes away: the cached component serves.
    registry.stop();
    let report = ensure_cached(&[&s], &settings).await.unwrap();
    assert_eq!(report, vec![("p".to_owned(), Fetched::Cached)]);

    // A corrupted cache entry is not used; with the registry down, the error says why.
    std::fs::write(&s.path, b"not the component").unwrap();
    let err = ensure_cached(&[&s], &settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("plugin p") && err.contains(&reference.to_string()),
        "{err}"
    );
    assert!(err.contains("fetching the manifest"), "{err}");

    // Back up: the entry is pulled again, whole.
    registry.restart();
    let settings = self::settings(&registry);
    let moved = OciReference {
        registry: registry.host(),
        ..reference.clone()
    };
    let s = spec(&cache, "p", &moved, &sha256(&bytes));
    ensure_cached(&[&s], &settings).await.unwrap();
    assert_eq!(std::fs::read(&s.path).unwrap(), bytes);
}

#[tokio::test]
async fn tls_with_the_configured_ca_and_not_without_it() {
    let registry = TestRegistry::start(RegistryOptions {
        tls: true,
        ..Default::default()
    });
    let settings = settings(&registry);
    let bytes = component("tls");
    let reference = push(&registry, &settings, &bytes).await;
    let cache = tempfile::tempdir().unwrap();
    let s = spec(cache.path(), "t", &reference, &sha256(&bytes));
    ensure_cached(&[&s], &settings).await.unwrap();
    assert_eq!(std::fs::read(&s.path).unwrap(), bytes);

    std::fs::remove_file(&s.path).unwrap();
    let err = ensure_cached(&[&s], &RegistryConfig::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!s.path.exists());
}

#[tokio::test]
async fn basic_auth_from_the_password_file() {
    let registry = TestRegistry::start(RegistryOptions {
        tls: true,
        auth: Some(("reviewer".into(), "s3cret-token".into())),
        ..Default::default()
    });
    let section = registry.registry_section("");
    let config: toml_section::Wrapper = toml_section::parse(&section);
    let settings = config.registry;
    let bytes = component("auth");
    let reference = push(&registry, &settings, &bytes).await;
    let cache = tempfile::tempdir().unwrap();
    let s = spec(cache.path(), "a", &reference, &sha256(&bytes));
    ensure_cached(&[&s], &settings).await.unwrap();

    std::fs::remove_file(&s.path).unwrap();
    let mut anonymous = settings.clone();
    anonymous.auth.clear();
    let err = ensure_cached(&[&s], &anonymous)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("auth"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[tokio::test]
async fn a_tampered_blob_or_manifest_is_refused_and_nothing_is_cached() {
    let registry = TestRegistry::start(RegistryOptions::default());
    let settings = settings(&registry);
    let bytes = component("tamper");
    let digest = sha256(&bytes);
    let reference = push(&registry, &settings, &bytes).await;
    let cache = tempfile::tempdir().unwrap();
    let s = spec(cache.path(), "x", &reference, &digest);

    // Same length, one byte changed: only the digest can tell.
    let blob = registry.blob_file(&digest);
    let mut evil = std::fs::read(&blob).unwrap();
    let last = evil.len() - 1;
    evil[last] ^= 0x20;
    std::fs::write(&blob, &evil).unwrap();
    let err = ensure_cached(&[&s], &settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("digest"), "{err}");
    assert!(
        leftovers(cache.path()).is_empty(),
        "{:?}",
        leftovers(cache.path())
    );

    // The manifest itself edited (another component named in it).
    std::fs::write(&blob, &bytes).unwrap();
    let manifest = registry.blob_file(&reference.digest);
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"size\":", "\"size\": ")).unwrap();
    let err = ensure_cached(&[&s], &settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("digest"), "{err}");
    assert!(leftovers(cache.path()).is_empty());
}

#[tokio::test]
async fn a_reference_to_another_build_and_an_oversized_component_are_refused_before_download() {
    let registry = TestRegistry::start(RegistryOptions::default());
    let mut settings = settings(&registry);
    let bytes = component("other");
    let reference = push(&registry, &settings, &bytes).await;
    let cache = tempfile::tempdir().unwrap();
    let pinned = sha256(b"the reviewed build");
    let s = spec(cache.path(), "o", &reference, &pinned);
    let err = ensure_cached(&[&s], &settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("the manifest's component is {}", sha256(&bytes)))
            && err.contains(&format!("the configuration pins {pinned}")),
        "{err}"
    );

    settings.max_component_bytes = 1000;
    let s = spec(cache.path(), "o", &reference, &sha256(&bytes));
    let err = ensure_cached(&[&s], &settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "the component is {} bytes; registry.max_component_bytes is 1000",
            bytes.len()
        )),
        "{err}"
    );
    assert!(leftovers(cache.path()).is_empty());
}

#[tokio::test]
async fn a_registry_that_never_answers_is_bounded_by_the_timeout() {
    // Accepts connections, reads, never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let mut settings = RegistryConfig::default();
    settings.plain_http.push(host.clone());
    settings.timeout_ms = 700;
    let reference =
        OciReference::parse(&format!("oci://{host}/plugins/slow@{}", sha256(b"m"))).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let s = spec(cache.path(), "slow", &reference, &sha256(b"c"));
    let started = Instant::now();
    let err = ensure_cached(&[&s], &settings)
        .await
        .unwrap_err()
        .to_string();
    let took = started.elapsed();
    assert!(err.contains("registry.timeout_ms (700 ms)"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// `[registry]` as the harness writes it, read through the configuration's own types.
mod toml_section {
    #[derive(serde::Deserialize)]
    pub(super) struct Wrapper {
        pub(super) registry: wasmcni_config::RegistryConfig,
    }

    pub(super) fn parse(text: &str) -> Wrapper {
        toml::from_str(text).expect("the harness's [registry] section")
    }
}

#[test]
fn push_targets_parse_with_or_without_a_tag() {
    let t = PushTarget::parse("oci://127.0.0.1:5000/team/pack:v1.2.0").unwrap();
    assert_eq!(
        (t.registry.as_str(), t.repository.as_str(), t.tag.as_deref()),
        ("127.0.0.1:5000", "team/pack", Some("v1.2.0"))
    );
    assert_eq!(t.to_string(), "oci://127.0.0.1:5000/team/pack:v1.2.0");
    let t = PushTarget::parse("oci://registry.example.com/pack").unwrap();
    assert_eq!(t.tag, None);
    for bad in [
        "registry/pack",
        "oci://registry/pack@sha256:00",
        "oci://registry/Pack",
        "oci://registry/pack:-x",
        "oci://registry",
    ] {
        assert!(PushTarget::parse(bad).is_err(), "{bad}");
    }
}

/// A registry that serves one manifest faithfully and answers a blob request with `blob`
/// (status line, headers and body as given): what a compromised or broken registry sends.
fn misbehaving_registry(manifest: Vec<u8>, blob: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let host = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            let line = String::from_utf8_lossy(&request)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            let response = if line.contains("/manifests/") {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    sha256(&manifest),
                    manifest.len()
                )
                .into_bytes();
                r.extend(&manifest);
                r
            } else if line.contains("/blobs/") {
                blob.clone()
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_vec()
            };
            let _ = stream.write_all(&response);
        }
    });
    host
}

#[tokio::test]
async fn a_registry_sending_more_than_the_manifest_names_is_cut_off() {
    let bytes = component("size");
    let artifact = Artifact::new(bytes.clone(), None, None, BTreeMap::new()).expect("layout");
    let digest = sha256(&bytes);
    let mut oversized = bytes.clone();
    oversized.extend(std::iter::repeat_n(b'x', 4096));
    let cases = [
        (
            // Announced up front: refused before a byte of the body is read.
            [
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    oversized.len()
                )
                .into_bytes(),
                oversized.clone(),
            ]
            .concat(),
            format!(
                "the registry announces {} bytes for a component the manifest says is {}",
                oversized.len(),
                bytes.len()
            ),
        ),
        (
            // Not announced (chunked): cut off once it passes the size.
            [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    .to_vec(),
                format!("{:x}\r\n", oversized.len()).into_bytes(),
                oversized.clone(),
                b"\r\n0\r\n\r\n".to_vec(),
            ]
            .concat(),
            format!(
                "the registry sent more than the {} bytes the manifest names",
                bytes.len()
            ),
        ),
    ];
    for (blob, want) in cases {
        let host = misbehaving_registry(artifact.manifest.clone(), blob);
        let mut settings = RegistryConfig::default();
        settings.plain_http.push(host.clone());
        let reference = OciReference::parse(&format!(
            "oci://{host}/plugins/size@{}",
            artifact.manifest_digest
        ))
        .expect("reference");
        let cache = tempfile::tempdir().expect("cache");
        let s = spec(cache.path(), "size", &reference, &digest);
        let err = ensure_cached(&[&s], &settings)
            .await
            .expect_err(&want)
            .to_string();
        assert!(err.contains(&want), "{want}: {err}");
        assert!(
            leftovers(cache.path()).is_empty(),
            "{:?}",
            leftovers(cache.path())
        );
    }
}
