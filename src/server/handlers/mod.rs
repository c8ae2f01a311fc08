//! One file per Kafka API. Each handler takes the decoded request and returns the encoded
//! response as chunks (or none: Produce with acks=0 is not answered).

mod acls;
mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod alter_client_quotas;
mod alter_configs;
mod alter_partition_reassignments;
mod alter_user_scram_credentials;
mod api_versions;
mod consumer_group_describe;
mod consumer_group_heartbeat;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_client_quotas;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_producers;
mod describe_quorum;
mod describe_topic_partitions;
mod describe_transactions;
mod describe_user_scram_credentials;
mod elect_leaders;
mod end_txn;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_partition_reassignments;
mod list_transactions;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sasl_handshake;
mod sync_group;
mod txn_offset_commit;
mod write_txn_markers;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, TopicName};
use kafka_protocol::protocol::StrBytes;

pub(crate) use crate::auth::acl::{Operation, ResourceType};
use crate::error::KafkaError;
use crate::protocol::fetch::Chunk;
use crate::protocol::{Request, encode_response};
use crate::router::RouterError;
use crate::shard::Shard;
use crate::shard::calls::{Answers, Call};

pub use api_versions::unsupported_version_response;

/// Who sent a request, as group members are described.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub client_id: String,
    /// "/IP", as Kafka reports client hosts.
    pub host: String,
}

/// An authenticated identity, as Kafka writes it (`User:alice`). Every connection has one once
/// it is past authentication; a PLAINTEXT listener's connections are `User:ANONYMOUS` from the
/// start, as in Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub kind: String,
    pub name: String,
}

