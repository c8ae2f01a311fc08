//! One blocking connection to one broker: std `TcpStream` with timeouts, ApiVersions
//! negotiated on connect, typed requests through the `kafka-protocol` crate.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Message, Request, StrBytes};

use super::frame;
use super::secure::{Security, Stream};

/// Kafka's UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = 35;
/// The ApiVersions version asked first: v3 (KIP-511, Kafka 2.4) is what every broker we
/// measure against answers; a broker that knows less answers UNSUPPORTED_VERSION with its range.
const API_VERSIONS_FIRST: i16 = 3;

/// How a tool connects: its client id and its limits.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Sent in every request header and as the ApiVersions software name.
    pub client_id: &'static str,
    pub connect_timeout: Duration,
    /// How long any one response may take (reads and writes).
    pub io_timeout: Duration,
    /// Largest response frame accepted.
    pub frame_bytes_max: usize,
}

impl Options {
    /// `client_id` with 10 s to connect, 30 s per response and frames up to 512 MiB.
    pub const fn new(client_id: &'static str) -> Options {
        Options {
            client_id,
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
            frame_bytes_max: 512 * 1024 * 1024,
        }
    }
}

/// How a tool logs in on a SASL listener (`security.protocol=SASL_PLAINTEXT`): mechanism
/// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, and the user's name and password.
#[derive(Clone)]
pub struct SaslLogin {
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslLogin {
    // The password is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslLogin")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a call failed. `Display` says what happened to which broker; tools add their own hints.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot resolve '{addr}': {source}")]
    Resolve { addr: String, source: io::Error },
    #[error("cannot connect to {addr}: {why}")]
    Connect { addr: String, why: String },
    /// No answer within the I/O timeout.
    #[error("{what} {addr}: no answer within {}s", timeout.as_secs())]
    Timeout {
        addr: String,
        what: &'static str,
        timeout: Duration,
    },
    /// The broker closed the connection (EOF, reset).
    #[error("{what} {addr}: the broker closed the connection ({source})")]
    Closed {
        addr: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("{what} {addr}: {source}")]
    Io {
        addr: String,
        what: &'static str,
        source: io::Error,
    },
    /// The broker answered something that is not the expected Kafka response.
    #[error("{addr}: {why}")]
    Protocol { addr: String, why: String },
    /// No version of an API that both sides speak.
    #[error("{0}")]
    Unsupported(String),
    /// The broker answered ApiVersions with an error code.
    #[error("ApiVersions with {addr}: error code {code}")]
    Kafka { addr: String, code: i16 },
    /// The SASL login was refused (the broker's message, or ours when the server's proof
    /// did not check out).
    #[error("SASL login at {addr} failed: {why}")]
    Authentication { addr: String, why: String },
    /// TLS failed: the handshake (the broker's certificate, ours) or a record after it.
    #[error("TLS with {addr}: {why}")]
    Tls { addr: String, why: String },
}

/// The rustls error inside an I/O error of a TLS stream.
fn tls_cause(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The host of HOST:PORT.
fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

impl Error {
    fn io(addr: &str, what: &'static str, timeout: Duration, e: io::Error) -> Error {
        if let Some(tls) = tls_cause(&e) {
            return Error::Tls {
                addr: addr.to_string(),
                why: super::secure::explain(tls, host_of(addr)),
            };
        }
        let addr = addr.to_string();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout {
                addr,
                what,
                timeout,
            },
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Error::Closed {
                addr,
                what,
                source: e,
            },
            _ => Error::Io {
                addr,
                what,
                source: e,
            },
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Opens a TCP connection to `addr` (HOST:PORT) with TCP_NODELAY and the I/O timeouts; every
/// resolved address is tried in turn.
pub fn connect_stream(addr: &str, opts: &Options) -> Result<TcpStream> {
    let resolved: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|source| Error::Resolve {
            addr: addr.to_string(),
            source,
        })?
        .collect();
    let mut last = None;
    for a in &resolved {
        match TcpStream::connect_timeout(a, opts.connect_timeout) {
            Ok(s) => {
                let setup = |s: &TcpStream| -> io::Result<()> {
                    s.set_read_timeout(Some(opts.io_timeout))?;
                    s.set_write_timeout(Some(opts.io_timeout))?;
                    s.set_nodelay(true)
                };
                setup(&s).map_err(|e| {
                    Error::io(addr, "setting up the connection to", opts.io_timeout, e)
                })?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Connect {
        addr: addr.to_string(),
        why: last.map_or("no address".to_string(), |e| e.to_string()),
    })
}

/// [`connect_stream`], then the TLS handshake when `tls` is given (the broker's certificate
/// checked against the CA and, unless the configuration says otherwise, the HOST of `addr`).
pub fn open_stream(
    addr: &str,
    opts: &Options,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Stream> {
    let mut sock = connect_stream(addr, opts)?;
    let Some(config) = tls else {
        return Ok(Stream::Plain(sock));
    };
    let tls_error = |why: String| Error::Tls {
        addr: addr.to_string(),
        why,
    };
    let name = crate::tls::server_name(addr).map_err(tls_error)?;
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::clone(config), name)
        .map_err(|e| tls_error(e.to_string()))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| Error::io(addr, "TLS handshake with", opts.io_timeout, e))?;
    }
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, sock))))
}

