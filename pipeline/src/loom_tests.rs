//! Loom model tests of the pools' cross-thread protocols. Run with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p pipeline --release --lib loom
//! ```
//!
//! (a separate target dir avoids rebuilding the normal one:
//! `CARGO_TARGET_DIR=target/loom`). Under `--cfg loom` the pools' mutexes
//! and atomics come from `loom` (see `crate::sync`), so the models explore
//! the code the data path runs. crossbeam's `ArrayQueue` is not
//! instrumented: loom treats its operations as opaque steps, so the `ring`
//! model checks our bookkeeping around the queue, not the queue itself.

use crate::hdrpool::{PageRefs, Release};
use crate::{
    ForeignReturn, HdrPoolStrategy, HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig,
};
use driver::{Buf, BufPool, DmaSpace};
use loom::cell::UnsafeCell;
use loom::thread;
use std::collections::HashSet;
use std::sync::Arc;

use driver::dma::NoIommu;

fn space() -> Arc<DmaSpace> {
    DmaSpace::new(Arc::new(NoIommu))
}

/// Owner cache + batched foreign returns (spill list): the owner keeps
/// allocating while another thread gives two buffers back in one batch.
/// No buffer is lent twice, and all come back.
#[test]
fn loom_owner_cache_with_foreign_returns() {
    loom::model(|| {
        let space = space();
        let cfg = PagePoolConfig {
            buffers: 4,
            cache_size: 2,
            bulk: 2,
            checked: false,
            foreign: ForeignReturn::Batched,
            ..Default::default()
        };
        let mut pool = PagePool::new(&space, cfg).unwrap();
        let sent: Vec<Buf> = (0..2).map(|_| pool.alloc().unwrap()).collect();
        let sent_idx: HashSet<u32> = sent.iter().map(|b| b.idx()).collect();
        let ret = pool.returner();
        let t = thread::spawn(move || {
            let mut sent = sent;
            ret.give_back(&mut sent);
        });
        let mut held: Vec<Buf> = Vec::new();
        for _ in 0..3 {
            if let Some(b) = pool.alloc() {
                held.push(b);
            }
        }
        t.join().unwrap();
        let idx: HashSet<u32> = held.iter().map(|b| b.idx()).collect();
        assert_eq!(idx.len(), held.len(), "lent twice");
        // The two never sent are always there; a sent one only once back.
        assert!(held.len() >= 2 && held.len() <= 3);
        held.into_iter().for_each(|b| pool.recycle(b));
        assert_eq!(pool.audit().lent, 0);
        let all: Vec<Buf> = std::iter::from_fn(|| pool.alloc()).collect();
        let idx: HashSet<u32> = all.iter().map(|b| b.idx()).collect();
        assert_eq!((all.len(), idx.len()), (4, 4));
        assert!(sent_idx.is_subset(&idx));
        all.into_iter().for_each(|b| pool.recycle(b));
    });
}

/// Four header slots of one page.
struct Slots([UnsafeCell<u32>; 4]);

// SAFETY: each slot has one writer until it is released, and only the last
// releaser reads them all; that is exactly what the model checks (loom's
// UnsafeCell reports any access not ordered by happens-before).
unsafe impl Sync for Slots {}

/// Packed page refcount: three releases of one page's slots (two foreign
/// threads, the owner's batched release of two), each after writing its
/// slot. Exactly one sees `Last`, and it sees every slot's write.
#[test]
fn loom_packed_last_release() {
    loom::model(|| {
        let refs = Arc::new(PageRefs::new(1));
        refs.arm(0, 4);
        let slots = Arc::new(Slots(std::array::from_fn(|_| UnsafeCell::new(0))));
        let check = |slots: &Slots| {
            for (i, s) in slots.0.iter().enumerate() {
                // SAFETY: the last releaser owns the page; loom reports a
                // race if a writer's release did not happen-before this.
                assert_eq!(unsafe { s.with(|p| *p) }, i as u32 + 1);
            }
        };
        let spawn = |i: usize| {
            let (refs, slots) = (refs.clone(), slots.clone());
            thread::spawn(move || {
                // SAFETY: slot i is this thread's until it releases it.
                slots.0[i].with_mut(|p| unsafe { *p = i as u32 + 1 });
                let r = refs.release_n(0, 1);
                if r == Release::Last {
                    check(&slots);
                }
                r
            })
        };
        let (a, b) = (spawn(0), spawn(1));
        for i in 2..4 {
            // SAFETY: slots 2 and 3 are the owner's until released.
            slots.0[i].with_mut(|p| unsafe { *p = i as u32 + 1 });
        }
        let mine = refs.release_n(0, 2);
        if mine == Release::Last {
            check(&slots);
        }
        let all = [a.join().unwrap(), b.join().unwrap(), mine];
        assert_eq!(
            all.iter().filter(|r| **r == Release::Last).count(),
            1,
            "{all:?}"
        );
        assert_eq!(refs.outstanding(), 0);
    });
}

/// The whole packed strategy: the owner carves a page, recycles half as
/// dummies, a second thread gives the other half back; the page is reused
/// only once every slot is back.
#[test]
fn loom_packed_pool_owner_and_foreign() {
    loom::model(|| {
        let cfg = HeaderPoolConfig {
            strategy: HdrPoolStrategy::Packed,
            buffers: 16,
            slot: 256,
            batch: 4,
        };
        let mut pool = HeaderPool::new(&space(), cfg).unwrap();
        let mut slots: Vec<Buf> = (0..16).map(|_| pool.alloc().unwrap()).collect();
        let real: Vec<Buf> = slots.drain(..8).collect();
        let ret = pool.returner();
        let t = thread::spawn(move || {
            let mut real = real;
            ret.give_back(&mut real);
        });
        slots.into_iter().for_each(|b| pool.recycle(b));
        let early = pool.alloc();
        t.join().unwrap();
        let late = pool.alloc();
        assert!(
            late.is_some() || early.is_some(),
            "the page comes back once every slot is in"
        );
        [early, late]
            .into_iter()
            .flatten()
            .for_each(|b| pool.recycle(b));
        assert_eq!(pool.audit().lent, 0);
    });
}

/// The ring strategy's owner cache against a foreign returner (the queue
/// itself is opaque to loom, see the module doc).
#[test]
fn loom_ring_owner_and_foreign() {
    loom::model(|| {
        let cfg = HeaderPoolConfig {
            strategy: HdrPoolStrategy::Ring,
            buffers: 16,
            slot: 256,
            batch: 2,
        };
        let mut pool = HeaderPool::new(&space(), cfg).unwrap();
        let all: Vec<Buf> = (0..16).map(|_| pool.alloc().unwrap()).collect();
        let mut it = all.into_iter();
        let foreign: Vec<Buf> = it.by_ref().take(8).collect();
        let ret = pool.returner();
        let t = thread::spawn(move || {
            let mut foreign = foreign;
            ret.give_back(&mut foreign);
        });
        it.for_each(|b| pool.recycle(b));
        t.join().unwrap();
        let again: Vec<Buf> = std::iter::from_fn(|| pool.alloc()).collect();
        let idx: HashSet<u32> = again.iter().map(|b| b.idx()).collect();
        assert_eq!((again.len(), idx.len()), (16, 16));
        again.into_iter().for_each(|b| pool.recycle(b));
        assert_eq!(pool.audit().lent, 0);
    });
}
