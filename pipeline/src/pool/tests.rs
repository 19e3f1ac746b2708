use super::*;
use crate::{HdrPoolStrategy, HeaderPool, HeaderPoolConfig};
use driver::DmaMapper;
use std::collections::HashSet;
use std::sync::Mutex;

/// Accepts every mapping and records it, standing in for an IOMMU.
#[derive(Default)]
struct RecordingMapper {
    maps: Mutex<Vec<(u64, usize)>>,
    unmaps: Mutex<Vec<(u64, usize)>>,
}

impl DmaMapper for RecordingMapper {
    unsafe fn map(&self, iova: u64, _host: *mut u8, len: usize) -> Result<(), DmaError> {
        self.maps.lock().unwrap().push((iova, len));
        Ok(())
    }
    fn unmap(&self, iova: u64, len: usize) -> Result<(), DmaError> {
        self.unmaps.lock().unwrap().push((iova, len));
        Ok(())
    }
}

fn space() -> (Arc<RecordingMapper>, Arc<DmaSpace>) {
    let mapper = Arc::new(RecordingMapper::default());
    let space = DmaSpace::new(mapper.clone());
    (mapper, space)
}

fn pages_in(space: &Arc<DmaSpace>, buffers: usize) -> PagePool {
    PagePool::new(
        space,
        PagePoolConfig {
            buffers,
            ..Default::default()
        },
    )
    .unwrap()
}

fn pages(buffers: usize, checked: bool) -> PagePool {
    PagePool::new(
        &space().1,
        PagePoolConfig {
            buffers,
            checked,
            ..Default::default()
        },
    )
    .unwrap()
}

fn drain_all(pool: &mut impl BufPool) -> Vec<Buf> {
    std::iter::from_fn(|| pool.alloc()).collect()
}

fn assert_distinct_and_complete(bufs: &[Buf], total: usize) {
    let idx: HashSet<u32> = bufs.iter().map(|b| b.idx()).collect();
    assert_eq!(idx.len(), bufs.len(), "a buffer was handed out twice");
    assert_eq!(idx, (0..total as u32).collect(), "a buffer was lost");
}

/// Same idx/addresses as `b`: what a double free looks like.
fn forge(b: &Buf) -> Buf {
    forge_idx(b, b.idx())
}

/// `b`'s addresses under index `idx`: a buffer the pool must refuse.
fn forge_idx(b: &Buf, idx: u32) -> Buf {
    let ptr = std::ptr::NonNull::new(b.as_ptr().cast_mut()).unwrap();
    // SAFETY: the forged handle aliases `b`'s bytes, which breaks the
    // exclusivity rule, but no test ever looks at the bytes of a forged
    // buffer: the pools only read `idx` and `iova` of a returned `Buf`.
    unsafe { Buf::from_raw_parts(idx, b.iova(), ptr, b.capacity() as u16, b.headroom() as u16) }
}

#[test]
fn alloc_until_empty_then_return_everything() {
    for checked in [false, true] {
        let mut pool = pages(300, checked);
        let bufs = drain_all(&mut pool);
        assert_eq!(bufs.len(), 300);
        assert_distinct_and_complete(&bufs, 300);
        let s = pool.stats();
        assert_eq!(s.alloc_empty, 1);
        assert_eq!(s.alloc_refill, 300);
        // Refills of 64, 64, 64, 64, 44, then one that finds nothing.
        assert_eq!(s.alloc_slow, 6);
        assert_eq!(s.alloc_fast + s.alloc_slow - s.alloc_empty, 300);
        assert_eq!(
            pool.audit(),
            PoolAudit {
                total: 300,
                in_cache: 0,
                in_ring: 0,
                lent: 300
            }
        );

        for b in bufs {
            pool.recycle(b);
        }
        let a = pool.audit();
        assert_eq!((a.lent, a.in_cache + a.in_ring), (0, 300));
        assert_eq!(pool.lent(), 0);
        assert_eq!(pool.stats().recycle_ring_full, 0);
        // And all of them can be handed out again.
        let again = drain_all(&mut pool);
        assert_distinct_and_complete(&again, 300);
        again.into_iter().for_each(|b| pool.recycle(b));
    }
}

