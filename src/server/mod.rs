//! Start-up and shutdown of the shards, the listener and the connections.
//!
//! Start-up, per shard thread (one glommio `LocalExecutor` pinned to its CPU):
//! 1. bind the listen address with SO_REUSEPORT (every shard accepts; the kernel spreads
//!    connections by their 4-tuple, so no shard hands sockets to another), and open the logs
//!    of the partitions this shard owns;
//! 2. meet the other shards at a start-up gate: if any shard failed step 1, all stop;
//! 3. join the channel mesh and learn each shard's mesh index (a second gate);
//! 4. serve: one receive task per peer, one accept loop, one task per connection.
//!
//! Shutdown: the signal thread sets [`STOP`]; each shard's ticker sees it, stops accepting,
//! waits (bounded) until no request of its own is in flight, then waits until every shard has
//! drained (so nobody leaves while a peer may still call it), and returns.

pub mod connection;
pub mod handlers;
pub mod metrics_http;
pub mod sasl;
pub mod transport;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::log_limit::LogKind;
use crate::router::{Envelope, Router};
use crate::shard::Shard;
use crate::shard::calls::ShardMessage;
use crate::storage::catalog::CatalogData;
use crate::storage::metadata::MetadataStore;

/// Set once by the signal handling thread; read by every shard's ticker.
pub static STOP: AtomicBool = AtomicBool::new(false);
/// Set when a flush at shutdown failed: then the stop is not clean and the next start recovers.
pub static FLUSH_FAILED: AtomicBool = AtomicBool::new(false);
/// Client connections open on the whole broker (checked against `connections_max`).
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// Shards that finished draining their connections.
static DRAINED: AtomicUsize = AtomicUsize::new(0);

/// Threads of each shard's blocking pool (fdatasync, unlink).
const BLOCKING_THREADS: usize = 4;
/// How often a shard looks at [`STOP`].
const STOP_POLL_MS: u64 = 50;
/// How often the background flusher looks for partitions due a flush (`flush.ms`,
/// `flush.messages`).
const FLUSH_TICK_MS: u64 = 10;
/// How often each shard expires committed offsets of long-empty groups (Kafka's
/// offsets.retention.check.interval.ms).
const OFFSETS_EXPIRY_CHECK_MS: u64 = 600_000;
/// Where each shard keeps its consumer groups' committed offsets: `<data_dir>/__groups/shard-N`.
/// A topic name cannot contain '/', so this never collides with a partition directory.
pub const GROUPS_DIR: &str = "__groups";
/// Connections a shard must have closed since its peak before it hands freed heap memory back
/// to the kernel (see [`give_back_freed_memory`]).
const TRIM_AFTER_CLOSED_CONNECTIONS: u64 = 64;
/// How long a stopping shard waits for in-flight requests.
const DRAIN_MS_MAX: u64 = 10_000;

/// `--sasl-users-file`: on the first start (no SCRAM credential in the metadata yet), every
/// user of the file gets SCRAM-SHA-256 and SCRAM-SHA-512 credentials with 4096 iterations,
/// through the controller as AlterUserScramCredentials would (forwarded to the active
/// controller in a cluster, retried while there is none); once credentials exist the file is
/// ignored with a WARN. Passwords are read here and never kept or logged.
async fn create_first_users(shard: &Rc<Shard>, path: &std::path::Path) {
    use crate::auth::scram::{ITERATIONS_MIN, Mechanism};
    use crate::shard::calls::{AlterScram, ScramCredentials};
    shard.until_serving().await;
    let users = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| crate::auth::scram::parse_users_file(&t))
    {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "--sasl-users-file cannot be read: no users created");
            return;
        }
    };
    for attempt in 0..120 {
        if attempt > 0 {
            glommio::timer::sleep(Duration::from_millis(500)).await;
        }
        let Ok(existing) = shard
            .call(crate::placement::CONTROLLER_SHARD, ScramCredentials)
            .await
        else {
            return;
        };
        if !existing.is_empty() {
            if attempt == 0 {
                tracing::warn!(file = %path.display(), "--sasl-users-file ignored: SCRAM credentials exist already (it is read on the first start only; manage users with `spate user`)");
            }
            return;
        }
        let mut changes = Vec::new();
        for (name, password) in &users {
            for m in [Mechanism::Sha256, Mechanism::Sha512] {
                let mut salt = vec![0u8; 32];
                if let Err(e) = getrandom::getrandom(&mut salt) {
                    tracing::error!(error = %e, "no randomness for a SCRAM salt: no users created");
                    return;
                }
                let salted = m.salted_password(password.as_bytes(), &salt, ITERATIONS_MIN);
                changes.push(crate::cluster::wire::ScramChange {
                    user: name.clone(),
                    mechanism: m.id(),
                    upsert: Some((ITERATIONS_MIN as i32, salt, salted)),
                });
            }
        }
        let n = changes.len();
        let results = shard
            .call(
                crate::placement::CONTROLLER_SHARD,
                AlterScram {
                    changes,
                    context: Default::default(),
                },
            )
            .await
            .unwrap_or_else(|_| vec![Err(crate::error::KafkaError::NotController); n]);
        match results.iter().find_map(|r| r.as_ref().err()) {
            None => {
                tracing::info!(file = %path.display(), users = users.len(), "SCRAM users created from --sasl-users-file");
                return;
            }
            Some(e) => {
                tracing::warn!(file = %path.display(), error = %e, "creating the users of --sasl-users-file failed; retrying");
            }
        }
    }
    tracing::error!(file = %path.display(), "the users of --sasl-users-file could not be created");
}

