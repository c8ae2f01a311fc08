//! What `__consumer_offsets` holds of one consumer-protocol group ([`ConsumerEntry`]), as
//! the store ([`super::store`]) replays it, and the records that bring it to a group's
//! current state: only the records whose value changed are written, so a heartbeat that
//! moves one member writes that member's records and the group's epochs.

use std::collections::{BTreeMap, BTreeSet};

use super::consumer::{Assignment, ConsumerMember, MemberState, StoredConsumerGroup};
use super::consumer_records::{ConsumerRecord, CurrentAssignmentValue, MemberMetadataValue};

/// The stored records of one consumer group, by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerEntry {
    epoch: Option<i32>,
    assignment_epoch: Option<i32>,
    members: BTreeMap<String, MemberMetadataValue>,
    targets: BTreeMap<String, Assignment>,
    current: BTreeMap<String, CurrentAssignmentValue>,
}

impl ConsumerEntry {
    pub fn apply(&mut self, rec: ConsumerRecord) {
        match rec {
            ConsumerRecord::Metadata { epoch, .. } => self.epoch = epoch,
            ConsumerRecord::TargetMetadata {
                assignment_epoch, ..
            } => self.assignment_epoch = assignment_epoch,
            ConsumerRecord::MemberMetadata { member, value, .. } => {
                set(&mut self.members, member, value)
            }
            ConsumerRecord::TargetMember { member, value, .. } => {
                set(&mut self.targets, member, value)
            }
            ConsumerRecord::CurrentAssignment { member, value, .. } => {
                set(&mut self.current, member, value)
            }
        }
    }

    /// Live records this entry stands for.
    pub fn records(&self) -> u64 {
        u64::from(self.epoch.is_some())
            + u64::from(self.assignment_epoch.is_some())
            + (self.members.len() + self.targets.len() + self.current.len()) as u64
    }

    /// Whether members are stored (the group is not empty).
    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// Records that restate the entry.
    pub fn live_records(&self, group: &str) -> Vec<ConsumerRecord> {
        let g = || group.to_string();
        let mut out = Vec::new();
        for (m, v) in &self.members {
            out.push(ConsumerRecord::MemberMetadata {
                group: g(),
                member: m.clone(),
                value: Some(v.clone()),
            });
        }
        for (m, v) in &self.targets {
            out.push(ConsumerRecord::TargetMember {
                group: g(),
                member: m.clone(),
                value: Some(v.clone()),
            });
        }
        if self.assignment_epoch.is_some() {
            out.push(ConsumerRecord::TargetMetadata {
                group: g(),
                assignment_epoch: self.assignment_epoch,
            });
        }
        for (m, v) in &self.current {
            out.push(ConsumerRecord::CurrentAssignment {
                group: g(),
                member: m.clone(),
                value: Some(v.clone()),
            });
        }
        if self.epoch.is_some() {
            out.push(ConsumerRecord::Metadata {
                group: g(),
                epoch: self.epoch,
            });
        }
        out
    }

    /// Tombstones for everything stored.
    pub fn tombstones(&self, group: &str) -> Vec<ConsumerRecord> {
        self.diff(group, &ConsumerEntry::default())
    }

