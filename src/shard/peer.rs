//! Requests from this broker to another broker's Kafka listener, for what one broker asks of
//! another outside replication (which has its own fetchers, `replica.rs`): a transaction
//! coordinator's WriteTxnMarkers to the leaders of a transaction's partitions, and a partition
//! leader's KIP-890 verification (AddPartitionsToTxn v4, verify only) with a transaction's
//! coordinator. Kafka's protocol, as Kafka brokers speak it to each other.
//!
//! Per shard: at most one idle connection per broker is kept; a request takes it out for its
//! exchange (a concurrent request to the same broker opens its own), and puts it back only
//! after a complete exchange, so a connection in an unknown state is never reused. Every
//! exchange has a deadline. No `RefCell` borrow is held across an await.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};

use super::Shard;
use crate::config::{Config, InterBrokerSasl};

const CLIENT_ID: &str = "spate-broker";
/// Largest response accepted from another broker (WriteTxnMarkers and AddPartitionsToTxn
/// answers are small).
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// This shard's connections to other brokers.
#[derive(Default)]
pub struct Peers {
    idle: RefCell<HashMap<i32, PeerStream>>,
    correlation: Cell<i32>,
}

/// A connection to another broker's inter-broker listener: plain TCP, or TLS over it (an SSL
/// or SASL_SSL inter-broker listener).
pub(crate) enum PeerStream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
    /// The accepting side of a TLS connection (the quorum's controller listener).
    TlsServer(Box<futures_rustls::server::TlsStream<TcpStream>>),
}

