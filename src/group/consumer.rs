//! The consumer rebalance protocol (KIP-848) as a pure state machine, next to the classic one
//! ([`super::state`]): driven by ConsumerGroupHeartbeat requests and explicit time, no I/O, no
//! clock.
//!
//! Lives on: the shard that owns the group's `__consumer_offsets` partition
//! (`placement::group_owner`), like a classic group; the coordinator ([`super::coordinator`])
//! holds it and hands it the topics that shard knows ([`TopicsView`]).
//!
//! # Epochs
//!
//! - The **group epoch** moves whenever what the assignment depends on changes: a member
//!   joins or leaves, a subscription changes, a subscribed topic appears or grows.
//! - The **target assignment** is recomputed by the group's assignor (`uniform` or `range`,
//!   server side) when its epoch is behind the group epoch; it then takes the group epoch.
//! - Each member has a **member epoch**: 0 to join, -1 to leave, -2 for a static member that
//!   leaves for a while (it keeps its assignment until its session expires or its instance
//!   comes back). A member moves to the target epoch when it reconciles.
//!
//! # Reconciliation (revoke before assign; Kafka's `CurrentAssignmentBuilder`)
//!
//! A member behind the target first loses what the target takes away: its assignment
//! shrinks to `current ∩ target` and the rest is *pending revocation*, at its old epoch
//! (state UnrevokedPartitions), until a heartbeat lists owned partitions that no longer
//! include them (or its rebalance timeout fences it). Then it takes the new epoch and the
//! target partitions no other member holds or is revoking; those still held elsewhere wait
//! (state UnreleasedPartitions) and are handed over on a later heartbeat once released. So a
//! partition is never assigned to two members at once, and a partition that stays with its
//! member never stops being consumed.
//!
//! # Fencing
//!
//! A heartbeat with a member epoch above the member's, or below it other than the previous
//! epoch with owned partitions within the current assignment (a lost response), is
//! FENCED_MEMBER_EPOCH: the member is removed and rejoins with epoch 0. A member whose session
//! (`session_timeout_ms` since its last heartbeat) or revocation (its rebalance timeout)
//! expires is removed by [`ConsumerGroup::tick`].

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::error::ErrorCode;

/// The member epoch of a leave.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch of a static member's temporary leave.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The topics the coordinator's shard knows: name to (id, partition count).
pub type TopicsView = BTreeMap<String, (Uuid, i32)>;

/// A server-side assignor (`group.remote.assignor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignor {
    /// Balanced and sticky: partition counts differ by at most one between members that
    /// subscribe to the same topics, and a partition stays with its member when it can.
    Uniform,
    /// Per topic, contiguous ranges of partitions to members in member id order.
    Range,
}

impl Assignor {
    pub fn parse(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }
}

/// Broker settings of consumer groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `group.consumer.max.size`.
    pub max_size: usize,
    /// `group.remote.assignor`: the assignor of members that name none.
    pub assignor: Assignor,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig {
            heartbeat_interval_ms: 5_000,
            session_timeout_ms: 45_000,
            max_size: i32::MAX as usize,
            assignor: Assignor::Uniform,
        }
    }
}

/// Where a member is in its reconciliation (Kafka's `MemberState`, with its stored values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

impl MemberState {
    pub fn as_i8(self) -> i8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        }
    }

    pub fn from_i8(v: i8) -> MemberState {
        match v {
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Stable,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Stable => "stable",
            MemberState::UnrevokedPartitions => "unrevoked_partitions",
            MemberState::UnreleasedPartitions => "unreleased_partitions",
        }
    }
}

/// A member of a consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    /// What the member owns now.
    pub assigned: Assignment,
    /// What it must give up before it takes anything new.
    pub pending_revocation: Assignment,
    pub last_heartbeat_ms: i64,
    /// When a member asked to revoke must have done so (its rebalance timeout).
    pub revoke_deadline_ms: Option<i64>,
}

impl ConsumerMember {
    fn new(member_id: String, now_ms: i64) -> ConsumerMember {
        ConsumerMember {
            member_id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 300_000,
            subscribed_topic_names: Vec::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            member_epoch: 0,
            previous_member_epoch: 0,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            last_heartbeat_ms: now_ms,
            revoke_deadline_ms: None,
        }
    }

    /// Whether this member subscribes to `topic` (`regex` its compiled regular expression).
    fn subscribes(&self, topic: &str, regex: Option<&regex::Regex>) -> bool {
        self.subscribed_topic_names.iter().any(|t| t == topic)
            || regex.is_some_and(|r| r.is_match(topic))
    }
}

/// A ConsumerGroupHeartbeat's fields (None: unchanged since the last heartbeat).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub version: i16,
    pub member_id: String,
    pub member_epoch: i32,
    /// Sent on the join (and a static leave); None later means unchanged.
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
    /// The member id the coordinator gives a v0 member that joins without one.
    pub generated_member_id: String,
}

/// A ConsumerGroupHeartbeat's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub error: ErrorCode,
    pub message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// Sent when the member's assignment (or epoch) changed, or when it joins.
    pub assignment: Option<Assignment>,
}

impl HeartbeatResponse {
    fn error(error: ErrorCode, message: &str) -> HeartbeatResponse {
        HeartbeatResponse {
            error,
            message: Some(message.to_string()),
            member_epoch: -1,
            ..HeartbeatResponse::default()
        }
    }
}

type Refusal = (ErrorCode, String);

fn refuse<T>(error: ErrorCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err((error, message.into()))
}

/// A consumer group, as the coordinator holds it.
#[derive(Clone, Debug)]
pub struct ConsumerGroup {
    group_id: String,
    config: ConsumerGroupConfig,
    group_epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, ConsumerMember>,
    /// The target assignment of each member, as of `assignment_epoch`.
    target: BTreeMap<String, Assignment>,
    /// The subscribed topics the target was computed for (None: not known since a restart).
    subscribed: Option<TopicsView>,
    /// Something that is stored changed since [`ConsumerGroup::take_dirty`].
    dirty: bool,
    /// The racks of each partition's replicas, for rack-aware assignment (empty when the
    /// brokers have no racks).
    partition_racks: PartitionRacks,
}

/// The racks each partition's replicas are in.
pub type PartitionRacks = BTreeMap<(Uuid, i32), BTreeSet<String>>;

/// What the coordinator stores and restores of a consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredConsumerGroup {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: Vec<ConsumerMember>,
    pub target: BTreeMap<String, Assignment>,
}

impl ConsumerGroup {
    pub fn new(group_id: &str, config: ConsumerGroupConfig) -> ConsumerGroup {
        ConsumerGroup {
            group_id: group_id.to_string(),
            config,
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscribed: None,
            dirty: false,
            partition_racks: PartitionRacks::new(),
        }
    }

    /// A group as it was stored; its members' sessions start again at `now_ms`.
    pub fn restore(
        group_id: &str,
        config: ConsumerGroupConfig,
        stored: StoredConsumerGroup,
        now_ms: i64,
    ) -> ConsumerGroup {
        let mut g = ConsumerGroup::new(group_id, config);
        g.group_epoch = stored.group_epoch;
        g.assignment_epoch = stored.assignment_epoch;
        g.target = stored.target;
        for mut m in stored.members {
            m.last_heartbeat_ms = now_ms;
            m.revoke_deadline_ms = (m.state == MemberState::UnrevokedPartitions)
                .then(|| now_ms + i64::from(m.rebalance_timeout_ms));
            g.members.insert(m.member_id.clone(), m);
        }
        g
    }

