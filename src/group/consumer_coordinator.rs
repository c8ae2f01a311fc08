//! The coordinator's shell around consumer-protocol groups ([`super::consumer`]): it runs
//! ConsumerGroupHeartbeat on the group's state machine with the topics the shard knows,
//! expires sessions on the coordinator's tick, checks member epochs for OffsetCommit and
//! OffsetFetch, converts an empty classic group on its first heartbeat, and stores the group
//! (members, target assignment, epochs) in `__consumer_offsets` before it answers.
//!
//! Lives on: the shard that coordinates the group (`placement::group_owner`), inside its
//! [`GroupCoordinator`]. A group id is either a classic group or a consumer group, never both.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::clock::now_ms;
use crate::error::ErrorCode;

use super::consumer::{
    ConsumerGroup, ConsumerGroupConfig, HeartbeatRequest, HeartbeatResponse, PartitionRacks,
    StoredConsumerGroup, TopicsView,
};
use super::coordinator::GroupCoordinator;

/// The consumer groups of one shard.
pub struct ConsumerGroups {
    pub(super) config: ConsumerGroupConfig,
    pub(super) groups: RefCell<HashMap<String, ConsumerGroup>>,
}

impl ConsumerGroups {
    pub fn new(config: ConsumerGroupConfig) -> ConsumerGroups {
        ConsumerGroups {
            config,
            groups: RefCell::new(HashMap::new()),
        }
    }
}

/// A consumer group as ConsumerGroupDescribe and the CLI show it.
#[derive(Clone, Debug)]
pub struct ConsumerGroupDescription {
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: &'static str,
    pub members: Vec<ConsumerMemberDescription>,
}

#[derive(Clone, Debug)]
pub struct ConsumerMemberDescription {
    pub member: super::consumer::ConsumerMember,
    pub target: super::consumer::Assignment,
}

fn refused(error: ErrorCode, message: String) -> HeartbeatResponse {
    HeartbeatResponse {
        error,
        message: Some(message),
        member_epoch: -1,
        ..HeartbeatResponse::default()
    }
}

impl GroupCoordinator {
    /// One ConsumerGroupHeartbeat; answered once what it changed is stored.
    pub async fn consumer_heartbeat(
        &self,
        group_id: &str,
        mut req: HeartbeatRequest,
        topics: TopicsView,
        racks: PartitionRacks,
    ) -> HeartbeatResponse {
        let now = now_ms();
        if !self.serves(group_id) {
            return refused(
                ErrorCode::NOT_COORDINATOR,
                format!("This broker does not coordinate group {group_id} (now)."),
            );
        }
        if self.consumer_groups().borrow().get(group_id).is_none() {
            match self.classic_is_empty(group_id) {
                Some(false) => {
                    return refused(
                        ErrorCode::GROUP_ID_NOT_FOUND,
                        format!("Group {group_id} is not a consumer group."),
                    );
                }
                Some(true) => {
                    if req.member_epoch != 0 {
                        return refused(
                            ErrorCode::UNKNOWN_MEMBER_ID,
                            format!("Group {group_id} has no member {}.", req.member_id),
                        );
                    }
                    // An empty classic group becomes a consumer group; its offsets stay.
                    tracing::info!(
                        group = group_id,
                        "empty classic group converted to a consumer group"
                    );
                    self.forget_classic(group_id);
                }
                None => {}
            }
        }
        if req.member_epoch == 0 && req.member_id.is_empty() {
            req.generated_member_id = uuid::Uuid::new_v4().to_string();
        }
        let (resp, stored) = {
            let mut groups = self.consumer_groups().borrow_mut();
            let created = !groups.contains_key(group_id);
            if created && req.member_epoch != 0 {
                return refused(
                    ErrorCode::UNKNOWN_MEMBER_ID,
                    format!("Group {group_id} has no member {}.", req.member_id),
                );
            }
            let group = groups
                .entry(group_id.to_string())
                .or_insert_with(|| ConsumerGroup::new(group_id, self.consumer.config.clone()));
            group.set_partition_racks(racks);
            let resp = group.heartbeat(&req, &topics, now);
            let stored = group.take_dirty().then(|| group.stored());
            if created && group.is_empty() {
                groups.remove(group_id);
                (resp, None)
            } else {
                (resp, stored)
            }
        };
        if let Some(stored) = stored {
            self.store_consumer_group(group_id, stored, now).await;
        }
        resp
    }