impl Principal {
    pub fn anonymous() -> Principal {
        Principal {
            kind: "User".into(),
            name: "ANONYMOUS".into(),
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// Everything a handler knows about a request besides its body: one shape for every API.
///
/// Lives on: the shard whose connection read the request, for the request's lifetime.
pub struct RequestContext {
    pub shard: Rc<Shard>,
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client: ClientInfo,
    /// The client's address, as the socket reported it.
    pub client_addr: String,
    /// Who sent the request; authorization decisions are made on it.
    pub principal: Principal,
    /// The listener (index into `config.listeners`) the connection came in on.
    pub listener: usize,
    /// The connection's hold on its next request (see [`Ordered`]); a handler that may let
    /// the next request start early takes it with [`RequestContext::take_order_hold`].
    order_hold: Cell<Option<Ordered>>,
    /// The connection's mute: a client over its quota is not read from until it passes.
    pub mute: Mute,
}

/// Until when a connection reads no request (a quota throttle, KIP-219); shared by the
/// connection's reader and writer and its requests' contexts.
///
/// Lives on: the connection's shard.
#[derive(Clone, Default)]
pub struct Mute(Rc<Cell<Option<std::time::Instant>>>);

impl Mute {
    /// Mutes for `throttle` from now (or longer, if already muted longer).
    pub fn mute_for(&self, throttle: std::time::Duration) {
        let until = std::time::Instant::now() + throttle;
        if self.0.get().is_none_or(|u| u < until) {
            self.0.set(Some(until));
        }
    }

    /// Waits until the mute has passed (at once when there is none).
    pub async fn passed(&self) {
        while let Some(until) = self.0.get() {
            let now = std::time::Instant::now();
            if now >= until {
                self.0.set(None);
                return;
            }
            glommio::timer::sleep(until - now).await;
        }
    }
}

impl RequestContext {
    pub fn new(
        shard: Rc<Shard>,
        req: &Request,
        client_addr: &str,
        principal: Principal,
        ordered: Ordered,
        mute: Mute,
        listener: usize,
    ) -> RequestContext {
        let ip = client_addr
            .rsplit_once(':')
            .map_or(client_addr, |(ip, _)| ip)
            .trim_start_matches('[')
            .trim_end_matches(']');
        RequestContext {
            shard,
            api_key: req.api_key,
            api_version: req.version,
            correlation_id: req.header.correlation_id,
            client: ClientInfo {
                client_id: req
                    .header
                    .client_id
                    .as_ref()
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_default(),
                host: format!("/{ip}"),
            },
            client_addr: client_addr.to_string(),
            principal,
            order_hold: Cell::new(Some(ordered)),
            mute,
            listener,
        }
    }

    /// The address Metadata gives this client: its listener's advertised one (on one node;
    /// a cluster's brokers are named by their first listener, which they register).
    pub fn advertised(&self) -> (String, u16) {
        self.shard.config.listeners.get(self.listener).map_or_else(
            || self.shard.config.advertised_listener.clone(),
            |l| l.advertised.clone(),
        )
    }

    /// The name of the listener the request came in on (`PLAINTEXT` for `--listen`).
    pub fn listener_name(&self) -> &str {
        self.shard
            .config
            .listeners
            .get(self.listener)
            .map_or("PLAINTEXT", |l| l.name.as_str())
    }

    /// Where this client reaches broker `b`: `b`'s listener of the name this client came in
    /// on (None: `b` has none, and is left out of what this client is told, as in Kafka).
    pub fn endpoint_of(&self, b: &crate::cluster::view::BrokerEndpoint) -> Option<(String, u16)> {
        b.on_listener(self.listener_name())
    }

    /// The request's context as a metadata change carries it to the active controller
    /// (KIP-590's Envelope): who asked, from where, through which broker.
    pub fn forwarded(&self) -> crate::cluster::wire::Forwarded {
        crate::cluster::wire::Forwarded {
            principal: self.principal.to_string(),
            client_id: self.client.client_id.clone(),
            client_addr: self.client_addr.clone(),
            via_broker: self.shard.config.node_id,
        }
    }

    /// Takes the connection's order hold: dropping it lets the next request start.
    pub fn take_order_hold(&self) -> Option<Ordered> {
        self.order_hold.take()
    }

    /// Whether the authorizer is on (`--authorizer acl`); off, every check allows.
    pub fn authorizer_on(&self) -> bool {
        self.shard.acl_policy().is_some()
    }

    /// The client's IP address, as ACL hosts name it.
    fn client_ip(&self) -> &str {
        self.client.host.trim_start_matches('/')
    }

    /// Whether the request's principal may do `op` on the resource, by the shard's current
    /// ACLs (a new ACL applies to the next request of every connection). Without an
    /// authorizer: true, at the cost of one branch. Every decision is a debug line of the
    /// audit log; denials are also info lines, sampled (see `log_limit`).
    pub fn authorize(&self, op: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.with_acls(|policy, bindings, principal, host| {
            let d = crate::auth::acl::authorize(
                policy,
                bindings,
                principal,
                host,
                op,
                resource_type,
                name,
            );
            self.audit(principal, d.allowed(), op, resource_type, name, &d);
            d.allowed()
        })
        .unwrap_or(true)
    }

    /// Whether the principal may do `op` on some resource of `resource_type` (KIP-679: an
    /// idempotent producer's InitProducerId with Write on any topic), audited as
    /// [`RequestContext::authorize`].
    pub fn authorize_any(&self, op: Operation, resource_type: ResourceType) -> bool {
        self.with_acls(|policy, bindings, principal, host| {
            let allowed = crate::auth::acl::authorize_any(
                policy,
                bindings,
                principal,
                host,
                op,
                resource_type,
            );
            self.audit(principal, allowed, op, resource_type, "*any*", &allowed);
            allowed
        })
        .unwrap_or(true)
    }

    /// `check` on the authorizer's policy, the shard's current ACLs, and the request's
    /// principal and client IP; None without an authorizer.
    fn with_acls<T>(
        &self,
        check: impl FnOnce(&crate::auth::acl::Policy, &[crate::auth::acl::Binding], &str, &str) -> T,
    ) -> Option<T> {
        let policy = self.shard.acl_policy()?;
        let acls = self.shard.acls();
        let principal = self.principal.to_string();
        Some(check(policy, &acls.bindings, &principal, self.client_ip()))
    }

    /// CLUSTER_AUTHORIZATION_FAILED unless the principal may do `op` on the cluster.
    pub fn cluster_refused(&self, op: Operation) -> Option<KafkaError> {
        (!self.authorize(op, ResourceType::Cluster, CLUSTER))
            .then_some(KafkaError::ClusterAuthorizationFailed)
    }

    /// Kafka's authorized-operations bitfield of a resource (bit `1 << operation id` for each
    /// operation the principal may do on it); every operation of its type without an
    /// authorizer. Not audited: it asks about every operation, not for one.
    pub fn authorized_operations(&self, resource_type: ResourceType, name: &str) -> i32 {
        let ops = crate::auth::acl::operations_of(resource_type);
        let bits = |allowed: &dyn Fn(Operation) -> bool| {
            ops.iter()
                .filter(|op| allowed(**op))
                .fold(0i32, |acc, op| acc | (1 << op.id()))
        };
        self.with_acls(|policy, bindings, principal, host| {
            bits(&|op| {
                crate::auth::acl::authorize(
                    policy,
                    bindings,
                    principal,
                    host,
                    op,
                    resource_type,
                    name,
                )
                .allowed()
            })
        })
        .unwrap_or_else(|| bits(&|_| true))
    }

    /// The audit log of one decision.
    fn audit(
        &self,
        principal: &str,
        allowed: bool,
        op: Operation,
        resource_type: ResourceType,
        name: &str,
        why: &dyn std::fmt::Debug,
    ) {
        let outcome = if allowed { "allowed" } else { "denied" };
        tracing::debug!(
            target: "spate::audit",
            principal,
            client = %self.client_addr,
            api = ?self.api_key,
            operation = ?op,
            resource_type = ?resource_type,
            resource = name,
            decision = ?why,
            "authorization {outcome}"
        );
        if !allowed
            && let Some(held_back) = self.shard.log.allow(
                crate::log_limit::LogKind::AclDenied,
                std::time::Instant::now(),
            )
        {
            tracing::info!(
                target: "spate::audit",
                principal,
                client = %self.client_addr,
                api = ?self.api_key,
                operation = ?op,
                resource_type = ?resource_type,
                resource = name,
                held_back,
                "authorization denied"
            );
        }
    }

    /// Encodes `body` as this request's response.
    fn respond<T: kafka_protocol::protocol::Encodable>(&self, body: &T) -> anyhow::Result<Bytes> {
        encode_response(self.api_key, self.api_version, self.correlation_id, body)
    }
}

/// Sends a group request to the shard that coordinates `group`; a coordinator shard that
/// cannot be reached (the broker is stopping) is COORDINATOR_NOT_AVAILABLE.
pub(crate) async fn group_call<C: Call>(
    ctx: &RequestContext,
    group: &str,
    call: C,
) -> Result<C::Reply, KafkaError> {
    let shard = &ctx.shard;
    // In a cluster, only the leader of the group's offsets partition coordinates it.
    if shard.cluster().is_some() {
        let meta = shard
            .topic(crate::placement::OFFSETS_TOPIC)
            .ok_or(KafkaError::NotCoordinator)?;
        let p = crate::placement::offsets_partition(group, meta.partitions);
        if current_leader(&meta, p).0 != shard.config.node_id {
            return Err(KafkaError::NotCoordinator);
        }
    }
    let owner = crate::placement::group_owner(
        group,
        shard.config.offsets_topic_num_partitions,
        shard.shards(),
    );
    tracing::debug!(
        "group request api={:?} group={group} connection_shard={} coordinator_shard={owner}",
        ctx.api_key,
        shard.id
    );
    shard
        .call(owner, call)
        .await
        .map_err(|_| KafkaError::CoordinatorNotAvailable)
}

/// The broker that coordinates `transactional_id`: the leader of its `__transaction_state`
/// partition (this one on one node); None while that partition has no leader or the log does
/// not exist yet (FindCoordinator creates it).
pub(crate) fn txn_coordinator(shard: &Shard, transactional_id: &str) -> Option<i32> {
    if shard.cluster().is_none() {
        return Some(shard.config.node_id);
    }
    let meta = shard.topic(crate::placement::TXN_TOPIC)?;
    let p = crate::placement::txn_partition(transactional_id, meta.partitions);
    Some(current_leader(&meta, p).0).filter(|l| *l >= 0)
}

/// Sends a transaction request to the shard that coordinates `transactional_id`. Err: the
/// code to answer, NOT_COORDINATOR where another broker (or none) coordinates it in a
/// cluster, COORDINATOR_NOT_AVAILABLE where the shard cannot be reached (the broker is
/// stopping).
pub(crate) async fn txn_call<C: Call>(
    ctx: &RequestContext,
    transactional_id: &str,
    call: C,
) -> Result<C::Reply, crate::error::ErrorCode> {
    let shard = &ctx.shard;
    if txn_coordinator(shard, transactional_id) != Some(shard.config.node_id) {
        return Err(crate::error::ErrorCode::NOT_COORDINATOR);
    }
    open_local_txn_log(ctx).await?;
    let owner = crate::placement::txn_owner(
        transactional_id,
        shard.config.transaction_state_log_num_partitions,
        shard.shards(),
    );
    shard
        .call(owner, call)
        .await
        .map_err(|_| crate::error::ErrorCode::COORDINATOR_NOT_AVAILABLE)
}

/// KIP-890 part 1: whether each partition is in the producer's open transaction, as its
/// coordinator says: the shard here that coordinates it, or, in a cluster, the broker that
/// does, by an AddPartitionsToTxn v4 request with `verify_only` (as Kafka's brokers ask). One
/// code per partition, NONE where the transaction holds it; Err: the coordinator could not
/// answer (a retriable code).
pub(crate) async fn txn_verify(
    ctx: &RequestContext,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<(String, i32)>,
) -> Result<Vec<crate::error::ErrorCode>, crate::error::ErrorCode> {
    use crate::error::ErrorCode;
    let n = partitions.len();
    let coordinator = txn_coordinator(&ctx.shard, transactional_id);
    if coordinator == Some(ctx.shard.config.node_id) {
        let call = crate::shard::calls::TxnVerify {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            partitions,
        };
        return txn_call(ctx, transactional_id, call).await.and_then(|c| {
            if c.len() == n {
                Ok(c)
            } else {
                Err(ErrorCode::COORDINATOR_NOT_AVAILABLE)
            }
        });
    }
    let Some(broker) = coordinator else {
        return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
    };
    use kafka_protocol::messages::add_partitions_to_txn_request::{
        AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
    };
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ProducerId, TransactionalId,
    };
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &partitions {
        topics.entry(t.as_str()).or_default().push(*p);
    }
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_verify_only(true)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(ps)
                    })
                    .collect(),
            ),
    ]);
    let timeout = std::time::Duration::from_millis(TXN_VERIFY_TIMEOUT_MS);
    let resp: AddPartitionsToTxnResponse = ctx
        .shard
        .broker_request(broker, ApiKey::AddPartitionsToTxn, 4, &req, timeout)
        .await
        .map_err(|e| {
            tracing::debug!(broker, error = %e, "transaction verification not answered");
            ErrorCode::COORDINATOR_NOT_AVAILABLE
        })?;
    if resp.error_code != 0 {
        return Err(ErrorCode::from_code(resp.error_code));
    }
    let mut codes: BTreeMap<(String, i32), i16> = BTreeMap::new();
    for t in resp
        .results_by_transaction
        .iter()
        .flat_map(|r| r.topic_results.iter())
    {
        for p in &t.results_by_partition {
            codes.insert(
                (t.name.0.to_string(), p.partition_index),
                p.partition_error_code,
            );
        }
    }
    Ok(partitions
        .iter()
        .map(|tp| {
            codes
                .get(tp)
                .map_or(ErrorCode::INVALID_TXN_STATE, |c| ErrorCode::from_code(*c))
        })
        .collect())
}

