//! A port's queue pair (`pipeline::port`) as a [`QueueDevice`], and back
//! for the port's audit: the same steps for an application, a test and the
//! far end of the pair wire.

use crate::device::{DeviceConfig, QueueDevice};

/// A port's queue pair as a smoltcp device (igb or AF_XDP rings).
pub type PortDevice = QueueDevice;

/// Makes a port's queue (which needs a TX ring: `PortConfig::tx`) a
/// smoltcp device; recovery comes along ([`QueueDevice::check`]).
pub fn from_port(q: pipeline::Queue, cfg: DeviceConfig) -> Result<PortDevice, String> {
    let id = q.id();
    let tx = q
        .tx
        .ok_or_else(|| format!("queue {id} has no TX ring: open the port with PortConfig::tx"))?;
    let mut dev = QueueDevice::new(q.rx, tx, cfg);
    if let Some(w) = q.watch {
        dev.set_watch(w);
    }
    Ok(dev)
}

/// Gives a port's queue back (for `Port::shutdown`), with every buffer the
/// device layer held returned.
pub fn into_port(dev: PortDevice) -> Option<pipeline::Queue> {
    let (rx, tx, watch) = dev.into_parts();
    Some(pipeline::Queue {
        rx,
        tx: Some(tx),
        watch,
    })
}

/// Buffers of a queue pair not back in their pools after
/// [`QueueDevice::shutdown`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Leaks {
    pub pages: usize,
    pub headers: usize,
    pub tx_buffers: usize,
}
