//! One client connection: read a frame, decode it, run its handler, write the answer. Requests
//! take effect in the order they were sent and are answered in that order, as in Kafka; an
//! acks=all produce's fdatasync overlaps the requests behind it (see [`run`]).
//!
//! Lives on: the shard that accepted the socket. Each frame is read into its own buffer, which
//! grows with the bytes that arrive and takes the shard's in-flight budget as it grows, and is
//! handed on as `Bytes`, so a request's record bytes are views of what the socket delivered.
//! Nothing is buffered between frames, so an idle connection holds no buffer. A frame whose
//! size is negative or above `request_bytes_max`, or that does not decode, closes the
//! connection; nothing of the claimed size is allocated or budgeted before the bytes arrive.
//! A connection that completes no request for `connections_max_idle_ms` is closed.
//!
//! On an SSL or SASL_SSL listener the TLS handshake comes first (within the same time), and
//! the frames then travel inside TLS (see `transport`): Fetch record bytes take the copying
//! path there, encrypted on the way.

use std::cell::{Cell, RefCell};
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};

use crate::error::FrameError;
use crate::log_limit::{LogKind, LogLimiter};
use crate::protocol::fetch::{Chunk, FileSlice};
use crate::protocol::{Decoded, decode_request, frame_size};
use crate::server::handlers;
use crate::server::transport::{self, HandshakeError, ReadHalf, WriteHalf};
use crate::shard::Shard;

/// The first piece of a frame's buffer: frames start this small and double as their bytes
/// arrive, so a size prefix alone costs neither memory nor budget beyond it.
const FRAME_FIRST_BYTES: usize = 16 * 1024;
/// Bytes asked of the socket per read (each read zero-fills at most this much buffer).
const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Bytes asked of one sendfile(2) call.
const SENDFILE_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Bytes copied from a file per write on the copying path.
const COPY_CHUNK_BYTES: usize = 256 * 1024;

/// What the connections of one shard share: the limiter of the log lines clients can
/// trigger, the shard's one overshoot slot (see [`FrameReader::take_budget`]), and the TLS
/// configuration new TLS connections start with.
///
/// Lives on: one shard, created by its accept loop; no other shard sees it.
pub struct ShardConns {
    pub log: LogLimiter,
    overshoot_taken: Cell<bool>,
    /// The shard's TLS configuration (None without TLS listeners) and the reload generation
    /// it was loaded at (see `tls::RELOAD_GENERATION`). Replaced by the shard's ticker on a
    /// reload; a connection clones the `Arc` at accept and keeps it for its life.
    tls: RefCell<Option<Arc<rustls::ServerConfig>>>,
    pub tls_generation: Cell<u64>,
}

impl ShardConns {
    pub fn new(log_interval: Duration, tls: Option<Arc<rustls::ServerConfig>>) -> ShardConns {
        ShardConns {
            log: LogLimiter::new(log_interval),
            overshoot_taken: Cell::new(false),
            tls: RefCell::new(tls),
            tls_generation: Cell::new(0),
        }
    }

    /// What new TLS connections use from now on.
    pub fn set_tls(&self, config: Arc<rustls::ServerConfig>) {
        *self.tls.borrow_mut() = Some(config);
    }

    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.borrow().clone()
    }
}

/// The in-flight budget a frame holds, released when the frame's answer is written (or the
/// frame is dropped): permits for what its buffer grew to, or the shard's overshoot slot.
#[derive(Default)]
struct FrameBudget {
    permits: Vec<StaticPermit>,
    overshoot: Option<Overshoot>,
}

/// The shard's overshoot slot while a frame holds it.
struct Overshoot(Rc<ShardConns>);

impl Drop for Overshoot {
    fn drop(&mut self) {
        self.0.overshoot_taken.set(false);
    }
}

enum Next {
    /// A frame, and its share of the shard's in-flight budget (released when dropped).
    Frame(bytes::Bytes, FrameBudget),
    Closed,
}

struct FrameReader {
    request_bytes_max: usize,
    /// The shard's in-flight request memory budget, in bytes, and its size.
    inflight: Rc<Semaphore>,
    inflight_total: u64,
    conns: Rc<ShardConns>,
    /// No frame has been read yet (a TLS ClientHello can only come first).
    first: bool,
}

/// Whether a size prefix is the start of a TLS record carrying a handshake (0x16, then major
/// version 3): a TLS client talking to the plaintext port. As a size it would read as ~369 MB.
fn looks_like_tls(prefix: [u8; 4]) -> bool {
    prefix[0] == 0x16 && prefix[1] == 0x03 && prefix[2] <= 0x04
}