    pub fn stored(&self) -> StoredConsumerGroup {
        StoredConsumerGroup {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            members: self.members.values().cloned().collect(),
            target: self.target.clone(),
        }
    }

    /// The racks of the partitions' replicas as the coordinator's shard knows them now. The
    /// `uniform` assignor prefers, within balance and stickiness, to give a partition to a
    /// member in one of its replicas' racks (members send `rack_id`).
    pub fn set_partition_racks(&mut self, racks: PartitionRacks) {
        self.partition_racks = racks;
    }

    /// Whether the stored state changed since the last call (and forgets it).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }

    pub fn members(&self) -> impl Iterator<Item = &ConsumerMember> {
        self.members.values()
    }

    pub fn member(&self, member_id: &str) -> Option<&ConsumerMember> {
        self.members.get(member_id)
    }

    pub fn target_of(&self, member_id: &str) -> Option<&Assignment> {
        self.target.get(member_id)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The group's state as ListGroups and ConsumerGroupDescribe name it.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.member_epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The assignor the group uses: the one its members name, else the broker's default.
    pub fn assignor(&self) -> Assignor {
        self.members
            .values()
            .filter_map(|m| m.server_assignor.as_deref().and_then(Assignor::parse))
            .next()
            .unwrap_or(self.config.assignor)
    }

    fn bump_epoch(&mut self) {
        self.group_epoch += 1;
        self.dirty = true;
    }

    /// One ConsumerGroupHeartbeat.
    pub fn heartbeat(
        &mut self,
        req: &HeartbeatRequest,
        topics: &TopicsView,
        now_ms: i64,
    ) -> HeartbeatResponse {
        match self.heartbeat_inner(req, topics, now_ms) {
            Ok(r) => r,
            Err((code, message)) => HeartbeatResponse::error(code, &message),
        }
    }

    fn heartbeat_inner(
        &mut self,
        req: &HeartbeatRequest,
        topics: &TopicsView,
        now_ms: i64,
    ) -> Result<HeartbeatResponse, Refusal> {
        validate(req)?;
        if req.member_epoch == LEAVE_EPOCH || req.member_epoch == STATIC_LEAVE_EPOCH {
            return self.leave(req);
        }
        let member_id = if req.member_epoch == 0 && req.member_id.is_empty() {
            req.generated_member_id.clone()
        } else {
            req.member_id.clone()
        };
        let before = self
            .members
            .get(&member_id)
            .map(|m| (m.member_epoch, m.assigned.clone()));
        if req.member_epoch == 0 {
            self.join(&member_id, req, now_ms)?;
        } else {
            self.check_epoch(&member_id, req)?;
        }
        self.update_member(&member_id, req, now_ms)?;
        let resolved = self.resolve_subscriptions(topics);
        if self.subscribed.as_ref() != Some(&resolved) {
            // After a restart the subscription is learnt again: that alone is no change.
            if self.subscribed.is_some() {
                self.bump_epoch();
            }
            self.subscribed = Some(resolved);
        }
        if self.assignment_epoch < self.group_epoch {
            self.compute_target();
        }
        self.reconcile(&member_id, req.owned.as_ref(), now_ms);
        let Some(m) = self.members.get(&member_id) else {
            return refuse(ErrorCode::UNKNOWN_MEMBER_ID, "the member is gone");
        };
        let changed = before.as_ref() != Some(&(m.member_epoch, m.assigned.clone()));
        let out_of_step = req.owned.as_ref().is_some_and(|o| !same(o, &m.assigned));
        let send = req.member_epoch == 0 || changed || out_of_step;
        Ok(HeartbeatResponse {
            error: ErrorCode::NONE,
            message: None,
            member_id: Some(member_id.clone()),
            member_epoch: m.member_epoch,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            assignment: send.then(|| m.assigned.clone()),
        })
    }

    fn leave(&mut self, req: &HeartbeatRequest) -> Result<HeartbeatResponse, Refusal> {
        let Some(m) = self.members.get_mut(&req.member_id) else {
            return refuse(
                ErrorCode::UNKNOWN_MEMBER_ID,
                format!("member {} is not in group {}", req.member_id, self.group_id),
            );
        };
        if req.instance_id.is_some() && m.instance_id != req.instance_id {
            return refuse(
                ErrorCode::FENCED_INSTANCE_ID,
                "the instance id does not match the member's",
            );
        }
        if req.member_epoch == STATIC_LEAVE_EPOCH {
            // It keeps its assignment until it comes back or its session expires.
            m.previous_member_epoch = m.member_epoch;
            m.member_epoch = STATIC_LEAVE_EPOCH;
            self.dirty = true;
        } else {
            self.remove_member(&req.member_id);
        }
        Ok(HeartbeatResponse {
            member_id: Some(req.member_id.clone()),
            member_epoch: req.member_epoch,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            ..HeartbeatResponse::default()
        })
    }

    fn join(
        &mut self,
        member_id: &str,
        req: &HeartbeatRequest,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        if let Some(instance) = &req.instance_id {
            let holder = self
                .members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(instance))
                .map(|m| (m.member_id.clone(), m.member_epoch));
            if let Some((old_id, old_epoch)) = holder
                && old_id != member_id
            {
                if old_epoch != STATIC_LEAVE_EPOCH {
                    return refuse(
                        ErrorCode::UNRELEASED_INSTANCE_ID,
                        format!("instance id {instance} is still used by member {old_id}"),
                    );
                }
                // The instance comes back under a new member id: it takes over the old
                // member's epoch and assignment, so nothing moves.
                if let Some(mut m) = self.members.remove(&old_id) {
                    m.member_id = member_id.to_string();
                    m.member_epoch = m.previous_member_epoch;
                    m.last_heartbeat_ms = now_ms;
                    self.members.insert(member_id.to_string(), m);
                }
                if let Some(t) = self.target.remove(&old_id) {
                    self.target.insert(member_id.to_string(), t);
                }
                self.dirty = true;
                return Ok(());
            }
        }
        match self.members.get_mut(member_id) {
            Some(m) => {
                // A member that rejoins with its id (it was fenced, or lost the answer to its
                // join) starts again from nothing.
                m.assigned.clear();
                m.pending_revocation.clear();
                m.member_epoch = 0;
                m.state = MemberState::Stable;
                m.revoke_deadline_ms = None;
                self.bump_epoch();
            }
            None => {
                if self.members.len() >= self.config.max_size {
                    return refuse(
                        ErrorCode::GROUP_MAX_SIZE_REACHED,
                        format!(
                            "group {} has reached its maximum size of {}",
                            self.group_id, self.config.max_size
                        ),
                    );
                }
                let mut m = ConsumerMember::new(member_id.to_string(), now_ms);
                m.instance_id = req.instance_id.clone();
                self.members.insert(member_id.to_string(), m);
                self.bump_epoch();
            }
        }
        Ok(())
    }

