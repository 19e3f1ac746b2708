//! Drives `stack::iperf3::Iperf3Server` over kernel TCP on 127.0.0.1 against
//! the real `iperf3` client. Without `iperf3` installed the tests fail under
//! `CI=true` and otherwise pass after a `SKIP:` line on stderr.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use stack::iperf3::{ConnId, Iperf3Server, Role, TestOutcome};

/// Hard bound for any single scenario.
const SCENARIO_LIMIT: Duration = Duration::from_secs(30);

/// Under `CI=true` a test that cannot run fails; otherwise it says so on
/// stderr, past libtest's output capture.
fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and this test cannot run: {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIP: {why}");
}

fn iperf3_available() -> bool {
    Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A tiny nonblocking socket adapter around the sans-io server.
struct Harness {
    srv: Iperf3Server,
    listener: TcpListener,
    port: u16,
    conns: HashMap<ConnId, TcpStream>,
    /// Closed by the server: write side shut, input discarded until EOF.
    draining: Vec<(TcpStream, Instant)>,
    next_id: ConnId,
    buf: Vec<u8>,
}

impl Harness {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        Harness {
            srv: Iperf3Server::new(),
            listener,
            port,
            conns: HashMap::new(),
            draining: Vec::new(),
            next_id: 1,
            buf: vec![0u8; 256 * 1024],
        }
    }

    /// One poll round; returns whether anything happened.
    fn step(&mut self) -> bool {
        let mut progress = false;
        let now = Instant::now();
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(true).expect("nonblocking");
                    let _ = s.set_nodelay(true);
                    let id = self.next_id;
                    self.next_id += 1;
                    self.srv.on_accept(id, now);
                    self.conns.insert(id, s);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("accept: {e}"),
            }
        }
        // Data streams first, so bytes sent before TEST_END are counted.
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort_by_key(|&id| (!matches!(self.srv.role(id), Role::Data { .. }), id));
        for id in ids {
            let Some(s) = self.conns.get_mut(&id) else {
                continue;
            };
            let mut closed = false;
            for _ in 0..64 {
                match s.read(&mut self.buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        progress = true;
                        if self.srv.on_recv(id, &self.buf[..n], Instant::now()) == Role::Closed {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                self.srv.on_close(id, Instant::now());
                self.conns.remove(&id);
                progress = true;
            }
        }
        // Output.
        for (&id, s) in self.conns.iter_mut() {
            let out = self.srv.pending_output(id);
            if out.is_empty() {
                continue;
            }
            match s.write(out) {
                Ok(n) => {
                    self.srv.sent(id, n);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => self.srv.sent(id, usize::MAX), // peer gone; drop output
            }
        }
        for id in self.srv.take_closes() {
            if let Some(s) = self.conns.remove(&id) {
                let _ = s.shutdown(Shutdown::Write);
                self.draining.push((s, Instant::now()));
                progress = true;
            }
        }
        let buf = &mut self.buf;
        self.draining.retain_mut(|(s, since)| {
            if since.elapsed() > Duration::from_secs(5) {
                return false;
            }
            loop {
                match s.read(buf) {
                    Ok(0) => return false,
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
        });
        self.srv.poll(Instant::now());
        progress
    }

    /// Starts `iperf3 -c 127.0.0.1 -p PORT ARGS`, stdout and stderr to files.
    /// Note: iperf3 3.12 exits 0 on errors when `--json` is given, so refusal
    /// checks run without `--json` and look at the exit code and stderr.
    fn spawn_client(&self, args: &[&str]) -> Client {
        let out = tempfile_path::TempPath::new("out");
        let err = tempfile_path::TempPath::new("err");
        let child = Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdout(std::fs::File::create(&out.0).expect("stdout file"))
            .stderr(std::fs::File::create(&err.0).expect("stderr file"))
            .spawn()
            .expect("spawn iperf3");
        Client { child, out, err }
    }

    /// Serves until every client exited and the server is idle again.
    fn run(&mut self, clients: &mut [&mut Child], start: Instant) -> Vec<ExitStatus> {
        let mut status: Vec<Option<ExitStatus>> = vec![None; clients.len()];
        loop {
            let progress = self.step();
            for (c, st) in clients.iter_mut().zip(status.iter_mut()) {
                if st.is_none() {
                    *st = c.try_wait().expect("try_wait");
                }
            }
            if status.iter().all(Option::is_some) && !self.srv.is_busy() {
                // Let the server see the final closes.
                for _ in 0..10 {
                    self.step();
                }
                return status.into_iter().flatten().collect();
            }
            if start.elapsed() > SCENARIO_LIMIT {
                for c in clients.iter_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                panic!(
                    "scenario exceeded {SCENARIO_LIMIT:?}; server stats {:?}",
                    self.srv.stats()
                );
            }
            if !progress {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    }
}

struct Client {
    child: Child,
    out: tempfile_path::TempPath,
    err: tempfile_path::TempPath,
}

/// A unique file path under the temp dir, removed on drop.
mod tempfile_path {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    static N: AtomicU32 = AtomicU32::new(0);

    pub struct TempPath(pub PathBuf);

    impl TempPath {
        pub fn new(tag: &str) -> Self {
            let n = N.fetch_add(1, Ordering::Relaxed);
            TempPath(
                std::env::temp_dir()
                    .join(format!("iperf3-loopback-{}-{n}.{tag}", std::process::id())),
            )
        }

        pub fn read_text(&self) -> String {
            std::fs::read_to_string(&self.0).unwrap_or_default()
        }

        pub fn read_json(&self) -> serde_json::Value {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default();
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("iperf3 output is not JSON ({e}): {text}"))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Runs one client (with `--json`) to completion and checks its report
/// against the server's count.
fn good_run(h: &mut Harness, args: &[&str], streams: usize) {
    let start = Instant::now();
    let before = h.srv.stats().tests_completed;
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let mut c = h.spawn_client(&all);
    let st = h.run(&mut [&mut c.child], start);
    let json = c.out.read_json();
    assert!(
        st[0].success() && json.get("error").is_none(),
        "iperf3 {args:?} failed: {st:?}: {json} {}",
        c.err.read_text()
    );
    let stats = h.srv.stats();
    assert_eq!(stats.tests_completed, before + 1, "{args:?}");
    let last = stats.last_test.expect("last test");
    assert_eq!(last.outcome, TestOutcome::Completed);
    assert_eq!(last.streams.len(), streams, "{args:?}");
    let ids: Vec<u32> = last.streams.iter().map(|s| s.id).collect();
    let want: Vec<u32> = (0..streams).map(stack::iperf3::stream_id).collect();
    assert_eq!(ids, want);
    let received = json["end"]["sum_received"]["bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no end.sum_received.bytes: {json}"));
    assert_eq!(received, last.bytes, "{args:?}");
    assert!(last.bytes > 0);
    // Per-stream receiver bytes match ours as well, in stream order.
    let per: Vec<u64> = json["end"]["streams"]
        .as_array()
        .expect("end.streams")
        .iter()
        .map(|s| s["receiver"]["bytes"].as_u64().expect("receiver bytes"))
        .collect();
    let mine: Vec<u64> = last.streams.iter().map(|s| s.bytes).collect();
    assert_eq!(per, mine, "{args:?}");
    if args.contains(&"--get-server-output") {
        let text = json["server_output_text"].as_str().unwrap_or("");
        assert!(text.contains("bytes"), "server output {text:?}");
    }
    let sent = json["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
    assert_eq!(last.client_sent_bytes, Some(sent));
    eprintln!(
        "iperf3 {args:?}: {} ({:.1}s wall)",
        last,
        start.elapsed().as_secs_f64()
    );
}

/// Runs one client that must be refused quickly with an error message.
fn refused_run(h: &mut Harness, args: &[&str], needle: &str) {
    let start = Instant::now();
    let mut c = h.spawn_client(args);
    let st = h.run(&mut [&mut c.child], start);
    let err = c.err.read_text();
    assert!(!st[0].success(), "iperf3 {args:?} should fail: {err}");
    assert!(start.elapsed() < Duration::from_secs(10), "{args:?} slow");
    assert!(err.contains(needle), "{args:?}: stderr {err:?}");
    assert!(!h.srv.is_busy());
    eprintln!("iperf3 {args:?} refused: {}", err.trim());
}

#[test]
fn real_iperf3_client() {
    if !iperf3_available() {
        skip_or_fail("iperf3 is not installed (apt-get install iperf3)");
        return;
    }
    let mut h = Harness::new();
    good_run(&mut h, &["-t", "2"], 1);
    good_run(&mut h, &["-P", "3", "-t", "2"], 3);
    good_run(&mut h, &["-n", "10M"], 1);
    good_run(&mut h, &["-O", "1", "-t", "2"], 1);
    good_run(&mut h, &["--get-server-output", "-k", "100"], 1);
    refused_run(&mut h, &["-R", "-t", "2"], "not implemented");
    refused_run(&mut h, &["-u", "-t", "2"], "protocol does not exist");
    refused_run(&mut h, &["--bidir", "-t", "2"], "not implemented");
    // The server still works after refusals.
    good_run(&mut h, &["-P", "2", "-n", "4M"], 2);
    let st = h.srv.stats();
    assert_eq!(st.tests_completed, 6);
    assert_eq!(st.refused_tests, 3);
    assert_eq!(st.tests_failed, 3);
}

#[test]
fn real_iperf3_busy_server() {
    if !iperf3_available() {
        skip_or_fail("iperf3 is not installed (apt-get install iperf3)");
        return;
    }
    let mut h = Harness::new();
    let start = Instant::now();
    let mut first = h.spawn_client(&["--json", "-t", "3"]);
    // Serve until the first test runs, then start a second client.
    while h.srv.stats().current_streams == 0 {
        h.step();
        assert!(start.elapsed() < SCENARIO_LIMIT, "first test never started");
        std::thread::sleep(Duration::from_micros(500));
    }
    let mut second = h.spawn_client(&["-t", "1"]);
    let st = h.run(&mut [&mut first.child, &mut second.child], start);
    let j1 = first.out.read_json();
    let err2 = second.err.read_text();
    assert!(st[0].success(), "first client failed: {j1}");
    assert!(!st[1].success(), "second client should be refused: {err2}");
    assert!(err2.contains("busy"), "second client stderr {err2:?}");
    let stats = h.srv.stats();
    assert_eq!(stats.tests_completed, 1);
    assert!(stats.rejected_connections >= 1);
    let received = j1["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert_eq!(received, stats.last_test.expect("last").bytes);
    eprintln!("busy server: second client said {:?}", err2.trim());
}
