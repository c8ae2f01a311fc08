//! The cluster shell on shard 0: the Raft quorum's transport, the apply loop that turns
//! committed metadata into what every shard serves, this broker's registration and
//! heartbeats, and, on the active controller (the Raft leader), the brokers' liveness.
//!
//! Lives on: shard 0 only ([`crate::placement::CONTROLLER_SHARD`]), in a latency-sensitive
//! task queue, so a shard 0 saturated by produce cannot delay Raft ticks or heartbeats into
//! spurious elections or fencing. Disk writes (the Raft log, the metadata store) run on the
//! blocking pool.
//!
//! The flow of a metadata change in a cluster: a broker's controller (here) forwards it to
//! the active controller's node ([`wire::Request`]); there the controller validates it against
//! its image, proposes the records as one Raft entry and waits until it is committed and
//! applied locally. Every node applies committed entries in order ([`Quorum::apply_loop`]):
//! the metadata store makes them durable with their Raft index, and every shard is told what
//! changed (topics created, deleted or changed, the cluster view). A read never waits for the
//! quorum: shards answer from what they were told.
//!
//! Brokers register at start (fenced, under a new epoch) and heartbeat every
//! `--broker-heartbeat-interval-ms`; the active controller unfences a broker once it has
//! applied the metadata up to its registration, and fences one that misses heartbeats for
//! `--broker-session-timeout-ms`: it leaves every ISR (but as a last member) and its
//! partitions move to another in-sync replica, or go offline until it is back (see
//! `cluster::election`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use glommio::net::{TcpListener, TcpStream};

use crate::shard::peer::PeerStream;
use protobuf::Message as _;
use uuid::Uuid;

use crate::cluster::raft::{self, Committed, RaftConfig, RaftHandle, Transport};
use crate::cluster::view::{BrokerEndpoint, ClusterView};
use crate::cluster::wire::{self, Request, Response, WireError};
use crate::config::{ClusterConfig, Config};
use crate::error::KafkaError;
use crate::shard::Shard;
use crate::shard::calls::{ClusterChanged, TopicChanged, TopicCreated, TopicDeleted};
use crate::storage::metadata::image::MetadataImage;
use crate::storage::metadata::import::OneNodeImport;
use crate::storage::metadata::record::{
    BrokerFenceRecord, ClusterIdRecord, ListenerEndpoint, MetadataRecord, RegisterBrokerRecord,
};

/// Raft ticks every this many ms; the election timeout is a whole number of ticks.
const TICK_MS: u64 = 100;
/// Frames waiting for one peer; quorum messages beyond it are dropped (Raft sends again).
const PEER_QUEUE_MAX: usize = 4096;
/// How long an RPC to the active controller waits for its answer.
pub const RPC_TIMEOUT_MS: u64 = 10_000;
/// How long a forwarded change looks for an active controller before NOT_CONTROLLER.
const FIND_CONTROLLER_MS: u64 = 10_000;

/// Raft ids are Kafka node ids + 1 (raft-rs reserves 0 for "none").
pub fn raft_id(node: i32) -> u64 {
    u64::try_from(node).unwrap_or(0) + 1
}

/// The Kafka node id of a Raft id (-1 for none).
pub fn node_of(raft_id: u64) -> i32 {
    if raft_id == 0 {
        -1
    } else {
        i32::try_from(raft_id - 1).unwrap_or(-1)
    }
}

/// One outgoing connection to a voter, with its queue and its RPCs waiting for answers.
struct Peer {
    node: i32,
    addr: SocketAddr,
    queue: RefCell<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    queued: Cell<usize>,
    pending: RefCell<HashMap<u32, oneshot::Sender<Response>>>,
    next_corr: Cell<u32>,
    /// Since when connecting to the peer is refused (nothing listens on its controller port:
    /// the process is gone), None while it connects or fails otherwise (a cut link times out
    /// instead). The active controller fences such a broker without waiting for its session
    /// to expire.
    refused_since: Cell<Option<Instant>>,
}

/// Outgoing connections to the voters, by node id.
pub struct Peers {
    peers: HashMap<i32, Rc<Peer>>,
}

impl Peers {
    fn new(cfg: &ClusterConfig, me: i32) -> Peers {
        let peers = cfg
            .voters
            .iter()
            .filter(|(id, _)| *id != me)
            .map(|&(node, addr)| {
                (
                    node,
                    Rc::new(Peer {
                        node,
                        addr,
                        queue: RefCell::new(None),
                        queued: Cell::new(0),
                        pending: RefCell::new(HashMap::new()),
                        next_corr: Cell::new(1),
                        refused_since: Cell::new(None),
                    }),
                )
            })
            .collect();
        Peers { peers }
    }

    /// Queues a frame for `node`; false when it is dropped (unknown node, queue full).
    fn push(&self, node: i32, frame: Vec<u8>, droppable: bool) -> bool {
        let Some(peer) = self.peers.get(&node) else {
            return false;
        };
        if droppable && peer.queued.get() >= PEER_QUEUE_MAX {
            return false;
        }
        let queue = peer.queue.borrow();
        let Some(tx) = queue.as_ref() else {
            return false;
        };
        if tx.unbounded_send(frame).is_ok() {
            peer.queued.set(peer.queued.get() + 1);
            true
        } else {
            false
        }
    }