#[test]
fn refill_and_flush_move_64_at_a_time() {
    let mut pool = pages(1024, false);
    let mut held: Vec<Buf> = (0..64).map(|_| pool.alloc().unwrap()).collect();
    let s = pool.stats();
    assert_eq!((s.alloc_slow, s.alloc_refill, s.alloc_fast), (1, 64, 63));
    held.push(pool.alloc().unwrap());
    let s = pool.stats();
    assert_eq!((s.alloc_slow, s.alloc_refill, s.alloc_fast), (2, 128, 63));
    held.extend((0..127).map(|_| pool.alloc().unwrap()));
    assert_eq!(
        pool.audit(),
        PoolAudit {
            total: 1024,
            in_cache: 0,
            in_ring: 832,
            lent: 192
        }
    );

    // 128 fit in the cache; the 129th flushes the 64 coldest first.
    for b in held.drain(..128) {
        pool.recycle(b);
    }
    assert_eq!(pool.stats().recycle_cache_full, 0);
    pool.recycle(held.pop().unwrap());
    assert_eq!(pool.stats().recycle_cache_full, 64);
    assert_eq!(
        pool.audit(),
        PoolAudit {
            total: 1024,
            in_cache: 65,
            in_ring: 896,
            lent: 63
        }
    );
    for b in held.drain(..) {
        pool.recycle(b);
    }
    let s = pool.stats();
    assert_eq!((s.recycle_cached, s.recycle_cache_full), (192, 64));
    assert_eq!(
        pool.audit(),
        PoolAudit {
            total: 1024,
            in_cache: 128,
            in_ring: 896,
            lent: 0
        }
    );
}

#[test]
fn cache_is_lifo() {
    let mut pool = pages(256, false);
    let a = pool.alloc().unwrap();
    let idx = a.idx();
    pool.recycle(a);
    let again = pool.alloc().unwrap();
    assert_eq!(again.idx(), idx, "the hottest buffer is reused first");
    pool.recycle(again);
}

#[test]
fn foreign_returns_come_back_and_are_drained_on_refill() {
    let mut pool = pages(1024, true);
    let mut held: Vec<Buf> = (0..1000).map(|_| pool.alloc().unwrap()).collect();
    let returner = pool.returner();
    let bufs: Vec<Buf> = held.drain(..900).collect();
    std::thread::spawn(move || {
        let mut bufs = bufs;
        while !bufs.is_empty() {
            let n = bufs.len().min(64);
            let mut batch: Vec<Buf> = bufs.drain(..n).collect();
            returner.give_back(&mut batch);
            assert!(batch.is_empty(), "give_back takes every buffer");
        }
    })
    .join()
    .unwrap();
    let s = pool.stats();
    assert_eq!((s.recycle_ring, s.recycle_ring_full), (900, 0));
    // 16 refills of 64 served the first 1000; 24 are still cached.
    assert_eq!(
        pool.audit(),
        PoolAudit {
            total: 1024,
            in_cache: 24,
            in_ring: 900,
            lent: 100
        }
    );

    let refill_before = pool.stats().alloc_refill;
    held.extend(drain_all(&mut pool));
    assert_distinct_and_complete(&held, 1024);
    assert_eq!(
        pool.stats().alloc_refill - refill_before,
        900,
        "every foreign return was refilled"
    );
    pool.returner().give_back(&mut held);
    assert_eq!(pool.audit().lent, 0);
}

#[test]
fn page_addresses_are_page_aligned_plus_headroom() {
    let (_m, space) = space();
    let cfg = PagePoolConfig {
        buffers: 600,
        buf_len: 3072,
        headroom: 512,
        ..Default::default()
    };
    let mut pool = PagePool::new(&space, cfg).unwrap();
    assert_eq!((pool.buf_len(), pool.headroom()), (3072, 512));
    let (base, base_iova, len) = (
        pool.region().as_ptr() as usize,
        pool.region().iova(),
        pool.region().len(),
    );
    assert_eq!(base % PAGE_SIZE, 0);
    assert_eq!(base_iova % PAGE_SIZE as u64, 0);
    let bufs = drain_all(&mut pool);
    let mut pages = HashSet::new();
    for b in &bufs {
        let off = b.as_ptr() as usize - base;
        assert_eq!(
            off as u64,
            b.iova() - base_iova,
            "ptr and iova describe the same byte"
        );
        assert_eq!(off % PAGE_SIZE, 512);
        assert_eq!(
            off / PAGE_SIZE,
            b.idx() as usize,
            "buffer idx lives in page idx"
        );
        assert!(off + 3072 <= len);
        assert!(pages.insert(off / PAGE_SIZE));
    }
    bufs.into_iter().for_each(|b| pool.recycle(b));
}