    /// Removes members whose session or revocation expired, and stores their groups.
    pub async fn tick_consumer_groups(&self) {
        let now = now_ms();
        let mut changed: Vec<(String, StoredConsumerGroup)> = Vec::new();
        {
            let mut groups = self.consumer_groups().borrow_mut();
            for (id, g) in groups.iter_mut() {
                if g.next_deadline().is_some_and(|d| now >= d) {
                    for member in g.tick(now) {
                        tracing::info!(group = %id, member = %member, "consumer group member expired");
                    }
                }
                if g.take_dirty() {
                    changed.push((id.clone(), g.stored()));
                }
            }
        }
        for (id, stored) in changed {
            self.store_consumer_group(&id, stored, now).await;
        }
    }

    fn consumer_groups(&self) -> &RefCell<HashMap<String, ConsumerGroup>> {
        &self.consumer.groups
    }

    /// Whether `group_id` is a consumer group.
    pub fn is_consumer_group(&self, group_id: &str) -> bool {
        self.consumer_groups().borrow().contains_key(group_id)
    }

    /// OffsetCommit's member check for a consumer group; None when it is not one.
    pub(super) fn consumer_commit_check(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        api_version: i16,
    ) -> Option<ErrorCode> {
        self.consumer_groups()
            .borrow()
            .get(group_id)
            .map(|g| g.validate_offset_commit(member_id, member_epoch, api_version))
    }

    /// OffsetFetch's member check (NONE for a group that is not a consumer group).
    pub fn consumer_fetch_check(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> ErrorCode {
        self.consumer_groups()
            .borrow()
            .get(group_id)
            .map_or(ErrorCode::NONE, |g| {
                g.validate_offset_fetch(member_id, member_epoch)
            })
    }

    /// ConsumerGroupDescribe of one group; None when it is not a consumer group.
    pub fn describe_consumer_group(&self, group_id: &str) -> Option<ConsumerGroupDescription> {
        let groups = self.consumer_groups().borrow();
        let g = groups.get(group_id)?;
        Some(ConsumerGroupDescription {
            state: g.state(),
            group_epoch: g.group_epoch(),
            assignment_epoch: g.assignment_epoch(),
            assignor: g.assignor().name(),
            members: g
                .members()
                .map(|m| ConsumerMemberDescription {
                    member: m.clone(),
                    target: g.target_of(&m.member_id).cloned().unwrap_or_default(),
                })
                .collect(),
        })
    }

    /// Every consumer group of this shard: (id, state).
    pub(super) fn list_consumer_groups(&self) -> Vec<(String, &'static str)> {
        self.consumer_groups()
            .borrow()
            .values()
            .map(|g| (g.group_id().to_string(), g.state()))
            .collect()
    }

    /// Topics a consumer group's members subscribe to (OffsetDelete); None when it is not one.
    pub(super) fn consumer_subscribed_topics(
        &self,
        group_id: &str,
    ) -> Option<std::collections::BTreeSet<String>> {
        self.consumer_groups()
            .borrow()
            .get(group_id)
            .map(ConsumerGroup::subscribed_topic_names)
    }

    /// DeleteGroups of a consumer group: Some(NON_EMPTY_GROUP) while it has members, else
    /// it is forgotten here (the caller deletes its stored state with its offsets).
    pub(super) fn delete_consumer_group(&self, group_id: &str) -> Option<ErrorCode> {
        let mut groups = self.consumer_groups().borrow_mut();
        let g = groups.get(group_id)?;
        if !g.is_empty() {
            return Some(ErrorCode::NON_EMPTY_GROUP);
        }
        groups.remove(group_id);
        Some(ErrorCode::NONE)
    }

    /// Deletes the stored records of an empty consumer group that becomes a classic group, so
    /// a restart does not bring it back as a consumer group. A failure is logged.
    pub(super) async fn forget_consumer_records(&self, group_id: &str, now: i64) {
        tracing::info!(
            group = group_id,
            "empty consumer group converted to a classic group"
        );
        let job = self
            .offsets_log()
            .borrow_mut()
            .delete_consumer_records(group_id, now);
        let result = match job {
            Ok(Some(job)) => self.run_store_job(job).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::error!(group = group_id, error = %e, "deleting the consumer group's records failed");
        }
    }

    /// Stores a consumer group's state; a failure is logged: the group works on from memory,
    /// and only a restart would lose the change.
    async fn store_consumer_group(&self, group_id: &str, stored: StoredConsumerGroup, now: i64) {
        let job = self
            .offsets_log()
            .borrow_mut()
            .store_consumer_group(group_id, &stored, now);
        let result = match job {
            Ok(Some(job)) => self.run_store_job(job).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::error!(group = group_id, error = %e, "storing the consumer group failed");
        }
    }
}