/// On one node: opens `__transaction_state` on every shard at the first use of a
/// transactional id (see `Shard::open_txn_log`); at once when it is open, and in a cluster.
pub(crate) async fn open_local_txn_log(
    ctx: &RequestContext,
) -> Result<(), crate::error::ErrorCode> {
    let shard = &ctx.shard;
    if shard.cluster().is_some() || shard.txn_log_is_open() {
        return Ok(());
    }
    let calls = (0..shard.shards()).map(|to| shard.call(to, crate::shard::calls::OpenTxnLog));
    for r in futures_util::future::join_all(calls).await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot open __transaction_state");
                return Err(crate::error::ErrorCode::COORDINATOR_NOT_AVAILABLE);
            }
            Err(_) => return Err(crate::error::ErrorCode::COORDINATOR_NOT_AVAILABLE),
        }
    }
    Ok(())
}

/// Deadline of a verification asked of another broker's transaction coordinator.
const TXN_VERIFY_TIMEOUT_MS: u64 = 5_000;

/// Creates `__consumer_offsets` in the cluster's metadata (its partitions placed over the
/// brokers like any topic's, `--offsets-topic-replication-factor` replicas each), unless it
/// exists. With fewer live brokers than that the creation is refused, and FindCoordinator
/// answers COORDINATOR_NOT_AVAILABLE until enough have registered, as Kafka does.
pub(crate) async fn ensure_offsets_topic(
    ctx: &RequestContext,
) -> Result<crate::storage::catalog::TopicMeta, KafkaError> {
    let config = &ctx.shard.config;
    let replication_factor = if config.cluster.is_some() {
        config.offsets_topic_replication_factor
    } else {
        1
    };
    ensure_coordinator_log(
        ctx,
        crate::placement::OFFSETS_TOPIC,
        config.offsets_topic_num_partitions,
        replication_factor,
        BTreeMap::new(),
    )
    .await
}