#[test]
fn header_slots_do_not_overlap_and_stay_in_their_page() {
    let (_m, space) = space();
    for (slot, strategy) in (64..=960)
        .step_by(64)
        .flat_map(|slot| HdrPoolStrategy::ALL.map(|s| (slot, s)))
        .filter(|&(slot, s)| s != HdrPoolStrategy::Packed || slot <= 256)
    {
        let buffers = 1000;
        let cfg = HeaderPoolConfig {
            strategy,
            buffers,
            slot,
            ..Default::default()
        };
        let mut pool = HeaderPool::new(&space, cfg).unwrap();
        assert_eq!((pool.buf_len(), pool.headroom()), (slot, 0));
        let per_page = PAGE_SIZE / slot;
        assert_eq!(pool.layout().per_page, per_page);
        // Whole pages of slots.
        assert_eq!(pool.buffers(), buffers.div_ceil(per_page) * per_page);
        let (base, base_iova) = (pool.region().as_ptr() as usize, pool.region().iova());
        let bufs = drain_all(&mut pool);
        assert_distinct_and_complete(&bufs, pool.buffers());
        let mut offs: Vec<usize> = bufs
            .iter()
            .map(|b| {
                let off = b.as_ptr() as usize - base;
                assert_eq!(off as u64, b.iova() - base_iova);
                assert_eq!(off % 64, 0, "slots are cache-line aligned");
                assert!(
                    off % PAGE_SIZE + slot <= PAGE_SIZE,
                    "slot {slot} at {off:#x} crosses its page"
                );
                assert_eq!(off / PAGE_SIZE, b.idx() as usize / per_page);
                assert!(off + slot <= pool.region().len());
                off
            })
            .collect();
        offs.sort_unstable();
        assert!(
            offs.windows(2).all(|w| w[1] - w[0] >= slot),
            "slot {slot}: overlapping buffers"
        );
        // Packed: the pool uses exactly ceil(buffers / per_page) pages.
        assert_eq!(
            offs.last().unwrap() / PAGE_SIZE + 1,
            buffers.div_ceil(per_page)
        );
        bufs.into_iter().for_each(|b| pool.recycle(b));
    }
}

#[test]
fn index_arithmetic_matches_division() {
    for per_page in 1..=64usize {
        let l = PoolLayout::new(PAGE_SIZE / per_page, 0, PAGE_SIZE / per_page);
        let check = |idx: u32| {
            let (page, slot) = (idx as usize / per_page, idx as usize % per_page);
            assert_eq!(
                l.offset(idx),
                page * PAGE_SIZE + slot * l.stride,
                "idx {idx}, per_page {per_page}"
            );
        };
        let top = MAX_BUFFERS as u32;
        (0..1 << 14).chain(top - (1 << 14)..top).for_each(check);
        (0..top).step_by(9973).for_each(check);
    }
}