impl FrameReader {
    /// Reads the next frame. Nothing is buffered between frames, and a frame's buffer and
    /// budget grow with the bytes that actually arrived (doubling from
    /// [`FRAME_FIRST_BYTES`]), never with the size the prefix claims: a client that sends a
    /// large size and then nothing holds 16 KiB, not the size (until the idle timeout closes
    /// it). Bytes are only read up to the end of the frame, so every buffered byte is paid for
    /// by the frame that holds it.
    async fn next(&mut self, stream: &mut ReadHalf) -> Result<Next, ConnError> {
        let mut prefix = [0u8; 4];
        let mut have = 0;
        while have < 4 {
            let n = stream.read(&mut prefix[have..]).await?;
            if n == 0 {
                if have == 0 {
                    return Ok(Next::Closed);
                }
                return Err(ConnError::Frame(FrameError::Undecodable(
                    "connection closed inside a size prefix".into(),
                )));
            }
            have += n;
        }
        if std::mem::take(&mut self.first) && looks_like_tls(prefix) {
            return Err(ConnError::TlsOnPlaintext);
        }
        let size = frame_size(prefix, self.request_bytes_max)?;
        let mut budget = FrameBudget::default();
        let mut buf = BytesMut::new();
        // Bytes of budget taken for `buf`: what it may hold.
        let mut paid = 0usize;
        while buf.len() < size {
            if buf.len() == paid {
                let grow_to = if paid == 0 {
                    size.min(FRAME_FIRST_BYTES)
                } else {
                    size.min(paid.saturating_mul(2))
                };
                self.take_budget(&mut budget, grow_to - paid).await?;
                // Growing may move what arrived so far (a realloc copy; large buffers are
                // usually remapped instead). Summed over the doublings that is at most the
                // frame's size once: the price of not trusting the size prefix with memory.
                buf.reserve(grow_to - buf.len());
                paid = grow_to;
            }
            let len = buf.len();
            let step = (paid - len).min(READ_CHUNK_BYTES);
            buf.resize(len + step, 0);
            let n = stream.read(&mut buf[len..]).await?;
            buf.truncate(len + n);
            if n == 0 {
                return Err(ConnError::Frame(FrameError::Undecodable(format!(
                    "connection closed after {len} of {size} frame bytes"
                ))));
            }
        }
        Ok(Next::Frame(buf.freeze(), budget))
    }

    /// Takes `bytes` more of the shard's in-flight budget for a frame, waiting while the
    /// shard holds its budget (the socket is not read meanwhile, so TCP flow control slows
    /// the client down instead of memory growing).
    ///
    /// Frames that are part read hold budget while they wait for more, so several large
    /// frames could each hold part of the budget and wait for each other for ever. To rule
    /// that out, one part-read frame per shard may go on without budget when the budget is
    /// full (the overshoot slot, held until its answer is written): the shard then holds at
    /// most `inflight_bytes_max` plus one frame, and some frame always makes progress.
    async fn take_budget(&self, budget: &mut FrameBudget, bytes: usize) -> Result<(), ConnError> {
        let units = (bytes as u64).clamp(1, self.inflight_total);
        if let Ok(p) = self.inflight.try_acquire_static_permit(units) {
            budget.permits.push(p);
            return Ok(());
        }
        if budget.overshoot.is_some() {
            return Ok(());
        }
        if !budget.permits.is_empty() && !self.conns.overshoot_taken.get() {
            self.conns.overshoot_taken.set(true);
            budget.overshoot = Some(Overshoot(self.conns.clone()));
            return Ok(());
        }
        let p = self
            .inflight
            .acquire_static_permit(units)
            .await
            .map_err(|e| {
                ConnError::Io(std::io::Error::other(format!(
                    "in-flight budget closed: {e}"
                )))
            })?;
        budget.permits.push(p);
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Handler(#[from] anyhow::Error),
    #[error("{0} is not allowed before authentication")]
    NotAdmitted(&'static str),
    #[error("no complete request within connections_max_idle_ms")]
    Idle,
    #[error("SASL authentication failed")]
    AuthenticationFailed,
    #[error("the SASL session ended (connections_max_reauth_ms) without a re-authentication")]
    SessionExpired,
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("the client certificate's subject {0} matches no ssl_principal_mapping_rules rule")]
    NoPrincipalRule(String),
    #[error(
        "the client spoke TLS to the plaintext listener (its first bytes are a TLS \
         ClientHello): this listener has no TLS; connect without TLS (security.protocol=PLAINTEXT)"
    )]
    TlsOnPlaintext,
}

