//! The metadata image: what the records say, applied in order. Pure: no I/O, no clock.
//!
//! The image is what the broker serves from (through [`TopicMeta`]s) and what a snapshot
//! writes down (as the records that rebuild it, [`MetadataImage::to_records`]). Applying a
//! record that does not fit the image (a partition of a topic that does not exist, a second
//! topic of the same name) is an error: the controller never writes one, so in a log it means
//! corruption or a bug, and replay stops there rather than guess.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::record::{
    AccessControlEntryRecord, BrokerFenceRecord, ClientQuotaRecord, ClusterIdRecord, ConfigRecord,
    ConfigResource, MetadataRecord, PartitionRecord, ProducerIdsRecord, QuotaEntityPart,
    QuotaValue, RegisterBrokerRecord, RemoveTopicRecord, TopicRecord, UserScramCredentialRecord,
};
use crate::storage::catalog::{PartitionAssignment, TopicMeta};

/// A registered broker and whether it is fenced (not serving: it missed heartbeats, or has
/// not caught up with the metadata since it registered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerImage {
    pub registration: RegisterBrokerRecord,
    pub fenced: bool,
}

/// One topic and its partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: BTreeMap<i32, PartitionRecord>,
}

/// Topics, partitions and configs, as of the last record applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    topics: BTreeMap<Uuid, TopicImage>,
    ids_by_name: BTreeMap<String, Uuid>,
    configs: BTreeMap<(ConfigResource, String), BTreeMap<String, String>>,
    brokers: BTreeMap<i32, BrokerImage>,
    cluster_id: Option<String>,
    /// One above the highest broker epoch registered.
    next_broker_epoch: i64,
    /// The last block of producer ids handed out: ids below its `next_producer_id` may be in
    /// use.
    producer_ids: Option<ProducerIdsRecord>,
    /// SCRAM credentials, by (user, mechanism).
    scram: BTreeMap<(String, i8), UserScramCredentialRecord>,
    /// Client quotas: entity (its parts sorted by type) -> quota key -> value.
    client_quotas: ClientQuotas,
    /// ACLs, by id.
    acls: BTreeMap<Uuid, AccessControlEntryRecord>,
}

/// Client quotas as the image holds them: entity (its parts sorted by type) -> key -> value.
pub type ClientQuotas = BTreeMap<Vec<QuotaEntityPart>, BTreeMap<String, QuotaValue>>;

/// A record that does not fit the image it is applied to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("topic '{name}' already exists")]
    TopicNameTaken { name: String },
    #[error("topic id {topic_id} already exists")]
    TopicIdTaken { topic_id: Uuid },
    #[error("no topic with id {topic_id}")]
    UnknownTopicId { topic_id: Uuid },
    #[error("no topic named '{name}' for a config record")]
    UnknownTopicName { name: String },
    #[error("partition {partition} of topic {topic_id} is negative")]
    NegativePartition { topic_id: Uuid, partition: i32 },
    #[error("no partition {partition} of topic {topic_id}")]
    UnknownPartition { topic_id: Uuid, partition: i32 },
    #[error("the cluster id is {old}; a record sets it to {new}")]
    ClusterIdChanged { old: String, new: String },
    #[error("producer ids would go back from {current} to {next}")]
    ProducerIdsBackwards { current: i64, next: i64 },
}

