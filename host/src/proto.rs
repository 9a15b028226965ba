//! The shim ↔ daemon protocol: one request and one response per connection on a Unix socket.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of JSON. The shim sends a
//! [`DaemonRequest`]; the daemon answers a [`DaemonResponse`] whose `stdout` is exactly what the
//! shim prints, already rendered in the runtime's CNI version, so the shim never re-encodes.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::cni::error::CniError;
use crate::cni::request::CniRequest;

/// Protocol revision; bumped on incompatible changes so a shim/daemon mismatch is reported.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default daemon socket (the cluster configuration's `daemon.socket`).
pub const DEFAULT_SOCKET: &str = "/run/wasmcni/wasmcni.sock";

/// Directory where the shim records DELs it could not deliver (daemon down), next to the
/// socket: the daemon replays them when it starts.
pub fn pending_del_dir(socket: &std::path::Path) -> std::path::PathBuf {
    socket
        .parent()
        .unwrap_or_else(|| std::path::Path::new("/"))
        .join("pending-del")
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

/// Writes one frame.
pub fn write_frame(writer: &mut impl Write, message: &impl Serialize) -> Result<(), FrameError> {
    let body = serde_json::to_vec(message)?;
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
        len: body.len(),
        limit: u32::MAX as usize,
    })?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    writer.write_all(&frame)?;
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

/// Async framing for the daemon side.
pub mod framed {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::FrameError;

    /// Reads one frame body of at most `limit` bytes.
    pub async fn read_body(
        reader: &mut (impl AsyncRead + Unpin),
        limit: usize,
    ) -> Result<Vec<u8>, FrameError> {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > limit {
            return Err(FrameError::TooLarge { len, limit });
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).await?;
        Ok(body)
    }

    /// Writes one frame.
    pub async fn write(
        writer: &mut (impl AsyncWrite + Unpin),
        message: &impl serde::Serialize,
    ) -> Result<(), FrameError> {
        let body = serde_json::to_vec(message)?;
        let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
            len: body.len(),
            limit: u32::MAX as usize,
        })?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        writer.write_all(&frame).await?;
        writer.flush().await?;
        Ok(())
    }
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
}
