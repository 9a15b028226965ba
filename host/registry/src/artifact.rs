//! The Wasm OCI artifact: how a component is laid out in a registry (the CNCF TAG Runtime
//! "Wasm OCI Artifact" layout that `wkg oci push`, oci-wasm and wasmCloud use): one manifest,
//! a `application/vnd.wasm.config.v0+json` config, one `application/wasm` layer.

use std::collections::BTreeMap;

use oci_client::manifest::{OciDescriptor, OciImageManifest, OCI_IMAGE_MEDIA_TYPE};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The layer holding the component.
pub const WASM_LAYER: &str = "application/wasm";
/// The config describing it.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The layer and config types of the older wasm-to-oci layout, still read.
pub(crate) const LEGACY_WASM_LAYER: &str = oci_client::manifest::WASM_LAYER_MEDIA_TYPE;
pub(crate) const LEGACY_WASM_CONFIG: &str = oci_client::manifest::WASM_CONFIG_MEDIA_TYPE;

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// The config blob: what the component is, for registries' and tools' listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// RFC 3339 time of the push.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Always `wasm`.
    pub architecture: String,
    /// `wasip2` for a component.
    pub os: String,
    /// The layers' digests, in order.
    pub layer_digests: Vec<String>,
    /// The component's world as seen from outside.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentInfo>,
}

/// `component` of [`WasmConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// Exported interfaces and functions.
    pub exports: Vec<String>,
    /// Imported interfaces.
    pub imports: Vec<String>,
}

/// A component laid out for a push: the manifest's bytes and digest, and the blobs it names.
pub struct Artifact {
    /// The manifest, serialized once; its digest is what the configuration pins.
    pub manifest: Vec<u8>,
    /// `sha256:` of `manifest`.
    pub manifest_digest: String,
    /// The config blob and its digest.
    pub config: (Vec<u8>, String),
    /// The component and its digest.
    pub component: (Vec<u8>, String),
}

impl Artifact {
    /// Lays out `component` with `info` (its imports and exports) and `annotations`
    /// (`org.opencontainers.image.*`).
    pub fn new(
        component: Vec<u8>,
        info: Option<ComponentInfo>,
        created: Option<String>,
        annotations: BTreeMap<String, String>,
    ) -> Result<Artifact, serde_json::Error> {
        let component_digest = sha256(&component);
        let config = serde_json::to_vec(&WasmConfig {
            created,
            architecture: "wasm".into(),
            os: "wasip2".into(),
            layer_digests: vec![component_digest.clone()],
            component: info,
        })?;
        let config_digest = sha256(&config);
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.into()),
            config: OciDescriptor {
                media_type: WASM_CONFIG.into(),
                digest: config_digest.clone(),
                size: config.len() as i64,
                ..Default::default()
            },
            layers: vec![OciDescriptor {
                media_type: WASM_LAYER.into(),
                digest: component_digest.clone(),
                size: component.len() as i64,
                ..Default::default()
            }],
            subject: None,
            artifact_type: Some(WASM_CONFIG.into()),
            annotations: (!annotations.is_empty()).then_some(annotations),
        };
        let manifest = serde_json::to_vec(&manifest)?;
        Ok(Artifact {
            manifest_digest: sha256(&manifest),
            manifest,
            config: (config, config_digest),
            component: (component, component_digest),
        })
    }
}

