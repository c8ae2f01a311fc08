//! A small blocking Kafka client for the admin CLI: std `TcpStream`s with timeouts, one
//! connection per broker address, ApiVersions negotiation on each, and typed requests through
//! the `kafka-protocol` crate. Every request uses the highest version that both the broker and
//! the crate support.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};

use super::error::{Error, Result, code};

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any one response may take (long-polling fetches wait far less).
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long retriable errors (leadership or coordinator moving) are retried.
pub const RETRY_FOR: Duration = Duration::from_secs(10);
/// Largest response frame accepted.
const FRAME_MAX: usize = 512 * 1024 * 1024;

const CLIENT_ID: &str = "spate-cli";

/// One connection to one broker, with the API versions it advertised.
pub struct Conn {
    addr: String,
    stream: TcpStream,
    versions: HashMap<i16, (i16, i16)>,
    correlation: i32,
}

fn io_error(addr: &str, what: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::other(format!(
            "{what} {addr}: no answer within {}s",
            IO_TIMEOUT.as_secs()
        ))
        .with_hint(format!("is the broker at {addr} overloaded or stuck?")),
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Error::other(format!(
            "{what} {addr}: the broker closed the connection ({e})"
        ))
        .with_hint("the broker may have refused the request (see its log) or stopped"),
        _ => Error::other(format!("{what} {addr}: {e}")),
    }
}

impl Conn {
    /// Connects to `addr` (HOST:PORT) and negotiates API versions.
    pub fn connect(addr: &str) -> Result<Conn> {
        let resolved: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| {
                Error::other(format!("cannot resolve '{addr}': {e}"))
                    .with_hint("give --bootstrap-server as HOST:PORT, e.g. 127.0.0.1:9092")
            })?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in &resolved {
            match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| {
            let why = last.map_or("no address".to_string(), |e| e.to_string());
            Error::other(format!("cannot connect to {addr}: {why}")).with_hint(format!(
                "is the broker running at {addr}? (set --bootstrap-server HOST:PORT)"
            ))
        })?;
        let setup = |s: &TcpStream| -> io::Result<()> {
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            s.set_nodelay(true)
        };
        setup(&stream).map_err(|e| io_error(addr, "setting up the connection to", e))?;
        let mut conn = Conn {
            addr: addr.to_string(),
            stream,
            versions: HashMap::new(),
            correlation: 0,
        };
        conn.negotiate()?;
        Ok(conn)
    }

    /// The address this connection went to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// ApiVersions at the crate's highest version; a broker that does not know it answers
    /// UNSUPPORTED_VERSION in the v0 layout with its own range, and we retry with that.
    fn negotiate(&mut self) -> Result<()> {
        let mut version = ApiVersionsRequest::VERSIONS.max;
        for _ in 0..2 {
            let req = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("spate-cli"))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
            let body = self.round_trip(ApiKey::ApiVersions as i16, version, &req, 0)?;
            let error = if body.len() >= 2 {
                i16::from_be_bytes([body[0], body[1]])
            } else {
                -1
            };
            let decode_version = if error == code::UNSUPPORTED_VERSION {
                0
            } else {
                version
            };
            let resp = decode::<ApiVersionsResponse>(body, decode_version, &self.addr)?;
            self.versions = resp
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect();
            if resp.error_code == 0 {
                return Ok(());
            }
            if resp.error_code == code::UNSUPPORTED_VERSION
                && let Some(&(_, max)) = self.versions.get(&(ApiKey::ApiVersions as i16))
                && max < version
            {
                version = max;
                continue;
            }
            return Err(Error::kafka(
                format!("ApiVersions with {}", self.addr),
                resp.error_code,
                None,
            ));
        }
        Err(Error::other(format!(
            "{}: could not agree on an ApiVersions version",
            self.addr
        )))
    }

    /// The highest version of `R` that both sides support, at most `cap`.
    pub fn version_of<R: Request>(&self, cap: i16) -> Result<i16> {
        let key = R::KEY;
        let name =
            ApiKey::try_from(key).map_or_else(|_| format!("API {key}"), |k| format!("{k:?}"));
        let Some(&(bmin, bmax)) = self.versions.get(&key) else {
            return Err(Error::other(format!(
                "the broker at {} does not implement {name}",
                self.addr
            )));
        };
        let max = bmax.min(R::VERSIONS.max).min(cap);
        let min = bmin.max(R::VERSIONS.min);
        if max < min {
            return Err(Error::other(format!(
                "the broker at {} speaks {name} v{bmin}..v{bmax}, spate v{}..v{}: no common version",
                self.addr,
                R::VERSIONS.min,
                R::VERSIONS.max.min(cap)
            )));
        }
        Ok(max)
    }

    /// Sends `req` at `version` and decodes its response.
    pub fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let body = self.round_trip(R::KEY, version, req, R::Response::header_version(version))?;
        decode::<R::Response>(body, version, &self.addr)
    }

    /// Sends `req` without waiting for an answer (Produce with acks=0).
    pub fn send_only<R: Request>(&mut self, req: &R, version: i16) -> Result<()> {
        self.send(R::KEY, version, req).map(|_| ())
    }

    fn send<R: Encodable + HeaderVersion>(
        &mut self,
        key: i16,
        version: i16,
        req: &R,
    ) -> Result<i32> {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| Error::other(format!("encoding a request header: {e}")))?;
        req.encode(&mut buf, version)
            .map_err(|e| Error::other(format!("encoding API {key} v{version}: {e}")))?;
        let len = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        let addr = self.addr.clone();
        self.stream
            .write_all(&buf)
            .and_then(|_| self.stream.flush())
            .map_err(|e| io_error(&addr, "sending to", e))?;
        Ok(self.correlation)
    }

    fn round_trip<R: Encodable + HeaderVersion>(
        &mut self,
        key: i16,
        version: i16,
        req: &R,
        response_header_version: i16,
    ) -> Result<Bytes> {
        let corr = self.send(key, version, req)?;
        let addr = self.addr.clone();
        let mut prefix = [0u8; 4];
        self.stream
            .read_exact(&mut prefix)
            .map_err(|e| io_error(&addr, "reading from", e))?;
        let size = i32::from_be_bytes(prefix);
        if size < 4 || size as usize > FRAME_MAX {
            return Err(Error::other(format!(
                "{addr} answered a frame of {size} bytes: is it a Kafka broker?"
            )));
        }
        let mut frame = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut frame)
            .map_err(|e| io_error(&addr, "reading from", e))?;
        let mut frame = Bytes::from(frame);
        let header =
            kafka_protocol::messages::ResponseHeader::decode(&mut frame, response_header_version)
                .map_err(|e| Error::other(format!("{addr}: bad response header: {e}")))?;
        if header.correlation_id != corr {
            return Err(Error::other(format!(
                "{addr} answered correlation id {}, expected {corr}",
                header.correlation_id
            )));
        }
        Ok(frame)
    }
}

