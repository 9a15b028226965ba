//! The line framing of wasmcni's state files (the datastore's log and snapshot, the plugins'
//! `kv` files): `<8 hex digits of CRC-32> <json>\n`, so a damaged line is recognised on its own
//! and costs only what it held.

/// Frames `json` as one complete line.
pub fn frame(json: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(json.len() + 10);
    line.extend_from_slice(format!("{:08x} ", crc32fast::hash(json)).as_bytes());
    line.extend_from_slice(json);
    line.push(b'\n');
    line
}

/// The JSON of a line (without its newline) whose framing and checksum hold; otherwise what
/// is wrong with it.
pub fn unframe(line: &[u8]) -> Result<&[u8], String> {
    if line.len() < 9 || line[8] != b' ' || !line[..8].iter().all(u8::is_ascii_hexdigit) {
        return Err(
            "the line does not start with 8 hex digits of checksum and a space".to_string(),
        );
    }
    let (crc_hex, json) = (&line[..8], &line[9..]);
    let stored = std::str::from_utf8(crc_hex)
        .ok()
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| "unreadable checksum".to_string())?;
    let computed = crc32fast::hash(json);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    Ok(json)
}

/// One line of a framed file.
pub struct Line<'a> {
    /// Byte offset of its first byte.
    pub offset: usize,
    /// Its bytes, without the newline.
    pub bytes: &'a [u8],
    /// False for a last line that ends without a newline (an interrupted write).
    pub complete: bool,
    /// Whether it is the file's last line.
    pub last: bool,
}

/// The lines of `bytes`, in order.
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = Line<'_>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= bytes.len() {
            return None;
        }
        let offset = pos;
        let (end, next) = match bytes[pos..].iter().position(|&b| b == b'\n') {
            Some(newline) => (pos + newline, pos + newline + 1),
            None => (bytes.len(), bytes.len()),
        };
        pos = next;
        Some(Line {
            offset,
            bytes: &bytes[offset..end],
            complete: end < next,
            last: next == bytes.len(),
        })
    })
}
