//! Multi-buffer frames (`XDP_USE_SG`): the kernel puts a frame larger than
//! one UMEM frame into several RX descriptors, each but the last with
//! `XDP_PKT_CONTD` in its options. [`Chain`] assembles such a run into one
//! frame of several payload segments, the shape an igb ring gives a jumbo
//! frame over several descriptors (see `driver::RxBatch::push_frame_segs`),
//! and turns every anomaly into one counted drop with every buffer handed
//! back: a bad descriptor in the run (misplaced, too long, empty, naming no
//! buffer of ours), a run longer than the descriptors a frame may take, a
//! run still open when the queue stops.
//!
//! Generic over the buffer so the logic is tested without sockets, pools
//! or root:
//!
//! ```
//! use xdp::{Chain, Step};
//! let mut chain = Chain::new(4);
//! let mut spilled = Vec::new();
//! let mut spill = |b| spilled.push(b);
//! assert_eq!(chain.push(Some(("a", 3072)), None, true, &mut spill), Step::More);
//! assert_eq!(chain.push(Some(("b", 2870)), None, false, &mut spill), Step::Frame);
//! assert_eq!(chain.frame_len(), 5942);
//! assert_eq!(chain.drain().collect::<Vec<_>>(), [("a", 3072), ("b", 2870)]);
//! ```

use driver::DropReason;

/// What one descriptor did to the frame it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The frame continues in the next descriptor.
    More,
    /// The frame is complete: take its segments with [`Chain::drain`].
    Frame,
    /// The frame ended and is dropped for this reason; its buffers went
    /// to the spill.
    Dropped(DropReason),
}

/// The frame being assembled (at most one at a time: a queue's RX ring is
/// in order). Kept across polls, so a run the kernel published in two
/// parts, or a poll's budget cut in two, is still one frame.
#[derive(Debug)]
pub struct Chain<T> {
    parts: Vec<(T, u16)>,
    bytes: u32,
    /// Descriptors of the open frame seen so far.
    descs: usize,
    /// Why the open frame will be dropped, once something went wrong.
    fault: Option<DropReason>,
    max_descs: usize,
}

impl<T> Chain<T> {
    /// A chain for frames of at most `max_descs` descriptors (at least 1).
    pub fn new(max_descs: usize) -> Chain<T> {
        let max_descs = max_descs.max(1);
        Chain {
            parts: Vec::with_capacity(max_descs.min(64)),
            bytes: 0,
            descs: 0,
            fault: None,
            max_descs,
        }
    }

    /// Whether a frame is open: the last descriptor had `XDP_PKT_CONTD`.
    pub fn is_open(&self) -> bool {
        self.descs > 0
    }

    /// Descriptors a frame may take.
    pub fn max_descs(&self) -> usize {
        self.max_descs
    }

    /// One RX descriptor, in ring order: `part` is the buffer it names
    /// and its length (`None`: it named no buffer of ours), `fault` what
    /// is wrong with the descriptor on its own (misplaced, too long,
    /// empty), `contd` its `XDP_PKT_CONTD`. Once the frame is faulty its
    /// buffers go to `spill` as they come (none is held for a frame that
    /// will be dropped), and the rest of its run is consumed until the
    /// descriptor without `contd`, which reports the drop once.
    pub fn push(
        &mut self,
        part: Option<(T, u16)>,
        fault: Option<DropReason>,
        contd: bool,
        spill: &mut impl FnMut(T),
    ) -> Step {
        self.descs += 1;
        if self.fault.is_none() {
            self.fault = match (fault, &part) {
                (Some(f), _) => Some(f),
                (None, None) => Some(DropReason::RxError),
                // More descriptors than a frame may take: the end of the
                // frame never came in time (igb's "no EOP" drop).
                (None, Some(_)) if self.descs > self.max_descs => Some(DropReason::NoEop),
                (None, Some(_)) => None,
            };
        }
        if self.fault.is_some() {
            // In ring order: what the frame held, then this descriptor's.
            self.bytes = 0;
            self.parts.drain(..).for_each(|(b, _)| spill(b));
            if let Some((buf, _)) = part {
                spill(buf);
            }
        } else if let Some((buf, len)) = part {
            self.bytes += len as u32;
            self.parts.push((buf, len));
        }
        if contd {
            return Step::More;
        }
        self.descs = 0;
        match self.fault.take() {
            Some(reason) => Step::Dropped(reason),
            None => Step::Frame,
        }
    }

