//! Quick pool micro-benchmark: ns per alloc+recycle on the owner fast path,
//! ns per buffer for foreign `give_back` in batches of 64 (batched spill
//! list, the default, and the per-buffer ArrayQueue path), through a
//! `Returner` at recycle_batch 1 and 64, and ns per buffer for the refill
//! that takes them back. Min and median of 5 repeats.
//!
//! `cargo run --release -p pipeline --example poolbench_quick [owner_core [returner_core]]`
//!
//! Without arguments, on a machine with 2 or more CPUs, the owner runs on
//! core 0 and the returning thread on core 1; with only the owner's core
//! given, the returner takes the next core. The foreign path is measured
//! twice, labelled: "same thread" gives back on the owner's own thread (the
//! path's instruction cost, every cache line already local), "cross-thread"
//! gives back from a second thread on another core while the owner keeps
//! allocating (the cost a cross-CPU return really pays: the spill list's
//! or the ring's cache lines move between cores). Only the cross-thread
//! figure compares with Linux's cross-CPU page_pool return (ptr_ring).
//!
//! The "1 at a time" line is the owner fast path in its tightest form: the
//! LIFO cache hands back the buffer just recycled, so it measures the
//! latency of one alloc + one recycle. The ring-slot and 32-at-a-time lines
//! are closer to an RX ring refill. The Mutex lines are not the pool: they
//! show what one lock per batch costs next to the ArrayQueue's one atomic
//! read-modify-write per buffer.

use driver::{Buf, BufPool, DmaSpace};
use pipeline::{ForeignReturn, HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig, Returner};
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use driver::dma::NoIommu;

const REPEATS: usize = 5;
const BUFFERS: usize = 4096;
const BATCH: usize = 64;

fn report(what: &str, mut ns: Vec<f64>) {
    ns.sort_by(f64::total_cmp);
    println!(
        "{what:<64} min {:>6.2} ns   median {:>6.2} ns",
        ns[0],
        ns[ns.len() / 2]
    );
}

