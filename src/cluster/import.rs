//! The active controller's decision on a one-node broker's import (`Request::ImportOneNode`,
//! see `storage::metadata::import` for the broker's half). Pure: it reads the metadata image
//! and returns the records of one change with an outcome per topic, so the import is one
//! Raft entry and tests need no quorum.
//!
//! Rules:
//! - The sender must be registered under the epoch it names (else STALE_BROKER_EPOCH, and
//!   nothing is decided): an older incarnation of the broker does not import.
//! - A topic whose name the cluster has under the same topic id was imported already (an
//!   import interrupted after its commit, sent again): success, no record.
//! - A topic whose name the cluster has under another id, or whose id the cluster has under
//!   another name, is refused: the cluster's topic stays as it is, and the broker leaves the
//!   one-node data of that topic untouched on disk.
//! - Any other topic is created as the one-node broker had it: the same id, partition count
//!   and configs, every partition with the sender as its only replica, ISR and leader, at the
//!   leader epoch the broker computed (above every epoch in its one-node logs).
//! - The cluster's producer-id mark moves up to the one-node broker's, so no producer id the
//!   one-node broker handed out is handed out again.

use crate::error::KafkaError;
use crate::storage::metadata::image::MetadataImage;
use crate::storage::metadata::record::{
    AccessControlEntryRecord, ConfigRecord, ConfigResource, MetadataRecord, PartitionRecord,
    ProducerIdsRecord, TopicRecord,
};

use super::wire::OneNodeImportRequest;

/// What becomes of one topic of the import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Imported,
    AlreadyImported,
    Refused(String),
}

/// The records of the import (one change) and each topic's outcome, in request order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportDecision {
    pub records: Vec<MetadataRecord>,
    pub outcomes: Vec<(String, Outcome)>,
}

