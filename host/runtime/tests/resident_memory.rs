//! The bound on what plugin calls leave resident in the daemon: a memory slot keeps at most
//! 128 KiB of its pages between calls (where the kernel can scan which pages a call dirtied),
//! whatever the plugin touched. Its own test binary, so that the process's resident set is the
//! test's alone.
//!
//! Needs the hostile test plugins built (`scripts/test.sh` builds them first).

use std::net::Ipv4Addr;
use std::sync::Arc;

use wasmcni_core::ipam::{AddressBlock, BlockKind, Inventory};
use wasmcni_core::{limits, Capability, Export, PluginKind, PodInfo, PoolSnapshot};
use wasmcni_runtime::{testing, PluginRuntime};

/// The process's resident set, in bytes (`VmRSS` of `/proc/self/status`, in kB whatever the
/// page size).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib << 10
}

#[test]
fn plugins_that_dirty_all_their_memory_leave_no_more_than_the_resident_cap_behind() {
    const THREADS: usize = 8;
    const CALLS_PER_THREAD: usize = 6;
    let runtime = PluginRuntime::new().expect("engine");
    // Each call fills 1 MiB after 1 MiB until the 16 MiB memory limit traps it.
    let mut spec = testing::spec(
        "memory-bomb",
        PluginKind::Allocator,
        &[Capability::PoolView],
    );
    // Its memory limit is what stops it here, not the deadline (8 calls on 2 cores).
    spec.limits
        .deadline_ms
        .insert(Export::Allocate, limits::MAX_DEADLINE.as_millis() as u64);
    let bomb = Arc::new(runtime.load(&spec).expect("load memory-bomb"));
    let snapshot = Arc::new(PoolSnapshot::of_static(
        Inventory {
            blocks: vec![AddressBlock {
                cidr: "10.0.0.0/24".parse().expect("a CIDR"),
                route_table: None,
                kind: BlockKind::StaticRange,
                eni_id: None,
            }],
            ..Inventory::default()
        },
        Vec::<Ipv4Addr>::new(),
    ));
    let pod = PodInfo {
        namespace: Some("default".into()),
        name: Some("web".into()),
        container_id: "c1".into(),
        ifname: "eth0".into(),
        ..PodInfo::default()
    };
    let call = || {
        let error = bomb
            .allocate(snapshot.clone(), &pod)
            .expect_err("memory-bomb never answers");
        assert!(
            error.to_string().contains("exceeded its memory limit"),
            "{error}"
        );
    };
    // Code, the trap path and the slots' first use paid for before measuring.
    call();
    let before = resident_bytes();
    // Concurrent calls, so that several slots are dirtied (sequential calls reuse one).
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| (0..CALLS_PER_THREAD).for_each(|_| call()));
        }
    });
    let grown = resident_bytes().saturating_sub(before);
    // Every slot the calls used keeps at most 128 KiB (plus its table's 64 KiB); without the
    // cap each would keep the 16 MiB the plugin dirtied, 128 MiB for 8 slots. The rest of the
    // allowance is the threads' stacks and the allocator's arenas.
    let allowance = THREADS as u64 * (192 << 10) + (16 << 20);
    assert!(
        grown < allowance,
        "{THREADS} threads of calls that each dirtied 16 MiB left the process {} KiB bigger (allowance {} KiB)",
        grown >> 10,
        allowance >> 10
    );
}