pub async fn serve(shard: Rc<Shard>, conns: Rc<ShardConns>, stream: TcpStream, listener: usize) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    shard
        .stats
        .connections
        .set(shard.stats.connections.get() + 1);
    tracing::debug!(shard = shard.id, %peer, "connection accepted");
    let peer_addr: Rc<str> = peer.as_str().into();
    let result = run(&shard, &conns, stream, &peer_addr, listener).await;
    shard
        .stats
        .connections
        .set(shard.stats.connections.get() - 1);
    // A client can close connections in any of these ways as fast as it can connect, so
    // every line but the debug ones is rate-limited (see `log_limit`).
    let kind = match &result {
        Ok(()) => {
            tracing::debug!(shard = shard.id, %peer, "connection closed");
            return;
        }
        Err(ConnError::Io(e)) => {
            tracing::debug!(shard = shard.id, %peer, error = %e, "connection ended");
            return;
        }
        Err(ConnError::Idle) => LogKind::IdleClosed,
        Err(ConnError::TlsOnPlaintext) => LogKind::TlsOnPlaintext,
        Err(ConnError::Handshake(_) | ConnError::NoPrincipalRule(_)) => LogKind::TlsHandshake,
        Err(_) => LogKind::BadRequest,
    };
    let Some(held_back) = conns.log.allow(kind, Instant::now()) else {
        return;
    };
    if let Err(e) = result {
        match kind {
            LogKind::IdleClosed => tracing::info!(
                shard = shard.id,
                %peer,
                idle_ms = shard.config.connections_max_idle_ms,
                held_back,
                "closing idle connection: {e}"
            ),
            _ => {
                tracing::warn!(shard = shard.id, %peer, held_back, error = %e, "closing connection")
            }
        }
    }
}

/// A request being handled, on its way to the writer.
struct InFlight {
    started: std::time::Instant,
    api: &'static str,
    /// The handler, running as its own (detached) task.
    answer: glommio::task::JoinHandle<anyhow::Result<handlers::Answer>>,
    /// The frame's share of the shard's in-flight budget, held until the answer is written.
    _budget: FrameBudget,
    _busy: Busy,
}

/// Counts a request in the shard's `busy` gauge (what shutdown waits for) while it lives.
struct Busy(Rc<Shard>);

