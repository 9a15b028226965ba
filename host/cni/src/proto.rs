//! The shim ↔ daemon protocol: one request and one response per connection on a Unix socket.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of JSON. The shim sends a
//! [`DaemonRequest`]; the daemon answers a [`DaemonResponse`] whose `stdout` is exactly what the
//! shim prints, already rendered in the runtime's CNI version, so the shim never re-encodes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::CniError;
use crate::request::CniRequest;

/// Protocol revision; bumped on incompatible changes so a shim/daemon mismatch is reported.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default daemon socket (the cluster configuration's `daemon.socket`).
pub const DEFAULT_SOCKET: &str = "/run/wasmcni/wasmcni.sock";

/// The directory every daemon socket must lie in: the shim connects to nothing else, whatever
/// a network configuration says (`daemonSocket`).
pub const SOCKET_DIR: &str = "/run/wasmcni";

/// Directory where the shim records DELs it could not deliver (daemon down), next to the
/// socket: the daemon replays them when it starts and on every sweep.
pub fn pending_del_dir(socket: &Path) -> PathBuf {
    socket
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join("pending-del")
}

/// A DEL recorded while the daemon was unreachable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PendingDel {
    /// When the shim recorded it (ms since the epoch): an attachment of the same key created
    /// later is a new one (container ids get reused) and is not deleted by the replay.
    pub recorded_unix_ms: u64,
    /// The DEL as the shim would have sent it.
    pub request: DaemonRequest,
}

/// Why a pending-DEL directory or file was not used.
#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    /// An I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Something others could have written or redirected: not trusted.
    #[error("{path}: {reason}; not trusted")]
    Untrusted {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Checks that `path` is ours alone: not a symlink, owned by this user, no group/other access
/// beyond `allowed_mode`. Anyone able to write there could make the daemon delete attachments.
pub fn check_private(path: &Path, is_dir: bool) -> Result<(), PendingError> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::symlink_metadata(path).map_err(|source| PendingError::Io {
        path: path.to_owned(),
        source,
    })?;
    let untrusted = |reason: String| PendingError::Untrusted {
        path: path.to_owned(),
        reason,
    };
    if metadata.file_type().is_symlink() {
        return Err(untrusted("is a symbolic link".into()));
    }
    if metadata.is_dir() != is_dir {
        return Err(untrusted(
            if is_dir {
                "is not a directory"
            } else {
                "is not a regular file"
            }
            .into(),
        ));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if metadata.uid() != euid {
        return Err(untrusted(format!(
            "is owned by uid {}, not {euid}",
            metadata.uid()
        )));
    }
    if metadata.mode() & 0o077 != 0 {
        return Err(untrusted(format!(
            "has mode {:o}; group and others must have no access",
            metadata.mode() & 0o777
        )));
    }
    Ok(())
}

/// Records `request` in `dir` (created 0700 if missing; refused if it is not private), written
/// to a temporary file, synced and renamed, so a replay never sees half a record.
pub fn record_pending_del(dir: &Path, request: &DaemonRequest) -> Result<PathBuf, PendingError> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PendingError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    check_private(dir, true)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let record = PendingDel {
        recorded_unix_ms: now.as_millis() as u64,
        request: request.clone(),
    };
    // The attachment is named by a digest, not spelled out: a container id may be longer than
    // a file name can be, and a DEL must never be lost to that. The record inside says it all.
    let attachment = sha1_smol::Sha1::from(format!(
        "{}\0{}",
        request.request.container_id, request.request.ifname
    ))
    .digest()
    .to_string();
    let name = format!("{:020}-{}", now.as_nanos(), &attachment[..16]);
    let path = dir.join(format!("{name}.json"));
    let bytes = serde_json::to_vec(&record).map_err(|e| PendingError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    // Durable before the runtime gets our answer: the pod is gone after it.
    crate::durable::replace_file(&path, &bytes, 0o600).map_err(io(&path))?;
    Ok(path)
}

/// Largest network configuration the shim forwards (libcni configs are a few KiB).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Largest frame either side accepts: a config plus the envelope.
pub const MAX_FRAME_BYTES: usize = MAX_CONFIG_BYTES + 64 * 1024;

/// A CNI invocation forwarded by the shim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DaemonRequest {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol: u32,
    /// The CNI_* parameters.
    pub request: CniRequest,
    /// The network configuration exactly as read from stdin.
    pub config: String,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum DaemonResponse {
    /// Success: print `stdout` (possibly empty) and exit 0.
    Success {
        /// Bytes for stdout.
        stdout: String,
    },
    /// Failure: print `stdout` (the CNI error object) and exit 1.
    Failure {
        /// Bytes for stdout.
        stdout: String,
        /// The error, for the shim's log.
        error: CniError,
    },
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed or the socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The announced length exceeds the limit.
    #[error("frame of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Limit.
        limit: usize,
    },
    /// The body is not the expected JSON.
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Encodes `message` as one frame: 4-byte big-endian length, then the JSON.
pub fn encode_frame(message: &impl Serialize) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(message)?;
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
        len: body.len(),
        limit: u32::MAX as usize,
    })?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes one frame.
pub fn write_frame(writer: &mut impl Write, message: &impl Serialize) -> Result<(), FrameError> {
    writer.write_all(&encode_frame(message)?)?;
    Ok(())
}

/// Reads one frame of at most `limit` bytes and decodes it.
pub fn read_frame<T: for<'de> Deserialize<'de>>(
    reader: &mut impl Read,
    limit: usize,
) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let response = DaemonResponse::Success {
            stdout: "{\"cniVersion\":\"1.1.0\"}".into(),
        };
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &response).unwrap();
        assert_eq!(&buffer[..4], &((buffer.len() - 4) as u32).to_be_bytes());
        let back: DaemonResponse = read_frame(&mut buffer.as_slice(), 1024).unwrap();
        assert_eq!(back, response);
        let err = read_frame::<DaemonResponse>(&mut buffer.as_slice(), 8).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { limit: 8, .. }),
            "{err}"
        );
        let err = read_frame::<DaemonResponse>(&mut &buffer[..10], 1024).unwrap_err();
        assert!(matches!(err, FrameError::Io(_)), "{err}");
    }

    #[test]
    fn a_del_with_a_very_long_container_id_is_still_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let pending = dir.path().join("pending-del");
        let vars = |name: &str| match name {
            "CNI_COMMAND" => Some("DEL".to_owned()),
            "CNI_CONTAINERID" => Some("c".repeat(1000)),
            "CNI_IFNAME" => Some("eth0".to_owned()),
            _ => None,
        };
        let request = DaemonRequest {
            protocol: PROTOCOL_VERSION,
            request: CniRequest::from_env(vars).unwrap(),
            config: "{}".into(),
        };
        let path = record_pending_del(&pending, &request).unwrap();
        assert!(path.file_name().unwrap().len() < 64, "{}", path.display());
        let record: PendingDel = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(record.request.request.container_id.len(), 1000);
    }
}
