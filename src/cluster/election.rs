//! Who leads a partition and who is in its ISR, decided by the active controller: the
//! partition changes of a broker's fence and unfence, of a leader's AlterPartition, of the
//! preferred-leader pass, and the check of manual replica assignments. Pure: each function
//! reads the metadata image and returns the records of one change (or an error), so the
//! controller can write them in the same batch as what caused them, and tests need no quorum.
//!
//! Kafka KRaft's rules, kept here in one place:
//! - A broker that is fenced leaves every ISR in the change that fences it, unless it is the
//!   ISR's last member: that one stays, so the partition can be led again by the only replica
//!   known to have every acknowledged record.
//! - A new leader is the first replica, in replica order, that is in the (new) ISR and
//!   unfenced; none: the partition is offline (leader -1). With unclean leader election (the
//!   topic's `unclean.leader.election.enable`, else the broker's), an offline partition may be
//!   led by any unfenced replica, whose ISR is then itself alone: acknowledged records may be
//!   lost, so each such election is reported to be logged and counted.
//! - A partition that flushes in the background (`flush.ms`/`flush.messages`) whose last ISR
//!   member restarted after an unclean shutdown may have lost acknowledged records there:
//!   it is not led again at its unfence but by the replica with the longest log, once the
//!   replicas' log ends were compared (KIP-966's unclean-shutdown handling, see
//!   [`recovery_records`]).
//! - The leader epoch moves only when the leader changes; an ISR-only change keeps it (the
//!   partition epoch moves with every applied change, in the image).

use std::collections::BTreeMap;

use crate::error::KafkaError;
use crate::storage::metadata::image::{BrokerImage, MetadataImage, TopicImage};
use crate::storage::metadata::record::{
    ConfigResource, MetadataRecord, PartitionChangeRecord, PartitionRecord,
};

/// A leader elected outside the ISR (unclean): records may have been lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UncleanElection {
    pub topic: String,
    pub partition: i32,
    pub leader: i32,
}

/// The partition changes of one decision, and the unclean elections among them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Elected {
    pub records: Vec<MetadataRecord>,
    pub unclean: Vec<UncleanElection>,
}

impl Elected {
    /// Adds the change that gives `p` of `topic` this leader and ISR, noting an unclean
    /// election.
    fn push(
        &mut self,
        topic: &TopicImage,
        p: &PartitionRecord,
        leader: i32,
        isr: Vec<i32>,
        unclean: bool,
    ) {
        if unclean {
            self.unclean.push(UncleanElection {
                topic: topic.name.clone(),
                partition: p.partition,
                leader,
            });
        }
        self.records.push(change(topic, p, leader, isr));
    }
}

/// Whether `broker` serves: registered and not fenced.
fn unfenced(brokers: &BTreeMap<i32, BrokerImage>, broker: i32) -> bool {
    brokers.get(&broker).is_some_and(|b| !b.fenced)
}

/// Whether unclean leader election is on for `topic`: its own config, else the broker's.
pub fn unclean_enabled(image: &MetadataImage, topic: &str, broker_default: bool) -> bool {
    image
        .configs(ConfigResource::Topic, topic)
        .and_then(|c| c.get("unclean.leader.election.enable"))
        .and_then(|v| v.parse::<bool>().ok())
        .unwrap_or(broker_default)
}

fn change(topic: &TopicImage, p: &PartitionRecord, leader: i32, isr: Vec<i32>) -> MetadataRecord {
    MetadataRecord::PartitionChange(PartitionChangeRecord {
        topic_id: topic.topic_id,
        partition: p.partition,
        leader,
        leader_epoch: if leader == p.leader {
            p.leader_epoch
        } else {
            p.leader_epoch + 1
        },
        isr,
        ..Default::default()
    })
}

/// The leader of a partition whose ISR is `isr`, where `serves` says which brokers are
/// unfenced: the first replica in replica order that is in the ISR and serves. Failing that,
/// with `unclean`, the first replica that serves, with an ISR of itself alone. Returns
/// (leader or -1, ISR, whether the election was unclean).
fn elect(
    replicas: &[i32],
    isr: Vec<i32>,
    serves: impl Fn(i32) -> bool,
    unclean: bool,
) -> (i32, Vec<i32>, bool) {
    if let Some(&l) = replicas.iter().find(|r| isr.contains(r) && serves(**r)) {
        return (l, isr, false);
    }
    if unclean && let Some(&l) = replicas.iter().find(|r| serves(**r)) {
        return (l, vec![l], true);
    }
    (-1, isr, false)
}