    /// The records that turn this entry into `want`: changed values, and tombstones for
    /// what `want` no longer has. Member records come before the group's epochs, as Kafka
    /// writes them.
    pub fn diff(&self, group: &str, want: &ConsumerEntry) -> Vec<ConsumerRecord> {
        let g = || group.to_string();
        let mut out = Vec::new();
        for m in keys(&self.members, &want.members) {
            let value = want.members.get(&m).cloned();
            if self.members.get(&m) != value.as_ref() {
                out.push(ConsumerRecord::MemberMetadata {
                    group: g(),
                    member: m,
                    value,
                });
            }
        }
        for m in keys(&self.targets, &want.targets) {
            let value = want.targets.get(&m).cloned();
            if self.targets.get(&m) != value.as_ref() {
                out.push(ConsumerRecord::TargetMember {
                    group: g(),
                    member: m,
                    value,
                });
            }
        }
        if self.assignment_epoch != want.assignment_epoch {
            out.push(ConsumerRecord::TargetMetadata {
                group: g(),
                assignment_epoch: want.assignment_epoch,
            });
        }
        for m in keys(&self.current, &want.current) {
            let value = want.current.get(&m).cloned();
            if self.current.get(&m) != value.as_ref() {
                out.push(ConsumerRecord::CurrentAssignment {
                    group: g(),
                    member: m,
                    value,
                });
            }
        }
        if self.epoch != want.epoch {
            out.push(ConsumerRecord::Metadata {
                group: g(),
                epoch: want.epoch,
            });
        }
        out
    }

    /// The entry a group's state is stored as.
    pub fn of(stored: &StoredConsumerGroup) -> ConsumerEntry {
        ConsumerEntry {
            epoch: Some(stored.group_epoch),
            assignment_epoch: Some(stored.assignment_epoch),
            members: stored
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.clone(),
                        MemberMetadataValue {
                            instance_id: m.instance_id.clone(),
                            rack_id: m.rack_id.clone(),
                            client_id: m.client_id.clone(),
                            client_host: m.client_host.clone(),
                            subscribed_topic_names: m.subscribed_topic_names.clone(),
                            subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                            rebalance_timeout_ms: m.rebalance_timeout_ms,
                            server_assignor: m.server_assignor.clone(),
                        },
                    )
                })
                .collect(),
            targets: stored.target.clone(),
            current: stored
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.clone(),
                        CurrentAssignmentValue {
                            member_epoch: m.member_epoch,
                            previous_member_epoch: m.previous_member_epoch,
                            state: m.state.as_i8(),
                            assigned: m.assigned.clone(),
                            pending_revocation: m.pending_revocation.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The group this entry stores; None when it holds no group epoch (no consumer group).
    pub fn restore(&self) -> Option<StoredConsumerGroup> {
        let group_epoch = self.epoch?;
        let members = self
            .members
            .iter()
            .map(|(id, v)| {
                let cur = self.current.get(id);
                ConsumerMember {
                    member_id: id.clone(),
                    instance_id: v.instance_id.clone(),
                    rack_id: v.rack_id.clone(),
                    client_id: v.client_id.clone(),
                    client_host: v.client_host.clone(),
                    rebalance_timeout_ms: v.rebalance_timeout_ms,
                    subscribed_topic_names: v.subscribed_topic_names.clone(),
                    subscribed_topic_regex: v.subscribed_topic_regex.clone(),
                    server_assignor: v.server_assignor.clone(),
                    member_epoch: cur.map_or(0, |c| c.member_epoch),
                    previous_member_epoch: cur.map_or(0, |c| c.previous_member_epoch),
                    state: MemberState::from_i8(cur.map_or(0, |c| c.state)),
                    assigned: cur.map(|c| c.assigned.clone()).unwrap_or_default(),
                    pending_revocation: cur
                        .map(|c| c.pending_revocation.clone())
                        .unwrap_or_default(),
                    last_heartbeat_ms: 0,
                    revoke_deadline_ms: None,
                }
            })
            .collect();
        Some(StoredConsumerGroup {
            group_epoch,
            assignment_epoch: self.assignment_epoch.unwrap_or(0),
            members,
            target: self
                .targets
                .iter()
                .filter(|(m, _)| self.members.contains_key(*m))
                .map(|(m, a)| (m.clone(), a.clone()))
                .collect(),
        })
    }
}

fn set<V>(map: &mut BTreeMap<String, V>, key: String, value: Option<V>) {
    match value {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}

fn keys<V>(a: &BTreeMap<String, V>, b: &BTreeMap<String, V>) -> BTreeSet<String> {
    a.keys().chain(b.keys()).cloned().collect()
}
