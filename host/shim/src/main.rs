//! `wasmcni`: the CNI executable a conflist names (`"type": "wasmcni"`).
//!
//! Reads `CNI_*` and stdin, answers VERSION itself, forwards everything else to the node
//! daemon, and prints only the result or the CNI error object on stdout. Logs go to a file
//! (the config's `logFile`, default /var/log/wasmcni/cni.log) and, for errors, to stderr.

use std::io::Write;
use std::path::PathBuf;

use wasmcni_shim::{self as shim, log, UnixTransport};

fn main() {
    let stdin = match shim::read_stdin(&mut std::io::stdin().lock()) {
        Ok(bytes) => bytes,
        Err(e) => {
            // Reading stdin failed: the spec's I/O failure, code 5.
            let error = wasmcni_cni::error::CniError::new(
                wasmcni_cni::error::codes::IO_FAILURE,
                format!("cannot read the network configuration from stdin: {e}"),
            );
            let _ = std::io::stdout().write_all(&error.to_stdout_bytes("1.1.0"));
            std::process::exit(1);
        }
    };
    let outcome = shim::run(|name| std::env::var(name).ok(), &stdin, &UnixTransport);

    let log_file = outcome
        .log_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(log::DEFAULT_LOG_FILE));
    let level = if outcome.exit_code == 0 {
        "INFO"
    } else {
        "ERROR"
    };
    if let Err(e) = log::append(&log_file, level, &outcome.log) {
        eprintln!("wasmcni: cannot write log {}: {e}", log_file.display());
    }
    if outcome.exit_code != 0 {
        eprintln!(
            "wasmcni: {}",
            wasmcni_cni::text::escape_controls(&outcome.log)
        );
    }
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(&outcome.stdout)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(1);
    }
    std::process::exit(outcome.exit_code);
}