impl Busy {
    fn new(shard: &Rc<Shard>) -> Busy {
        shard.stats.busy.set(shard.stats.busy.get() + 1);
        Busy(shard.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.stats.busy.set(self.0.stats.busy.get() - 1);
    }
}

/// Serves a connection: a reader takes frames, decodes them and starts their handlers; a
/// writer sends the answers back in request order.
///
/// Up to `pipeline_requests_max` requests of a connection are handled at once. The next one
/// starts only when the previous handler releases its [`handlers::Ordered`] hold: when it is
/// done, or for Produce once its batches are queued at their owner shards, whose queue order
/// is the append order (see `Shard::enqueue_produce`). So requests take effect in the order
/// they were sent, as Kafka's one-at-a-time processing gives, while an acks=all produce's
/// fdatasync overlaps the requests behind it (and their appends join its group commit).
///
/// The writer has its own handle on the socket (a dup of the descriptor), so that reading
/// and writing wait independently. A frame that does not decode ends reading: the answers
/// before it are still written, then the connection closes.
async fn run(
    shard: &Rc<Shard>,
    conns: &Rc<ShardConns>,
    stream: TcpStream,
    peer_addr: &Rc<str>,
    listener: usize,
) -> Result<(), ConnError> {
    // Non-blocking for good, so sendfile never stalls the shard. glommio's stream only ever
    // sends and receives with MSG_DONTWAIT and waits with poll, so this changes nothing for
    // it; the flag belongs to the open file, so the dup below shares it.
    set_nonblocking(socket_fd(&stream))?;
    let tls = shard
        .config
        .listeners
        .get(listener)
        .is_some_and(|l| l.protocol.tls());
    let (mut read_half, mut write_half, tls_principal) = if tls {
        tls_start(shard, conns, stream, peer_addr).await?
    } else {
        let w = dup_stream(&stream)?;
        (ReadHalf::Plain(stream), WriteHalf::Plain(w), None)
    };
    let (tx, rx) = glommio::channels::local_channel::new_bounded::<InFlight>(
        shard.config.pipeline_requests_max,
    );
    let read_result: Cell<Option<Result<(), ConnError>>> = Default::default();
    let activity = Activity {
        last: Cell::new(Instant::now()),
        pending: Cell::new(0),
        mute: handlers::Mute::default(),
    };
    let reading = async {
        let r = read_loop(
            shard,
            conns,
            &mut read_half,
            peer_addr,
            tx,
            &activity,
            listener,
            tls_principal,
        )
        .await;
        read_result.set(Some(r));
        // The writer finishes the answers already under way and ends the connection.
        futures_lite::future::pending::<Result<(), ConnError>>().await
    };
    let writing = write_loop(shard, &mut write_half, rx, &activity);
    let idle = idle_watch(
        &activity,
        Duration::from_millis(shard.config.connections_max_idle_ms),
    );
    futures_lite::future::or(reading, futures_lite::future::or(writing, idle)).await?;
    read_result.take().unwrap_or(Ok(()))
}

/// A TLS listener's connection: the handshake, bounded by `connections_max_idle_ms`, with the
/// shard's current TLS configuration (kept by the connection for its life), then the two
/// halves over the one rustls connection, and the client certificate's principal (an SSL
/// listener only: `User:` + its subject DN mapped by `ssl_principal_mapping_rules`, or
/// `User:ANONYMOUS` without one).
async fn tls_start(
    shard: &Rc<Shard>,
    conns: &Rc<ShardConns>,
    mut stream: TcpStream,
    peer_addr: &Rc<str>,
) -> Result<(ReadHalf, WriteHalf, Option<handlers::Principal>), ConnError> {
    let config = conns.tls().ok_or_else(|| {
        ConnError::Handshake(HandshakeError::Io(std::io::Error::other(
            "this shard has no TLS configuration",
        )))
    })?;
    let mut conn = rustls::ServerConnection::new(config).map_err(HandshakeError::Tls)?;
    let limit = Duration::from_millis(shard.config.connections_max_idle_ms);
    let leftover = futures_lite::future::or(transport::handshake(&mut stream, &mut conn), async {
        glommio::timer::sleep(limit).await;
        Err(HandshakeError::Timeout)
    })
    .await?;
    let principal = match conn.peer_certificates().and_then(|c| c.first()) {
        None => handlers::Principal::anonymous(),
        Some(cert) => {
            let dn = crate::tls::subject_dn_rfc2253(cert)
                .map_err(|e| ConnError::Handshake(HandshakeError::Io(std::io::Error::other(e))))?;
            let name = shard
                .config
                .ssl_principal_mapping_rules
                .apply(&dn)
                .ok_or(ConnError::NoPrincipalRule(dn))?;
            handlers::Principal {
                kind: "User".into(),
                name,
            }
        }
    };
    tracing::debug!(
        shard = shard.id,
        peer = %peer_addr,
        version = ?conn.protocol_version(),
        cipher = ?conn.negotiated_cipher_suite().map(|s| s.suite()),
        principal = %principal,
        "TLS handshake complete"
    );
    let write_sock = dup_stream(&stream)?;
    let (r, w) = transport::tls_halves(conn, stream, write_sock, leftover);
    Ok((r, w, Some(principal)))
}

/// When a connection last did something, for the idle timeout.
struct Activity {
    /// When the last complete request was read or the last answer written.
    last: Cell<Instant>,
    /// Requests read and not yet answered.
    pending: Cell<usize>,
    /// A client over its quota is not read from until its throttle passes (KIP-219: the
    /// broker mutes the channel for the throttle time after sending the throttled response;
    /// a Produce mutes it as soon as it is counted, too, so the requests behind it wait).
    mute: handlers::Mute,
}

impl Activity {
    fn touch(&self) {
        self.last.set(Instant::now());
    }
}

/// Ends with [`ConnError::Idle`] once the connection has completed no request and written no
/// answer for `idle`, and has none under way. Bytes that do not complete a request (half a
/// size prefix, part of a frame) are not activity, so a stalled frame is closed too, and
/// its budget freed. A request being handled (a long-polling Fetch) keeps the connection.
async fn idle_watch(activity: &Activity, idle: Duration) -> Result<(), ConnError> {
    loop {
        let due = activity.last.get() + idle;
        let now = Instant::now();
        if now < due {
            glommio::timer::sleep(due - now).await;
        } else if activity.pending.get() > 0 {
            activity.touch();
        } else {
            return Err(ConnError::Idle);
        }
    }
}

/// A second handle on a connection's socket, for the writer.
fn dup_stream(stream: &TcpStream) -> Result<TcpStream, ConnError> {
    use std::os::unix::io::{FromRawFd, IntoRawFd};
    let fd = rustix::io::dup(socket_fd(stream)).map_err(std::io::Error::from)?;
    // glommio builds a stream only from a raw descriptor (or its own socket2 version's
    // Socket), so the owned descriptor is handed over raw.
    // SAFETY: `into_raw_fd` gives up ownership of a fresh, open socket descriptor, and the
    // new stream is its only owner.
    Ok(unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) })
}

