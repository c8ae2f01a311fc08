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

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use glommio::sync::Semaphore;

use crate::error::KafkaError;
use crate::log_limit::LogKind;
use crate::shard::Shard;
use crate::shard::calls::{
    AlterTopicConfig, Call, CreateTopic, TopicConfigChanged, TopicCreated, TopicDeleted,
};
use crate::storage::catalog::{self, TopicMeta};
use crate::storage::metadata::image::{config_change_records, create_topic_records};
use crate::storage::metadata::record::{MetadataRecord, ProducerIdsRecord, RemoveTopicRecord};
use crate::storage::metadata::{MetadataError, MetadataStore};

/// A shard that could not be told of a change is stopping (the router is only closed then).
fn stopping(_: crate::router::RouterError) -> &'static str {
    "a shard is stopping"
}

/// Producer ids in each block the controller hands out (each shard takes one at a time).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// Most partitions one topic may have.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

pub struct Controller {
    /// This broker's node id: it holds every replica and leads every partition.
    node_id: i32,
    /// The metadata store; None while an append runs on the blocking pool, and before
    /// start-up installs it.
    store: RefCell<Option<MetadataStore>>,
    changes: Semaphore,
}

impl Controller {
    pub fn new(node_id: i32) -> Controller {
        Controller {
            node_id,
            store: RefCell::new(None),
            changes: Semaphore::new(1),
        }
    }

    /// Hands the controller the store that start-up opened.
    pub fn install(&self, store: MetadataStore) {
        *self.store.borrow_mut() = Some(store);
    }

    fn unavailable() -> KafkaError {
        KafkaError::Storage("the metadata store is not available".to_string())
    }

    /// The topic as the metadata image has it.
    fn topic(&self, name: &str) -> Result<Option<TopicMeta>, KafkaError> {
        let store = self.store.borrow();
        let store = store.as_ref().ok_or_else(Self::unavailable)?;
        Ok(store.image().topic_meta(name))
    }

    /// A topic that must exist for the change at hand.
    fn existing_topic(&self, name: &str) -> Result<TopicMeta, KafkaError> {
        self.topic(name)?.ok_or(KafkaError::UnknownTopicOrPartition)
    }

    /// Appends `records` as one batch and waits until they are durable. The write and the
    /// fdatasync run on the blocking pool, never on this executor.
    async fn persist(&self, records: Vec<MetadataRecord>) -> Result<(), KafkaError> {
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
        let _permit = self.changes.acquire_permit(1).await;
        let first = {
            let store = self.store.borrow();
            store
                .as_ref()
                .ok_or_else(Self::unavailable)?
                .image()
                .next_producer_id()
        };
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
        catalog::validate_topic_name(&spec.name)?;
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
        if spec.replication_factor != -1 && spec.replication_factor != 1 {
            return Err(KafkaError::InvalidReplicationFactor(format!(
                "replication factor {} is larger than the 1 available broker",
                spec.replication_factor
            )));
        }
        TopicMeta::new(
            spec.name.clone(),
            uuid::Uuid::new_v4(),
            partitions,
            spec.configs.clone(),
        )
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
    ) -> Vec<Result<TopicMeta, KafkaError>> {
        let _permit = self.changes.acquire_permit(1).await;
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
    ) -> Vec<Result<(), KafkaError>> {
        let _permit = self.changes.acquire_permit(1).await;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
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
    ) -> Vec<Result<(), KafkaError>> {
        let _permit = self.changes.acquire_permit(1).await;
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
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
            let changed = self
                .broadcast(shard, || TopicConfigChanged(meta.clone()))
                .await;
            tracing::info!(topic = %meta.name, configs = ?meta.configs, "topic configs changed");
            out.push(changed);
        }
        out
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
            change(false, &[("cleanup.policy", None)]),
            change(false, &[("retention.ms", Some("soon"))]),
        ];
        for c in bad {
            assert_eq!(apply_config_ops(&cur, &c).unwrap_err().code(), 40, "{c:?}");
        }
    }
}