/// How often each shard reads the dynamic broker configs from the controller (a change
/// takes effect within this).
const DYNAMIC_CONFIGS_POLL_MS: u64 = 500;

/// A start-up rendezvous of all shards (start-up only; never on the data path).
struct Gate<T> {
    slots: Mutex<Vec<Option<T>>>,
    all_in: Condvar,
}

impl<T: Clone> Gate<T> {
    fn new(n: usize) -> Gate<T> {
        Gate {
            slots: Mutex::new(vec![None; n]),
            all_in: Condvar::new(),
        }
    }

    /// Puts this shard's value and blocks until every shard has; returns all values.
    fn meet(&self, shard: usize, value: T) -> Vec<T> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots[shard] = Some(value);
        self.all_in.notify_all();
        while slots.iter().any(Option::is_none) {
            slots = self.all_in.wait(slots).unwrap_or_else(|e| e.into_inner());
        }
        slots.iter().flatten().cloned().collect()
    }
}

/// Runs the broker until a stop signal; returns an error if any shard failed to start.
/// `catalog` is every shard's starting view; `store` goes to the controller's shard.
pub fn run(config: Config, catalog: CatalogData, store: MetadataStore) -> anyhow::Result<()> {
    let n = config.shards;
    let mesh: MeshBuilder<Envelope<ShardMessage>, _> =
        MeshBuilder::full(n, config.router_channel_len);
    let ready: Arc<Gate<Result<(), String>>> = Arc::new(Gate::new(n));
    let peers: Arc<Gate<usize>> = Arc::new(Gate::new(n));
    let mut threads = Vec::with_capacity(n);
    // Every shard starts with the client quotas the metadata holds.
    let quotas = crate::quota::QuotaTable::from_records(store.image().client_quotas());
    // And with its ACLs.
    let acls = crate::shard::acl::AclTable::from_records(store.image().acls());
    let mut store = Some(store);
    for shard_id in 0..n {
        let config = config.clone();
        let catalog = catalog.clone();
        let quotas = quotas.clone();
        let acls = acls.clone();
        let store = if shard_id == crate::placement::CONTROLLER_SHARD {
            store.take()
        } else {
            None
        };
        let mesh = mesh.clone();
        let ready = ready.clone();
        let peers = peers.clone();
        let handle = std::thread::Builder::new()
            .name(format!("spate-shard-{shard_id}"))
            .spawn(move || {
                let builder =
                    LocalExecutorBuilder::new(Placement::Fixed(config.shard_cpus[shard_id]))
                        .name(&format!("shard-{shard_id}"))
                        .io_memory(config.io_memory_bytes)
                        // fdatasync and unlink run on the blocking pool. glommio gives a pinned
                        // executor one blocking thread on its own core, which serialises the
                        // syncs of all the shard's partitions; a few unpinned threads let them
                        // overlap (they wait in the kernel, not on a core).
                        .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(
                            BLOCKING_THREADS,
                        ));
                let executor = match builder.make() {
                    Ok(e) => e,
                    Err(e) => {
                        let msg = crate::startup::explain_executor_error(&e.to_string());
                        ready.meet(shard_id, Err(msg.clone()));
                        return Err(msg);
                    }
                };
                executor.run(shard_main(
                    shard_id,
                    config,
                    (catalog, quotas, acls),
                    store,
                    mesh,
                    ready,
                    peers,
                ))
            })?;
        threads.push(handle);
    }
    let mut first_error = None;
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert_with(|| "a shard thread panicked".to_string());
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(anyhow::anyhow!(e)),
    }
}