#[test]
fn bad_configs_are_rejected() {
    let (_m, space) = space();
    let page = |buf_len, headroom| {
        PagePool::new(
            &space,
            PagePoolConfig {
                buffers: 8,
                buf_len,
                headroom,
                ..Default::default()
            },
        )
    };
    for (len, head) in [
        (512, 0),
        (1000, 0),
        (1536, 0),
        (5120, 0),
        (4096, 256),
        (3072, 1025),
        (2048, 3),
    ] {
        assert_eq!(
            page(len, head).unwrap_err(),
            PoolError::BufLen {
                buf_len: len,
                headroom: head
            }
        );
    }
    for (len, head) in [(1024, 0), (4096, 0), (3072, 1024), (3072, 256), (2048, 2)] {
        assert!(page(len, head).is_ok(), "{len} + {head}");
    }
    let header = |slot| {
        HeaderPool::new(
            &space,
            HeaderPoolConfig {
                strategy: HdrPoolStrategy::Ring,
                buffers: 8,
                slot,
                ..Default::default()
            },
        )
    };
    for slot in [0, 32, 100, 1024, 4096] {
        assert_eq!(header(slot).unwrap_err(), PoolError::SlotSize(slot));
    }
    assert!(header(64).is_ok() && header(960).is_ok());
    for buffers in [0, MAX_BUFFERS + 1] {
        let e = PagePool::new(
            &space,
            PagePoolConfig {
                buffers,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e, PoolError::BufferCount(buffers));
    }
    for (cache_size, bulk) in [(128, 0), (64, 65), (0, 0)] {
        let cfg = PagePoolConfig {
            buffers: 8,
            cache_size,
            bulk,
            ..Default::default()
        };
        assert_eq!(
            PagePool::new(&space, cfg).unwrap_err(),
            PoolError::Cache { cache_size, bulk }
        );
    }
}

#[test]
fn dma_errors_are_reported() {
    struct Refuse;
    impl DmaMapper for Refuse {
        unsafe fn map(&self, _: u64, _: *mut u8, _: usize) -> Result<(), DmaError> {
            Err(DmaError::Backend("no".into()))
        }
        fn unmap(&self, _: u64, _: usize) -> Result<(), DmaError> {
            Ok(())
        }
    }
    let space = DmaSpace::new(Arc::new(Refuse));
    let e = PagePool::new(&space, PagePoolConfig::default()).unwrap_err();
    assert_eq!(e, PoolError::Dma(DmaError::Backend("no".into())));
}

#[test]
fn out_of_range_and_foreign_buffers_are_refused_and_counted() {
    for checked in [false, true] {
        let (_m, space) = space();
        let mut pool = PagePool::new(
            &space,
            PagePoolConfig {
                buffers: 16,
                checked,
                ..Default::default()
            },
        )
        .unwrap();
        let mut other = HeaderPool::new(
            &space,
            HeaderPoolConfig {
                buffers: 16,
                ..Default::default()
            },
        )
        .unwrap();
        let b = pool.alloc().unwrap();
        let before = pool.audit();

        let bad = forge_idx(&b, 16);
        pool.recycle(bad);
        let bad = forge_idx(&b, u32::MAX);
        pool.returner().give_back(&mut vec![bad]);
        // In range, but the address belongs to another pool.
        let h = other.alloc().unwrap();
        pool.recycle(forge(&h));
        pool.returner().give_back(&mut vec![forge(&h)]);

        let s = pool.stats();
        assert_eq!(
            (s.recycle_ring_full, s.recycle_ring, s.recycle_cached),
            (4, 0, 0)
        );
        assert_eq!(pool.audit(), before, "refused buffers never enter the pool");
        pool.recycle(b);
        other.recycle(h);
        assert_eq!((pool.lent(), other.audit().lent), (0, 0));
    }
}

#[test]
fn checked_mode_refuses_double_returns_on_both_paths() {
    let mut pool = pages(64, true);
    let a = pool.alloc().unwrap();
    let b = pool.alloc().unwrap();
    let (a2, b2) = (forge(&a), forge(&b));
    pool.recycle(a);
    pool.recycle(a2);
    pool.returner().give_back(&mut vec![b]);
    pool.returner().give_back(&mut vec![b2]);
    let s = pool.stats();
    assert_eq!(
        (s.recycle_ring_full, s.recycle_cached, s.recycle_ring),
        (2, 1, 1)
    );
    let all = drain_all(&mut pool);
    assert_distinct_and_complete(&all, 64);
    // Home again, so the memory is freed (Miri checks for leaks).
    all.into_iter().for_each(|b| pool.recycle(b));
}

#[test]
fn unchecked_mode_catches_a_double_return_when_the_ring_overflows() {
    let mut pool = pages(64, false);
    let a = pool.alloc().unwrap();
    let dup = forge(&a);
    let rest = drain_all(&mut pool);
    let returner = pool.returner();
    returner.give_back(&mut rest.into_iter().collect());
    returner.give_back(&mut vec![a]);
    assert_eq!(pool.stats().recycle_ring_full, 0);
    returner.give_back(&mut vec![dup]);
    assert_eq!(
        pool.stats().recycle_ring_full,
        1,
        "a 65th buffer in a 64-buffer ring is refused"
    );
    assert_eq!(pool.audit().lent, 0);
}

#[test]
fn memory_lives_until_the_last_returner_is_gone() {
    let (mapper, space) = space();
    let mut pool = PagePool::new(
        &space,
        PagePoolConfig {
            buffers: 32,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        mapper.maps.lock().unwrap().len(),
        1,
        "mapped once at creation"
    );
    let held: Vec<Buf> = (0..3).map(|_| pool.alloc().unwrap()).collect();
    let one = pool.alloc().unwrap();
    pool.recycle(one);
    let returner = pool.returner();
    let stats = pool.close();
    assert_eq!(stats.released, 29, "idle buffers at teardown");
    assert!(
        mapper.unmaps.lock().unwrap().is_empty(),
        "a returner still holds the memory"
    );
    // Late returns still land in memory that is mapped.
    returner.give_back(&mut held.into_iter().collect());
    drop(returner);
    assert_eq!(*mapper.unmaps.lock().unwrap(), *mapper.maps.lock().unwrap());
}

#[test]
fn drop_flushes_the_cache() {
    for strategy in HdrPoolStrategy::ALL {
        let (mapper, space) = space();
        let mut pool = HeaderPool::new(
            &space,
            HeaderPoolConfig {
                strategy,
                buffers: 100,
                ..Default::default()
            },
        )
        .unwrap();
        let bufs = drain_all(&mut pool);
        bufs.into_iter().for_each(|b| pool.recycle(b));
        let returner = pool.returner();
        drop(pool);
        assert_eq!(mapper.unmaps.lock().unwrap().len(), 0, "{strategy}");
        drop(returner);
        assert_eq!(mapper.unmaps.lock().unwrap().len(), 1, "{strategy}");
    }
}

/// A buffer that never comes back keeps its pool's memory mapped and
/// allocated for good: a `Buf` never outlives its bytes.
#[test]
#[cfg_attr(miri, ignore = "leaks the pools' memory on purpose")]
fn memory_with_a_buffer_still_lent_is_never_freed() {
    let (mapper, space) = space();
    let mut pages = pages_in(&space, 8);
    let mut lost = vec![pages.alloc().unwrap()];
    drop(pages);
    for strategy in HdrPoolStrategy::ALL {
        let mut hdrs = HeaderPool::new(
            &space,
            HeaderPoolConfig {
                strategy,
                buffers: 64,
                ..Default::default()
            },
        )
        .unwrap();
        // Some slots carved and returned, one kept.
        let mut some = drain_all(&mut hdrs);
        lost.push(some.pop().unwrap());
        some.into_iter().for_each(|b| hdrs.recycle(b));
        drop(hdrs);
    }
    assert!(mapper.unmaps.lock().unwrap().is_empty());
    lost.iter_mut().for_each(|b| b.as_mut_slice(8).fill(0xa5));
    assert!(lost.iter().all(|b| b.as_slice(8) == [0xa5; 8]));
}

#[test]
fn stats_serialize_with_page_pool_names() {
    let s = format!("{:?}", PoolStats::default());
    for name in [
        "alloc_fast",
        "alloc_slow",
        "alloc_refill",
        "alloc_empty",
        "recycle_cached",
        "recycle_cache_full",
        "recycle_ring",
        "recycle_ring_full",
        "released",
    ] {
        assert!(s.contains(name), "{name}");
    }
}

#[test]
fn returner_takes_one_lock_per_batch_and_the_owner_drains_the_spill_list() {
    let mut pool = pages(4096, false);
    let bufs: Vec<Buf> = (0..4000).map(|_| pool.alloc().unwrap()).collect();
    let locks_before = pool.lock_stats().lock_acquisitions;
    let mut r = Returner::new(pool.returner(), 64).unwrap();
    assert_eq!(r.recycle_batch(), 64);
    for b in bufs {
        r.push(b);
    }
    assert_eq!(r.pending(), 4000 % 64);
    r.flush();
    assert_eq!(r.pending(), 0);
    let ls = pool.lock_stats();
    assert_eq!(
        ls.lock_acquisitions - locks_before,
        4000usize.div_ceil(64) as u64,
        "one lock per batch"
    );
    assert_eq!(ls.contended, 0);
    let s = pool.stats();
    assert_eq!((s.recycle_ring, s.recycle_ring_full), (4000, 0));
    assert_eq!(pool.audit().lent, 0);
    // The owner takes them back through refills, `bulk` per lock.
    let again = drain_all(&mut pool);
    assert_distinct_and_complete(&again, 4096);
    pool.returner().give_back(&mut again.into_iter().collect());
    assert_eq!(pool.audit().lent, 0);
}

#[test]
fn returner_batch_bounds_and_drop_flushes() {
    let mut pool = pages(64, false);
    for bad in [0, MAX_RECYCLE_BATCH + 1] {
        assert_eq!(
            Returner::new(pool.returner(), bad).unwrap_err(),
            PoolError::RecycleBatch(bad)
        );
    }
    let mut r = Returner::new(pool.returner(), 1).unwrap();
    r.push(pool.alloc().unwrap());
    assert_eq!(r.pending(), 0, "batch 1 gives back every buffer at once");
    let mut r = Returner::new(pool.returner(), MAX_RECYCLE_BATCH).unwrap();
    r.push(pool.alloc().unwrap());
    assert_eq!(pool.lent(), 1);
    drop(r);
    assert_eq!(pool.lent(), 0);
}

#[test]
fn ring_foreign_path_still_works() {
    let mut pool = PagePool::new(
        &space().1,
        PagePoolConfig {
            buffers: 128,
            foreign: ForeignReturn::Ring,
            ..Default::default()
        },
    )
    .unwrap();
    let mut bufs = drain_all(&mut pool);
    pool.returner().give_back(&mut bufs);
    assert_eq!(pool.lock_stats().lock_acquisitions, 0);
    assert_eq!(
        pool.audit(),
        PoolAudit {
            total: 128,
            in_cache: 0,
            in_ring: 128,
            lent: 0
        }
    );
}

mod random_ops {
    use super::*;
    use proptest::prelude::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[derive(Clone, Debug)]
    enum Op {
        Alloc(usize),
        Recycle(usize),
        Foreign(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1..150usize).prop_map(Op::Alloc),
            (1..150usize).prop_map(Op::Recycle),
            (1..150usize).prop_map(Op::Foreign),
        ]
    }

    proptest! {
        // Under Miri: a few cases (each is interpreted, ~1000x slower) and
        // no regressions file (file access is not allowed in isolation).
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 200 },
            failure_persistence: if cfg!(miri) {
                None
            } else {
                ProptestConfig::default().failure_persistence
            },
            ..ProptestConfig::default()
        })]

        /// Random alloc / owner recycle / foreign give_back (from a second
        /// thread) never lends one buffer twice, and at the end every buffer
        /// is in the pool exactly once.
        #[test]
        fn never_loses_or_duplicates(
            ops in proptest::collection::vec(op(), 1..60),
            buffers in 1..400usize,
            (cache_size, bulk) in (1..160usize).prop_flat_map(|c| (Just(c), 1..=c)),
            checked: bool,
            header: bool,
            ring: bool,
            pick in any::<u64>(),
        ) {
            let (_m, space) = space();
            // The header pool with an owner cache of `2 * bulk` over a
            // queue (`ring`), 21 slots a page. Every strategy has its own
            // proptest in `hdrpool`.
            let strategy = HdrPoolStrategy::Ring;
            let cfg = HeaderPoolConfig { strategy, buffers, slot: 192, batch: bulk };
            let foreign = if ring { ForeignReturn::Ring } else { ForeignReturn::Batched };
            let pcfg = PagePoolConfig { buffers, cache_size, bulk, checked, foreign, ..Default::default() };
            let result = if header {
                run(HeaderPool::new(&space, cfg).unwrap(), &ops, pick)
            } else {
                run(PagePool::new(&space, pcfg).unwrap(), &ops, pick)
            };
            result?;
        }
    }

    fn run(mut pool: impl Pool, ops: &[Op], mut pick: u64) -> Result<(), TestCaseError> {
        let total = pool.audit().total;
        // Indices lent out right now; the foreign thread removes an index
        // *before* giving it back, so the pool handing out a member is a
        // duplicate.
        let lent = Arc::new(Mutex::new(HashSet::new()));
        let (tx, rx) = mpsc::channel::<Vec<Buf>>();
        let (done_tx, done_rx) = mpsc::channel();
        let worker = {
            let (returner, lent) = (pool.returner(), lent.clone());
            std::thread::spawn(move || {
                for mut batch in rx {
                    let mut set = lent.lock().unwrap();
                    batch.iter().for_each(|b| assert!(set.remove(&b.idx())));
                    drop(set);
                    returner.give_back(&mut batch);
                    assert!(batch.is_empty());
                }
                let _ = done_tx.send(());
            })
        };
        let mut held: Vec<Buf> = Vec::new();
        let mut allocated = 0u64;
        let mut take = |held: &mut Vec<Buf>, n: usize| -> Vec<Buf> {
            (0..n.min(held.len()))
                .map(|_| {
                    pick = pick
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    held.swap_remove((pick >> 33) as usize % held.len())
                })
                .collect()
        };
        for op in ops {
            match *op {
                Op::Alloc(n) => {
                    for _ in 0..n {
                        let Some(b) = pool.alloc() else { break };
                        prop_assert!(
                            lent.lock().unwrap().insert(b.idx()),
                            "buffer {} lent twice",
                            b.idx()
                        );
                        prop_assert!((b.idx() as usize) < total);
                        allocated += 1;
                        held.push(b);
                    }
                }
                Op::Recycle(n) => {
                    for b in take(&mut held, n) {
                        lent.lock().unwrap().remove(&b.idx());
                        pool.recycle(b);
                    }
                }
                Op::Foreign(n) => {
                    let batch = take(&mut held, n);
                    tx.send(batch).unwrap();
                }
            }
        }
        drop(tx);
        prop_assert!(
            done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "foreign thread stuck"
        );
        worker.join().unwrap();
        for b in held.drain(..) {
            lent.lock().unwrap().remove(&b.idx());
            pool.recycle(b);
        }
        let a = pool.audit();
        prop_assert_eq!((a.total, a.lent, a.in_cache + a.in_ring), (total, 0, total));
        let s = pool.stats();
        prop_assert_eq!(s.recycle_ring_full, 0);
        prop_assert_eq!(s.alloc_fast + s.alloc_slow - s.alloc_empty, allocated);
        let all = drain_all(&mut pool);
        assert_distinct_and_complete(&all, total);
        pool.returner().give_back(&mut all.into_iter().collect());
        Ok(())
    }
}

