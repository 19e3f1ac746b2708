//! The cable: where frames towards the NIC come from and where transmitted
//! frames go.
//!
//! [`Wire`] is deliberately small and object safe so that backends and
//! middleware wrapping any wire (like smoltcp's `phy` middleware) compose: a
//! wrapper holds a `Box<dyn Wire>` (or a generic `W: Wire`) and is a `Wire`
//! itself.
//!
//! Backends here, inside the model:
//! - [`Generator`]: deterministic UDP/TCP traffic at memory speed (the
//!   built-in source).
//! - [`QueueWire`]: frames pushed and inspected by a test; [`NullWire`]: nothing.
//!
//! The wires that reach outside the model live in the `wires` crate: the
//! back-to-back pair, pcap replay and capture, the Linux TAP device and the
//! fault injector.
//!
//! ```
//! use hw_sim::wire::{QueueWire, NullWire};
//! use hw_sim::Wire;
//! let mut w = QueueWire::new();
//! let handle = w.clone(); // keep one end for the test
//! handle.push(vec![0u8; 60]);
//! assert_eq!(w.recv().map(|f| f.len()), Some(60));
//! assert!(w.recv().is_none());
//! w.send(&[1, 2, 3]);
//! assert_eq!(handle.take_sent(), vec![vec![1, 2, 3]]);
//! let _: Box<dyn Wire> = Box::new(NullWire);
//! ```

mod generator;

pub use generator::{FrameSize, GenConfig, GenError, Generator, Proto};

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// A full-duplex link between the simulated NIC and the rest of the world.
///
/// The engine calls [`Wire::recv`] to take the next frame towards the NIC
/// and [`Wire::send`] for every frame the NIC transmits. Frames are whole
/// Ethernet frames without FCS.
pub trait Wire: Send {
    /// The next frame towards the NIC, borrowed until the next call on this
    /// wire; `None` when nothing is waiting right now (not necessarily
    /// forever). Must not block.
    fn recv(&mut self) -> Option<&[u8]>;
    /// A frame transmitted by the NIC.
    fn send(&mut self, frame: &[u8]);
    /// A frame transmitted by the NIC, in a buffer the wire may keep: a
    /// wire that queues frames takes the buffer and leaves one of its own
    /// (contents unspecified) in its place, so the frame is not copied.
    /// The default copies, as [`send`](Self::send).
    fn send_vec(&mut self, frame: &mut Vec<u8>) {
        self.send(frame)
    }
    /// Short description for logs ("generator udp 60B x 1 flows", "tap0").
    fn name(&self) -> String;
    /// Whether this wire will never deliver another frame (a replayed
    /// file at its end). Live wires never are: the default is `false`.
    fn exhausted(&self) -> bool {
        false
    }
}

impl<W: Wire + ?Sized> Wire for Box<W> {
    fn recv(&mut self) -> Option<&[u8]> {
        (**self).recv()
    }
    fn send(&mut self, frame: &[u8]) {
        (**self).send(frame)
    }
    fn send_vec(&mut self, frame: &mut Vec<u8>) {
        (**self).send_vec(frame)
    }
    fn name(&self) -> String {
        (**self).name()
    }
    fn exhausted(&self) -> bool {
        (**self).exhausted()
    }
}

/// Never receives anything; drops what the NIC sends.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullWire;

impl Wire for NullWire {
    fn recv(&mut self) -> Option<&[u8]> {
        None
    }
    fn send(&mut self, _frame: &[u8]) {}
    fn name(&self) -> String {
        "null".into()
    }
}

#[derive(Debug, Default)]
struct Queues {
    to_nic: VecDeque<Vec<u8>>,
    from_nic: Vec<Vec<u8>>,
}

/// A test wire: frames pushed by the test go to the NIC in order; frames
/// the NIC transmits are kept for the test to inspect.
///
/// Clones share the same queues, so a test keeps a clone as its handle
/// after handing the wire to [`crate::SimNic::new`]. One mutex round trip
/// per frame: for tests, not benchmarks.
#[derive(Debug, Default)]
pub struct QueueWire {
    shared: Arc<Mutex<Queues>>,
    /// The frame last returned by `recv` (owned by this end only).
    current: Vec<u8>,
}

impl Clone for QueueWire {
    fn clone(&self) -> Self {
        QueueWire {
            shared: Arc::clone(&self.shared),
            current: Vec::new(),
        }
    }
}

impl QueueWire {
    pub fn new() -> QueueWire {
        QueueWire::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame towards the NIC.
    pub fn push(&self, frame: impl Into<Vec<u8>>) {
        self.lock().to_nic.push_back(frame.into());
    }

    /// Frames waiting to reach the NIC.
    pub fn pending(&self) -> usize {
        self.lock().to_nic.len()
    }

    /// Copies of the frames the NIC transmitted so far (kept).
    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.lock().from_nic.clone()
    }

    /// The frames the NIC transmitted so far, removed from the wire.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.lock().from_nic)
    }
}

impl Wire for QueueWire {
    fn recv(&mut self) -> Option<&[u8]> {
        let next = self.lock().to_nic.pop_front()?;
        self.current = next;
        Some(&self.current)
    }

    fn send(&mut self, frame: &[u8]) {
        self.lock().from_nic.push(frame.to_vec());
    }

    fn name(&self) -> String {
        "queue".into()
    }
}