/// The one component layer of a manifest a registry served, checked against what the
/// configuration pins; `Err` names what does not fit.
pub(crate) fn component_layer(
    manifest: &[u8],
    component_digest: &str,
    max_bytes: u64,
) -> Result<OciDescriptor, String> {
    let manifest: OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("the manifest is not an OCI image manifest: {e}"))?;
    if manifest.schema_version != 2 {
        return Err(format!(
            "the manifest's schemaVersion is {}, not 2",
            manifest.schema_version
        ));
    }
    let config_type = manifest.config.media_type.as_str();
    if config_type != WASM_CONFIG && config_type != LEGACY_WASM_CONFIG {
        return Err(format!(
            "the artifact's config is {config_type:?}, not a Wasm component's \
             ({WASM_CONFIG:?}): is this a container image?"
        ));
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err(format!(
            "a Wasm component artifact has one layer; this one has {}",
            manifest.layers.len()
        ));
    };
    if layer.media_type != WASM_LAYER && layer.media_type != LEGACY_WASM_LAYER {
        return Err(format!(
            "the layer is {:?}, not {WASM_LAYER:?}",
            layer.media_type
        ));
    }
    if layer.urls.as_ref().is_some_and(|urls| !urls.is_empty()) {
        return Err(
            "the layer names other URLs to fetch it from; a component is fetched from its \
             registry only"
                .to_owned(),
        );
    }
    if layer.digest != component_digest {
        return Err(format!(
            "the manifest's component is {}, the configuration pins {component_digest}: the \
             reference and the digest name different builds",
            wasmcni_cni::text::escape_controls(&layer.digest)
        ));
    }
    if layer.size < 0 || layer.size as u64 > max_bytes {
        return Err(format!(
            "the component is {} bytes; registry.max_component_bytes is {max_bytes}",
            layer.size
        ));
    }
    Ok(layer.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(edit: impl FnOnce(&mut serde_json::Value)) -> (Vec<u8>, String) {
        let artifact = Artifact::new(b"\0asm component".to_vec(), None, None, BTreeMap::new())
            .expect("lay out");
        let mut value: serde_json::Value =
            serde_json::from_slice(&artifact.manifest).expect("our manifest is JSON");
        edit(&mut value);
        (
            serde_json::to_vec(&value).expect("serialize"),
            artifact.component.1,
        )
    }

    #[test]
    fn our_layout_reads_back_and_names_the_component() {
        let artifact = Artifact::new(
            b"\0asm component".to_vec(),
            Some(ComponentInfo {
                exports: vec!["wasmcni:plugin/allocator@0.3.0".into()],
                imports: vec!["wasmcni:plugin/log@0.3.0".into()],
            }),
            Some("2026-12-07T00:00:00Z".into()),
            BTreeMap::new(),
        )
        .expect("lay out");
        assert_eq!(artifact.manifest_digest, sha256(&artifact.manifest));
        let layer = component_layer(&artifact.manifest, &artifact.component.1, 1 << 20)
            .expect("our own layout");
        assert_eq!(layer.media_type, WASM_LAYER);
        assert_eq!(layer.size, 14);
        let config: WasmConfig = serde_json::from_slice(&artifact.config.0).expect("config");
        assert_eq!(config.layer_digests, vec![artifact.component.1.clone()]);
        assert_eq!(
            (config.architecture.as_str(), config.os.as_str()),
            ("wasm", "wasip2")
        );
        // The older wasm-to-oci types are read too.
        let (legacy, digest) = manifest(|m| {
            m["config"]["mediaType"] = LEGACY_WASM_CONFIG.into();
            m["layers"][0]["mediaType"] = LEGACY_WASM_LAYER.into();
        });
        assert!(component_layer(&legacy, &digest, 1 << 20).is_ok());
    }

    #[test]
    fn other_artifacts_are_refused_naming_what_they_are() {
        type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|m| {
                    m["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json".into()
                }),
                "is this a container image?",
            ),
            (
                Box::new(|m| {
                    let layer = m["layers"][0].clone();
                    m["layers"].as_array_mut().expect("layers").push(layer);
                }),
                "has one layer; this one has 2",
            ),
            (
                Box::new(|m| {
                    m["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar".into()
                }),
                "not \"application/wasm\"",
            ),
            (
                Box::new(|m| m["schemaVersion"] = 1.into()),
                "schemaVersion is 1",
            ),
            (
                Box::new(|m| m["layers"][0]["size"] = (-1).into()),
                "the component is -1 bytes",
            ),
            (
                Box::new(|m| m["layers"][0]["digest"] = "sha256:\u{1b}[31mred".into()),
                "the manifest's component is sha256:\\u{1b}[31mred",
            ),
        ];
        for (edit, want) in cases {
            let (bytes, digest) = manifest(edit);
            let err = component_layer(&bytes, &digest, 1 << 20).expect_err(want);
            assert!(err.contains(want), "{want}: {err}");
        }
        let (bytes, digest) = manifest(|_| {});
        let err = component_layer(&bytes, &digest, 10).expect_err("too large");
        assert!(
            err.contains("the component is 14 bytes; registry.max_component_bytes is 10"),
            "{err}"
        );
        assert!(component_layer(b"{]", &digest, 10).is_err());
    }
}