/// The partition changes that go with fencing `broker` (session expired, controlled
/// shutdown, or a new registration of it), in the image from before the fence: it leaves
/// every ISR it is in (but a last member), and the partitions it led get a new leader, or
/// none (-1), or an unclean one where that is enabled.
pub fn fence_records(image: &MetadataImage, broker: i32, unclean_default: bool) -> Elected {
    let brokers = image.brokers();
    let serves = |b: i32| b != broker && unfenced(brokers, b);
    let mut out = Elected::default();
    for t in image.topics() {
        let unclean = unclean_enabled(image, &t.name, unclean_default);
        for p in t.partitions.values() {
            if p.leader != broker && !p.isr.contains(&broker) {
                continue;
            }
            let isr: Vec<i32> = if p.isr == [broker] {
                p.isr.clone()
            } else {
                p.isr.iter().copied().filter(|r| *r != broker).collect()
            };
            let (leader, isr, was_unclean) = if p.leader == broker || p.leader < 0 {
                elect(&p.replicas, isr, serves, unclean)
            } else {
                (p.leader, isr, false)
            };
            if leader == p.leader && isr == p.isr {
                continue;
            }
            out.push(t, p, leader, isr, was_unclean);
        }
    }
    out
}

/// A broker reported its replica of one partition offline (its log failed a write or a sync
/// it could not undo, and takes no more until a restart recovers it): the same change as
/// fencing the broker, for that partition alone. It leaves the ISR (unless it is the last
/// member, which stays so the partition can be led again by the only replica known to hold
/// every acknowledged record) and, where it led, the next in-sync replica leads, or none.
/// Checked as AlterPartition is: the sender's registration epoch, then the partition.
pub fn offline_replica_decision(
    image: &MetadataImage,
    req: &ReplicaOffline,
    unclean_default: bool,
) -> Result<IsrDecision, KafkaError> {
    let brokers = image.brokers();
    match brokers.get(&req.broker_id) {
        Some(b) if b.registration.broker_epoch == req.broker_epoch => {}
        _ => {
            return Err(KafkaError::StaleBrokerEpoch(format!(
                "broker {} is not registered under epoch {}",
                req.broker_id, req.broker_epoch
            )));
        }
    }
    let t = image
        .topics()
        .find(|t| t.topic_id == req.topic_id)
        .ok_or(KafkaError::UnknownTopicOrPartition)?;
    let p = t
        .partitions
        .get(&req.partition)
        .ok_or(KafkaError::UnknownTopicOrPartition)?;
    if !p.replicas.contains(&req.broker_id) {
        return Err(KafkaError::InvalidRequest(format!(
            "broker {} holds no replica of partition {}",
            req.broker_id, req.partition
        )));
    }
    let broker = req.broker_id;
    let unclean = unclean_enabled(image, &t.name, unclean_default);
    let isr: Vec<i32> = if p.isr == [broker] {
        p.isr.clone()
    } else {
        p.isr.iter().copied().filter(|r| *r != broker).collect()
    };
    let serves = |b: i32| b != broker && unfenced(brokers, b);
    let (leader, isr, _) = if p.leader == broker {
        elect(&p.replicas, isr, serves, unclean)
    } else {
        (p.leader, isr, false)
    };
    if leader == p.leader && isr == p.isr {
        return Ok(IsrDecision::Unchanged(p.clone()));
    }
    match change(t, p, leader, isr) {
        MetadataRecord::PartitionChange(c) => Ok(IsrDecision::Change(c)),
        _ => Err(KafkaError::InvalidRequest("not a partition change".into())),
    }
}

/// The partition changes that go with unfencing `broker`, in the image from before the
/// unfence: leaderless partitions whose ISR holds it get it as leader; with unclean election
/// enabled, a leaderless partition whose ISR has no unfenced member (it included) takes the
/// first unfenced replica (it included), with an ISR of that one alone.
pub fn unfence_records(image: &MetadataImage, broker: i32, unclean_default: bool) -> Elected {
    let brokers = image.brokers();
    let serves = |b: i32| b == broker || unfenced(brokers, b);
    let mut out = Elected::default();
    for t in image.topics() {
        let unclean = unclean_enabled(image, &t.name, unclean_default);
        for p in t.partitions.values() {
            if p.leader >= 0
                || !p.replicas.contains(&broker)
                || awaits_recovery(image, t, p).is_some()
            {
                continue;
            }
            let (leader, isr, was_unclean) = elect(&p.replicas, p.isr.clone(), serves, unclean);
            if leader < 0 {
                continue;
            }
            out.push(t, p, leader, isr, was_unclean);
        }
    }
    out
}

