//! The approval check against keys and approval files on disk.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;
use wasmcni_core::{Capability, Grants, PluginKind, PluginSpec};

use super::*;

pub(crate) fn spec() -> PluginSpec {
    let mut spec = PluginSpec::new(
        "pack",
        PluginKind::Allocator,
        "/x/pack.wasm".into(),
        format!("sha256:{}", "ab".repeat(32)),
        Grants::of(&[Capability::PoolView, Capability::EniOps]),
    );
    spec.grants.eni_ops.subnets = ["node".to_owned()].into();
    spec
}

fn statement_of(spec: &PluginSpec) -> Value {
    statement(
        spec,
        Some(PluginKind::Allocator),
        &["wasmcni:plugin/eni-ops@0.3.0".to_owned()],
    )
}

/// Three reviewers' keys, their public halves written to `dir`.
fn reviewers(dir: &Path) -> (Vec<SigningKey>, Vec<PathBuf>) {
    let keys: Vec<SigningKey> = (0..3).map(|_| SigningKey::generate().unwrap()).collect();
    let paths = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let path = dir.join(format!("reviewer-{i}.pub"));
            std::fs::write(&path, key.public().to_pem().unwrap()).unwrap();
            path
        })
        .collect();
    (keys, paths)
}

fn write(dir: &Path, name: &str, envelope: &Envelope) {
    std::fs::write(dir.join(name), serde_json::to_vec(envelope).unwrap()).unwrap();
}

fn reason(result: Result<Vec<String>, TrustError>) -> String {
    match result {
        Err(TrustError::NotApproved { why, .. }) => why,
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_of_three_reviewers_approve_and_one_is_not_enough() {
    let tmp = tempfile::tempdir().unwrap();
    let approvals = tmp.path().join("approvals");
    std::fs::create_dir(&approvals).unwrap();
    let (keys, paths) = reviewers(tmp.path());
    let expected = statement_of(&spec());
    write(
        &approvals,
        "pack-0.json",
        &Envelope::sign(&expected, &keys[0]),
    );
    let trust = Trust::load(&paths, 2, &approvals).unwrap();
    let why = reason(trust.check("pack", &expected));
    assert!(
        why.starts_with(&format!(
            "approved as configured by 1 of the 2 reviewers required ({})",
            keys[0].public().id()
        )),
        "{why}"
    );
    // The same reviewer twice counts once.
    write(
        &approvals,
        "pack-0-again.json",
        &Envelope::sign(&expected, &keys[0]),
    );
    let trust = Trust::load(&paths, 2, &approvals).unwrap();
    assert!(trust.check("pack", &expected).is_err());
    // A second reviewer, co-signing the same file: approved.
    let mut both = Envelope::sign(&expected, &keys[0]);
    both.cosign(&keys[2]).unwrap();
    write(&approvals, "pack-0.json", &both);
    let trust = Trust::load(&paths, 2, &approvals).unwrap();
    let mut ids = vec![
        keys[0].public().id().to_owned(),
        keys[2].public().id().to_owned(),
    ];
    ids.sort();
    assert_eq!(trust.check("pack", &expected).unwrap(), ids);
}

#[test]
fn a_widened_grant_an_unknown_key_and_a_changed_file_are_each_named() {
    let tmp = tempfile::tempdir().unwrap();
    let approvals = tmp.path().join("approvals");
    std::fs::create_dir(&approvals).unwrap();
    let (keys, paths) = reviewers(tmp.path());
    let approved = statement_of(&spec());
    write(
        &approvals,
        "pack.json",
        &Envelope::sign(&approved, &keys[1]),
    );
    // The configuration now grants another subnet.
    let mut widened = spec();
    widened.grants.eni_ops.subnets.insert("subnet-0abc".into());
    let configured = statement_of(&widened);
    let trust = Trust::load(&paths, 1, &approvals).unwrap();
    let why = reason(trust.check("pack", &configured));
    assert!(
        why.contains(&format!("pack.json (signed by {}) approves other terms: grants.eni_ops.subnets: approved [\"node\"], configured [\"node\",\"subnet-0abc\"]", keys[1].public().id())),
        "{why}"
    );
    assert!(why.contains("wasmcni-host audit --approve pack"), "{why}");
    assert!(trust.check("pack", &approved).is_ok());

    // Signed by someone [trust] does not list.
    let stranger = SigningKey::generate().unwrap();
    write(
        &approvals,
        "pack.json",
        &Envelope::sign(&configured, &stranger),
    );
    let trust = Trust::load(&paths, 1, &approvals).unwrap();
    let why = reason(trust.check("pack", &configured));
    assert!(
        why.contains(&format!(
            "pack.json: a signature by {}, which is not one of [trust] keys",
            stranger.public().id()
        )),
        "{why}"
    );

    // Signed by a reviewer, then the payload edited to the widened grant.
    let mut edited = Envelope::sign(&approved, &keys[1]);
    edited.payload =
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&configured).unwrap());
    write(&approvals, "pack.json", &edited);
    let trust = Trust::load(&paths, 1, &approvals).unwrap();
    let why = reason(trust.check("pack", &configured));
    assert!(
        why.contains("does not verify (the file changed after it was signed)"),
        "{why}"
    );
    // No signature leaks into the message, only key ids.
    assert!(!why.contains(&edited.signatures[0].sig), "{why}");
}