async fn shard_main(
    shard_id: usize,
    config: Config,
    (catalog, quotas, acls): (
        CatalogData,
        crate::quota::QuotaTable,
        crate::shard::acl::AclTable,
    ),
    store: Option<MetadataStore>,
    mesh: MeshBuilder<Envelope<ShardMessage>, glommio::channels::channel_mesh::Full>,
    ready: Arc<Gate<Result<(), String>>>,
    peers: Arc<Gate<usize>>,
) -> Result<(), String> {
    let config = Rc::new(config);
    // Before any log opens: sealed segments' descriptors on this shard stay within the limit.
    crate::storage::segment::sealed::set_fds_max(config.segment_fds_max);
    // Step 1: listeners and logs.
    let listeners: Result<Vec<TcpListener>, String> = config
        .listeners
        .iter()
        .map(|l| {
            TcpListener::bind(l.addr).map_err(|e| {
                format!(
                    "shard {shard_id}: cannot listen on {} (listener {}): {e}",
                    l.addr, l.name
                )
            })
        })
        .collect();
    let mut step1 = listeners.as_ref().map(|_| ()).map_err(Clone::clone);
    // Step 2: gate.
    let outcomes = ready.meet(shard_id, step1.clone());
    if let Some(e) = outcomes.iter().find_map(|r| r.as_ref().err()) {
        return Err(if step1.is_err() {
            step1.err().unwrap_or_default()
        } else {
            format!("another shard failed: {e}")
        });
    }
    // Step 3: mesh.
    let (senders, mut receivers) = mesh
        .join()
        .await
        .map_err(|e| format!("shard {shard_id}: channel mesh join failed: {e}"))?;
    let peer_of = peers.meet(shard_id, senders.peer_id());
    let router = Router::new(shard_id, senders, peer_of);
    let group_config = crate::group::state::GroupConfig {
        min_session_timeout_ms: config.group_min_session_timeout_ms,
        max_session_timeout_ms: config.group_max_session_timeout_ms,
        initial_rebalance_delay_ms: i32::try_from(config.group_initial_rebalance_delay_ms)
            .unwrap_or(i32::MAX),
        ..Default::default()
    };
    // The coordinators' logs are this shard's partitions of `__consumer_offsets` and
    // `__transaction_state`, reached through `coordinator_logs` once the shard exists.
    let coordinator_logs = Rc::new(crate::shard::coordinator_logs::ShardLogs::new());
    let groups = crate::group::coordinator::GroupCoordinator::new(
        shard_id,
        config.offsets_topic_num_partitions,
        coordinator_logs.clone(),
        group_config,
        crate::group::consumer::ConsumerGroupConfig {
            heartbeat_interval_ms: config.group_consumer_heartbeat_interval_ms,
            session_timeout_ms: config.group_consumer_session_timeout_ms,
            assignor: crate::group::consumer::Assignor::parse(&config.group_remote_assignor)
                .unwrap_or(crate::group::consumer::Assignor::Uniform),
            max_size: usize::try_from(config.group_consumer_max_size).unwrap_or(usize::MAX),
        },
        i64::try_from(config.offsets_retention_ms).unwrap_or(i64::MAX),
    );
    let txns = crate::txn::store::TxnLog::new(
        config.transaction_state_log_num_partitions,
        coordinator_logs.clone(),
    );
    let shard = Rc::new(Shard::new(
        shard_id,
        config.clone(),
        catalog.cluster_id.clone(),
        catalog.topics.clone(),
        router,
        groups,
        txns,
    ));
    coordinator_logs.attach(&shard);
    shard.set_quotas(quotas);
    shard.set_acls(acls);
    if let (Some(controller), Some(store)) = (&shard.controller, store) {
        controller.set_default_replication_factor(config.default_replication_factor);
        let applied = store.raft_applied();
        controller.install(store);
        if let Some(cluster) = &config.cluster {
            let stored = Some(catalog.cluster_id.clone()).filter(|id| !id.is_empty());
            match crate::shard::quorum::Quorum::start(&shard, cluster.clone(), stored, applied) {
                Ok(q) => controller.set_quorum(q),
                Err(e) => {
                    tracing::error!("{e}");
                    STOP.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
    }
    let started = Instant::now();
    let mut recovered = crate::storage::segment::Recovered::default();
    shard.load_high_watermarks();
    // One node: the coordinators' partitions open and load before anything serves.
    match shard.open_coordinator_partitions(config.recover_on_start) {
        Ok(r) => {
            recovered.records += r.records;
            recovered.bytes += r.bytes;
            recovered.truncated_bytes += r.truncated_bytes;
        }
        Err(e) => {
            let e = format!(
                "shard {shard_id}: cannot open its partitions of __consumer_offsets or __transaction_state in {}: {e}",
                config.data_dir.display()
            );
            tracing::error!("{e}");
            STOP.store(true, Ordering::SeqCst);
            return Err(e);
        }
    }
    for topic in &catalog.topics {
        match shard.open_owned_partitions(topic, config.recover_on_start, true) {
            Ok(r) => {
                recovered.records += r.records;
                recovered.bytes += r.bytes;
                recovered.truncated_bytes += r.truncated_bytes;
            }
            Err(e) => {
                step1 = Err(format!(
                    "shard {shard_id}: cannot open the log of topic {}: {e}",
                    topic.name
                ));
                break;
            }
        }
    }
    if step1.is_ok() {
        for topic in &catalog.topics {
            shard.assign_partitions_of(&topic.name);
        }
        shard.remove_stray_replicas(&catalog.topics).await;
    }
    if config.recover_on_start && step1.is_ok() {
        tracing::info!(
            shard = shard_id,
            records = recovered.records,
            bytes = recovered.bytes,
            truncated_bytes = recovered.truncated_bytes,
            seconds = started.elapsed().as_secs_f64(),
            "recovery scan done"
        );
    }
    // Opening logs can fail after the gate; then this shard stops the broker.
    if let Err(e) = step1 {
        tracing::error!("{e}");
        STOP.store(true, Ordering::SeqCst);
        return Err(e);
    }
    // Step 4: serve.
    for (_, stream) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(env) = stream.recv().await {
                match env {
                    // A produce is queued here, before the next message is taken, so
                    // partitions append in the order the sending shard sent (the channel is
                    // FIFO); the rest runs in its own task.
                    Envelope::Request {
                        id,
                        from,
                        msg: ShardMessage::Produce(call),
                    } => {
                        let queued = shard.enqueue_produce(call.0);
                        let shard = shard.clone();
                        glommio::spawn_local(async move {
                            let rep = queued.wait().await;
                            shard.router.reply(from, id, Box::new(rep)).await;
                        })
                        .detach();
                    }
                    Envelope::Request { id, from, msg } => {
                        let shard = shard.clone();
                        glommio::spawn_local(async move {
                            let rep = msg.run(shard.clone()).await;
                            shard.router.reply(from, id, rep).await;
                        })
                        .detach();
                    }
                    Envelope::Reply { id, rep } => shard.router.complete(id, rep),
                }
            }
        })
        .detach();
    }
    let listeners = listeners?;
    // Each shard builds its own TLS configuration (checked at start-up, so this succeeds
    // unless the files changed since).
    let tls = match &config.tls_files {
        Some(files) if config.listeners.iter().any(|l| l.protocol.tls()) => {
            Some(crate::tls::server_config(files).map_err(|e| format!("shard {shard_id}: {e}"))?)
        }
        _ => None,
    };
    let tls_generation = crate::tls::RELOAD_GENERATION.load(Ordering::SeqCst);
    let conns = Rc::new(connection::ShardConns::new(
        Duration::from_millis(crate::log_limit::LOG_INTERVAL_MS),
        tls,
    ));
    conns.tls_generation.set(tls_generation);
    let accepts: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(index, listener)| {
        let shard = shard.clone();
        let conns = conns.clone();
        glommio::spawn_local(async move {
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        if shard.stopping.get() {
                            continue;
                        }
                        // The limit is broker-wide, so the count is one atomic shared by the
                        // accept loops (accepting is not the data path).
                        if CONNECTIONS.fetch_add(1, Ordering::SeqCst)
                            >= shard.config.connections_max
                        {
                            CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
                            // A client reconnecting in a loop would write a line per try.
                            if let Some(held_back) =
                                conns.log.allow(LogKind::Refused, Instant::now())
                            {
                                tracing::warn!(
                                    shard = shard.id,
                                    connections_max = shard.config.connections_max,
                                    held_back,
                                    "connection refused: the broker holds connections_max connections"
                                );
                            }
                            drop(stream);
                            continue;
                        }
                        let _ = stream.set_nodelay(true);
                        let shard = shard.clone();
                        let conns = conns.clone();
                        glommio::spawn_local(async move {
                            connection::serve(shard, conns, stream, index).await;
                            CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
                        })
                        .detach();
                    }
                    Err(e) => {
                        // Out of descriptors, for one: clients can cause it by connecting.
                        if let Some(held_back) =
                            conns.log.allow(LogKind::AcceptFailed, Instant::now())
                        {
                            tracing::warn!(shard = shard.id, error = %e, held_back, "accept failed");
                        }
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
        })
        .collect();
    let flusher = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(FLUSH_TICK_MS)).await;
                shard.flush_due().await;
            }
        })
    };
    let retention = {
        let shard = shard.clone();
        let every = Duration::from_millis(config.retention_check_ms.max(1));
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(every).await;
                shard.apply_retention().await;
            }
        })
    };
    let cleaner = {
        let shard = shard.clone();
        let every = Duration::from_millis(config.log_cleaner_backoff_ms.max(1));
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(every).await;
                shard.run_cleaner().await;
            }
        })
    };
    // Replication: followers that fell behind leave the ISR, and the high watermarks are
    // checkpointed.
    let replication = config.cluster.is_some().then(|| {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(
                    crate::shard::replica::REPLICA_TICK_MS,
                ))
                .await;
                shard.shrink_isrs();
                shard.report_offline_replicas();
                shard.checkpoint_high_watermarks(false).await;
            }
        })
    });
    // Dynamic broker configs (throttle rates, topic defaults) take effect within a second.
    let dynamic_configs = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                if let Ok((own, default)) = shard
                    .call(
                        crate::placement::CONTROLLER_SHARD,
                        crate::shard::calls::DynamicBrokerConfigs,
                    )
                    .await
                {
                    shard.apply_dynamic_configs(own, default);
                }
                glommio::timer::sleep(Duration::from_millis(DYNAMIC_CONFIGS_POLL_MS)).await;
            }
        })
    };
    let metrics_server = match (shard_id, config.metrics_listen) {
        (0, Some(addr)) => match TcpListener::bind(addr) {
            Ok(l) => {
                tracing::info!(listen = %addr, "metrics endpoint ready (GET /metrics)");
                Some(glommio::spawn_local(metrics_http::serve(shard.clone(), l)))
            }
            Err(e) => {
                let e = format!("cannot listen for metrics on {addr}: {e}");
                tracing::error!("{e}");
                STOP.store(true, Ordering::SeqCst);
                None
            }
        },
        _ => None,
    };
    let group_ticker = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let mut last_expiry = Instant::now();
            loop {
                glommio::timer::sleep(Duration::from_millis(
                    crate::group::coordinator::GROUP_TICK_MS,
                ))
                .await;
                shard.groups.tick();
                shard.groups.tick_consumer_groups().await;
                if last_expiry.elapsed() >= Duration::from_millis(OFFSETS_EXPIRY_CHECK_MS) {
                    last_expiry = Instant::now();
                    shard.groups.expire_offsets().await;
                }
            }
        })
    };
    // Transactions left in a Prepare state by the last stop are completed, then open ones are
    // aborted once past their timeout.
    let txn_ticker = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            shard.txn_recover();
            loop {
                glommio::timer::sleep(Duration::from_millis(crate::shard::txn::TXN_TICK_MS)).await;
                shard.txn_expire();
            }
        })
    };
    if shard_id == 0 {
        tracing::info!(listen = %config.listen, shards = config.shards, data_dir = %config.data_dir.display(), "broker ready");
        if let Some(path) = config.sasl_users_file.clone() {
            let shard = shard.clone();
            glommio::spawn_local(async move { create_first_users(&shard, &path).await }).detach();
        }
    }
    let (mut connections_peak, mut connections_before) = (0, 0);
    let quorum = shard.controller.as_ref().and_then(|c| c.quorum());
    let mut fatal = None;
    while !STOP.load(Ordering::SeqCst) {
        glommio::timer::sleep(Duration::from_millis(STOP_POLL_MS)).await;
        if let Some(why) = quorum.as_ref().and_then(|q| q.fatal.borrow().clone()) {
            tracing::error!("stopping: {why}");
            STOP.store(true, Ordering::SeqCst);
            fatal = Some(why);
        }
        // SIGHUP: new TLS connections use the certificate, key and client CA as the files now
        // hold them; open connections keep theirs.
        let generation = crate::tls::RELOAD_GENERATION.load(Ordering::SeqCst);
        if generation != conns.tls_generation.get() {
            conns.tls_generation.set(generation);
            reload_tls(&shard, &conns).await;
        }
        // Reports bursts of rate-limited lines that have stopped.
        conns.log.flush(Instant::now());
        shard.log.flush(Instant::now());
        // Once many connections have closed and the count has settled, the memory they
        // freed goes back to the kernel.
        let open = shard.stats.connections.get();
        connections_peak = connections_peak.max(open);
        if connections_peak - open >= TRIM_AFTER_CLOSED_CONNECTIONS && open == connections_before {
            connections_peak = open;
            give_back_freed_memory();
        }
        connections_before = open;
    }
    // Shutdown: stop accepting, let in-flight requests finish, then wait for every shard.
    shard.stopping.set(true);
    if let Some(q) = &quorum {
        // The controller fences this broker now, so clients move on at once (bounded: it
        // does not wait for a quorum that is not there).
        q.shutdown().await;
    }
    shard.wake_all_fetches();
    // Parked JoinGroup/SyncGroup requests answer NOT_COORDINATOR now, so they do not hold
    // the drain; the clients find the coordinator again after the restart.
    shard.groups.unload();
    for accept in accepts {
        let _ = accept.cancel().await;
    }
    let drain_deadline = Instant::now() + Duration::from_millis(DRAIN_MS_MAX);
    while shard.stats.busy.get() > 0 && Instant::now() < drain_deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    let _ = flusher.cancel().await;
    let _ = retention.cancel().await;
    let _ = cleaner.cancel().await;
    let _ = group_ticker.cancel().await;
    let _ = dynamic_configs.cancel().await;
    let _ = txn_ticker.cancel().await;
    if let Some(r) = replication {
        let _ = r.cancel().await;
    }
    shard.stop_fetchers();
    if let Some(m) = metrics_server {
        let _ = m.cancel().await;
    }
    if shard.flush_all().await {
        shard.snapshot_all_producers().await;
        if config.cluster.is_some() {
            shard.checkpoint_high_watermarks(true).await;
        }
    } else {
        FLUSH_FAILED.store(true, Ordering::SeqCst);
    }
    DRAINED.fetch_add(1, Ordering::SeqCst);
    while DRAINED.load(Ordering::SeqCst) < config.shards
        && Instant::now() < drain_deadline + Duration::from_secs(1)
    {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!(
        shard = shard_id,
        bytes_in = shard.stats.bytes_in.get(),
        bytes_out_zero_copy = shard.stats.bytes_out_zero_copy.get(),
        bytes_out_copied = shard.stats.bytes_out_copied.get(),
        bytes_out_warmed = shard.stats.bytes_out_warmed.get(),
        fetch_socket_full = shard.stats.fetch_socket_full.get(),
        "shard stopped"
    );
    // A node that cannot be part of its cluster exits with an error, so a supervisor and
    // the operator see it.
    match fatal {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Hands the heap's free pages back to the kernel. The allocator keeps what closed
/// connections freed for reuse, so after a burst of connections the broker's RSS would stay
/// at the burst's peak for good. Called only after many connections closed (a few times per
/// burst, never per request); it walks the allocator's free lists, which takes well under a
/// millisecond for a heap of tens of MiB.
fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas; it takes
    // no pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Rebuilds this shard's TLS configuration from the files (on the blocking pool: it reads
/// them). A reload that fails keeps the configuration in use.
async fn reload_tls(shard: &Rc<Shard>, conns: &Rc<connection::ShardConns>) {
    let Some(files) = shard.config.tls_files.clone() else {
        return;
    };
    if !shard.config.listeners.iter().any(|l| l.protocol.tls()) {
        return;
    }
    let loaded = glommio::executor()
        .spawn_blocking(move || crate::tls::server_config(&files))
        .await;
    match loaded {
        Ok(config) => {
            conns.set_tls(config);
            tracing::info!(
                shard = shard.id,
                "TLS certificate, key and client CA reloaded"
            );
        }
        Err(e) => tracing::error!(
            shard = shard.id,
            error = %e,
            "TLS reload failed: new connections keep the certificate loaded before"
        ),
    }
}