/// A partition whose last in-sync replica restarted after an unclean shutdown and may have
/// lost its unflushed tail (KIP-966): the topic flushes in the background (`flush.ms` or
/// `flush.messages`, its own or the broker's), the partition has no leader, its ISR is that
/// one broker, whose current registration says its previous process did not stop cleanly,
/// and other replicas exist. Returns that broker. With the default flush policy a replica's
/// fetch offset never passes its synced end, so a crash cannot take an acknowledged record
/// from it, and nothing waits.
pub fn awaits_recovery(
    image: &MetadataImage,
    topic: &TopicImage,
    p: &PartitionRecord,
) -> Option<i32> {
    let &[last] = p.isr.as_slice() else {
        return None;
    };
    if p.leader >= 0 || p.replicas.len() < 2 {
        return None;
    }
    let reg = &image.brokers().get(&last)?.registration;
    if !reg.unclean_shutdown {
        return None;
    }
    let topic_sets = image
        .configs(ConfigResource::Topic, &topic.name)
        .is_some_and(|c| c.contains_key("flush.ms") || c.contains_key("flush.messages"));
    (topic_sets || reg.background_flush_default).then_some(last)
}

/// Log ends of replicas, as brokers reported them: (broker, topic id, partition) -> (epoch of
/// the last batch, log end).
pub type ReplicaEnds = BTreeMap<(i32, uuid::Uuid, i32), (i32, i64)>;

/// One unclean-shutdown recovery election, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub topic: String,
    pub partition: i32,
    /// The last in-sync replica, which restarted uncleanly.
    pub last_isr: i32,
    pub leader: i32,
    /// (broker, last epoch, log end) of each replica compared.
    pub ends: Vec<(i32, i32, i64)>,
}

/// Unclean-shutdown recovery (KIP-966): each partition that [`awaits_recovery`] gets as leader
/// the replica with the longest log, by (epoch of its last batch, log end), the last in-sync
/// replica winning a tie, with an ISR of itself alone; the others then truncate to it by
/// epoch and catch up. Decided once the last in-sync replica is unfenced and every replica is
/// unfenced (or `waited_out` says the wait for the missing ones is over) and every unfenced
/// replica reported its log end (`ends`: (broker, topic id, partition) -> (last epoch, log
/// end)). A replica still down is not compared: with the wait over, what only it holds may be
/// lost, which is logged.
pub fn recovery_records(
    image: &MetadataImage,
    ends: &ReplicaEnds,
    waited_out: impl Fn(uuid::Uuid, i32) -> bool,
) -> (Vec<MetadataRecord>, Vec<Recovered>) {
    let brokers = image.brokers();
    let mut records = Vec::new();
    let mut recovered = Vec::new();
    for t in image.topics() {
        for p in t.partitions.values() {
            let Some(last) = awaits_recovery(image, t, p) else {
                continue;
            };
            if !unfenced(brokers, last) {
                continue;
            }
            let live: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| unfenced(brokers, *r))
                .collect();
            if live.len() < p.replicas.len() && !waited_out(t.topic_id, p.partition) {
                continue;
            }
            let Some(compared) = live
                .iter()
                .map(|r| {
                    ends.get(&(*r, t.topic_id, p.partition))
                        .map(|(e, end)| (*r, *e, *end))
                })
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let Some(&(leader, _, _)) = compared.iter().max_by_key(|(r, e, end)| {
                (
                    *e,
                    *end,
                    *r == last,
                    std::cmp::Reverse(pos(&p.replicas, *r)),
                )
            }) else {
                continue;
            };
            records.push(change(t, p, leader, vec![leader]));
            recovered.push(Recovered {
                topic: t.name.clone(),
                partition: p.partition,
                last_isr: last,
                leader,
                ends: compared,
            });
        }
    }
    (records, recovered)
}

fn pos(replicas: &[i32], r: i32) -> usize {
    replicas.iter().position(|x| *x == r).unwrap_or(usize::MAX)
}

/// Preferred leaders: every partition whose first replica is unfenced and in the ISR but does
/// not lead gets it back as leader (leader epoch + 1), so leadership returns to where
/// placement spread it after brokers came back.
pub fn preferred_leader_records(image: &MetadataImage) -> Vec<MetadataRecord> {
    let brokers = image.brokers();
    let mut out = Vec::new();
    for t in image.topics() {
        for p in t.partitions.values() {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            if p.leader != preferred && p.isr.contains(&preferred) && unfenced(brokers, preferred) {
                out.push(change(t, p, preferred, p.isr.clone()));
            }
        }
    }
    out
}

pub use super::wire::{IsrChange, ReplicaOffline};