    fn check_epoch(&mut self, member_id: &str, req: &HeartbeatRequest) -> Result<(), Refusal> {
        let Some(m) = self.members.get(member_id) else {
            return refuse(
                ErrorCode::UNKNOWN_MEMBER_ID,
                format!("member {member_id} is not in group {}", self.group_id),
            );
        };
        if req.instance_id.is_some() && m.instance_id != req.instance_id {
            return refuse(
                ErrorCode::FENCED_INSTANCE_ID,
                "the instance id does not match the member's",
            );
        }
        let received = req.member_epoch;
        let lost_response = received == m.previous_member_epoch
            && req.owned.as_ref().is_some_and(|o| subset(o, &m.assigned));
        if received != m.member_epoch && !lost_response {
            let message = format!(
                "member epoch {received} is fenced: the member's epoch is {}",
                m.member_epoch
            );
            self.remove_member(member_id);
            return refuse(ErrorCode::FENCED_MEMBER_EPOCH, message);
        }
        Ok(())
    }

    fn update_member(
        &mut self,
        member_id: &str,
        req: &HeartbeatRequest,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        let Some(m) = self.members.get_mut(member_id) else {
            return refuse(ErrorCode::UNKNOWN_MEMBER_ID, "the member is gone");
        };
        m.last_heartbeat_ms = now_ms;
        let mut stored = false;
        let mut subscription = false;
        if m.client_id != req.client_id || m.client_host != req.client_host {
            m.client_id.clone_from(&req.client_id);
            m.client_host.clone_from(&req.client_host);
            stored = true;
        }
        if req.rebalance_timeout_ms >= 0 && m.rebalance_timeout_ms != req.rebalance_timeout_ms {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            stored = true;
        }
        if req.rack_id.is_some() && m.rack_id != req.rack_id {
            m.rack_id.clone_from(&req.rack_id);
            subscription = true;
        }
        if let Some(names) = &req.subscribed_topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            if m.subscribed_topic_names != names {
                m.subscribed_topic_names = names;
                subscription = true;
            }
        }
        if let Some(regex) = &req.subscribed_topic_regex {
            let regex = (!regex.is_empty()).then(|| regex.clone());
            if m.subscribed_topic_regex != regex {
                m.subscribed_topic_regex = regex;
                subscription = true;
            }
        }
        if let Some(assignor) = &req.server_assignor {
            let assignor = (!assignor.is_empty()).then(|| assignor.clone());
            if m.server_assignor != assignor {
                m.server_assignor = assignor;
                subscription = true;
            }
        }
        if subscription {
            self.bump_epoch();
        } else if stored {
            self.dirty = true;
        }
        Ok(())
    }

    /// Every topic some member subscribes to, as the coordinator's shard knows it now.
    fn resolve_subscriptions(&self, topics: &TopicsView) -> TopicsView {
        let regexes = self.compiled_regexes();
        let mut out = TopicsView::new();
        for m in self.members.values() {
            for name in &m.subscribed_topic_names {
                if let Some(t) = topics.get(name) {
                    out.insert(name.clone(), *t);
                }
            }
            if let Some(r) = m
                .subscribed_topic_regex
                .as_ref()
                .and_then(|r| regexes.get(r))
            {
                for (name, t) in topics.iter().filter(|(n, _)| !is_internal(n)) {
                    if r.is_match(name) {
                        out.insert(name.clone(), *t);
                    }
                }
            }
        }
        out
    }

    fn compiled_regexes(&self) -> BTreeMap<String, regex::Regex> {
        self.members
            .values()
            .filter_map(|m| m.subscribed_topic_regex.clone())
            .filter_map(|r| compile(&r).map(|c| (r, c)))
            .collect()
    }

    /// Recomputes every member's target with the group's assignor, at the group epoch.
    fn compute_target(&mut self) {
        let topics = self.subscribed.clone().unwrap_or_default();
        let regexes = self.compiled_regexes();
        // For each subscribed topic, its partitions and the members that may take them.
        let mut eligible: BTreeMap<(Uuid, i32), Vec<String>> = BTreeMap::new();
        let mut by_topic: BTreeMap<Uuid, (i32, Vec<String>)> = BTreeMap::new();
        for (name, (id, partitions)) in &topics {
            let members: Vec<String> = self
                .members
                .values()
                .filter(|m| {
                    let r = m
                        .subscribed_topic_regex
                        .as_ref()
                        .and_then(|r| regexes.get(r));
                    m.subscribes(name, r)
                })
                .map(|m| m.member_id.clone())
                .collect();
            if members.is_empty() {
                continue;
            }
            for p in 0..*partitions {
                eligible.insert((*id, p), members.clone());
            }
            by_topic.insert(*id, (*partitions, members));
        }
        self.target = match self.assignor() {
            Assignor::Range => assign_range(&by_topic, self.members.keys()),
            Assignor::Uniform => {
                let racks = &self.partition_racks;
                let members = &self.members;
                let same_rack = |m: &str, tp: (Uuid, i32)| {
                    members
                        .get(m)
                        .and_then(|m| m.rack_id.as_ref())
                        .is_some_and(|r| racks.get(&tp).is_some_and(|rs| rs.contains(r)))
                };
                assign_uniform(&eligible, &self.target, self.members.keys(), same_rack)
            }
        };
        self.assignment_epoch = self.group_epoch;
        self.dirty = true;
    }

    /// Moves one member toward its target, revoking before assigning.
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now_ms: i64) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_elsewhere: BTreeSet<(Uuid, i32)> = self
            .members
            .values()
            .filter(|m| m.member_id != member_id)
            .flat_map(|m| flatten(&m.assigned).chain(flatten(&m.pending_revocation)))
            .collect();
        let assignment_epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(member_id) else {
            return;
        };
        let before = (
            m.member_epoch,
            m.state,
            m.assigned.clone(),
            m.pending_revocation.clone(),
        );
        if m.state == MemberState::UnrevokedPartitions {
            let revoked = owned.is_some_and(|o| !intersects(o, &m.pending_revocation));
            if !revoked {
                return;
            }
            m.pending_revocation.clear();
            m.revoke_deadline_ms = None;
            m.state = MemberState::Stable;
        }
        if m.member_epoch == assignment_epoch && m.state == MemberState::Stable {
            return;
        }
        let keep = intersection(&m.assigned, &target);
        let revoke = difference(&m.assigned, &target);
        if !revoke.is_empty() {
            m.assigned = keep;
            m.pending_revocation = revoke;
            m.state = MemberState::UnrevokedPartitions;
            m.revoke_deadline_ms = Some(now_ms + i64::from(m.rebalance_timeout_ms));
        } else {
            let mut next = keep;
            let mut unreleased = false;
            for (t, p) in flatten(&difference(&target, &next)).collect::<Vec<_>>() {
                if held_elsewhere.contains(&(t, p)) {
                    unreleased = true;
                } else {
                    next.entry(t).or_default().insert(p);
                }
            }
            m.assigned = next;
            if m.member_epoch != assignment_epoch {
                m.previous_member_epoch = m.member_epoch;
                m.member_epoch = assignment_epoch;
            }
            m.state = if unreleased {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            };
        }
        if before
            != (
                m.member_epoch,
                m.state,
                m.assigned.clone(),
                m.pending_revocation.clone(),
            )
        {
            self.dirty = true;
        }
    }

    fn remove_member(&mut self, member_id: &str) {
        if self.members.remove(member_id).is_some() {
            self.target.remove(member_id);
            self.bump_epoch();
        }
    }

    /// When [`ConsumerGroup::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| {
                [
                    Some(m.last_heartbeat_ms + i64::from(self.config.session_timeout_ms)),
                    m.revoke_deadline_ms,
                ]
            })
            .flatten()
            .min()
    }

    /// Removes the members whose session or revocation expired; returns their ids.
    pub fn tick(&mut self, now_ms: i64) -> Vec<String> {
        let session = i64::from(self.config.session_timeout_ms);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                now_ms >= m.last_heartbeat_ms + session
                    || m.revoke_deadline_ms.is_some_and(|d| now_ms >= d)
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id);
        }
        expired
    }

    /// OffsetCommit's check (Kafka's `ConsumerGroup.validateOffsetCommit`): a commit without a
    /// member (epoch -1) is allowed only while the group is empty; a member's commit must
    /// carry its current epoch, and come as OffsetCommit v9+.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        version: i16,
    ) -> ErrorCode {
        if member_epoch < 0 && self.members.is_empty() {
            return ErrorCode::NONE;
        }
        let Some(m) = self.members.get(member_id) else {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        };
        if version < 9 {
            return ErrorCode::UNSUPPORTED_VERSION;
        }
        if member_epoch != m.member_epoch {
            return ErrorCode::STALE_MEMBER_EPOCH;
        }
        ErrorCode::NONE
    }

    /// OffsetFetch's check: without a member (epoch -1, or a version below 9) anyone reads;
    /// a member must carry its current epoch.
    pub fn validate_offset_fetch(&self, member_id: Option<&str>, member_epoch: i32) -> ErrorCode {
        let Some(member_id) = member_id.filter(|_| member_epoch >= 0) else {
            return ErrorCode::NONE;
        };
        let Some(m) = self.members.get(member_id) else {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        };
        if member_epoch != m.member_epoch {
            return ErrorCode::STALE_MEMBER_EPOCH;
        }
        ErrorCode::NONE
    }

    /// Topics the members subscribe to by name (OffsetDelete's check).
    pub fn subscribed_topic_names(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .members
            .values()
            .flat_map(|m| m.subscribed_topic_names.iter().cloned())
            .collect();
        if let Some(s) = &self.subscribed {
            out.extend(s.keys().cloned());
        }
        out
    }
}

