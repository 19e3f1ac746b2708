//! A TCP traffic source on smoltcp: connects to a sink and sends the
//! [`pattern`] for a number of bytes, then closes. The far
//! end of the back-to-back pair wire runs it for deterministic tests.

use crate::pattern;
use crate::sink::{interface, tune, SocketMemory};
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, Ipv4Address, Ipv4Cidr};

/// Sender settings.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    pub mac: [u8; 6],
    pub ip: Ipv4Cidr,
    /// The sink's address and port.
    pub dst: Ipv4Address,
    pub port: u16,
    /// Parallel connections, each sending `bytes`.
    pub conns: usize,
    /// Bytes per connection.
    pub bytes: u64,
    pub rx_buf: usize,
    /// Send ring per connection.
    pub tx_buf: usize,
    pub congestion: tcp::CongestionControl,
    pub seed: u64,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            mac: [0x02, 0, 0, 0, 0, 0x02],
            ip: Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, 2), 24),
            dst: Ipv4Address::new(10, 0, 0, 1),
            port: 9000,
            conns: 1,
            bytes: 1 << 20,
            rx_buf: 16 << 10,
            tx_buf: 1 << 20,
            congestion: tcp::CongestionControl::Cubic,
            seed: 2,
        }
    }
}

/// Sender progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Bytes handed to the sockets.
    pub queued: u64,
    /// Connections that finished (all bytes acknowledged and closed).
    pub finished: u64,
    /// Connections that ended any other way (reset, timeout).
    pub failed: u64,
}

struct Stream {
    handle: SocketHandle,
    local_port: u16,
    offset: u64,
    state: StreamState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamState {
    Connecting,
    Sending,
    Closing,
    Done,
    Failed,
}

/// Sends the pattern over `conns` connections.
pub struct PatternSender<'a> {
    iface: Interface,
    sockets: SocketSet<'a>,
    streams: Vec<Stream>,
    cfg: SenderConfig,
    stats: SenderStats,
}

impl<'a> PatternSender<'a> {
    /// Starts connecting; socket rings come from `mem`
    /// (`conns * (rx_buf + tx_buf)` bytes).
    pub fn new(
        cfg: SenderConfig,
        mem: &'a mut SocketMemory,
        dev: &mut impl Device,
        now: Instant,
    ) -> Result<PatternSender<'a>, String> {
        let per = cfg.rx_buf + cfg.tx_buf;
        if cfg.conns == 0 || mem.len() < cfg.conns * per {
            return Err(format!(
                "socket memory of {} bytes cannot hold {} connections of {per} bytes",
                mem.len(),
                cfg.conns
            ));
        }
        let mut iface = interface(dev, cfg.mac, cfg.ip, None, cfg.seed, now);
        let mut sockets = SocketSet::new(Vec::with_capacity(cfg.conns));
        let mut streams = Vec::with_capacity(cfg.conns);
        for (i, chunk) in mem.map_mut().chunks_mut(per).take(cfg.conns).enumerate() {
            let (rx, tx) = chunk.split_at_mut(cfg.rx_buf);
            let mut s = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
            tune(&mut s, cfg.congestion);
            let local_port = 49152 + ((cfg.seed as usize * 7919 + i) % 16000) as u16;
            s.connect(
                iface.context(),
                (IpAddress::Ipv4(cfg.dst), cfg.port),
                local_port,
            )
            .map_err(|e| format!("connect to {}:{}: {e}", cfg.dst, cfg.port))?;
            streams.push(Stream {
                handle: sockets.add(s),
                local_port,
                offset: 0,
                state: StreamState::Connecting,
            });
        }
        Ok(PatternSender {
            iface,
            sockets,
            streams,
            cfg,
            stats: SenderStats::default(),
        })
    }

    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }

    /// Every connection finished or failed.
    pub fn done(&self) -> bool {
        self.streams
            .iter()
            .all(|s| matches!(s.state, StreamState::Done | StreamState::Failed))
    }

    /// Local ports of the connections (to tell flows apart in tests).
    pub fn local_ports(&self) -> Vec<u16> {
        self.streams.iter().map(|s| s.local_port).collect()
    }

    /// One round: ingress, fill the send rings, egress.
    pub fn poll<D: Device>(&mut self, now: Instant, dev: &mut D) -> bool {
        let mut busy =
            self.iface.poll(now, dev, &mut self.sockets) != smoltcp::iface::PollResult::None;
        let total = self.cfg.bytes;
        for st in &mut self.streams {
            let s = self.sockets.get_mut::<tcp::Socket>(st.handle);
            match st.state {
                StreamState::Closing
                    if matches!(s.state(), tcp::State::FinWait2 | tcp::State::TimeWait) =>
                {
                    // Our FIN was acknowledged, so was every byte before it.
                    st.state = StreamState::Done;
                    self.stats.finished += 1;
                }
                StreamState::Connecting if s.may_send() => st.state = StreamState::Sending,
                StreamState::Connecting | StreamState::Sending | StreamState::Closing
                    if s.state() == tcp::State::Closed =>
                {
                    // Reset or timed out before the stream was complete.
                    st.state = StreamState::Failed;
                    self.stats.failed += 1;
                }
                _ => {}
            }
            if st.state == StreamState::Sending {
                while st.offset < total && s.can_send() {
                    let off = st.offset;
                    let sent = s.send(|buf| {
                        let n = (buf.len() as u64).min(total - off) as usize;
                        pattern::fill(off, &mut buf[..n]);
                        (n, n)
                    });
                    match sent {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            st.offset += n as u64;
                            self.stats.queued += n as u64;
                            busy = true;
                        }
                    }
                }
                if st.offset == total {
                    s.close();
                    st.state = StreamState::Closing;
                }
            }
        }
        if busy {
            self.iface.poll(now, dev, &mut self.sockets);
        }
        busy
    }
}