/// The connection's socket as a borrowed descriptor, for rustix. glommio's stream implements
/// only `AsRawFd`, not `AsFd`, so the borrow is made here, tied to the stream's lifetime.
fn socket_fd(stream: &TcpStream) -> BorrowedFd<'_> {
    // SAFETY: the descriptor stays open as long as `stream` lives, and the returned borrow
    // cannot outlive `stream`.
    unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }
}

/// Where a connection stands with authentication. Requests are admitted by state: before
/// authentication only the APIs that lead to it are (ApiVersions, SaslHandshake and
/// SaslAuthenticate on a SASL listener, see `server::sasl`), after it every API is, on
/// behalf of the authenticated principal.
/// A PLAINTEXT listener's connections start authenticated as `User:ANONYMOUS`, as in Kafka.
#[derive(Debug)]
pub enum ConnState {
    /// Only the authentication exchange is admitted (a SASL listener's new connection).
    Authenticating,
    Authenticated(handlers::Principal),
}

impl ConnState {
    /// The principal a request is handled for, or None when the state does not admit `api`
    /// (the connection is then closed, as Kafka closes a SASL connection that skips the
    /// handshake).
    fn admits(&self, api: kafka_protocol::messages::ApiKey) -> Option<handlers::Principal> {
        use kafka_protocol::messages::ApiKey;
        match self {
            ConnState::Authenticated(p) => Some(p.clone()),
            ConnState::Authenticating => matches!(
                api,
                ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
            )
            .then(handlers::Principal::anonymous),
        }
    }
}

