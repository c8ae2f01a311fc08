//! Shared helpers for the integration tests: a broker process per test, and raw framing on top
//! of the shared blocking client (`spate::client`) for tests that send hand-made or hostile
//! frames.
//!
//! Every socket has read and write timeouts, and every wait has a deadline, so a misbehaving
//! broker fails a test instead of hanging it.

#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use spate::client::{Conn, Options, connect_stream, frame};

/// How long a broker may take to start answering.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
/// How long a stopped broker may take to exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Read timeout of every test socket: the longest any single response may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How the tests connect, through the shared blocking client (`spate::client`).
pub const OPTIONS: Options = Options {
    client_id: "spate-tests",
    connect_timeout: IO_TIMEOUT,
    io_timeout: IO_TIMEOUT,
    frame_bytes_max: 256 * 1024 * 1024,
};

/// A broker process on a free port with its own data directory; killed on drop.
pub struct Broker {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub stderr_path: PathBuf,
    pub shards: usize,
}

/// A port nobody listens on, handed out at most once per test process. Asking the kernel for
/// port 0 can return a port handed out a moment ago to a broker that has not bound it yet (tests
/// run in parallel threads), and ephemeral ports can be taken by any outgoing connection; so
/// ports come from below the ephemeral range, in a per-process order.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<(u64, HashSet<u16>)>> = Mutex::new(None);
    const LOW: u16 = 20000;
    const SPAN: u64 = 12000;
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let (state, handed_out) = guard.get_or_insert_with(|| {
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        (seed | 1, HashSet::new())
    });
    for _ in 0..SPAN {
        // xorshift64: a cheap per-process pseudo-random walk over the range.
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let port = LOW + (*state % SPAN) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", u64::from(LOW) + SPAN);
}

impl Broker {
    /// One shard, defaults otherwise.
    pub fn start() -> Broker {
        Broker::start_with(1, &[])
    }

    /// `shards` shards plus extra `serve` arguments (e.g. `["--auto-create-topics", "false"]`).
    pub fn start_with(shards: usize, extra: &[&str]) -> Broker {
        Broker::start_in(tempfile::tempdir().expect("tempdir"), shards, extra)
    }

    /// Stops the broker (asserting a clean exit) and hands back its directory and stderr, so
    /// a test can start another broker on the same data.
    pub fn stop_and_keep(mut self) -> (tempfile::TempDir, String) {
        let status = self.terminate();
        let stderr = self.stderr();
        assert!(
            status.is_some_and(|s| s.success()),
            "broker did not stop cleanly ({status:?}); stderr:\n{stderr}"
        );
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        (dir, stderr)
    }

    /// Starts a broker on the data under `dir` (from [`Broker::stop_and_keep`], or fresh).
    pub fn start_in(dir: tempfile::TempDir, shards: usize, extra: &[&str]) -> Broker {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        Broker::spawn(
            dir,
            shards,
            addr,
            &["--listen".into(), addr.to_string()],
            extra,
        )
    }

    /// A broker with a PLAINTEXT listener (`addr`, where readiness is checked) and a
    /// SASL_PLAINTEXT one, whose address is returned.
    pub fn start_sasl(shards: usize, extra: &[&str]) -> (Broker, SocketAddr) {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let sasl: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let listeners = [
            "--listeners".to_string(),
            format!("PLAINTEXT://{addr},SASL_PLAINTEXT://{sasl}"),
        ];
        (Broker::spawn(dir, shards, addr, &listeners, extra), sasl)
    }

    /// A broker with a PLAINTEXT listener (`addr`, where readiness is checked) and an SSL one
    /// on the certificate of `tests/fixtures/tls` (IP:127.0.0.1, DNS:localhost), whose address
    /// is returned; `extra` may add `--tls-client-ca-file`.
    pub fn start_ssl(shards: usize, extra: &[&str]) -> (Broker, SocketAddr) {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let ssl: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let listeners = [
            "--listeners".to_string(),
            format!("PLAINTEXT://{addr},SSL://{ssl}"),
            "--tls-cert-file".to_string(),
            tls_fixture("server.pem"),
            "--tls-key-file".to_string(),
            tls_fixture("server-pkcs8.key"),
        ];
        (Broker::spawn(dir, shards, addr, &listeners, extra), ssl)
    }

