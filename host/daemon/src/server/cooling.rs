//! The cooldown survives a restart: released addresses and when they were released, kept in
//! `<state_dir>/cooling.json` so a daemon that crashed (or was upgraded) right after a DEL does
//! not hand the address to a new pod while packets for the old one may still arrive.
//!
//! The file is rewritten (temporary file and rename) on every release, without fsync: it has to
//! survive the daemon's process, not the node (a rebooted node has no pods and no late packets).
//! An unreadable file costs the safety margin, never a start: it is logged and ignored.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};

/// The file's name in the state directory.
pub(crate) const FILE: &str = "cooling.json";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoolingFile {
    version: u32,
    released: Vec<Released>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Released {
    ip: IpAddr,
    released_unix_ms: u64,
}

/// The addresses of `dir`'s file still within `cooldown`, with the instant each was released.
/// A release "in the future" (the wall clock went back) cools for the whole cooldown.
pub(crate) fn load(dir: &Path, cooldown: Duration) -> HashMap<IpAddr, Instant> {
    let path = dir.join(FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the cooling addresses; released addresses may be reused before their cooldown ends");
            return HashMap::new();
        }
    };
    let file: CoolingFile = match serde_json::from_slice::<CoolingFile>(&text) {
        Ok(file) if file.version == VERSION => file,
        Ok(file) => {
            tracing::warn!(path = %path.display(), version = file.version, "unknown cooling file version; ignored");
            return HashMap::new();
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "corrupt cooling file; ignored");
            return HashMap::new();
        }
    };
    let now_ms = wasmcni_clock::unix_ms();
    let now = Instant::now();
    file.released
        .into_iter()
        .filter_map(|r| {
            let age = Duration::from_millis(now_ms.saturating_sub(r.released_unix_ms));
            (age < cooldown).then(|| (r.ip, now.checked_sub(age).unwrap_or(now)))
        })
        .collect()
}

/// Writes `cooling` (release instants) to `dir`'s file, replacing it atomically.
pub(crate) fn save(dir: &Path, cooling: &HashMap<IpAddr, Instant>) -> std::io::Result<()> {
    let now_ms = wasmcni_clock::unix_ms();
    let mut released: Vec<Released> = cooling
        .iter()
        .map(|(ip, at)| Released {
            ip: *ip,
            released_unix_ms: now_ms.saturating_sub(at.elapsed().as_millis() as u64),
        })
        .collect();
    released.sort_by_key(|r| (r.released_unix_ms, r.ip));
    let json = serde_json::to_vec(&CoolingFile {
        version: VERSION,
        released,
    })
    .map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, dir.join(FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn releases_survive_a_reload_with_their_age_and_expire_on_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut cooling = HashMap::new();
        let now = Instant::now();
        cooling.insert(ip("10.0.0.5"), now - Duration::from_secs(20));
        cooling.insert(ip("2600::7"), now);
        save(dir.path(), &cooling).unwrap();
        let loaded = load(dir.path(), Duration::from_secs(30));
        assert_eq!(loaded.len(), 2, "{loaded:?}");
        let age = loaded[&ip("10.0.0.5")].elapsed();
        assert!(
            age >= Duration::from_secs(19) && age < Duration::from_secs(22),
            "{age:?}"
        );
        // With a 10 s cooldown the 20 s old release is over.
        let loaded = load(dir.path(), Duration::from_secs(10));
        assert_eq!(loaded.keys().collect::<Vec<_>>(), [&ip("2600::7")]);
    }

    #[test]
    fn a_missing_or_corrupt_file_costs_the_margin_not_the_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), Duration::from_secs(30)).is_empty());
        std::fs::write(
            dir.path().join(FILE),
            b"{\"version\":1,\"released\":[{\"ip\":",
        )
        .unwrap();
        assert!(load(dir.path(), Duration::from_secs(30)).is_empty());
        std::fs::write(dir.path().join(FILE), b"{\"version\":9,\"released\":[]}").unwrap();
        assert!(load(dir.path(), Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn a_release_in_the_future_cools_for_the_whole_cooldown() {
        let dir = tempfile::tempdir().unwrap();
        let future = wasmcni_clock::unix_ms() + 3_600_000;
        std::fs::write(
            dir.path().join(FILE),
            format!("{{\"version\":1,\"released\":[{{\"ip\":\"10.0.0.9\",\"released_unix_ms\":{future}}}]}}"),
        )
        .unwrap();
        let loaded = load(dir.path(), Duration::from_secs(30));
        assert!(loaded[&ip("10.0.0.9")].elapsed() < Duration::from_secs(1));
    }
}