/// The bulk owner paths hand out the same pages, in the same order, with
/// the same counters as one call per page, through cache refills and
/// exhaustion, checked or not; bad returns among bulk returns are refused
/// alone.
#[test]
fn bulk_alloc_and_recycle_match_one_call_per_page() {
    let idx = |v: &[Buf]| v.iter().map(Buf::idx).collect::<Vec<_>>();
    for checked in [false, true] {
        let (mut bulk, mut one) = (pages(300, checked), pages(300, checked));
        let (mut held_bulk, mut held_one) = (Vec::new(), Vec::new());
        for n in [10, 100, 150, 100] {
            let mut got = Vec::new();
            let k = bulk.alloc_bulk(n, |b| got.push(b));
            let want: Vec<Buf> = (0..n).map_while(|_| one.alloc()).collect();
            assert_eq!(k, got.len());
            assert_eq!(
                idx(&got),
                idx(&want),
                "checked {checked}: same pages, same order"
            );
            assert_eq!(
                bulk.stats(),
                one.stats(),
                "checked {checked}: same counters"
            );
            held_bulk.extend(got);
            held_one.extend(want);
        }
        assert_eq!(held_bulk.len(), 300, "the pool ran empty");
        let bad = forge_idx(&held_bulk[5], 7);
        let mut returns = held_bulk;
        returns.insert(150, bad);
        bulk.recycle_bulk(returns.into_iter());
        held_one.into_iter().for_each(|b| one.recycle(b));
        let (s, o) = (bulk.stats(), one.stats());
        assert_eq!(s.recycle_cached, o.recycle_cached);
        assert_eq!(s.recycle_cache_full, o.recycle_cache_full);
        assert_eq!(s.recycle_ring_full, 1, "the bad return refused");
        assert_eq!((bulk.audit().lent, one.audit().lent), (0, 0));
    }
}

/// `free_at_least` agrees with `buffers() - lent()` wherever the free
/// buffers are: the owner's cache, the ring, the spill list.
#[test]
fn free_at_least_matches_lent() {
    let mut pool = pages(300, false);
    let check = |pool: &PagePool| {
        let free = pool.buffers() - pool.lent();
        for n in [0, 1, free.saturating_sub(1), free, free + 1, 300, 301] {
            assert_eq!(pool.free_at_least(n), free >= n, "n {n}, free {free}");
        }
    };
    check(&pool);
    let mut held = drain_all(&mut pool);
    check(&pool);
    // Owner recycles fill the cache, then overflow into the ring.
    for b in held.drain(..200) {
        pool.recycle(b);
    }
    check(&pool);
    // Foreign returns land in the ring or the spill list.
    let ret = pool.returner();
    ret.give_back(&mut held);
    check(&pool);
}