impl MetadataImage {
    /// Applies one record; on error the image is unchanged.
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), ImageError> {
        match record {
            MetadataRecord::Topic(TopicRecord { name, topic_id }) => {
                if self.ids_by_name.contains_key(name) {
                    return Err(ImageError::TopicNameTaken { name: name.clone() });
                }
                if self.topics.contains_key(topic_id) {
                    return Err(ImageError::TopicIdTaken {
                        topic_id: *topic_id,
                    });
                }
                self.ids_by_name.insert(name.clone(), *topic_id);
                self.topics.insert(
                    *topic_id,
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition(p) => {
                if p.partition < 0 {
                    return Err(ImageError::NegativePartition {
                        topic_id: p.topic_id,
                        partition: p.partition,
                    });
                }
                let topic = self
                    .topics
                    .get_mut(&p.topic_id)
                    .ok_or(ImageError::UnknownTopicId {
                        topic_id: p.topic_id,
                    })?;
                topic.partitions.insert(p.partition, p.clone());
            }
            MetadataRecord::Config(c) => {
                if c.resource_type == ConfigResource::Topic
                    && !self.ids_by_name.contains_key(&c.resource_name)
                {
                    return Err(ImageError::UnknownTopicName {
                        name: c.resource_name.clone(),
                    });
                }
                let key = (c.resource_type, c.resource_name.clone());
                match &c.value {
                    Some(v) => {
                        self.configs
                            .entry(key)
                            .or_default()
                            .insert(c.name.clone(), v.clone());
                    }
                    None => {
                        if let Some(map) = self.configs.get_mut(&key) {
                            map.remove(&c.name);
                            if map.is_empty() {
                                self.configs.remove(&key);
                            }
                        }
                    }
                }
            }
            MetadataRecord::RemoveTopic(RemoveTopicRecord { topic_id }) => {
                let topic = self
                    .topics
                    .remove(topic_id)
                    .ok_or(ImageError::UnknownTopicId {
                        topic_id: *topic_id,
                    })?;
                self.ids_by_name.remove(&topic.name);
                // A topic created later under the same name starts from the defaults.
                self.configs
                    .remove(&(ConfigResource::Topic, topic.name.clone()));
            }
            MetadataRecord::PartitionChange(c) => {
                let unknown = || ImageError::UnknownPartition {
                    topic_id: c.topic_id,
                    partition: c.partition,
                };
                let p = self
                    .topics
                    .get_mut(&c.topic_id)
                    .and_then(|t| t.partitions.get_mut(&c.partition))
                    .ok_or_else(unknown)?;
                p.leader = c.leader;
                p.leader_epoch = c.leader_epoch;
                p.isr = c.isr.clone();
                if let Some(r) = &c.replicas {
                    p.replicas = r.clone();
                }
                if let Some(r) = &c.adding_replicas {
                    p.adding_replicas = r.clone();
                }
                if let Some(r) = &c.removing_replicas {
                    p.removing_replicas = r.clone();
                }
                p.partition_epoch += 1;
            }
            MetadataRecord::RegisterBroker(r) => {
                self.next_broker_epoch = self.next_broker_epoch.max(r.broker_epoch + 1);
                self.brokers.insert(
                    r.broker_id,
                    BrokerImage {
                        registration: r.clone(),
                        fenced: true,
                    },
                );
            }
            MetadataRecord::ClusterId(ClusterIdRecord { cluster_id }) => match &self.cluster_id {
                Some(old) if old != cluster_id => {
                    return Err(ImageError::ClusterIdChanged {
                        old: old.clone(),
                        new: cluster_id.clone(),
                    });
                }
                _ => self.cluster_id = Some(cluster_id.clone()),
            },
            MetadataRecord::BrokerFence(BrokerFenceRecord {
                broker_id,
                broker_epoch,
                fenced,
            }) => {
                // A change for an older registration of the broker no longer applies.
                if let Some(b) = self.brokers.get_mut(broker_id)
                    && b.registration.broker_epoch == *broker_epoch
                {
                    b.fenced = *fenced;
                }
            }
            MetadataRecord::ProducerIds(r) => {
                let current = self.next_producer_id();
                if r.next_producer_id < current {
                    return Err(ImageError::ProducerIdsBackwards {
                        current,
                        next: r.next_producer_id,
                    });
                }
                self.producer_ids = Some(r.clone());
            }
            MetadataRecord::AccessControlEntry(r) => {
                self.acls.insert(r.id, r.clone());
            }
            MetadataRecord::RemoveAccessControlEntry(r) => {
                self.acls.remove(&r.id);
            }
            MetadataRecord::UserScramCredential(r) => {
                self.scram.insert((r.name.clone(), r.mechanism), r.clone());
            }
            MetadataRecord::RemoveUserScramCredential(r) => {
                self.scram.remove(&(r.name.clone(), r.mechanism));
            }
            MetadataRecord::ClientQuota(ClientQuotaRecord {
                entity,
                key,
                value,
                remove,
            }) => {
                if *remove {
                    if let Some(map) = self.client_quotas.get_mut(entity) {
                        map.remove(key);
                        if map.is_empty() {
                            self.client_quotas.remove(entity);
                        }
                    }
                } else {
                    self.client_quotas
                        .entry(entity.clone())
                        .or_default()
                        .insert(key.clone(), *value);
                }
            }
        }
        Ok(())
    }

    /// Every ACL, by id.
    pub fn acls(&self) -> &BTreeMap<Uuid, AccessControlEntryRecord> {
        &self.acls
    }

    /// Every SCRAM credential, by (user, mechanism).
    pub fn scram_credentials(&self) -> &BTreeMap<(String, i8), UserScramCredentialRecord> {
        &self.scram
    }

    /// The cluster id the quorum chose (None before the first controller wrote it, and on a
    /// single node, whose id is in `meta.properties`).
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// Registered brokers, fenced or not, by id.
    pub fn brokers(&self) -> &BTreeMap<i32, BrokerImage> {
        &self.brokers
    }

    /// The epoch the next registration gets.
    pub fn next_broker_epoch(&self) -> i64 {
        self.next_broker_epoch.max(1)
    }

    /// Every topic image, by id.
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    /// Applies records in order, all or none: on error the image is unchanged.
    pub fn apply_all<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a MetadataRecord>,
    ) -> Result<(), ImageError> {
        let mut next = self.clone();
        for r in records {
            next.apply(r)?;
        }
        *self = next;
        Ok(())
    }

    /// Every client quota, by entity.
    pub fn client_quotas(&self) -> &ClientQuotas {
        &self.client_quotas
    }

    /// The first producer id no block has handed out yet (0 before the first block).
    pub fn next_producer_id(&self) -> i64 {
        self.producer_ids.as_ref().map_or(0, |r| r.next_producer_id)
    }

    pub fn topic_id(&self, name: &str) -> Option<Uuid> {
        self.ids_by_name.get(name).copied()
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(self.ids_by_name.get(name)?)
    }

    pub fn configs(
        &self,
        resource: ConfigResource,
        name: &str,
    ) -> Option<&BTreeMap<String, String>> {
        self.configs.get(&(resource, name.to_string()))
    }

    /// The topic as the rest of the broker sees it. Its partition count is the number of its
    /// partition records: the controller writes partitions 0..n, so they are contiguous.
    pub fn topic_meta(&self, name: &str) -> Option<TopicMeta> {
        let topic = self.topic(name)?;
        let mut meta = TopicMeta::stored(
            topic.name.clone(),
            topic.topic_id,
            i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX),
            self.configs(ConfigResource::Topic, name)
                .cloned()
                .unwrap_or_default(),
        );
        meta.assignment = std::sync::Arc::new(
            topic
                .partitions
                .values()
                .map(|p| PartitionAssignment {
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    adding_replicas: p.adding_replicas.clone(),
                    removing_replicas: p.removing_replicas.clone(),
                })
                .collect(),
        );
        Some(meta)
    }

    /// Every topic, by name.
    pub fn topic_metas(&self) -> Vec<TopicMeta> {
        self.ids_by_name
            .keys()
            .filter_map(|name| self.topic_meta(name))
            .collect()
    }

    /// Records that rebuild this image from an empty one: each topic with its partitions,
    /// then every config (topic configs need their topic to exist first).
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        if let Some(cluster_id) = &self.cluster_id {
            out.push(MetadataRecord::ClusterId(ClusterIdRecord {
                cluster_id: cluster_id.clone(),
            }));
        }
        for b in self.brokers.values() {
            out.push(MetadataRecord::RegisterBroker(b.registration.clone()));
            if !b.fenced {
                out.push(MetadataRecord::BrokerFence(BrokerFenceRecord {
                    broker_id: b.registration.broker_id,
                    broker_epoch: b.registration.broker_epoch,
                    fenced: false,
                }));
            }
        }
        for (name, id) in &self.ids_by_name {
            let Some(topic) = self.topics.get(id) else {
                continue;
            };
            out.push(MetadataRecord::Topic(TopicRecord {
                name: name.clone(),
                topic_id: *id,
            }));
            out.extend(
                topic
                    .partitions
                    .values()
                    .map(|p| MetadataRecord::Partition(p.clone())),
            );
        }
        for ((resource_type, resource_name), map) in &self.configs {
            for (k, v) in map {
                out.push(MetadataRecord::Config(ConfigRecord {
                    resource_type: *resource_type,
                    resource_name: resource_name.clone(),
                    name: k.clone(),
                    value: Some(v.clone()),
                }));
            }
        }
        out.extend(self.producer_ids.clone().map(MetadataRecord::ProducerIds));
        out.extend(
            self.scram
                .values()
                .cloned()
                .map(MetadataRecord::UserScramCredential),
        );
        out.extend(
            self.acls
                .values()
                .cloned()
                .map(MetadataRecord::AccessControlEntry),
        );
        for (entity, map) in &self.client_quotas {
            for (key, value) in map {
                out.push(MetadataRecord::ClientQuota(ClientQuotaRecord {
                    entity: entity.clone(),
                    key: key.clone(),
                    value: *value,
                    remove: false,
                }));
            }
        }
        out
    }
}

