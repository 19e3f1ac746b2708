//! Stages between the RX thread and the application, and one pinned thread
//! per queue.
//!
//! - [`handoff`]: the RX thread fills batches and hands them to an
//!   application thread over a bounded queue; the application returns the
//!   header slots and payload pages through the pools' foreign path, in
//!   groups of `recycle_batch` (one lock or one ring operation per group),
//!   and hands the empty batch back.
//! - [`per_queue`]: runs a closure on every queue, each on its own thread
//!   pinned to a core, and collects the results.
//!
//! ```
//! use pipeline::port::{Port, PortConfig};
//! use pipeline::stage;
//! use std::sync::atomic::{AtomicBool, Ordering};
//!
//! let mut port = Port::open(&"sim".parse().unwrap(), &PortConfig::default())?;
//! let mut queues = port.take_queues();
//! port.start()?;
//! let (mut rx, app) = stage::handoff(&mut queues[0], 32, 8, 64)?;
//! let seen = std::thread::spawn(move || {
//!     let mut packets = 0;
//!     app.run(|batch| packets += batch.len());
//!     packets
//! });
//! let mut sent = 0;
//! while sent < 1000 {
//!     port.step(32);
//!     if queues[0].poll(rx.batch(), 32) > 0 {
//!         sent += rx.batch().len();
//!         if !rx.send(|| false) { break }
//!     }
//! }
//! rx.finish();
//! assert_eq!(seen.join().unwrap(), sent);
//! assert_eq!(port.shutdown(queues).leaked(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::port::Queue;
use crate::{PoolError, Returner};
use crossbeam_queue::ArrayQueue;
use driver::{BufPool, RxBatch};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The RX thread's end of a handoff.
pub struct RxSide {
    full: Arc<ArrayQueue<RxBatch>>,
    empty: Arc<ArrayQueue<RxBatch>>,
    done: Arc<AtomicBool>,
    cur: RxBatch,
    /// Times the RX thread had to wait for the application to free a batch.
    pub waits: u64,
}

/// The application thread's end of a handoff.
pub struct AppSide {
    full: Arc<ArrayQueue<RxBatch>>,
    empty: Arc<ArrayQueue<RxBatch>>,
    done: Arc<AtomicBool>,
    pages: Returner,
    hdrs: Returner,
}

/// A handoff from `q`'s RX thread to an application thread: `depth`
/// batches of `batch` packets in flight, buffers returned in groups of
/// `recycle_batch`.
pub fn handoff(
    q: &mut Queue,
    batch: usize,
    depth: usize,
    recycle_batch: usize,
) -> Result<(RxSide, AppSide), PoolError> {
    let full = Arc::new(ArrayQueue::<RxBatch>::new(depth.max(1)));
    let empty = Arc::new(ArrayQueue::<RxBatch>::new(depth.max(1) + 1));
    for _ in 0..depth.max(1) {
        let _ = empty.push(q.new_batch(batch));
    }
    let (pages, hdrs) = q.rx.pools();
    let pages = Returner::new(pages.returner(), recycle_batch)?;
    let hdrs = Returner::new(hdrs.returner(), recycle_batch)?;
    let done = Arc::new(AtomicBool::new(false));
    let rx = RxSide {
        full: full.clone(),
        empty: empty.clone(),
        done: done.clone(),
        cur: q.new_batch(batch),
        waits: 0,
    };
    Ok((
        rx,
        AppSide {
            full,
            empty,
            done,
            pages,
            hdrs,
        },
    ))
}

impl RxSide {
    /// The batch to poll into.
    #[inline]
    pub fn batch(&mut self) -> &mut RxBatch {
        &mut self.cur
    }

    /// Hands the current batch to the application and takes an empty one,
    /// waiting while the application is behind until `give_up()` is true.
    /// Returns false if it gave up (the batch stays current).
    pub fn send(&mut self, give_up: impl Fn() -> bool) -> bool {
        let mut next = self.empty.pop();
        while next.is_none() {
            if give_up() {
                return false;
            }
            self.waits += 1;
            std::hint::spin_loop();
            next = self.empty.pop();
        }
        let Some(next) = next else { return false };
        let filled = std::mem::replace(&mut self.cur, next);
        if let Err(mut b) = self.full.push(filled) {
            b.give_back();
        }
        true
    }

    /// No more batches: the application drains what is queued and stops.
    /// The current batch's buffers go home.
    pub fn finish(mut self) {
        self.cur.give_back();
        self.done.store(true, Ordering::Release);
    }
}

impl AppSide {
    /// Runs `f` on every batch until the RX side finishes, returning every
    /// buffer through the foreign path; returns the batches seen.
    pub fn run(mut self, mut f: impl FnMut(&RxBatch)) -> u64 {
        let mut batches = 0;
        loop {
            let Some(mut b) = self.full.pop() else {
                if self.done.load(Ordering::Acquire) && self.full.is_empty() {
                    break;
                }
                std::hint::spin_loop();
                continue;
            };
            batches += 1;
            f(&b);
            let (pages, hdrs) = (&mut self.pages, &mut self.hdrs);
            b.drain_bufs(|h| hdrs.push(h), |p| pages.push(p));
            if let Err(mut b) = self.empty.push(b) {
                b.give_back();
            }
        }
        self.pages.flush();
        self.hdrs.flush();
        batches
    }
}

impl Drop for AppSide {
    fn drop(&mut self) {
        // Batches nobody will process: their buffers go home.
        while let Some(mut b) = self.full.pop() {
            b.give_back();
        }
    }
}

/// Runs `f(i, item, core)` for every item (a queue, or whatever wraps one)
/// on a thread of its own, item i pinned to core (`first_core` + i) modulo
/// the core count, and returns each result (an error if the thread could
/// not start or panicked). A failed pin is logged and the thread runs
/// unpinned (`core` is `None`).
pub fn per_queue<T: Send, R: Send>(
    items: &mut [T],
    first_core: usize,
    f: impl Fn(usize, &mut T, Option<usize>) -> R + Sync,
) -> Vec<Result<R, String>> {
    let ncores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .iter_mut()
            .enumerate()
            .map(|(i, item)| {
                let core = (first_core + i) % ncores;
                std::thread::Builder::new()
                    .name(format!("queue-{i}"))
                    .spawn_scoped(s, move || {
                        let pinned = match crate::pin_current_thread(core) {
                            Ok(()) => Some(core),
                            Err(e) => {
                                tracing::warn!("queue {i}: {e}");
                                None
                            }
                        };
                        f(i, item, pinned)
                    })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().map_err(|_| "queue thread panicked".to_string()),
                Err(e) => Err(format!("cannot start a queue thread: {e}")),
            })
            .collect()
    })
}
