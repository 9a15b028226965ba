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
//! What else a call could spend on the host is bounded too: the WASI resources it holds at
//! once ([`MAX_WASI_RESOURCES`]: streams, pollables, open files, each possibly holding a read
//! buffer of wasmtime-wasi's 64 KiB cap), random bytes per request ([`MAX_RANDOM_BYTES`]),
//! bytes copied out of the guest by the hostcall fuel every host call shares, and the output
//! kept by [`CapturedOutput`]. WASI calls are not charged against the call's `host_calls`
//! budget (wasmtime-wasi's functions are not the daemon's); the deadline holds them, as every
//! one returns to wasm, where the epoch check is.
//!
//! Files: only the granted directories, each checked when opened to be the directory the
//! configuration names (no symbolic link, not the kernel's trees). Opens run on the call's own
//! thread; a stream's reads on the runtime's blocking pool, as wasmtime-wasi does. A
//! directory granted should hold regular files only: opening a FIFO waits for a writer.

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
use wasmcni_core::grants::wasi::{KERNEL_TREES, MAX_CAPTURED_OUTPUT, MAX_RANDOM_BYTES};
use wasmcni_core::grants::WasiScope;

/// WASI resources (streams, pollables, descriptors) one call may hold at once: CPython's
/// start and a call of `ns-subnets-py` use a handful; each may hold up to 64 KiB of read
/// buffer on the host, so this bounds that memory to 16 MiB per call.
pub(super) const MAX_WASI_RESOURCES: usize = 256;

/// Bytes of a failed call's output its error message carries (the message is cut at 1 KiB,
/// the trap's own words at 300 bytes before it).
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
            let opened = open_granted_dir(dir)?;
            let guest = dir.to_string_lossy();
            let by_fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&opened));
            builder
                .preopened_dir(&by_fd, guest.as_ref(), FsPerms::ReadOnly)
                .map_err(|e| format!("cannot open its granted directory {}: {e}", dir.display()))?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_WASI_RESOURCES);
        Ok(CallWasi {
            ctx: builder.build(),
            table,
            clocks: CallClocks {
                real: scope.clocks,
                started: Instant::now(),
                virtual_ns: Arc::new(AtomicU64::new(0)),
                deadline,
                alarm: Arc::default(),
            },
            output,
        })
    }

    /// The end of what the call wrote to stdout and stderr, short enough to fit a failure's
    /// message ([`wasmcni_core::limits::MAX_MESSAGE_BYTES`]) beside the trap.
    pub(super) fn output_tail(&self) -> String {
        // Escaped first (a traceback's newlines, terminal codes), so the cut below is the
        // last cut the text gets.
        let text = wasmcni_cni::text::escape_controls(self.output.text().trim_end());
        let text = text.as_str();
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

/// Opens a granted directory for one call: by `openat2` refusing every symbolic link on the
/// path (so nothing swapped in after the configuration was checked can lead to `/` or
/// `/proc/1/root`), refused on a kernel filesystem (procfs, sysfs and kin, wherever they are
/// mounted), and handed to wasmtime-wasi as the opened descriptor (`/proc/self/fd/N`), so
/// what it opens is what was checked.
fn open_granted_dir(dir: &std::path::Path) -> Result<std::os::fd::OwnedFd, String> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use nix::sys::statfs;
    let refused = |why: String| format!("its granted directory {}: {why}", dir.display());
    if KERNEL_TREES.iter().any(|tree| dir.starts_with(tree)) || dir.parent().is_none() {
        return Err(refused("is / or in the kernel's trees".into()));
    }
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(nix::fcntl::AT_FDCWD, dir, how).map_err(|e| match e {
        nix::errno::Errno::ELOOP => refused(
            "a symbolic link is on its path; grant the directory itself, by a path without \
             links"
                .into(),
        ),
        e => refused(format!("cannot open it: {e}")),
    })?;
    let kind = statfs::fstatfs(&fd)
        .map_err(|e| refused(format!("cannot stat it: {e}")))?
        .filesystem_type();
    let kernel = [
        statfs::PROC_SUPER_MAGIC,
        statfs::SYSFS_MAGIC,
        statfs::DEBUGFS_MAGIC,
        statfs::TRACEFS_MAGIC,
        statfs::SECURITYFS_MAGIC,
        statfs::CGROUP_SUPER_MAGIC,
        statfs::CGROUP2_SUPER_MAGIC,
        statfs::NSFS_MAGIC,
        statfs::BPF_FS_MAGIC,
    ];
    if kernel.contains(&kind) {
        return Err(refused(
            "is on a kernel filesystem (procfs, sysfs and kin): a process's root or a blocking \
             read is a path away"
                .into(),
        ));
    }
    Ok(fd)
}

