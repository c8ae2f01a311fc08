//! Partition reassignment (KIP-455) and leader elections on request (KIP-460), decided by the
//! active controller. Pure like `election`: each function reads the metadata image and returns
//! the record of one change (or an error), so tests need no quorum.
//!
//! A reassignment of a partition to target replicas T while its replicas are R goes in two
//! changes:
//! - **Start**: replicas = T followed by R\T, adding = T\R, removing = R\T; the ISR and the
//!   leader stay. The brokers of the adding replicas now hold a replica: they open the
//!   partition and follow the leader from its log start, and the leader adds each to the ISR
//!   once it caught up (AlterPartition, as for any follower).
//! - **Completion**, once every adding replica is in the ISR: replicas = T, ISR = ISR ∩ T,
//!   adding and removing cleared; a leader outside T gives way to the first replica of T in
//!   that ISR that is unfenced (leader epoch + 1). The controller looks for completions after
//!   each ISR change and on its periodic pass.
//!
//! A new target while one is in progress starts over from the original replicas (R = replicas
//! less adding), as Kafka does; a cancellation (no target) goes back to them, in their current
//! order (Kafka's revert: the start put T first, so R's own order is not kept).

use crate::error::KafkaError;
use crate::storage::metadata::image::{MetadataImage, TopicImage};
use crate::storage::metadata::record::{MetadataRecord, PartitionChangeRecord, PartitionRecord};

use super::election::UncleanElection;

/// A reassignment in progress, as ListPartitionReassignments shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ongoing {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// Whether `broker` is registered and unfenced.
fn serves(image: &MetadataImage, broker: i32) -> bool {
    image.brokers().get(&broker).is_some_and(|b| !b.fenced)
}

fn find<'a>(
    image: &'a MetadataImage,
    topic: &str,
    partition: i32,
) -> Result<(&'a TopicImage, &'a PartitionRecord), KafkaError> {
    let t = image
        .topic(topic)
        .ok_or(KafkaError::UnknownTopicOrPartition)?;
    let p = t
        .partitions
        .get(&partition)
        .ok_or(KafkaError::UnknownTopicOrPartition)?;
    Ok((t, p))
}

/// The replicas a partition had before its reassignment (all of them, when none is in
/// progress), in replica order.
fn original(p: &PartitionRecord) -> Vec<i32> {
    p.replicas
        .iter()
        .copied()
        .filter(|r| !p.adding_replicas.contains(r))
        .collect()
}

/// The change that moves `p` to (replicas, adding, removing) and `isr`, keeping its
/// leader if it is still a replica in `isr`, else electing the first replica of `prefer` in
/// `isr` that is unfenced. None when no such leader exists.
fn moved(
    image: &MetadataImage,
    t: &TopicImage,
    p: &PartitionRecord,
    (replicas, adding, removing): (Vec<i32>, Vec<i32>, Vec<i32>),
    isr: Vec<i32>,
    prefer: &[i32],
) -> Option<MetadataRecord> {
    let leader = if p.leader >= 0 && replicas.contains(&p.leader) && isr.contains(&p.leader) {
        p.leader
    } else {
        *prefer
            .iter()
            .find(|r| isr.contains(r) && serves(image, **r))?
    };
    Some(MetadataRecord::PartitionChange(PartitionChangeRecord {
        topic_id: t.topic_id,
        partition: p.partition,
        leader,
        leader_epoch: if leader == p.leader {
            p.leader_epoch
        } else {
            p.leader_epoch + 1
        },
        isr,
        replicas: Some(replicas),
        adding_replicas: Some(adding),
        removing_replicas: Some(removing),
    }))
}

/// Checks a target replica list as Kafka does (INVALID_REPLICA_ASSIGNMENT): not empty, no
/// broker twice, every broker registered.
fn check_target(image: &MetadataImage, target: &[i32]) -> Result<(), KafkaError> {
    let invalid = |why: String| Err(KafkaError::InvalidReplicaAssignment(why));
    if target.is_empty() {
        return invalid("The target replica list is empty.".into());
    }
    for (i, b) in target.iter().enumerate() {
        if target[..i].contains(b) {
            return invalid(format!(
                "The target replica list includes the broker {b} more than once."
            ));
        }
        if !image.brokers().contains_key(b) {
            return invalid(format!(
                "The target replica list includes broker {b}, but no such broker is registered."
            ));
        }
    }
    Ok(())
}