/// Creates `__transaction_state` in the cluster's metadata, as [`ensure_offsets_topic`]
/// does `__consumer_offsets`: `--transaction-state-log-replication-factor` replicas, and
/// `--transaction-state-log-min-isr` as its `min.insync.replicas`.
pub(crate) async fn ensure_txn_topic(
    ctx: &RequestContext,
) -> Result<crate::storage::catalog::TopicMeta, KafkaError> {
    let config = &ctx.shard.config;
    let (replication_factor, min_isr) = if config.cluster.is_some() {
        (
            config.transaction_state_log_replication_factor,
            config.transaction_state_log_min_isr,
        )
    } else {
        (1, 1)
    };
    let configs = BTreeMap::from([("min.insync.replicas".to_string(), min_isr.to_string())]);
    ensure_coordinator_log(
        ctx,
        crate::placement::TXN_TOPIC,
        config.transaction_state_log_num_partitions,
        replication_factor,
        configs,
    )
    .await
}

/// Creates a coordinator's internal log in the metadata unless it exists.
async fn ensure_coordinator_log(
    ctx: &RequestContext,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
) -> Result<crate::storage::catalog::TopicMeta, KafkaError> {
    let shard = &ctx.shard;
    let spec = crate::shard::calls::CreateTopic {
        name: name.to_string(),
        partitions,
        replication_factor,
        configs,
        if_not_exists: true,
        internal: true,
        assignments: Vec::new(),
    };
    let call = crate::shard::calls::CreateTopics {
        topics: vec![spec],
        validate_only: false,
        context: ctx.forwarded(),
    };
    match shard.call(crate::placement::CONTROLLER_SHARD, call).await {
        Ok(mut r) if r.len() == 1 => r.remove(0),
        Ok(_) | Err(_) => Err(KafkaError::CoordinatorNotAvailable),
    }
}

