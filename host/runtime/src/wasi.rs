//! The WASI a plugin granted `wasi` sees ([`wasmcni_core::grants::wasi`]): wasmtime-wasi's
//! WASI 0.2 interfaces, built per call from the grant's scope so that by default they hold
//! nothing, with the clocks replaced by the daemon's own.
//!
//! wasmtime-wasi's monotonic clock sleeps on the host for as long as the guest asks, and no
//! epoch tick can end a call blocked in a host function, so a `time.sleep(3600)` would hold a
//! call an hour past its deadline. The clocks here never do: without the `clocks` scope they
//! are virtual (both start at zero and a sleep returns at once, having moved them), and with
//! it a sleep wakes at the call's deadline at the latest, after which the guest's next epoch
//! check ends the call.
//!
//! What else a call could spend on the host is bounded too: random bytes per request
//! ([`MAX_RANDOM_BYTES`]), reads by wasmtime-wasi's own cap, bytes copied out of the guest by
//! the hostcall fuel every host call shares, and the output kept by [`CapturedOutput`].
//! Files are opened on the call's own thread (no hop through a thread pool); a directory
//! granted should hold regular files only (a FIFO's open waits for a writer).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng as _;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli, WasiCliView as _};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
use wasmtime_wasi::p2::bindings::clocks::{monotonic_clock, wall_clock};
use wasmtime_wasi::p2::bindings::{cli, filesystem, random, sockets, sync};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView as _};
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView as _};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::host::HostState;
use wasmcni_core::grants::wasi::{MAX_CAPTURED_OUTPUT, MAX_RANDOM_BYTES};
use wasmcni_core::grants::WasiScope;

/// Bytes of a failed call's output its error message carries.
const OUTPUT_IN_MESSAGE: usize = 600;

/// One call's WASI: wasmtime-wasi's context and resource table, the call's clocks and the
/// output it wrote.
pub(super) struct CallWasi {
    ctx: WasiCtx,
    table: ResourceTable,
    clocks: CallClocks,
    output: CapturedOutput,
}

impl CallWasi {
    /// The WASI of one call under `scope`, which must end by `deadline`. Fails when a granted
    /// directory cannot be opened.
    pub(super) fn new(scope: &WasiScope, deadline: Instant) -> Result<CallWasi, String> {
        let output = CapturedOutput::default();
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_blocking_current_thread(true)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(MAX_RANDOM_BYTES);
        if !scope.random {
            builder
                .secure_random(rand::rngs::StdRng::seed_from_u64(0))
                .insecure_random(rand::rngs::StdRng::seed_from_u64(1))
                .insecure_random_seed(0);
        }
        for dir in &scope.read_dirs {
            let guest = dir.to_string_lossy();
            builder
                .preopened_dir(dir, guest.as_ref(), FsPerms::ReadOnly)
                .map_err(|e| format!("cannot open its granted directory {}: {e}", dir.display()))?;
        }
        Ok(CallWasi {
            ctx: builder.build(),
            table: ResourceTable::new(),
            clocks: CallClocks {
                real: scope.clocks,
                started: Instant::now(),
                virtual_ns: Arc::new(AtomicU64::new(0)),
                deadline,
            },
            output,
        })
    }