/// `tls_principal`: who an SSL listener's connection is (its client certificate's mapped
/// subject, or `User:ANONYMOUS`); a SASL listener's principal comes from its login instead.
#[allow(clippy::too_many_arguments)]
async fn read_loop(
    shard: &Rc<Shard>,
    conns: &Rc<ShardConns>,
    stream: &mut ReadHalf,
    peer_addr: &Rc<str>,
    tx: glommio::channels::local_channel::LocalSender<InFlight>,
    activity: &Activity,
    listener: usize,
    tls_principal: Option<handlers::Principal>,
) -> Result<(), ConnError> {
    let mut reader = FrameReader {
        request_bytes_max: shard.config.request_bytes_max,
        inflight: shard.inflight.clone(),
        inflight_total: shard.config.inflight_bytes_max as u64,
        conns: conns.clone(),
        first: true,
    };
    let sasl_listener = shard
        .config
        .listeners
        .get(listener)
        .is_some_and(|l| l.protocol.sasl());
    let mut state = if sasl_listener {
        ConnState::Authenticating
    } else {
        ConnState::Authenticated(tls_principal.unwrap_or_else(handlers::Principal::anonymous))
    };
    let mut sasl = super::sasl::Session::default();
    loop {
        if shard.stopping.get() {
            return Ok(());
        }
        // A throttled client's next request waits, in the socket, until the throttle passes.
        activity.mute.passed().await;
        let (frame, budget) = match reader.next(stream).await? {
            Next::Frame(f, budget) => (f, budget),
            Next::Closed => return Ok(()),
        };
        activity.touch();
        // Counted from here, so that a request whose handler waits (a JoinGroup in a
        // rebalance) keeps the connection from looking idle.
        activity.pending.set(activity.pending.get() + 1);
        if shard.stopping.get() {
            // Stopping: take no new work; the client retries elsewhere or after the restart.
            return Ok(());
        }
        let busy = Busy::new(shard);
        let started = std::time::Instant::now();
        let api = frame_api(&frame);
        let (ordered, released) = handlers::Ordered::new();
        let answer = match decode_request(frame) {
            Err(e) => {
                shard.metrics.record(api, 0, true);
                return Err(e.into());
            }
            Ok(Decoded::ApiVersionsUnsupported { correlation_id }) => {
                drop(ordered);
                let answer = handlers::unsupported_version_response(correlation_id)
                    .map(|b| handlers::Answer::unthrottled(Some(vec![Chunk::Mem(b)])));
                glommio::spawn_local(async move { answer }).detach()
            }
            Ok(Decoded::Request(req))
                if sasl_listener
                    && matches!(
                        req.api_key,
                        kafka_protocol::messages::ApiKey::SaslHandshake
                            | kafka_protocol::messages::ApiKey::SaslAuthenticate
                    ) =>
            {
                // The exchange changes this connection's state: handled here, in order.
                drop(ordered);
                let step = sasl.step(shard, *req, peer_addr).await;
                if let Some(p) = &sasl.principal {
                    state = ConnState::Authenticated(p.clone());
                }
                let answer = Ok(handlers::Answer::unthrottled(Some(vec![Chunk::Mem(
                    step.response,
                )])));
                let task = glommio::spawn_local(async move { answer }).detach();
                let in_flight = InFlight {
                    started,
                    api,
                    answer: task,
                    _budget: budget,
                    _busy: busy,
                };
                if tx.send(in_flight).await.is_err() {
                    return Ok(());
                }
                if step.failed {
                    // The failure is answered, then the connection closes.
                    return Err(ConnError::AuthenticationFailed);
                }
                continue;
            }
            Ok(Decoded::Request(req)) => {
                if sasl.expired(Instant::now())
                    && req.api_key != kafka_protocol::messages::ApiKey::ApiVersions
                {
                    // KIP-368: the session ended without a re-authentication.
                    shard.metrics.record(api, 0, true);
                    return Err(ConnError::SessionExpired);
                }
                let Some(principal) = state.admits(req.api_key) else {
                    shard.metrics.record(api, 0, true);
                    return Err(ConnError::NotAdmitted(api));
                };
                if req.api_key != kafka_protocol::messages::ApiKey::ApiVersions {
                    // A cluster broker answers nothing from its metadata before it caught up.
                    shard.until_serving().await;
                }
                let mut req = *req;
                let body = std::mem::replace(
                    &mut req.body,
                    kafka_protocol::messages::RequestKind::ApiVersions(Default::default()),
                );
                let ctx = handlers::RequestContext::new(
                    shard.clone(),
                    &req,
                    peer_addr,
                    principal,
                    ordered,
                    activity.mute.clone(),
                    listener,
                );
                glommio::spawn_local(async move { handlers::dispatch(&ctx, body).await }).detach()
            }
        };
        // The next request starts once this one has taken effect (see `run`).
        let _ = released.await;
        let in_flight = InFlight {
            started,
            api,
            answer,
            _budget: budget,
            _busy: busy,
        };
        if tx.send(in_flight).await.is_err() {
            return Ok(()); // the writer has stopped
        }
    }
}

/// Writes each answer, in request order, as its handler finishes.
async fn write_loop(
    shard: &Rc<Shard>,
    stream: &mut WriteHalf,
    rx: glommio::channels::local_channel::LocalReceiver<InFlight>,
    activity: &Activity,
) -> Result<(), ConnError> {
    while let Some(f) = rx.recv().await {
        let result = async {
            let answer = f
                .answer
                .await
                .ok_or_else(|| anyhow::anyhow!("request handler task was cancelled"))??;
            let throttle = Duration::from_millis(answer.throttle_ms);
            if answer.throttle_ms > 0 && answer.throttle_before_send {
                // Versions before KIP-219: the response itself is held back, and nothing more
                // is read meanwhile.
                activity.mute.mute_for(throttle);
                glommio::timer::sleep(throttle).await;
            }
            if let Some(chunks) = answer.chunks {
                write_chunks(shard, stream, chunks).await?;
            }
            if answer.throttle_ms > 0 && !answer.throttle_before_send {
                activity.mute.mute_for(throttle);
            }
            Ok::<(), ConnError>(())
        }
        .await;
        let micros = f.started.elapsed().as_micros() as u64;
        shard.metrics.record(f.api, micros, result.is_err());
        activity
            .pending
            .set(activity.pending.get().saturating_sub(1));
        activity.touch();
        result?;
    }
    Ok(())
}