/// Where a client should send requests for `meta`'s partition `p`: (leader id, leader
/// epoch), -1 for a partition without a leader.
pub(crate) fn current_leader(meta: &crate::storage::catalog::TopicMeta, p: i32) -> (i32, i32) {
    meta.partition(p)
        .map_or((-1, -1), |a| (a.leader, a.leader_epoch))
}

/// Whether this broker may serve a read of `meta`'s partition `p` for a client that knows
/// `current_leader_epoch` (-1: it does not say): the leader, in the client's epoch.
pub(crate) fn check_leader(
    shard: &Shard,
    meta: &crate::storage::catalog::TopicMeta,
    p: i32,
    current_leader_epoch: i32,
) -> Option<KafkaError> {
    if !shard.leads(meta, p) {
        return Some(KafkaError::NotLeaderOrFollower);
    }
    let epoch = current_leader(meta, p).1.max(0);
    match current_leader_epoch {
        e if e < 0 || e == epoch => None,
        e if e < epoch => Some(KafkaError::FencedLeaderEpoch),
        _ => Some(KafkaError::UnknownLeaderEpoch),
    }
}

/// The endpoints of the brokers `ids` that serve (for KIP-951 leader hints), each once, on
/// the listener the client came in on: (id, host, port, rack).
pub(crate) fn node_endpoints(
    ctx: &RequestContext,
    ids: &[i32],
) -> Vec<(i32, String, u16, Option<String>)> {
    let Some(view) = ctx.shard.cluster() else {
        return Vec::new();
    };
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.iter()
        .filter_map(|id| view.broker(*id))
        .filter_map(|b| {
            let (host, port) = ctx.endpoint_of(b)?;
            Some((b.id, host, port, b.rack.clone()))
        })
        .collect()
}

/// A partition's owner shard could not be reached (the broker is stopping): the client
/// refreshes its metadata and retries, as after a leader change.
pub(crate) fn owner_gone(_: RouterError) -> KafkaError {
    KafkaError::NotLeaderOrFollower
}

/// Where an item's answer goes in a per-partition request: (topic index, partition index).
pub(crate) type Slot = (usize, usize);

/// Sends every owner shard its items in one call, all owners concurrently, and returns each
/// answer with its slot. An owner that cannot be reached, or answers with the wrong number of
/// items, answers all of its items with an error, so every item gets exactly one answer.
pub(crate) async fn scatter<I, C, R>(
    shard: &Rc<Shard>,
    by_owner: BTreeMap<usize, Vec<(Slot, I)>>,
    make: fn(Vec<I>) -> C,
) -> Vec<(Slot, Result<R, KafkaError>)>
where
    C: Call<Reply = Answers<R>>,
    R: Clone,
{
    let calls = by_owner.into_iter().map(|(owner, items)| {
        let shard = shard.clone();
        async move {
            let (slots, items): (Vec<Slot>, Vec<I>) = items.into_iter().unzip();
            let n = items.len();
            let answers = match shard.call(owner, make(items)).await {
                Ok(r) if r.len() == n => r,
                Ok(r) => {
                    debug_assert!(false, "shard {owner} answered {} of {n} items", r.len());
                    vec![Err(KafkaError::NotLeaderOrFollower); n]
                }
                Err(e) => vec![Err(owner_gone(e)); n],
            };
            slots.into_iter().zip(answers).collect::<Vec<_>>()
        }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

pub(crate) fn opt_string(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.as_str().to_string())
}

/// Held by a request's handler while the connection's next request must not start; dropped
/// (released) when the handler finishes, or earlier by a handler that has reached the point
/// after which running later requests alongside it keeps Kafka's in-order semantics (Produce:
/// once its batches are queued at their owners).
pub struct Ordered(#[allow(dead_code)] futures_channel::oneshot::Sender<()>);

impl Ordered {
    /// A hold, and what resolves when it is released.
    pub fn new() -> (Ordered, futures_channel::oneshot::Receiver<()>) {
        let (tx, rx) = futures_channel::oneshot::channel();
        (Ordered(tx), rx)
    }
}

/// A handled request: its encoded response (None: Produce with acks=0 is not answered) and the
/// quota throttle the client gets (KIP-219): the connection sends the response and then reads
/// nothing from the client for `throttle_ms`, or, for the versions before KIP-219 (Produce
/// v0-5, Fetch v0-7), holds the response back that long instead.
pub struct Answer {
    pub chunks: Option<Vec<Chunk>>,
    pub throttle_ms: u64,
    pub throttle_before_send: bool,
}

impl Answer {
    pub fn unthrottled(chunks: Option<Vec<Chunk>>) -> Answer {
        Answer {
            chunks,
            throttle_ms: 0,
            throttle_before_send: false,
        }
    }
}

/// A future and the time spent polling it on this shard (the request quota's handler time:
/// waits, such as a long-polling Fetch's or an fdatasync, do not count).
struct PollTimed<'a, F: std::future::Future> {
    inner: std::pin::Pin<Box<F>>,
    nanos: &'a Cell<u64>,
}

impl<F: std::future::Future> std::future::Future for PollTimed<'_, F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let start = std::time::Instant::now();
        let out = self.inner.as_mut().poll(cx);
        let spent = start.elapsed().as_nanos() as u64;
        self.nanos.set(self.nanos.get().saturating_add(spent));
        out
    }
}