/// Decides an import against `image` (see the module doc).
pub fn decide(
    image: &MetadataImage,
    req: &OneNodeImportRequest,
) -> Result<ImportDecision, KafkaError> {
    match image.brokers().get(&req.broker_id) {
        Some(b) if b.registration.broker_epoch == req.broker_epoch => {}
        _ => {
            return Err(KafkaError::StaleBrokerEpoch(format!(
                "broker {} is not registered under epoch {}",
                req.broker_id, req.broker_epoch
            )));
        }
    }
    let me = req.broker_id;
    let mut out = ImportDecision::default();
    let mut ids_taken_here = std::collections::BTreeSet::new();
    let mut names_taken_here = std::collections::BTreeSet::new();
    for t in &req.topics {
        let by_name = image.topic_id(&t.name);
        let id_owner = image
            .topics()
            .find(|i| i.topic_id == t.topic_id)
            .map(|i| i.name.clone());
        let outcome = match (by_name, id_owner) {
            (Some(id), _) if id == t.topic_id => Outcome::AlreadyImported,
            (Some(id), _) => Outcome::Refused(format!(
                "the cluster has a topic named {} with another topic id ({id}, the one-node \
                 broker's is {})",
                t.name, t.topic_id
            )),
            (None, Some(other)) => Outcome::Refused(format!(
                "the cluster's topic {other} has the topic id {} already",
                t.topic_id
            )),
            _ if t.partitions < 1 || t.topic_id.is_nil() => Outcome::Refused(format!(
                "{} partitions under topic id {}: not a topic to import",
                t.partitions, t.topic_id
            )),
            _ if !ids_taken_here.insert(t.topic_id) || !names_taken_here.insert(&t.name) => {
                Outcome::Refused("named twice in the import".to_string())
            }
            _ => {
                out.records.push(MetadataRecord::Topic(TopicRecord {
                    name: t.name.clone(),
                    topic_id: t.topic_id,
                }));
                out.records.extend((0..t.partitions).map(|partition| {
                    MetadataRecord::Partition(PartitionRecord {
                        topic_id: t.topic_id,
                        partition,
                        replicas: vec![me],
                        isr: vec![me],
                        leader: me,
                        leader_epoch: t.leader_epoch.max(0),
                        partition_epoch: 0,
                        ..Default::default()
                    })
                }));
                out.records.extend(t.configs.iter().map(|(k, v)| {
                    MetadataRecord::Config(ConfigRecord {
                        resource_type: ConfigResource::Topic,
                        resource_name: t.name.clone(),
                        name: k.clone(),
                        value: Some(v.clone()),
                    })
                }));
                Outcome::Imported
            }
        };
        out.outcomes.push((t.name.clone(), outcome));
    }
    // Client quotas: the cluster's own setting of a key wins over the one-node broker's.
    out.records.extend(
        req.client_quotas
            .iter()
            .filter(|q| {
                !q.remove
                    && image
                        .client_quotas()
                        .get(&q.entity)
                        .is_none_or(|keys| !keys.contains_key(&q.key))
            })
            .cloned()
            .map(MetadataRecord::ClientQuota),
    );
    // ACLs: each unless the cluster has the same one (by id, or the same binding).
    let same = |a: &AccessControlEntryRecord, b: &AccessControlEntryRecord| {
        AccessControlEntryRecord {
            id: b.id,
            ..a.clone()
        } == *b
    };
    let mut taken: Vec<&AccessControlEntryRecord> = Vec::new();
    for a in &req.acls {
        let known = image.acls().contains_key(&a.id)
            || image.acls().values().any(|b| same(a, b))
            || taken.iter().any(|b| same(a, b));
        if !known {
            taken.push(a);
        }
    }
    out.records.extend(
        taken
            .into_iter()
            .cloned()
            .map(MetadataRecord::AccessControlEntry),
    );
    if req.next_producer_id > image.next_producer_id() {
        out.records
            .push(MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: me,
                next_producer_id: req.next_producer_id,
            }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::metadata::import::ImportTopic;
    use crate::storage::metadata::record::RegisterBrokerRecord;
    use std::collections::BTreeMap;
    use uuid::Uuid;

    fn image_with_broker(epoch: i64) -> MetadataImage {
        let mut image = MetadataImage::default();
        image
            .apply(&MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                broker_id: 1,
                broker_epoch: epoch,
                incarnation_id: Uuid::from_u128(1),
                host: "h".into(),
                port: 1,
                controller_host: "h".into(),
                controller_port: 2,
                rack: None,
                unclean_shutdown: false,
                background_flush_default: false,
                listeners: Vec::new(),
            }))
            .unwrap();
        image
    }

    fn topic(name: &str, id: u128, partitions: i32) -> ImportTopic {
        ImportTopic {
            name: name.into(),
            topic_id: Uuid::from_u128(id),
            partitions,
            configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
            leader_epoch: 3,
        }
    }

    fn req(epoch: i64, topics: Vec<ImportTopic>, pid: i64) -> OneNodeImportRequest {
        OneNodeImportRequest {
            broker_id: 1,
            broker_epoch: epoch,
            topics,
            next_producer_id: pid,
            client_quotas: Vec::new(),
            acls: Vec::new(),
        }
    }

    #[test]
    fn topics_are_created_with_their_ids_on_the_sender_alone() {
        let mut image = image_with_broker(5);
        let d = decide(&image, &req(5, vec![topic("orders", 7, 3)], 2000)).unwrap();
        assert_eq!(d.outcomes, vec![("orders".to_string(), Outcome::Imported)]);
        image.apply_all(&d.records).unwrap();
        let meta = image.topic_meta("orders").unwrap();
        assert_eq!(meta.topic_id, Uuid::from_u128(7));
        assert_eq!(meta.partitions, 3);
        assert_eq!(meta.configs["retention.ms"], "1000");
        for a in meta.assignment.iter() {
            assert_eq!(
                (a.replicas.as_slice(), a.isr.as_slice()),
                (&[1][..], &[1][..])
            );
            assert_eq!((a.leader, a.leader_epoch), (1, 3));
        }
        assert_eq!(image.next_producer_id(), 2000);

        // Sent again (an interrupted import): already there, nothing written.
        let again = decide(&image, &req(5, vec![topic("orders", 7, 3)], 2000)).unwrap();
        assert!(again.records.is_empty(), "{again:?}");
        assert_eq!(
            again.outcomes,
            vec![("orders".to_string(), Outcome::AlreadyImported)]
        );
    }

    #[test]
    fn a_name_taken_under_another_id_is_refused_and_the_rest_imported() {
        let mut image = image_with_broker(5);
        let first = decide(&image, &req(5, vec![topic("orders", 7, 1)], 0)).unwrap();
        image.apply_all(&first.records).unwrap();
        let d = decide(
            &image,
            &req(
                5,
                vec![
                    topic("orders", 8, 3),
                    topic("payments", 9, 2),
                    topic("renamed", 7, 1),
                ],
                0,
            ),
        )
        .unwrap();
        assert!(matches!(d.outcomes[0].1, Outcome::Refused(ref why) if why.contains("orders")));
        assert_eq!(d.outcomes[1].1, Outcome::Imported);
        assert!(matches!(d.outcomes[2].1, Outcome::Refused(_)));
        image.apply_all(&d.records).unwrap();
        assert_eq!(image.topic_id("orders"), Some(Uuid::from_u128(7)));
        assert_eq!(image.topic_meta("payments").unwrap().partitions, 2);
        assert_eq!(image.topic_id("renamed"), None);
    }

    #[test]
    fn a_stale_broker_epoch_imports_nothing() {
        let image = image_with_broker(5);
        assert!(matches!(
            decide(&image, &req(4, vec![topic("orders", 7, 1)], 10)),
            Err(KafkaError::StaleBrokerEpoch(_))
        ));
        let mut other = req(5, vec![topic("orders", 7, 1)], 10);
        other.broker_id = 2;
        assert!(decide(&image, &other).is_err());
    }

    #[test]
    fn producer_ids_only_move_forward() {
        let mut image = image_with_broker(5);
        let d = decide(&image, &req(5, Vec::new(), 5000)).unwrap();
        image.apply_all(&d.records).unwrap();
        assert_eq!(image.next_producer_id(), 5000);
        let lower = decide(&image, &req(5, Vec::new(), 1000)).unwrap();
        assert!(lower.records.is_empty());
    }

    #[test]
    fn acls_come_along_unless_the_cluster_has_them() {
        let acl = |n: u128, principal: &str| AccessControlEntryRecord {
            id: uuid::Uuid::from_u128(n),
            resource_type: 2,
            resource_name: "orders".into(),
            pattern_type: 3,
            principal: principal.into(),
            host: "*".into(),
            operation: 4,
            permission_type: 3,
        };
        let mut image = image_with_broker(5);
        image
            .apply(&MetadataRecord::AccessControlEntry(acl(1, "User:alice")))
            .unwrap();
        let mut r = req(5, Vec::new(), 0);
        // The cluster's own (same id; same binding under another id), and a new one twice.
        r.acls = vec![
            acl(1, "User:alice"),
            acl(2, "User:alice"),
            acl(3, "User:bob"),
            acl(4, "User:bob"),
        ];
        let d = decide(&image, &r).unwrap();
        image.apply_all(&d.records).unwrap();
        let principals: Vec<&str> = image
            .acls()
            .values()
            .map(|a| a.principal.as_str())
            .collect();
        assert_eq!(principals, ["User:alice", "User:bob"]);
    }

    #[test]
    fn client_quotas_come_along_unless_the_cluster_sets_the_key() {
        use crate::storage::metadata::record::{ClientQuotaRecord, QuotaEntityPart, QuotaValue};
        let quota = |key: &str, value: f64| ClientQuotaRecord {
            entity: vec![QuotaEntityPart {
                entity_type: "client-id".into(),
                entity_name: Some("app".into()),
            }],
            key: key.into(),
            value: QuotaValue(value),
            remove: false,
        };
        let mut image = image_with_broker(5);
        image
            .apply(&MetadataRecord::ClientQuota(quota(
                "producer_byte_rate",
                1.0,
            )))
            .unwrap();
        let mut r = req(5, Vec::new(), 0);
        r.client_quotas = vec![
            quota("producer_byte_rate", 2.0),
            quota("consumer_byte_rate", 3.0),
        ];
        let d = decide(&image, &r).unwrap();
        image.apply_all(&d.records).unwrap();
        let keys = image.client_quotas().values().next().unwrap();
        assert_eq!(
            keys["producer_byte_rate"],
            QuotaValue(1.0),
            "the cluster's own"
        );
        assert_eq!(keys["consumer_byte_rate"], QuotaValue(3.0), "imported");
    }
}