/// The change that starts (target Some) or cancels (None) a reassignment of `topic`'s
/// `partition`; Ok(None) when there is nothing to change (the target is the current replica
/// list). A start whose adding replicas are all in the ISR already completes at once.
pub fn reassign(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
) -> Result<Option<MetadataRecord>, KafkaError> {
    let (t, p) = find(image, topic, partition)?;
    let in_progress = !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty();
    let r = original(p);
    let target: Vec<i32> = match target {
        Some(target) => {
            check_target(image, target)?;
            target.to_vec()
        }
        None if !in_progress => {
            return Err(KafkaError::NoReassignmentInProgress(format!(
                "no reassignment of partition {partition} of topic {topic} is in progress"
            )));
        }
        // Cancel: back to the original replicas.
        None => r.clone(),
    };
    if target == p.replicas && !in_progress {
        return Ok(None);
    }
    let adding: Vec<i32> = target.iter().copied().filter(|b| !r.contains(b)).collect();
    let removing: Vec<i32> = r.iter().copied().filter(|b| !target.contains(b)).collect();
    let mut replicas = target.clone();
    replicas.extend(removing.iter().copied());
    let isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|b| replicas.contains(b))
        .collect();
    if adding.iter().all(|b| isr.contains(b)) {
        // Nothing to catch up (a cancellation, a reorder, a shrink, or targets in sync).
        return completed(image, t, p, target, isr)
            .map(Some)
            .ok_or_else(|| no_leader(topic, partition));
    }
    moved(image, t, p, (replicas, adding, removing), isr, &target)
        .map(Some)
        .ok_or_else(|| no_leader(topic, partition))
}

fn no_leader(topic: &str, partition: i32) -> KafkaError {
    KafkaError::InvalidReplicaAssignment(format!(
        "no replica of the new assignment of partition {partition} of topic {topic} is in sync and unfenced to lead it"
    ))
}

/// The completed state: replicas = `target`, ISR ∩ target, a leader from it.
fn completed(
    image: &MetadataImage,
    t: &TopicImage,
    p: &PartitionRecord,
    target: Vec<i32>,
    isr: Vec<i32>,
) -> Option<MetadataRecord> {
    let isr: Vec<i32> = isr.into_iter().filter(|b| target.contains(b)).collect();
    if isr.is_empty() {
        return None;
    }
    moved(
        image,
        t,
        p,
        (target.clone(), Vec::new(), Vec::new()),
        isr,
        &target,
    )
}

/// The changes that complete every reassignment whose adding replicas are all in the ISR.
/// One whose target has no unfenced member in the ISR to lead waits.
pub fn completion_records(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for t in image.topics() {
        for p in t.partitions.values() {
            if p.adding_replicas.is_empty() && p.removing_replicas.is_empty() {
                continue;
            }
            if !p.adding_replicas.iter().all(|b| p.isr.contains(b)) {
                continue;
            }
            let target: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|b| !p.removing_replicas.contains(b))
                .collect();
            out.extend(completed(image, t, p, target, p.isr.clone()));
        }
    }
    out
}

/// Every reassignment in progress, of `topics` (all, when None), by topic and partition.
pub fn ongoing(image: &MetadataImage, topics: Option<&[(String, Vec<i32>)]>) -> Vec<Ongoing> {
    let mut out = Vec::new();
    for t in image.topics() {
        let wanted: Option<&Vec<i32>> = match topics {
            None => None,
            Some(list) => match list.iter().find(|(n, _)| *n == t.name) {
                Some((_, ps)) => Some(ps),
                None => continue,
            },
        };
        for p in t.partitions.values() {
            if p.adding_replicas.is_empty() && p.removing_replicas.is_empty() {
                continue;
            }
            if wanted.is_some_and(|ps| !ps.contains(&p.partition)) {
                continue;
            }
            out.push(Ongoing {
                topic: t.name.clone(),
                partition: p.partition,
                replicas: p.replicas.clone(),
                adding: p.adding_replicas.clone(),
                removing: p.removing_replicas.clone(),
            });
        }
    }
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    out
}

/// Kafka's election types (ElectLeaders).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionType {
    /// The first replica, if it is unfenced and in the ISR.
    Preferred,
    /// A partition without a live leader: from the ISR if a member serves, else any live
    /// replica (records acknowledged since it fell behind may be lost).
    Unclean,
}