/// Runs the handler of the request in `ctx` and applies the client quotas (see
/// `shard::quota`): Produce counts its record bytes, Fetch its response bytes, every request
/// its handler time where a request quota applies. Clients no quota applies to skip all of it.
/// Every handler has the same shape, `handle(&RequestContext, Request) -> Response`.
pub async fn dispatch(ctx: &RequestContext, body: RequestKind) -> anyhow::Result<Answer> {
    use crate::quota::QuotaKind;
    let table = ctx.shard.quotas();
    let user = ctx.principal.name.as_str();
    let client_id = ctx.client.client_id.as_str();
    if table.is_empty() || quota_exempt(ctx.api_version, &body) || !table.applies(user, client_id) {
        drop(table);
        return Ok(Answer::unthrottled(run_handler(ctx, body, None).await?.0));
    }
    let timed = table.resolve(QuotaKind::Request, user, client_id).is_some();
    let produce_bytes = match &body {
        RequestKind::Produce(r) => r
            .topic_data
            .iter()
            .flat_map(|t| t.partition_data.iter())
            .map(|p| p.records.as_ref().map_or(0, |b| b.len()))
            .sum::<usize>(),
        _ => 0,
    };
    drop(table);
    let api = ctx.api_key;
    let nanos = Cell::new(0u64);
    // The throttle goes into the response, so Produce and Fetch are encoded after it is known.
    let mut early_ms = 0;
    let (mut usage, response) = match body {
        RequestKind::Produce(r) => {
            // Counted before it is handled, and the connection muted at once when it is over
            // its quota, so no further request is read meanwhile (see `shard::quota`).
            let usage = [(QuotaKind::Produce, produce_bytes as f64)];
            early_ms = ctx.shard.quota_throttle(user, client_id, &usage).await;
            if early_ms > 0 {
                ctx.mute
                    .mute_for(std::time::Duration::from_millis(early_ms));
            }
            let resp = if timed {
                PollTimed {
                    inner: Box::pin(produce::handle(ctx, r)),
                    nanos: &nanos,
                }
                .await
            } else {
                produce::handle(ctx, r).await
            };
            (Vec::new(), Pending::Produce(resp))
        }
        RequestKind::Fetch(r) => {
            let chunks = if timed {
                PollTimed {
                    inner: Box::pin(fetch::handle(ctx, r)),
                    nanos: &nanos,
                }
                .await
            } else {
                fetch::handle(ctx, r).await
            };
            let bytes = crate::protocol::fetch::response_len(&chunks);
            (
                vec![(QuotaKind::Fetch, bytes as f64)],
                Pending::Fetch(chunks),
            )
        }
        other => {
            // The handler's time is counted, and the throttle set in its response, inside.
            let quota = RequestQuota {
                user,
                client_id,
                nanos: Cell::new(0),
            };
            let (chunks, ms) = run_handler(ctx, other, timed.then_some(&quota)).await?;
            return Ok(Answer {
                chunks,
                throttle_ms: ms,
                throttle_before_send: false,
            });
        }
    };
    if timed {
        usage.push((
            QuotaKind::Request,
            crate::quota::nanos_to_percent(nanos.get()),
        ));
    }
    let throttle_ms = if usage.is_empty() {
        early_ms
    } else {
        early_ms.max(ctx.shard.quota_throttle(user, client_id, &usage).await)
    };
    let wire_ms = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    let chunks = match response {
        Pending::Produce(Some(mut resp)) => {
            resp.throttle_time_ms = resp.throttle_time_ms.max(wire_ms);
            Some(vec![Chunk::Mem(ctx.respond(&resp)?)])
        }
        Pending::Produce(None) => None,
        Pending::Fetch(mut chunks) => {
            if throttle_ms > 0 {
                crate::protocol::fetch::set_throttle_time_ms(&mut chunks, ctx.api_version, wire_ms);
            }
            Some(chunks)
        }
    };
    let old_version = match api {
        ApiKey::Produce => ctx.api_version < 6,
        ApiKey::Fetch => ctx.api_version < 8,
        _ => false,
    };
    Ok(Answer {
        chunks,
        throttle_ms,
        throttle_before_send: old_version,
    })
}

