//! Server side of the iperf3 control protocol as a sans-io state machine.
//!
//! The module knows nothing about sockets. The caller owns the TCP listener
//! (normally port [`DEFAULT_PORT`]) and its connections, and feeds this state
//! machine with connection events and received bytes. In return it gets bytes
//! to send on each connection and a list of connections to close.
//!
//! Only the "client sends, server receives" TCP test is supported: that is
//! what `iperf3 -c ADDR [-P N] [-t SECS | -n BYTES]` runs. Reverse (`-R`),
//! bidirectional (`--bidir`), UDP (`-u`) and SCTP tests are refused with a
//! `SERVER_ERROR` message, which makes the client print an error and exit.
//! A client arriving while a test is in progress gets `ACCESS_DENIED`
//! ("the server is busy running a test").
//!
//! # Wire protocol (server view)
//!
//! 1. Every connection starts with a [`COOKIE_SIZE`]-byte cookie (36 ASCII
//!    characters plus a NUL). The first connection of a test is the control
//!    connection; its cookie identifies the test.
//! 2. Server sends the state byte `PARAM_EXCHANGE`; the client answers with a
//!    JSON object of test parameters framed by a 4-byte big-endian length.
//! 3. Server sends `CREATE_STREAMS`; the client opens `parallel` data
//!    connections, each starting with the same cookie.
//! 4. Server sends `TEST_START` and `TEST_RUNNING`; the client streams data.
//! 5. Client sends `TEST_END`; the server stops counting, closes the data
//!    connections and sends `EXCHANGE_RESULTS`. The client sends its results
//!    JSON, the server answers with its own results JSON and `DISPLAY_RESULTS`.
//! 6. Client sends `IPERF_DONE` and closes; the server waits for a new client.
//!
//! # Driving it
//!
//! ```
//! use stack::iperf3::{Iperf3Server, Role};
//! use std::time::Instant;
//!
//! let mut srv = Iperf3Server::new();
//! let now = Instant::now();
//! srv.on_accept(7, now);
//! let role = srv.on_recv(7, &[b'x'; 37], now); // a complete cookie
//! assert_eq!(role, Role::Control);
//! // The server now wants to send PARAM_EXCHANGE (9) on connection 7.
//! assert_eq!(srv.pending_output(7), &[9]);
//! let n = srv.pending_output(7).len(); // pretend the socket took it all
//! srv.sent(7, n);
//! for conn in srv.take_closes() {
//!     // close `conn` gracefully (its pending output has been flushed)
//!     let _ = conn;
//! }
//! ```
//!
//! For accurate byte counts, feed pending data-connection bytes before control
//! bytes in each poll round: the client sends `TEST_END` right after its last
//! data, and bytes arriving on a data connection after `TEST_END` has been
//! processed are not counted (the real iperf3 server behaves the same way).

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

/// The caller's connection handle.
pub type ConnId = u32;

/// The port iperf3 uses unless told otherwise (`-p`).
pub const DEFAULT_PORT: u16 = 5201;
/// Size of the cookie that opens every connection: 36 characters and a NUL.
pub const COOKIE_SIZE: usize = 37;
/// Largest parameter JSON accepted (the same limit as iperf3's server).
pub const MAX_PARAMS_JSON: usize = 8 * 1024;
/// Largest results JSON accepted from the client.
pub const MAX_RESULTS_JSON: usize = 1024 * 1024;
/// Largest number of parallel streams iperf3 allows.
pub const MAX_STREAMS: u32 = 128;
/// Longest test duration iperf3 allows, in seconds.
pub const MAX_TIME: u64 = 86_400;
/// Longest omit period iperf3 allows, in seconds.
pub const MAX_OMIT_TIME: u64 = 600;

/// Time allowed for a new connection to deliver its cookie.
const COOKIE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the parameter exchange and for the streams to connect.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for the result exchange and the final `IPERF_DONE`.
const RESULTS_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time after the announced duration before the server gives up
/// (iperf3 allows 10 state transitions of 4 s each).
const DURATION_GRACE: Duration = Duration::from_secs(40);
/// A running test with no data for this long is aborted (iperf3's default
/// receive timeout).
const NO_DATA_TIMEOUT: Duration = Duration::from_secs(120);

/// State bytes of the control connection, as iperf3 sends them (signed char).
pub mod state {
    pub const TEST_START: i8 = 1;
    pub const TEST_RUNNING: i8 = 2;
    pub const TEST_END: i8 = 4;
    pub const PARAM_EXCHANGE: i8 = 9;
    pub const CREATE_STREAMS: i8 = 10;
    pub const SERVER_TERMINATE: i8 = 11;
    pub const CLIENT_TERMINATE: i8 = 12;
    pub const EXCHANGE_RESULTS: i8 = 13;
    pub const DISPLAY_RESULTS: i8 = 14;
    pub const IPERF_START: i8 = 15;
    pub const IPERF_DONE: i8 = 16;
    pub const ACCESS_DENIED: i8 = -1;
    pub const SERVER_ERROR: i8 = -2;
}

/// iperf3 error numbers (`i_errno`) sent after `SERVER_ERROR`; the client
/// turns them into its own error text.
pub mod errcode {
    /// "test duration valid values are 0 to 86400 seconds"
    pub const IEDURATION: i32 = 5;
    /// "invalid number of parallel streams"
    pub const IENUMSTREAMS: i32 = 6;
    /// "bogus value for --omit"
    pub const IEOMIT: i32 = 12;
    /// "an option you are trying to set is not implemented yet"
    pub const IEUNIMP: i32 = 13;
    /// "control socket has closed unexpectedly"
    pub const IECTRLCLOSE: i32 = 109;
    /// "received an unknown control message"
    pub const IEMESSAGE: i32 = 110;
    /// "unable to receive parameters from client"
    pub const IERECVPARAMS: i32 = 114;
    /// "unable to receive results"
    pub const IERECVRESULTS: i32 = 117;
    /// "the server is busy running a test" (client side name of ACCESS_DENIED)
    pub const IEACCESSDENIED: i32 = 121;
    /// "protocol does not exist"
    pub const IEPROTOCOL: i32 = 131;
    /// "no message was received" (idle data streams)
    pub const IENOMSG: i32 = 144;
    /// "server test duration expired"
    pub const IESERVERTESTDURATIONEXPIRED: i32 = 160;
}

/// How the caller should treat a connection from now on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Still reading the cookie; keep feeding bytes.
    Unknown,
    /// The control connection of the current test.
    Control,
    /// A data stream of the current test; bytes are only counted. `stream` is
    /// the iperf3 stream id (1, 3, 4, ...).
    Data { stream: u32 },
    /// Refused (busy server, bad cookie, surplus stream): flush the pending
    /// output, then close. Further input is discarded.
    Reject,
    /// Not (or no longer) known to the server: close it, ignore its input.
    Closed,
}