    /// Bytes of the complete frame (after [`Step::Frame`]).
    pub fn frame_len(&self) -> u32 {
        self.bytes
    }

    /// The complete frame's segments in order (after [`Step::Frame`]);
    /// the chain is empty afterwards.
    pub fn drain(&mut self) -> std::vec::Drain<'_, (T, u16)> {
        self.bytes = 0;
        self.parts.drain(..)
    }

    /// Abandons an open frame (the queue stops, or the rest of the run
    /// can never come): its buffers go to `spill`. Returns whether a
    /// frame was open, a drop to count ([`DropReason::NoEop`]).
    pub fn abort(&mut self, spill: &mut impl FnMut(T)) -> bool {
        let open = self.is_open();
        self.parts.drain(..).for_each(|(b, _)| spill(b));
        self.bytes = 0;
        self.descs = 0;
        self.fault = None;
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `(buffer, len, fault, contd)` descriptors; returns the steps,
    /// the frames taken on `Step::Frame` and the spilled buffers.
    #[allow(clippy::type_complexity)]
    fn run(
        chain: &mut Chain<u32>,
        descs: &[(Option<u32>, u16, Option<DropReason>, bool)],
    ) -> (Vec<Step>, Vec<Vec<(u32, u16)>>, Vec<u32>) {
        let (mut steps, mut frames, mut spilled) = (Vec::new(), Vec::new(), Vec::new());
        for &(buf, len, fault, contd) in descs {
            let step = chain.push(buf.map(|b| (b, len)), fault, contd, &mut |b| {
                spilled.push(b)
            });
            if step == Step::Frame {
                let want: u32 = chain.parts.iter().map(|p| p.1 as u32).sum();
                assert_eq!(chain.frame_len(), want);
                frames.push(chain.drain().collect());
            }
            steps.push(step);
        }
        (steps, frames, spilled)
    }

    /// Every buffer fed comes out exactly once: in a frame or spilled.
    fn conserved(fed: impl IntoIterator<Item = u32>, frames: &[Vec<(u32, u16)>], spilled: &[u32]) {
        let mut out: Vec<u32> = frames.iter().flatten().map(|p| p.0).collect();
        out.extend(spilled);
        out.sort();
        let mut fed: Vec<u32> = fed.into_iter().collect();
        fed.sort();
        assert_eq!(out, fed, "every buffer out exactly once");
    }

    #[test]
    fn single_descriptors_are_frames_of_one_segment() {
        let mut c = Chain::new(4);
        let (steps, frames, spilled) = run(
            &mut c,
            &[(Some(1), 60, None, false), (Some(2), 1514, None, false)],
        );
        assert_eq!(steps, [Step::Frame, Step::Frame]);
        assert_eq!(frames, [vec![(1, 60)], vec![(2, 1514)]]);
        assert!(spilled.is_empty() && !c.is_open());
    }

    #[test]
    fn a_run_of_contd_descriptors_is_one_frame_in_order() {
        let mut c = Chain::new(4);
        let (steps, frames, spilled) = run(
            &mut c,
            &[
                (Some(7), 3072, None, true),
                (Some(3), 3072, None, true),
                (Some(9), 2870, None, false),
                (Some(4), 64, None, false),
            ],
        );
        assert_eq!(steps, [Step::More, Step::More, Step::Frame, Step::Frame]);
        assert_eq!(
            frames,
            [vec![(7, 3072), (3, 3072), (9, 2870)], vec![(4, 64)]]
        );
        assert!(spilled.is_empty());
    }

    /// A run split over two polls is still one frame: the chain keeps the
    /// open frame in between.
    #[test]
    fn a_run_across_polls_stays_one_frame() {
        let mut c = Chain::new(4);
        let (steps, frames, _) = run(&mut c, &[(Some(1), 3072, None, true)]);
        assert_eq!((steps, frames.len()), (vec![Step::More], 0));
        assert!(c.is_open());
        let (steps, frames, _) = run(&mut c, &[(Some(2), 100, None, false)]);
        assert_eq!(steps, [Step::Frame]);
        assert_eq!(frames, [vec![(1, 3072), (2, 100)]]);
        assert_eq!(c.frame_len(), 0);
    }

    /// A bad descriptor in the middle drops the whole frame once, at its
    /// end; every buffer is spilled, and the next frame is unaffected.
    #[test]
    fn a_bad_descriptor_drops_the_whole_frame_once() {
        for fault in [
            DropReason::RxError,
            DropReason::PktLenOverflow,
            DropReason::ZeroLength,
        ] {
            let mut c = Chain::new(4);
            let descs = [
                (Some(1), 3072, None, true),
                (Some(2), 3072, Some(fault), true),
                (Some(3), 3072, None, true),
                (Some(4), 10, None, false),
                (Some(5), 60, None, false),
            ];
            let (steps, frames, spilled) = run(&mut c, &descs);
            assert_eq!(
                steps,
                [
                    Step::More,
                    Step::More,
                    Step::More,
                    Step::Dropped(fault),
                    Step::Frame
                ]
            );
            assert_eq!(frames, [vec![(5, 60)]]);
            conserved(1..=5, &frames, &spilled);
        }
    }

    /// A descriptor naming no buffer of ours (nothing to give back) still
    /// spoils its frame.
    #[test]
    fn an_unknown_buffer_in_a_run_drops_the_frame() {
        let mut c = Chain::new(4);
        let (steps, frames, spilled) = run(
            &mut c,
            &[
                (Some(1), 3072, None, true),
                (None, 3072, None, true),
                (Some(3), 5, None, false),
            ],
        );
        assert_eq!(steps.last(), Some(&Step::Dropped(DropReason::RxError)));
        assert!(frames.is_empty());
        conserved([1, 3], &frames, &spilled);
    }

    /// More descriptors than a frame may take: dropped as "no EOP", the
    /// buffers spilled as they come rather than held, the rest of the run
    /// consumed up to its last descriptor.
    #[test]
    fn an_overlong_run_is_a_no_eop_drop_holding_nothing() {
        let mut c = Chain::new(3);
        let mut descs: Vec<_> = (1..=6).map(|b| (Some(b), 3072, None, true)).collect();
        descs.push((Some(7), 1, None, false));
        descs.push((Some(8), 60, None, false));
        let (steps, frames, spilled) = run(&mut c, &descs);
        assert_eq!(steps[6], Step::Dropped(DropReason::NoEop));
        assert_eq!(steps[7], Step::Frame);
        assert_eq!(
            spilled,
            [1, 2, 3, 4, 5, 6, 7],
            "spilled at the 4th, then as they come"
        );
        assert_eq!(frames, [vec![(8, 60)]]);
        // Exactly the limit is fine.
        let (steps, frames, _) = run(
            &mut c,
            &[
                (Some(10), 1, None, true),
                (Some(11), 1, None, true),
                (Some(12), 1, None, false),
            ],
        );
        assert_eq!(steps.last(), Some(&Step::Frame));
        assert_eq!(frames[0].len(), 3);
    }

    /// A run cut off (the queue stops before its last descriptor): abort
    /// gives every buffer back and reports one frame lost.
    #[test]
    fn a_cut_off_run_is_given_back_on_abort() {
        let mut c = Chain::new(4);
        let (_, frames, mut spilled) = run(
            &mut c,
            &[(Some(1), 3072, None, true), (Some(2), 3072, None, true)],
        );
        assert!(frames.is_empty() && spilled.is_empty() && c.is_open());
        assert!(c.abort(&mut |b| spilled.push(b)));
        conserved([1, 2], &frames, &spilled);
        assert!(!c.is_open());
        assert!(!c.abort(&mut |b| spilled.push(b)), "nothing open any more");
        // A faulty open run holds nothing; abort still reports it.
        let (_, _, s) = run(&mut c, &[(Some(3), 0, Some(DropReason::ZeroLength), true)]);
        assert_eq!(s, [3]);
        assert!(c.abort(&mut |_| panic!("nothing held")));
        // And the chain works afterwards.
        let (steps, frames, _) = run(&mut c, &[(Some(4), 60, None, false)]);
        assert_eq!((steps, frames), (vec![Step::Frame], vec![vec![(4, 60)]]));
    }
}
