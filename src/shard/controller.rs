//! The controller: the one writer of the cluster metadata.
//!
//! Lives on: shard 0 ([`crate::placement::CONTROLLER_SHARD`]). Other shards reach it through
//! the router. A change goes: validate against the metadata image -> build its metadata
//! records -> append them to the metadata store and fdatasync, on glommio's blocking pool ->
//! tell every shard (each caches the topic and opens or deletes the partitions it owns) ->
//! answer. So a change is answered only once its records are durable, and once a client sees
//! a topic, every shard knows it. Changes are serialised by a local semaphore (metadata path
//! only, never the data path), so an auto-creation that races a creation of the same topic
//! waits for it and then finds it.
//!
//! The store is moved onto the blocking pool for each append and moved back when it is
//! done; the semaphore guarantees no one looks for it in between. In the cluster issue this
//! is where the records go to Raft instead: propose the batch, and apply it to the image and
//! the shards once it is committed.

mod acls;
mod quotas;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use glommio::sync::Semaphore;

use crate::cluster::election::{self, IsrChange, IsrDecision, ReplicaOffline, UncleanElection};
use crate::cluster::wire::{self, PartitionState, Request, Response};
use crate::cluster::{import, reassign};
use crate::error::KafkaError;
use crate::log_limit::LogKind;
use crate::shard::Shard;
use crate::shard::calls::{
    AlterTopicConfig, Call, CreateTopic, TopicConfigChanged, TopicCreated, TopicDeleted,
};
use crate::shard::quorum::{self, Quorum};
use crate::storage::catalog::{self, PartitionAssignment, TopicMeta};
use crate::storage::metadata::image::{MetadataImage, config_change_records, create_topic_records};
use crate::storage::metadata::record::{
    ConfigResource, MetadataRecord, PartitionRecord, ProducerIdsRecord, RegisterBrokerRecord,
    RemoveTopicRecord,
};
use crate::storage::metadata::{MetadataError, MetadataStore};

/// A shard that could not be told of a change is stopping (the router is only closed then).
fn stopping(_: crate::router::RouterError) -> &'static str {
    "a shard is stopping"
}

/// Producer ids in each block the controller hands out (each shard takes one at a time).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// The broker configs AlterConfigs may change at run time (as dynamic broker configs, on a
/// broker id or on every broker): the replication throttle rates, and the topic defaults
/// below ([`LIVE_TOPIC_DEFAULTS`]).
pub const DYNAMIC_BROKER_CONFIGS: &[&str] = &[
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
    "log.retention.ms",
    "log.retention.bytes",
    "log.roll.ms",
    "log.segment.bytes",
    "message.max.bytes",
    "compression.type",
    "log.message.timestamp.before.max.ms",
    "log.message.timestamp.after.max.ms",
];

/// The topic defaults that dynamic broker configs may change, each checked as the topic
/// config it is the default of (see [`crate::storage::catalog::TOPIC_CONFIGS`]).
pub fn check_dynamic_broker_config(k: &str, v: &str) -> Result<(), KafkaError> {
    if k.ends_with(".replication.throttled.rate") {
        return match v.parse::<u64>() {
            Ok(_) => Ok(()),
            Err(_) => Err(KafkaError::InvalidConfig(format!(
                "{k} must be a non-negative number of bytes per second, got '{v}'"
            ))),
        };
    }
    let def = crate::storage::catalog::TOPIC_CONFIGS
        .iter()
        .find(|d| d.broker_name == k)
        .filter(|_| DYNAMIC_BROKER_CONFIGS.contains(&k))
        .ok_or_else(|| {
            KafkaError::InvalidRequest(format!(
                "broker config '{k}' cannot be changed at run time (only {})",
                DYNAMIC_BROKER_CONFIGS.join(", ")
            ))
        })?;
    let one = BTreeMap::from([(def.name.to_string(), v.to_string())]);
    crate::storage::catalog::TopicConfig::parse(&one)
        .map(|_| ())
        .map_err(|e| KafkaError::InvalidConfig(format!("{k}: {}", e.message())))
}

/// Most partitions one topic may have.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

pub struct Controller {
    /// This broker's node id (on one node it holds every replica and leads every partition).
    node_id: i32,
    /// The metadata store; None while an append runs on the blocking pool, and before
    /// start-up installs it.
    store: RefCell<Option<MetadataStore>>,
    /// The metadata as last applied (a copy of the store's image, readable while the store
    /// is on the blocking pool).
    image: RefCell<MetadataImage>,
    changes: Semaphore,
    /// The cluster shell, when this node is part of a cluster (`--voters`).
    quorum: RefCell<Option<Rc<Quorum>>>,
    /// On the active controller: when it last became the leader (brokers get a full
    /// session from then on before they are fenced).
    leader_since: std::cell::Cell<Option<std::time::Instant>>,
    default_replication_factor: std::cell::Cell<i16>,
    /// On the active controller: when the preferred-leader pass last ran (it runs every
    /// `--leader-imbalance-check-interval-seconds`).
    last_rebalance: std::cell::Cell<Option<std::time::Instant>>,
    /// Leaders this node elected out of the ISR (unclean leader election), since it started.
    unclean_elections: std::cell::Cell<u64>,
    /// On the active controller: the log ends brokers reported in their heartbeats for their
    /// replicas of partitions awaiting unclean-shutdown recovery, (broker, topic id,
    /// partition) -> (epoch of the last batch, log end). Soft state: a new controller waits
    /// for the next heartbeats.
    replica_ends: RefCell<election::ReplicaEnds>,
    /// On the active controller: since when each partition awaiting recovery has had its last
    /// in-sync replica unfenced (the wait for the other replicas counts from then).
    recovery_since: RefCell<BTreeMap<(uuid::Uuid, i32), std::time::Instant>>,
}

impl Controller {
    pub fn new(node_id: i32) -> Controller {
        Controller {
            node_id,
            store: RefCell::new(None),
            image: RefCell::new(MetadataImage::default()),
            changes: Semaphore::new(1),
            quorum: RefCell::new(None),
            leader_since: std::cell::Cell::new(None),
            default_replication_factor: std::cell::Cell::new(1),
            last_rebalance: std::cell::Cell::new(None),
            unclean_elections: std::cell::Cell::new(0),
            replica_ends: RefCell::new(BTreeMap::new()),
            recovery_since: RefCell::new(BTreeMap::new()),
        }
    }

    /// This broker's replicas of the partitions awaiting unclean-shutdown recovery (see
    /// `election::awaits_recovery`): (topic id, topic, partition).
    pub fn awaiting_recovery_on(&self, broker: i32) -> Vec<(uuid::Uuid, String, i32)> {
        let image = self.image.borrow();
        image
            .topics()
            .flat_map(|t| {
                let image = &image;
                t.partitions
                    .values()
                    .filter(move |p| {
                        p.replicas.contains(&broker)
                            && election::awaits_recovery(image, t, p).is_some()
                    })
                    .map(|p| (t.topic_id, t.name.clone(), p.partition))
            })
            .collect()
    }

    pub fn set_default_replication_factor(&self, rf: i16) {
        self.default_replication_factor.set(rf);
    }

    /// Hands the controller the store that start-up opened.
    pub fn install(&self, store: MetadataStore) {
        *self.image.borrow_mut() = store.image().clone();
        *self.store.borrow_mut() = Some(store);
    }

    /// Joins the controller to the cluster shell.
    pub fn set_quorum(&self, q: Rc<Quorum>) {
        *self.quorum.borrow_mut() = Some(q);
    }

    pub fn quorum(&self) -> Option<Rc<Quorum>> {
        self.quorum.borrow().clone()
    }

    /// The Raft index the store has applied (0 on one node).
    pub fn raft_applied(&self) -> u64 {
        self.store
            .borrow()
            .as_ref()
            .map_or(0, MetadataStore::raft_applied)
    }