/// The records that create `meta`: its partitions as `meta.assignment` places them, or, when
/// it is empty (a single node), with `node_id` holding every replica and leading.
pub fn create_topic_records(meta: &TopicMeta, node_id: i32) -> Vec<MetadataRecord> {
    let mut out = Vec::with_capacity(1 + meta.partitions.max(0) as usize + meta.configs.len());
    out.push(MetadataRecord::Topic(TopicRecord {
        name: meta.name.clone(),
        topic_id: meta.topic_id,
    }));
    out.extend((0..meta.partitions).map(|partition| {
        let placed = usize::try_from(partition)
            .ok()
            .and_then(|p| meta.assignment.get(p));
        MetadataRecord::Partition(match placed {
            Some(a) => PartitionRecord {
                topic_id: meta.topic_id,
                partition,
                replicas: a.replicas.clone(),
                isr: a.isr.clone(),
                leader: a.leader,
                leader_epoch: a.leader_epoch,
                partition_epoch: a.partition_epoch,
                adding_replicas: a.adding_replicas.clone(),
                removing_replicas: a.removing_replicas.clone(),
            },
            None => PartitionRecord {
                topic_id: meta.topic_id,
                partition,
                replicas: vec![node_id],
                isr: vec![node_id],
                leader: node_id,
                leader_epoch: 0,
                partition_epoch: 0,
                ..Default::default()
            },
        })
    }));
    out.extend(meta.configs.iter().map(|(k, v)| {
        MetadataRecord::Config(ConfigRecord {
            resource_type: ConfigResource::Topic,
            resource_name: meta.name.clone(),
            name: k.clone(),
            value: Some(v.clone()),
        })
    }));
    out
}