fn validate(req: &HeartbeatRequest) -> Result<(), Refusal> {
    let leaving = req.member_epoch == LEAVE_EPOCH || req.member_epoch == STATIC_LEAVE_EPOCH;
    if req.member_id.is_empty() && (req.version >= 1 || req.member_epoch != 0) {
        return refuse(ErrorCode::INVALID_REQUEST, "MemberId can't be empty.");
    }
    if req.member_epoch < STATIC_LEAVE_EPOCH {
        return refuse(ErrorCode::INVALID_REQUEST, "MemberEpoch is invalid.");
    }
    if req.member_epoch == STATIC_LEAVE_EPOCH && req.instance_id.is_none() {
        return refuse(
            ErrorCode::INVALID_REQUEST,
            "InstanceId can't be null when MemberEpoch is -2.",
        );
    }
    if req.member_epoch == 0 {
        if req.rebalance_timeout_ms < 0 {
            return refuse(
                ErrorCode::INVALID_REQUEST,
                "RebalanceTimeoutMs must be provided in first request.",
            );
        }
        if req
            .owned
            .as_ref()
            .is_some_and(|o| o.values().any(|p| !p.is_empty()))
        {
            return refuse(
                ErrorCode::INVALID_REQUEST,
                "TopicPartitions must be empty when (re-)joining.",
            );
        }
        if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
            return refuse(
                ErrorCode::INVALID_REQUEST,
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            );
        }
    }
    if !leaving
        && let Some(r) = req
            .subscribed_topic_regex
            .as_deref()
            .filter(|r| !r.is_empty())
        && compile(r).is_none()
    {
        return refuse(
            ErrorCode::INVALID_REGULAR_EXPRESSION,
            format!("SubscribedTopicRegex `{r}` is not a valid regular expression."),
        );
    }
    if !leaving
        && let Some(a) = req.server_assignor.as_deref().filter(|a| !a.is_empty())
        && Assignor::parse(a).is_none()
    {
        return refuse(
            ErrorCode::UNSUPPORTED_ASSIGNOR,
            format!("ServerAssignor {a} is not supported. Supported assignors: uniform, range."),
        );
    }
    Ok(())
}

/// A subscription's regular expression (RE2 syntax, as Kafka's RE2/J), matching whole names.
fn compile(regex: &str) -> Option<regex::Regex> {
    regex::Regex::new(&format!("^(?:{regex})$")).ok()
}

fn is_internal(topic: &str) -> bool {
    topic.starts_with("__")
}

fn flatten(a: &Assignment) -> impl Iterator<Item = (Uuid, i32)> + '_ {
    a.iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
}

fn same(a: &Assignment, b: &Assignment) -> bool {
    flatten(a).eq(flatten(b))
}

fn subset(a: &Assignment, of: &Assignment) -> bool {
    flatten(a).all(|(t, p)| of.get(&t).is_some_and(|ps| ps.contains(&p)))
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    flatten(a).any(|(t, p)| b.get(&t).is_some_and(|ps| ps.contains(&p)))
}

fn intersection(a: &Assignment, b: &Assignment) -> Assignment {
    collect(flatten(a).filter(|(t, p)| b.get(t).is_some_and(|ps| ps.contains(p))))
}

fn difference(a: &Assignment, b: &Assignment) -> Assignment {
    collect(flatten(a).filter(|(t, p)| !b.get(t).is_some_and(|ps| ps.contains(p))))
}

fn collect(it: impl Iterator<Item = (Uuid, i32)>) -> Assignment {
    let mut out = Assignment::new();
    for (t, p) in it {
        out.entry(t).or_default().insert(p);
    }
    out
}

/// The range assignor: per topic, the subscribed members in id order take contiguous
/// ranges, the first `partitions % members` one more.
fn assign_range<'a>(
    by_topic: &BTreeMap<Uuid, (i32, Vec<String>)>,
    members: impl Iterator<Item = &'a String>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> =
        members.map(|m| (m.clone(), Assignment::new())).collect();
    for (topic, (partitions, subscribers)) in by_topic {
        let n = subscribers.len() as i32;
        let (each, extra) = (partitions / n, partitions % n);
        let mut next = 0;
        for (i, m) in subscribers.iter().enumerate() {
            let count = each + i32::from((i as i32) < extra);
            if count > 0 {
                out.entry(m.clone())
                    .or_default()
                    .insert(*topic, (next..next + count).collect());
            }
            next += count;
        }
    }
    out
}