fn decode<T: Decodable>(mut body: Bytes, version: i16, addr: &str) -> Result<T> {
    T::decode(&mut body, version).map_err(|e| {
        Error::other(format!(
            "cannot decode the answer of {addr} ({} v{version}): {e}",
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("response")
        ))
    })
}

/// A broker as Metadata describes it.
#[derive(Debug, Clone)]
pub struct BrokerInfo {
    pub host: String,
    pub port: i32,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Connections by broker address, starting from the bootstrap server.
pub struct Client {
    bootstrap: String,
    conns: HashMap<String, Conn>,
    /// Node id -> address, from the last Metadata.
    pub brokers: BTreeMap<i32, BrokerInfo>,
}

impl Client {
    /// Connects to the bootstrap server (failing early with a hint when nothing listens).
    pub fn connect(bootstrap: &str) -> Result<Client> {
        let conn = Conn::connect(bootstrap)?;
        let mut conns = HashMap::new();
        conns.insert(bootstrap.to_string(), conn);
        Ok(Client {
            bootstrap: bootstrap.to_string(),
            conns,
            brokers: BTreeMap::new(),
        })
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The bootstrap connection.
    pub fn any(&mut self) -> Result<&mut Conn> {
        let addr = self.bootstrap.clone();
        self.conn(&addr)
    }

    /// The connection to `addr`, opened on first use.
    pub fn conn(&mut self, addr: &str) -> Result<&mut Conn> {
        if !self.conns.contains_key(addr) {
            let c = Conn::connect(addr)?;
            self.conns.insert(addr.to_string(), c);
        }
        self.conns
            .get_mut(addr)
            .ok_or_else(|| Error::other(format!("no connection to {addr}")))
    }

    /// The connection to broker `node` (from the last Metadata).
    pub fn node(&mut self, node: i32) -> Result<&mut Conn> {
        let addr = self
            .brokers
            .get(&node)
            .map(BrokerInfo::addr)
            .ok_or_else(|| {
                Error::other(format!("broker {node} is not in the cluster's metadata"))
                    .with_hint("the cluster is changing; try again in a moment")
            })?;
        self.conn(&addr)
    }

    /// Drops a connection (after an I/O failure) so the next use reconnects.
    pub fn forget(&mut self, addr: &str) {
        self.conns.remove(addr);
    }
}

/// Runs `f` until it succeeds or fails with a non-retriable error, or [`RETRY_FOR`] passes.
pub fn with_retries<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + RETRY_FOR;
    let mut pause = Duration::from_millis(20);
    loop {
        match f() {
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}