#[test]
fn without_an_approval_of_the_digest_the_directory_and_unreadable_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let approvals = tmp.path().join("approvals");
    std::fs::create_dir(&approvals).unwrap();
    let (keys, paths) = reviewers(tmp.path());
    std::fs::write(approvals.join("broken.json"), b"{ not json").unwrap();
    // An approval of another digest is no approval of this one.
    let mut other = spec();
    other.digest = format!("sha256:{}", "cd".repeat(32));
    write(
        &approvals,
        "other.json",
        &Envelope::sign(&statement_of(&other), &keys[0]),
    );
    let trust = Trust::load(&paths, 1, &approvals).unwrap();
    assert_eq!(trust.approvals(), 1);
    let why = reason(trust.check("pack", &statement_of(&spec())));
    assert!(why.contains("no approval of this digest in"), "{why}");
    assert!(why.contains("broken.json: not a DSSE envelope"), "{why}");
    // A key file that is not a key fails the load, naming it.
    std::fs::write(
        &paths[0],
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let error = Trust::load(&paths, 1, &approvals).unwrap_err().to_string();
    assert!(
        error.contains("reviewer-0.pub is not an ed25519 public key"),
        "{error}"
    );
    let error = Trust::load(&paths[1..], 1, &tmp.path().join("none"))
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("approvals directory "), "{error}");
}

#[test]
fn keys_read_back_from_pem_with_the_same_id() {
    let key = SigningKey::generate().unwrap();
    let again = SigningKey::from_pem(&key.to_pem().unwrap(), "k").unwrap();
    assert_eq!(again.public(), key.public());
    let public = PublicKey::from_pem(&key.public().to_pem().unwrap(), "p").unwrap();
    assert_eq!(public.id(), key.public().id());
    assert!(public.id().starts_with("sha256:") && public.id().len() == 7 + 64);
    assert!(SigningKey::from_pem("nope", "reviewer.key")
        .err()
        .unwrap()
        .to_string()
        .contains("reviewer.key is not an ed25519 private key"));
}

#[test]
fn links_fifos_and_oversized_files_are_not_read_and_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let approvals = tmp.path().join("approvals");
    std::fs::create_dir(&approvals).unwrap();
    let (keys, paths) = reviewers(tmp.path());
    let expected = statement_of(&spec());
    // A real approval, reachable only through a link: not followed.
    let outside = tmp.path().join("outside.json");
    std::fs::write(
        &outside,
        serde_json::to_vec(&Envelope::sign(&expected, &keys[0])).unwrap(),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, approvals.join("link.json")).unwrap();
    // A FIFO would block a reader that waits for a writer.
    nix::unistd::mkfifo(
        &approvals.join("fifo.json"),
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    std::fs::write(
        approvals.join("huge.json"),
        vec![b' '; MAX_APPROVAL_BYTES as usize + 1],
    )
    .unwrap();
    let started = std::time::Instant::now();
    let trust = Trust::load(&paths, 1, &approvals).unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(trust.approvals(), 0);
    let unread = trust.unreadable().join("\n");
    assert!(unread.contains("fifo.json: not a regular file"), "{unread}");
    assert!(
        unread.contains("huge.json: more than 1048576 bytes"),
        "{unread}"
    );
    assert!(unread.contains("link.json: "), "{unread}");
    // Nothing vouches for the digest, so the daemon compiles nothing; the refusal names them.
    let digest = expected["digest"].as_str().unwrap();
    let why = reason(trust.vouched("pack", digest).map(|()| Vec::new()));
    assert!(why.contains("no approval of this digest"), "{why}");
    assert!(
        why.contains("not read: ") && why.contains("fifo.json"),
        "{why}"
    );
}

#[test]
fn the_same_key_under_two_paths_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, paths) = reviewers(tmp.path());
    let copy = tmp.path().join("copy.pub");
    std::fs::copy(&paths[0], &copy).unwrap();
    let error = Trust::load(&[paths[0].clone(), copy], 2, tmp.path())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("copy.pub is a key listed already"),
        "{error}"
    );
}

#[test]
fn more_approval_files_than_the_cap_are_left_unread_and_said() {
    let tmp = tempfile::tempdir().unwrap();
    let approvals = tmp.path().join("approvals");
    std::fs::create_dir(&approvals).unwrap();
    let (keys, paths) = reviewers(tmp.path());
    let envelope = Envelope::sign(&statement_of(&spec()), &keys[0]);
    for i in 0..=MAX_APPROVAL_FILES {
        write(&approvals, &format!("a{i:04}.json"), &envelope);
    }
    let trust = Trust::load(&paths, 1, &approvals).unwrap();
    assert_eq!(trust.approvals(), MAX_APPROVAL_FILES);
    assert!(
        trust.unreadable()[0]
            .contains("holds more than 1024 approval files; the others are not read"),
        "{:?}",
        trust.unreadable()
    );
}