/// The uniform assignor: sticky, balanced and rack-aware. Each member keeps what it had in the previous
/// target while it still subscribes to the topic and stays within its share; the rest goes,
/// partition by partition, to the eligible member with the fewest; then partitions move
/// from the fullest to the emptiest eligible member until counts differ by at most one.
fn assign_uniform<'a>(
    eligible: &BTreeMap<(Uuid, i32), Vec<String>>,
    previous: &BTreeMap<String, Assignment>,
    members: impl Iterator<Item = &'a String>,
    same_rack: impl Fn(&str, (Uuid, i32)) -> bool,
) -> BTreeMap<String, Assignment> {
    let members: Vec<String> = members.cloned().collect();
    let mut owner: BTreeMap<(Uuid, i32), String> = BTreeMap::new();
    let mut count: BTreeMap<String, usize> = members.iter().map(|m| (m.clone(), 0)).collect();
    // Each member's fair share among the partitions it may take: with everyone subscribed to
    // the same topics, ceil(P / N).
    let share = |m: &str| -> usize {
        let mine = eligible
            .values()
            .filter(|ms| ms.iter().any(|x| x == m))
            .count();
        let sharing = members
            .iter()
            .filter(|o| {
                eligible
                    .values()
                    .any(|ms| ms.contains(o) && ms.iter().any(|x| x == m))
            })
            .count()
            .max(1);
        mine.div_ceil(sharing)
    };
    let shares: BTreeMap<String, usize> = members.iter().map(|m| (m.clone(), share(m))).collect();
    for (m, a) in previous {
        let Some(c) = count.get_mut(m) else { continue };
        // Within its share a member keeps the partitions in its rack first.
        let mut kept: Vec<(Uuid, i32)> = flatten(a).collect();
        kept.sort_by_key(|tp| !same_rack(m, *tp));
        for tp in kept {
            let ok = eligible.get(&tp).is_some_and(|ms| ms.contains(m));
            if ok && *c < shares.get(m).copied().unwrap_or(0) && !owner.contains_key(&tp) {
                owner.insert(tp, m.clone());
                *c += 1;
            }
        }
    }
    for (tp, ms) in eligible {
        if owner.contains_key(tp) {
            continue;
        }
        if let Some(m) = ms
            .iter()
            .min_by_key(|m| (count.get(*m).copied().unwrap_or(0), !same_rack(m, *tp), *m))
        {
            owner.insert(*tp, m.clone());
            *count.entry(m.clone()).or_default() += 1;
        }
    }
    // Balance: one partition at a time from the most loaded member that has one another
    // member may take, to the least loaded such member, while that narrows the spread. Each
    // move lowers the sum of squared counts, so this ends; it is bounded by the partitions
    // anyway. Moving from the fullest first means a member that joins takes at most one
    // partition from each of the others, and no partition moves between the others.
    for _ in 0..eligible.len() {
        let mut by_load: Vec<&String> = members.iter().collect();
        by_load.sort_by_key(|m| (std::cmp::Reverse(count.get(*m).copied().unwrap_or(0)), *m));
        let mut step = None;
        'find: for from in by_load {
            let from_count = count.get(from).copied().unwrap_or(0);
            // Its partitions outside its rack go first, to a member in their rack if one may
            // take them.
            let mut mine: Vec<(Uuid, i32)> = owner
                .iter()
                .rev()
                .filter(|(_, o)| *o == from)
                .map(|(tp, _)| *tp)
                .collect();
            mine.sort_by_key(|tp| same_rack(from, *tp));
            for tp in mine {
                let Some(to) = eligible.get(&tp).and_then(|ms| {
                    ms.iter()
                        .filter(|m| *m != from)
                        .filter(|m| count.get(*m).copied().unwrap_or(0) + 1 < from_count)
                        .min_by_key(|m| {
                            (!same_rack(m, tp), count.get(*m).copied().unwrap_or(0), *m)
                        })
                }) else {
                    continue;
                };
                step = Some((tp, from.clone(), to.clone()));
                break 'find;
            }
        }
        let Some((tp, from, to)) = step else { break };
        *count.entry(from).or_default() -= 1;
        *count.entry(to.clone()).or_default() += 1;
        owner.insert(tp, to);
    }
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for ((t, p), m) in owner {
        out.entry(m).or_default().entry(t).or_default().insert(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Uuid = Uuid::from_u128(1);
    const U: Uuid = Uuid::from_u128(2);

    fn topics() -> TopicsView {
        TopicsView::from([("t".to_string(), (T, 12))])
    }

    fn config() -> ConsumerGroupConfig {
        ConsumerGroupConfig {
            heartbeat_interval_ms: 500,
            session_timeout_ms: 6_000,
            max_size: 10,
            assignor: Assignor::Uniform,
        }
    }

    fn join(id: &str) -> HeartbeatRequest {
        HeartbeatRequest {
            version: 1,
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 10_000,
            subscribed_topic_names: Some(vec!["t".into()]),
            owned: Some(Assignment::new()),
            ..HeartbeatRequest::default()
        }
    }

    fn beat(id: &str, epoch: i32, owned: Option<&Assignment>) -> HeartbeatRequest {
        HeartbeatRequest {
            version: 1,
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned: owned.cloned(),
            ..HeartbeatRequest::default()
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    /// A client: what it owns, and its epoch, updated from each answer.
    struct Client {
        id: String,
        epoch: i32,
        owned: Assignment,
    }

    impl Client {
        fn beat(
            &mut self,
            g: &mut ConsumerGroup,
            topics: &TopicsView,
            now: i64,
        ) -> HeartbeatResponse {
            let req = if self.epoch == 0 {
                join(&self.id)
            } else {
                beat(&self.id, self.epoch, Some(&self.owned))
            };
            let r = g.heartbeat(&req, topics, now);
            assert_eq!(r.error, ErrorCode::NONE, "{}: {:?}", self.id, r.message);
            self.epoch = r.member_epoch;
            if let Some(a) = &r.assignment {
                self.owned = a.clone();
            }
            r
        }
    }

    /// No partition is owned by two clients at once.
    fn assert_disjoint(clients: &[Client]) {
        let mut seen = BTreeSet::new();
        for c in clients {
            for tp in flatten(&c.owned) {
                assert!(seen.insert(tp), "{tp:?} owned twice");
            }
        }
    }

    #[test]
    fn members_share_partitions_and_a_joiner_takes_only_what_moves() {
        let mut g = ConsumerGroup::new("g", config());
        let mut clients: Vec<Client> = ["a", "b", "c"]
            .iter()
            .map(|id| Client {
                id: id.to_string(),
                epoch: 0,
                owned: Assignment::new(),
            })
            .collect();
        for round in 0..4 {
            for c in clients.iter_mut() {
                c.beat(&mut g, &topics(), round);
            }
        }
        assert_disjoint(&clients);
        assert_eq!(
            clients.iter().map(|c| count(&c.owned)).collect::<Vec<_>>(),
            [4, 4, 4]
        );
        assert_eq!(g.state(), "Stable");
        let before: Vec<Assignment> = clients.iter().map(|c| c.owned.clone()).collect();

        clients.push(Client {
            id: "d".into(),
            epoch: 0,
            owned: Assignment::new(),
        });
        let r = clients[3].beat(&mut g, &topics(), 10);
        // Its partitions are still owned by others: it gets the new epoch and nothing yet.
        assert_eq!(r.member_epoch, g.group_epoch());
        assert_eq!(count(&clients[3].owned), 0);
        assert_eq!(
            g.member("d").map(|m| m.state),
            Some(MemberState::UnreleasedPartitions)
        );
        for round in 11..16 {
            for c in clients.iter_mut() {
                c.beat(&mut g, &topics(), round);
            }
            assert_disjoint(&clients);
        }
        assert_eq!(
            clients.iter().map(|c| count(&c.owned)).collect::<Vec<_>>(),
            [3, 3, 3, 3]
        );
        // Each old member only lost one partition: what stayed never moved.
        for (c, b) in clients.iter().zip(&before) {
            assert!(subset(&c.owned, b), "{} kept a subset", c.id);
        }
        assert_eq!(g.state(), "Stable");
        assert!(g.members().all(|m| m.member_epoch == g.assignment_epoch()));
    }

    #[test]
    fn a_joiner_takes_at_most_one_partition_from_each_and_nothing_else_moves() {
        let t = TopicsView::from([("t".to_string(), (T, 100))]);
        let mut g = ConsumerGroup::new(
            "g",
            ConsumerGroupConfig {
                max_size: 100,
                ..config()
            },
        );
        let ids: Vec<String> = (0..11).map(|i| format!("m{i:02}")).collect();
        for id in &ids[..10] {
            g.heartbeat(&join(id), &t, 0);
        }
        g.heartbeat(&beat("m00", 0, None), &t, 0);
        let before: Vec<Assignment> = ids[..10]
            .iter()
            .map(|m| g.target_of(m).cloned().unwrap_or_default())
            .collect();
        assert!(
            before.iter().all(|a| count(a) == 10),
            "{:?}",
            before.iter().map(count).collect::<Vec<_>>()
        );
        g.heartbeat(&join(&ids[10]), &t, 1);
        let joiner = g.target_of(&ids[10]).cloned().unwrap_or_default();
        assert_eq!(count(&joiner), 9);
        for (m, b) in ids[..10].iter().zip(&before) {
            let now = g.target_of(m).cloned().unwrap_or_default();
            assert!(
                subset(&now, b),
                "{m}: a partition moved between old members"
            );
            assert!(count(b) - count(&now) <= 1, "{m} gave up more than one");
        }
    }

    #[test]
    fn uniform_assignor_prefers_members_in_the_partitions_rack() {
        let t = TopicsView::from([("t".to_string(), (T, 4))]);
        let racks: PartitionRacks = (0..4)
            .map(|p| {
                (
                    (T, p),
                    BTreeSet::from([if p < 2 { "rb" } else { "ra" }.to_string()]),
                )
            })
            .collect();
        let mut g = ConsumerGroup::new("g", config());
        g.set_partition_racks(racks.clone());
        let in_rack = |id: &str, rack: &str| HeartbeatRequest {
            rack_id: Some(rack.into()),
            ..join(id)
        };
        g.heartbeat(&in_rack("a", "ra"), &t, 0);
        assert_eq!(g.target_of("a").map(count), Some(4));
        g.heartbeat(&in_rack("b", "rb"), &t, 1);
        // Without racks a would keep 0 and 1 and b take 2 and 3; with them each takes its rack's.
        assert_eq!(
            g.target_of("a").and_then(|a| a.get(&T)),
            Some(&BTreeSet::from([2, 3]))
        );
        assert_eq!(
            g.target_of("b").and_then(|a| a.get(&T)),
            Some(&BTreeSet::from([0, 1]))
        );
        // The same without racks, for contrast.
        let mut plain = ConsumerGroup::new("g", config());
        plain.heartbeat(&join("a"), &t, 0);
        plain.heartbeat(&join("b"), &t, 1);
        assert_eq!(
            plain.target_of("a").and_then(|a| a.get(&T)),
            Some(&BTreeSet::from([0, 1]))
        );
    }

    #[test]
    fn a_member_keeps_its_epoch_until_it_revokes() {
        let mut g = ConsumerGroup::new("g", config());
        let mut a = Client {
            id: "a".into(),
            epoch: 0,
            owned: Assignment::new(),
        };
        a.beat(&mut g, &topics(), 0);
        assert_eq!(count(&a.owned), 12);
        let epoch_a = a.epoch;
        let mut b = Client {
            id: "b".into(),
            epoch: 0,
            owned: Assignment::new(),
        };
        b.beat(&mut g, &topics(), 1);
        // a is told to keep 6 and still runs at its old epoch.
        let r = g.heartbeat(&beat("a", epoch_a, None), &topics(), 2);
        assert_eq!(r.member_epoch, epoch_a);
        assert_eq!(r.assignment.as_ref().map(count), Some(6));
        assert_eq!(
            g.member("a").map(|m| m.state),
            Some(MemberState::UnrevokedPartitions)
        );
        // A heartbeat that still lists the revoked partitions changes nothing.
        let r = g.heartbeat(&beat("a", epoch_a, Some(&a.owned)), &topics(), 3);
        assert_eq!(r.member_epoch, epoch_a);
        // b cannot get them meanwhile.
        b.beat(&mut g, &topics(), 4);
        assert_eq!(count(&b.owned), 0);
        a.owned = r.assignment.clone().unwrap_or_default();
        a.beat(&mut g, &topics(), 5);
        assert_eq!(a.epoch, g.assignment_epoch());
        b.beat(&mut g, &topics(), 6);
        assert_eq!(count(&b.owned), 6);
        assert_disjoint(&[a, b]);
    }

    #[test]
    fn a_member_that_does_not_revoke_in_time_is_removed() {
        let mut g = ConsumerGroup::new("g", config());
        let mut a = Client {
            id: "a".into(),
            epoch: 0,
            owned: Assignment::new(),
        };
        a.beat(&mut g, &topics(), 0);
        let mut b = Client {
            id: "b".into(),
            epoch: 0,
            owned: Assignment::new(),
        };
        b.beat(&mut g, &topics(), 1);
        g.heartbeat(&beat("a", a.epoch, None), &topics(), 2);
        assert_eq!(
            g.member("a").and_then(|m| m.revoke_deadline_ms),
            Some(2 + 10_000)
        );
        // a heartbeats on without giving up what it must revoke.
        for now in [5_000, 9_000] {
            g.heartbeat(&beat("a", a.epoch, None), &topics(), now);
            b.beat(&mut g, &topics(), now);
            assert!(g.tick(now).is_empty());
        }
        assert_eq!(g.next_deadline(), Some(10_002));
        assert!(g.tick(10_001).is_empty());
        assert_eq!(g.tick(10_002), vec!["a".to_string()]);
        b.beat(&mut g, &topics(), 10_003);
        assert_eq!(count(&b.owned), 12);
        // The removed member is unknown; its next heartbeat is refused.
        let r = g.heartbeat(&beat("a", a.epoch, Some(&a.owned)), &topics(), 10_004);
        assert_eq!(r.error, ErrorCode::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn sessions_expire_and_survivors_take_the_partitions() {
        let mut g = ConsumerGroup::new("g", config());
        let mut cs: Vec<Client> = ["a", "b", "c"]
            .iter()
            .map(|id| Client {
                id: id.to_string(),
                epoch: 0,
                owned: Assignment::new(),
            })
            .collect();
        for round in 0..3 {
            for c in cs.iter_mut() {
                c.beat(&mut g, &topics(), round);
            }
        }
        // c goes silent.
        for now in [3_000, 5_999] {
            for c in cs.iter_mut().take(2) {
                c.beat(&mut g, &topics(), now);
            }
            assert!(g.tick(now).is_empty());
        }
        assert_eq!(g.tick(6_002), vec!["c".to_string()]);
        cs.pop();
        for c in cs.iter_mut() {
            c.beat(&mut g, &topics(), 6_003);
        }
        assert_eq!(cs.iter().map(|c| count(&c.owned)).sum::<usize>(), 12);
        assert_disjoint(&cs);
    }

    #[test]
    fn request_errors() {
        let mut g = ConsumerGroup::new("g", config());
        let t = topics();
        let check = |g: &mut ConsumerGroup, req: HeartbeatRequest, code: ErrorCode| {
            let r = g.heartbeat(&req, &t, 0);
            assert_eq!(r.error, code, "{req:?}: {:?}", r.message);
            assert!(r.message.is_some());
        };
        check(&mut g, join(""), ErrorCode::INVALID_REQUEST);
        check(
            &mut g,
            HeartbeatRequest {
                rebalance_timeout_ms: -1,
                ..join("a")
            },
            ErrorCode::INVALID_REQUEST,
        );
        check(
            &mut g,
            HeartbeatRequest {
                subscribed_topic_names: None,
                ..join("a")
            },
            ErrorCode::INVALID_REQUEST,
        );
        let owned = Assignment::from([(T, BTreeSet::from([0]))]);
        check(
            &mut g,
            HeartbeatRequest {
                owned: Some(owned),
                ..join("a")
            },
            ErrorCode::INVALID_REQUEST,
        );
        check(&mut g, beat("a", -3, None), ErrorCode::INVALID_REQUEST);
        check(
            &mut g,
            beat("a", STATIC_LEAVE_EPOCH, None),
            ErrorCode::INVALID_REQUEST,
        );
        check(
            &mut g,
            HeartbeatRequest {
                subscribed_topic_regex: Some("(".into()),
                ..join("a")
            },
            ErrorCode::INVALID_REGULAR_EXPRESSION,
        );
        check(
            &mut g,
            HeartbeatRequest {
                server_assignor: Some("sticky".into()),
                ..join("a")
            },
            ErrorCode::UNSUPPORTED_ASSIGNOR,
        );
        check(
            &mut g,
            beat("nobody", 3, None),
            ErrorCode::UNKNOWN_MEMBER_ID,
        );
        check(
            &mut g,
            beat("nobody", LEAVE_EPOCH, None),
            ErrorCode::UNKNOWN_MEMBER_ID,
        );
        assert!(g.is_empty(), "refused requests leave no member behind");

        // v0: the coordinator names a member that joins without an id.
        let r = g.heartbeat(
            &HeartbeatRequest {
                version: 0,
                generated_member_id: "gen-1".into(),
                ..join("")
            },
            &t,
            0,
        );
        assert_eq!(
            (r.error, r.member_id.as_deref()),
            (ErrorCode::NONE, Some("gen-1"))
        );
        check(
            &mut g,
            HeartbeatRequest {
                version: 0,
                ..beat("", 1, None)
            },
            ErrorCode::INVALID_REQUEST,
        );

        // Group size.
        let mut small = ConsumerGroup::new(
            "s",
            ConsumerGroupConfig {
                max_size: 1,
                ..config()
            },
        );
        assert_eq!(small.heartbeat(&join("a"), &t, 0).error, ErrorCode::NONE);
        check(&mut small, join("b"), ErrorCode::GROUP_MAX_SIZE_REACHED);
        assert_eq!(small.members().count(), 1);
    }

    #[test]
    fn epoch_fencing() {
        let mut g = ConsumerGroup::new("g", config());
        let t = topics();
        let mut a = Client {
            id: "a".into(),
            epoch: 0,
            owned: Assignment::new(),
        };
        a.beat(&mut g, &t, 0);
        let e = a.epoch;
        // An epoch from the future is fenced, and the member is gone.
        let r = g.heartbeat(&beat("a", e + 1, Some(&a.owned)), &t, 1);
        assert_eq!(
            (r.error, r.member_epoch),
            (ErrorCode::FENCED_MEMBER_EPOCH, -1)
        );
        assert!(g.member("a").is_none());
        // It rejoins at 0.
        a.epoch = 0;
        a.owned.clear();
        a.beat(&mut g, &t, 2);
        let mut b = Client {
            id: "b".into(),
            epoch: 0,
            owned: Assignment::new(),
        };
        b.beat(&mut g, &t, 3);
        // a revokes and moves to the new epoch, but its answer is lost: it retries with its
        // previous epoch and what it owns, within its assignment, and is accepted.
        let prev = a.epoch;
        let r = g.heartbeat(&beat("a", prev, None), &t, 4);
        let kept = r.assignment.unwrap_or_default();
        let r = g.heartbeat(&beat("a", prev, Some(&kept)), &t, 5);
        assert!(r.member_epoch > prev);
        let r = g.heartbeat(&beat("a", prev, Some(&kept)), &t, 6);
        assert_eq!(r.error, ErrorCode::NONE);
        // But not with partitions it no longer has.
        let r = g.heartbeat(&beat("a", prev, Some(&a.owned)), &t, 7);
        assert_eq!(r.error, ErrorCode::FENCED_MEMBER_EPOCH);
        // A stale epoch (older than the previous one) is fenced too.
        b.beat(&mut g, &t, 8);
        let r = g.heartbeat(&beat("b", b.epoch - 5, Some(&b.owned)), &t, 9);
        assert_eq!(r.error, ErrorCode::FENCED_MEMBER_EPOCH);
    }

    #[test]
    fn leaving_frees_partitions() {
        let mut g = ConsumerGroup::new("g", config());
        let t = topics();
        let mut a = Client {
            id: "a".into(),
            epoch: 0,
            owned: Assignment::new(),
        };
        let mut b = Client {
            id: "b".into(),
            epoch: 0,
            owned: Assignment::new(),
        };
        for now in 0..3 {
            a.beat(&mut g, &t, now);
            b.beat(&mut g, &t, now);
        }
        let before = g.group_epoch();
        let r = g.heartbeat(&beat("b", LEAVE_EPOCH, None), &t, 4);
        assert_eq!((r.error, r.member_epoch), (ErrorCode::NONE, LEAVE_EPOCH));
        assert_eq!(g.group_epoch(), before + 1);
        a.beat(&mut g, &t, 5);
        assert_eq!(count(&a.owned), 12);
    }

    #[test]
    fn static_members_leave_for_a_while_and_come_back() {
        let mut g = ConsumerGroup::new("g", config());
        let t = topics();
        let stat = |id: &str| HeartbeatRequest {
            instance_id: Some("i1".into()),
            ..join(id)
        };
        let r = g.heartbeat(&stat("m1"), &t, 0);
        let (epoch, assignment) = (r.member_epoch, r.assignment);
        assert_eq!(assignment.as_ref().map(count), Some(12));
        // The same instance under another member id while m1 is active: refused.
        assert_eq!(
            g.heartbeat(&stat("m2"), &t, 1).error,
            ErrorCode::UNRELEASED_INSTANCE_ID
        );
        // Later heartbeats need not repeat the instance id; a different one is fenced.
        assert_eq!(
            g.heartbeat(&beat("m1", epoch, None), &t, 1).error,
            ErrorCode::NONE
        );
        let other = HeartbeatRequest {
            instance_id: Some("i9".into()),
            ..beat("m1", epoch, None)
        };
        assert_eq!(
            g.heartbeat(&other, &t, 1).error,
            ErrorCode::FENCED_INSTANCE_ID
        );
        // A leave with a wrong instance id is fenced.
        let wrong = HeartbeatRequest {
            instance_id: Some("i2".into()),
            ..beat("m1", STATIC_LEAVE_EPOCH, None)
        };
        assert_eq!(
            g.heartbeat(&wrong, &t, 2).error,
            ErrorCode::FENCED_INSTANCE_ID
        );
        let leave = HeartbeatRequest {
            instance_id: Some("i1".into()),
            ..beat("m1", STATIC_LEAVE_EPOCH, None)
        };
        let r = g.heartbeat(&leave, &t, 2);
        assert_eq!(
            (r.error, r.member_epoch),
            (ErrorCode::NONE, STATIC_LEAVE_EPOCH)
        );
        let group_epoch = g.group_epoch();
        // It comes back as m2: same epoch, same partitions, no rebalance.
        let r = g.heartbeat(&stat("m2"), &t, 3);
        assert_eq!((r.error, r.member_epoch), (ErrorCode::NONE, epoch));
        assert_eq!(r.assignment, assignment);
        assert_eq!(g.group_epoch(), group_epoch);
        assert!(g.member("m1").is_none());
        // A static member that left and never came back expires with its session.
        let r = g.heartbeat(
            &HeartbeatRequest {
                instance_id: Some("i1".into()),
                ..beat("m2", STATIC_LEAVE_EPOCH, None)
            },
            &t,
            4,
        );
        assert_eq!(r.error, ErrorCode::NONE);
        assert_eq!(g.tick(6_004), vec!["m2".to_string()]);
        assert!(g.is_empty());
    }

    #[test]
    fn range_assignor_and_server_assignor_choice() {
        let mut g = ConsumerGroup::new(
            "g",
            ConsumerGroupConfig {
                assignor: Assignor::Range,
                ..config()
            },
        );
        let t = TopicsView::from([("t".to_string(), (T, 5)), ("u".to_string(), (U, 2))]);
        let both = |id: &str| HeartbeatRequest {
            subscribed_topic_names: Some(vec!["t".into(), "u".into()]),
            ..join(id)
        };
        g.heartbeat(&both("a"), &t, 0);
        g.heartbeat(&both("b"), &t, 0);
        assert_eq!(g.assignor(), Assignor::Range);
        let ta = g.target_of("a").cloned().unwrap_or_default();
        let tb = g.target_of("b").cloned().unwrap_or_default();
        assert_eq!(ta.get(&T), Some(&BTreeSet::from([0, 1, 2])));
        assert_eq!(tb.get(&T), Some(&BTreeSet::from([3, 4])));
        assert_eq!(ta.get(&U), Some(&BTreeSet::from([0])));
        assert_eq!(tb.get(&U), Some(&BTreeSet::from([1])));
        // A member that names the uniform assignor switches the group to it.
        let r = g.heartbeat(
            &HeartbeatRequest {
                server_assignor: Some("uniform".into()),
                ..beat("a", g.member("a").map_or(0, |m| m.member_epoch), None)
            },
            &t,
            1,
        );
        assert_eq!(r.error, ErrorCode::NONE);
        assert_eq!(g.assignor(), Assignor::Uniform);
        let total: usize = ["a", "b"]
            .iter()
            .filter_map(|m| g.target_of(m))
            .map(count)
            .sum();
        assert_eq!(total, 7);
    }

    #[test]
    fn uniform_assignor_with_different_subscriptions() {
        let mut g = ConsumerGroup::new("g", config());
        let t = TopicsView::from([("t".to_string(), (T, 4)), ("u".to_string(), (U, 4))]);
        g.heartbeat(
            &HeartbeatRequest {
                subscribed_topic_names: Some(vec!["t".into(), "u".into()]),
                ..join("a")
            },
            &t,
            0,
        );
        g.heartbeat(
            &HeartbeatRequest {
                subscribed_topic_names: Some(vec!["u".into()]),
                ..join("b")
            },
            &t,
            0,
        );
        let ta = g.target_of("a").cloned().unwrap_or_default();
        let tb = g.target_of("b").cloned().unwrap_or_default();
        // b only takes from u; a takes all of t and what balances u.
        assert!(!tb.contains_key(&T));
        assert_eq!(ta.get(&T).map(BTreeSet::len), Some(4));
        assert_eq!(count(&ta) + count(&tb), 8);
        assert!(count(&tb) >= 2, "{tb:?}");
    }

    #[test]
    fn regex_subscription_picks_up_new_topics() {
        let mut g = ConsumerGroup::new("g", config());
        let mut t = TopicsView::from([
            ("orders-1".to_string(), (T, 2)),
            ("other".to_string(), (U, 2)),
            ("__consumer_offsets".to_string(), (Uuid::from_u128(9), 50)),
        ]);
        let req = HeartbeatRequest {
            subscribed_topic_names: None,
            subscribed_topic_regex: Some("orders-.*".into()),
            ..join("a")
        };
        let r = g.heartbeat(&req, &t, 0);
        assert_eq!(r.assignment.as_ref().map(count), Some(2));
        let epoch = r.member_epoch;
        let v = Uuid::from_u128(3);
        t.insert("orders-2".into(), (v, 3));
        let r = g.heartbeat(&beat("a", epoch, None), &t, 1);
        assert!(r.member_epoch > epoch);
        let a = r.assignment.unwrap_or_default();
        assert_eq!(count(&a), 5);
        assert_eq!(a.get(&v).map(BTreeSet::len), Some(3));
        assert!(!a.contains_key(&U));
    }

    #[test]
    fn offset_commit_and_fetch_checks() {
        let mut g = ConsumerGroup::new("g", config());
        assert_eq!(g.validate_offset_commit("", -1, 9), ErrorCode::NONE);
        let r = g.heartbeat(&join("a"), &topics(), 0);
        let e = r.member_epoch;
        assert_eq!(
            g.validate_offset_commit("", -1, 9),
            ErrorCode::UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            g.validate_offset_commit("b", e, 9),
            ErrorCode::UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            g.validate_offset_commit("a", e, 8),
            ErrorCode::UNSUPPORTED_VERSION
        );
        assert_eq!(
            g.validate_offset_commit("a", e - 1, 9),
            ErrorCode::STALE_MEMBER_EPOCH
        );
        assert_eq!(g.validate_offset_commit("a", e, 9), ErrorCode::NONE);
        assert_eq!(g.validate_offset_fetch(None, -1), ErrorCode::NONE);
        assert_eq!(g.validate_offset_fetch(Some("x"), -1), ErrorCode::NONE);
        assert_eq!(
            g.validate_offset_fetch(Some("x"), e),
            ErrorCode::UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            g.validate_offset_fetch(Some("a"), e + 1),
            ErrorCode::STALE_MEMBER_EPOCH
        );
        assert_eq!(g.validate_offset_fetch(Some("a"), e), ErrorCode::NONE);
    }

    #[test]
    fn a_restored_group_goes_on_without_moving_partitions() {
        let mut g = ConsumerGroup::new("g", config());
        let mut cs: Vec<Client> = ["a", "b"]
            .iter()
            .map(|id| Client {
                id: id.to_string(),
                epoch: 0,
                owned: Assignment::new(),
            })
            .collect();
        for now in 0..3 {
            for c in cs.iter_mut() {
                c.beat(&mut g, &topics(), now);
            }
        }
        assert!(g.take_dirty());
        let mut back = ConsumerGroup::restore("g", config(), g.stored(), 100);
        assert_eq!(
            back.stored(),
            StoredConsumerGroup {
                members: back.stored().members,
                ..g.stored()
            }
        );
        for c in cs.iter_mut() {
            let before = c.owned.clone();
            let r = c.beat(&mut back, &topics(), 101);
            assert_eq!(r.error, ErrorCode::NONE);
            assert_eq!(c.owned, before);
        }
        assert_eq!(back.state(), "Stable");
        // Sessions count from the restart.
        assert!(back.tick(6_099).is_empty());
    }
}