    fn spawn(
        dir: tempfile::TempDir,
        shards: usize,
        addr: SocketAddr,
        listen: &[String],
        extra: &[&str],
    ) -> Broker {
        let data_dir = dir.path().join("data");
        let stderr_path = dir
            .path()
            .join(format!("broker-{}.stderr", next_correlation_id()));
        let stderr = File::create(&stderr_path).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_spate"))
            .arg("serve")
            .args(listen)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--shards")
            .arg(shards.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn spate");
        let mut broker = Broker {
            child: Some(child),
            addr,
            dir,
            stderr_path,
            shards,
        };
        broker.wait_ready();
        broker
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("try_wait") {
                panic!(
                    "broker exited during start-up with {status}; stderr:\n{}",
                    self.stderr()
                );
            }
            if self.answers_api_versions() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "broker not ready on {} after {READY_DEADLINE:?}; stderr:\n{}",
                    self.addr,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("broker already stopped")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker already stopped").id()
    }

    /// Everything the broker wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A new connection with read/write timeouts.
    pub fn connect(&self) -> TcpStream {
        connect_stream(&self.addr.to_string(), &OPTIONS)
            .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", self.stderr()))
    }

    /// A fresh connection gets a valid ApiVersions answer: the shared client's connect
    /// negotiates versions, and fails unless the broker answers with error code 0.
    fn answers_api_versions(&self) -> bool {
        let probe = Options {
            connect_timeout: Duration::from_millis(500),
            ..OPTIONS
        };
        Conn::connect(&self.addr.to_string(), &probe).is_ok()
    }

    /// The process still runs AND a fresh connection gets a valid ApiVersions answer.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => {}
            _ => return false,
        }
        self.answers_api_versions()
    }

    /// Panics with the broker's stderr unless [`Broker::alive`].
    pub fn assert_alive(&mut self, context: &str) {
        if !self.alive() {
            let status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "broker not alive after {context} (exit status: {status:?}); stderr:\n{}",
                self.stderr()
            );
        }
    }

    /// Resident memory of the broker process in KiB (from /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        // The child is not reaped yet, so its pid is still its own.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// SIGKILL (a crash: no shutdown work runs) and hand back the directory, so a test can
    /// start another broker on the same data.
    pub fn kill_and_keep(mut self) -> tempfile::TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    /// SIGTERM, and assert a clean exit (status 0) within [`STOP_DEADLINE`].
    pub fn stop(mut self) {
        let status = self.terminate();
        match status {
            Some(s) if s.success() => {}
            Some(s) => panic!("broker exited with {s}; stderr:\n{}", self.stderr()),
            None => panic!(
                "broker did not exit within {STOP_DEADLINE:?} of SIGTERM; stderr:\n{}",
                self.stderr()
            ),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.terminate();
    }
}

// ---------------------------------------------------------------------------------------------
// Client

static CORRELATION: AtomicI32 = AtomicI32::new(1);

/// A fresh correlation id.
/// The path of a file of `tests/fixtures/tls`.
pub fn tls_fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub fn next_correlation_id() -> i32 {
    CORRELATION.fetch_add(1, Ordering::Relaxed)
}

/// A request frame's body (no size prefix): header of the right version, then `req`.
pub fn encode_request<Req: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    req: &Req,
) -> BytesMut {
    let mut buf = BytesMut::new();
    frame::encode_request(
        &mut buf,
        api_key,
        version,
        correlation_id,
        OPTIONS.client_id,
        req,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    buf.split_off(4)
}

/// Just the request header bytes (to build hand-made bodies after it).
pub fn encode_header(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    header_version: i16,
) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("spate-tests")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, header_version)
        .expect("encode request header");
    buf.to_vec()
}

/// Writes a 4-byte big-endian size prefix and `body`.
pub fn send_frame(stream: &mut TcpStream, body: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(body);
    stream.write_all(&out)?;
    stream.flush()
}

/// Encodes and sends a request; returns its correlation id.
pub fn send_request<Req: Encodable>(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    req: &Req,
) -> io::Result<i32> {
    let corr = next_correlation_id();
    send_frame(stream, &encode_request(api_key, version, corr, req))?;
    Ok(corr)
}

/// Reads one size-prefixed frame.
pub fn read_frame(stream: &mut TcpStream) -> io::Result<Bytes> {
    frame::read_frame(stream, OPTIONS.frame_bytes_max)
}

/// Reads one response frame and decodes its header; returns (correlation id, body bytes).
pub fn read_response(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
) -> io::Result<(i32, Bytes)> {
    let mut frame = read_frame(stream)?;
    let corr = frame::response_header(&mut frame, api_key, version)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((corr, frame))
}

/// Sends a request and reads its response body; errors on I/O or a correlation mismatch.
pub fn try_request<Req: Encodable>(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    req: &Req,
) -> io::Result<Bytes> {
    let corr = send_request(stream, api_key, version, req)?;
    let (got, body) = read_response(stream, api_key, version)?;
    if got != corr {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("correlation id {got}, expected {corr}"),
        ));
    }
    Ok(body)
}

/// Sends a request and returns the response body (after the response header).
pub fn request<Req: Encodable>(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    req: &Req,
) -> Bytes {
    try_request(stream, api_key, version, req)
        .unwrap_or_else(|e| panic!("{api_key:?} v{version}: {e}"))
}