    /// Sends `req` to `node`'s controller and waits for its answer.
    async fn call(&self, node: i32, req: &Request, timeout: Duration) -> Result<Response, String> {
        let peer = self
            .peers
            .get(&node)
            .ok_or_else(|| format!("node {node} is not a voter"))?
            .clone();
        let corr = peer.next_corr.get();
        peer.next_corr.set(corr.wrapping_add(1).max(1));
        let (tx, rx) = oneshot::channel();
        peer.pending.borrow_mut().insert(corr, tx);
        if !self.push(
            node,
            wire::frame(wire::KIND_REQUEST, corr, &wire::encode(req)),
            false,
        ) {
            peer.pending.borrow_mut().remove(&corr);
            return Err(format!("node {node} is not connected"));
        }
        let answer = futures_lite::future::or(async { rx.await.ok() }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        peer.pending.borrow_mut().remove(&corr);
        answer.ok_or_else(|| format!("no answer from node {node}"))
    }
}

/// Keeps the connection to one peer: connects (retrying with a backoff, for ever: a node
/// never gives up on its peers), writes queued frames, reads RPC answers.
async fn peer_task(peer: Rc<Peer>, stopping: Rc<Cell<bool>>, config: Rc<Config>) {
    let mut backoff = 50;
    while !stopping.get() {
        let (tx, mut rx) = mpsc::unbounded::<Vec<u8>>();
        *peer.queue.borrow_mut() = Some(tx);
        peer.queued.set(0);
        let stream = match TcpStream::connect(peer.addr).await {
            Ok(s) => s,
            Err(e) => {
                *peer.queue.borrow_mut() = None;
                let refused = matches!(&e, glommio::GlommioError::IoError(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
                if !refused {
                    peer.refused_since.set(None);
                } else if peer.refused_since.get().is_none() {
                    peer.refused_since.set(Some(Instant::now()));
                }
                tracing::debug!(node = peer.node, addr = %peer.addr, error = %e, "quorum peer not reachable; retrying");
                glommio::timer::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(1000);
                continue;
            }
        };
        backoff = 50;
        peer.refused_since.set(None);
        let _ = stream.set_nodelay(true);
        let stream = match quorum_tls_connect(&config, peer.addr, stream).await {
            Ok(s) => s,
            Err(e) => {
                *peer.queue.borrow_mut() = None;
                tracing::warn!(node = peer.node, addr = %peer.addr, error = %e, "quorum peer: TLS failed; retrying");
                glommio::timer::sleep(Duration::from_millis(1000)).await;
                continue;
            }
        };
        tracing::debug!(node = peer.node, addr = %peer.addr, "connected to quorum peer");
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        let reading = {
            let peer = peer.clone();
            async move {
                loop {
                    match read_frame(&mut reader).await {
                        Ok((wire::KIND_RESPONSE, corr, payload)) => {
                            let tx = peer.pending.borrow_mut().remove(&corr);
                            if let (Some(tx), Ok(r)) = (tx, wire::decode::<Response>(&payload)) {
                                let _ = tx.send(r);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }
        };
        let writing = async {
            while let Some(frame) = rx.next().await {
                peer.queued.set(peer.queued.get().saturating_sub(1));
                if writer.write_all(&frame).await.is_err() {
                    return;
                }
            }
        };
        futures_lite::future::or(reading, writing).await;
        *peer.queue.borrow_mut() = None;
        // Waiting RPCs fail now rather than at their timeout.
        peer.pending.borrow_mut().clear();
        glommio::timer::sleep(Duration::from_millis(backoff)).await;
    }
}

/// The quorum connection to `addr` as the controller listener speaks it: mutual TLS when it
/// is an SSL listener (`--controller-listener-names`), with the brokers' TLS client
/// configuration (`peer::peer_tls`), else the TCP stream as it is.
async fn quorum_tls_connect(
    config: &Config,
    addr: SocketAddr,
    stream: TcpStream,
) -> Result<PeerStream, String> {
    if !config
        .cluster
        .as_ref()
        .is_some_and(ClusterConfig::controller_tls)
    {
        return Ok(PeerStream::Plain(stream));
    }
    let tls = crate::shard::peer::peer_tls(config)?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let s = futures_rustls::TlsConnector::from(tls)
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(PeerStream::Tls(Box::new(s)))
}

/// Reads one frame: (kind, correlation id, payload).
async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<(u8, u32, Vec<u8>)> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if !(5..=wire::FRAME_BYTES_MAX).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("controller frame of {len} bytes"),
        ));
    }
    // The buffer grows as bytes arrive, so a peer that claims a large frame and sends
    // nothing holds no more memory than it sent.
    let mut body = Vec::with_capacity(len.min(16 << 10));
    let mut chunk = [0u8; 16 << 10];
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        r.read_exact(&mut chunk[..want]).await?;
        body.extend_from_slice(&chunk[..want]);
    }
    let corr = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
    Ok((body[0], corr, body[5..].to_vec()))
}

struct PeerTransport {
    peers: Rc<Peers>,
}

impl Transport for PeerTransport {
    fn send(&self, msg: ::raft::eraftpb::Message) {
        let node = node_of(msg.to);
        match msg.write_to_bytes() {
            Ok(bytes) => {
                self.peers
                    .push(node, wire::frame(wire::KIND_RAFT, 0, &bytes), true);
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a raft message"),
        }
    }
}

/// The cluster state of this node (shard 0).
pub struct Quorum {
    pub node_id: i32,
    pub cfg: ClusterConfig,
    config: Rc<Config>,
    /// This node's Raft member; None on an observer (a broker that is not a voter), which
    /// follows the committed log by fetching it from the active controller.
    raft: Option<RaftHandle>,
    /// On an observer: the Raft id of the active controller, as the voters last said.
    observed_leader: Cell<u64>,
    peers: Rc<Peers>,
    incarnation: Uuid,
    /// The cluster id of `meta.properties` (None until adopted).
    stored_cluster_id: RefCell<Option<String>>,
    /// Raft index applied to the store and told to every shard.
    applied: Cell<u64>,
    applied_term: Cell<u64>,
    applied_waiters: RefCell<Vec<(u64, oneshot::Sender<()>)>>,
    /// This broker's registration epoch (0: not registered) and whether it is fenced.
    my_epoch: Cell<i64>,
    fenced: Cell<bool>,
    /// On the active controller: when each broker last heartbeat, and the Raft index its
    /// registration was applied at (it is unfenced once it has applied that far).
    last_heartbeat: RefCell<HashMap<i32, Instant>>,
    registered_at: RefCell<HashMap<i32, u64>>,
    /// The view every shard was last told.
    view: RefCell<Arc<ClusterView>>,
    /// A reason this node cannot be part of the cluster (another cluster's id): the broker stops.
    pub fatal: RefCell<Option<String>>,
    stopping: Rc<Cell<bool>>,
    /// Shard 0, for RPCs this node answers itself (it is the active controller). Weak: the
    /// shard holds the controller, which holds this.
    shard: std::rc::Weak<Shard>,
}

impl Quorum {
    /// Starts the quorum on shard 0: Raft (its log recovered from the data dir), the peers,
    /// the controller listener, the apply loop, and this broker's registration.
    pub fn start(
        shard: &Rc<Shard>,
        cfg: ClusterConfig,
        stored_cluster_id: Option<String>,
        applied: u64,
    ) -> Result<Rc<Quorum>, String> {
        let config = shard.config.clone();
        let node_id = config.node_id;
        let listener = TcpListener::bind(cfg.controller_listen).map_err(|e| {
            format!(
                "cannot listen for the metadata quorum on {}: {e}",
                cfg.controller_listen
            )
        })?;
        let peers = Rc::new(Peers::new(&cfg, node_id));
        let transport = Rc::new(PeerTransport {
            peers: peers.clone(),
        });
        let ctl_shard = shard.clone();
        let snapshot_producer: raft::SnapshotProducer = Rc::new(move || {
            let ctl = ctl_shard
                .controller
                .as_ref()
                .ok_or_else(|| "no controller".to_string())?;
            ctl.raft_snapshot()
        });
        // A follower that hears nothing from the leader starts an election after a random
        // time between the election timeout and the fetch timeout (Kafka's
        // controller.quorum.election.timeout.ms and controller.quorum.fetch.timeout.ms).
        let election_ticks =
            usize::try_from((cfg.election_timeout_ms / TICK_MS).max(3)).unwrap_or(10);
        let max_election_ticks = usize::try_from(cfg.fetch_timeout_ms / TICK_MS)
            .unwrap_or(20)
            .max(election_ticks + 1);
        let rcfg = RaftConfig {
            id: raft_id(node_id),
            voters: cfg.voters.iter().map(|(id, _)| raft_id(*id)).collect(),
            dir: config
                .data_dir
                .join(crate::storage::metadata::METADATA_DIR)
                .join("raft"),
            tick_ms: TICK_MS,
            election_ticks,
            max_election_ticks,
            heartbeat_ticks: 1,
            compact_every: cfg.log_compact_entries,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
        };
        type Driver = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;
        let (handle, committed, driver, observed): (_, _, Option<Driver>, _) = if cfg.is_voter {
            let (h, c, d) = raft::start(rcfg, applied, snapshot_producer, transport)
                .map_err(|e| format!("cannot open the metadata quorum's log: {e}"))?;
            (Some(h), c, Some(Box::pin(d)), None)
        } else {
            let (tx, rx) = mpsc::unbounded();
            (None, rx, None, Some(tx))
        };
        let q = Rc::new(Quorum {
            node_id,
            cfg: cfg.clone(),
            config: config.clone(),
            raft: handle,
            observed_leader: Cell::new(0),
            peers: peers.clone(),
            incarnation: Uuid::new_v4(),
            stored_cluster_id: RefCell::new(stored_cluster_id),
            applied: Cell::new(applied),
            applied_term: Cell::new(0),
            applied_waiters: RefCell::new(Vec::new()),
            my_epoch: Cell::new(0),
            fenced: Cell::new(true),
            last_heartbeat: RefCell::new(HashMap::new()),
            registered_at: RefCell::new(HashMap::new()),
            view: RefCell::new(Arc::new(ClusterView {
                controller_id: -1,
                ..Default::default()
            })),
            fatal: RefCell::new(None),
            stopping: Rc::new(Cell::new(false)),
            shard: Rc::downgrade(shard),
        });
        let tq = glommio::executor().create_task_queue(
            glommio::Shares::Static(1000),
            glommio::Latency::Matters(Duration::from_millis(5)),
            "quorum",
        );
        let spawn = |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>| {
            glommio::spawn_local_into(f, tq).map(|t| t.detach())
        };
        let err = |e: glommio::GlommioError<()>| format!("cannot start the quorum tasks: {e}");
        if let Some(driver) = driver {
            spawn(driver).map_err(err)?;
        }
        if let Some(tx) = observed {
            spawn(Box::pin(q.clone().observer_loop(tx))).map_err(err)?;
        }
        for peer in peers.peers.values() {
            spawn(Box::pin(peer_task(
                peer.clone(),
                q.stopping.clone(),
                q.config.clone(),
            )))
            .map_err(err)?;
        }
        spawn(Box::pin(q.clone().accept_loop(shard.clone(), listener))).map_err(err)?;
        spawn(Box::pin(q.clone().apply_loop(shard.clone(), committed))).map_err(err)?;
        spawn(Box::pin(q.clone().broker_loop(shard.clone()))).map_err(err)?;
        if let Some(import) = cfg.one_node_import.clone() {
            spawn(Box::pin(q.clone().import_loop(import))).map_err(err)?;
        }
        spawn(Box::pin(q.clone().controller_loop(shard.clone()))).map_err(err)?;
        tracing::info!(
            node_id,
            controller_listen = %cfg.controller_listen,
            voters = ?cfg.voters,
            voter = cfg.is_voter,
            applied,
            "metadata quorum starting"
        );
        Ok(q)
    }

    /// The Raft id of the active controller (0: none known).
    pub fn leader_raft_id(&self) -> u64 {
        match &self.raft {
            Some(raft) => raft.leader_id(),
            None => self.observed_leader.get(),
        }
    }

    /// Whether this node is the active controller.
    pub fn is_leader(&self) -> bool {
        self.raft.as_ref().is_some_and(RaftHandle::is_leader)
    }

    /// The broker's configuration (replication settings the controller decides by).
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    pub fn applied(&self) -> u64 {
        self.applied.get()
    }

    pub fn my_epoch(&self) -> i64 {
        self.my_epoch.get()
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.get()
    }

    pub fn applied_term(&self) -> u64 {
        self.applied_term.get()
    }

    /// Waits until the entry at `index` is applied here (and every shard told of it).
    pub async fn wait_applied(&self, index: u64) {
        if self.applied.get() >= index {
            return;
        }
        let (tx, rx) = oneshot::channel();
        self.applied_waiters.borrow_mut().push((index, tx));
        let _ = rx.await;
    }

    /// Proposes `records` as one entry and waits until it is committed and applied here.
    pub async fn propose(&self, records: &[MetadataRecord]) -> Result<(), KafkaError> {
        let data = crate::storage::metadata::store::encode_batch(0, records);
        let Some(raft) = &self.raft else {
            return Err(KafkaError::NotController);
        };
        match raft.propose(data).await {
            Ok(index) => {
                self.wait_applied(index).await;
                Ok(())
            }
            Err(raft::ProposeError::NotLeader { .. }) | Err(raft::ProposeError::Dropped) => {
                Err(KafkaError::NotController)
            }
            Err(raft::ProposeError::Stopped) => {
                Err(KafkaError::BrokerNotAvailable("the broker is stopping"))
            }
            Err(raft::ProposeError::Disk(e)) => Err(KafkaError::Storage(format!(
                "the metadata quorum's log failed: {e}"
            ))),
        }
    }

    /// On the active controller, before deciding anything from the image: waits until every
    /// entry committed so far (those of earlier leaders included) is applied here.
    pub async fn catch_up(&self) {
        let commit = self.raft.as_ref().map_or(0, |r| r.status().commit);
        self.wait_applied(commit).await;
    }

    /// The node id of the active controller, waiting up to `FIND_CONTROLLER_MS` for one.
    async fn find_controller(&self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_millis(FIND_CONTROLLER_MS);
        loop {
            let leader = self.leader_raft_id();
            if leader != 0 {
                return Some(node_of(leader));
            }
            if Instant::now() >= deadline || self.stopping.get() {
                return None;
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a change to the active controller (KIP-590 forwarding); Ok(None) when this node
    /// is the active controller and should do it itself.
    pub async fn forward(&self, req: &Request) -> Result<Option<Response>, KafkaError> {
        let deadline = Instant::now() + Duration::from_millis(FIND_CONTROLLER_MS);
        loop {
            let Some(leader) = self.find_controller().await else {
                return Err(KafkaError::NotController);
            };
            if leader == self.node_id {
                return Ok(None);
            }
            match self
                .peers
                .call(leader, req, Duration::from_millis(RPC_TIMEOUT_MS))
                .await
            {
                Ok(Response::NotController { .. }) | Err(_) if Instant::now() < deadline => {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
                Ok(Response::NotController { .. }) | Err(_) => {
                    return Err(KafkaError::NotController);
                }
                Ok(r) => return Ok(Some(r)),
            }
        }
    }

    pub fn stop(&self) {
        self.stopping.set(true);
    }

    /// The quorum as this node, its leader, sees it.
    fn local_report(&self) -> wire::QuorumReport {
        let s = self
            .raft
            .as_ref()
            .map(RaftHandle::status)
            .unwrap_or_default();
        wire::QuorumReport {
            leader: node_of(s.leader_id),
            term: s.term,
            commit: s.commit,
            voters: s
                .peers
                .iter()
                .map(|p| wire::VoterReport {
                    node: node_of(p.id),
                    matched: p.matched,
                    recent_active: p.recent_active || p.id == s.id,
                })
                .collect(),
        }
    }

    /// The quorum as the active controller sees it, asked of it when it is another node.
    pub async fn report(&self) -> Result<wire::QuorumReport, KafkaError> {
        match self.forward(&Request::QuorumStatus).await? {
            None => Ok(self.local_report()),
            Some(Response::Quorum(r)) => Ok(r),
            Some(other) => Err(KafkaError::InvalidRequest(format!(
                "unexpected answer from the controller: {other:?}"
            ))),
        }
    }

    /// At SIGTERM: tells the active controller this broker is going (so it is fenced now,
    /// not after the session timeout), waiting at most a second for that, then stops Raft.
    pub async fn shutdown(self: &Rc<Self>) {
        self.stopping.set(true);
        if self.my_epoch.get() > 0 {
            let req = Request::Heartbeat {
                broker_id: self.node_id,
                broker_epoch: self.my_epoch.get(),
                applied: self.applied.get(),
                shutting_down: true,
                replica_ends: Vec::new(),
            };
            futures_lite::future::or(
                async {
                    let _ = self.rpc(&req).await;
                },
                glommio::timer::sleep(Duration::from_secs(1)),
            )
            .await;
        }
        if let Some(raft) = &self.raft {
            raft.stop();
        }
    }

    /// Waits, up to the RPC timeout, until this node has applied `index` (what the active
    /// controller had applied when it answered a forwarded change).
    pub async fn wait_applied_for(&self, index: u64) {
        futures_lite::future::or(self.wait_applied(index), async {
            glommio::timer::sleep(Duration::from_millis(RPC_TIMEOUT_MS)).await;
        })
        .await;
    }

    /// Since when `node`'s controller port refuses connections (see [`Peer`]), for a voter.
    pub fn refused_since(&self, node: i32) -> Option<Instant> {
        self.peers
            .peers
            .get(&node)
            .and_then(|p| p.refused_since.get())
    }

    pub fn last_heartbeat(&self, broker: i32) -> Option<Instant> {
        self.last_heartbeat.borrow().get(&broker).copied()
    }

    pub fn heartbeat_from(&self, broker: i32) {
        self.last_heartbeat
            .borrow_mut()
            .insert(broker, Instant::now());
    }

    /// A broker was registered: it is unfenced once it has applied this far.
    pub fn registered(&self, broker: i32) {
        self.registered_at
            .borrow_mut()
            .insert(broker, self.applied.get());
        self.heartbeat_from(broker);
    }

    /// The Raft index a broker must have applied to be unfenced (for a broker registered
    /// under an earlier controller: what this one has applied now).
    pub fn registered_index(&self, broker: i32) -> u64 {
        *self
            .registered_at
            .borrow_mut()
            .entry(broker)
            .or_insert(self.applied.get())
    }

    /// The active controller's own duties, and the view's controller id on leader changes.
    async fn controller_loop(self: Rc<Self>, shard: Rc<Shard>) {
        let Some(ctl) = shard.controller.as_ref() else {
            return;
        };
        let mut was_leader = false;
        let mut last_leader = 0;
        while !self.stopping.get() {
            glommio::timer::sleep(Duration::from_millis(TICK_MS)).await;
            let leader = self.leader_raft_id();
            if leader != last_leader {
                last_leader = leader;
                tracing::info!(
                    controller = node_of(leader),
                    term = self.raft.as_ref().map_or(0, RaftHandle::term),
                    "active controller changed"
                );
                let image = ctl.image();
                self.publish_view(&shard, &image).await;
            }
            let is_leader = self.is_leader();
            if is_leader && !was_leader {
                self.last_heartbeat.borrow_mut().clear();
                self.registered_at.borrow_mut().clear();
            }
            if !is_leader && was_leader {
                ctl.lost_leadership();
            }
            was_leader = is_leader;
            if is_leader {
                ctl.leader_duties(&self).await;
            }
        }
    }

    /// Serves the controller listener: quorum messages go to Raft, RPCs are answered.
    async fn accept_loop(self: Rc<Self>, shard: Rc<Shard>, listener: TcpListener) {
        let mut server_tls: Option<(u64, Arc<rustls::ServerConfig>)> = None;
        loop {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "controller listener: accept failed");
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let q = self.clone();
            let shard = shard.clone();
            let tls = if self.cfg.controller_tls() {
                // Read from the files at the first connection and again after a SIGHUP, so a
                // new certificate serves the next connection.
                let generation =
                    crate::tls::RELOAD_GENERATION.load(std::sync::atomic::Ordering::Relaxed);
                match &server_tls {
                    Some((g, c)) if *g == generation => Some(c.clone()),
                    _ => match self
                        .config
                        .tls_files
                        .as_ref()
                        .map(crate::tls::server_config)
                    {
                        Some(Ok(c)) => {
                            server_tls = Some((generation, c.clone()));
                            Some(c)
                        }
                        Some(Err(e)) => {
                            tracing::error!(error = %e, "controller listener: the TLS files are not usable");
                            continue;
                        }
                        None => continue,
                    },
                }
            } else {
                None
            };
            glommio::spawn_local(async move {
                let stream = match tls {
                    None => PeerStream::Plain(stream),
                    Some(c) => {
                        let idle = Duration::from_millis(q.config.connections_max_idle_ms);
                        let accepting = futures_rustls::TlsAcceptor::from(c).accept(stream);
                        let timed = futures_lite::future::or(async { Some(accepting.await) }, async {
                            glommio::timer::sleep(idle).await;
                            None
                        });
                        match timed.await {
                            Some(Ok(s)) => PeerStream::TlsServer(Box::new(s)),
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "controller listener: TLS handshake failed");
                                return;
                            }
                            None => return,
                        }
                    }
                };
                q.serve_peer(shard, stream).await
            })
            .detach();
        }
    }

    async fn serve_peer(self: Rc<Self>, shard: Rc<Shard>, stream: PeerStream) {
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        let (tx, mut rx) = mpsc::unbounded::<Vec<u8>>();
        let writing = async move {
            while let Some(frame) = rx.next().await {
                if writer.write_all(&frame).await.is_err() {
                    return;
                }
            }
        };
        let reading = async {
            loop {
                let (kind, corr, payload) = match read_frame(&mut reader).await {
                    Ok(f) => f,
                    Err(_) => return,
                };
                match kind {
                    wire::KIND_RAFT => match ::raft::eraftpb::Message::parse_from_bytes(&payload) {
                        Ok(m) => {
                            if let Some(raft) = &self.raft {
                                raft.step(m);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "controller listener: a raft message that does not decode; closing");
                            return;
                        }
                    },
                    wire::KIND_REQUEST => {
                        let req = match wire::decode::<Request>(&payload) {
                            Ok(r) => r,
                            Err(e) => {
                                tracing::warn!(error = %e, "controller listener: a request that does not decode; closing");
                                return;
                            }
                        };
                        let q = self.clone();
                        let shard = shard.clone();
                        let tx = tx.clone();
                        glommio::spawn_local(async move {
                            let resp = q.handle(&shard, req).await;
                            let _ = tx.unbounded_send(wire::frame(
                                wire::KIND_RESPONSE,
                                corr,
                                &wire::encode(&resp),
                            ));
                        })
                        .detach();
                    }
                    _ => return,
                }
            }
        };
        futures_lite::future::or(reading, writing).await;
    }

    /// Answers one RPC, as the active controller (or NOT_CONTROLLER).
    async fn handle(&self, shard: &Rc<Shard>, req: Request) -> Response {
        if !self.is_leader() {
            let leader = self.leader_raft_id();
            return Response::NotController {
                leader: (leader != 0).then(|| node_of(leader)),
            };
        }
        let Some(ctl) = shard.controller.as_ref() else {
            return Response::NotController { leader: None };
        };
        match req {
            Request::Register {
                broker_id,
                incarnation_id,
                host,
                port,
                controller_host,
                controller_port,
                rack,
                unclean_shutdown,
                background_flush_default,
                listeners,
            } => {
                let reg = RegisterBrokerRecord {
                    broker_id,
                    broker_epoch: 0,
                    incarnation_id,
                    host,
                    port,
                    controller_host,
                    controller_port,
                    rack,
                    unclean_shutdown,
                    background_flush_default,
                    listeners,
                };
                match ctl.register_broker(self, reg).await {
                    Ok(broker_epoch) => Response::Registered { broker_epoch },
                    Err(e) => Response::Error(WireError::from(&e)),
                }
            }
            Request::Heartbeat {
                broker_id,
                broker_epoch,
                applied,
                shutting_down,
                replica_ends,
            } => match ctl
                .broker_heartbeat(
                    self,
                    broker_id,
                    broker_epoch,
                    applied,
                    shutting_down,
                    replica_ends,
                )
                .await
            {
                Ok(fenced) => Response::Heartbeat { fenced },
                Err(e) => Response::Error(WireError::from(&e)),
            },
            Request::CreateTopics {
                context,
                topics,
                validate_only,
            } => {
                let specs = topics.into_iter().map(Into::into).collect();
                let out = ctl
                    .create_topics(shard, specs, validate_only, context)
                    .await;
                Response::Topics {
                    results: out
                        .into_iter()
                        .map(|r| r.map(|m| created(&m)).map_err(|e| WireError::from(&e)))
                        .collect(),
                    applied: self.applied(),
                }
            }
            Request::DeleteTopics { context, names } => done(
                ctl.delete_topics(shard, names, context).await,
                self.applied(),
            ),
            Request::AlterConfigs {
                context,
                changes,
                validate_only,
            } => {
                let changes = changes.into_iter().map(Into::into).collect();
                done(
                    ctl.alter_topic_configs(shard, changes, validate_only, context)
                        .await,
                    self.applied(),
                )
            }
            Request::AlterClientQuotas {
                context,
                entries,
                validate_only,
            } => done(
                ctl.alter_client_quotas(shard, entries, validate_only, context)
                    .await,
                self.applied(),
            ),
            Request::QuorumStatus => Response::Quorum(self.local_report()),
            Request::FetchMetadata { from, max_bytes } => self.serve_fetch(ctl, from, max_bytes),
            Request::AllocateProducerIds => match ctl.allocate_producer_id_block().await {
                Ok((first, count)) => Response::ProducerIds { first, count },
                Err(e) => Response::Error(WireError::from(&e)),
            },
            Request::AlterPartition(change) => Response::Partition {
                result: ctl
                    .alter_isr(self, change)
                    .await
                    .map_err(|e| WireError::from(&e)),
                applied: self.applied(),
            },
            Request::ReplicaOffline(report) => Response::Partition {
                result: ctl
                    .replica_offline(self, report)
                    .await
                    .map_err(|e| WireError::from(&e)),
                applied: self.applied(),
            },
            Request::CreatePartitions {
                context,
                topics,
                validate_only,
            } => done(
                ctl.create_partitions(shard, topics, validate_only, context)
                    .await,
                self.applied(),
            ),
            Request::AlterReassignments { context, items } => done(
                ctl.alter_reassignments(items, context).await,
                self.applied(),
            ),
            Request::ElectLeaders {
                context,
                unclean,
                partitions,
            } => done(
                ctl.elect_leaders(unclean, partitions, context).await,
                self.applied(),
            ),
            Request::AlterScram { context, changes } => done(
                ctl.alter_scram_credentials(changes, context).await,
                self.applied(),
            ),
            Request::AlterAcls {
                context,
                create,
                remove,
            } => done(
                ctl.alter_acls(shard, create, remove, context).await,
                self.applied(),
            ),
            Request::ImportOneNode(req) => match ctl.import_one_node(self, req).await {
                Ok(results) => Response::Imported {
                    results: results
                        .into_iter()
                        .map(|(name, r)| (name, r.map_err(|e| WireError::from(&e))))
                        .collect(),
                    applied: self.applied(),
                },
                Err(e) => Response::Error(WireError::from(&e)),
            },
        }
    }

    /// Applies committed entries in order: durable in the store, then told to every shard.
    async fn apply_loop(
        self: Rc<Self>,
        shard: Rc<Shard>,
        mut committed: mpsc::UnboundedReceiver<Committed>,
    ) {
        let Some(ctl) = shard.controller.as_ref() else {
            return;
        };
        while let Some(c) = committed.next().await {
            let (index, term, applied) = match c {
                Committed::Entry { index, term, data } => {
                    let records = match crate::storage::metadata::store::decode_entry(&data) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(index, error = %e, "a committed metadata entry does not decode; it is skipped");
                            Vec::new()
                        }
                    };
                    (index, term, ctl.apply_committed(records, index).await)
                }
                Committed::Snapshot { index, term, data } => {
                    let applied = match crate::storage::metadata::store::decode_raft_snapshot(&data)
                    {
                        Ok((_, records)) => ctl.install_snapshot(records, index).await,
                        Err(e) => Err(KafkaError::Storage(e.to_string())),
                    };
                    tracing::info!(index, term, "metadata snapshot installed from the quorum");
                    (index, term, applied)
                }
            };
            let (old, new) = match applied {
                Ok(images) => images,
                Err(e) => {
                    // The store is poisoned: this node can no longer follow the metadata.
                    let why = format!("cannot apply the committed metadata: {e}");
                    tracing::error!("{why}");
                    *self.fatal.borrow_mut() = Some(why);
                    return;
                }
            };
            self.check_cluster_id(&new).await;
            publish(&shard, &old, &new).await;
            self.publish_view(&shard, &new).await;
            self.applied.set(index);
            self.applied_term.set(term);
            if let Some(raft) = &self.raft {
                raft.set_applied(index);
            }
            let ready: Vec<oneshot::Sender<()>> = {
                let mut waiters = self.applied_waiters.borrow_mut();
                let (done, wait): (Vec<_>, Vec<_>) =
                    waiters.drain(..).partition(|(i, _)| *i <= index);
                *waiters = wait;
                done.into_iter().map(|(_, tx)| tx).collect()
            };
            for tx in ready {
                let _ = tx.send(());
            }
        }
    }

    /// A node adopts the quorum's cluster id, or refuses to serve another cluster's.
    async fn check_cluster_id(&self, image: &MetadataImage) {
        let Some(id) = image.cluster_id() else {
            return;
        };
        let stored = self.stored_cluster_id.borrow().clone();
        match stored {
            Some(s) if s == id => {}
            Some(s) => {
                let why = format!(
                    "this node's data dir belongs to cluster {s}, but the quorum's cluster id is {id}: \
                     refusing to join; point --data-dir at this cluster's data or at an empty directory"
                );
                tracing::error!("{why}");
                *self.fatal.borrow_mut() = Some(why);
            }
            None => {
                let dir = self.config.data_dir.clone();
                let id2 = id.to_string();
                let written = glommio::executor()
                    .spawn_blocking(move || crate::storage::metadata::adopt_cluster_id(&dir, &id2))
                    .await;
                match written {
                    Ok(()) => {
                        tracing::info!(cluster_id = id, "joined the cluster");
                        *self.stored_cluster_id.borrow_mut() = Some(id.to_string());
                    }
                    Err(e) => tracing::error!(error = %e, "cannot write meta.properties"),
                }
            }
        }
    }

    /// Tells every shard the cluster view when it changed (brokers, controller, id).
    async fn publish_view(&self, shard: &Rc<Shard>, image: &MetadataImage) {
        let view = Arc::new(ClusterView {
            cluster_id: image.cluster_id().unwrap_or_default().to_string(),
            controller_id: node_of(self.leader_raft_id()),
            brokers: image
                .brokers()
                .values()
                .filter(|b| !b.fenced)
                .map(|b| BrokerEndpoint {
                    id: b.registration.broker_id,
                    host: b.registration.host.clone(),
                    port: b.registration.port,
                    rack: b.registration.rack.clone(),
                    epoch: b.registration.broker_epoch,
                    listeners: b
                        .registration
                        .listeners
                        .iter()
                        .map(|l| (l.name.clone(), l.host.clone(), l.port))
                        .collect(),
                })
                .collect(),
            serves_here: image
                .brokers()
                .get(&self.node_id)
                .is_some_and(|b| b.registration.incarnation_id == self.incarnation && !b.fenced),
        });
        if let Some(b) = image.brokers().get(&self.node_id)
            && b.registration.incarnation_id == self.incarnation
            && self.fenced.replace(b.fenced) != b.fenced
        {
            if b.fenced {
                tracing::warn!("this broker is fenced: clients are sent elsewhere");
            } else {
                tracing::info!("this broker is unfenced: serving");
            }
        }
        if *self.view.borrow() == view {
            return;
        }
        *self.view.borrow_mut() = view.clone();
        let calls = (0..shard.shards()).map(|to| shard.call(to, ClusterChanged(view.clone())));
        futures_util::future::join_all(calls).await;
    }

    /// This broker's side: register with the active controller, then heartbeat.
    async fn broker_loop(self: Rc<Self>, shard: Rc<Shard>) {
        let interval = Duration::from_millis(self.cfg.heartbeat_interval_ms);
        // Other brokers reach this one on its inter-broker listener; clients on the listener
        // of the name they came in on.
        let (host, port) = self
            .config
            .listeners
            .get(self.config.inter_broker_listener)
            .map_or_else(
                || self.config.advertised_listener.clone(),
                |l| l.advertised.clone(),
            );
        let listeners: Vec<ListenerEndpoint> = self
            .config
            .listeners
            .iter()
            .map(|l| ListenerEndpoint {
                name: l.name.clone(),
                host: l.advertised.0.clone(),
                port: l.advertised.1,
                security_protocol: l.protocol.name().to_string(),
            })
            .collect();
        let controller = self.cfg.controller_listen;
        loop {
            if self.stopping.get() {
                return;
            }
            if self.my_epoch.get() == 0 {
                let req = Request::Register {
                    broker_id: self.node_id,
                    incarnation_id: self.incarnation,
                    host: host.clone(),
                    port,
                    controller_host: controller.ip().to_string(),
                    controller_port: controller.port(),
                    rack: self.config.rack.clone(),
                    unclean_shutdown: self.config.recover_on_start,
                    background_flush_default: self.config.flush_ms.is_some()
                        || self.config.flush_messages.is_some(),
                    listeners: listeners.clone(),
                };
                match self.rpc(&req).await {
                    Some(Response::Registered { broker_epoch }) => {
                        tracing::info!(broker_epoch, "registered with the active controller");
                        self.my_epoch.set(broker_epoch);
                        continue;
                    }
                    Some(Response::Error(e)) => {
                        tracing::warn!(error = %e.message, "broker registration refused");
                    }
                    _ => {}
                }
            } else {
                let req = Request::Heartbeat {
                    broker_id: self.node_id,
                    broker_epoch: self.my_epoch.get(),
                    applied: self.applied.get(),
                    shutting_down: false,
                    replica_ends: replica_ends(&shard, self.node_id).await,
                };
                match self.rpc(&req).await {
                    // The fenced flag follows the applied metadata (publish_view).
                    Some(Response::Heartbeat { .. }) => {}
                    Some(Response::Error(e)) => {
                        tracing::warn!(error = %e.message, "heartbeat refused; registering again");
                        self.my_epoch.set(0);
                    }
                    _ => {}
                }
            }
            glommio::timer::sleep(interval).await;
        }
    }

    /// This broker's side of a one-node import (see `storage::metadata::import`): once
    /// registered, it sends the import list to the active controller until it is answered
    /// (an import sent twice is harmless: what is there already counts as imported), then
    /// marks the import done on disk. Refused topics are logged; their one-node data stays on
    /// disk untouched, under their partition directories.
    async fn import_loop(self: Rc<Self>, import: Arc<OneNodeImport>) {
        let retry = Duration::from_millis(self.cfg.heartbeat_interval_ms.max(100));
        let results = loop {
            if self.stopping.get() {
                return;
            }
            let epoch = self.my_epoch.get();
            if epoch == 0 {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let req = Request::ImportOneNode(wire::OneNodeImportRequest {
                broker_id: self.node_id,
                broker_epoch: epoch,
                topics: import.topics.clone(),
                next_producer_id: import.next_producer_id,
                client_quotas: import.client_quotas.clone(),
                acls: import.acls.clone(),
            });
            match self.rpc(&req).await {
                Some(Response::Imported { results, applied }) => {
                    self.wait_applied_for(applied).await;
                    break results;
                }
                Some(Response::Error(e)) => {
                    tracing::warn!(error = %e.message, "the import of the one-node broker's topics was not taken; trying again");
                }
                _ => {}
            }
            glommio::timer::sleep(retry).await;
        };
        let mut imported = 0usize;
        for (name, r) in &results {
            match r {
                Ok(()) => imported += 1,
                Err(e) => tracing::error!(
                    topic = %name,
                    "the one-node broker's topic {name} was not imported into the cluster: {}; its data is left untouched in its partition directories",
                    e.message
                ),
            }
        }
        let dir = self.config.data_dir.clone();
        let finished = glommio::executor()
            .spawn_blocking(move || crate::storage::metadata::import::finish(&dir))
            .await;
        match finished {
            Ok(kept) => tracing::info!(
                topics = imported,
                refused = results.len() - imported,
                kept = %kept.display(),
                "the one-node broker's topics are imported into the cluster; its metadata is kept for forensics"
            ),
            Err(e) => {
                tracing::error!(error = %e, "the import is committed, but its pending directory could not be marked done: the next start sends it again (harmlessly)");
                return;
            }
        }
        for (name, r) in &results {
            if r.is_ok() && crate::placement::is_coordinator_log(name) {
                let partitions = import
                    .topics
                    .iter()
                    .find(|t| &t.name == name)
                    .map_or(0, |t| t.partitions);
                tracing::warn!(
                    topic = %name,
                    "{name} was imported from a one-node broker with one replica per partition: raise its replication factor once the brokers are registered, partition by partition, with `spate topic reassign {name} --partition P --replicas {},B2,B3 --bootstrap-server HOST:PORT` for P in 0..{partitions}",
                    self.node_id
                );
            }
        }
    }

    /// The active controller's side of an observer's fetch: the committed entries from
    /// `from` on, or the metadata as a snapshot when they were compacted away.
    fn serve_fetch(
        &self,
        ctl: &super::controller::Controller,
        from: u64,
        max_bytes: u64,
    ) -> Response {
        let Some(raft) = &self.raft else {
            return Response::NotController { leader: None };
        };
        match raft.committed_entries(from, max_bytes.clamp(1 << 10, 16 << 20)) {
            Ok(entries) => Response::Entries {
                entries,
                snapshot: None,
            },
            Err(_) => match ctl.raft_snapshot() {
                Ok(snapshot) => Response::Entries {
                    entries: Vec::new(),
                    snapshot: Some(snapshot),
                },
                Err(e) => Response::Error(WireError {
                    code: KafkaError::NotController.code(),
                    message: e,
                }),
            },
        }
    }

    /// An observer (a broker that is not a voter) follows the committed metadata: it fetches
    /// entries after its applied index from the active controller (asking the voters in turn
    /// until one names it) and hands them to the apply loop, as a voter's Raft would.
    async fn observer_loop(self: Rc<Self>, tx: mpsc::UnboundedSender<Committed>) {
        let voters: Vec<i32> = self.cfg.voters.iter().map(|(id, _)| *id).collect();
        let mut next_voter = 0usize;
        // The index asked for next: entries handed to the apply loop but not yet applied are
        // not asked for again.
        let mut from = self.applied.get() + 1;
        let idle = Duration::from_millis(100);
        let timeout = Duration::from_millis(self.cfg.fetch_timeout_ms.max(100));
        while !self.stopping.get() {
            let target = match self.observed_leader.get() {
                0 => {
                    next_voter = (next_voter + 1) % voters.len().max(1);
                    voters.get(next_voter).copied().unwrap_or(0)
                }
                leader => node_of(leader),
            };
            let req = Request::FetchMetadata {
                from,
                max_bytes: 1 << 20,
            };
            match self.peers.call(target, &req, timeout).await {
                Ok(Response::Entries { entries, snapshot }) => {
                    self.observed_leader.set(raft_id(target));
                    let got = !entries.is_empty() || snapshot.is_some();
                    if let Some((index, term, data)) = snapshot {
                        from = index + 1;
                        let _ = tx.unbounded_send(Committed::Snapshot { index, term, data });
                    }
                    for (index, term, data) in entries {
                        if index >= from {
                            from = index + 1;
                            let _ = tx.unbounded_send(Committed::Entry { index, term, data });
                        }
                    }
                    if !got {
                        glommio::timer::sleep(idle).await;
                    }
                }
                Ok(Response::NotController { leader }) => {
                    self.observed_leader.set(leader.map_or(0, raft_id));
                    if leader.is_none() {
                        glommio::timer::sleep(idle).await;
                    }
                }
                _ => {
                    self.observed_leader.set(0);
                    glommio::timer::sleep(idle).await;
                }
            }
        }
    }

    /// One RPC to the active controller, which may be this node.
    ///
    /// A call to a controller that is cut off (a partition: no reset, no answer) would wait the
    /// whole RPC timeout, far longer than the broker session: a broker's heartbeat in flight to
    /// the old controller kept it from heartbeating to the new one, which fenced it. So the call
    /// is given up as soon as the Raft role, leader or term changes (the next try goes to the
    /// new controller; registration and heartbeats are safe to send again).
    async fn rpc(self: &Rc<Self>, req: &Request) -> Option<Response> {
        // Registered before the leader is read, so no change in between is missed.
        let changed: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> = match &self.raft {
            Some(raft) => Box::pin(raft.changed()),
            None => Box::pin(futures_lite::future::pending()),
        };
        let leader = self.leader_raft_id();
        if leader == 0 {
            return None;
        }
        let leader = node_of(leader);
        if leader == self.node_id {
            let shard = self.shard.upgrade()?;
            return Some(self.handle(&shard, req.clone()).await);
        }
        // A heartbeat that waits longer than half a session is worth less than the next one.
        let timeout = Duration::from_millis((self.cfg.session_timeout_ms / 2).max(100));
        futures_lite::future::or(
            async { self.peers.call(leader, req, timeout).await.ok() },
            async {
                changed.await;
                None
            },
        )
        .await
    }
}

fn created(m: &crate::storage::catalog::TopicMeta) -> wire::CreatedTopic {
    wire::CreatedTopic {
        name: m.name.clone(),
        topic_id: m.topic_id,
        partitions: m.partitions,
        replication_factor: m
            .partition(0)
            .map_or(1, |a| i16::try_from(a.replicas.len()).unwrap_or(1)),
        configs: m.configs.clone(),
    }
}

fn done(out: Vec<Result<(), KafkaError>>, applied: u64) -> Response {
    Response::Done {
        results: out
            .into_iter()
            .map(|r| r.map_err(|e| WireError::from(&e)))
            .collect(),
        applied,
    }
}

/// Tells every shard what an applied entry changed in the topics.
async fn publish(shard: &Rc<Shard>, old: &MetadataImage, new: &MetadataImage) {
    let old_topics: HashMap<Uuid, _> = old.topics().map(|t| (t.topic_id, t)).collect();
    let new_topics: HashMap<Uuid, _> = new.topics().map(|t| (t.topic_id, t)).collect();
    for (id, t) in &old_topics {
        if !new_topics.contains_key(id) {
            let name = t.name.clone();
            broadcast(shard, || TopicDeleted(name.clone())).await;
        }
    }
    for (id, t) in &new_topics {
        let Some(meta) = new.topic_meta(&t.name) else {
            continue;
        };
        match old_topics.get(id) {
            None => broadcast(shard, || TopicCreated(meta.clone())).await,
            Some(_) => {
                if old.topic_meta(&t.name).as_ref() != Some(&meta) {
                    broadcast(shard, || TopicChanged(meta.clone())).await;
                }
            }
        }
    }
    if old.client_quotas() != new.client_quotas() {
        let table = Arc::new(crate::quota::QuotaTable::from_records(new.client_quotas()));
        broadcast(shard, || crate::shard::calls::QuotasChanged(table.clone())).await;
    }
    if old.acls() != new.acls() {
        let table = Arc::new(crate::shard::acl::AclTable::from_records(new.acls()));
        broadcast(shard, || crate::shard::calls::AclsChanged(table.clone())).await;
    }
}

async fn broadcast<C: crate::shard::calls::Call<Reply = Result<(), KafkaError>>>(
    shard: &Rc<Shard>,
    make: impl Fn() -> C,
) {
    let calls = (0..shard.shards()).map(|to| shard.call(to, make()));
    for (to, reply) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        match reply {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(shard = to, error = %e, "a shard could not apply a metadata change")
            }
            Err(_) => {}
        }
    }
}

/// The first record a new cluster's controller writes.
pub fn cluster_id_record(pinned: Option<&str>) -> MetadataRecord {
    let id = pinned.map_or_else(|| Uuid::new_v4().simple().to_string(), str::to_string);
    MetadataRecord::ClusterId(ClusterIdRecord { cluster_id: id })
}

/// A fence or unfence record for `broker`'s registration `epoch`.
pub fn fence_record(broker: i32, epoch: i64, fenced: bool) -> MetadataRecord {
    MetadataRecord::BrokerFence(BrokerFenceRecord {
        broker_id: broker,
        broker_epoch: epoch,
        fenced,
    })
}

/// This broker's replicas of the partitions awaiting unclean-shutdown recovery, with their
/// log ends, for the next heartbeat (see `election::recovery_records`). Empty nearly always.
async fn replica_ends(shard: &Rc<Shard>, node_id: i32) -> Vec<wire::ReplicaEnd> {
    let Some(ctl) = shard.controller.as_ref() else {
        return Vec::new();
    };
    let wanted = ctl.awaiting_recovery_on(node_id);
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut by_shard: BTreeMap<usize, Vec<(uuid::Uuid, String, i32)>> = BTreeMap::new();
    for w in wanted {
        by_shard.entry(shard.owner(&w.1, w.2)).or_default().push(w);
    }
    let mut out = Vec::new();
    for (to, items) in by_shard {
        let asked = items.iter().map(|(_, t, p)| (t.clone(), *p)).collect();
        let Ok(ends) = shard.call(to, super::calls::ReplicaEnds(asked)).await else {
            continue;
        };
        for ((topic_id, _, partition), end) in items.into_iter().zip(ends) {
            if let Some((last_epoch, log_end)) = end {
                out.push(wire::ReplicaEnd {
                    topic_id,
                    partition,
                    last_epoch,
                    log_end,
                });
            }
        }
    }
    out
}
