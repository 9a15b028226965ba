//! Reading a file whose path someone else chose (an approval, a CA or password file, a cached
//! component): a regular file only, never followed through a link, and a FIFO or device
//! refused rather than waited on.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens `path` for reading with `O_NOFOLLOW | O_NONBLOCK` (a link is refused with `ELOOP`,
/// opening a FIFO does not wait for a writer) and refuses anything but a regular file
/// (`InvalidInput`, "not a regular file").
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// [`open_regular`], read whole, refusing more than `max` bytes (and reading no more than
/// one byte past it).
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_regular(path)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!("more than {max} bytes")));
    }
    Ok(bytes)
}