    /// Records in the local metadata log (a one-node broker's DescribeQuorum high watermark).
    pub fn metadata_offset(&self) -> u64 {
        self.store
            .borrow()
            .as_ref()
            .map_or(0, MetadataStore::next_offset)
    }

    /// A copy of the metadata image as last applied.
    pub fn image(&self) -> MetadataImage {
        self.image.borrow().clone()
    }

    /// Unclean leader elections this node made as the active controller since it started.
    pub fn unclean_leader_elections(&self) -> u64 {
        self.unclean_elections.get()
    }

    /// The brokers that serve (registered, unfenced), as placement takes them.
    fn live_brokers(&self) -> Vec<crate::cluster::placement::Candidate> {
        self.image
            .borrow()
            .brokers()
            .values()
            .filter(|b| !b.fenced)
            .map(|b| crate::cluster::placement::Candidate {
                id: b.registration.broker_id,
                rack: b.registration.rack.clone(),
            })
            .collect()
    }

    /// Logs and counts unclean elections once the change that made them is committed: each
    /// may have lost acknowledged records, which an operator must be able to find.
    fn note_unclean(&self, elections: &[UncleanElection]) {
        for e in elections {
            self.unclean_elections.set(self.unclean_elections.get() + 1);
            tracing::warn!(
                topic = %e.topic,
                partition = e.partition,
                leader = e.leader,
                "unclean leader election: no in-sync replica serves, so an out-of-sync one leads; records acknowledged since it fell behind may be lost"
            );
        }
    }

    /// Fences `broker`'s registration `epoch` in one change with its partitions' (it leaves
    /// every ISR but as a last member; the partitions it led get a new leader or go offline):
    /// for an expired session and for a controlled shutdown alike.
    async fn fence_broker(&self, q: &Quorum, broker: i32, epoch: i64) -> Result<(), KafkaError> {
        let elected = {
            let image = self.image.borrow();
            match image.brokers().get(&broker) {
                Some(b) if b.registration.broker_epoch == epoch && !b.fenced => {}
                // Fenced already, or registered again since.
                _ => return Ok(()),
            }
            election::fence_records(&image, broker, q.config().unclean_leader_election_enable)
        };
        let mut records = vec![quorum::fence_record(broker, epoch, true)];
        records.extend(elected.records);
        self.persist(records).await?;
        self.note_unclean(&elected.unclean);
        Ok(())
    }

    /// The broker side of AlterPartition (a partition's leader on this node changes its ISR):
    /// sent to the active controller (this node or another), answered once this node has
    /// applied the committed change, so every shard here already sees the new ISR.
    pub async fn alter_partition(
        &self,
        change: crate::shard::calls::AlterPartition,
    ) -> Result<PartitionAssignment, KafkaError> {
        let (topic_id, current) = {
            let image = self.image.borrow();
            let t = image
                .topic(&change.topic)
                .ok_or(KafkaError::UnknownTopicOrPartition)?;
            let p = t
                .partitions
                .get(&change.partition)
                .ok_or(KafkaError::UnknownTopicOrPartition)?;
            (t.topic_id, PartitionState::from(p))
        };
        let Some(q) = self.quorum() else {
            // One node: every partition has this broker as its one replica, so its ISR
            // cannot change.
            let isr: Vec<i32> = change.new_isr.iter().map(|(b, _)| *b).collect();
            if change.leader_epoch != current.leader_epoch {
                return Err(KafkaError::FencedLeaderEpoch);
            }
            if change.partition_epoch != current.partition_epoch {
                return Err(KafkaError::InvalidUpdateVersion(format!(
                    "partition epoch {} is not the current {}",
                    change.partition_epoch, current.partition_epoch
                )));
            }
            if isr != current.isr {
                return Err(KafkaError::InvalidRequest(
                    "a one-node broker's partitions have one replica: their ISR cannot change"
                        .into(),
                ));
            }
            return Ok(current.into());
        };
        let req = IsrChange {
            broker_id: q.node_id,
            broker_epoch: q.my_epoch(),
            topic_id,
            partition: change.partition,
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            new_isr: change.new_isr,
        };
        let wire_req = Request::AlterPartition(req.clone());
        match q.forward(&wire_req).await? {
            // This node is the active controller: committed and applied here when answered.
            None => self.alter_isr(&q, req).await.map(Into::into),
            Some(Response::Partition { result, applied }) => {
                q.wait_applied_for(applied).await;
                if q.applied() < applied {
                    return Err(KafkaError::RequestTimedOut(
                        i64::try_from(quorum::RPC_TIMEOUT_MS).unwrap_or(i64::MAX),
                    ));
                }
                result.map(Into::into).map_err(KafkaError::from)
            }
            Some(other) => Err(unexpected(&other)),
        }
    }

    /// The active controller's side of AlterPartition: checked against the image (see
    /// [`election::alter_isr`]), written when the ISR changes, and answered with the
    /// partition as it then is.
    /// The broker side of an offline replica: tells the active controller (possibly this
    /// node) that this broker's replica of `topic`'s partition `partition` is offline, and
    /// answers once the change is applied here. A one-node broker has nobody to hand over to.
    pub async fn report_offline(&self, topic: &str, partition: i32) -> Result<(), KafkaError> {
        let Some(q) = self.quorum() else {
            return Ok(());
        };
        let topic_id = self
            .image
            .borrow()
            .topic(topic)
            .map(|t| t.topic_id)
            .ok_or(KafkaError::UnknownTopicOrPartition)?;
        let req = ReplicaOffline {
            broker_id: q.node_id,
            broker_epoch: q.my_epoch(),
            topic_id,
            partition,
        };
        match q.forward(&Request::ReplicaOffline(req.clone())).await? {
            None => self.replica_offline(&q, req).await.map(drop),
            Some(Response::Partition { result, applied }) => {
                q.wait_applied_for(applied).await;
                result.map(drop).map_err(KafkaError::from)
            }
            Some(other) => Err(unexpected(&other)),
        }
    }

    /// The active controller's side of an offline replica (see
    /// `election::offline_replica_decision`).
    pub async fn replica_offline(
        &self,
        q: &Quorum,
        req: ReplicaOffline,
    ) -> Result<PartitionState, KafkaError> {
        let _permit = self.begin_change(Some(q)).await;
        let decision = election::offline_replica_decision(
            &self.image.borrow(),
            &req,
            q.config().unclean_leader_election_enable,
        )?;
        if let IsrDecision::Change(record) = decision {
            let (leader, isr) = (record.leader, record.isr.clone());
            self.persist(vec![MetadataRecord::PartitionChange(record)])
                .await?;
            tracing::warn!(broker = req.broker_id, topic_id = %req.topic_id, partition = req.partition, leader, ?isr, "a replica went offline (storage error): out of the ISR, leadership moved");
        }
        let image = self.image.borrow();
        image
            .topics()
            .find(|t| t.topic_id == req.topic_id)
            .and_then(|t| t.partitions.get(&req.partition))
            .map(PartitionState::from)
            .ok_or(KafkaError::UnknownTopicOrPartition)
    }

    pub async fn alter_isr(
        &self,
        q: &Quorum,
        req: IsrChange,
    ) -> Result<PartitionState, KafkaError> {
        let _permit = self.begin_change(Some(q)).await;
        let decision = election::alter_isr(&self.image.borrow(), &req)?;
        match decision {
            IsrDecision::Unchanged(p) => Ok(PartitionState::from(&p)),
            IsrDecision::Change(record) => {
                let isr = record.isr.clone();
                self.persist(vec![MetadataRecord::PartitionChange(record)])
                    .await?;
                tracing::info!(broker = req.broker_id, topic_id = %req.topic_id, partition = req.partition, ?isr, "ISR changed");
                // The replica a reassignment waited for may be in sync now.
                let state = {
                    let image = self.image.borrow();
                    image
                        .topics()
                        .find(|t| t.topic_id == req.topic_id)
                        .and_then(|t| t.partitions.get(&req.partition))
                        .map(PartitionState::from)
                        .ok_or(KafkaError::UnknownTopicOrPartition)
                };
                self.complete_reassignments().await;
                state
            }
        }
    }