    /// The end of what the call wrote to stdout and stderr, short enough to fit a failure's
    /// message ([`wasmcni_core::limits::MAX_MESSAGE_BYTES`]) beside the trap.
    pub(super) fn output_tail(&self) -> String {
        let text = self.output.text();
        let text = text.trim_end();
        let mut start = text.len().saturating_sub(OUTPUT_IN_MESSAGE);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        if start > 0 {
            format!("…{}", &text[start..])
        } else {
            text.to_owned()
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Linked only for plugins granted `wasi`, whose every call has one.
        let wasi = self.wasi.get_or_insert_with(|| {
            Box::new(
                CallWasi::new(&WasiScope::default(), Instant::now())
                    .expect("a scope without directories opens nothing"),
            )
        });
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}

/// Links every WASI 0.2 interface wasmtime-wasi offers, synchronously, with the daemon's
/// clocks in place of wasmtime-wasi's.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let l = linker;
    wasmtime_wasi::p2::bindings::io::error::add_to_linker::<HostState, Table>(l, table)?;
    sync::io::poll::add_to_linker::<HostState, Table>(l, table)?;
    sync::io::streams::add_to_linker::<HostState, Table>(l, table)?;
    wall_clock::add_to_linker::<HostState, Clocks>(l, clocks)?;
    monotonic_clock::add_to_linker::<HostState, Clocks>(l, clocks)?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    filesystem::preopens::add_to_linker::<HostState, WasiFilesystem>(l, HostState::filesystem)?;
    sync::filesystem::types::add_to_linker::<HostState, WasiFilesystem>(l, HostState::filesystem)?;
    sockets::network::add_to_linker::<HostState, WasiSockets>(
        l,
        &Default::default(),
        HostState::sockets,
    )?;
    sockets::instance_network::add_to_linker::<HostState, WasiSockets>(l, HostState::sockets)?;
    sockets::tcp_create_socket::add_to_linker::<HostState, WasiSockets>(l, HostState::sockets)?;
    sync::sockets::udp_create_socket::add_to_linker::<HostState, WasiSockets>(
        l,
        HostState::sockets,
    )?;
    sockets::ip_name_lookup::add_to_linker::<HostState, WasiSockets>(l, HostState::sockets)?;
    sync::sockets::tcp::add_to_linker::<HostState, WasiSockets>(l, HostState::sockets)?;
    sync::sockets::udp::add_to_linker::<HostState, WasiSockets>(l, HostState::sockets)?;
    Ok(())
}

/// `wasi:io`'s view: the call's resource table.
struct Table;

impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

fn table(state: &mut HostState) -> &mut ResourceTable {
    state.ctx().table
}

/// `wasi:clocks`' view: the call's clocks and resource table.
struct Clocks;

impl HasData for Clocks {
    type Data<'a> = ClocksView<'a>;
}

struct ClocksView<'a> {
    clocks: &'a CallClocks,
    table: &'a mut ResourceTable,
}

fn clocks(state: &mut HostState) -> ClocksView<'_> {
    state.ctx();
    let wasi = state.wasi.as_mut().expect("created by ctx()");
    ClocksView {
        clocks: &wasi.clocks,
        table: &mut wasi.table,
    }
}

/// One call's clocks: real (since `started`), or virtual (`virtual_ns`, moved only by
/// sleeps); either way no sleep outlasts `deadline`.
struct CallClocks {
    real: bool,
    started: Instant,
    virtual_ns: Arc<AtomicU64>,
    deadline: Instant,
}

impl CallClocks {
    /// Nanoseconds on the monotonic clock.
    fn monotonic_ns(&self) -> u64 {
        if self.real {
            u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
        } else {
            self.virtual_ns.load(Ordering::Relaxed)
        }
    }

    /// A sleep of `ns` nanoseconds from now.
    fn sleep(&self, ns: u64) -> Sleep {
        if self.real {
            let wake = Instant::now()
                .checked_add(Duration::from_nanos(ns))
                .map_or(self.deadline, |wake| wake.min(self.deadline));
            Sleep::Real(wake)
        } else {
            Sleep::Virtual {
                until: self.monotonic_ns().saturating_add(ns),
                clock: self.virtual_ns.clone(),
            }
        }
    }
}

impl wall_clock::Host for ClocksView<'_> {
    fn now(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        let (seconds, nanoseconds) = if self.clocks.real {
            let ms = wasmcni_clock::unix_ms();
            (ms / 1000, (ms % 1000) as u32 * 1_000_000)
        } else {
            let ns = self.clocks.monotonic_ns();
            (ns / 1_000_000_000, (ns % 1_000_000_000) as u32)
        };
        Ok(wall_clock::Datetime {
            seconds,
            nanoseconds,
        })
    }

    fn resolution(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        Ok(wall_clock::Datetime {
            seconds: 0,
            nanoseconds: 1_000_000,
        })
    }
}