/// Transport protocol requested by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// The test parameters a client sent (the subset the server looks at).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TestParams {
    pub protocol: Protocol,
    /// Test length in seconds (`-t`); 0 when the test is bounded by bytes or blocks.
    pub time: u64,
    /// Seconds omitted at the start (`-O`).
    pub omit: u64,
    /// Bytes to send (`-n`), 0 if unset.
    pub num: u64,
    /// Blocks to send (`-k`), 0 if unset.
    pub blockcount: u64,
    /// Parallel streams (`-P`).
    pub parallel: u32,
    /// Block size (`-l`).
    pub len: u64,
    pub reverse: bool,
    pub bidirectional: bool,
    pub get_server_output: bool,
}

/// Process CPU use over a test, in percent (iperf3's `cpu_util_*`).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct CpuUtil {
    pub total: f64,
    pub user: f64,
    pub system: f64,
}

/// Bytes counted on one data stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamStats {
    /// iperf3 stream id (1, 3, 4, ...).
    pub id: u32,
    pub conn: ConnId,
    pub bytes: u64,
}

/// How a test ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestOutcome {
    /// Results exchanged and the client said `IPERF_DONE` (or closed after the results).
    Completed,
    /// The client aborted (`CLIENT_TERMINATE` or closed the control connection early).
    ClientAborted,
    /// The server refused the parameters (reverse, UDP, ...); `SERVER_ERROR` was sent.
    Refused { code: i32 },
    /// Protocol error or timeout; `SERVER_ERROR` was sent.
    Failed { code: i32 },
}

/// Summary of one finished test.
#[derive(Clone, Debug, PartialEq)]
pub struct TestSummary {
    pub outcome: TestOutcome,
    pub params: TestParams,
    /// Per-stream received byte counts, in stream id order.
    pub streams: Vec<StreamStats>,
    /// Bytes received over all streams (after the omit period); this is what
    /// the server reported to the client.
    pub bytes: u64,
    /// Time from `TEST_START` (or the end of the omit period) to `TEST_END`.
    pub duration: Duration,
    pub cpu: CpuUtil,
    /// Bytes the client says it sent (from its results), if it sent results.
    pub client_sent_bytes: Option<u64>,
}

impl TestSummary {
    /// Receive rate in Gbit/s (0 for a zero duration).
    pub fn gbit_per_sec(&self) -> f64 {
        rate_gbit_per_sec(self.bytes, self.duration)
    }
}

impl fmt::Display for TestSummary {
    /// A one-line summary for a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "iperf3 test {:?}: {} bytes in {:.3} s = {:.3} Gbit/s over {} stream(s), cpu {:.1}%",
            self.outcome,
            self.bytes,
            self.duration.as_secs_f64(),
            self.gbit_per_sec(),
            self.streams.len(),
            self.cpu.total,
        )?;
        if let Some(sent) = self.client_sent_bytes {
            write!(f, ", client sent {sent} bytes")?;
        }
        Ok(())
    }
}

/// Counters of the server over its lifetime.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Iperf3Stats {
    pub tests_completed: u64,
    /// Tests that ended any other way (client abort, refusal, error, timeout).
    pub tests_failed: u64,
    /// Connections refused with `ACCESS_DENIED` (busy server, bad cookie).
    pub rejected_connections: u64,
    /// Tests refused because of their parameters (reverse, UDP, ...).
    pub refused_tests: u64,
    /// Protocol errors and timeouts.
    pub errors: u64,
    /// Bytes received over all tests.
    pub total_bytes: u64,
    /// Whether a test is in progress.
    pub test_active: bool,
    /// Bytes received so far in the current test.
    pub current_bytes: u64,
    /// Data streams connected in the current test.
    pub current_streams: usize,
    /// The last finished test.
    pub last_test: Option<TestSummary>,
}

/// Error from [`parse_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Length 0 or above the limit.
    BadLength(u32),
}

/// The iperf3 stream id of the `index`-th data stream (0-based): 1, 3, 4, 5, ...
/// (iperf3 skips id 2 for historical reasons).
pub fn stream_id(index: usize) -> u32 {
    let i = u32::try_from(index).unwrap_or(u32::MAX - 2);
    if i == 0 {
        1
    } else {
        i.saturating_add(2)
    }
}

/// Rate in Gbit/s of `bytes` over `duration` (0 for a zero duration).
pub fn rate_gbit_per_sec(bytes: u64, duration: Duration) -> f64 {
    let secs = duration.as_secs_f64();
    if secs > 0.0 {
        bytes as f64 * 8.0 / secs / 1e9
    } else {
        0.0
    }
}

/// Total bytes over a set of streams.
pub fn total_bytes(streams: &[StreamStats]) -> u64 {
    streams.iter().fold(0u64, |a, s| a.saturating_add(s.bytes))
}

/// Appends a length-prefixed JSON message (4-byte big-endian length) to `out`.
/// Returns false (and appends nothing) if `json` is longer than `u32::MAX`.
pub fn encode_frame(json: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(len) = u32::try_from(json.len()) else {
        return false;
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(json);
    true
}

/// Looks for one length-prefixed message at the start of `buf`.
///
/// `Ok(None)`: more bytes needed. `Ok(Some((consumed, body)))`: a complete
/// message. A zero length or one above `max` is an error, detected as soon as
/// the 4 length bytes are present (nothing is allocated for it).
pub fn parse_frame(buf: &[u8], max: usize) -> Result<Option<(usize, &[u8])>, FrameError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let n = len as usize;
    if len == 0 || n > max {
        return Err(FrameError::BadLength(len));
    }
    let Some(end) = n.checked_add(4) else {
        return Err(FrameError::BadLength(len));
    };
    match buf.get(4..end) {
        Some(body) => Ok(Some((4 + n, body))),
        None => Ok(None),
    }
}

/// Parses the parameter JSON of a client. Err carries the iperf3 error code
/// to send back.
pub fn parse_params(body: &[u8]) -> Result<TestParams, i32> {
    let v: Value = serde_json::from_slice(body).map_err(|_| errcode::IERECVPARAMS)?;
    let obj = v.as_object().ok_or(errcode::IERECVPARAMS)?;
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
    // iperf3 reads numbers as doubles and truncates; negative values are errors.
    let num = |k: &str| -> Result<Option<f64>, ()> {
        match obj.get(k) {
            None => Ok(None),
            Some(x) => match x.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f.trunc())),
                Some(_) => Err(()),
                None => Ok(None), // wrong type: ignored, like iperf3
            },
        }
    };
    let ranged = |k: &str, lo: f64, hi: f64, code: i32| -> Result<Option<u64>, i32> {
        match num(k).map_err(|_| code)? {
            None => Ok(None),
            Some(f) if f >= lo && f <= hi => Ok(Some(f as u64)),
            Some(_) => Err(code),
        }
    };
    let mut p = TestParams {
        parallel: 1,
        ..TestParams::default()
    };
    if flag("udp") {
        p.protocol = Protocol::Udp;
    }
    if flag("sctp") {
        p.protocol = Protocol::Sctp;
    }
    p.omit = ranged("omit", 0.0, MAX_OMIT_TIME as f64, errcode::IEOMIT)?.unwrap_or(0);
    p.time = ranged("time", 0.0, MAX_TIME as f64, errcode::IEDURATION)?.unwrap_or(0);
    p.num = ranged("num", 0.0, u64::MAX as f64, errcode::IERECVPARAMS)?.unwrap_or(0);
    p.blockcount = ranged("blockcount", 0.0, u64::MAX as f64, errcode::IERECVPARAMS)?.unwrap_or(0);
    p.parallel = ranged("parallel", 1.0, MAX_STREAMS as f64, errcode::IENUMSTREAMS)?
        .map(|n| n as u32)
        .unwrap_or(1);
    p.len = ranged("len", 0.0, u64::MAX as f64, errcode::IERECVPARAMS)?.unwrap_or(0);
    p.reverse = flag("reverse");
    p.bidirectional = flag("bidirectional");
    p.get_server_output = obj
        .get("get_server_output")
        .map(|x| x.as_bool().unwrap_or(false) || x.as_i64().is_some_and(|n| n != 0))
        .unwrap_or(false);
    Ok(p)
}