/// The API name of a frame, for metrics (before it is decoded, so failures count too).
fn frame_api(frame: &[u8]) -> &'static str {
    let key = frame.get(0..2).map(|b| i16::from_be_bytes([b[0], b[1]]));
    match key.map(kafka_protocol::messages::ApiKey::try_from) {
        Some(Ok(k)) => crate::protocol::versions::name(k),
        _ => "unknown",
    }
}

/// Writes a response in order: memory chunks with `write_all`, file ranges with sendfile or
/// through a bounded buffer (the copying path).
///
/// A response of several chunks (a Fetch: framing, records, framing, ...) is written with the
/// socket corked, so it leaves as full segments with one push at the end. Otherwise each chunk
/// would be its own push (the socket has TCP_NODELAY): on loopback, a delivery and a wake-up
/// of the client per partition.
async fn write_chunks(
    shard: &Shard,
    stream: &mut WriteHalf,
    chunks: Vec<Chunk>,
) -> std::io::Result<()> {
    let mut out = Corked::new(stream, chunks.len() > 1);
    let mut copy_buf: Vec<u8> = Vec::new();
    for chunk in chunks {
        match chunk {
            Chunk::Mem(b) => out.write_all(&b).await?,
            Chunk::File(slice) => {
                ensure_cached(shard, &slice).await?;
                // Over TLS (without kTLS) record bytes must be encrypted: the copying path.
                match out.plain_socket() {
                    Some(sock) if shard.config.fetch_zero_copy => {
                        send_file(shard, sock, &slice, &mut copy_buf).await?
                    }
                    _ => {
                        copy_range(shard, &mut out, &slice, slice.pos, slice.len, &mut copy_buf)
                            .await?
                    }
                }
            }
        }
    }
    // Everything queued (TLS: encrypted) leaves before the cork is cleared.
    out.flush().await?;
    drop(out);
    Ok(())
}

/// The stream, with TCP_CORK set while this lives when `corked`. Clearing it sends what is
/// held at once. The guard holds the stream so that the cork is cleared on every way out,
/// errors and cancellation included.
struct Corked<'a> {
    stream: &'a mut WriteHalf,
    corked: bool,
}

impl<'a> Corked<'a> {
    fn new(stream: &'a mut WriteHalf, corked: bool) -> Corked<'a> {
        if corked {
            set_cork(stream.socket(), true);
        }
        Corked { stream, corked }
    }
}

impl std::ops::Deref for Corked<'_> {
    type Target = WriteHalf;

    fn deref(&self) -> &WriteHalf {
        self.stream
    }
}

impl std::ops::DerefMut for Corked<'_> {
    fn deref_mut(&mut self) -> &mut WriteHalf {
        self.stream
    }
}

impl Drop for Corked<'_> {
    fn drop(&mut self) {
        if self.corked {
            set_cork(self.stream.socket(), false);
        }
    }
}

/// Best effort: a socket that refuses TCP_CORK only sends more, smaller segments.
fn set_cork(stream: &TcpStream, on: bool) {
    if let Err(e) = rustix::net::sockopt::set_tcp_cork(socket_fd(stream), on) {
        tracing::debug!(error = %std::io::Error::from(e), "TCP_CORK not set");
    }
}

/// Old data may have left the page cache; sendfile (or a read) would then wait for the disk on
/// this core and stall every partition of the shard. Such a range is read into the cache on
/// the blocking pool first (cachestat(2) tells; on kernels without it, nothing is done).
async fn ensure_cached(shard: &Shard, slice: &FileSlice) -> std::io::Result<()> {
    let len = slice.len as u64;
    if crate::storage::io::fully_cached(&slice.file, slice.pos, len) != Some(false) {
        return Ok(());
    }
    let (file, pos) = (slice.file.clone(), slice.pos);
    glommio::executor()
        .spawn_blocking(move || crate::storage::io::warm(&file, pos, len))
        .await?;
    let stats = &shard.stats.bytes_out_warmed;
    stats.set(stats.get() + len);
    Ok(())
}

/// The copying path: file bytes go through `copy_buf` in bounded pieces.
async fn copy_range(
    shard: &Shard,
    stream: &mut WriteHalf,
    slice: &FileSlice,
    pos: u64,
    len: usize,
    copy_buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut done = 0usize;
    while done < len {
        let n = (len - done).min(COPY_CHUNK_BYTES);
        copy_buf.resize(n, 0);
        slice
            .file
            .read_exact_at(&mut copy_buf[..n], pos + done as u64)?;
        stream.write_all(&copy_buf[..n]).await?;
        done += n;
    }
    let stats = &shard.stats.bytes_out_copied;
    stats.set(stats.get() + len as u64);
    Ok(())
}

