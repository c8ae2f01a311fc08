//! The transaction coordinator's shell: drives the pure state machine (`txn::state`) with
//! requests and time, makes every transition durable in `__transaction_state` before acting on
//! it, and writes the commit/abort markers to the partitions of a transaction through the
//! shards that own them.
//!
//! Lives on: the shard that owns the transactional id's `__transaction_state` partition
//! (`placement::txn_owner`); requests reach it through the router.
//!
//! Completing a transaction (EndTxn, a fence by InitProducerId, a timeout, recovery):
//!
//! 1. The Prepare state (PrepareCommit or PrepareAbort, with the partitions) is appended to
//!    the transaction log and fdatasync'd on the blocking pool. From here the outcome is
//!    decided: a restart finds the Prepare state and finishes the job ([`Shard::txn_recover`]).
//! 2. A marker (a control batch of the producer id and epoch) is appended to every partition
//!    of the transaction by its owner shard ([`calls::WriteTxnMarkers`]) and fdatasync'd
//!    there; a partition that fails is retried until it succeeds (or the broker stops, when
//!    step 1 lets the next start complete it). A partition that no longer exists is done.
//! 3. The Complete state is made durable the same way; only then is EndTxn answered.
//!
//! One operation per id at a time: the id is marked busy for the whole of an operation
//! (across its awaits), and a request for a busy id is answered CONCURRENT_TRANSACTIONS,
//! which clients retry. No `RefCell` borrow is held across an await.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::Shard;
use super::calls::{self, MarkerItem, ProduceItem};
use crate::clock::now_ms;
use crate::error::{ErrorCode, KafkaError};
use crate::protocol::batch;
use crate::txn::state::{self, EndOutcome, InitOutcome, InitRequest, TxnMeta};

/// How often each shard looks for transactions past their timeout.
pub const TXN_TICK_MS: u64 = 1000;
/// Pause before writing a marker again after a partition failed to take it.
const MARKER_RETRY_MS: u64 = 200;
/// Deadline of a WriteTxnMarkers request to another broker (its leader waits for its ISR).
const MARKER_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// An id's operation in flight; the id is free again when it is dropped.
struct Busy<'a> {
    shard: &'a Shard,
    id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.shard.txn_busy.borrow_mut().remove(&self.id);
    }
}

