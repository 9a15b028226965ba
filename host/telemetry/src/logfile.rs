//! The daemon's log file: JSON lines, rotated by size (`daemon.log_file`, `log_max_bytes`,
//! `log_keep`). Each tracing event is formatted whole and written with one unbuffered
//! `write`, so a line is never split between files and nothing is lost when the process ends:
//! what was logged is in the file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// A size-rotated log file: `daemon.log`, then `daemon.log.1` … `daemon.log.<keep>`.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    state: Mutex<(File, u64)>,
}

fn open(path: &Path) -> std::io::Result<(File, u64)> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

impl RotatingLog {
    /// Opens (appends to) `path`; it rotates once a write would take it past `max_bytes`,
    /// keeping `keep` older files.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<RotatingLog> {
        Ok(RotatingLog {
            path: path.to_owned(),
            max_bytes: max_bytes.max(1),
            keep,
            state: Mutex::new(open(path)?),
        })
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&self, state: &mut (File, u64)) -> std::io::Result<()> {
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    std::fs::rename(&from, self.numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
        }
        *state = open(&self.path)?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, (File, u64)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One event's writer: holds the file for the event's single write.
pub struct Line<'a> {
    log: &'a RotatingLog,
    state: MutexGuard<'a, (File, u64)>,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let incoming = bytes.len() as u64;
        if self.state.1 > 0 && self.state.1 + incoming > self.log.max_bytes {
            self.log.rotate(&mut self.state)?;
        }
        self.state.0.write_all(bytes)?;
        self.state.1 += incoming;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.state.0.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RotatingLog {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            log: self,
            state: self.lock(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    #[test]
    fn rotates_by_size_keeping_whole_lines_and_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/daemon.log");
        let log = RotatingLog::open(&path, 100, 2).unwrap();
        for i in 0..10 {
            let line = format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(30));
            log.make_writer().write_all(line.as_bytes()).unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let current = read(&path);
        let first = read(&log.numbered(1));
        let second = read(&log.numbered(2));
        assert!(!log.numbered(3).exists(), "only 2 old files kept");
        for text in [&current, &first, &second] {
            assert!(text.len() <= 100, "{text}");
            for line in text.lines() {
                serde_json::from_str::<serde_json::Value>(line).expect("whole JSON lines");
            }
        }
        assert!(
            current.contains("\"n\":9"),
            "the newest line is in the current file"
        );
        assert!(second.contains("\"n\":4"), "{second}");
    }
}