impl futures_lite::AsyncRead for PeerStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            PeerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
            PeerStream::TlsServer(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl futures_lite::AsyncWrite for PeerStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            PeerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
            PeerStream::TlsServer(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            PeerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
            PeerStream::TlsServer(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_close(cx),
            PeerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_close(cx),
            PeerStream::TlsServer(s) => std::pin::Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

thread_local! {
    /// This shard's TLS client configuration for other brokers, and the reload generation it
    /// was built at (each shard is one thread: no other shard sees it).
    static PEER_TLS: std::cell::RefCell<Option<(u64, std::sync::Arc<rustls::ClientConfig>)>> =
        const { std::cell::RefCell::new(None) };
}

/// The TLS client configuration brokers connect to each other with: they trust the CA of
/// `--tls-client-ca-file` and present their own certificate (`--tls-cert-file`,
/// `--tls-key-file`), so an SSL inter-broker listener is mutual TLS. Rebuilt after a SIGHUP.
pub(crate) fn peer_tls(config: &Config) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    let generation = crate::tls::RELOAD_GENERATION.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(c) = PEER_TLS.with(|p| {
        p.borrow()
            .as_ref()
            .filter(|(g, _)| *g == generation)
            .map(|(_, c)| c.clone())
    }) {
        return Ok(c);
    }
    let files = config
        .tls_files
        .as_ref()
        .ok_or("no --tls-cert-file / --tls-key-file")?;
    let ca = files
        .client_ca
        .as_ref()
        .ok_or("no --tls-client-ca-file to verify the other brokers with")?;
    let built = crate::tls::client_config(ca, Some((&files.cert, &files.key)))?;
    PEER_TLS.with(|p| *p.borrow_mut() = Some((generation, built.clone())));
    Ok(built)
}

/// Opens a connection to another broker's inter-broker listener at `addr`: TLS when that
/// listener is an SSL or SASL_SSL one, then a SASL login when it is a SASL one (this broker's
/// own inter-broker listener says which: the listener name, and so its protocol, is the
/// cluster's), as `--inter-broker-sasl-username`. Err: a message for the log.
pub(crate) async fn connect_broker(config: &Config, addr: &str) -> Result<PeerStream, String> {
    use crate::config::SecurityProtocol;
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    let protocol = config
        .listeners
        .get(config.inter_broker_listener)
        .map_or(SecurityProtocol::Plaintext, |l| l.protocol);
    let mut s = match protocol {
        SecurityProtocol::Ssl | SecurityProtocol::SaslSsl => {
            let tls = peer_tls(config).map_err(|e| format!("TLS to {addr}: {e}"))?;
            let name = crate::tls::server_name(addr)?;
            let stream = futures_rustls::TlsConnector::from(tls)
                .connect(name, s)
                .await
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
            PeerStream::Tls(Box::new(stream))
        }
        _ => PeerStream::Plain(s),
    };
    if protocol.sasl() {
        login(&mut s, &config.inter_broker_sasl)
            .await
            .map_err(|e| format!("SASL login at {addr}: {e}"))?;
    }
    Ok(s)
}

/// One request and its answer on `s`, outside any deadline (the caller sets one).
async fn exchange<Req: Encodable, Resp: Decodable>(
    s: &mut PeerStream,
    api: ApiKey,
    version: i16,
    correlation: i32,
    req: &Req,
) -> Result<Resp, String> {
    let mut out = BytesMut::new();
    crate::client::frame::encode_request(&mut out, api, version, correlation, CLIENT_ID, req)?;
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).await.map_err(|e| e.to_string())?;
    let size = usize::try_from(i32::from_be_bytes(prefix))
        .ok()
        .filter(|n| *n <= RESPONSE_BYTES_MAX)
        .ok_or_else(|| "a bad response frame size".to_string())?;
    let mut body = vec![0u8; size];
    s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    let (corr, resp) =
        crate::client::frame::decode_response::<Resp>(Bytes::from(body), api, version)?;
    if corr != correlation {
        return Err(format!(
            "answered correlation id {corr}, expected {correlation}"
        ));
    }
    Ok(resp)
}

/// The SASL login of a broker on another broker's SASL listener: SaslHandshake v1, then
/// SaslAuthenticate v2 rounds (PLAIN: one; SCRAM: two, and the server's proof is checked).
async fn login(s: &mut PeerStream, sasl: &InterBrokerSasl) -> Result<(), String> {
    use crate::auth::scram::{Login, random_nonce};
    use kafka_protocol::messages::{
        SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
        SaslHandshakeResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    let (Some(user), Some(password)) = (&sasl.username, &sasl.password) else {
        return Err("no --inter-broker-sasl-username / --inter-broker-sasl-password-file".into());
    };
    let req = SaslHandshakeRequest::default()
        .with_mechanism(StrBytes::from_string(sasl.mechanism.clone()));
    let resp: SaslHandshakeResponse = exchange(s, ApiKey::SaslHandshake, 1, 1, &req).await?;
    if resp.error_code != 0 {
        return Err(format!(
            "mechanism {} is not enabled there (error code {})",
            sasl.mechanism, resp.error_code
        ));
    }
    let mut correlation = 1;
    let mut step = async |bytes: Vec<u8>| -> Result<Bytes, String> {
        correlation += 1;
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
        let resp: SaslAuthenticateResponse =
            exchange(s, ApiKey::SaslAuthenticate, 2, correlation, &req).await?;
        if resp.error_code != 0 {
            return Err(resp
                .error_message
                .map(|m| m.to_string())
                .unwrap_or_else(|| format!("error code {}", resp.error_code)));
        }
        Ok(resp.auth_bytes)
    };
    let nonce = random_nonce()?;
    let mut login = Login::new(&sasl.mechanism, user, password, &nonce)?;
    let mut token = login.first();
    loop {
        let answer = step(token).await?;
        match login.next(&answer)? {
            Some(next) => token = next,
            None => return Ok(()),
        }
    }
}

impl Shard {
    /// Sends `req` to broker `broker` (its advertised Kafka listener, from the cluster view)
    /// and decodes its answer, within `timeout`. Err: a message for the log; the caller
    /// retries or answers a retriable error.
    pub async fn broker_request<Req: Encodable, Resp: Decodable>(
        &self,
        broker: i32,
        api: ApiKey,
        version: i16,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, String> {
        let endpoint = self
            .cluster()
            .and_then(|v| v.broker(broker).cloned())
            .ok_or_else(|| format!("broker {broker} is not in the cluster view"))?;
        let correlation = self.peers.correlation.get().wrapping_add(1);
        self.peers.correlation.set(correlation);
        let idle = self.peers.idle.borrow_mut().remove(&broker);
        let exchange = async {
            let mut conn = match idle {
                Some(c) => c,
                None => {
                    let addr = format!("{}:{}", endpoint.host, endpoint.port);
                    connect_broker(&self.config, &addr).await?
                }
            };
            let resp = exchange(&mut conn, api, version, correlation, req).await?;
            Ok::<_, String>((conn, resp))
        };
        let answered = futures_lite::future::or(async { Some(exchange.await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        match answered {
            Some(Ok((conn, resp))) => {
                self.peers.idle.borrow_mut().insert(broker, conn);
                Ok(resp)
            }
            Some(Err(e)) => Err(format!("{api:?} to broker {broker}: {e}")),
            None => Err(format!(
                "{api:?} to broker {broker}: no answer within {} ms",
                timeout.as_millis()
            )),
        }
    }
}