impl HostState {
    /// The call's WASI. Linked only for plugins granted `wasi`, whose every call has one; a
    /// closed one stands in should that ever not hold.
    fn call_wasi(&mut self) -> &mut CallWasi {
        debug_assert!(self.wasi.is_some(), "WASI linked without a call's context");
        self.wasi.get_or_insert_with(|| {
            Box::new(
                CallWasi::new(&WasiScope::default(), Instant::now())
                    .expect("a scope without directories opens nothing"),
            )
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let wasi = self.call_wasi();
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
    &mut state.call_wasi().table
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
    let wasi = state.call_wasi();
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
    /// Wakes the call's real sleeps.
    alarm: Arc<Alarm>,
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
            Sleep::Real {
                wake,
                alarm: self.alarm.clone(),
            }
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
    /// Ready at `wake` (the call's deadline at the latest); until then pending, woken by the
    /// call's alarm, so a readiness check does not wait and a poll of several pollables
    /// returns with the first ready.
    Real { wake: Instant, alarm: Arc<Alarm> },
    /// Ready at once, moving the virtual clock to `until`.
    Virtual { until: u64, clock: Arc<AtomicU64> },
}

#[wasmtime_wasi::async_trait]
impl Pollable for Sleep {
    async fn ready(&mut self) {
        match self {
            Sleep::Real { wake, alarm } => {
                let (wake, alarm) = (*wake, alarm.clone());
                std::future::poll_fn(move |cx| {
                    let now = Instant::now();
                    if now >= wake {
                        return std::task::Poll::Ready(());
                    }
                    if alarm.wake_at(wake, cx.waker()) {
                        return std::task::Poll::Pending;
                    }
                    // No alarm thread: wait here, never past the deadline.
                    std::thread::sleep(wake - now);
                    std::task::Poll::Ready(())
                })
                .await;
            }
            Sleep::Virtual { until, clock } => {
                clock.fetch_max(*until, Ordering::Relaxed);
            }
        }
    }
}

/// One call's alarm: a thread, started by the call's first real sleep that has to wait and
/// ended when the call's WASI is dropped, that wakes the one waker registered (the call's
/// thread, blocked in a poll) at the earliest time asked. One thread per call at most, none
/// outliving it.
#[derive(Default)]
struct Alarm {
    state: Mutex<AlarmState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct AlarmState {
    /// When to wake, and whom.
    slot: Option<(Instant, std::task::Waker)>,
    running: bool,
    closed: bool,
}

impl Alarm {
    /// Wakes `waker` at `at` (or earlier). `false` when no alarm thread can run: the caller
    /// then waits on its own thread (bounded by the deadline).
    fn wake_at(self: &Arc<Self>, at: Instant, waker: &std::task::Waker) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.closed {
            return false;
        }
        let earlier = match &state.slot {
            Some((when, current)) if current.will_wake(waker) => at < *when,
            _ => true,
        };
        if earlier {
            // Another waker in the slot: wake it, so it polls again and re-registers.
            if let Some((_, replaced)) = state.slot.replace((at, waker.clone())) {
                if !replaced.will_wake(waker) {
                    replaced.wake();
                }
            }
        }
        if state.running {
            if earlier {
                self.changed.notify_one();
            }
            return true;
        }
        let alarm = self.clone();
        match std::thread::Builder::new()
            .name("wasmcni-wasi-alarm".into())
            .spawn(move || alarm.run())
        {
            Ok(_) => {
                state.running = true;
                true
            }
            Err(_) => {
                state.slot = None;
                false
            }
        }
    }

    /// Ends the thread (the call is over).
    fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.closed = true;
        state.slot = None;
        self.changed.notify_one();
    }

    fn run(&self) {
        /// Marks the thread gone however it ends.
        struct Gone<'a>(&'a Alarm);
        impl Drop for Gone<'_> {
            fn drop(&mut self) {
                let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
                state.running = false;
            }
        }
        let _gone = Gone(self);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if state.closed {
                return;
            }
            let now = Instant::now();
            match &state.slot {
                None => {
                    state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                Some((when, _)) if *when > now => {
                    let wait = *when - now;
                    state = self
                        .changed
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                Some(_) => {
                    let (_, waker) = state.slot.take().expect("matched Some");
                    drop(state);
                    waker.wake();
                    state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

impl Drop for CallClocks {
    fn drop(&mut self) {
        self.alarm.close();
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
        let far = Instant::now() + Duration::from_secs(5);
        let closed = CallWasi::new(&WasiScope::default(), far).unwrap();
        let mut sleep = closed.clocks.sleep(3_600_000_000_000);
        assert!(poll_once(sleep.ready()), "a virtual sleep is ready at once");
        assert_eq!(closed.clocks.monotonic_ns(), 3_600_000_000_000);
        let real = WasiScope {
            clocks: true,
            ..WasiScope::default()
        };
        // A readiness check does not wait (the deadline is far).
        let open = CallWasi::new(&real, far).unwrap();
        let mut sleep = open.clocks.sleep(3_600_000_000_000);
        let started = Instant::now();
        assert!(!poll_once(sleep.ready()));
        assert!(started.elapsed() < Duration::from_secs(1));
        // Waited for, an hour's sleep wakes at the call's deadline.
        let deadline = Instant::now() + Duration::from_millis(50);
        let open = CallWasi::new(&real, deadline).unwrap();
        let mut sleep = open.clocks.sleep(3_600_000_000_000);
        block_on(sleep.ready());
        let now = Instant::now();
        assert!(now >= deadline && now < deadline + Duration::from_secs(1));
        // A short one wakes at its own time, well before the deadline.
        let open = CallWasi::new(&real, far).unwrap();
        let mut sleep = open.clocks.sleep(20_000_000);
        let started = Instant::now();
        block_on(sleep.ready());
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn random_bytes_are_deterministic_and_bounded_per_request() {
        use wasmtime_wasi::p2::bindings::random::random::Host;
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut one = CallWasi::new(&WasiScope::default(), deadline).unwrap();
        let mut two = CallWasi::new(&WasiScope::default(), deadline).unwrap();
        let a = Host::get_random_bytes(one.ctx.random(), 32).unwrap();
        assert_eq!(a, Host::get_random_bytes(two.ctx.random(), 32).unwrap());
        assert!(Host::get_random_bytes(one.ctx.random(), MAX_RANDOM_BYTES).is_ok());
        assert!(Host::get_random_bytes(one.ctx.random(), MAX_RANDOM_BYTES + 1).is_err());
        let real = WasiScope {
            random: true,
            ..WasiScope::default()
        };
        let mut three = CallWasi::new(&real, deadline).unwrap();
        assert_ne!(a, Host::get_random_bytes(three.ctx.random(), 32).unwrap());
    }

    #[test]
    fn a_granted_directory_must_be_itself_and_not_the_kernels() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        let link = real.join("link");
        std::os::unix::fs::symlink("/", &link).unwrap();
        let scope = |dir: &std::path::Path| WasiScope {
            read_dirs: vec![dir.to_owned()],
            ..WasiScope::default()
        };
        assert!(CallWasi::new(&scope(&real), deadline).is_ok());
        let refused = CallWasi::new(&scope(&link), deadline).err().unwrap();
        assert!(
            refused.contains("a symbolic link is on its path"),
            "{refused}"
        );
        let refused = CallWasi::new(&scope(std::path::Path::new("/proc/self")), deadline)
            .err()
            .unwrap();
        assert!(refused.contains("kernel's trees"), "{refused}");
        // A kernel filesystem mounted elsewhere (a daemonset's /host/proc) is refused too.
        let proc_elsewhere = real.join("proc");
        std::fs::create_dir(&proc_elsewhere).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(&proc_elsewhere)
            .status()
            .expect("run mount (the tests run as root)");
        assert!(mounted.success(), "mounting a procfs: {mounted}");
        let refused = CallWasi::new(&scope(&proc_elsewhere), deadline).err();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&proc_elsewhere)
            .status();
        let refused = refused.expect("a procfs refused");
        assert!(refused.contains("kernel filesystem"), "{refused}");
        let refused = CallWasi::new(&scope(std::path::Path::new("/sys/kernel")), deadline)
            .err()
            .unwrap();
        assert!(refused.contains("kernel's trees"), "{refused}");
    }

    /// Polls `future` once with a waker that does nothing: whether it is ready now.
    fn poll_once<F: std::future::Future>(future: F) -> bool {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        future.as_mut().poll(&mut cx).is_ready()
    }

    /// Runs `future` to its end on this thread, parking between wake-ups.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park();
        }
    }
}