/// The iperf3 error code with which this server refuses `p`, if it does.
pub fn refusal(p: &TestParams) -> Option<i32> {
    if p.protocol != Protocol::Tcp {
        Some(errcode::IEPROTOCOL)
    } else if p.reverse || p.bidirectional {
        Some(errcode::IEUNIMP)
    } else {
        None
    }
}

/// Process CPU times at one instant (microseconds), from `getrusage`.
#[derive(Clone, Copy, Debug)]
struct CpuSnapshot {
    wall: Instant,
    user_us: f64,
    system_us: f64,
}

impl CpuSnapshot {
    fn take(wall: Instant) -> Self {
        if let Some((user_us, system_us)) = pipeline::os::process_cpu_us() {
            CpuSnapshot {
                wall,
                user_us,
                system_us,
            }
        } else {
            CpuSnapshot {
                wall,
                user_us: 0.0,
                system_us: 0.0,
            }
        }
    }

    fn util_since(&self, start: &CpuSnapshot) -> CpuUtil {
        let wall_us = self
            .wall
            .saturating_duration_since(start.wall)
            .as_secs_f64()
            * 1e6;
        if wall_us <= 0.0 {
            return CpuUtil::default();
        }
        let user = ((self.user_us - start.user_us).max(0.0) / wall_us) * 100.0;
        let system = ((self.system_us - start.system_us).max(0.0) / wall_us) * 100.0;
        CpuUtil {
            total: user + system,
            user,
            system,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unknown,
    Control,
    Data(u32),
    Reject,
}

struct Conn {
    id: ConnId,
    kind: Kind,
    /// Cookie or control bytes not yet consumed.
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Close once `out` is flushed.
    closing: bool,
    since: Instant,
}

impl Conn {
    fn pending(&self) -> &[u8] {
        self.out.get(self.out_pos..).unwrap_or(&[])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Sent PARAM_EXCHANGE, reading the parameter JSON.
    Params,
    /// Sent CREATE_STREAMS, waiting for the data connections.
    CreateStreams,
    /// Sent TEST_START + TEST_RUNNING, counting bytes until TEST_END.
    Running,
    /// Sent EXCHANGE_RESULTS, reading the client's results JSON.
    Results,
    /// Sent our results and DISPLAY_RESULTS, waiting for IPERF_DONE.
    Display,
}

struct Test {
    ctrl: ConnId,
    cookie: [u8; COOKIE_SIZE],
    phase: Phase,
    phase_since: Instant,
    params: TestParams,
    streams: Vec<StreamStats>,
    start: Option<Instant>,
    end: Option<Instant>,
    omit_pending: bool,
    last_data: Instant,
    cpu_start: Option<CpuSnapshot>,
    cpu: CpuUtil,
    client_sent: Option<u64>,
}

impl Test {
    fn bytes(&self) -> u64 {
        total_bytes(&self.streams)
    }
}

#[derive(Serialize)]
struct ResultsMsg<'a> {
    cpu_util_total: f64,
    cpu_util_user: f64,
    cpu_util_system: f64,
    sender_has_retransmits: i32,
    streams: Vec<StreamResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_output_text: Option<&'a str>,
}

#[derive(Serialize)]
struct StreamResult {
    id: u32,
    bytes: u64,
    retransmits: i64,
    jitter: f64,
    errors: i64,
    omitted_errors: i64,
    packets: i64,
    omitted_packets: i64,
    start_time: f64,
    end_time: f64,
}

/// The iperf3 server state machine. See the module documentation.
pub struct Iperf3Server {
    conns: Vec<Conn>,
    test: Option<Test>,
    closes: Vec<ConnId>,
    stats: Iperf3Stats,
}

impl Default for Iperf3Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Iperf3Server {
    pub fn new() -> Self {
        Iperf3Server {
            conns: Vec::new(),
            test: None,
            closes: Vec::new(),
            stats: Iperf3Stats::default(),
        }
    }

    /// A new TCP connection was accepted on the iperf3 port.
    ///
    /// While a test is past its stream setup, the connection is refused at
    /// once with `ACCESS_DENIED` (returns [`Role::Reject`]); otherwise its
    /// cookie is awaited ([`Role::Unknown`]).
    pub fn on_accept(&mut self, conn: ConnId, now: Instant) -> Role {
        // A reused handle: forget whatever we knew about it.
        self.forget(conn, now);
        let busy = self
            .test
            .as_ref()
            .is_some_and(|t| t.phase != Phase::CreateStreams);
        self.conns.push(Conn {
            id: conn,
            kind: Kind::Unknown,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            closing: false,
            since: now,
        });
        if busy {
            self.reject(conn);
            Role::Reject
        } else {
            Role::Unknown
        }
    }

    /// Bytes arrived on `conn`. Data-stream bytes are only counted.
    pub fn on_recv(&mut self, conn: ConnId, data: &[u8], now: Instant) -> Role {
        let Some(ci) = self.idx(conn) else {
            return Role::Closed;
        };
        match self.conns[ci].kind {
            Kind::Reject => Role::Reject,
            Kind::Data(_) => {
                self.count_data(conn, data.len(), now);
                self.role(conn)
            }
            Kind::Control => {
                self.control_input(ci, data, now);
                self.role(conn)
            }
            Kind::Unknown => {
                let c = &mut self.conns[ci];
                let need = COOKIE_SIZE.saturating_sub(c.inbuf.len());
                let take = need.min(data.len());
                c.inbuf.extend_from_slice(&data[..take]);
                if c.inbuf.len() < COOKIE_SIZE {
                    return Role::Unknown;
                }
                let mut cookie = [0u8; COOKIE_SIZE];
                cookie.copy_from_slice(&c.inbuf[..COOKIE_SIZE]);
                c.inbuf.clear();
                self.on_cookie(conn, cookie, now);
                let rest = &data[take..];
                if !rest.is_empty() {
                    return self.on_recv(conn, rest, now);
                }
                self.role(conn)
            }
        }
    }

    /// The peer closed `conn` (EOF or reset), or the caller gave up on it.
    pub fn on_close(&mut self, conn: ConnId, now: Instant) {
        let Some(ci) = self.idx(conn) else {
            return;
        };
        let kind = self.conns[ci].kind;
        self.conns.swap_remove(ci);
        self.closes.retain(|&c| c != conn);
        match kind {
            Kind::Control => {
                let completed = self
                    .test
                    .as_ref()
                    .is_some_and(|t| t.ctrl == conn && t.phase == Phase::Display);
                if self.test.as_ref().is_some_and(|t| t.ctrl == conn) {
                    if completed {
                        self.finish(TestOutcome::Completed, now);
                    } else {
                        self.stats.errors += 1;
                        self.finish(TestOutcome::ClientAborted, now);
                    }
                }
            }
            Kind::Data(_) => {
                // Keep the stream's count; nothing else to do.
            }
            Kind::Unknown | Kind::Reject => {}
        }
    }

    /// Bytes the server wants to send on `conn` (empty if none).
    pub fn pending_output(&self, conn: ConnId) -> &[u8] {
        match self.idx(conn) {
            Some(ci) => self.conns[ci].pending(),
            None => &[],
        }
    }

    /// The caller sent the first `n` bytes of [`pending_output`](Self::pending_output).
    pub fn sent(&mut self, conn: ConnId, n: usize) {
        let Some(ci) = self.idx(conn) else {
            return;
        };
        let c = &mut self.conns[ci];
        c.out_pos = c.out_pos.saturating_add(n).min(c.out.len());
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
            if c.closing {
                self.release(ci);
            }
        }
    }

    /// Connections to close now: their pending output is flushed. The server
    /// forgets them; a later `on_close` for them is harmless.
    pub fn take_closes(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.closes)
    }

