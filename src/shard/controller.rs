//! The controller: the one writer of the topic catalog.
//!
//! Lives on: shard 0 ([`crate::placement::CONTROLLER_SHARD`]). Other shards reach it through
//! the router. A change goes: validate -> write `catalog.json` atomically -> tell every shard
//! (each caches the topic and opens or deletes the partitions it owns) -> answer. Changes are
//! serialised by a local semaphore (metadata path only, never the data path), so an
//! auto-creation that races a creation of the same topic waits for it and then finds it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use glommio::sync::Semaphore;

use crate::error::KafkaError;
use crate::shard::Shard;
use crate::shard::calls::{
    AlterTopicConfig, Call, CreateTopic, TopicConfigChanged, TopicCreated, TopicDeleted,
};
use crate::storage::catalog::{self, CatalogData, TopicMeta};

/// A shard that could not be told of a change is stopping (the router is only closed then).
fn stopping(_: crate::router::RouterError) -> &'static str {
    "a shard is stopping"
}

/// Most partitions one topic may have.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

pub struct Controller {
    data_dir: PathBuf,
    cluster_id: String,
    topics: RefCell<BTreeMap<String, TopicMeta>>,
    changes: Semaphore,
}

impl Controller {
    pub fn new(data_dir: PathBuf, cluster_id: String, topics: Vec<TopicMeta>) -> Controller {
        Controller {
            data_dir,
            cluster_id,
            topics: RefCell::new(topics.into_iter().map(|t| (t.name.clone(), t)).collect()),
            changes: Semaphore::new(1),
        }
    }

    fn persist(&self) -> Result<(), KafkaError> {
        let data = CatalogData {
            cluster_id: self.cluster_id.clone(),
            topics: self.topics.borrow().values().cloned().collect(),
        };
        catalog::store(&self.data_dir, &data).map_err(|e| {
            tracing::error!(error = %e, "could not write the topic catalog");
            KafkaError::Storage(format!("catalog write failed: {e}"))
        })
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
        catalog::validate_configs(&spec.configs)?;
        Ok(TopicMeta {
            name: spec.name.clone(),
            topic_id: uuid::Uuid::new_v4(),
            partitions,
            configs: spec.configs.clone(),
        })
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
            let existing = self.topics.borrow().get(&spec.name).cloned();
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
            self.topics
                .borrow_mut()
                .insert(meta.name.clone(), meta.clone());
            if let Err(e) = self.persist() {
                self.topics.borrow_mut().remove(&meta.name);
                out.push(Err(e));
                continue;
            }
            let created = self.broadcast(shard, || TopicCreated(meta.clone())).await;
            tracing::info!(topic = %meta.name, partitions = meta.partitions, topic_id = %meta.topic_id, "topic created");
            out.push(created.map(|()| meta));
        }
        out
    }

    pub async fn delete_topics(
        &self,
        shard: &Rc<Shard>,
        names: Vec<String>,
    ) -> Vec<Result<(), KafkaError>> {
        let _permit = self.changes.acquire_permit(1).await;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let removed = self.topics.borrow_mut().remove(&name);
            let Some(meta) = removed else {
                out.push(Err(KafkaError::UnknownTopicOrPartition));
                continue;
            };
            if let Err(e) = self.persist() {
                self.topics.borrow_mut().insert(name, meta);
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
    /// none, with `replace`), validated as a whole, persisted and then sent to every shard,
    /// which applies the new segment settings to its open logs. Retention, flush and size
    /// settings are read from the catalog cache, so they apply from the next pass or produce.
    pub async fn alter_topic_configs(
        &self,
        shard: &Rc<Shard>,
        changes: Vec<AlterTopicConfig>,
        validate_only: bool,
    ) -> Vec<Result<(), KafkaError>> {
        let _permit = self.changes.acquire_permit(1).await;
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            let existing = self.topics.borrow().get(&change.topic).cloned();
            let Some(old) = existing else {
                out.push(Err(KafkaError::UnknownTopicOrPartition));
                continue;
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
            let meta = TopicMeta {
                configs,
                ..old.clone()
            };
            self.topics
                .borrow_mut()
                .insert(meta.name.clone(), meta.clone());
            if let Err(e) = self.persist() {
                self.topics.borrow_mut().insert(old.name.clone(), old);
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
        if !catalog::TOPIC_CONFIGS.contains(&name.as_str()) {
            return Err(KafkaError::InvalidConfig(format!(
                "unknown or unsupported topic config '{name}' (supported: {})",
                catalog::TOPIC_CONFIGS.join(", ")
            )));
        }
        match value {
            Some(v) => configs.insert(name.clone(), v.clone()),
            None => configs.remove(name),
        };
    }
    catalog::validate_configs(&configs)?;
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
