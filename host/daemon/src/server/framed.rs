//! The shim↔daemon framing of `wasmcni_cni::proto`, read and written on the daemon's tokio
//! sockets (the shim and its crate stay synchronous).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use wasmcni_cni::proto::{encode_frame, FrameError};

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
    writer.write_all(&encode_frame(message)?).await?;
    writer.flush().await?;
    Ok(())
}