    /// Like [`take_closes`](Self::take_closes), but only the connections
    /// `mine` claims: for one server shared by several queues' stacks, each
    /// closing its own connections.
    pub fn take_closes_if(&mut self, mut mine: impl FnMut(ConnId) -> bool) -> Vec<ConnId> {
        let mut taken = Vec::new();
        self.closes.retain(|&c| {
            if mine(c) {
                taken.push(c);
                false
            } else {
                true
            }
        });
        taken
    }

    /// Whether [`take_closes`](Self::take_closes) has something.
    pub fn has_closes(&self) -> bool {
        !self.closes.is_empty()
    }

    /// Timers: omit period, cookie/setup/result timeouts, test duration
    /// overrun. Call it now and then (every 100 ms to 1 s is plenty).
    pub fn poll(&mut self, now: Instant) {
        // Connections that never sent their cookie.
        let stale: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| {
                c.kind == Kind::Unknown && now.saturating_duration_since(c.since) > COOKIE_TIMEOUT
            })
            .map(|c| c.id)
            .collect();
        for conn in stale {
            self.close_now(conn);
        }
        self.check_omit(now);
        let Some(t) = &self.test else {
            return;
        };
        let in_phase = now.saturating_duration_since(t.phase_since);
        let code = match t.phase {
            Phase::Params | Phase::CreateStreams if in_phase > SETUP_TIMEOUT => {
                Some(errcode::IERECVPARAMS)
            }
            Phase::Results | Phase::Display if in_phase > RESULTS_TIMEOUT => {
                Some(errcode::IERECVRESULTS)
            }
            Phase::Running => {
                let limit = Duration::from_secs(t.params.time.saturating_add(t.params.omit))
                    .saturating_add(DURATION_GRACE);
                if t.params.time > 0 && in_phase > limit {
                    Some(errcode::IESERVERTESTDURATIONEXPIRED)
                } else if now.saturating_duration_since(t.last_data) > NO_DATA_TIMEOUT {
                    Some(errcode::IENOMSG)
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(code) = code {
            self.fail(code, now);
        }
    }

    /// Counters, including the last finished test.
    pub fn stats(&self) -> Iperf3Stats {
        let mut s = self.stats.clone();
        s.test_active = self.test.is_some();
        s.current_bytes = self.test.as_ref().map_or(0, Test::bytes);
        s.current_streams = self.test.as_ref().map_or(0, |t| t.streams.len());
        s
    }

    /// The last finished test, if any.
    pub fn last_test(&self) -> Option<&TestSummary> {
        self.stats.last_test.as_ref()
    }

    /// A one-line summary of the last finished test for a log.
    pub fn last_summary_line(&self) -> Option<String> {
        self.last_test().map(|t| t.to_string())
    }

    /// Bytes received so far in the current test (0 when idle).
    pub fn current_bytes(&self) -> u64 {
        self.test.as_ref().map_or(0, Test::bytes)
    }

    /// Whether a test is in progress.
    pub fn is_busy(&self) -> bool {
        self.test.is_some()
    }

    /// How the server currently sees `conn`.
    pub fn role(&self, conn: ConnId) -> Role {
        match self.idx(conn).map(|ci| self.conns[ci].kind) {
            None => Role::Closed,
            Some(Kind::Unknown) => Role::Unknown,
            Some(Kind::Control) => Role::Control,
            Some(Kind::Data(stream)) => Role::Data { stream },
            Some(Kind::Reject) => Role::Reject,
        }
    }

    // ---- internals ----

    fn idx(&self, conn: ConnId) -> Option<usize> {
        self.conns.iter().position(|c| c.id == conn)
    }

    fn forget(&mut self, conn: ConnId, now: Instant) {
        if self.idx(conn).is_some() {
            self.on_close(conn, now);
        }
        self.closes.retain(|&c| c != conn);
    }

    /// Drops the record of a conn and reports it for closing.
    fn release(&mut self, ci: usize) {
        let c = self.conns.swap_remove(ci);
        if !self.closes.contains(&c.id) {
            self.closes.push(c.id);
        }
    }

    /// Marks a conn for closing once its output is flushed.
    fn close_after_flush(&mut self, conn: ConnId) {
        let Some(ci) = self.idx(conn) else {
            return;
        };
        self.conns[ci].closing = true;
        if self.conns[ci].pending().is_empty() {
            self.release(ci);
        }
    }

    /// Drops pending output and closes.
    fn close_now(&mut self, conn: ConnId) {
        if let Some(ci) = self.idx(conn) {
            self.release(ci);
        }
    }

    fn push_out(&mut self, conn: ConnId, bytes: &[u8]) {
        if let Some(ci) = self.idx(conn) {
            self.conns[ci].out.extend_from_slice(bytes);
        }
    }

    fn push_state(&mut self, conn: ConnId, s: i8) {
        self.push_out(conn, &s.to_be_bytes());
    }

    fn reject(&mut self, conn: ConnId) {
        let Some(ci) = self.idx(conn) else {
            return;
        };
        self.conns[ci].kind = Kind::Reject;
        self.conns[ci].inbuf = Vec::new();
        self.stats.rejected_connections += 1;
        self.push_state(conn, state::ACCESS_DENIED);
        self.close_after_flush(conn);
    }

    fn set_kind(&mut self, conn: ConnId, kind: Kind) {
        if let Some(ci) = self.idx(conn) {
            self.conns[ci].kind = kind;
        }
    }

    fn on_cookie(&mut self, conn: ConnId, cookie: [u8; COOKIE_SIZE], now: Instant) {
        match &mut self.test {
            None => {
                self.set_kind(conn, Kind::Control);
                self.test = Some(Test {
                    ctrl: conn,
                    cookie,
                    phase: Phase::Params,
                    phase_since: now,
                    params: TestParams::default(),
                    streams: Vec::new(),
                    start: None,
                    end: None,
                    omit_pending: false,
                    last_data: now,
                    cpu_start: None,
                    cpu: CpuUtil::default(),
                    client_sent: None,
                });
                self.push_state(conn, state::PARAM_EXCHANGE);
            }
            Some(t)
                if t.phase == Phase::CreateStreams
                    && t.cookie == cookie
                    && t.streams.len() < t.params.parallel as usize =>
            {
                let id = stream_id(t.streams.len());
                t.streams.push(StreamStats { id, conn, bytes: 0 });
                let all = t.streams.len() == t.params.parallel as usize;
                let ctrl = t.ctrl;
                self.set_kind(conn, Kind::Data(id));
                if all {
                    self.start_test(ctrl, now);
                }
            }
            Some(_) => self.reject(conn),
        }
    }

    fn start_test(&mut self, ctrl: ConnId, now: Instant) {
        if let Some(t) = &mut self.test {
            t.phase = Phase::Running;
            t.phase_since = now;
            t.start = Some(now);
            t.last_data = now;
            t.omit_pending = t.params.omit > 0;
            t.cpu_start = Some(CpuSnapshot::take(now));
        }
        self.push_state(ctrl, state::TEST_START);
        self.push_state(ctrl, state::TEST_RUNNING);
    }

    fn check_omit(&mut self, now: Instant) {
        let Some(t) = &mut self.test else {
            return;
        };
        if !t.omit_pending || t.phase != Phase::Running {
            return;
        }
        let Some(start) = t.start else {
            return;
        };
        if now.saturating_duration_since(start) >= Duration::from_secs(t.params.omit) {
            t.omit_pending = false;
            for s in &mut t.streams {
                s.bytes = 0;
            }
            t.start = Some(now);
            t.cpu_start = Some(CpuSnapshot::take(now));
        }
    }

    fn count_data(&mut self, conn: ConnId, n: usize, now: Instant) {
        self.check_omit(now);
        let Some(t) = &mut self.test else {
            return;
        };
        if !matches!(t.phase, Phase::CreateStreams | Phase::Running) {
            return;
        }
        if let Some(s) = t.streams.iter_mut().find(|s| s.conn == conn) {
            s.bytes = s.bytes.saturating_add(n as u64);
            if n > 0 {
                t.last_data = now;
            }
        }
    }

    fn control_input(&mut self, ci: usize, data: &[u8], now: Instant) {
        let conn = self.conns[ci].id;
        // A legitimate client never has more than one message outstanding.
        let cap = 4 + MAX_RESULTS_JSON + 64;
        let c = &mut self.conns[ci];
        if c.inbuf.len().saturating_add(data.len()) > cap {
            self.fail(errcode::IEMESSAGE, now);
            return;
        }
        c.inbuf.extend_from_slice(data);
        self.drive_control(conn, now);
    }

    fn drive_control(&mut self, conn: ConnId, now: Instant) {
        loop {
            let Some(t) = &self.test else {
                return;
            };
            if t.ctrl != conn {
                return;
            }
            let phase = t.phase;
            let Some(ci) = self.idx(conn) else {
                return;
            };
            match phase {
                Phase::Params | Phase::Results => {
                    let max = if phase == Phase::Params {
                        MAX_PARAMS_JSON
                    } else {
                        MAX_RESULTS_JSON
                    };
                    let code = if phase == Phase::Params {
                        errcode::IERECVPARAMS
                    } else {
                        errcode::IERECVRESULTS
                    };
                    let inbuf = &self.conns[ci].inbuf;
                    let (consumed, outcome) = match parse_frame(inbuf, max) {
                        Ok(None) => return,
                        Err(_) => {
                            self.fail(code, now);
                            return;
                        }
                        Ok(Some((consumed, body))) => {
                            let outcome = if phase == Phase::Params {
                                parse_params(body).map(Ok)
                            } else {
                                parse_client_results(body).map(Err)
                            };
                            (consumed, outcome)
                        }
                    };
                    self.conns[ci].inbuf.drain(..consumed);
                    match outcome {
                        Err(e) => {
                            self.fail(e, now);
                            return;
                        }
                        Ok(Ok(params)) => self.on_params(conn, params, now),
                        Ok(Err(client_sent)) => self.on_client_results(conn, client_sent, now),
                    }
                }
                Phase::CreateStreams | Phase::Running | Phase::Display => {
                    let Some(&b) = self.conns[ci].inbuf.first() else {
                        return;
                    };
                    self.conns[ci].inbuf.drain(..1);
                    self.on_state_byte(conn, i8::from_be_bytes([b]), now);
                }
            }
        }
    }

    fn on_params(&mut self, conn: ConnId, params: TestParams, now: Instant) {
        if let Some(code) = refusal(&params) {
            if let Some(t) = &mut self.test {
                t.params = params;
            }
            self.stats.refused_tests += 1;
            self.server_error(conn, code);
            self.finish(TestOutcome::Refused { code }, now);
            return;
        }
        if let Some(t) = &mut self.test {
            t.params = params;
            t.phase = Phase::CreateStreams;
            t.phase_since = now;
        }
        self.push_state(conn, state::CREATE_STREAMS);
    }

    fn on_state_byte(&mut self, conn: ConnId, s: i8, now: Instant) {
        let phase = self.test.as_ref().map(|t| t.phase);
        match s {
            state::TEST_START => {}
            state::TEST_END if matches!(phase, Some(Phase::CreateStreams | Phase::Running)) => {
                self.check_omit(now);
                let mut data_conns = Vec::new();
                if let Some(t) = &mut self.test {
                    t.end = Some(now);
                    t.start.get_or_insert(now);
                    let snap = CpuSnapshot::take(now);
                    t.cpu = t
                        .cpu_start
                        .as_ref()
                        .map(|s0| snap.util_since(s0))
                        .unwrap_or_default();
                    t.phase = Phase::Results;
                    t.phase_since = now;
                    data_conns.extend(t.streams.iter().map(|s| s.conn));
                }
                for c in data_conns {
                    self.close_after_flush(c);
                }
                self.push_state(conn, state::EXCHANGE_RESULTS);
            }
            state::TEST_END => {}
            state::IPERF_DONE => {
                let outcome = if phase == Some(Phase::Display) {
                    TestOutcome::Completed
                } else {
                    TestOutcome::ClientAborted
                };
                self.finish(outcome, now);
            }
            state::CLIENT_TERMINATE => self.finish(TestOutcome::ClientAborted, now),
            _ => self.fail(errcode::IEMESSAGE, now),
        }
    }

    fn on_client_results(&mut self, conn: ConnId, client_sent: u64, now: Instant) {
        let Some(t) = &mut self.test else {
            return;
        };
        t.client_sent = Some(client_sent);
        t.phase = Phase::Display;
        t.phase_since = now;
        let duration = match (t.start, t.end) {
            (Some(s), Some(e)) => e.saturating_duration_since(s),
            _ => Duration::ZERO,
        };
        let secs = duration.as_secs_f64();
        let text;
        let server_output_text = if t.params.get_server_output {
            let summary = TestSummary {
                outcome: TestOutcome::Completed,
                params: t.params,
                streams: t.streams.clone(),
                bytes: t.bytes(),
                duration,
                cpu: t.cpu,
                client_sent_bytes: t.client_sent,
            };
            text = format!("{summary}\n");
            Some(text.as_str())
        } else {
            None
        };
        let msg = ResultsMsg {
            cpu_util_total: t.cpu.total,
            cpu_util_user: t.cpu.user,
            cpu_util_system: t.cpu.system,
            // The server only receives: iperf3 reports -1 here.
            sender_has_retransmits: -1,
            streams: t
                .streams
                .iter()
                .map(|s| StreamResult {
                    id: s.id,
                    bytes: s.bytes,
                    retransmits: -1,
                    jitter: 0.0,
                    errors: 0,
                    omitted_errors: 0,
                    packets: 0,
                    omitted_packets: 0,
                    start_time: 0.0,
                    end_time: secs,
                })
                .collect(),
            server_output_text,
        };
        let mut out = Vec::new();
        let ok = match serde_json::to_vec(&msg) {
            Ok(json) => encode_frame(&json, &mut out),
            Err(_) => false,
        };
        if !ok {
            self.fail(errcode::IERECVRESULTS, now);
            return;
        }
        self.push_out(conn, &out);
        self.push_state(conn, state::DISPLAY_RESULTS);
    }

    /// Queues SERVER_ERROR, the error code and errno 0 on `conn`.
    fn server_error(&mut self, conn: ConnId, code: i32) {
        let mut m = [0u8; 9];
        m[0] = state::SERVER_ERROR.to_be_bytes()[0];
        m[1..5].copy_from_slice(&code.to_be_bytes());
        self.push_out(conn, &m);
    }

    /// Sends SERVER_ERROR to the client and ends the test.
    fn fail(&mut self, code: i32, now: Instant) {
        self.stats.errors += 1;
        if let Some(ctrl) = self.test.as_ref().map(|t| t.ctrl) {
            // Drop unread input so nothing else is processed.
            if let Some(ci) = self.idx(ctrl) {
                self.conns[ci].inbuf.clear();
            }
            self.server_error(ctrl, code);
        }
        self.finish(TestOutcome::Failed { code }, now);
    }

    /// Ends the current test: records it and closes its connections.
    fn finish(&mut self, outcome: TestOutcome, now: Instant) {
        let Some(mut t) = self.test.take() else {
            return;
        };
        if t.end.is_none() {
            t.end = Some(now);
        }
        let duration = match (t.start, t.end) {
            (Some(s), Some(e)) => e.saturating_duration_since(s),
            _ => Duration::ZERO,
        };
        let bytes = t.bytes();
        match outcome {
            TestOutcome::Completed => self.stats.tests_completed += 1,
            _ => self.stats.tests_failed += 1,
        }
        self.stats.total_bytes = self.stats.total_bytes.saturating_add(bytes);
        for s in &t.streams {
            self.close_after_flush(s.conn);
        }
        self.close_after_flush(t.ctrl);
        self.stats.last_test = Some(TestSummary {
            outcome,
            params: t.params,
            streams: t.streams,
            bytes,
            duration,
            cpu: t.cpu,
            client_sent_bytes: t.client_sent,
        });
    }
}

/// Checks the client's results JSON the way iperf3 does and returns the
/// bytes the client says it sent.
fn parse_client_results(body: &[u8]) -> Result<u64, i32> {
    let v: Value = serde_json::from_slice(body).map_err(|_| errcode::IERECVRESULTS)?;
    let obj = v.as_object().ok_or(errcode::IERECVRESULTS)?;
    for k in [
        "cpu_util_total",
        "cpu_util_user",
        "cpu_util_system",
        "sender_has_retransmits",
    ] {
        if !obj.get(k).is_some_and(Value::is_number) {
            return Err(errcode::IERECVRESULTS);
        }
    }
    let streams = obj
        .get("streams")
        .and_then(Value::as_array)
        .ok_or(errcode::IERECVRESULTS)?;
    let mut sent = 0u64;
    for s in streams {
        let b = s
            .get("bytes")
            .and_then(Value::as_f64)
            .ok_or(errcode::IERECVRESULTS)?;
        if b.is_finite() && b > 0.0 {
            sent = sent.saturating_add(b as u64);
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: &[u8; COOKIE_SIZE] = b"abcdefghijklmnopqrstuvwxyz0123456789\0";
    const OTHER: &[u8; COOKIE_SIZE] = b"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\0";

    fn frame(json: &str) -> Vec<u8> {
        let mut v = Vec::new();
        assert!(encode_frame(json.as_bytes(), &mut v));
        v
    }

    /// Takes everything pending on `conn`.
    fn drain(s: &mut Iperf3Server, conn: ConnId) -> Vec<u8> {
        let out = s.pending_output(conn).to_vec();
        s.sent(conn, out.len());
        out
    }

    fn params(parallel: u32, extra: &str) -> Vec<u8> {
        frame(&format!(
            r#"{{"tcp":true,"omit":0,"time":2,"num":0,"blockcount":0,"parallel":{parallel},"len":131072,"pacing_timer":1000,"client_version":"3.12"{extra}}}"#
        ))
    }

    fn client_results(sent: u64) -> Vec<u8> {
        frame(&format!(
            r#"{{"cpu_util_total":1.5,"cpu_util_user":0.5,"cpu_util_system":1.0,"sender_has_retransmits":1,"streams":[{{"id":1,"bytes":{sent},"retransmits":0,"jitter":0,"errors":0,"packets":0,"start_time":0,"end_time":2}}]}}"#
        ))
    }

    fn b(s: i8) -> u8 {
        s.to_be_bytes()[0]
    }

    /// Runs a complete test with `n` streams, each receiving `per` bytes.
    fn full_test(s: &mut Iperf3Server, n: u32, per: usize, t0: Instant) -> Vec<u8> {
        let ctrl = 100;
        s.on_accept(ctrl, t0);
        assert_eq!(s.on_recv(ctrl, COOKIE, t0), Role::Control);
        assert_eq!(drain(s, ctrl), [b(state::PARAM_EXCHANGE)]);
        s.on_recv(ctrl, &params(n, ""), t0);
        assert_eq!(drain(s, ctrl), [b(state::CREATE_STREAMS)]);
        for i in 0..n {
            let c = 200 + i;
            assert_eq!(s.on_accept(c, t0), Role::Unknown);
            let r = s.on_recv(c, COOKIE, t0);
            assert_eq!(
                r,
                Role::Data {
                    stream: stream_id(i as usize)
                }
            );
        }
        assert_eq!(
            drain(s, ctrl),
            [b(state::TEST_START), b(state::TEST_RUNNING)]
        );
        let data = vec![0u8; per];
        for i in 0..n {
            s.on_recv(200 + i, &data, t0 + Duration::from_millis(500));
        }
        let t1 = t0 + Duration::from_secs(2);
        s.on_recv(ctrl, &[b(state::TEST_END)], t1);
        assert_eq!(drain(s, ctrl), [b(state::EXCHANGE_RESULTS)]);
        let mut closed = s.take_closes();
        closed.sort_unstable();
        assert_eq!(closed, (0..n).map(|i| 200 + i).collect::<Vec<_>>());
        s.on_recv(ctrl, &client_results(per as u64 * n as u64), t1);
        let out = drain(s, ctrl);
        assert_eq!(out.last(), Some(&b(state::DISPLAY_RESULTS)));
        let (used, body) = parse_frame(&out, MAX_RESULTS_JSON).unwrap().unwrap();
        assert_eq!(used + 1, out.len());
        let body = body.to_vec();
        s.on_recv(ctrl, &[b(state::IPERF_DONE)], t1);
        assert_eq!(s.take_closes(), vec![ctrl]);
        assert!(!s.is_busy());
        body
    }

    #[test]
    fn stream_ids_skip_two() {
        assert_eq!(
            (0..5).map(stream_id).collect::<Vec<_>>(),
            vec![1, 3, 4, 5, 6]
        );
        assert_eq!(stream_id(usize::MAX), u32::MAX);
    }

    #[test]
    fn framing_roundtrip_and_partial() {
        let f = frame(r#"{"a":1}"#);
        assert_eq!(&f[..4], &[0, 0, 0, 7]);
        for cut in 0..f.len() {
            assert_eq!(parse_frame(&f[..cut], 100), Ok(None));
        }
        let mut two = f.clone();
        two.push(42);
        assert_eq!(
            parse_frame(&two, 100),
            Ok(Some((f.len(), &br#"{"a":1}"#[..])))
        );
        assert_eq!(parse_frame(&f, 6), Err(FrameError::BadLength(7)));
        assert_eq!(parse_frame(&[0, 0, 0, 0], 6), Err(FrameError::BadLength(0)));
        assert_eq!(
            parse_frame(&[0xff, 0xff, 0xff, 0xff], MAX_RESULTS_JSON),
            Err(FrameError::BadLength(u32::MAX))
        );
    }

    #[test]
    fn full_test_single_and_parallel() {
        let mut s = Iperf3Server::new();
        let t0 = Instant::now();
        let body = full_test(&mut s, 1, 1000, t0);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["streams"][0]["id"], 1);
        assert_eq!(v["streams"][0]["bytes"], 1000);
        assert_eq!(v["sender_has_retransmits"], -1);
        assert!(v["cpu_util_total"].is_number());
        assert_eq!(v["streams"][0]["end_time"], 2.0);
        let st = s.stats();
        assert_eq!(st.tests_completed, 1);
        assert_eq!(st.last_test.as_ref().unwrap().bytes, 1000);
        assert_eq!(st.last_test.as_ref().unwrap().client_sent_bytes, Some(1000));
        assert!(s.last_summary_line().unwrap().contains("1000 bytes"));

        // The server is free again: a 3-stream test.
        let body = full_test(&mut s, 3, 777, t0 + Duration::from_secs(10));
        let v: Value = serde_json::from_slice(&body).unwrap();
        let ids: Vec<_> = v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, vec![1, 3, 4]);
        let st = s.stats();
        assert_eq!(st.tests_completed, 2);
        assert_eq!(st.total_bytes, 1000 + 3 * 777);
        assert_eq!(total_bytes(&st.last_test.unwrap().streams), 3 * 777);
    }

    #[test]
    fn cookie_and_json_split_byte_by_byte() {
        let mut s = Iperf3Server::new();
        let t0 = Instant::now();
        s.on_accept(1, t0);
        for (i, byte) in COOKIE.iter().enumerate() {
            let r = s.on_recv(1, std::slice::from_ref(byte), t0);
            if i + 1 < COOKIE_SIZE {
                assert_eq!(r, Role::Unknown);
                assert!(s.pending_output(1).is_empty());
            } else {
                assert_eq!(r, Role::Control);
            }
        }
        assert_eq!(drain(&mut s, 1), [b(state::PARAM_EXCHANGE)]);
        let p = params(2, "");
        for byte in &p {
            assert!(s.pending_output(1).is_empty());
            s.on_recv(1, std::slice::from_ref(byte), t0);
        }
        assert_eq!(drain(&mut s, 1), [b(state::CREATE_STREAMS)]);
        // A data connection whose cookie arrives in two pieces, with data glued on.
        s.on_accept(2, t0);
        assert_eq!(s.on_recv(2, &COOKIE[..10], t0), Role::Unknown);
        let mut rest = COOKIE[10..].to_vec();
        rest.extend_from_slice(&[7u8; 50]);
        assert_eq!(s.on_recv(2, &rest, t0), Role::Data { stream: 1 });
        assert_eq!(s.current_bytes(), 50);
    }

    #[test]
    fn cookie_and_params_in_one_segment() {
        let mut s = Iperf3Server::new();
        let t0 = Instant::now();
        s.on_accept(1, t0);
        let mut all = COOKIE.to_vec();
        all.extend_from_slice(&params(1, ""));
        assert_eq!(s.on_recv(1, &all, t0), Role::Control);
        assert_eq!(
            drain(&mut s, 1),
            [b(state::PARAM_EXCHANGE), b(state::CREATE_STREAMS)]
        );
    }

    #[test]
    fn oversized_json_is_a_clean_error() {
        let mut s = Iperf3Server::new();
        let t0 = Instant::now();
        s.on_accept(1, t0);
        s.on_recv(1, COOKIE, t0);
        drain(&mut s, 1);
        // Claims 2 MiB of JSON.
        s.on_recv(1, &(2u32 << 20).to_be_bytes(), t0);
        let out = drain(&mut s, 1);
        assert_eq!(out[0], b(state::SERVER_ERROR));
        assert_eq!(&out[1..5], &errcode::IERECVPARAMS.to_be_bytes());
        assert_eq!(&out[5..9], &[0, 0, 0, 0]);
        assert_eq!(s.take_closes(), vec![1]);
        assert!(!s.is_busy());
        assert_eq!(s.stats().errors, 1);
        // Later input on the dead connection is ignored.
        assert_eq!(s.on_recv(1, &[1, 2, 3], t0), Role::Closed);
    }

    /// A server with a one-stream test under way: control connection 1,
    /// data connection 2, parameters exchanged, streams created.
    fn one_stream_test() -> (Iperf3Server, Instant) {
        let mut s = Iperf3Server::new();
        let t0 = Instant::now();
        s.on_accept(1, t0);
        s.on_recv(1, COOKIE, t0);
        s.on_recv(1, &params(1, ""), t0);
        s.on_accept(2, t0);
        s.on_recv(2, COOKIE, t0);
        (s, t0)
    }

    #[test]
    fn oversized_results_json_is_a_clean_error() {
        let (mut s, t0) = one_stream_test();
        s.on_recv(1, &[b(state::TEST_END)], t0);
        drain(&mut s, 1);
        s.on_recv(1, &((MAX_RESULTS_JSON as u32) + 1).to_be_bytes(), t0);
        let out = drain(&mut s, 1);
        assert_eq!(out[0], b(state::SERVER_ERROR));
        assert_eq!(&out[1..5], &errcode::IERECVRESULTS.to_be_bytes());
        assert!(!s.is_busy());
    }

    #[test]
    fn garbage_params_and_unknown_state() {
        let mut s = Iperf3Server::new();
        let t0 = Instant::now();
        s.on_accept(1, t0);
        s.on_recv(1, COOKIE, t0);
        drain(&mut s, 1);
        s.on_recv(1, &frame("not json"), t0);
        let out = drain(&mut s, 1);
        assert_eq!(out[0], b(state::SERVER_ERROR));
        assert!(!s.is_busy());

        s.on_accept(2, t0);
        s.on_recv(2, COOKIE, t0);
        s.on_recv(2, &params(1, ""), t0);
        drain(&mut s, 2);
        s.on_recv(2, &[99], t0);
        let out = drain(&mut s, 2);
        assert_eq!(out[0], b(state::SERVER_ERROR));
        assert_eq!(&out[1..5], &errcode::IEMESSAGE.to_be_bytes());
        assert!(!s.is_busy());
    }

    #[test]
    fn refuses_reverse_bidir_udp_sctp_and_bad_values() {
        for (extra, code) in [
            (r#","reverse":true"#, errcode::IEUNIMP),
            (r#","bidirectional":true"#, errcode::IEUNIMP),
            (r#","udp":true"#, errcode::IEPROTOCOL),
            (r#","sctp":true"#, errcode::IEPROTOCOL),
            (r#","omit":601"#, errcode::IEOMIT),
            (r#","time":-1"#, errcode::IEDURATION),
        ] {
            let mut s = Iperf3Server::new();
            let t0 = Instant::now();
            s.on_accept(1, t0);
            s.on_recv(1, COOKIE, t0);
            drain(&mut s, 1);
            s.on_recv(1, &params(1, extra), t0);
            let out = drain(&mut s, 1);
            assert_eq!(out.len(), 9, "{extra}");
            assert_eq!(out[0], b(state::SERVER_ERROR));
            assert_eq!(&out[1..5], &code.to_be_bytes(), "{extra}");
            assert_eq!(s.take_closes(), vec![1]);
            assert!(!s.is_busy());
        }
        let mut s = Iperf3Server::new();
        let t0 = Instant::now();
        s.on_accept(1, t0);
        s.on_recv(1, COOKIE, t0);
        drain(&mut s, 1);
        // parallel 0 and 129 are invalid (later keys win in serde_json's map).
        s.on_recv(1, &params(129, ""), t0);
        let out = drain(&mut s, 1);
        assert_eq!(&out[1..5], &errcode::IENUMSTREAMS.to_be_bytes());
    }

    #[test]
    fn busy_server_denies_second_client() {
        let mut s = Iperf3Server::new();
        let t0 = Instant::now();
        s.on_accept(1, t0);
        s.on_recv(1, COOKIE, t0);
        // During parameter exchange: denied at once.
        assert_eq!(s.on_accept(9, t0), Role::Reject);
        assert_eq!(drain(&mut s, 9), [b(state::ACCESS_DENIED)]);
        assert_eq!(s.take_closes(), vec![9]);
        s.on_recv(1, &params(2, ""), t0);
        // During stream setup: a wrong cookie is denied.
        s.on_accept(10, t0);
        assert_eq!(s.on_recv(10, OTHER, t0), Role::Reject);
        assert_eq!(s.pending_output(10), [b(state::ACCESS_DENIED)]);
        assert!(!s.has_closes()); // not flushed yet
        s.sent(10, 1);
        assert_eq!(s.take_closes(), vec![10]);
        s.on_accept(2, t0);
        s.on_recv(2, COOKIE, t0);
        s.on_accept(3, t0);
        s.on_recv(3, COOKIE, t0);
        // Running: denied at once; rejected input is discarded.
        assert_eq!(s.on_accept(11, t0), Role::Reject);
        assert_eq!(s.on_recv(11, OTHER, t0), Role::Reject);
        assert_eq!(s.stats().rejected_connections, 3);
        assert_eq!(s.stats().current_streams, 2);
        assert!(s.is_busy());
    }

    #[test]
    fn control_close_aborts_and_frees_server() {
        let (mut s, t0) = one_stream_test();
        s.on_recv(2, &[0; 100], t0);
        s.on_close(1, t0);
        assert!(!s.is_busy());
        assert_eq!(s.take_closes(), vec![2]);
        let st = s.stats();
        assert_eq!(st.tests_failed, 1);
        assert_eq!(st.last_test.unwrap().outcome, TestOutcome::ClientAborted);
        // Next client is served.
        s.on_accept(3, t0);
        assert_eq!(s.on_recv(3, OTHER, t0), Role::Control);
    }

    #[test]
    fn client_terminate_and_timeouts() {
        let (mut s, t0) = one_stream_test();
        s.on_recv(1, &[b(state::CLIENT_TERMINATE)], t0);
        assert!(!s.is_busy());

        // Duration overrun: 2 s test + 40 s grace.
        s.on_accept(3, t0);
        s.on_recv(3, COOKIE, t0);
        s.on_recv(3, &params(1, ""), t0);
        s.on_accept(4, t0);
        s.on_recv(4, COOKIE, t0);
        drain(&mut s, 3);
        s.poll(t0 + Duration::from_secs(30));
        assert!(s.is_busy());
        s.on_recv(4, &[0; 10], t0 + Duration::from_secs(30));
        s.poll(t0 + Duration::from_secs(43));
        assert!(!s.is_busy());
        let out = drain(&mut s, 3);
        assert_eq!(
            &out[1..5],
            &errcode::IESERVERTESTDURATIONEXPIRED.to_be_bytes()
        );

        // A connection that never sends its cookie is closed.
        s.take_closes();
        s.on_accept(5, t0);
        s.poll(t0 + Duration::from_secs(11));
        assert_eq!(s.take_closes(), vec![5]);
    }

    #[test]
    fn omit_resets_counts() {
        let mut s = Iperf3Server::new();
        let t0 = Instant::now();
        s.on_accept(1, t0);
        s.on_recv(1, COOKIE, t0);
        s.on_recv(1, &params(1, r#","omit":1"#), t0);
        s.on_accept(2, t0);
        s.on_recv(2, COOKIE, t0);
        s.on_recv(2, &[0; 100], t0 + Duration::from_millis(500));
        assert_eq!(s.current_bytes(), 100);
        s.on_recv(2, &[0; 30], t0 + Duration::from_millis(1500));
        assert_eq!(s.current_bytes(), 30);
    }

    #[test]
    fn no_panic_on_random_input() {
        // Cheap deterministic fuzz: random chunks on control and data conns.
        let mut x: u64 = 0x1234_5678_9abc_def0;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut s = Iperf3Server::new();
        let t0 = Instant::now();
        for round in 0..2000u32 {
            let conn = (rnd() % 6) as ConnId;
            let now = t0 + Duration::from_millis(round as u64 * 37);
            match rnd() % 10 {
                0 => {
                    s.on_accept(conn, now);
                }
                1 => s.on_close(conn, now),
                2 => s.poll(now),
                3 => {
                    let n = s.pending_output(conn).len();
                    s.sent(conn, n + (rnd() % 3) as usize);
                }
                4 => {
                    s.on_recv(conn, COOKIE, now);
                }
                5 => {
                    s.on_recv(conn, &params(1 + (rnd() % 3) as u32, ""), now);
                }
                _ => {
                    let len = (rnd() % 64) as usize;
                    let buf: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
                    s.on_recv(conn, &buf, now);
                }
            }
            let _ = s.take_closes();
        }
        let _ = s.stats();
    }
}