impl Shard {
    /// Marks `id` busy, or None when an operation on it is in flight.
    fn txn_take(&self, id: &str) -> Option<Busy<'_>> {
        self.txn_busy
            .borrow_mut()
            .insert(id.to_string())
            .then(|| Busy {
                shard: self,
                id: id.to_string(),
            })
    }

    fn txn_get(&self, id: &str) -> Option<TxnMeta> {
        self.txns.borrow().get(id).cloned()
    }

    /// Waits until a job's records are durable on every in-sync replica of their partition
    /// (at most `OFFSETS_COMMIT_TIMEOUT_MS`, as for groups), then runs its log-start move on
    /// the blocking pool.
    async fn txn_durable(&self, job: crate::txn::store::SyncJob) -> std::io::Result<()> {
        use crate::group::coordinator::OFFSETS_COMMIT_TIMEOUT_MS;
        let logs = self.txns.borrow().logs();
        let durable = logs.durable(crate::placement::TXN_TOPIC, job.partition, job.last);
        let timeout = async {
            glommio::timer::Timer::new(std::time::Duration::from_millis(OFFSETS_COMMIT_TIMEOUT_MS))
                .await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "__transaction_state-{}: not on every in-sync replica within {OFFSETS_COMMIT_TIMEOUT_MS} ms",
                    job.partition
                ),
            ))
        };
        futures_lite::future::or(durable, timeout).await?;
        if let Some(h) = job.housekeeping {
            let p = job.partition;
            glommio::executor()
                .spawn_blocking(move || crate::txn::store::run_housekeeping(p, h))
                .await;
        }
        Ok(())
    }

    /// Makes `meta` `id`'s state: appended, durable on every in-sync replica, then applied.
    async fn txn_persist(&self, id: &str, meta: TxnMeta) -> Result<(), ErrorCode> {
        let job = self
            .txns
            .borrow_mut()
            .append(id, &meta, now_ms())
            .map_err(|e| {
                tracing::warn!(transactional_id = id, error = %e, "cannot write the transaction log");
                ErrorCode::COORDINATOR_NOT_AVAILABLE
            })?;
        let durable = self.txn_durable(job).await;
        self.txns.borrow_mut().finish(durable, id, meta).map_err(|e| {
            tracing::error!(transactional_id = id, error = %e, "cannot sync the transaction log");
            ErrorCode::COORDINATOR_NOT_AVAILABLE
        })
    }

    /// InitProducerId with a transactional id: (producer id, epoch).
    pub async fn txn_init(
        self: &Rc<Self>,
        id: String,
        timeout_ms: i32,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), ErrorCode> {
        let _busy = self
            .txn_take(&id)
            .ok_or(ErrorCode::CONCURRENT_TRANSACTIONS)?;
        let mut fresh = None;
        // At most: a fresh id is fetched, an open transaction aborted, then the answer.
        for _ in 0..4 {
            let req = InitRequest {
                timeout_ms,
                producer_id,
                producer_epoch,
                max_timeout_ms: self.config.transaction_max_timeout_ms,
                fresh_producer_id: fresh,
                now_ms: now_ms(),
            };
            match state::init_producer_id(self.txn_get(&id).as_ref(), req)? {
                InitOutcome::NeedProducerId => {
                    fresh = Some(
                        self.new_producer_id()
                            .await
                            .map_err(|_| ErrorCode::COORDINATOR_NOT_AVAILABLE)?,
                    );
                }
                InitOutcome::Ready(m) => {
                    let answer = (m.producer_id, m.producer_epoch);
                    self.txn_persist(&id, m).await?;
                    tracing::debug!(transactional_id = %id, producer_id = answer.0, producer_epoch = answer.1, "transactional producer initialized");
                    return Ok(answer);
                }
                InitOutcome::AbortFirst(m) => {
                    tracing::info!(transactional_id = %id, producer_id = m.producer_id, "a new producer fences the open transaction: aborting it");
                    self.txn_complete(&id, m).await?;
                    // The retry of the loop then bumps the epoch for the new producer, now
                    // that the transaction is CompleteAbort. The client sent -1 or the old
                    // epoch, which the fence made the last epoch: both still pass.
                }
            }
        }
        Err(ErrorCode::CONCURRENT_TRANSACTIONS)
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn with the group's offsets partition).
    pub async fn txn_add_partitions(
        self: &Rc<Self>,
        id: String,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
    ) -> ErrorCode {
        let Some(_busy) = self.txn_take(&id) else {
            return ErrorCode::CONCURRENT_TRANSACTIONS;
        };
        let cur = self.txn_get(&id);
        match state::add_partitions(
            cur.as_ref(),
            producer_id,
            producer_epoch,
            &partitions,
            now_ms(),
        ) {
            Ok(None) => ErrorCode::NONE,
            Ok(Some(m)) => self
                .txn_persist(&id, m)
                .await
                .err()
                .unwrap_or(ErrorCode::NONE),
            Err(e) => e,
        }
    }

    /// EndTxn: answered once the markers are durable and the transaction Complete.
    pub async fn txn_end(
        self: &Rc<Self>,
        id: String,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> ErrorCode {
        let Some(_busy) = self.txn_take(&id) else {
            return ErrorCode::CONCURRENT_TRANSACTIONS;
        };
        let cur = self.txn_get(&id);
        match state::end_txn(cur.as_ref(), producer_id, producer_epoch, commit, now_ms()) {
            Ok(EndOutcome::AlreadyDone) => ErrorCode::NONE,
            Ok(EndOutcome::Prepare(m)) => self
                .txn_complete(&id, m)
                .await
                .err()
                .unwrap_or(ErrorCode::NONE),
            Err(e) => e,
        }
    }

    /// Steps 1 to 3 of the module doc for a Prepare state (the caller holds the id busy).
    async fn txn_complete(self: &Rc<Self>, id: &str, prepared: TxnMeta) -> Result<(), ErrorCode> {
        debug_assert!(prepared.state.is_prepare());
        self.txn_persist(id, prepared.clone()).await?;
        self.txn_write_markers(id, &prepared).await?;
        self.txn_persist(id, state::complete(&prepared, now_ms()))
            .await
    }

    /// Writes the markers of a Prepare state to every partition of it, retrying failures. A
    /// partition this broker leads (every partition, on one node) gets its marker through its
    /// owner shard; in a cluster, one led by another broker gets it by a WriteTxnMarkers
    /// request to that broker (see `peer.rs`), and a leaderless one is retried until it has a
    /// leader again.
    async fn txn_write_markers(self: &Rc<Self>, id: &str, m: &TxnMeta) -> Result<(), ErrorCode> {
        let commit = m.state == state::TxnState::PrepareCommit;
        let mut left: Vec<(String, i32)> = m.partitions.iter().cloned().collect();
        while !left.is_empty() {
            let mut by_owner: BTreeMap<usize, Vec<MarkerItem>> = BTreeMap::new();
            let mut by_broker: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
            let mut results: Vec<((String, i32), Result<(), KafkaError>)> = Vec::new();
            for (topic, partition) in &left {
                let leader = if self.config.cluster.is_some() {
                    self.topic(topic)
                        .map(|meta| meta.partition(*partition).map_or(-1, |a| a.leader))
                } else {
                    Some(self.config.node_id)
                };
                let tp = (topic.clone(), *partition);
                match leader {
                    None => results.push((tp, Err(KafkaError::UnknownTopicOrPartition))),
                    Some(l) if l == self.config.node_id => {
                        by_owner
                            .entry(self.owner(topic, *partition))
                            .or_default()
                            .push(MarkerItem {
                                topic: topic.clone(),
                                partition: *partition,
                                producer_id: m.producer_id,
                                producer_epoch: m.producer_epoch,
                                commit,
                                coordinator_epoch: 0,
                            });
                    }
                    Some(l) if l >= 0 => by_broker.entry(l).or_default().push(tp),
                    Some(_) => results.push((tp, Err(KafkaError::LeaderNotAvailable))),
                }
            }
            let local = by_owner.into_iter().map(|(owner, items)| {
                let shard = self.clone();
                async move {
                    let keys: Vec<(String, i32)> = items
                        .iter()
                        .map(|i| (i.topic.clone(), i.partition))
                        .collect();
                    let n = keys.len();
                    let answers = match shard.call(owner, calls::WriteTxnMarkers(items)).await {
                        Ok(a) if a.len() == n => a,
                        _ => vec![Err(KafkaError::NotLeaderOrFollower); n],
                    };
                    keys.into_iter().zip(answers).collect::<Vec<_>>()
                }
            });
            let remote = by_broker.into_iter().map(|(broker, tps)| {
                let shard = self.clone();
                async move { shard.remote_markers(broker, m, commit, tps).await }
            });
            let (local, remote) = futures_lite::future::zip(
                futures_util::future::join_all(local),
                futures_util::future::join_all(remote),
            )
            .await;
            results.extend(local.into_iter().flatten());
            results.extend(remote.into_iter().flatten());
            left.clear();
            for (tp, r) in results {
                match r {
                    Ok(()) => {}
                    // A partition deleted since it joined the transaction has nothing to mark.
                    Err(KafkaError::UnknownTopicOrPartition) => {}
                    // The partition knows a newer epoch of the producer than the marker's
                    // (an operator's WriteTxnMarkers, say): writing it again cannot succeed,
                    // and the newer epoch already ended what this marker would.
                    Err(e @ KafkaError::InvalidProducerEpoch(_)) => {
                        tracing::warn!(transactional_id = id, topic = %tp.0, partition = tp.1, error = %e, "transaction marker is stale; skipped");
                    }
                    Err(e) => {
                        tracing::warn!(transactional_id = id, topic = %tp.0, partition = tp.1, error = %e, "transaction marker not written; retrying");
                        left.push(tp);
                    }
                }
            }
            if !left.is_empty() {
                if self.stopping.get() {
                    // The Prepare state is durable: the next start completes it.
                    return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
                }
                glommio::timer::sleep(Duration::from_millis(MARKER_RETRY_MS)).await;
            }
        }
        Ok(())
    }

    /// The markers of `m` for partitions `broker` leads, by a WriteTxnMarkers request to it:
    /// one result per partition (a failed exchange fails them all, to be retried).
    async fn remote_markers(
        &self,
        broker: i32,
        m: &TxnMeta,
        commit: bool,
        tps: Vec<(String, i32)>,
    ) -> Vec<((String, i32), Result<(), KafkaError>)> {
        use kafka_protocol::messages::write_txn_markers_request::{
            WritableTxnMarker, WritableTxnMarkerTopic,
        };
        use kafka_protocol::messages::{
            ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
        };
        use kafka_protocol::protocol::StrBytes;
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in &tps {
            topics.entry(t.as_str()).or_default().push(*p);
        }
        let req = WriteTxnMarkersRequest::default().with_markers(vec![
            WritableTxnMarker::default()
                .with_producer_id(ProducerId(m.producer_id))
                .with_producer_epoch(m.producer_epoch)
                .with_transaction_result(commit)
                .with_coordinator_epoch(0)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            WritableTxnMarkerTopic::default()
                                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                                .with_partition_indexes(ps)
                        })
                        .collect(),
                ),
        ]);
        let timeout = Duration::from_millis(MARKER_REQUEST_TIMEOUT_MS);
        let answer: Result<WriteTxnMarkersResponse, String> = self
            .broker_request(broker, ApiKey::WriteTxnMarkers, 1, &req, timeout)
            .await;
        let mut codes: BTreeMap<(String, i32), i16> = BTreeMap::new();
        match answer {
            Ok(resp) => {
                for t in resp.markers.iter().flat_map(|mk| mk.topics.iter()) {
                    for p in &t.partitions {
                        codes.insert((t.name.0.to_string(), p.partition_index), p.error_code);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(broker, error = %e, "transaction markers not sent");
            }
        }
        tps.into_iter()
            .map(|tp| {
                let r = match codes.get(&tp).copied() {
                    Some(0) => Ok(()),
                    Some(c) if c == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code() => {
                        Err(KafkaError::UnknownTopicOrPartition)
                    }
                    Some(c) if c == ErrorCode::INVALID_PRODUCER_EPOCH.code() => {
                        Err(KafkaError::InvalidProducerEpoch(format!(
                            "broker {broker} refused the marker"
                        )))
                    }
                    _ => Err(KafkaError::NotLeaderOrFollower),
                };
                (tp, r)
            })
            .collect()
    }

    /// On an owner shard: appends a marker to each partition and answers once it is on disk.
    pub async fn write_txn_markers(self: &Rc<Self>, items: Vec<MarkerItem>) -> calls::Answers<()> {
        // The markers of a group's offsets partition go to its group coordinator, which keeps
        // that partition (AddOffsetsToTxn put it in the transaction).
        let (offsets, items): (Vec<_>, Vec<_>) = items
            .into_iter()
            .enumerate()
            .partition(|(_, m)| m.topic == crate::placement::OFFSETS_TOPIC);
        let mut out: Vec<(usize, Result<(), KafkaError>)> = Vec::new();
        for (i, m) in offsets {
            let r = self
                .groups
                .txn_marker(m.partition, (m.producer_id, m.producer_epoch), m.commit)
                .await;
            out.push((i, r));
        }
        let (slots, items): (Vec<usize>, Vec<MarkerItem>) = items.into_iter().unzip();
        let answers = self.write_partition_markers(items).await;
        out.extend(slots.into_iter().zip(answers));
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// Markers to ordinary partitions of this shard (see [`Shard::write_txn_markers`]).
    async fn write_partition_markers(
        self: &Rc<Self>,
        items: Vec<MarkerItem>,
    ) -> calls::Answers<()> {
        let now = now_ms();
        let mut answers: calls::Answers<()> = Vec::with_capacity(items.len());
        let mut produce = Vec::new();
        let mut slots = Vec::new();
        for (i, m) in items.iter().enumerate() {
            let bytes = Bytes::from(batch::control_batch(
                m.producer_id,
                m.producer_epoch,
                m.commit,
                m.coordinator_epoch,
                now,
            ));
            answers.push(Ok(()));
            match batch::split_produce_records(&bytes, usize::MAX) {
                Ok(batches) => {
                    produce.push(ProduceItem {
                        topic: m.topic.clone(),
                        partition: m.partition,
                        batches,
                        acks_all: false,
                        guard: None,
                    });
                    slots.push(i);
                }
                Err(e) => answers[i] = Err(e),
            }
        }
        let written = self.enqueue_produce(produce).wait().await;
        for (slot, w) in slots.into_iter().zip(written) {
            let m = &items[slot];
            answers[slot] = match w {
                Ok(out) => {
                    let tp = (m.topic.clone(), m.partition);
                    match self.flush_to(tp.clone(), out.last_offset).await {
                        Ok(()) => match self.sync_txn_index(&tp).await {
                            // In a cluster the marker counts once every in-sync replica has
                            // it (Kafka writes markers with acks=all), so a new leader has
                            // it too. Replicated below min.insync.replicas, it stands: writing
                            // it again would only add a second marker.
                            Ok(()) => match self.wait_replicated(tp, out.last_offset).await {
                                Err(KafkaError::NotEnoughReplicasAfterAppend { .. }) => Ok(()),
                                r => r,
                            },
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
        }
        answers
    }

    /// Makes the partition's new aborted-transaction index entries durable (on the blocking
    /// pool); a failure is the partition's storage error, and the marker is written again.
    async fn sync_txn_index(&self, tp: &(String, i32)) -> Result<(), KafkaError> {
        let jobs = match self.partitions.borrow_mut().get_mut(tp) {
            Some(p) => std::mem::take(&mut p.txn_index_unsynced),
            None => return Ok(()),
        };
        if jobs.is_empty() {
            return Ok(());
        }
        glommio::executor()
            .spawn_blocking(move || jobs.iter().try_for_each(|j| j.run()))
            .await
            .map_err(|e| KafkaError::Storage(format!("aborted-transaction index: {e}")))
    }

    /// DescribeProducers of owned partitions.
    pub fn describe_producers(
        &self,
        items: Vec<(String, i32)>,
    ) -> calls::Answers<Vec<calls::ProducerRow>> {
        let partitions = self.partitions.borrow();
        items
            .into_iter()
            .map(|tp| {
                let p = partitions
                    .get(&tp)
                    .ok_or(KafkaError::UnknownTopicOrPartition)?;
                Ok(p.producers
                    .iter()
                    .map(|(pid, e)| calls::ProducerRow {
                        producer_id: *pid,
                        producer_epoch: e.epoch,
                        last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                        last_timestamp: e.last_timestamp,
                        current_txn_start_offset: e.txn_first_offset.unwrap_or(-1),
                    })
                    .collect())
            })
            .collect()
    }

    /// At start: completes the transactions the last stop left in a Prepare state.
    pub fn txn_recover(self: &Rc<Self>) {
        let prepared: Vec<(String, TxnMeta)> = self
            .txns
            .borrow()
            .all()
            .filter(|(_, m)| m.state.is_prepare())
            .map(|(id, m)| (id.clone(), m.clone()))
            .collect();
        for (id, m) in prepared {
            tracing::info!(transactional_id = %id, state = m.state.name(), "completing a transaction left prepared by the last stop");
            self.txn_spawn_complete(id);
        }
    }

    /// Aborts the transactions open longer than their timeout, and forgets ids idle past
    /// `--transactional-id-expiration-ms`.
    pub fn txn_expire(self: &Rc<Self>) {
        let now = now_ms();
        let expiration =
            i64::try_from(self.config.transactional_id_expiration_ms).unwrap_or(i64::MAX);
        let idle: Vec<String> = self
            .txns
            .borrow()
            .all()
            .filter(|(_, m)| state::id_expired(m, now, expiration))
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            self.txn_spawn_forget(id, expiration);
        }
        let expired: Vec<(String, TxnMeta)> = self
            .txns
            .borrow()
            .all()
            .filter_map(|(id, m)| state::expire(m, now).map(|_| (id.clone(), m.clone())))
            .collect();
        for (id, m) in expired {
            tracing::info!(transactional_id = %id, producer_id = m.producer_id, timeout_ms = m.timeout_ms, "transaction timed out: aborting it");
            self.txn_spawn_complete(id);
        }
    }

    /// Writes `id`'s tombstone in its own task, if it is (still, once free) idle past the
    /// expiration.
    fn txn_spawn_forget(self: &Rc<Self>, id: String, expiration_ms: i64) {
        let shard = self.clone();
        glommio::spawn_local(async move {
            let Some(_busy) = shard.txn_take(&id) else {
                return;
            };
            if !shard
                .txn_get(&id)
                .is_some_and(|m| state::id_expired(&m, now_ms(), expiration_ms))
            {
                return;
            }
            let job = match shard.txns.borrow_mut().append_tombstone(&id, now_ms()) {
                Ok(job) => job,
                Err(e) => {
                    tracing::warn!(transactional_id = %id, error = %e, "cannot write the transaction log");
                    return;
                }
            };
            let durable = shard.txn_durable(job).await;
            let forgotten = shard.txns.borrow_mut().forgotten(durable, &id);
            match forgotten {
                Ok(()) => tracing::debug!(transactional_id = %id, "transactional id expired"),
                Err(e) => tracing::error!(transactional_id = %id, error = %e, "cannot sync the transaction log"),
            }
        })
        .detach();
    }

    /// Completes `id`'s transaction in its own task when it is (still, once the id is free)
    /// in a Prepare state or past its timeout; an id busy now is tried again at the next tick.
    fn txn_spawn_complete(self: &Rc<Self>, id: String) {
        let shard = self.clone();
        glommio::spawn_local(async move {
            let Some(_busy) = shard.txn_take(&id) else {
                return;
            };
            let next = match shard.txn_get(&id) {
                Some(cur) if cur.state.is_prepare() => cur,
                Some(cur) => match state::expire(&cur, now_ms()) {
                    Some(abort) => abort,
                    None => return,
                },
                None => return,
            };
            if let Err(e) = shard.txn_complete(&id, next).await {
                tracing::warn!(transactional_id = %id, error = ?e, "could not complete the transaction; will retry");
            }
        })
        .detach();
    }
}