/// One connection to one broker, with the API versions it advertised.
pub struct Conn {
    addr: String,
    stream: Stream,
    opts: Options,
    versions: HashMap<i16, (i16, i16)>,
    correlation: i32,
}

impl Conn {
    /// Connects to `addr` (HOST:PORT) and negotiates API versions.
    pub fn connect(addr: &str, opts: &Options) -> Result<Conn> {
        Conn::connect_secure(addr, opts, &Security::default())
    }

    /// Connects to `addr` over TLS when `security` says so, negotiates API versions and
    /// logs in when it has a SASL login (SASL_SSL: the login runs over TLS).
    pub fn connect_secure(addr: &str, opts: &Options, security: &Security) -> Result<Conn> {
        let mut conn = Conn {
            addr: addr.to_string(),
            stream: open_stream(addr, opts, security.tls.as_ref())?,
            opts: *opts,
            versions: HashMap::new(),
            correlation: 0,
        };
        if let Err(e) = conn.negotiate() {
            return Err(match (e, &security.tls) {
                // A broker that refuses the client certificate (or its absence) after a TLS 1.3
                // handshake may close the connection without an alert: say what is likely.
                (Error::Closed { addr, source, .. }, Some(config)) => Error::Tls {
                    why: if config.client_auth_cert_resolver.has_certs() {
                        format!(
                            "the broker closed the connection after the handshake ({source}): \
                             does it trust the CA of our client certificate?"
                        )
                    } else {
                        format!(
                            "the broker closed the connection after the handshake ({source}): \
                             it likely requires a client certificate (set \
                             ssl.certificate.location and ssl.key.location)"
                        )
                    },
                    addr,
                },
                (e, _) => e,
            });
        }
        if let Some(login) = &security.login {
            conn.login(login)?;
        }
        Ok(conn)
    }

    /// [`Conn::connect`], then a SASL login when `login` is given (a SASL listener admits
    /// ApiVersions first, then SaslHandshake v1 and SaslAuthenticate, as Kafka's clients
    /// send them).
    pub fn connect_login(addr: &str, opts: &Options, login: Option<&SaslLogin>) -> Result<Conn> {
        let mut conn = Conn::connect(addr, opts)?;
        if let Some(login) = login {
            conn.login(login)?;
        }
        Ok(conn)
    }