/// The config records that turn topic `name`'s configs from `old` into `new`: a set for every
/// key that is new or changed, a removal for every key that is gone.
pub fn config_change_records(
    name: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    resource_config_change_records(ConfigResource::Topic, name, old, new)
}

/// The config records that change resource `name`'s configs from `old` to `new`, for a topic
/// or a broker (dynamic broker configs: `name` is a broker id, or empty for the cluster-wide
/// default).
pub fn resource_config_change_records(
    resource: ConfigResource,
    name: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let record = |k: &String, value: Option<&String>| {
        MetadataRecord::Config(ConfigRecord {
            resource_type: resource,
            resource_name: name.to_string(),
            name: k.clone(),
            value: value.cloned(),
        })
    };
    let set = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| record(k, Some(v)));
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(|k| record(k, None));
    set.chain(removed).collect()
}

#[cfg(test)]
mod tests {
    fn plain(v: Vec<TopicMeta>) -> Vec<TopicMeta> {
        v.into_iter().map(TopicMeta::without_assignment).collect()
    }
    use super::*;

    fn meta(name: &str, id: u128, partitions: i32, configs: &[(&str, &str)]) -> TopicMeta {
        TopicMeta::stored(
            name.into(),
            Uuid::from_u128(id),
            partitions,
            configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn image_of(records: &[MetadataRecord]) -> MetadataImage {
        let mut image = MetadataImage::default();
        image.apply_all(records).unwrap();
        image
    }

    #[test]
    fn create_alter_delete() {
        let a = meta("a", 1, 3, &[("retention.ms", "1000")]);
        let b = meta("b", 2, 1, &[]);
        let mut image = image_of(&create_topic_records(&a, 7));
        image.apply_all(&create_topic_records(&b, 7)).unwrap();
        assert_eq!(plain(image.topic_metas()), vec![a.clone(), b.clone()]);
        let p = &image.topic("a").unwrap().partitions[&2];
        assert_eq!(
            (p.leader, &p.replicas, &p.isr, p.leader_epoch),
            (7, &vec![7], &vec![7], 0)
        );

        let altered = meta("a", 1, 3, &[("segment.bytes", "2048")]);
        let change = config_change_records("a", &a.configs, &altered.configs);
        assert_eq!(change.len(), 2, "one set, one removal: {change:?}");
        image.apply_all(&change).unwrap();
        assert_eq!(
            image.topic_meta("a").map(TopicMeta::without_assignment),
            Some(altered)
        );

        image
            .apply(&MetadataRecord::RemoveTopic(RemoveTopicRecord {
                topic_id: a.topic_id,
            }))
            .unwrap();
        assert_eq!(plain(image.topic_metas()), vec![b]);
        // A new topic of the same name does not inherit the old one's configs.
        let again = meta("a", 3, 1, &[]);
        image.apply_all(&create_topic_records(&again, 7)).unwrap();
        assert_eq!(
            image.topic_meta("a").map(TopicMeta::without_assignment),
            Some(again)
        );
    }

    #[test]
    fn records_that_do_not_fit_are_refused_and_change_nothing() {
        let a = meta("a", 1, 2, &[]);
        let mut image = image_of(&create_topic_records(&a, 1));
        let before = image.clone();
        let bad = [
            (
                create_topic_records(&meta("a", 9, 1, &[]), 1),
                ImageError::TopicNameTaken { name: "a".into() },
            ),
            (
                create_topic_records(&meta("z", 1, 1, &[]), 1),
                ImageError::TopicIdTaken {
                    topic_id: Uuid::from_u128(1),
                },
            ),
            (
                vec![MetadataRecord::RemoveTopic(RemoveTopicRecord {
                    topic_id: Uuid::from_u128(5),
                })],
                ImageError::UnknownTopicId {
                    topic_id: Uuid::from_u128(5),
                },
            ),
            (
                config_change_records("nope", &BTreeMap::new(), &a_config()),
                ImageError::UnknownTopicName {
                    name: "nope".into(),
                },
            ),
            (
                // The topic is created, then a bad partition: the whole batch is refused.
                {
                    let mut r = create_topic_records(&meta("c", 4, 1, &[]), 1);
                    r.push(MetadataRecord::Partition(PartitionRecord {
                        topic_id: Uuid::from_u128(4),
                        partition: -1,
                        replicas: vec![],
                        isr: vec![],
                        leader: 1,
                        leader_epoch: 0,
                        partition_epoch: 0,
                        ..Default::default()
                    }));
                    r
                },
                ImageError::NegativePartition {
                    topic_id: Uuid::from_u128(4),
                    partition: -1,
                },
            ),
        ];
        for (records, expected) in bad {
            assert_eq!(image.apply_all(&records).unwrap_err(), expected);
            assert_eq!(image, before);
        }
    }

    fn a_config() -> BTreeMap<String, String> {
        [("flush.ms".to_string(), "5".to_string())].into()
    }

    #[test]
    fn to_records_rebuilds_the_image() {
        let mut image = image_of(&create_topic_records(
            &meta("a", 1, 4, &[("flush.ms", "5")]),
            1,
        ));
        image
            .apply_all(&create_topic_records(&meta("b", 2, 2, &[]), 1))
            .unwrap();
        image
            .apply(&MetadataRecord::Config(ConfigRecord {
                resource_type: ConfigResource::Broker,
                resource_name: "1".into(),
                name: "log.retention.ms".into(),
                value: Some("9".into()),
            }))
            .unwrap();
        image
            .apply(&MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: 1,
                next_producer_id: 3000,
            }))
            .unwrap();
        let quota = |key: &str, value: f64, remove: bool| {
            MetadataRecord::ClientQuota(ClientQuotaRecord {
                entity: vec![QuotaEntityPart {
                    entity_type: "user".into(),
                    entity_name: None,
                }],
                key: key.into(),
                value: QuotaValue(value),
                remove,
            })
        };
        image
            .apply(&quota("producer_byte_rate", 1e6, false))
            .unwrap();
        image
            .apply(&quota("consumer_byte_rate", 2e6, false))
            .unwrap();
        image
            .apply(&quota("consumer_byte_rate", 0.0, true))
            .unwrap();
        assert_eq!(image.client_quotas().len(), 1);
        let acl = |n: u128| {
            MetadataRecord::AccessControlEntry(super::super::record::AccessControlEntryRecord {
                id: Uuid::from_u128(n),
                resource_type: 2,
                resource_name: "orders-".into(),
                pattern_type: 4,
                principal: format!("User:u{n}"),
                host: "*".into(),
                operation: 4,
                permission_type: 3,
            })
        };
        image.apply(&acl(1)).unwrap();
        image.apply(&acl(2)).unwrap();
        image
            .apply(&MetadataRecord::RemoveAccessControlEntry(
                super::super::record::RemoveAccessControlEntryRecord {
                    id: Uuid::from_u128(1),
                },
            ))
            .unwrap();
        assert_eq!(
            image.acls().keys().copied().collect::<Vec<_>>(),
            vec![Uuid::from_u128(2)]
        );
        assert_eq!(image_of(&image.to_records()), image);
        assert_eq!(image_of(&image.to_records()).next_producer_id(), 3000);
        image
            .apply(&quota("producer_byte_rate", 0.0, true))
            .unwrap();
        assert!(
            image.client_quotas().is_empty(),
            "an entity without keys is gone"
        );
        assert_eq!(
            image_of(&MetadataImage::default().to_records()),
            MetadataImage::default()
        );
    }

    #[test]
    fn producer_id_blocks_only_move_forward() {
        let mut image = MetadataImage::default();
        assert_eq!(image.next_producer_id(), 0);
        let block = |next| {
            MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: 0,
                next_producer_id: next,
            })
        };
        image.apply(&block(1000)).unwrap();
        image.apply(&block(2000)).unwrap();
        assert_eq!(
            image.apply(&block(1500)),
            Err(ImageError::ProducerIdsBackwards {
                current: 2000,
                next: 1500
            })
        );
        assert_eq!(image.next_producer_id(), 2000);
    }
}
