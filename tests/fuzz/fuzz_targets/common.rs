//! Shared by the targets: the invocation input format and what every error must satisfy.
#![allow(dead_code)]

use std::collections::HashMap;
use wasmcni_cni::{CniError, CniVersion};

/// Splits an input into the environment (`KEY=VALUE` lines up to the first empty line; the
/// last of a repeated key wins, as in `env`) and stdin (the rest).
pub fn invocation(data: &[u8]) -> (HashMap<String, String>, &[u8]) {
    let (head, stdin) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let env = String::from_utf8_lossy(head)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (env, stdin)
}

/// An error must print as the spec's object in every version and parse back unchanged
/// (a runtime shows `msg`; a chained plugin's caller parses it).
pub fn check_error(error: &CniError) {
    for version in CniVersion::ALL {
        let bytes = error.to_stdout_bytes(version.as_str());
        let back = CniError::from_stdout_bytes(&bytes)
            .unwrap_or_else(|e| panic!("{version}: {error:?} prints as unreadable {e:?}"));
        assert_eq!(back.code, error.code, "{version}");
        assert_eq!(back.msg, error.msg, "{version}");
        assert_eq!(back.details, error.details, "{version}");
    }
    assert!(
        !error.msg.is_empty(),
        "an error without a message: {error:?}"
    );
}

/// The datastore target's input: a flags byte (bit 0: a snapshot follows, its length as 4
/// big-endian bytes; bit 1: give every log line a valid checksum, so the records themselves
/// are what is fuzzed, as a newer version or a hostile writer would leave them), then the log.
pub struct StoreImage<'a> {
    pub snapshot: Option<&'a [u8]>,
    pub fix_checksums: bool,
    pub log: &'a [u8],
}

impl<'a> StoreImage<'a> {
    pub fn parse(data: &'a [u8]) -> Option<StoreImage<'a>> {
        let (&flags, rest) = data.split_first()?;
        let (snapshot, log) = if flags & 1 == 1 {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let rest = &rest[4..];
            let len = len.min(rest.len());
            (Some(&rest[..len]), &rest[len..])
        } else {
            (None, rest)
        };
        Some(StoreImage {
            snapshot,
            fix_checksums: flags & 2 == 2,
            log,
        })
    }

    pub fn encode(snapshot: Option<&[u8]>, fix_checksums: bool, log: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::from(snapshot.is_some()) | (u8::from(fix_checksums) << 1)];
        if let Some(snapshot) = snapshot {
            out.extend_from_slice(&(snapshot.len() as u32).to_be_bytes());
            out.extend_from_slice(snapshot);
        }
        out.extend_from_slice(log);
        out
    }
}