/// One buffer at a time: alloc, recycle (never leaves the cache).
fn owner_single<P: BufPool>(pool: &mut P) -> f64 {
    const N: u64 = 20_000_000;
    let t = Instant::now();
    for _ in 0..N {
        let b = pool.alloc().unwrap();
        pool.recycle(black_box(b));
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

/// RX-ring shape: each step takes the buffer out of one of 512 ring slots,
/// recycles it and posts a fresh one in its place.
fn owner_ring_slots(pool: &mut PagePool) -> f64 {
    const N: usize = 20_000_000;
    let mut slots: Vec<Buf> = (0..512).map(|_| pool.alloc().unwrap()).collect();
    let t = Instant::now();
    for i in 0..N {
        let fresh = pool.alloc().unwrap();
        let old = std::mem::replace(&mut slots[i % 512], fresh);
        pool.recycle(old);
    }
    let ns = t.elapsed().as_nanos() as f64 / N as f64;
    slots.into_iter().for_each(|b| pool.recycle(b));
    ns
}

/// RX-refill shape: alloc 32, then recycle 32 (still within the cache).
fn owner_batch32(pool: &mut PagePool, held: &mut Vec<Buf>) -> f64 {
    const ROUNDS: u64 = 500_000;
    let t = Instant::now();
    for _ in 0..ROUNDS {
        held.extend((0..32).map(|_| pool.alloc().unwrap()));
        for b in black_box(&mut *held).drain(..) {
            pool.recycle(b);
        }
    }
    t.elapsed().as_nanos() as f64 / (ROUNDS * 32) as f64
}

/// Takes every buffer out (via refills), then gives all back through the
/// foreign path in batches of 64. Returns (give_back ns/buf, refill ns/buf).
fn foreign(pool: &mut PagePool) -> (f64, f64) {
    const ROUNDS: usize = 500;
    let returner = pool.returner();
    let mut batches: Vec<Vec<Buf>> = (0..BUFFERS / BATCH)
        .map(|_| Vec::with_capacity(BATCH))
        .collect();
    let (mut give, mut take) = (0u128, 0u128);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for batch in batches.iter_mut() {
            batch.extend((0..BATCH).map(|_| pool.alloc().unwrap()));
        }
        take += t.elapsed().as_nanos();
        let t = Instant::now();
        for batch in batches.iter_mut() {
            returner.give_back(black_box(batch));
        }
        give += t.elapsed().as_nanos();
    }
    let n = (ROUNDS * BUFFERS) as f64;
    (give as f64 / n, take as f64 / n)
}

/// Every buffer out, then back through a `Returner` with `recycle_batch`.
/// ns per buffer for the pushes (including the give_back calls).
fn via_returner(pool: &mut PagePool, recycle_batch: usize) -> f64 {
    const ROUNDS: usize = 200;
    let mut held: Vec<Buf> = Vec::with_capacity(BUFFERS);
    let mut spent = 0u128;
    for _ in 0..ROUNDS {
        held.extend(std::iter::from_fn(|| pool.alloc()));
        let n = held.len();
        let mut r = Returner::new(pool.returner(), recycle_batch).unwrap();
        let t = Instant::now();
        for b in held.drain(..) {
            r.push(b);
        }
        r.flush();
        spent += t.elapsed().as_nanos();
        assert_eq!(n, BUFFERS);
    }
    spent as f64 / (ROUNDS * BUFFERS) as f64
}

/// Two threads: the owner allocates and hands batches of 64 to a second
/// thread (pinned to `returner_core`), which gives them back while the owner
/// goes on allocating (refilling from what came back). ns per buffer of the
/// `give_back` calls, timed in the returning thread.
fn foreign_cross_thread(pool: &mut PagePool, returner_core: Option<usize>) -> f64 {
    const BATCHES: usize = 100_000;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Buf>>(16);
    let returner = pool.returner();
    let worker = std::thread::spawn(move || {
        if let Some(core) = returner_core {
            pipeline::pin_current_thread(core).unwrap();
        }
        let mut spent = 0u128;
        let mut n = 0usize;
        for mut batch in rx {
            n += batch.len();
            let t = Instant::now();
            returner.give_back(&mut batch);
            spent += t.elapsed().as_nanos();
        }
        spent as f64 / n as f64
    });
    for _ in 0..BATCHES {
        let batch: Vec<Buf> = std::iter::from_fn(|| pool.alloc()).take(BATCH).collect();
        if batch.is_empty() {
            std::thread::yield_now();
            continue;
        }
        tx.send(batch).unwrap();
    }
    drop(tx);
    worker.join().unwrap()
}

/// Not the pool: what a shared free list costs when it takes one lock per
/// batch instead of one atomic per buffer (the ArrayQueue), for comparison.
fn mutex_reference() -> (f64, f64) {
    const ROUNDS: usize = 500;
    let ring = Mutex::new((0..BUFFERS as u32).collect::<Vec<u32>>());
    let mut batches: Vec<Vec<u32>> = (0..BUFFERS / BATCH)
        .map(|_| Vec::with_capacity(BATCH))
        .collect();
    let (mut give, mut take) = (0u128, 0u128);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for batch in batches.iter_mut() {
            let mut r = ring.lock().unwrap();
            let at = r.len() - BATCH;
            batch.extend(r.drain(at..));
        }
        take += t.elapsed().as_nanos();
        let t = Instant::now();
        for batch in batches.iter_mut() {
            ring.lock()
                .unwrap()
                .extend(black_box(&mut *batch).drain(..));
        }
        give += t.elapsed().as_nanos();
    }
    let n = (ROUNDS * BUFFERS) as f64;
    (give as f64 / n, take as f64 / n)
}