/// Whether a request is the cluster's own traffic, which client quotas never throttle (Kafka
/// exempts what is authorized as ClusterAction): a follower's Fetch, and the transaction
/// markers a coordinator writes.
fn quota_exempt(api_version: i16, body: &RequestKind) -> bool {
    match body {
        RequestKind::Fetch(r) => {
            let replica = if api_version >= 15 {
                r.replica_state.replica_id.0
            } else {
                r.replica_id.0
            };
            replica >= 0
        }
        RequestKind::WriteTxnMarkers(_) => true,
        // Version 4 is only sent between brokers (KIP-890 verification).
        RequestKind::AddPartitionsToTxn(_) => api_version >= 4,
        _ => false,
    }
}

/// A request whose handler time counts against the client's request quota.
struct RequestQuota<'a> {
    user: &'a str,
    client_id: &'a str,
    /// Time spent polling the handler so far.
    nanos: Cell<u64>,
}

impl RequestQuota<'_> {
    /// Counts the handler's time and returns the throttle, in ms.
    async fn throttle(&self, ctx: &RequestContext) -> u64 {
        let usage = [(
            crate::quota::QuotaKind::Request,
            crate::quota::nanos_to_percent(self.nanos.get()),
        )];
        ctx.shard
            .quota_throttle(self.user, self.client_id, &usage)
            .await
    }
}

/// A response with Kafka's `throttle_time_ms` (most have it; the versions that lack it do not
/// encode it).
trait ThrottleTime {
    fn set_throttle_time_ms(&mut self, ms: i32);
}

macro_rules! throttle_time {
    ($($t:ident),* $(,)?) => {
        $(impl ThrottleTime for kafka_protocol::messages::$t {
            fn set_throttle_time_ms(&mut self, ms: i32) {
                self.throttle_time_ms = ms;
            }
        })*
    };
}

macro_rules! no_throttle_time {
    ($($t:ident),* $(,)?) => {
        $(impl ThrottleTime for kafka_protocol::messages::$t {
            fn set_throttle_time_ms(&mut self, _ms: i32) {}
        })*
    };
}

throttle_time!(
    ApiVersionsResponse,
    MetadataResponse,
    CreateTopicsResponse,
    DeleteTopicsResponse,
    CreatePartitionsResponse,
    AlterPartitionReassignmentsResponse,
    ListPartitionReassignmentsResponse,
    DescribeLogDirsResponse,
    ElectLeadersResponse,
    DescribeClusterResponse,
    OffsetForLeaderEpochResponse,
    ListOffsetsResponse,
    DescribeConfigsResponse,
    IncrementalAlterConfigsResponse,
    AlterConfigsResponse,
    DeleteRecordsResponse,
    FindCoordinatorResponse,
    JoinGroupResponse,
    SyncGroupResponse,
    HeartbeatResponse,
    LeaveGroupResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    DescribeGroupsResponse,
    ListGroupsResponse,
    DeleteGroupsResponse,
    OffsetDeleteResponse,
    InitProducerIdResponse,
    AddPartitionsToTxnResponse,
    EndTxnResponse,
    AddOffsetsToTxnResponse,
    TxnOffsetCommitResponse,
    DescribeProducersResponse,
    DescribeTransactionsResponse,
    ListTransactionsResponse,
    ConsumerGroupHeartbeatResponse,
    ConsumerGroupDescribeResponse,
    DescribeClientQuotasResponse,
    AlterClientQuotasResponse,
    DescribeTopicPartitionsResponse,
    DescribeUserScramCredentialsResponse,
    AlterUserScramCredentialsResponse,
    CreateAclsResponse,
    DescribeAclsResponse,
    DeleteAclsResponse,
);
no_throttle_time!(
    SaslHandshakeResponse,
    SaslAuthenticateResponse,
    WriteTxnMarkersResponse,
    DescribeQuorumResponse
);

/// A response not encoded yet, while its quota throttle is worked out.
enum Pending {
    Produce(Option<kafka_protocol::messages::ProduceResponse>),
    Fetch(Vec<Chunk>),
}