/// What the controller does with an [`IsrChange`] that is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IsrDecision {
    /// The ISR already is the requested one: answer the current state, write nothing.
    Unchanged(PartitionRecord),
    /// Write this change (same leader and leader epoch, the new ISR).
    Change(PartitionChangeRecord),
}

/// Checks an AlterPartition against the image, in Kafka's order: the sender's registration
/// (STALE_BROKER_EPOCH), the partition (UNKNOWN_TOPIC_OR_PARTITION), the sender's leadership
/// and leader epoch (FENCED_LEADER_EPOCH), the partition epoch (INVALID_UPDATE_VERSION), the
/// shape of the new ISR (INVALID_REQUEST: it must hold the leader, only replicas, each once)
/// and the eligibility of its members (INELIGIBLE_REPLICA: registered, unfenced, under the
/// epoch given).
pub fn alter_isr(image: &MetadataImage, req: &IsrChange) -> Result<IsrDecision, KafkaError> {
    let brokers = image.brokers();
    match brokers.get(&req.broker_id) {
        Some(b) if b.registration.broker_epoch == req.broker_epoch && !b.fenced => {}
        Some(b) if b.registration.broker_epoch == req.broker_epoch => {
            return Err(KafkaError::StaleBrokerEpoch(format!(
                "broker {} is fenced",
                req.broker_id
            )));
        }
        _ => {
            return Err(KafkaError::StaleBrokerEpoch(format!(
                "broker {} is not registered under epoch {}",
                req.broker_id, req.broker_epoch
            )));
        }
    }
    let p = image
        .topics()
        .find(|t| t.topic_id == req.topic_id)
        .and_then(|t| t.partitions.get(&req.partition))
        .ok_or(KafkaError::UnknownTopicOrPartition)?;
    if p.leader != req.broker_id || p.leader_epoch != req.leader_epoch {
        return Err(KafkaError::FencedLeaderEpoch);
    }
    if p.partition_epoch != req.partition_epoch {
        return Err(KafkaError::InvalidUpdateVersion(format!(
            "partition epoch {} is not the current {}",
            req.partition_epoch, p.partition_epoch
        )));
    }
    let isr: Vec<i32> = req.new_isr.iter().map(|(b, _)| *b).collect();
    if !isr.contains(&p.leader) {
        return Err(KafkaError::InvalidRequest(format!(
            "the new ISR {isr:?} does not contain the leader {}",
            p.leader
        )));
    }
    if let Some(r) = isr.iter().find(|r| !p.replicas.contains(r)) {
        return Err(KafkaError::InvalidRequest(format!(
            "the new ISR {isr:?} names broker {r}, which is not a replica of {:?}",
            p.replicas
        )));
    }
    if isr.iter().enumerate().any(|(i, r)| isr[..i].contains(r)) {
        return Err(KafkaError::InvalidRequest(format!(
            "the new ISR {isr:?} names a broker twice"
        )));
    }
    for &(b, epoch) in &req.new_isr {
        let why = match brokers.get(&b) {
            None => "is not registered",
            Some(r) if r.fenced => "is fenced",
            Some(r) if epoch != -1 && r.registration.broker_epoch != epoch => {
                "is registered under another epoch"
            }
            Some(_) => continue,
        };
        return Err(KafkaError::IneligibleReplica(format!(
            "broker {b} (epoch {epoch}) {why}"
        )));
    }
    if isr == p.isr {
        return Ok(IsrDecision::Unchanged(p.clone()));
    }
    Ok(IsrDecision::Change(PartitionChangeRecord {
        topic_id: req.topic_id,
        partition: req.partition,
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        isr,
        ..Default::default()
    }))
}