    fn unavailable() -> KafkaError {
        KafkaError::Storage("the metadata store is not available".to_string())
    }

    /// The topic as the metadata image has it.
    fn topic(&self, name: &str) -> Result<Option<TopicMeta>, KafkaError> {
        Ok(self.image.borrow().topic_meta(name))
    }

    /// A topic that must exist for the change at hand.
    fn existing_topic(&self, name: &str) -> Result<TopicMeta, KafkaError> {
        self.topic(name)?.ok_or(KafkaError::UnknownTopicOrPartition)
    }

    /// Appends `records` as one batch and waits until they are durable. The write and the
    /// fdatasync run on the blocking pool, never on this executor.
    async fn persist(&self, records: Vec<MetadataRecord>) -> Result<(), KafkaError> {
        if let Some(q) = self.quorum() {
            return q.propose(&records).await;
        }
        let mut store = self
            .store
            .borrow_mut()
            .take()
            .ok_or_else(Self::unavailable)?;
        let (store, appended) = glommio::executor()
            .spawn_blocking(move || {
                let appended = store.append(&records);
                (store, appended)
            })
            .await;
        *self.image.borrow_mut() = store.image().clone();
        *self.store.borrow_mut() = Some(store);
        appended.map(drop).map_err(|e| {
            tracing::error!(error = %e, "could not write the metadata log");
            match e {
                // The controller builds records from the image it checked: this is a bug.
                MetadataError::Refused(why) => {
                    KafkaError::InvalidRequest(format!("metadata change refused: {why}"))
                }
                other => KafkaError::Storage(format!("metadata write failed: {other}")),
            }
        })
    }

    /// Hands out the next block of [`PRODUCER_ID_BLOCK`] producer ids: (first id, count). The
    /// block's upper bound is durable in the metadata log before any id of it is handed out,
    /// so after a crash the next block starts past it and no id is used twice (the unused
    /// rest of a block is skipped).
    pub async fn allocate_producer_id_block(&self) -> Result<(i64, i64), KafkaError> {
        // In a cluster the blocks come from the active controller, so no two brokers share one.
        let q = self.quorum();
        if let Some(q) = &q {
            match q.forward(&Request::AllocateProducerIds).await? {
                None => {}
                Some(Response::ProducerIds { first, count }) => return Ok((first, count)),
                Some(Response::Error(e)) => return Err(e.into()),
                Some(other) => return Err(unexpected(&other)),
            }
        }
        let _permit = self.begin_change(q.as_deref()).await;
        let first = self.image.borrow().next_producer_id();
        let next = first
            .checked_add(PRODUCER_ID_BLOCK)
            .ok_or_else(|| KafkaError::Storage("producer ids are exhausted".into()))?;
        self.persist(vec![MetadataRecord::ProducerIds(ProducerIdsRecord {
            broker_id: self.node_id,
            next_producer_id: next,
        })])
        .await?;
        tracing::debug!(first, next, "producer id block allocated");
        Ok((first, PRODUCER_ID_BLOCK))
    }

    fn validate(
        &self,
        spec: &CreateTopic,
        default_partitions: i32,
    ) -> Result<TopicMeta, KafkaError> {
        if !(spec.internal && crate::placement::is_coordinator_log(&spec.name)) {
            catalog::validate_topic_name(&spec.name)?;
        }
        let partitions = match spec.partitions {
            -1 => default_partitions,
            n if n < 1 => {
                return Err(KafkaError::InvalidPartitions(format!(
                    "number of partitions must be at least 1, got {n}"
                )));
            }
            n if n > TOPIC_PARTITIONS_MAX => {
                return Err(KafkaError::InvalidPartitions(format!(
                    "number of partitions must be at most {TOPIC_PARTITIONS_MAX}, got {n}"
                )));
            }
            n => n,
        };
        let rf = match spec.replication_factor {
            -1 => self.default_replication_factor.get(),
            n => n,
        };
        let mut meta = TopicMeta::new(
            spec.name.clone(),
            uuid::Uuid::new_v4(),
            partitions,
            spec.configs.clone(),
        )?;
        if self.quorum().is_none() {
            if rf != 1 {
                return Err(KafkaError::InvalidReplicationFactor(format!(
                    "Replication factor: {rf} larger than available brokers: 1. A one-node broker (no --voters) keeps one replica per partition."
                )));
            }
            return Ok(meta);
        }
        // In a cluster: over the brokers that serve, leaders spread from a random start.
        // In a cluster: over the brokers that serve, leaders spread from a random start; a
        // factor above their number is refused, never made smaller.
        let placed = if spec.assignments.is_empty() {
            let start = usize::from(uuid::Uuid::new_v4().as_bytes()[0]);
            crate::cluster::placement::assign(partitions, rf, &self.live_brokers(), start)?
        } else {
            // Manual assignments: checked here too (a forwarded request is checked where it
            // is decided), every broker registered and serving.
            election::check_assignments(&spec.assignments, None, self.image.borrow().brokers())?;
            spec.assignments.clone()
        };
        // A new partition's replicas are all in sync (they are all empty) and the first leads.
        meta.assignment = std::sync::Arc::new(
            placed
                .into_iter()
                .map(|replicas| PartitionAssignment {
                    leader: replicas[0],
                    isr: replicas.clone(),
                    replicas,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    ..Default::default()
                })
                .collect(),
        );
        Ok(meta)
    }

    /// Tells every shard (this one included) about a change and waits for all of them.
    async fn broadcast<C: Call<Reply = Result<(), KafkaError>>>(
        &self,
        shard: &Rc<Shard>,
        make: impl Fn() -> C,
    ) -> Result<(), KafkaError> {
        let calls = (0..shard.shards()).map(|to| shard.call(to, make()));
        let mut result = Ok(());
        for reply in futures_util::future::join_all(calls).await {
            match reply {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(KafkaError::BrokerNotAvailable(stopping(e))),
            }
        }
        result
    }