impl monotonic_clock::Host for ClocksView<'_> {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(self.clocks.monotonic_ns())
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(1)
    }

    fn subscribe_instant(&mut self, when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let ns = when.saturating_sub(self.clocks.monotonic_ns());
        let sleep = self.table.push(self.clocks.sleep(ns))?;
        wasmtime_wasi::p2::subscribe(self.table, sleep)
    }

    fn subscribe_duration(&mut self, ns: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let sleep = self.table.push(self.clocks.sleep(ns))?;
        wasmtime_wasi::p2::subscribe(self.table, sleep)
    }
}

/// A pollable sleep.
enum Sleep {
    /// Waits on this thread until then (the call's deadline at the latest).
    Real(Instant),
    /// Ready at once, moving the virtual clock to `until`.
    Virtual { until: u64, clock: Arc<AtomicU64> },
}

#[wasmtime_wasi::async_trait]
impl Pollable for Sleep {
    async fn ready(&mut self) {
        match self {
            // The call's own thread (a plugin call is synchronous and runs on a thread of its
            // own); bounded by the deadline.
            Sleep::Real(wake) => std::thread::sleep(wake.saturating_duration_since(Instant::now())),
            Sleep::Virtual { until, clock } => {
                clock.fetch_max(*until, Ordering::Relaxed);
            }
        }
    }
}

/// Stdout and stderr of one call: the last [`MAX_CAPTURED_OUTPUT`] bytes written, shown if
/// the call fails; writing never blocks and never fails.
#[derive(Clone, Default)]
pub(super) struct CapturedOutput(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    tail: VecDeque<u8>,
    dropped: u64,
}

impl CapturedOutput {
    fn text(&self) -> String {
        let captured = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (front, back) = captured.tail.as_slices();
        let text = String::from_utf8_lossy(&[front, back].concat()).into_owned();
        if captured.dropped > 0 {
            format!("[{} earlier bytes dropped] {text}", captured.dropped)
        } else {
            text
        }
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI 0.3 asks for it, and the daemon links 0.2 alone.
        Box::new(tokio::io::sink())
    }
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let mut captured = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let keep = bytes.len().min(MAX_CAPTURED_OUTPUT);
        let skipped = bytes.len() - keep;
        captured.tail.extend(&bytes[skipped..]);
        let excess = captured.tail.len().saturating_sub(MAX_CAPTURED_OUTPUT);
        captured.tail.drain(..excess);
        captured.dropped += (skipped + excess) as u64;
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_output_keeps_the_last_bytes() {
        let mut output = CapturedOutput::default();
        output.write(bytes::Bytes::from_static(b"hello ")).unwrap();
        assert_eq!(output.text(), "hello ");
        output
            .write(bytes::Bytes::from(vec![b'x'; MAX_CAPTURED_OUTPUT]))
            .unwrap();
        output.write(bytes::Bytes::from_static(b"end")).unwrap();
        let text = output.text();
        assert!(text.starts_with("[9 earlier bytes dropped] "), "{text}");
        assert!(text.ends_with("xxend"), "{text}");
    }

    #[test]
    fn a_virtual_sleep_moves_the_clock_and_a_real_one_stops_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(30);
        let closed = CallWasi::new(&WasiScope::default(), deadline).unwrap();
        let mut sleep = closed.clocks.sleep(3_600_000_000_000);
        let started = Instant::now();
        futures_lite_block_on(sleep.ready());
        assert!(started.elapsed() < Duration::from_millis(20));
        assert_eq!(closed.clocks.monotonic_ns(), 3_600_000_000_000);
        let real = WasiScope {
            clocks: true,
            ..WasiScope::default()
        };
        let open = CallWasi::new(&real, deadline).unwrap();
        let mut sleep = open.clocks.sleep(3_600_000_000_000);
        futures_lite_block_on(sleep.ready());
        let now = Instant::now();
        assert!(now >= deadline && now < deadline + Duration::from_secs(1));
    }

    /// Polls a future that never waits on a waker to completion.
    fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("the sleep waited on a waker"),
        }
    }
}