/// Checks manual replica assignments (CreateTopics, CreatePartitions) as Kafka does: no empty
/// list, every list as long as the first (or as `rf`, when given), no broker twice in one
/// list, every broker registered and unfenced (INVALID_REPLICA_ASSIGNMENT).
pub fn check_assignments(
    assignments: &[Vec<i32>],
    rf: Option<usize>,
    brokers: &BTreeMap<i32, BrokerImage>,
) -> Result<(), KafkaError> {
    let invalid = |why: String| Err(KafkaError::InvalidReplicaAssignment(why));
    let want = rf.or_else(|| assignments.first().map(Vec::len));
    for a in assignments {
        if a.is_empty() {
            return invalid(
                "The manual partition assignment includes an empty replica list.".into(),
            );
        }
        if let Some(n) = want
            && a.len() != n
        {
            return invalid(format!(
                "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {n} replica(s).",
                a.len()
            ));
        }
        for (i, b) in a.iter().enumerate() {
            if a[..i].contains(b) {
                return invalid(format!(
                    "The manual partition assignment includes the broker {b} more than once."
                ));
            }
            match brokers.get(b) {
                None => {
                    return invalid(format!(
                        "The manual partition assignment includes broker {b}, but no such broker is registered."
                    ));
                }
                Some(r) if r.fenced => {
                    return invalid(format!(
                        "The manual partition assignment includes broker {b}, but it is fenced."
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::metadata::record::{
        BrokerFenceRecord, ConfigRecord, RegisterBrokerRecord, TopicRecord,
    };
    use uuid::Uuid;

    const T: Uuid = Uuid::from_u128(7);

    /// Brokers 1..=n registered (epoch = 10 + id), unfenced but those in `fenced`, and topic
    /// "t" with the given partitions (replicas, isr, leader, leader epoch).
    fn image(n: i32, fenced: &[i32], parts: &[(&[i32], &[i32], i32, i32)]) -> MetadataImage {
        let mut records = Vec::new();
        for id in 1..=n {
            records.push(MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                broker_id: id,
                broker_epoch: 10 + i64::from(id),
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
                    broker_epoch: 10 + i64::from(id),
                    fenced: false,
                }));
            }
        }
        records.push(MetadataRecord::Topic(TopicRecord {
            name: "t".into(),
            topic_id: T,
        }));
        for (i, (replicas, isr, leader, epoch)) in parts.iter().enumerate() {
            records.push(MetadataRecord::Partition(PartitionRecord {
                topic_id: T,
                partition: i as i32,
                replicas: replicas.to_vec(),
                isr: isr.to_vec(),
                leader: *leader,
                leader_epoch: *epoch,
                partition_epoch: 3,
                ..Default::default()
            }));
        }
        let mut img = MetadataImage::default();
        img.apply_all(&records).unwrap();
        img
    }

    /// Broker `id` registers again (epoch 20 + id) after a clean or unclean shutdown, with or
    /// without a background-flush default, and is unfenced.
    fn restart(img: &mut MetadataImage, id: i32, unclean: bool, flush_default: bool) {
        img.apply(&MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            broker_id: id,
            broker_epoch: 20 + i64::from(id),
            incarnation_id: Uuid::from_u128(100 + id as u128),
            host: "h".into(),
            port: 1,
            controller_host: "h".into(),
            controller_port: 2,
            rack: None,
            unclean_shutdown: unclean,
            background_flush_default: flush_default,
            listeners: Vec::new(),
        }))
        .unwrap();
        img.apply(&MetadataRecord::BrokerFence(BrokerFenceRecord {
            broker_id: id,
            broker_epoch: 20 + i64::from(id),
            fenced: false,
        }))
        .unwrap();
    }

    fn topic_config(img: &mut MetadataImage, name: &str, value: &str) {
        img.apply(&MetadataRecord::Config(ConfigRecord {
            resource_type: ConfigResource::Topic,
            resource_name: "t".into(),
            name: name.into(),
            value: Some(value.into()),
        }))
        .unwrap();
    }

    fn ends(v: &[(i32, i32, i64)]) -> BTreeMap<(i32, Uuid, i32), (i32, i64)> {
        v.iter().map(|&(b, e, end)| ((b, T, 0), (e, end))).collect()
    }

    #[test]
    fn an_unclean_restart_of_the_last_isr_member_compares_the_replicas_logs() {
        // Partition 0: replicas 1, 2, 3, no leader, ISR {3} (the last fenced); all brokers
        // back, 3 after an unclean shutdown, on a topic that flushes in the background.
        let mut img = image(3, &[3], &[(&[1, 2, 3], &[3], -1, 4)]);
        topic_config(&mut img, "flush.ms", "1000");
        restart(&mut img, 3, true, false);
        let t = img.topic("t").unwrap().clone();
        let p = t.partitions[&0].clone();
        assert_eq!(awaits_recovery(&img, &t, &p), Some(3));
        // Its unfence does not make it the leader.
        let mut pre = image(3, &[3], &[(&[1, 2, 3], &[3], -1, 4)]);
        topic_config(&mut pre, "flush.ms", "1000");
        pre.apply(&MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            unclean_shutdown: true,
            ..img.brokers()[&3].registration.clone()
        }))
        .unwrap();
        assert!(unfence_records(&pre, 3, false).records.is_empty());
        assert!(
            unfence_records(&pre, 3, true).records.is_empty(),
            "nor uncleanly"
        );
        // A replica that has not reported: nothing yet.
        let never = |_: Uuid, _: i32| false;
        let (r, _) = recovery_records(&img, &ends(&[(1, 4, 100), (3, 4, 90)]), never);
        assert!(r.is_empty());
        // The longest log leads, alone in the ISR, under a new leader epoch.
        let (r, rec) =
            recovery_records(&img, &ends(&[(1, 4, 100), (2, 4, 120), (3, 4, 90)]), never);
        assert_eq!(r, vec![pc(0, 2, 5, &[2])]);
        assert_eq!((rec[0].last_isr, rec[0].leader), (3, 2));
        // A later epoch beats a longer log; the last ISR member wins a tie.
        let (r, _) = recovery_records(&img, &ends(&[(1, 5, 10), (2, 4, 120), (3, 4, 90)]), never);
        assert_eq!(r, vec![pc(0, 1, 5, &[1])]);
        let (r, _) = recovery_records(&img, &ends(&[(1, 4, 120), (2, 4, 120), (3, 4, 120)]), never);
        assert_eq!(r, vec![pc(0, 3, 5, &[3])]);
    }

    #[test]
    fn recovery_waits_for_replicas_that_are_down_until_the_wait_is_over() {
        let mut img = image(3, &[1, 3], &[(&[1, 2, 3], &[3], -1, 4)]);
        topic_config(&mut img, "flush.messages", "100");
        restart(&mut img, 3, true, false);
        let e = ends(&[(2, 4, 120), (3, 4, 90)]);
        let (r, _) = recovery_records(&img, &e, |_, _| false);
        assert!(
            r.is_empty(),
            "broker 1 is down: it may hold the longest log"
        );
        let (r, rec) = recovery_records(&img, &e, |_, _| true);
        assert_eq!(r, vec![pc(0, 2, 5, &[2])]);
        assert_eq!(rec[0].ends, vec![(2, 4, 120), (3, 4, 90)]);
    }

    #[test]
    fn only_an_unclean_restart_under_a_background_flush_policy_waits() {
        // Default flush policy: the last ISR member's synced end covers what was acknowledged.
        let mut img = image(3, &[3], &[(&[1, 2, 3], &[3], -1, 4)]);
        restart(&mut img, 3, true, false);
        let t = img.topic("t").unwrap().clone();
        assert_eq!(awaits_recovery(&img, &t, &t.partitions[&0]), None);
        // The broker's own default flushes in the background.
        restart(&mut img, 3, true, true);
        assert_eq!(awaits_recovery(&img, &t, &t.partitions[&0]), Some(3));
        // A clean shutdown lost nothing.
        topic_config(&mut img, "flush.ms", "1000");
        restart(&mut img, 3, false, true);
        assert_eq!(awaits_recovery(&img, &t, &t.partitions[&0]), None);
        // One replica: nobody to compare with.
        let mut one = image(1, &[1], &[(&[1], &[1], -1, 4)]);
        topic_config(&mut one, "flush.ms", "1000");
        restart(&mut one, 1, true, false);
        let t = one.topic("t").unwrap().clone();
        assert_eq!(awaits_recovery(&one, &t, &t.partitions[&0]), None);
    }

    fn unclean_topic(img: &mut MetadataImage, on: bool) {
        img.apply(&MetadataRecord::Config(ConfigRecord {
            resource_type: ConfigResource::Topic,
            resource_name: "t".into(),
            name: "unclean.leader.election.enable".into(),
            value: Some(on.to_string()),
        }))
        .unwrap();
    }

    fn pc(partition: i32, leader: i32, leader_epoch: i32, isr: &[i32]) -> MetadataRecord {
        MetadataRecord::PartitionChange(PartitionChangeRecord {
            topic_id: T,
            partition,
            leader,
            leader_epoch,
            isr: isr.to_vec(),
            ..Default::default()
        })
    }

    #[test]
    fn fencing_a_leader_moves_leadership_and_shrinks_the_isr() {
        let img = image(
            3,
            &[],
            &[
                (&[1, 2, 3], &[1, 2, 3], 1, 4), // led by 1: 2 takes over, epoch + 1
                (&[2, 1, 3], &[2, 1, 3], 2, 4), // 1 a follower: ISR only, same epoch
                (&[3, 2], &[3, 2], 3, 4),       // 1 not a replica: untouched
                (&[1], &[1], 1, 0),             // RF 1: offline, ISR keeps its last member
                (&[1, 3], &[1], 1, 2),          // last ISR member: offline, 3 not in sync
            ],
        );
        let got = fence_records(&img, 1, false);
        assert_eq!(
            got.records,
            vec![
                pc(0, 2, 5, &[2, 3]),
                pc(1, 2, 4, &[2, 3]),
                pc(3, -1, 1, &[1]),
                pc(4, -1, 3, &[1]),
            ]
        );
        assert!(got.unclean.is_empty());
    }

    #[test]
    fn the_new_leader_follows_replica_order_and_skips_fenced_brokers() {
        // ISR [1, 4, 3] with 4 fenced (kept as an older last member would be): 3 leads.
        let img = image(4, &[4], &[(&[1, 4, 3, 2], &[1, 4, 3], 1, 0)]);
        let got = fence_records(&img, 1, false);
        assert_eq!(got.records, vec![pc(0, 3, 1, &[4, 3])]);
    }

    #[test]
    fn unclean_election_when_enabled_topic_over_broker() {
        let mut img = image(3, &[], &[(&[1, 2, 3], &[1], 1, 7)]);
        // Broker default on: 2 leads alone.
        let got = fence_records(&img, 1, true);
        assert_eq!(got.records, vec![pc(0, 2, 8, &[2])]);
        assert_eq!(
            got.unclean,
            vec![UncleanElection {
                topic: "t".into(),
                partition: 0,
                leader: 2
            }]
        );
        // The topic turns it off.
        unclean_topic(&mut img, false);
        let got = fence_records(&img, 1, true);
        assert_eq!(got.records, vec![pc(0, -1, 8, &[1])]);
        assert!(got.unclean.is_empty());
        // And on.
        unclean_topic(&mut img, true);
        assert_eq!(fence_records(&img, 1, false).unclean.len(), 1);
    }

    #[test]
    fn fencing_a_fenced_broker_again_changes_nothing() {
        let img = image(2, &[1], &[(&[1], &[1], -1, 3), (&[2, 1], &[2], 2, 0)]);
        assert_eq!(fence_records(&img, 1, false), Elected::default());
    }

    #[test]
    fn unfencing_gives_leaderless_partitions_back() {
        let mut img = image(
            3,
            &[1, 2],
            &[
                (&[1], &[1], -1, 3),            // back to 1
                (&[2, 1], &[2], -1, 3),         // 1 not in the ISR: stays offline
                (&[1, 2, 3], &[1, 2, 3], 3, 1), // has a leader: untouched
            ],
        );
        let got = unfence_records(&img, 1, false);
        assert_eq!(got.records, vec![pc(0, 1, 4, &[1])]);
        // Unclean: partition 1 may take 1 (its only in-sync member, 2, is fenced).
        unclean_topic(&mut img, true);
        let got = unfence_records(&img, 1, false);
        assert_eq!(got.records, vec![pc(0, 1, 4, &[1]), pc(1, 1, 4, &[1])]);
        assert_eq!(got.unclean.len(), 1);
        assert_eq!(got.unclean[0].partition, 1);
    }

    #[test]
    fn preferred_leaders_come_back() {
        let img = image(
            3,
            &[3],
            &[
                (&[1, 2], &[1, 2], 2, 5), // back to 1
                (&[1, 2], &[2], 2, 5),    // 1 not in sync
                (&[3, 2], &[3, 2], 2, 5), // 3 fenced
                (&[2, 1], &[2, 1], 2, 5), // 2 already leads
            ],
        );
        assert_eq!(preferred_leader_records(&img), vec![pc(0, 1, 6, &[1, 2])]);
    }

    fn isr_change(broker: i32, epoch: i64, le: i32, pe: i32, isr: &[(i32, i64)]) -> IsrChange {
        IsrChange {
            broker_id: broker,
            broker_epoch: epoch,
            topic_id: T,
            partition: 0,
            leader_epoch: le,
            partition_epoch: pe,
            new_isr: isr.to_vec(),
        }
    }

    #[test]
    fn alter_partition_is_checked_in_kafkas_order() {
        let img = image(4, &[4], &[(&[1, 2, 3, 4], &[1, 2], 1, 5)]);
        let code = |r: &IsrChange| alter_isr(&img, r).map_err(|e| e.code());
        // Stale or fenced sender first, even with everything else wrong.
        assert_eq!(code(&isr_change(1, 99, 0, 0, &[])), Err(77));
        assert_eq!(code(&isr_change(4, 14, 5, 3, &[(4, -1)])), Err(77));
        assert_eq!(code(&isr_change(9, 19, 5, 3, &[(1, -1)])), Err(77));
        // Unknown partition.
        let mut r = isr_change(1, 11, 5, 3, &[(1, -1)]);
        r.partition = 8;
        assert_eq!(code(&r), Err(3));
        // Not the leader, or another leader epoch.
        assert_eq!(code(&isr_change(2, 12, 5, 3, &[(2, -1)])), Err(74));
        assert_eq!(code(&isr_change(1, 11, 4, 3, &[(1, -1)])), Err(74));
        // Partition epoch.
        assert_eq!(code(&isr_change(1, 11, 5, 2, &[(1, -1)])), Err(95));
        // Shape.
        assert_eq!(code(&isr_change(1, 11, 5, 3, &[(2, -1)])), Err(42));
        assert_eq!(code(&isr_change(1, 11, 5, 3, &[(1, -1), (7, -1)])), Err(42));
        assert_eq!(code(&isr_change(1, 11, 5, 3, &[(1, -1), (1, -1)])), Err(42));
        // Eligibility: fenced, or another registration epoch.
        assert_eq!(
            code(&isr_change(1, 11, 5, 3, &[(1, -1), (4, -1)])),
            Err(107)
        );
        assert_eq!(
            code(&isr_change(1, 11, 5, 3, &[(1, 11), (3, 12)])),
            Err(107)
        );
        // Unchanged: answered as it is.
        assert_eq!(
            alter_isr(&img, &isr_change(1, 11, 5, 3, &[(1, 11), (2, -1)])),
            Ok(IsrDecision::Unchanged(PartitionRecord {
                topic_id: T,
                partition: 0,
                replicas: vec![1, 2, 3, 4],
                isr: vec![1, 2],
                leader: 1,
                leader_epoch: 5,
                partition_epoch: 3,
                ..Default::default()
            }))
        );
        // Grow and shrink keep the leader epoch.
        assert_eq!(
            alter_isr(&img, &isr_change(1, 11, 5, 3, &[(1, 11), (2, 12), (3, 13)])),
            Ok(IsrDecision::Change(PartitionChangeRecord {
                topic_id: T,
                partition: 0,
                leader: 1,
                leader_epoch: 5,
                isr: vec![1, 2, 3],
                ..Default::default()
            }))
        );
        assert_eq!(
            alter_isr(&img, &isr_change(1, 11, 5, 3, &[(1, 11)])),
            Ok(IsrDecision::Change(PartitionChangeRecord {
                topic_id: T,
                partition: 0,
                leader: 1,
                leader_epoch: 5,
                isr: vec![1],
                ..Default::default()
            }))
        );
    }

    #[test]
    fn manual_assignments() {
        let img = image(3, &[3], &[]);
        let b = img.brokers();
        let ok = |a: &[Vec<i32>], rf| check_assignments(a, rf, b).map_err(|e| e.code());
        assert_eq!(ok(&[vec![1, 2], vec![2, 1]], None), Ok(()));
        assert_eq!(ok(&[vec![1, 2], vec![2]], None), Err(39));
        assert_eq!(ok(&[vec![1, 2]], Some(1)), Err(39));
        assert_eq!(ok(&[vec![]], None), Err(39));
        assert_eq!(ok(&[vec![1, 1]], None), Err(39));
        assert_eq!(ok(&[vec![1, 5]], None), Err(39));
        assert_eq!(ok(&[vec![1, 3]], None), Err(39));
    }

    #[test]
    fn an_offline_replica_leaves_the_isr_and_its_leadership() {
        let img = image(
            3,
            &[],
            &[
                (&[1, 2, 3], &[1, 2, 3], 1, 4),
                (&[1, 2], &[1], 1, 4),
                (&[2, 3], &[2, 3], 2, 4),
            ],
        );
        let report = |partition: i32, broker_epoch: i64| ReplicaOffline {
            broker_id: 1,
            broker_epoch,
            topic_id: T,
            partition,
        };
        // The leader's replica: the next in-sync replica leads, epoch + 1.
        match offline_replica_decision(&img, &report(0, 11), false).unwrap() {
            IsrDecision::Change(c) => {
                assert_eq!((c.leader, c.leader_epoch, c.isr), (2, 5, vec![2, 3]))
            }
            other => panic!("{other:?}"),
        }
        // The last member stays in the ISR; with no one else in sync the partition is offline.
        match offline_replica_decision(&img, &report(1, 11), false).unwrap() {
            IsrDecision::Change(c) => assert_eq!((c.leader, c.isr), (-1, vec![1])),
            other => panic!("{other:?}"),
        }
        // Not a replica; a stale registration.
        assert_eq!(
            offline_replica_decision(&img, &report(2, 11), false)
                .unwrap_err()
                .code(),
            KafkaError::InvalidRequest(String::new()).code()
        );
        assert_eq!(
            offline_replica_decision(&img, &report(0, 99), false)
                .unwrap_err()
                .code(),
            KafkaError::StaleBrokerEpoch(String::new()).code()
        );
    }
}