    pub async fn create_topics(
        &self,
        shard: &Rc<Shard>,
        specs: Vec<CreateTopic>,
        validate_only: bool,
        context: wire::Forwarded,
    ) -> Vec<Result<TopicMeta, KafkaError>> {
        let q = self.quorum();
        if let Some(q) = &q {
            let req = Request::CreateTopics {
                context: context.clone(),
                topics: specs.iter().map(wire::TopicSpec::from).collect(),
                validate_only,
            };
            match q.forward(&req).await {
                Ok(None) => {}
                Ok(Some(Response::Topics { results, applied })) => {
                    q.wait_applied_for(applied).await;
                    // As this node applied it (with its partitions' placement), or as the
                    // controller described it when this node is behind.
                    return results
                        .into_iter()
                        .map(|r| {
                            r.map(|c| {
                                self.image.borrow().topic_meta(&c.name).unwrap_or_else(|| {
                                    TopicMeta::stored(c.name, c.topic_id, c.partitions, c.configs)
                                })
                            })
                            .map_err(KafkaError::from)
                        })
                        .collect();
                }
                Ok(Some(other)) => return vec![Err(unexpected(&other)); specs.len()],
                Err(e) => return vec![Err(e); specs.len()],
            }
        }
        let _permit = self.begin_change(q.as_deref()).await;
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            let existing = match self.topic(&spec.name) {
                Ok(t) => t,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            if let Some(meta) = existing {
                out.push(if spec.if_not_exists {
                    Ok(meta)
                } else {
                    Err(KafkaError::TopicAlreadyExists)
                });
                continue;
            }
            let meta = match self.validate(&spec, shard.config.default_partitions) {
                Ok(m) => m,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            if validate_only {
                out.push(Ok(meta));
                continue;
            }
            if let Err(e) = self
                .persist(create_topic_records(&meta, self.node_id))
                .await
            {
                out.push(Err(e));
                continue;
            }
            // In a cluster the apply loop told every shard (of every node) already.
            if q.is_some() {
                tracing::info!(topic = %meta.name, partitions = meta.partitions, topic_id = %meta.topic_id, principal = %context.principal, client_id = %context.client_id, client = %context.client_addr, via_broker = context.via_broker, "topic created");
                out.push(Ok(meta));
                continue;
            }
            if let Err(e) = self.broadcast(shard, || TopicCreated(meta.clone())).await {
                out.push(Err(self.undo_create(shard, &meta, e).await));
                continue;
            }
            // Any client can create topics (auto-creation included): rate-limited.
            match shard
                .log
                .allow(LogKind::TopicCreated, std::time::Instant::now())
            {
                Some(held_back) => {
                    tracing::info!(topic = %meta.name, partitions = meta.partitions, topic_id = %meta.topic_id, held_back, "topic created")
                }
                None => {
                    tracing::debug!(topic = %meta.name, partitions = meta.partitions, topic_id = %meta.topic_id, "topic created")
                }
            }
            out.push(Ok(meta));
        }
        out
    }

    /// A shard could not open its partitions of a new topic (it removed them again): the
    /// others delete theirs, and the topic is removed from the metadata log, so a creation is
    /// all or nothing and the next start does not meet a topic it cannot open. The shards go
    /// first: closing their logs frees the descriptors the metadata append may need. Returns
    /// the creation's error (or the undo's, which is worse: then the topic is still there).
    async fn undo_create(&self, shard: &Rc<Shard>, meta: &TopicMeta, e: KafkaError) -> KafkaError {
        let name = meta.name.clone();
        if let Err(undo) = self.broadcast(shard, || TopicDeleted(name.clone())).await {
            tracing::error!(topic = %name, error = %undo, "could not undo a failed topic creation on every shard");
            return undo;
        }
        let remove = MetadataRecord::RemoveTopic(RemoveTopicRecord {
            topic_id: meta.topic_id,
        });
        if let Err(undo) = self.persist(vec![remove]).await {
            tracing::error!(topic = %name, error = %undo, "could not remove a failed topic creation from the metadata log");
            return undo;
        }
        tracing::warn!(topic = %name, error = %e, "topic creation failed and was undone");
        e
    }

    pub async fn delete_topics(
        &self,
        shard: &Rc<Shard>,
        names: Vec<String>,
        context: wire::Forwarded,
    ) -> Vec<Result<(), KafkaError>> {
        let q = self.quorum();
        if let Some(answers) = self
            .forward_change(q.as_deref(), names.len(), || Request::DeleteTopics {
                context: context.clone(),
                names: names.clone(),
            })
            .await
        {
            return answers;
        }
        let _permit = self.begin_change(q.as_deref()).await;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if crate::placement::is_coordinator_log(&name) {
                out.push(Err(KafkaError::InvalidTopic(format!(
                    "'{name}' is an internal log of the coordinators and cannot be deleted"
                ))));
                continue;
            }
            let meta = match self.existing_topic(&name) {
                Ok(meta) => meta,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let remove = MetadataRecord::RemoveTopic(RemoveTopicRecord {
                topic_id: meta.topic_id,
            });
            if let Err(e) = self.persist(vec![remove]).await {
                out.push(Err(e));
                continue;
            }
            if q.is_some() {
                tracing::info!(topic = %name, principal = %context.principal, client_id = %context.client_id, client = %context.client_addr, via_broker = context.via_broker, "topic deleted");
                out.push(Ok(()));
                continue;
            }
            let deleted = self.broadcast(shard, || TopicDeleted(name.clone())).await;
            tracing::info!(topic = %name, "topic deleted");
            out.push(deleted);
        }
        out
    }

    /// Changes topic configs: each change is applied to the topic's current configs (or to
    /// none, with `replace`), validated as a whole, persisted (one config record per key set
    /// or removed) and then sent to every shard, which applies the new segment settings to
    /// its open logs. Retention, flush and size settings are read from the catalog cache, so
    /// they apply from the next pass or produce.
    pub async fn alter_topic_configs(
        &self,
        shard: &Rc<Shard>,
        changes: Vec<AlterTopicConfig>,
        validate_only: bool,
        context: wire::Forwarded,
    ) -> Vec<Result<(), KafkaError>> {
        let q = self.quorum();
        if let Some(answers) = self
            .forward_change(q.as_deref(), changes.len(), || Request::AlterConfigs {
                context: context.clone(),
                changes: changes.iter().map(wire::ConfigChange::from).collect(),
                validate_only,
            })
            .await
        {
            return answers;
        }
        let _permit = self.begin_change(q.as_deref()).await;
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            if change.broker {
                out.push(self.alter_broker_configs(&change, validate_only).await);
                continue;
            }
            let old = match self.existing_topic(&change.topic) {
                Ok(old) => old,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let configs = match apply_config_ops(&old.configs, &change) {
                Ok(c) => c,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            if validate_only || configs == old.configs {
                out.push(Ok(()));
                continue;
            }
            let records = config_change_records(&old.name, &old.configs, &configs);
            let meta = match TopicMeta::new(old.name.clone(), old.topic_id, old.partitions, configs)
            {
                Ok(m) => m,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            if let Err(e) = self.persist(records).await {
                out.push(Err(e));
                continue;
            }
            if q.is_some() {
                tracing::info!(topic = %meta.name, configs = ?meta.configs, principal = %context.principal, client_id = %context.client_id, client = %context.client_addr, via_broker = context.via_broker, "topic configs changed");
                out.push(Ok(()));
                continue;
            }
            let changed = self
                .broadcast(shard, || TopicConfigChanged(meta.clone()))
                .await;
            tracing::info!(topic = %meta.name, configs = ?meta.configs, "topic configs changed");
            out.push(changed);
        }
        out
    }
}

impl Controller {
    /// Dynamic broker configs (AlterConfigs on a BROKER resource): the replication throttle
    /// rates and the topic defaults of [`DYNAMIC_BROKER_CONFIGS`], stored as broker config
    /// records so every broker applies them (see
    /// [`crate::shard::Shard::apply_dynamic_configs`]).
    async fn alter_broker_configs(
        &self,
        change: &AlterTopicConfig,
        validate_only: bool,
    ) -> Result<(), KafkaError> {
        let name = change.topic.as_str();
        if !name.is_empty() && name.parse::<i32>().map_or(true, |id| id < 0) {
            return Err(KafkaError::InvalidRequest(format!(
                "broker resource '{name}' is not a broker id (or empty, for every broker)"
            )));
        }
        let old = self
            .image
            .borrow()
            .configs(ConfigResource::Broker, name)
            .cloned()
            .unwrap_or_default();
        let mut new = if change.replace {
            BTreeMap::new()
        } else {
            old.clone()
        };
        for (k, v) in &change.ops {
            if !DYNAMIC_BROKER_CONFIGS.contains(&k.as_str()) {
                return Err(KafkaError::InvalidRequest(format!(
                    "broker config '{k}' cannot be changed at run time (only {})",
                    DYNAMIC_BROKER_CONFIGS.join(", ")
                )));
            }
            match v {
                Some(v) => {
                    check_dynamic_broker_config(k, v)?;
                    new.insert(k.clone(), v.clone());
                }
                None => {
                    new.remove(k);
                }
            }
        }
        if validate_only || new == old {
            return Ok(());
        }
        let records = crate::storage::metadata::image::resource_config_change_records(
            ConfigResource::Broker,
            name,
            &old,
            &new,
        );
        self.persist(records).await?;
        tracing::info!(broker = name, configs = ?new, "dynamic broker configs changed");
        Ok(())
    }

    /// The dynamic broker configs of this broker (resource = its id) and of every broker
    /// (resource "").
    pub fn dynamic_broker_configs(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let image = self.image.borrow();
        let get = |name: &str| {
            image
                .configs(ConfigResource::Broker, name)
                .cloned()
                .unwrap_or_default()
        };
        (get(&self.node_id.to_string()), get(""))
    }

    /// CreatePartitions: adds partitions to topics, placed over the brokers that serve (on
    /// one node, this one). `topics`: (name, new total count, explicit replica lists of the
    /// new partitions).
    pub async fn create_partitions(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<(String, i32, Vec<Vec<i32>>)>,
        validate_only: bool,
        context: wire::Forwarded,
    ) -> Vec<Result<(), KafkaError>> {
        let q = self.quorum();
        if let Some(answers) = self
            .forward_change(q.as_deref(), topics.len(), || Request::CreatePartitions {
                context: context.clone(),
                topics: topics.clone(),
                validate_only,
            })
            .await
        {
            return answers;
        }
        let _permit = self.begin_change(q.as_deref()).await;
        let mut out = Vec::with_capacity(topics.len());
        for (name, count, assignments) in topics {
            let records = match self.partition_records(&name, count, &assignments) {
                Ok(r) => r,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            if validate_only {
                out.push(Ok(()));
                continue;
            }
            if let Err(e) = self.persist(records).await {
                out.push(Err(e));
                continue;
            }
            // In a cluster the apply loop told every shard; on one node, this does.
            let told = match (&q, self.topic(&name)) {
                (Some(_), _) => Ok(()),
                (None, Ok(Some(meta))) => {
                    self.broadcast(shard, || crate::shard::calls::TopicChanged(meta.clone()))
                        .await
                }
                (None, _) => Err(KafkaError::UnknownTopicOrPartition),
            };
            if told.is_ok() {
                tracing::info!(topic = %name, partitions = count, principal = %context.principal, client_id = %context.client_id, client = %context.client_addr, via_broker = context.via_broker, "partitions created");
            }
            out.push(told);
        }
        out
    }

    /// The partition records that grow `name` to `count` partitions.
    fn partition_records(
        &self,
        name: &str,
        count: i32,
        assignments: &[Vec<i32>],
    ) -> Result<Vec<MetadataRecord>, KafkaError> {
        let meta = self.existing_topic(name)?;
        if count <= meta.partitions {
            return Err(KafkaError::InvalidPartitions(format!(
                "topic {name} has {} partitions; the new count {count} must be larger",
                meta.partitions
            )));
        }
        if count > TOPIC_PARTITIONS_MAX {
            return Err(KafkaError::InvalidPartitions(format!(
                "number of partitions must be at most {TOPIC_PARTITIONS_MAX}, got {count}"
            )));
        }
        let new = count - meta.partitions;
        let rf = meta
            .partition(0)
            .map_or(1, |a| i16::try_from(a.replicas.len()).unwrap_or(1));
        let placed = if !assignments.is_empty() {
            if assignments.len() != new as usize {
                return Err(KafkaError::InvalidRequest(format!(
                    "{} replica assignments for {new} new partitions",
                    assignments.len()
                )));
            }
            if self.quorum().is_none() {
                if assignments.iter().any(|a| a != &[self.node_id]) {
                    return Err(KafkaError::InvalidReplicaAssignment(format!(
                        "assignments must name exactly this broker ({})",
                        self.node_id
                    )));
                }
            } else {
                election::check_assignments(
                    assignments,
                    Some(usize::try_from(rf).unwrap_or(0)),
                    self.image.borrow().brokers(),
                )?;
            }
            assignments.to_vec()
        } else if self.quorum().is_none() {
            vec![vec![self.node_id]; new as usize]
        } else {
            let start = usize::from(uuid::Uuid::new_v4().as_bytes()[0]);
            crate::cluster::placement::assign(new, rf, &self.live_brokers(), start)?
        };
        Ok(placed
            .into_iter()
            .zip(meta.partitions..count)
            .map(|(replicas, partition)| {
                MetadataRecord::Partition(PartitionRecord {
                    topic_id: meta.topic_id,
                    partition,
                    leader: replicas[0],
                    isr: replicas.clone(),
                    replicas,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    ..Default::default()
                })
            })
            .collect())
    }

    /// Runs `job` on the store on the blocking pool (the store is moved there and back) and
    /// returns the images before and after it. `what` names the job in its error.
    async fn store_job(
        &self,
        what: &'static str,
        job: impl FnOnce(&mut MetadataStore) -> Result<(), MetadataError> + Send + 'static,
    ) -> Result<(MetadataImage, MetadataImage), KafkaError> {
        let mut store = self
            .store
            .borrow_mut()
            .take()
            .ok_or_else(Self::unavailable)?;
        let (store, done) = glommio::executor()
            .spawn_blocking(move || {
                let done = job(&mut store);
                (store, done)
            })
            .await;
        let new = store.image().clone();
        *self.store.borrow_mut() = Some(store);
        done.map_err(|e| KafkaError::Storage(format!("{what} failed: {e}")))?;
        let old = self.image.replace(new.clone());
        Ok((old, new))
    }

    /// Applies a committed entry (a cluster node): durable in the store with its Raft
    /// index, on the blocking pool. Returns the images before and after.
    pub async fn apply_committed(
        &self,
        records: Vec<MetadataRecord>,
        index: u64,
    ) -> Result<(MetadataImage, MetadataImage), KafkaError> {
        self.store_job("metadata write", move |store| {
            store.append_committed(&records, index).map(drop)
        })
        .await
    }

    /// Replaces the metadata with a snapshot the quorum sent.
    pub async fn install_snapshot(
        &self,
        records: Vec<MetadataRecord>,
        index: u64,
    ) -> Result<(MetadataImage, MetadataImage), KafkaError> {
        self.store_job("metadata snapshot", move |store| {
            store.install_raft_snapshot(&records, index)
        })
        .await
    }

    /// Serialises a change with the others (one at a time) and, in a cluster, waits until
    /// everything committed so far is applied here, so the change is checked against the
    /// current image.
    async fn begin_change(
        &self,
        q: Option<&Quorum>,
    ) -> glommio::Result<glommio::sync::Permit<'_>, ()> {
        let permit = self.changes.acquire_permit(1).await;
        if let Some(q) = q {
            q.catch_up().await;
        }
        permit
    }

    /// In a cluster, sends a change with one answer per item to the active controller:
    /// Some(answers) when another node made it (or it could not be sent), None when there is
    /// no cluster or this node is the active controller and makes it itself.
    async fn forward_change(
        &self,
        q: Option<&Quorum>,
        n: usize,
        req: impl FnOnce() -> Request,
    ) -> Option<Vec<Result<(), KafkaError>>> {
        let q = q?;
        match q.forward(&req()).await {
            Ok(None) => None,
            Ok(Some(r)) => Some(done_answers(q, r, n).await),
            Err(e) => Some(vec![Err(e); n]),
        }
    }

    /// The metadata as a snapshot for a lagging node: (Raft index, term, data).
    pub fn raft_snapshot(&self) -> Result<(u64, u64, Vec<u8>), String> {
        let q = self
            .quorum()
            .ok_or_else(|| "not in a cluster".to_string())?;
        let index = q.applied();
        let image = self.image.borrow();
        let data =
            crate::storage::metadata::store::encode_batch_at(0, Some(index), &image.to_records());
        Ok((index, q.applied_term(), data))
    }

    /// The active controller registers a broker (fenced, under a new epoch); a retried
    /// registration of the same incarnation gets its epoch again. A second live process with
    /// the same id is refused (DUPLICATE_BROKER_REGISTRATION).
    pub async fn register_broker(
        &self,
        q: &Quorum,
        mut reg: RegisterBrokerRecord,
    ) -> Result<i64, KafkaError> {
        let _permit = self.begin_change(Some(q)).await;
        let session = std::time::Duration::from_millis(q.cfg.session_timeout_ms);
        let (records, unclean) = {
            let image = self.image.borrow();
            if let Some(b) = image.brokers().get(&reg.broker_id) {
                if b.registration.incarnation_id == reg.incarnation_id {
                    return Ok(b.registration.broker_epoch);
                }
                let alive = q
                    .last_heartbeat(reg.broker_id)
                    .is_some_and(|t| t.elapsed() < session);
                if !b.fenced && alive {
                    return Err(KafkaError::Forwarded {
                        code: 101,
                        message: format!(
                            "node id {} is already registered by a live broker ({}:{}): node ids must be unique",
                            reg.broker_id, b.registration.host, b.registration.port
                        ),
                    });
                }
            }
            reg.broker_epoch = image.next_broker_epoch();
            // The new registration starts fenced: the previous one's partitions change as
            // for any fence (it may have restarted within its session, unnoticed).
            let elected = election::fence_records(
                &image,
                reg.broker_id,
                q.config().unclean_leader_election_enable,
            );
            let mut records = vec![MetadataRecord::RegisterBroker(reg.clone())];
            records.extend(elected.records);
            (records, elected.unclean)
        };
        self.persist(records).await?;
        self.note_unclean(&unclean);
        q.registered(reg.broker_id);
        tracing::info!(broker = reg.broker_id, broker_epoch = reg.broker_epoch, host = %reg.host, port = reg.port, "broker registered");
        Ok(reg.broker_epoch)
    }

    /// The active controller takes a heartbeat: a broker that caught up with the metadata
    /// since it registered is unfenced (and leads its leaderless partitions again); one that
    /// is stopping is fenced at once. Returns whether the broker is fenced now.
    pub async fn broker_heartbeat(
        &self,
        q: &Quorum,
        broker: i32,
        epoch: i64,
        applied: u64,
        shutting_down: bool,
        replica_ends: Vec<wire::ReplicaEnd>,
    ) -> Result<bool, KafkaError> {
        let fenced = {
            let image = self.image.borrow();
            match image.brokers().get(&broker) {
                Some(b) if b.registration.broker_epoch == epoch => b.fenced,
                _ => {
                    return Err(KafkaError::StaleBrokerEpoch(format!(
                        "broker {broker} epoch {epoch} is not registered"
                    )));
                }
            }
        };
        q.heartbeat_from(broker);
        {
            let mut ends = self.replica_ends.borrow_mut();
            ends.retain(|(b, _, _), _| *b != broker);
            ends.extend(
                replica_ends
                    .into_iter()
                    .map(|e| ((broker, e.topic_id, e.partition), (e.last_epoch, e.log_end))),
            );
        }
        if shutting_down && !fenced {
            let _permit = self.begin_change(Some(q)).await;
            self.fence_broker(q, broker, epoch).await?;
            tracing::info!(broker, "broker fenced: it is shutting down");
            return Ok(true);
        }
        if fenced && !shutting_down && applied >= q.registered_index(broker) {
            let _permit = self.begin_change(Some(q)).await;
            let elected = {
                let image = self.image.borrow();
                match image.brokers().get(&broker) {
                    Some(b) if b.registration.broker_epoch == epoch && b.fenced => {
                        Some(election::unfence_records(
                            &image,
                            broker,
                            q.config().unclean_leader_election_enable,
                        ))
                    }
                    _ => None,
                }
            };
            if let Some(elected) = elected {
                let mut records = vec![quorum::fence_record(broker, epoch, false)];
                records.extend(elected.records);
                self.persist(records).await?;
                self.note_unclean(&elected.unclean);
                tracing::info!(broker, "broker unfenced: it caught up with the metadata");
            }
            return Ok(false);
        }
        Ok(fenced)
    }

    /// What the active controller does on its own: write the cluster id of a new cluster,
    /// fence brokers whose session expired, and, with `--auto-leader-rebalance-enable`, give
    /// partitions back to their preferred leaders every
    /// `--leader-imbalance-check-interval-seconds`.
    pub async fn leader_duties(&self, q: &Quorum) {
        let now = std::time::Instant::now();
        let since = match self.leader_since.get() {
            Some(t) => t,
            None => {
                self.leader_since.set(Some(now));
                now
            }
        };
        let session = std::time::Duration::from_millis(q.cfg.session_timeout_ms);
        let needs_id = self.image.borrow().cluster_id().is_none();
        // A voter whose controller port has refused connections for two heartbeat intervals,
        // with no heartbeat since, is gone (kill -9, a crash): fenced now rather than after
        // its session, so its partitions fail over sooner. A cut link is not refused (it
        // times out) and waits for the session, as a slow broker does.
        let gone_after = std::time::Duration::from_millis(2 * q.cfg.heartbeat_interval_ms);
        let expired: Vec<(i32, i64, bool)> = self
            .image
            .borrow()
            .brokers()
            .values()
            .filter(|b| !b.fenced)
            .filter_map(|b| {
                let id = b.registration.broker_id;
                let last = q.last_heartbeat(id).unwrap_or(since);
                // Heartbeats to this controller only count (a new controller has seen none,
                // and the refusals may have begun before it was elected).
                let gone = q.refused_since(id).is_some_and(|t| {
                    now.duration_since(t) > gone_after
                        && q.last_heartbeat(id).is_none_or(|h| h <= t)
                });
                (gone || now.duration_since(last.max(since)) > session).then_some((
                    id,
                    b.registration.broker_epoch,
                    gone,
                ))
            })
            .collect();
        let config = q.config();
        let rebalance_every =
            std::time::Duration::from_secs(config.leader_imbalance_check_interval_seconds);
        let rebalance = config.auto_leader_rebalance_enable
            && now.duration_since(self.last_rebalance.get().unwrap_or(since)) >= rebalance_every;
        let completions = !reassign::completion_records(&self.image.borrow()).is_empty();
        let recovery = self.recovery_due(q, now);
        if !needs_id && expired.is_empty() && !rebalance && !completions && !recovery {
            return;
        }
        let _permit = self.begin_change(Some(q)).await;
        if self.image.borrow().cluster_id().is_none() {
            let record = quorum::cluster_id_record(q.cfg.cluster_id.as_deref());
            match self.persist(vec![record]).await {
                Ok(()) => tracing::info!(
                    cluster_id = self.image.borrow().cluster_id().unwrap_or_default(),
                    "new cluster: cluster id written"
                ),
                Err(e) => tracing::warn!(error = %e, "could not write the cluster id"),
            }
        }
        for (broker, epoch, gone) in expired {
            match self.fence_broker(q, broker, epoch).await {
                Ok(()) if gone => tracing::warn!(
                    broker,
                    "broker fenced: its controller port refuses connections (the process is gone)"
                ),
                Ok(()) => tracing::warn!(
                    broker,
                    session_timeout_ms = q.cfg.session_timeout_ms,
                    "broker fenced: no heartbeat within the session timeout"
                ),
                Err(e) => tracing::warn!(broker, error = %e, "could not fence a broker"),
            }
        }
        self.complete_reassignments().await;
        if recovery {
            self.recover_unclean_shutdowns(q, now).await;
        }
        if rebalance {
            self.last_rebalance.set(Some(now));
            let records = election::preferred_leader_records(&self.image.borrow());
            let moved = records.len();
            if moved > 0 {
                match self.persist(records).await {
                    Ok(()) => tracing::info!(
                        partitions = moved,
                        "leadership given back to preferred leaders"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not give partitions back to their preferred leaders")
                    }
                }
            }
        }
    }

    /// Whether a partition awaits unclean-shutdown recovery with its last in-sync replica
    /// unfenced, noting since when (the wait for its other replicas counts from then).
    fn recovery_due(&self, q: &Quorum, now: std::time::Instant) -> bool {
        let image = self.image.borrow();
        let brokers = image.brokers();
        let mut since = self.recovery_since.borrow_mut();
        let mut due = BTreeMap::new();
        for t in image.topics() {
            for p in t.partitions.values() {
                if let Some(last) = election::awaits_recovery(&image, t, p)
                    && brokers.get(&last).is_some_and(|b| !b.fenced)
                {
                    let key = (t.topic_id, p.partition);
                    let at = since.get(&key).copied().unwrap_or(now);
                    if !since.contains_key(&key) {
                        tracing::info!(
                            topic = %t.name,
                            partition = p.partition,
                            last_isr = last,
                            wait_ms = q.cfg.unclean_recovery_timeout_ms,
                            "unclean-shutdown recovery: the partition's last in-sync replica restarted after an unclean shutdown and may have lost unflushed records; it leads again only after the replicas' logs are compared"
                        );
                    }
                    due.insert(key, at);
                }
            }
        }
        *since = due;
        !since.is_empty()
    }

    /// Elects the leaders of the partitions awaiting unclean-shutdown recovery whose replicas
    /// can be compared now (see `election::recovery_records`). Called with the change permit
    /// held.
    async fn recover_unclean_shutdowns(&self, q: &Quorum, now: std::time::Instant) {
        let wait = std::time::Duration::from_millis(q.cfg.unclean_recovery_timeout_ms);
        let (records, recovered) = {
            let since = self.recovery_since.borrow();
            let ends = self.replica_ends.borrow();
            election::recovery_records(&self.image.borrow(), &ends, |id, partition| {
                since
                    .get(&(id, partition))
                    .is_some_and(|t| now.duration_since(*t) >= wait)
            })
        };
        if records.is_empty() {
            return;
        }
        match self.persist(records).await {
            Ok(()) => {
                for r in recovered {
                    if r.leader == r.last_isr {
                        tracing::info!(topic = %r.topic, partition = r.partition, leader = r.leader, ends = ?r.ends, "unclean-shutdown recovery: the last in-sync replica has the longest log and leads again");
                    } else {
                        tracing::warn!(topic = %r.topic, partition = r.partition, leader = r.leader, last_isr = r.last_isr, ends = ?r.ends, "unclean-shutdown recovery: another replica has a longer log than the last in-sync replica and leads; the others truncate to it");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not write the unclean-shutdown recovery elections")
            }
        }
    }

    /// Completes the reassignments whose adding replicas are all in the ISR now (see
    /// [`reassign::completion_records`]), one change each. Called with the change permit held.
    async fn complete_reassignments(&self) {
        let records = reassign::completion_records(&self.image.borrow());
        for r in records {
            let what = match &r {
                MetadataRecord::PartitionChange(c) => (c.topic_id, c.partition, c.replicas.clone()),
                _ => continue,
            };
            match self.persist(vec![r]).await {
                Ok(()) => {
                    tracing::info!(topic_id = %what.0, partition = what.1, replicas = ?what.2, "partition reassignment completed")
                }
                Err(e) => {
                    tracing::warn!(topic_id = %what.0, partition = what.1, error = %e, "could not complete a partition reassignment")
                }
            }
        }
    }

    /// AlterPartitionReassignments: starts (target given) or cancels (None) the reassignment
    /// of each partition, one change each (see [`reassign::reassign`]). A one-node broker
    /// has no other broker to move a replica to.
    pub async fn alter_reassignments(
        &self,
        items: Vec<(String, i32, Option<Vec<i32>>)>,
        context: wire::Forwarded,
    ) -> Vec<Result<(), KafkaError>> {
        let q = self.quorum();
        if let Some(answers) = self
            .forward_change(q.as_deref(), items.len(), || Request::AlterReassignments {
                context: context.clone(),
                items: items.clone(),
            })
            .await
        {
            return answers;
        }
        let _permit = self.begin_change(q.as_deref()).await;
        let mut out = Vec::with_capacity(items.len());
        for (topic, partition, target) in items {
            if q.is_none() {
                out.push(Err(KafkaError::InvalidReplicaAssignment(
                    "a one-node broker (no --voters) has no other broker to move replicas to"
                        .into(),
                )));
                continue;
            }
            let record = match reassign::reassign(
                &self.image.borrow(),
                &topic,
                partition,
                target.as_deref(),
            ) {
                Ok(r) => r,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let Some(record) = record else {
                out.push(Ok(()));
                continue;
            };
            match self.persist(vec![record]).await {
                Ok(()) => {
                    tracing::info!(topic = %topic, partition, target = ?target, principal = %context.principal, client_id = %context.client_id, client = %context.client_addr, via_broker = context.via_broker, "partition reassignment {}", if target.is_some() { "started" } else { "cancelled" });
                    out.push(Ok(()));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        out
    }

    /// The active controller imports a one-node broker's topics (see [`import::decide`]):
    /// every accepted topic and the producer-id mark in one change. Returns each topic's
    /// outcome, in request order; an error when the sender's registration is not current.
    pub async fn import_one_node(
        &self,
        q: &Quorum,
        req: wire::OneNodeImportRequest,
    ) -> Result<Vec<(String, Result<(), KafkaError>)>, KafkaError> {
        let _permit = self.begin_change(Some(q)).await;
        let decision = import::decide(&self.image.borrow(), &req)?;
        if !decision.records.is_empty() {
            self.persist(decision.records).await?;
        }
        let mut imported = 0usize;
        let out = decision
            .outcomes
            .into_iter()
            .map(|(name, outcome)| {
                let result = match outcome {
                    import::Outcome::Imported => {
                        imported += 1;
                        Ok(())
                    }
                    import::Outcome::AlreadyImported => Ok(()),
                    import::Outcome::Refused(why) => {
                        tracing::error!(broker = req.broker_id, topic = %name, "the import of a one-node broker's topic is refused: {why}");
                        Err(KafkaError::Forwarded {
                            code: KafkaError::TopicAlreadyExists.code(),
                            message: why,
                        })
                    }
                };
                (name, result)
            })
            .collect();
        tracing::info!(
            broker = req.broker_id,
            imported,
            topics = req.topics.len(),
            next_producer_id = req.next_producer_id,
            "one-node broker's topics imported"
        );
        Ok(out)
    }

    /// Every partition of every topic, for an ElectLeaders without a list.
    pub fn all_partitions(&self) -> Vec<(String, i32)> {
        self.image
            .borrow()
            .topics()
            .flat_map(|t| t.partitions.keys().map(|p| (t.name.clone(), *p)))
            .collect()
    }

    /// AlterUserScramCredentials (KIP-554): each change checked as Kafka checks it (a known
    /// mechanism, 4096 to 16384 iterations, a salt and a salted password of the mechanism's
    /// size, a credential to remove that exists) and persisted as its own record.
    pub async fn alter_scram_credentials(
        &self,
        changes: Vec<wire::ScramChange>,
        context: wire::Forwarded,
    ) -> Vec<Result<(), KafkaError>> {
        use crate::auth::scram::{Credential, ITERATIONS_MAX, ITERATIONS_MIN, Mechanism};
        use crate::storage::metadata::record::{
            RemoveUserScramCredentialRecord, UserScramCredentialRecord,
        };
        let q = self.quorum();
        if let Some(answers) = self
            .forward_change(q.as_deref(), changes.len(), || Request::AlterScram {
                context: context.clone(),
                changes: changes.clone(),
            })
            .await
        {
            return answers;
        }
        let _permit = self.begin_change(q.as_deref()).await;
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            let removal = c.upsert.is_none();
            let record = (|| {
                let m = Mechanism::from_id(c.mechanism).ok_or_else(|| {
                    KafkaError::UnsupportedSaslMechanism(format!(
                        "mechanism {} is not SCRAM-SHA-256 (1) or SCRAM-SHA-512 (2)",
                        c.mechanism
                    ))
                })?;
                if c.user.is_empty() {
                    return Err(KafkaError::UnacceptableCredential(
                        "the user name is empty".into(),
                    ));
                }
                let Some((iterations, salt, salted)) = c.upsert.clone() else {
                    if !self
                        .image
                        .borrow()
                        .scram_credentials()
                        .contains_key(&(c.user.clone(), c.mechanism))
                    {
                        return Err(KafkaError::ResourceNotFound(format!(
                            "user '{}' has no {} credential",
                            c.user,
                            m.name()
                        )));
                    }
                    return Ok(MetadataRecord::RemoveUserScramCredential(
                        RemoveUserScramCredentialRecord {
                            name: c.user.clone(),
                            mechanism: c.mechanism,
                        },
                    ));
                };
                let within = u32::try_from(iterations)
                    .ok()
                    .filter(|i| (ITERATIONS_MIN..=ITERATIONS_MAX).contains(i));
                let Some(iterations) = within else {
                    return Err(KafkaError::UnacceptableCredential(format!(
                        "{iterations} iterations: {} takes {ITERATIONS_MIN} to {ITERATIONS_MAX}",
                        m.name()
                    )));
                };
                let size = if m == Mechanism::Sha256 { 32 } else { 64 };
                if salt.is_empty() || salted.len() != size {
                    return Err(KafkaError::UnacceptableCredential(format!(
                        "a {} credential needs a salt and a {size}-byte salted password",
                        m.name()
                    )));
                }
                let cred = Credential::from_salted_password(m, &salted, salt, iterations);
                Ok(MetadataRecord::UserScramCredential(
                    UserScramCredentialRecord {
                        name: c.user.clone(),
                        mechanism: c.mechanism,
                        salt: cred.salt,
                        stored_key: cred.stored_key,
                        server_key: cred.server_key,
                        iterations,
                    },
                ))
            })();
            out.push(match record {
                Ok(r) => {
                    let r = self.persist(vec![r]).await;
                    if r.is_ok() {
                        tracing::info!(user = %c.user, mechanism = c.mechanism, removed = removal, "SCRAM credential changed");
                    }
                    r
                }
                Err(e) => Err(e),
            });
        }
        out
    }

    /// `user`'s SCRAM credential for mechanism `mechanism`, if any.
    pub fn scram_credential(
        &self,
        user: &str,
        mechanism: i8,
    ) -> Option<crate::storage::metadata::record::UserScramCredentialRecord> {
        self.image
            .borrow()
            .scram_credentials()
            .get(&(user.to_string(), mechanism))
            .cloned()
    }

    /// Every SCRAM credential: (user, mechanism id) -> the credential.
    pub fn scram_credentials(
        &self,
    ) -> Vec<(
        String,
        i8,
        crate::storage::metadata::record::UserScramCredentialRecord,
    )> {
        self.image
            .borrow()
            .scram_credentials()
            .iter()
            .map(|((u, m), r)| (u.clone(), *m, r.clone()))
            .collect()
    }

    /// ElectLeaders: a preferred (or unclean) election of each partition, one change each
    /// (see [`reassign::elect_leader`]). Unclean elections are logged and counted like the
    /// controller's own.
    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Vec<(String, i32)>,
        context: wire::Forwarded,
    ) -> Vec<Result<(), KafkaError>> {
        let q = self.quorum();
        if let Some(answers) = self
            .forward_change(q.as_deref(), partitions.len(), || Request::ElectLeaders {
                context: context.clone(),
                unclean,
                partitions: partitions.clone(),
            })
            .await
        {
            return answers;
        }
        let _permit = self.begin_change(q.as_deref()).await;
        let kind = if unclean {
            reassign::ElectionType::Unclean
        } else {
            reassign::ElectionType::Preferred
        };
        let mut out = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            if q.is_none() {
                // One node: it leads every partition already.
                out.push(Err(KafkaError::ElectionNotNeeded(
                    "a one-node broker leads every partition".into(),
                )));
                continue;
            }
            let elected = reassign::elect_leader(&self.image.borrow(), &topic, partition, kind);
            let (record, was_unclean) = match elected {
                Ok(r) => r,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            match self.persist(vec![record]).await {
                Ok(()) => {
                    self.note_unclean(was_unclean.as_slice());
                    tracing::info!(topic = %topic, partition, unclean, principal = %context.principal, client_id = %context.client_id, client = %context.client_addr, via_broker = context.via_broker, "leader elected on request");
                    out.push(Ok(()));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        out
    }

    /// Forgets leader-only state when this node stops being the active controller.
    pub fn lost_leadership(&self) {
        self.leader_since.set(None);
        self.last_rebalance.set(None);
    }
}

fn unexpected(r: &Response) -> KafkaError {
    KafkaError::InvalidRequest(format!("unexpected answer from the controller: {r:?}"))
}

/// The answers of a forwarded change, once this node has applied what it did.
async fn done_answers(q: &Quorum, r: Response, n: usize) -> Vec<Result<(), KafkaError>> {
    match r {
        Response::Done { results, applied } => {
            q.wait_applied_for(applied).await;
            results
                .into_iter()
                .map(|r| r.map_err(KafkaError::from))
                .collect()
        }
        other => vec![Err(unexpected(&other)); n],
    }
}

/// The configs a topic has after `change`, validated.
fn apply_config_ops(
    current: &BTreeMap<String, String>,
    change: &AlterTopicConfig,
) -> Result<BTreeMap<String, String>, KafkaError> {
    let mut configs = if change.replace {
        BTreeMap::new()
    } else {
        current.clone()
    };
    for (name, value) in &change.ops {
        if !catalog::is_topic_config(name) {
            return Err(KafkaError::InvalidConfig(format!(
                "unknown or unsupported topic config '{name}' (supported: {})",
                catalog::topic_config_names()
            )));
        }
        match value {
            Some(v) => configs.insert(name.clone(), v.clone()),
            None => configs.remove(name),
        };
    }
    catalog::TopicConfig::parse(&configs)?;
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(replace: bool, ops: &[(&str, Option<&str>)]) -> AlterTopicConfig {
        AlterTopicConfig {
            topic: "t".into(),
            broker: false,
            replace,
            ops: ops
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
        }
    }

    #[test]
    fn config_ops() {
        let mut cur = BTreeMap::new();
        cur.insert("retention.ms".to_string(), "1000".to_string());
        let got = apply_config_ops(
            &cur,
            &change(
                false,
                &[("segment.bytes", Some("2048")), ("retention.ms", None)],
            ),
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got["segment.bytes"], "2048");
        let got = apply_config_ops(&cur, &change(true, &[("flush.ms", Some("5"))])).unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["flush.ms"]);
        let bad = [
            change(false, &[("segment.bytes", Some("12"))]),
            change(false, &[("cleanup.policy", Some("compacted"))]),
            change(false, &[("retention.ms", Some("soon"))]),
        ];
        for c in bad {
            assert_eq!(apply_config_ops(&cur, &c).unwrap_err().code(), 40, "{c:?}");
        }
    }
}