/// The change an ElectLeaders asks of `topic`'s `partition`, with the unclean election it
/// makes, if any. Errors as Kafka: ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE,
/// ELIGIBLE_LEADERS_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION.
pub fn elect_leader(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    kind: ElectionType,
) -> Result<(MetadataRecord, Option<UncleanElection>), KafkaError> {
    let (t, p) = find(image, topic, partition)?;
    let change = |leader: i32, isr: Vec<i32>| {
        MetadataRecord::PartitionChange(PartitionChangeRecord {
            topic_id: t.topic_id,
            partition,
            leader,
            leader_epoch: p.leader_epoch + 1,
            isr,
            ..Default::default()
        })
    };
    match kind {
        ElectionType::Preferred => {
            let Some(&preferred) = p.replicas.first() else {
                return Err(KafkaError::PreferredLeaderNotAvailable(
                    "the partition has no replicas".into(),
                ));
            };
            if p.leader == preferred {
                return Err(KafkaError::ElectionNotNeeded(format!(
                    "the preferred replica {preferred} leads partition {partition} of topic {topic} already"
                )));
            }
            if !p.isr.contains(&preferred) || !serves(image, preferred) {
                return Err(KafkaError::PreferredLeaderNotAvailable(format!(
                    "the preferred replica {preferred} of partition {partition} of topic {topic} is not in the ISR {:?} or not live",
                    p.isr
                )));
            }
            Ok((change(preferred, p.isr.clone()), None))
        }
        ElectionType::Unclean => {
            if p.leader >= 0 && serves(image, p.leader) {
                return Err(KafkaError::ElectionNotNeeded(format!(
                    "partition {partition} of topic {topic} has a live leader ({})",
                    p.leader
                )));
            }
            if let Some(&l) = p
                .replicas
                .iter()
                .find(|r| p.isr.contains(r) && serves(image, **r))
            {
                return Ok((change(l, p.isr.clone()), None));
            }
            let Some(&l) = p.replicas.iter().find(|r| serves(image, **r)) else {
                return Err(KafkaError::EligibleLeadersNotAvailable(format!(
                    "no replica of partition {partition} of topic {topic} is live"
                )));
            };
            let unclean = UncleanElection {
                topic: topic.to_string(),
                partition,
                leader: l,
            };
            Ok((change(l, vec![l]), Some(unclean)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::metadata::record::{BrokerFenceRecord, RegisterBrokerRecord, TopicRecord};
    use uuid::Uuid;

    const T: Uuid = Uuid::from_u128(7);

    /// Brokers 1..=n, unfenced but `fenced`; topic "t" with one partition.
    fn image(n: i32, fenced: &[i32], replicas: &[i32], isr: &[i32], leader: i32) -> MetadataImage {
        let mut records = Vec::new();
        for id in 1..=n {
            records.push(MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                broker_id: id,
                broker_epoch: 1,
                incarnation_id: Uuid::from_u128(id as u128),
                host: "h".into(),
                port: 1,
                controller_host: "h".into(),
                controller_port: 2,
                rack: None,
                unclean_shutdown: false,
                background_flush_default: false,
                listeners: Vec::new(),
            }));
            if !fenced.contains(&id) {
                records.push(MetadataRecord::BrokerFence(BrokerFenceRecord {
                    broker_id: id,
                    broker_epoch: 1,
                    fenced: false,
                }));
            }
        }
        records.push(MetadataRecord::Topic(TopicRecord {
            name: "t".into(),
            topic_id: T,
        }));
        records.push(MetadataRecord::Partition(PartitionRecord {
            topic_id: T,
            partition: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 5,
            partition_epoch: 2,
            ..Default::default()
        }));
        let mut img = MetadataImage::default();
        img.apply_all(&records).unwrap();
        img
    }

    fn part(img: &MetadataImage) -> PartitionRecord {
        img.topic("t").unwrap().partitions[&0].clone()
    }

    fn isr_change(img: &mut MetadataImage, isr: &[i32]) {
        let p = part(img);
        img.apply(&MetadataRecord::PartitionChange(PartitionChangeRecord {
            topic_id: T,
            partition: 0,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            isr: isr.to_vec(),
            ..Default::default()
        }))
        .unwrap();
    }

    #[test]
    fn a_move_starts_catches_up_and_completes() {
        // [1, 2] led by 1 -> [2, 3].
        let mut img = image(3, &[], &[1, 2], &[1, 2], 1);
        let start = reassign(&img, "t", 0, Some(&[2, 3])).unwrap().unwrap();
        img.apply(&start).unwrap();
        let p = part(&img);
        assert_eq!(p.replicas, vec![2, 3, 1]);
        assert_eq!(p.adding_replicas, vec![3]);
        assert_eq!(p.removing_replicas, vec![1]);
        assert_eq!(
            (p.isr.clone(), p.leader, p.leader_epoch),
            (vec![1, 2], 1, 5)
        );
        assert_eq!(p.partition_epoch, 3);
        // 3 not in sync yet: nothing completes.
        assert!(completion_records(&img).is_empty());
        assert_eq!(
            ongoing(&img, None),
            vec![Ongoing {
                topic: "t".into(),
                partition: 0,
                replicas: vec![2, 3, 1],
                adding: vec![3],
                removing: vec![1],
            }]
        );
        isr_change(&mut img, &[1, 2, 3]);
        let done = completion_records(&img);
        assert_eq!(done.len(), 1);
        img.apply(&done[0]).unwrap();
        let p = part(&img);
        assert_eq!(p.replicas, vec![2, 3]);
        assert_eq!(p.isr, vec![2, 3]);
        // 1 led and left: 2 leads, epoch + 1.
        assert_eq!((p.leader, p.leader_epoch), (2, 6));
        assert!(p.adding_replicas.is_empty() && p.removing_replicas.is_empty());
        assert!(ongoing(&img, None).is_empty());
    }

    #[test]
    fn cancel_goes_back_to_the_original_replicas() {
        let mut img = image(3, &[], &[1, 2], &[1, 2], 1);
        assert!(matches!(
            reassign(&img, "t", 0, None),
            Err(KafkaError::NoReassignmentInProgress(_))
        ));
        img.apply(&reassign(&img, "t", 0, Some(&[2, 3])).unwrap().unwrap())
            .unwrap();
        let cancel = reassign(&img, "t", 0, None).unwrap().unwrap();
        img.apply(&cancel).unwrap();
        let p = part(&img);
        // Kafka's revert: the replicas less the adding ones, in their current order.
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![2, 1], vec![1, 2], 1)
        );
        assert!(p.adding_replicas.is_empty() && p.removing_replicas.is_empty());
        // A new target replaces one in progress, from the original replicas.
        img.apply(&reassign(&img, "t", 0, Some(&[2, 3])).unwrap().unwrap())
            .unwrap();
        img.apply(&reassign(&img, "t", 0, Some(&[1, 3])).unwrap().unwrap())
            .unwrap();
        let p = part(&img);
        assert_eq!(p.replicas, vec![1, 3, 2]);
        assert_eq!((p.adding_replicas, p.removing_replicas), (vec![3], vec![2]));
    }

    #[test]
    fn targets_are_checked() {
        let img = image(3, &[], &[1, 2], &[1, 2], 1);
        for bad in [&[][..], &[1, 1], &[1, 9]] {
            assert!(matches!(
                reassign(&img, "t", 0, Some(bad)),
                Err(KafkaError::InvalidReplicaAssignment(_))
            ));
        }
        assert_eq!(
            reassign(&img, "x", 0, Some(&[1])),
            Err(KafkaError::UnknownTopicOrPartition)
        );
        assert_eq!(
            reassign(&img, "t", 3, Some(&[1])),
            Err(KafkaError::UnknownTopicOrPartition)
        );
        // The same list: nothing to do. A shrink completes at once.
        assert_eq!(reassign(&img, "t", 0, Some(&[1, 2])), Ok(None));
        let MetadataRecord::PartitionChange(c) =
            reassign(&img, "t", 0, Some(&[2])).unwrap().unwrap()
        else {
            panic!()
        };
        assert_eq!((c.replicas, c.isr, c.leader), (Some(vec![2]), vec![2], 2));
    }

    #[test]
    fn elections_on_request() {
        use ElectionType::*;
        let img = image(3, &[], &[1, 2, 3], &[1, 2, 3], 2);
        let (r, unclean) = elect_leader(&img, "t", 0, Preferred).unwrap();
        let MetadataRecord::PartitionChange(c) = r else {
            panic!()
        };
        assert_eq!((c.leader, c.leader_epoch, unclean), (1, 6, None));
        let img = image(3, &[], &[1, 2, 3], &[1, 2, 3], 1);
        assert!(matches!(
            elect_leader(&img, "t", 0, Preferred),
            Err(KafkaError::ElectionNotNeeded(_))
        ));
        assert!(matches!(
            elect_leader(&img, "t", 0, Unclean),
            Err(KafkaError::ElectionNotNeeded(_))
        ));
        let img = image(3, &[1], &[1, 2, 3], &[2, 3], 2);
        assert!(matches!(
            elect_leader(&img, "t", 0, Preferred),
            Err(KafkaError::PreferredLeaderNotAvailable(_))
        ));
        // Offline, its last ISR member fenced: 3 leads alone, uncleanly.
        let img = image(3, &[1], &[1, 3], &[1], -1);
        let (r, unclean) = elect_leader(&img, "t", 0, Unclean).unwrap();
        let MetadataRecord::PartitionChange(c) = r else {
            panic!()
        };
        assert_eq!((c.leader, c.isr), (3, vec![3]));
        assert_eq!(unclean.map(|u| u.leader), Some(3));
        let img = image(3, &[1, 3], &[1, 3], &[1], -1);
        assert!(matches!(
            elect_leader(&img, "t", 0, Unclean),
            Err(KafkaError::EligibleLeadersNotAvailable(_))
        ));
    }
}