/// Decodes a response body, asserting that every byte was used.
pub fn decode_body<T: Decodable>(mut body: Bytes, version: i16) -> T {
    let out = T::decode(&mut body, version)
        .unwrap_or_else(|e| panic!("decode {} v{version}: {e}", std::any::type_name::<T>()));
    assert_eq!(
        body.remaining(),
        0,
        "{} v{version}: {} bytes left over after decoding",
        std::any::type_name::<T>(),
        body.remaining()
    );
    out
}

/// Typed round trip: the API key comes from the request type.
pub fn call<Req: Request>(stream: &mut TcpStream, version: i16, req: &Req) -> Req::Response {
    let key = ApiKey::try_from(Req::KEY).expect("api key");
    decode_body(request(stream, key, version, req), version)
}

/// Asserts that the broker closed the connection: a read returns EOF or a reset, not data
/// and not a timeout.
pub fn assert_closed(stream: &mut TcpStream, context: &str) {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => panic!(
                "{context}: expected the connection to be closed, got {n} bytes: {:?}",
                &buf[..n]
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                ) =>
            {
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted && Instant::now() < deadline => {}
            Err(e) => panic!("{context}: expected the connection to be closed, got {e}"),
        }
    }
}

/// Half-closes the write side (the broker sees EOF).
pub fn shutdown_write(stream: &TcpStream) {
    stream.shutdown(Shutdown::Write).expect("shutdown write");
}

// ---------------------------------------------------------------------------------------------
// Record batches

use spate::protocol::batch::{CRC_START, encode_batch, put_varint};

/// A valid, uncompressed magic-v2 batch of `values` (no keys, no headers), base offset 0;
/// record `i` has timestamp `base_ts + 10 * i`.
pub fn record_batch(base_ts: i64, values: &[&[u8]]) -> Vec<u8> {
    let records: Vec<(i64, i64, &[u8])> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64 * 10, i as i64, *v))
        .collect();
    let max_ts = base_ts + (values.len() as i64 - 1) * 10;
    record_batch_with(base_ts, max_ts, &records)
}

/// An uncompressed magic-v2 batch with the given (timestamp delta, offset delta, value) per
/// record, written as given (so deltas may be hostile); header counts follow the record
/// count and the CRC is valid.
pub fn record_batch_with(base_ts: i64, max_ts: i64, recs: &[(i64, i64, &[u8])]) -> Vec<u8> {
    let mut records = Vec::new();
    for (ts_delta, offset_delta, v) in recs {
        let mut r = vec![0u8]; // attributes
        put_varint(&mut r, *ts_delta);
        put_varint(&mut r, *offset_delta);
        put_varint(&mut r, -1); // null key
        put_varint(&mut r, v.len() as i64);
        r.extend_from_slice(v);
        put_varint(&mut r, 0); // headers
        put_varint(&mut records, r.len() as i64);
        records.extend_from_slice(&r);
    }
    encode_batch(&records, recs.len() as i32, base_ts, max_ts)
}

/// Recomputes the CRC32C of a single batch.
pub fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Splits concatenated batches (as a Fetch returns them) into (base offset, bytes) pairs.
/// A trailing partial batch is dropped, as a client would.
pub fn split_batches(mut records: &[u8]) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    while records.len() >= 12 {
        let base = i64::from_be_bytes(records[0..8].try_into().expect("8 bytes"));
        let len = i32::from_be_bytes(records[8..12].try_into().expect("4 bytes"));
        let total = 12 + len.max(0) as usize;
        if total > records.len() {
            break;
        }
        out.push((base, records[..total].to_vec()));
        records = &records[total..];
    }
    out
}

/// `batch` as the broker stores it at `base_offset` (CreateTime: only the offset and the
/// partition leader epoch change; a one-node broker leads in epoch 0).
pub fn with_base_offset(batch: &[u8], base_offset: i64) -> Vec<u8> {
    let mut b = batch.to_vec();
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[12..16].copy_from_slice(&LEADER_EPOCH.to_be_bytes());
    b
}

/// The leader epoch a one-node broker stamps into the batches it writes.
pub const LEADER_EPOCH: i32 = 0;

// ---------------------------------------------------------------------------------------------
// Shards

/// The shard owning `topic`/`partition`: the broker's own placement function.
#[allow(unused_imports)] // not every test binary uses it
pub use spate::placement::partition_owner;

/// Sum of a counter over every shard, from `GET /metrics`.
pub fn scrape_sum(metrics: &str, name: &str) -> u64 {
    // The endpoint is up once the broker is ready; a busy shard 0 may be slow to accept.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        match TcpStream::connect(metrics) {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("metrics endpoint: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("scrape");
    let mut text = String::new();
    c.read_to_string(&mut text).expect("scrape body");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