/// Runs the handler of the request; Ok(None) means no response is sent (Produce with acks=0).
/// Runs the handler of the request; the chunks are None when no response is sent (Produce
/// with acks=0). With `quota`, the time spent polling the handler counts against the client's
/// request quota and the throttle (also returned, in ms) goes into the response. Produce and
/// Fetch are only run here without quotas (`dispatch` counts their bytes itself).
async fn run_handler(
    ctx: &RequestContext,
    body: RequestKind,
    quota: Option<&RequestQuota<'_>>,
) -> anyhow::Result<(Option<Vec<Chunk>>, u64)> {
    macro_rules! apis {
        ($($kind:ident => $handler:path),* $(,)?) => {
            match body {
                $(RequestKind::$kind(r) => {
                    let Some(q) = quota else {
                        let resp = $handler(ctx, r).await;
                        return Ok((Some(vec![Chunk::Mem(ctx.respond(&resp)?)]), 0));
                    };
                    let mut resp = PollTimed {
                        inner: Box::pin($handler(ctx, r)),
                        nanos: &q.nanos,
                    }
                    .await;
                    let ms = q.throttle(ctx).await;
                    if ms > 0 {
                        resp.set_throttle_time_ms(i32::try_from(ms).unwrap_or(i32::MAX));
                    }
                    Ok((Some(vec![Chunk::Mem(ctx.respond(&resp)?)]), ms))
                })*
                // Answered with file ranges for the zero-copy path.
                RequestKind::Fetch(r) => Ok((Some(fetch::handle(ctx, r).await), 0)),
                // acks=0 is not answered.
                RequestKind::Produce(r) => match produce::handle(ctx, r).await {
                    Some(resp) => Ok((Some(vec![Chunk::Mem(ctx.respond(&resp)?)]), 0)),
                    None => Ok((None, 0)),
                },
                other => anyhow::bail!("no handler for {other:?}"),
            }
        };
    }
    apis!(
        ApiVersions => api_versions::handle,
        Metadata => metadata::handle,
        CreateTopics => create_topics::handle,
        DeleteTopics => delete_topics::handle,
        CreatePartitions => create_partitions::handle,
        AlterPartitionReassignments => alter_partition_reassignments::handle,
        ListPartitionReassignments => list_partition_reassignments::handle,
        DescribeLogDirs => describe_log_dirs::handle,
        ElectLeaders => elect_leaders::handle,
        DescribeCluster => describe_cluster::handle,
        DescribeQuorum => describe_quorum::handle,
        DescribeTopicPartitions => describe_topic_partitions::handle,
        DescribeUserScramCredentials => describe_user_scram_credentials::handle,
        AlterUserScramCredentials => alter_user_scram_credentials::handle,
        OffsetForLeaderEpoch => offset_for_leader_epoch::handle,
        ListOffsets => list_offsets::handle,
        DescribeConfigs => describe_configs::handle,
        IncrementalAlterConfigs => alter_configs::handle_incremental,
        AlterConfigs => alter_configs::handle_legacy,
        DeleteRecords => delete_records::handle,
        FindCoordinator => find_coordinator::handle,
        JoinGroup => join_group::handle,
        SyncGroup => sync_group::handle,
        Heartbeat => heartbeat::handle,
        LeaveGroup => leave_group::handle,
        OffsetCommit => offset_commit::handle,
        OffsetFetch => offset_fetch::handle,
        DescribeGroups => describe_groups::handle,
        ListGroups => list_groups::handle,
        DeleteGroups => delete_groups::handle,
        OffsetDelete => offset_delete::handle,
        SaslHandshake => sasl_handshake::handle,
        SaslAuthenticate => sasl_handshake::handle_authenticate,
        InitProducerId => init_producer_id::handle,
        AddPartitionsToTxn => add_partitions_to_txn::handle,
        EndTxn => end_txn::handle,
        AddOffsetsToTxn => add_offsets_to_txn::handle,
        TxnOffsetCommit => txn_offset_commit::handle,
        WriteTxnMarkers => write_txn_markers::handle,
        DescribeProducers => describe_producers::handle,
        DescribeTransactions => describe_transactions::handle,
        ListTransactions => list_transactions::handle,
        ConsumerGroupHeartbeat => consumer_group_heartbeat::handle,
        ConsumerGroupDescribe => consumer_group_describe::handle,
        DescribeClientQuotas => describe_client_quotas::handle,
        AlterClientQuotas => alter_client_quotas::handle,
        CreateAcls => acls::handle_create,
        DescribeAcls => acls::handle_describe,
        DeleteAcls => acls::handle_delete,
    )
}

/// The name of the cluster resource in ACLs.
pub(crate) const CLUSTER: &str = "kafka-cluster";

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub(crate) fn str_bytes(s: String) -> StrBytes {
    StrBytes::from_string(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_request::ReplicaState;
    use kafka_protocol::messages::{
        BrokerId, FetchRequest, MetadataRequest, WriteTxnMarkersRequest,
    };

    #[test]
    fn the_clusters_own_traffic_is_exempt_from_client_quotas() {
        let consumer = || RequestKind::Fetch(FetchRequest::default().with_replica_id(BrokerId(-1)));
        assert!(!quota_exempt(12, &consumer()));
        assert!(!quota_exempt(16, &consumer()));
        let follower_old = RequestKind::Fetch(FetchRequest::default().with_replica_id(BrokerId(2)));
        assert!(quota_exempt(12, &follower_old));
        let follower_new = RequestKind::Fetch(
            FetchRequest::default()
                .with_replica_state(ReplicaState::default().with_replica_id(BrokerId(2))),
        );
        assert!(quota_exempt(15, &follower_new));
        assert!(quota_exempt(
            1,
            &RequestKind::WriteTxnMarkers(WriteTxnMarkersRequest::default())
        ));
        assert!(!quota_exempt(
            12,
            &RequestKind::Metadata(MetadataRequest::default())
        ));
    }
}