    fn login(&mut self, login: &SaslLogin) -> Result<()> {
        use crate::auth::scram::{Login, random_nonce};
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let refused = |addr: &str, why: String| Error::Authentication {
            addr: addr.to_string(),
            why,
        };
        let req = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_string(login.mechanism.clone()));
        let resp = self.call(&req, 1)?;
        if resp.error_code != 0 {
            let offered: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(refused(
                &self.addr,
                format!(
                    "mechanism {} is not enabled (the listener offers {}; error code {})",
                    login.mechanism,
                    offered.join(", "),
                    resp.error_code
                ),
            ));
        }
        let version = self.version_in::<SaslAuthenticateRequest>(0, 2)?;
        let step = |conn: &mut Conn, bytes: Vec<u8>| -> Result<Bytes> {
            let resp = conn.call(
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)),
                version,
            )?;
            if resp.error_code != 0 {
                return Err(refused(
                    &conn.addr,
                    resp.error_message
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| format!("error code {}", resp.error_code)),
                ));
            }
            Ok(resp.auth_bytes)
        };
        let nonce = random_nonce().map_err(|e| refused(&self.addr, e))?;
        let mut exchange = Login::new(&login.mechanism, &login.username, &login.password, &nonce)
            .map_err(|e| refused(&self.addr, e))?;
        let mut token = exchange.first();
        loop {
            let answer = step(self, token)?;
            match exchange.next(&answer).map_err(|e| refused(&self.addr, e))? {
                Some(next) => token = next,
                None => return Ok(()),
            }
        }
    }

    /// The stream under the connection (after the negotiation and the login), for a caller
    /// that frames its own requests (spate-bench's pipelined producer).
    pub fn into_stream(self) -> Stream {
        self.stream
    }

    /// The address this connection went to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// ApiVersions at [`API_VERSIONS_FIRST`]; a broker that does not know it answers
    /// UNSUPPORTED_VERSION in the v0 layout with its own range (KIP-511), and we retry with
    /// that.
    fn negotiate(&mut self) -> Result<()> {
        let mut version = API_VERSIONS_FIRST.min(ApiVersionsRequest::VERSIONS.max);
        for _ in 0..2 {
            let req = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str(self.opts.client_id))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
            let body = self.round_trip(ApiKey::ApiVersions, version, &req)?;
            let error = if body.len() >= 2 {
                i16::from_be_bytes([body[0], body[1]])
            } else {
                -1
            };
            let decode_version = if error == UNSUPPORTED_VERSION {
                0
            } else {
                version
            };
            let resp = self.decode::<ApiVersionsResponse>(body, decode_version)?;
            self.versions = resp
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect();
            if resp.error_code == 0 {
                return Ok(());
            }
            if resp.error_code == UNSUPPORTED_VERSION
                && let Some(&(_, max)) = self.versions.get(&(ApiKey::ApiVersions as i16))
                && max < version
            {
                version = max;
                continue;
            }
            return Err(Error::Kafka {
                addr: self.addr.clone(),
                code: resp.error_code,
            });
        }
        Err(Error::Unsupported(format!(
            "{}: could not agree on an ApiVersions version",
            self.addr
        )))
    }

    /// The highest version of `R` that both sides support, at most `cap`.
    pub fn version_of<R: Request>(&self, cap: i16) -> Result<i16> {
        self.version_in::<R>(R::VERSIONS.min, cap)
    }

    /// The highest version of `R` in `min..=max` that both sides support.
    pub fn version_in<R: Request>(&self, min: i16, max: i16) -> Result<i16> {
        let key = R::KEY;
        let name =
            ApiKey::try_from(key).map_or_else(|_| format!("API {key}"), |k| format!("{k:?}"));
        let Some(&(bmin, bmax)) = self.versions.get(&key) else {
            return Err(Error::Unsupported(format!(
                "the broker at {} does not implement {name}",
                self.addr
            )));
        };
        let ours_min = min.max(R::VERSIONS.min);
        let ours_max = max.min(R::VERSIONS.max);
        let v = bmax.min(ours_max);
        if v < bmin.max(ours_min) {
            return Err(Error::Unsupported(format!(
                "the broker at {} speaks {name} v{bmin}..v{bmax}, {} v{ours_min}..v{ours_max}: no common version",
                self.addr, self.opts.client_id
            )));
        }
        Ok(v)
    }

    /// Sends `req` at `version` and decodes its response.
    pub fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let body = self.round_trip(api_key::<R>()?, version, req)?;
        self.decode::<R::Response>(body, version)
    }

    /// Sends `req` without waiting for an answer (Produce with acks=0).
    pub fn send_only<R: Request>(&mut self, req: &R, version: i16) -> Result<()> {
        self.send(api_key::<R>()?, version, req).map(|_| ())
    }

    fn send<R: Request>(&mut self, key: ApiKey, version: i16, req: &R) -> Result<i32> {
        self.correlation = self.correlation.wrapping_add(1);
        let mut buf = BytesMut::with_capacity(64);
        frame::encode_request(
            &mut buf,
            key,
            version,
            self.correlation,
            self.opts.client_id,
            req,
        )
        .map_err(Error::Unsupported)?;
        let timeout = self.opts.io_timeout;
        self.stream
            .write_all(&buf)
            .and_then(|_| self.stream.flush())
            .map_err(|e| Error::io(&self.addr, "sending to", timeout, e))?;
        Ok(self.correlation)
    }

    fn round_trip<R: Request>(&mut self, key: ApiKey, version: i16, req: &R) -> Result<Bytes> {
        let corr = self.send(key, version, req)?;
        let mut frame =
            frame::read_frame(&mut self.stream, self.opts.frame_bytes_max).map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData && tls_cause(&e).is_none() {
                    Error::Protocol {
                        addr: self.addr.clone(),
                        why: format!("{e}: is it a Kafka broker?"),
                    }
                } else {
                    Error::io(&self.addr, "reading from", self.opts.io_timeout, e)
                }
            })?;
        let got =
            frame::response_header(&mut frame, key, version).map_err(|why| Error::Protocol {
                addr: self.addr.clone(),
                why,
            })?;
        if got != corr {
            return Err(Error::Protocol {
                addr: self.addr.clone(),
                why: format!("answered correlation id {got}, expected {corr}"),
            });
        }
        Ok(frame)
    }

    fn decode<T: Decodable>(&self, mut body: Bytes, version: i16) -> Result<T> {
        T::decode(&mut body, version).map_err(|e| Error::Protocol {
            addr: self.addr.clone(),
            why: format!(
                "cannot decode the answer ({} v{version}): {e}",
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("response")
            ),
        })
    }
}

fn api_key<R: Request>() -> Result<ApiKey> {
    ApiKey::try_from(R::KEY).map_err(|_| Error::Unsupported(format!("unknown API key {}", R::KEY)))
}