/// One piece of the copying path straight to a plaintext socket (when sendfile finds it full).
async fn copy_to_socket(
    stream: &mut TcpStream,
    slice: &FileSlice,
    pos: u64,
    len: usize,
    copy_buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    copy_buf.resize(len, 0);
    slice.file.read_exact_at(&mut copy_buf[..len], pos)?;
    stream.write_all(&copy_buf[..len]).await
}

/// Adds O_NONBLOCK to the socket's file status flags; the other flags stay as they are.
fn set_nonblocking(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let flags = fcntl_getfl(fd)?;
    fcntl_setfl(fd, flags | OFlags::NONBLOCK)?;
    Ok(())
}

/// The zero-copy path: sendfile(2) from the segment file (served by the page cache) to the
/// socket, so record bytes never enter user space.
///
/// The socket is non-blocking (see [`run`]): a blocking sendfile would stall the whole shard
/// when a slow consumer's window fills. glommio has no public "wait until writable", so
/// when the socket is full (EAGAIN) the next piece goes through the copying path, whose
/// `write_all` waits for room on io_uring; then sendfile resumes. Bytes written before (the
/// response framing, by `write_all`) are already in the socket's queue, so order holds.
async fn send_file(
    shard: &Shard,
    stream: &mut TcpStream,
    slice: &FileSlice,
    copy_buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    use rustix::io::Errno;
    let end = slice.pos + slice.len as u64;
    let mut off = slice.pos;
    while off < end {
        // The kernel advances its copy of the offset; `off` is advanced from the count below.
        let mut kernel_off = off;
        let want = (end - off).min(SENDFILE_CHUNK_BYTES as u64) as usize;
        let sent =
            rustix::fs::sendfile(socket_fd(stream), &*slice.file, Some(&mut kernel_off), want);
        match sent {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment file ends inside a fetch slice",
                ));
            }
            Ok(n) => {
                off += n as u64;
                let stats = &shard.stats.bytes_out_zero_copy;
                stats.set(stats.get() + n as u64);
            }
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                let blocked = &shard.stats.fetch_socket_full;
                blocked.set(blocked.get() + 1);
                let piece = (end - off).min(COPY_CHUNK_BYTES as u64) as usize;
                copy_to_socket(stream, slice, off, piece, copy_buf).await?;
                let stats = &shard.stats.bytes_out_copied;
                stats.set(stats.get() + piece as u64);
                off += piece as u64;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::AsyncReadExt;
    use rustix::fs::{OFlags, fcntl_getfl};
    use rustix::net::sockopt::tcp_cork;

    /// Runs `f` on a fresh glommio executor on this thread.
    fn on_executor<F: std::future::Future<Output = ()>>(f: F) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(f);
    }

    /// A connected loopback pair: (the accepted side, the client side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, client) =
            futures_lite::future::zip(listener.accept(), TcpStream::connect(addr)).await;
        (accepted.unwrap(), client.unwrap())
    }

    #[test]
    fn cork_is_set_while_the_guard_lives_and_only_when_asked() {
        on_executor(async {
            let (s, _client) = pair().await;
            let mut s = WriteHalf::Plain(s);
            {
                let out = Corked::new(&mut s, true);
                assert!(tcp_cork(socket_fd(out.socket())).unwrap());
            }
            assert!(!tcp_cork(socket_fd(s.socket())).unwrap());
            {
                let out = Corked::new(&mut s, false);
                assert!(!tcp_cork(socket_fd(out.socket())).unwrap());
            }
            assert!(!tcp_cork(socket_fd(s.socket())).unwrap());
        });
    }

    #[test]
    fn the_writer_half_is_the_same_non_blocking_socket() {
        on_executor(async {
            let (s, mut client) = pair().await;
            set_nonblocking(socket_fd(&s)).unwrap();
            let mut w = dup_stream(&s).unwrap();
            assert_ne!(w.as_raw_fd(), s.as_raw_fd());
            assert!(
                fcntl_getfl(socket_fd(&w))
                    .unwrap()
                    .contains(OFlags::NONBLOCK)
            );
            // A socket option set through one handle shows through the other.
            set_cork(&w, true);
            assert!(tcp_cork(socket_fd(&s)).unwrap());
            set_cork(&w, false);
            w.write_all(b"ping").await.unwrap();
            w.flush().await.unwrap();
            drop(s);
            let mut got = [0u8; 4];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
        });
    }
}