fn main() {
    let mut cores: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("core number"))
        .collect();
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if ncpu >= 2 {
        // Owner and returner on two different cores unless told otherwise.
        if cores.is_empty() {
            cores.push(0);
        }
        if cores.len() == 1 {
            cores.push((cores[0] + 1) % ncpu);
        }
    }
    if let Some(&core) = cores.first() {
        pipeline::pin_current_thread(core).unwrap();
    }
    let returner_core = cores.get(1).copied();
    println!(
        "owner thread on core {}, cross-thread returner on core {}",
        cores
            .first()
            .map_or("(not pinned)".to_string(), |c| c.to_string()),
        returner_core.map_or("(not pinned)".to_string(), |c| c.to_string())
    );
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run with --release for meaningful numbers");
    }
    let space = DmaSpace::new(Arc::new(NoIommu));
    let cfg = PagePoolConfig {
        buffers: BUFFERS,
        checked: false,
        ..Default::default()
    };
    // Boxed like in a queue struct (a stack copy can 4K-alias the loop's stack slots).
    let mut pool = Box::new(PagePool::new(&space, cfg).unwrap());
    println!(
        "page pool: {BUFFERS} buffers, cache 128, bulk 64, unchecked, hugepage {}",
        pool.region().is_hugepage()
    );

    let mut held = Vec::with_capacity(64);
    owner_single(&mut *pool); // warm-up
    report(
        "owner alloc+recycle, 1 at a time",
        (0..REPEATS).map(|_| owner_single(&mut *pool)).collect(),
    );
    report(
        "owner alloc+recycle, 512 ring slots (per buf)",
        (0..REPEATS).map(|_| owner_ring_slots(&mut pool)).collect(),
    );
    report(
        "owner alloc+recycle, 32 at a time (per buf)",
        (0..REPEATS)
            .map(|_| owner_batch32(&mut pool, &mut held))
            .collect(),
    );
    let runs: Vec<(f64, f64)> = (0..REPEATS).map(|_| foreign(&mut pool)).collect();
    report(
        "foreign give_back, same thread, spill list, batch 64 (per buf)",
        runs.iter().map(|r| r.0).collect(),
    );
    report(
        "owner refill from spill list, bulk 64 (per buf)",
        runs.iter().map(|r| r.1).collect(),
    );
    report(
        "Returner recycle_batch 64 (per buf)",
        (0..REPEATS).map(|_| via_returner(&mut pool, 64)).collect(),
    );
    report(
        "Returner recycle_batch 1 (per buf)",
        (0..REPEATS).map(|_| via_returner(&mut pool, 1)).collect(),
    );
    let mut ring_pool = Box::new(
        PagePool::new(
            &space,
            PagePoolConfig {
                foreign: ForeignReturn::Ring,
                ..cfg
            },
        )
        .unwrap(),
    );
    let runs: Vec<(f64, f64)> = (0..REPEATS).map(|_| foreign(&mut ring_pool)).collect();
    report(
        "foreign give_back, same thread, ArrayQueue, batch 64 (per buf)",
        runs.iter().map(|r| r.0).collect(),
    );
    report(
        "owner refill from ArrayQueue, bulk 64 (per buf)",
        runs.iter().map(|r| r.1).collect(),
    );
    report(
        "foreign give_back, cross-thread, spill list, batch 64 (per buf)",
        (0..REPEATS)
            .map(|_| foreign_cross_thread(&mut pool, returner_core))
            .collect(),
    );
    report(
        "foreign give_back, cross-thread, ArrayQueue, batch 64 (per buf)",
        (0..REPEATS)
            .map(|_| foreign_cross_thread(&mut ring_pool, returner_core))
            .collect(),
    );

    // The production strategy (the default, packed).
    let hcfg = HeaderPoolConfig {
        buffers: BUFFERS,
        ..Default::default()
    };
    let mut headers = Box::new(HeaderPool::new(&space, hcfg).unwrap());
    owner_single(&mut *headers);
    report(
        "header pool (128 B slots, packed): owner alloc+recycle",
        (0..REPEATS).map(|_| owner_single(&mut *headers)).collect(),
    );

    let runs: Vec<(f64, f64)> = (0..REPEATS).map(|_| mutex_reference()).collect();
    report(
        "reference Mutex<Vec<u32>>, batch 64: give (per buf)",
        runs.iter().map(|r| r.0).collect(),
    );
    report(
        "reference Mutex<Vec<u32>>, batch 64: take (per buf)",
        runs.iter().map(|r| r.1).collect(),
    );

    let mut checked = PagePool::new(
        &space,
        PagePoolConfig {
            checked: true,
            ..cfg
        },
    )
    .unwrap();
    report(
        "checked mode: owner alloc+recycle, 1 at a time",
        (0..REPEATS).map(|_| owner_single(&mut checked)).collect(),
    );
    let a = pool.audit();
    println!("audit: {a:?}");
    println!("stats: {:?}", pool.stats());
    println!("spill lock: {:?}", pool.lock_stats());
}
