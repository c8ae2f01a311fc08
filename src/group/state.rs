//! The classic consumer-group rebalance protocol (JoinGroup/SyncGroup/Heartbeat/LeaveGroup)
//! as a pure state machine.
//!
//! Nothing here does I/O, awaits, or reads a clock: every method takes `now_ms`, and instead of
//! answering parked requests itself a call returns [`Effect`]s. The async coordinator on the
//! group's owner shard feeds requests and [`Group::tick`] in, and maps what comes out to
//! responses. That keeps every timing rule unit-testable with explicit times and no sleeps.
//!
//! # The protocol, step by step
//!
//! 1. **Join.** A consumer sends JoinGroup with an empty member id. From JoinGroup v4 on
//!    (KIP-394) the coordinator answers ErrorCode::MEMBER_ID_REQUIRED with a fresh id
//!    (`{client_id}-{uuid}`) and remembers it as *pending*; the consumer rejoins with it. This
//!    way a client that times out and retries does not leave orphan members behind. Static
//!    members (`group.instance.id`, KIP-345) and v0-3 joins skip that round trip.
//! 2. **PreparingRebalance.** A join from a new member, a changed subscription, a leader
//!    rejoining, a member leaving or expiring moves the group to PreparingRebalance. Every
//!    member must rejoin; their JoinGroup requests are *parked*. The rebalance completes when
//!    all members (and no pending ones) have rejoined, or at the rebalance deadline (the largest
//!    `rebalance_timeout_ms` of the members), when dynamic members that did not rejoin are
//!    dropped (static ones stay until their session or the sync deadline ends). The first rebalance of an Empty group instead waits
//!    `group.initial.rebalance.delay.ms` so that consumers started together land in one
//!    generation; each time a new member joined during that delay it is extended by another
//!    delay, up to the rebalance timeout in total (Kafka's `InitialDelayedJoin`).
//! 3. **CompletingRebalance.** The generation goes up by one, a protocol every member supports
//!    is chosen (each member votes for its first supported candidate, most votes wins), and all
//!    parked joins are answered. The leader's answer lists every member with its metadata for
//!    the chosen protocol; followers get an empty list.
//! 4. **Sync.** Every member sends SyncGroup. Followers' syncs are parked until the leader's
//!    arrives with the assignments; then they are all answered, and the group is **Stable**.
//!    A member that sends no SyncGroup within the rebalance timeout is removed (Kafka's
//!    pending-sync rule, so a lost follower cannot stall the group).
//! 5. **Stable.** Members heartbeat within `session_timeout_ms`. Heartbeats answer
//!    ErrorCode::REBALANCE_IN_PROGRESS while the group is PreparingRebalance, which is how members learn
//!    to rejoin. A member whose session expires is removed and the others rebalance. A member
//!    parked in a join or a sync is not expired: it is waiting on the group, not gone (a new
//!    member still parked in its first join gets `new_member_join_timeout_ms`, 5 minutes).
//! 6. **Leave.** LeaveGroup removes members by member id or by instance id (batched, KIP-345);
//!    the rest rebalance, and the group goes Empty once nobody is left.
//! 7. **Static restart.** A static member that rejoins with an empty member id while the group
//!    is Stable gets a new member id and keeps its assignment and the generation, and nobody
//!    else sees a rebalance, provided the chosen protocol would stay the same. The old member
//!    id is fenced: requests carrying it with that instance id get ErrorCode::FENCED_INSTANCE_ID.
//!
//! # Driving it
//!
//! - Join and sync return a [`Step`]: the caller's own answer ([`Reply::Now`]) or the member id
//!   its request is parked under ([`Reply::Parked`]), plus effects that answer *other* parked
//!   requests. A parked join is later answered by an [`Effect::Join`] for that member id, a
//!   parked sync by an [`Effect::Sync`], out of some later call (another member's request, a
//!   leave, or `tick`). So the async layer keeps one join waiter and one sync waiter per member
//!   id, delivers a call's effects first and then applies its reply. Parking a request under a
//!   member id that already has a parked request of the same kind replaces it (a retry after a
//!   client-side timeout); the layer answers or drops the replaced waiter.
//! - Time moves only through [`Group::tick`]: session expiry, the rebalance deadline, the
//!   initial delay and the pending-sync deadline all act there. [`Group::next_deadline`] says
//!   when the next tick has work; it may already have passed (an initial delay of 0), so the
//!   layer re-arms its timer from it after every call. A deadline `d` has passed once
//!   `now_ms >= d`; a session expires at `last_heartbeat_ms + session_timeout_ms`.
//! - Errors are Kafka error codes ([`ErrorCode`], the one vocabulary in `error.rs`), because
//!   each API reports them in its own fields (per member for LeaveGroup).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

pub use crate::error::ErrorCode;

/// The generation reported in error responses (Kafka's `UNKNOWN_GENERATION_ID`).
pub const NO_GENERATION: i32 = -1;

/// Broker settings of the coordinator, with Kafka's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an Empty group
    /// waits for more members, so that consumers started together share one generation.
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`: members (and pending members) a group accepts.
    pub max_size: usize,
    /// How long a new member may stay parked in its first join before it is dropped: a client
    /// that vanished mid-join must not hold a slot forever (Kafka's `NewMemberJoinTimeoutMs`).
    pub new_member_join_timeout_ms: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
            new_member_join_timeout_ms: 300_000,
        }
    }
}

/// The group's state, as Kafka's classic groups have it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// No members. The group may still hold committed offsets.
    Empty,
    /// Members are (re)joining; joins are parked until all have rejoined or the deadline.
    PreparingRebalance,
    /// Joins were answered; waiting for the leader's SyncGroup with the assignments.
    CompletingRebalance,
    /// Assignments are out; members heartbeat.
    Stable,
    /// Deleted or unloaded: every request is refused.
    Dead,
}

impl GroupState {
    /// The name DescribeGroups and ListGroups report.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A member of the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub member_id: String,
    /// `group.instance.id` of a static member (KIP-345).
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// Supported protocols with their metadata, in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// This member's share of the leader's assignment (empty until the leader syncs).
    pub assignment: Bytes,
    /// Last sign of life: a heartbeat, a join, a sync, or an answer sent to it.
    pub last_heartbeat_ms: i64,
    /// A JoinGroup of this member is parked.
    pub awaiting_join: bool,
    /// A SyncGroup of this member is parked.
    pub awaiting_sync: bool,
    /// Joined but never answered yet: expires after `new_member_join_timeout_ms`, even while
    /// parked, so a client that vanished in its first join is dropped.
    pub is_new: bool,
}

impl Member {
    /// The metadata this member sent for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata)
    }

    fn supports(&self, protocol: &str) -> bool {
        self.metadata(protocol).is_some()
    }

    /// Same protocols, same metadata, same order.
    fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// When `tick` removes this member, or `None` while it waits on the group.
    fn expires_at(&self, config: &GroupConfig) -> Option<i64> {
        if self.is_new && self.awaiting_join {
            Some(self.last_heartbeat_ms + i64::from(config.new_member_join_timeout_ms))
        } else if self.awaiting_join || self.awaiting_sync {
            None
        } else {
            Some(self.last_heartbeat_ms + i64::from(self.session_timeout_ms))
        }
    }
}

/// A JoinGroup request's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    /// Empty for a member that has no id yet.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// JoinGroup v0 has none: the layer passes the session timeout, as Kafka does.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v9+ (KIP-814): a static leader that rejoins without a rebalance is told it is
    /// the leader, with the members, and `skip_assignment`. Older clients would reassign, so
    /// they are instead told the old leader id and act as followers.
    pub supports_skip_assignment: bool,
}

/// One member in the leader's JoinGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// The fields of a JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    /// The member's id (the new one after ErrorCode::MEMBER_ID_REQUIRED or a static rejoin).
    pub member_id: String,
    /// Every member, for the leader only; empty for followers.
    pub members: Vec<JoinMember>,
}

impl JoinResponse {
    /// A JoinGroup answer that carries only an error.
    pub fn failed(member_id: &str, error: ErrorCode) -> Self {
        Self::error(member_id, error)
    }

    fn error(member_id: &str, error: ErrorCode) -> Self {
        JoinResponse {
            error,
            generation_id: NO_GENERATION,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup request's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    pub member_id: String,
    pub generation_id: i32,
    pub group_instance_id: Option<String>,
    /// v5+: checked against the group's when present.
    pub protocol_type: Option<String>,
    /// v5+: checked against the group's when present.
    pub protocol_name: Option<String>,
    /// The leader's assignment, member id to bytes; followers send none.
    pub assignments: Vec<(String, Bytes)>,
}

/// The fields of a SyncGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    /// A SyncGroup answer that carries only an error.
    pub fn failed(error: ErrorCode) -> Self {
        Self::error(error)
    }

    fn error(error: ErrorCode) -> Self {
        SyncResponse {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A Heartbeat request's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub member_id: String,
    pub generation_id: i32,
    pub group_instance_id: Option<String>,
}

/// One member of a LeaveGroup request: by member id, or (admin tools) by instance id with an
/// empty member id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// A LeaveGroup request: one member before v3, a batch from v3 on (KIP-345).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveRequest {
    pub members: Vec<LeavingMember>,
}

/// One member's outcome in a LeaveGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveMemberResponse {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub error: ErrorCode,
}

/// The fields of a LeaveGroup response. Before v3 the single member's error is the top-level
/// error; the layer copies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveResponse {
    pub error: ErrorCode,
    pub members: Vec<LeaveMemberResponse>,
}

/// An answer to a request that was parked by an earlier call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Answers the JoinGroup parked under `member_id`.
    Join {
        member_id: String,
        response: JoinResponse,
    },
    /// Answers the SyncGroup parked under `member_id`.
    Sync {
        member_id: String,
        response: SyncResponse,
    },
}

/// The caller's own answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply<T> {
    /// Answer now.
    Now(T),
    /// The request waits on the group; its answer comes as an [`Effect`] for `member_id`.
    Parked { member_id: String },
}

/// What a JoinGroup or SyncGroup call produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step<T> {
    pub reply: Reply<T>,
    /// Answers to other parked requests; deliver them before applying `reply`.
    pub effects: Vec<Effect>,
}

/// DescribeGroups' view of a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Metadata for the chosen protocol; empty unless the group is Stable, as in Kafka.
    pub metadata: Bytes,
    /// Empty unless the group is Stable.
    pub assignment: Bytes,
}

/// DescribeGroups' view of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub state: &'static str,
    pub protocol_type: String,
    /// Empty unless the group is Stable, as in Kafka.
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

/// The extension rule of the first rebalance of an Empty group.
#[derive(Clone, Debug, PartialEq, Eq)]
struct InitialDelay {
    /// What is left of the rebalance timeout for further extensions.
    remaining_ms: i64,
    /// A member joined during the current delay: extend by one more delay.
    new_member_added: bool,
}

/// What a coordinator restart brings back of a group: its last stored generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    /// The members of that generation, each with its metadata for the chosen protocol and its
    /// assignment; their sessions count from the restart.
    pub members: Vec<Member>,
}

/// One consumer group's coordinator state. Touched only by its owner shard.
#[derive(Clone, Debug)]
pub struct Group {
    group_id: String,
    config: GroupConfig,
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// `group.instance.id` to the member id that currently holds it.
    static_members: BTreeMap<String, String>,
    /// Member ids handed out with ErrorCode::MEMBER_ID_REQUIRED, to when they lapse if unused.
    pending: BTreeMap<String, i64>,
    /// Members that have not sent SyncGroup since the last rebalance completed.
    pending_sync: BTreeSet<String>,
    /// While PreparingRebalance: when the join phase ends (or the initial delay does).
    rebalance_deadline_ms: Option<i64>,
    /// While PreparingRebalance out of Empty: the initial delay is running.
    initial_delay: Option<InitialDelay>,
    /// When members still in `pending_sync` are removed.
    sync_deadline_ms: Option<i64>,
}

impl Group {
    /// A new, Empty group at generation 0.
    pub fn new(group_id: impl Into<String>, config: GroupConfig) -> Self {
        Group {
            group_id: group_id.into(),
            config,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            rebalance_deadline_ms: None,
            initial_delay: None,
            sync_deadline_ms: None,
        }
    }

    /// A group as its last completed generation left it (a coordinator restart): Stable with
    /// that generation's members and assignments when it had members and a protocol, so they
    /// go on heartbeating without a rebalance; otherwise Empty at that generation, keeping its
    /// protocol type (as Kafka loads a group).
    pub fn restore(group_id: impl Into<String>, config: GroupConfig, r: Restored) -> Self {
        let mut g = Group::new(group_id, config);
        g.generation_id = r.generation_id.max(0);
        g.protocol_type = r.protocol_type;
        if r.members.is_empty() || r.protocol_name.is_none() {
            return g;
        }
        g.state = GroupState::Stable;
        g.protocol_name = r.protocol_name;
        g.leader = r
            .leader
            .filter(|l| r.members.iter().any(|m| &m.member_id == l));
        for m in r.members {
            if let Some(instance) = &m.group_instance_id {
                g.static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            g.members.insert(m.member_id.clone(), m);
        }
        if g.leader.is_none() {
            g.leader = g.members.keys().next().cloned();
        }
        g
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.get(member_id)
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The member id holding a static `group.instance.id`.
    pub fn static_member(&self, group_instance_id: &str) -> Option<&str> {
        self.static_members
            .get(group_instance_id)
            .map(String::as_str)
    }

    /// Whether `member_id` was handed out with ErrorCode::MEMBER_ID_REQUIRED and not used yet.
    pub fn is_pending(&self, member_id: &str) -> bool {
        self.pending.contains_key(member_id)
    }

    /// No members: the offsets of an Empty group expire by retention, and only an Empty (or
    /// Dead) group may be deleted.
    pub fn is_empty(&self) -> bool {
        self.state == GroupState::Empty
    }

    /// When [`Group::tick`] next has work to do (possibly already past), or `None`.
    pub fn next_deadline(&self) -> Option<i64> {
        let rebalance = match self.state {
            GroupState::PreparingRebalance => self.rebalance_deadline_ms,
            _ => None,
        };
        let sync = match self.state {
            GroupState::CompletingRebalance | GroupState::Stable
                if !self.pending_sync.is_empty() =>
            {
                self.sync_deadline_ms
            }
            _ => None,
        };
        let sessions = self
            .members
            .values()
            .filter_map(|m| m.expires_at(&self.config));
        let pending = self.pending.values().copied();
        rebalance
            .into_iter()
            .chain(sync)
            .chain(sessions)
            .chain(pending)
            .min()
    }

    /// JoinGroup. `require_known_member_id` is true from JoinGroup v4 on (KIP-394).
    pub fn join(
        &mut self,
        req: JoinRequest,
        now_ms: i64,
        require_known_member_id: bool,
    ) -> Step<JoinResponse> {
        let mut fx = Vec::new();
        if self.state == GroupState::Dead {
            return reply_now(
                JoinResponse::error(&req.member_id, ErrorCode::COORDINATOR_NOT_AVAILABLE),
                fx,
            );
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return reply_now(
                JoinResponse::error(&req.member_id, ErrorCode::INVALID_SESSION_TIMEOUT),
                fx,
            );
        }

        if req.member_id.is_empty() {
            // A static member's new process takes an existing place: it adds nobody, and is
            // checked against the others, not against its own old protocols.
            let replaces = req
                .group_instance_id
                .as_ref()
                .and_then(|i| self.static_members.get(i))
                .cloned();
            if replaces.is_none() && self.members.len() + self.pending.len() >= self.config.max_size
            {
                return reply_now(
                    JoinResponse::error("", ErrorCode::GROUP_MAX_SIZE_REACHED),
                    fx,
                );
            }
            if !self.supports_protocols(replaces.as_deref(), &req.protocol_type, &req.protocols) {
                return reply_now(
                    JoinResponse::error("", ErrorCode::INCONSISTENT_GROUP_PROTOCOL),
                    fx,
                );
            }
            let prefix = req.group_instance_id.as_deref().unwrap_or(&req.client_id);
            let member_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
            if let Some(instance_id) = req.group_instance_id.clone() {
                return self.join_static(req, member_id, instance_id, now_ms);
            }
            if require_known_member_id {
                // The id is only reserved: a client that never comes back costs a session
                // timeout, not a rebalance.
                self.pending.insert(
                    member_id.clone(),
                    now_ms + i64::from(req.session_timeout_ms),
                );
                return reply_now(
                    JoinResponse::error(&member_id, ErrorCode::MEMBER_ID_REQUIRED),
                    fx,
                );
            }
            self.add_member_and_rebalance(req, member_id.clone(), now_ms, &mut fx);
            return finish_join(member_id, fx);
        }

        let member_id = req.member_id.clone();
        if !self.supports_protocols(Some(&member_id), &req.protocol_type, &req.protocols) {
            return reply_now(
                JoinResponse::error(&member_id, ErrorCode::INCONSISTENT_GROUP_PROTOCOL),
                fx,
            );
        }
        // Pending ids are only handed to dynamic members; a static one goes by its instance id.
        if req.group_instance_id.is_none() && self.pending.remove(&member_id).is_some() {
            self.add_member_and_rebalance(req, member_id.clone(), now_ms, &mut fx);
            return finish_join(member_id, fx);
        }
        if let Some(error) = self.validate_member(&member_id, req.group_instance_id.as_deref()) {
            return reply_now(JoinResponse::error(&member_id, error), fx);
        }

        let (is_leader, unchanged) = match self.members.get(&member_id) {
            Some(m) => (self.is_leader(&member_id), m.matches(&req.protocols)),
            None => {
                return reply_now(
                    JoinResponse::error(&member_id, ErrorCode::UNKNOWN_MEMBER_ID),
                    fx,
                );
            }
        };
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(req, now_ms, &mut fx);
                finish_join(member_id, fx)
            }
            // The member missed our answer: give it again rather than rebalance.
            GroupState::CompletingRebalance if unchanged => {
                self.touch(&member_id, now_ms);
                let response = self.current_join_response(&member_id, is_leader);
                reply_now(response, fx)
            }
            // A follower rejoining with the same metadata learns the current generation; the
            // leader rejoining, or anyone with new metadata, means the assignment must change.
            GroupState::Stable if unchanged && !is_leader => {
                self.touch(&member_id, now_ms);
                let response = self.current_join_response(&member_id, false);
                reply_now(response, fx)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(req, now_ms, &mut fx);
                finish_join(member_id, fx)
            }
            GroupState::Empty | GroupState::Dead => reply_now(
                JoinResponse::error(&member_id, ErrorCode::UNKNOWN_MEMBER_ID),
                fx,
            ),
        }
    }

    /// SyncGroup.
    pub fn sync(&mut self, req: SyncRequest, now_ms: i64) -> Step<SyncResponse> {
        let mut fx = Vec::new();
        if self.state == GroupState::Dead {
            return reply_now(
                SyncResponse::error(ErrorCode::COORDINATOR_NOT_AVAILABLE),
                fx,
            );
        }
        if let Some(error) = self.validate_member(&req.member_id, req.group_instance_id.as_deref())
        {
            return reply_now(SyncResponse::error(error), fx);
        }
        if req.generation_id != self.generation_id {
            return reply_now(SyncResponse::error(ErrorCode::ILLEGAL_GENERATION), fx);
        }
        let type_differs = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| self.protocol_type.as_ref() != Some(t));
        let name_differs = req
            .protocol_name
            .as_ref()
            .is_some_and(|n| self.protocol_name.as_ref() != Some(n));
        if type_differs || name_differs {
            return reply_now(
                SyncResponse::error(ErrorCode::INCONSISTENT_GROUP_PROTOCOL),
                fx,
            );
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                reply_now(SyncResponse::error(ErrorCode::UNKNOWN_MEMBER_ID), fx)
            }
            GroupState::PreparingRebalance => {
                reply_now(SyncResponse::error(ErrorCode::REBALANCE_IN_PROGRESS), fx)
            }
            GroupState::CompletingRebalance => {
                self.synced(&req.member_id, now_ms);
                if !self.is_leader(&req.member_id) {
                    if let Some(m) = self.members.get_mut(&req.member_id) {
                        m.awaiting_sync = true;
                    }
                    return Step {
                        reply: Reply::Parked {
                            member_id: req.member_id,
                        },
                        effects: fx,
                    };
                }
                let mut assignments: BTreeMap<String, Bytes> =
                    req.assignments.into_iter().collect();
                // Members the leader left out get an empty assignment; ids it made up are
                // ignored.
                for (id, m) in self.members.iter_mut() {
                    m.assignment = assignments.remove(id).unwrap_or_default();
                }
                self.state = GroupState::Stable;
                let protocol_type = self.protocol_type.clone();
                let protocol_name = self.protocol_name.clone();
                for (id, m) in self.members.iter_mut() {
                    if m.awaiting_sync {
                        m.awaiting_sync = false;
                        m.last_heartbeat_ms = now_ms;
                        fx.push(Effect::Sync {
                            member_id: id.clone(),
                            response: SyncResponse {
                                error: ErrorCode::NONE,
                                protocol_type: protocol_type.clone(),
                                protocol_name: protocol_name.clone(),
                                assignment: m.assignment.clone(),
                            },
                        });
                    }
                }
                let assignment = self
                    .members
                    .get(&req.member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                reply_now(self.sync_ok(assignment), fx)
            }
            GroupState::Stable => {
                self.synced(&req.member_id, now_ms);
                let assignment = self
                    .members
                    .get(&req.member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                reply_now(self.sync_ok(assignment), fx)
            }
        }
    }

    /// Heartbeat: the error code to answer.
    pub fn heartbeat(&mut self, req: &HeartbeatRequest, now_ms: i64) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::COORDINATOR_NOT_AVAILABLE;
        }
        if let Some(error) = self.validate_member(&req.member_id, req.group_instance_id.as_deref())
        {
            return error;
        }
        if req.generation_id != self.generation_id {
            return ErrorCode::ILLEGAL_GENERATION;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => ErrorCode::UNKNOWN_MEMBER_ID,
            GroupState::PreparingRebalance => {
                // Still alive, but it must rejoin.
                self.touch(&req.member_id, now_ms);
                ErrorCode::REBALANCE_IN_PROGRESS
            }
            // In CompletingRebalance a member may heartbeat between its join and sync answers.
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.touch(&req.member_id, now_ms);
                ErrorCode::NONE
            }
        }
    }

    /// LeaveGroup: removes each named member; the others rebalance.
    pub fn leave(&mut self, req: LeaveRequest, now_ms: i64) -> (LeaveResponse, Vec<Effect>) {
        let mut fx = Vec::new();
        if self.state == GroupState::Dead {
            let response = LeaveResponse {
                error: ErrorCode::COORDINATOR_NOT_AVAILABLE,
                members: Vec::new(),
            };
            return (response, fx);
        }
        let mut members = Vec::with_capacity(req.members.len());
        for leaving in req.members {
            let error = if leaving.member_id.is_empty() {
                // Admin removal by instance id alone.
                let current = leaving
                    .group_instance_id
                    .as_ref()
                    .and_then(|i| self.static_members.get(i))
                    .cloned();
                match current {
                    Some(member_id) => {
                        self.remove_member_and_update(&member_id, now_ms, &mut fx);
                        ErrorCode::NONE
                    }
                    None => ErrorCode::UNKNOWN_MEMBER_ID,
                }
            } else if self.pending.remove(&leaving.member_id).is_some() {
                // A pending member may be all the rebalance was waiting for.
                self.maybe_complete_join(now_ms, &mut fx);
                ErrorCode::NONE
            } else {
                match self.validate_member(&leaving.member_id, leaving.group_instance_id.as_deref())
                {
                    Some(error) => error,
                    None => {
                        self.remove_member_and_update(&leaving.member_id, now_ms, &mut fx);
                        ErrorCode::NONE
                    }
                }
            };
            members.push(LeaveMemberResponse {
                member_id: leaving.member_id,
                group_instance_id: leaving.group_instance_id,
                error,
            });
        }
        (
            LeaveResponse {
                error: ErrorCode::NONE,
                members,
            },
            fx,
        )
    }

    /// Acts on every deadline that has passed: pending ids lapse, sessions expire, members that
    /// never synced are dropped, and the join phase (or initial delay) ends.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.state == GroupState::Dead {
            return fx;
        }

        let lapsed: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, deadline)| **deadline <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        if !lapsed.is_empty() {
            for id in &lapsed {
                self.pending.remove(id);
            }
            self.maybe_complete_join(now_ms, &mut fx);
        }

        // New members still parked in their first join are looked at only after the join
        // phase below: with the Java consumer's defaults their timeout and the rebalance
        // deadline are the same instant, and the rebalance that includes them must win.
        self.expire_members(now_ms, false, &mut fx);

        let sync_due = self.sync_deadline_ms.is_some_and(|d| d <= now_ms);
        if sync_due
            && matches!(
                self.state,
                GroupState::CompletingRebalance | GroupState::Stable
            )
        {
            self.sync_deadline_ms = None;
            let laggards: Vec<String> =
                std::mem::take(&mut self.pending_sync).into_iter().collect();
            if !laggards.is_empty() {
                for id in &laggards {
                    self.remove_member(id, &mut fx);
                }
                self.maybe_prepare_rebalance(now_ms, &mut fx);
            }
        }

        while self.state == GroupState::PreparingRebalance {
            let Some(deadline) = self.rebalance_deadline_ms.filter(|d| *d <= now_ms) else {
                break;
            };
            if self.extend_initial_delay(deadline) {
                continue;
            }
            self.complete_join(now_ms, &mut fx);
            break;
        }
        self.expire_members(now_ms, true, &mut fx);
        fx
    }

    /// Removes the members whose time is up (with `new_in_join`, also new members parked in
    /// their first join) and rebalances the rest.
    fn expire_members(&mut self, now_ms: i64, new_in_join: bool, fx: &mut Vec<Effect>) {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| new_in_join || !(m.is_new && m.awaiting_join))
            .filter(|m| m.expires_at(&self.config).is_some_and(|at| at <= now_ms))
            .map(|m| m.member_id.clone())
            .collect();
        for id in &expired {
            self.remove_member_and_update(id, now_ms, fx);
        }
    }

    /// DescribeGroups.
    pub fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        let members = self
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata(protocol).cloned().unwrap_or_default()
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        GroupDescription {
            state: self.state.as_str(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable {
                protocol.to_string()
            } else {
                String::new()
            },
            members,
        }
    }

    /// DeleteGroups: an Empty group becomes Dead (the layer then drops it and its offsets).
    pub fn delete(&mut self) -> Result<(), ErrorCode> {
        match self.state {
            GroupState::Empty => {
                self.state = GroupState::Dead;
                self.pending.clear();
                Ok(())
            }
            GroupState::Dead => Err(ErrorCode::GROUP_ID_NOT_FOUND),
            _ => Err(ErrorCode::NON_EMPTY_GROUP),
        }
    }

    /// Shutdown: the group becomes Dead and every parked request is answered ErrorCode::NOT_COORDINATOR,
    /// so clients look for the coordinator elsewhere instead of waiting out their timeouts.
    pub fn unload(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        for (id, m) in self.members.iter_mut() {
            if std::mem::take(&mut m.awaiting_join) {
                fx.push(Effect::Join {
                    member_id: id.clone(),
                    response: JoinResponse::error(id, ErrorCode::NOT_COORDINATOR),
                });
            }
            if std::mem::take(&mut m.awaiting_sync) {
                fx.push(Effect::Sync {
                    member_id: id.clone(),
                    response: SyncResponse::error(ErrorCode::NOT_COORDINATOR),
                });
            }
        }
        self.state = GroupState::Dead;
        fx
    }

    /// Whether an OffsetCommit from this member may be stored: the error code (ErrorCode::NONE to store).
    /// A commit with generation -1 and no member (a consumer using `assign`, or an admin tool)
    /// is accepted only by an Empty group. Commits while PreparingRebalance are accepted
    /// (eager consumers commit as they revoke), not while CompletingRebalance: the member
    /// already knows a newer generation than it owns partitions for.
    pub fn validate_offset_commit(
        &mut self,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        now_ms: i64,
    ) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::COORDINATOR_NOT_AVAILABLE;
        }
        if generation_id < 0 && member_id.is_empty() && group_instance_id.is_none() {
            return if self.state == GroupState::Empty {
                ErrorCode::NONE
            } else {
                ErrorCode::UNKNOWN_MEMBER_ID
            };
        }
        if let Some(error) = self.validate_member(member_id, group_instance_id) {
            return error;
        }
        if generation_id != self.generation_id {
            return ErrorCode::ILLEGAL_GENERATION;
        }
        if self.state == GroupState::CompletingRebalance {
            return ErrorCode::REBALANCE_IN_PROGRESS;
        }
        self.touch(member_id, now_ms);
        ErrorCode::NONE
    }

    // ---- internals ----

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    fn touch(&mut self, member_id: &str, now_ms: i64) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat_ms = now_ms;
        }
    }

    fn synced(&mut self, member_id: &str, now_ms: i64) {
        self.touch(member_id, now_ms);
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline_ms = None;
        }
    }

    fn sync_ok(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            error: ErrorCode::NONE,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }

    /// If an instance id is given it must be held by `member_id` (else it is fenced), and the
    /// member must exist.
    fn validate_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Option<ErrorCode> {
        if let Some(instance_id) = group_instance_id {
            return match self.static_members.get(instance_id) {
                Some(current) if current != member_id => Some(ErrorCode::FENCED_INSTANCE_ID),
                Some(_) => None,
                None => Some(ErrorCode::UNKNOWN_MEMBER_ID),
            };
        }
        if self.members.contains_key(member_id) {
            None
        } else {
            Some(ErrorCode::UNKNOWN_MEMBER_ID)
        }
    }

    /// A joining member fits if it shares the protocol type and at least one protocol with all
    /// the *other* members. (Kafka counts the member's own old protocols too, which refuses a
    /// sole member that changes every protocol; excluding it is the intent.)
    fn supports_protocols(
        &self,
        joining: Option<&str>,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let mut others = self
            .members
            .values()
            .filter(|m| Some(m.member_id.as_str()) != joining)
            .peekable();
        if others.peek().is_none() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let others: Vec<&Member> = others.collect();
        protocols
            .iter()
            .any(|(name, _)| others.iter().all(|m| m.supports(name)))
    }

    /// The protocol for the next generation: among those every member supports, each member
    /// votes for the first in its own order, and the most votes win. Ties go to the leader's
    /// preference, so the choice is deterministic.
    fn select_protocol(&self) -> Option<String> {
        let first = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .or_else(|| self.members.values().next())?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name.as_str()))
            {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for name in candidates {
            let count = votes.get(name).copied().unwrap_or(0);
            if best.is_none_or(|(_, most)| count > most) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_string())
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn member_list(&self) -> Vec<JoinMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        self.members
            .values()
            .map(|m| JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(protocol).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// The answer describing the current generation.
    fn current_join_response(&self, member_id: &str, with_members: bool) -> JoinResponse {
        JoinResponse {
            error: ErrorCode::NONE,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: if with_members {
                self.member_list()
            } else {
                Vec::new()
            },
        }
    }

    fn new_member(req: JoinRequest, member_id: String, now_ms: i64) -> Member {
        Member {
            member_id,
            group_instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            assignment: Bytes::new(),
            last_heartbeat_ms: now_ms,
            awaiting_join: true,
            awaiting_sync: false,
            is_new: true,
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        req: JoinRequest,
        member_id: String,
        now_ms: i64,
        fx: &mut Vec<Effect>,
    ) {
        if let Some(delay) = self.initial_delay.as_mut() {
            delay.new_member_added = true;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member_id.clone());
        }
        if let Some(instance_id) = &req.group_instance_id {
            self.static_members
                .insert(instance_id.clone(), member_id.clone());
        }
        let member = Self::new_member(req, member_id.clone(), now_ms);
        self.members.insert(member_id, member);
        self.maybe_prepare_rebalance(now_ms, fx);
    }

    fn update_member_and_rebalance(&mut self, req: JoinRequest, now_ms: i64, fx: &mut Vec<Effect>) {
        if let Some(m) = self.members.get_mut(&req.member_id) {
            m.protocols = req.protocols;
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.last_heartbeat_ms = now_ms;
            m.awaiting_join = true;
        }
        self.maybe_prepare_rebalance(now_ms, fx);
    }

    /// KIP-345: a static member's new process takes over the old member's place.
    fn join_static(
        &mut self,
        req: JoinRequest,
        new_id: String,
        instance_id: String,
        now_ms: i64,
    ) -> Step<JoinResponse> {
        let mut fx = Vec::new();
        let Some(old_id) = self.static_members.get(&instance_id).cloned() else {
            self.add_member_and_rebalance(req, new_id.clone(), now_ms, &mut fx);
            return finish_join(new_id, fx);
        };
        let Some(mut member) = self.members.remove(&old_id) else {
            // The map and the members disagree: repair by joining as new.
            self.static_members.remove(&instance_id);
            self.add_member_and_rebalance(req, new_id.clone(), now_ms, &mut fx);
            return finish_join(new_id, fx);
        };
        // Fence the old process: whatever it has parked is answered now.
        if std::mem::take(&mut member.awaiting_join) {
            fx.push(Effect::Join {
                member_id: old_id.clone(),
                response: JoinResponse::error(&old_id, ErrorCode::FENCED_INSTANCE_ID),
            });
        }
        if std::mem::take(&mut member.awaiting_sync) {
            fx.push(Effect::Sync {
                member_id: old_id.clone(),
                response: SyncResponse::error(ErrorCode::FENCED_INSTANCE_ID),
            });
        }
        let was_leader = self.is_leader(&old_id);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(&old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        self.static_members.insert(instance_id, new_id.clone());
        member.member_id = new_id.clone();
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.last_heartbeat_ms = now_ms;
        self.members.insert(new_id.clone(), member);

        match self.state {
            // Only the chosen protocol is compared, not the metadata: a restarted
            // cooperative-sticky member reports no owned partitions, which would otherwise
            // force the very rebalance static membership exists to avoid.
            GroupState::Stable if self.select_protocol() == self.protocol_name => {
                let mut response = self.current_join_response(&new_id, false);
                if was_leader && req.supports_skip_assignment {
                    response.members = self.member_list();
                    response.skip_assignment = true;
                } else if was_leader {
                    // An older leader told it leads would reassign: it is told the old id.
                    response.leader = old_id;
                }
                reply_now(response, fx)
            }
            // In CompletingRebalance the leader may be assigning to the old id: start over.
            GroupState::Stable
            | GroupState::CompletingRebalance
            | GroupState::PreparingRebalance => {
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.awaiting_join = true;
                }
                self.maybe_prepare_rebalance(now_ms, &mut fx);
                finish_join(new_id, fx)
            }
            GroupState::Empty | GroupState::Dead => reply_now(
                JoinResponse::error(&new_id, ErrorCode::UNKNOWN_SERVER_ERROR),
                fx,
            ),
        }
    }

    /// Starts a rebalance where one can start; in PreparingRebalance, checks whether the join
    /// phase is now complete.
    fn maybe_prepare_rebalance(&mut self, now_ms: i64, fx: &mut Vec<Effect>) {
        match self.state {
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, fx)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, fx),
            GroupState::Dead => {}
        }
    }

    fn prepare_rebalance(&mut self, now_ms: i64, fx: &mut Vec<Effect>) {
        if self.state == GroupState::CompletingRebalance {
            // The assignment being built is for a generation that will never be Stable.
            for (id, m) in self.members.iter_mut() {
                m.assignment = Bytes::new();
                if std::mem::take(&mut m.awaiting_sync) {
                    fx.push(Effect::Sync {
                        member_id: id.clone(),
                        response: SyncResponse::error(ErrorCode::REBALANCE_IN_PROGRESS),
                    });
                }
            }
        }
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
        let rebalance_timeout = self.max_rebalance_timeout_ms();
        if self.state == GroupState::Empty {
            let delay = i64::from(self.config.initial_rebalance_delay_ms.max(0));
            self.rebalance_deadline_ms = Some(now_ms + delay);
            self.initial_delay = Some(InitialDelay {
                remaining_ms: (rebalance_timeout - delay).max(0),
                new_member_added: false,
            });
        } else {
            self.rebalance_deadline_ms = Some(now_ms + rebalance_timeout);
            self.initial_delay = None;
        }
        self.state = GroupState::PreparingRebalance;
        self.maybe_complete_join(now_ms, fx);
    }

    /// Ends the join phase early once everyone is in, except during the initial delay, whose
    /// point is to wait for members nobody knows about yet.
    fn maybe_complete_join(&mut self, now_ms: i64, fx: &mut Vec<Effect>) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.pending.is_empty()
            && self.members.values().all(|m| m.awaiting_join)
        {
            self.complete_join(now_ms, fx);
        }
    }

    /// At an initial-delay deadline: extends it by one more delay if a member joined during
    /// it and rebalance time is left. Returns whether it did.
    fn extend_initial_delay(&mut self, deadline: i64) -> bool {
        let delay = i64::from(self.config.initial_rebalance_delay_ms.max(0));
        let Some(initial) = self.initial_delay.as_mut() else {
            return false;
        };
        if !initial.new_member_added || initial.remaining_ms <= 0 || delay == 0 {
            return false;
        }
        let step = delay.min(initial.remaining_ms);
        initial.remaining_ms -= step;
        initial.new_member_added = false;
        self.rebalance_deadline_ms = Some(deadline + step);
        true
    }

    /// Ends the join phase: drops dynamic members that did not rejoin, starts the next
    /// generation and answers every parked join.
    fn complete_join(&mut self, now_ms: i64, fx: &mut Vec<Effect>) {
        self.initial_delay = None;
        self.rebalance_deadline_ms = None;
        // Static members that did not rejoin stay: their process may be restarting, and their
        // session timeout decides.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in &gone {
            self.remove_member(id, fx);
        }

        if !self.members.is_empty() {
            let leader_joined = self
                .leader
                .as_ref()
                .and_then(|l| self.members.get(l))
                .is_some_and(|m| m.awaiting_join);
            if !leader_joined {
                match self.members.values().find(|m| m.awaiting_join) {
                    Some(m) => self.leader = Some(m.member_id.clone()),
                    None => {
                        // Only absent static members are left: wait another round for them
                        // to rejoin or for their sessions to expire.
                        self.rebalance_deadline_ms = Some(now_ms + self.max_rebalance_timeout_ms());
                        return;
                    }
                }
            }
        }

        self.generation_id += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            return;
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader.clone().unwrap_or_default();
        let leader_members = self.member_list();
        for (id, m) in self.members.iter_mut() {
            m.last_heartbeat_ms = now_ms;
            m.is_new = false;
            if std::mem::take(&mut m.awaiting_join) {
                let is_leader = *id == leader;
                fx.push(Effect::Join {
                    member_id: id.clone(),
                    response: JoinResponse {
                        error: ErrorCode::NONE,
                        generation_id: self.generation_id,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        leader: leader.clone(),
                        skip_assignment: false,
                        member_id: id.clone(),
                        members: if is_leader {
                            leader_members.clone()
                        } else {
                            Vec::new()
                        },
                    },
                });
            }
        }
        self.pending_sync = self.members.keys().cloned().collect();
        self.sync_deadline_ms = Some(now_ms + self.max_rebalance_timeout_ms());
    }

    /// Removes a member and answers whatever it has parked; no state change.
    fn remove_member(&mut self, member_id: &str, fx: &mut Vec<Effect>) {
        let Some(m) = self.members.remove(member_id) else {
            return;
        };
        if m.awaiting_join {
            fx.push(Effect::Join {
                member_id: member_id.to_string(),
                response: JoinResponse::error(member_id, ErrorCode::UNKNOWN_MEMBER_ID),
            });
        }
        if m.awaiting_sync {
            fx.push(Effect::Sync {
                member_id: member_id.to_string(),
                response: SyncResponse::error(ErrorCode::UNKNOWN_MEMBER_ID),
            });
        }
        if let Some(instance_id) = &m.group_instance_id
            && self.static_members.get(instance_id).map(String::as_str) == Some(member_id)
        {
            self.static_members.remove(instance_id);
        }
        self.pending_sync.remove(member_id);
        if self.is_leader(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    /// Removes a member (leave, expiry) and rebalances the rest.
    fn remove_member_and_update(&mut self, member_id: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        self.remove_member(member_id, fx);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, fx)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, fx),
            GroupState::Empty | GroupState::Dead => {}
        }
    }
}

fn reply_now<T>(response: T, effects: Vec<Effect>) -> Step<T> {
    Step {
        reply: Reply::Now(response),
        effects,
    }
}

/// The caller's join is answered now if the call itself completed the rebalance (its answer is
/// then among the effects); otherwise it stays parked.
fn finish_join(member_id: String, mut effects: Vec<Effect>) -> Step<JoinResponse> {
    let own = effects
        .iter()
        .position(|e| matches!(e, Effect::Join { member_id: id, .. } if *id == member_id));
    match own {
        Some(i) => match effects.remove(i) {
            Effect::Join { response, .. } => reply_now(response, effects),
            other => {
                effects.insert(i, other);
                Step {
                    reply: Reply::Parked { member_id },
                    effects,
                }
            }
        },
        None => Step {
            reply: Reply::Parked { member_id },
            effects,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use super::*;

    const SESSION: i32 = 10_000;
    const REBALANCE: i32 = 30_000;

    fn config(initial_delay_ms: i32) -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: initial_delay_ms,
            ..GroupConfig::default()
        }
    }

    fn protocols(names: &[&str], client: &str) -> Vec<(String, Bytes)> {
        names
            .iter()
            .map(|n| (n.to_string(), Bytes::from(format!("{n}:{client}"))))
            .collect()
    }

    fn req(member_id: &str, client: &str) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            client_id: client.to_string(),
            client_host: "/127.0.0.1".to_string(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".to_string(),
            protocols: protocols(&["range"], client),
            supports_skip_assignment: true,
        }
    }

    fn static_req(member_id: &str, client: &str, instance: &str) -> JoinRequest {
        JoinRequest {
            group_instance_id: Some(instance.to_string()),
            ..req(member_id, client)
        }
    }

    fn parked<T: Debug>(step: &Step<T>) -> String {
        match &step.reply {
            Reply::Parked { member_id } => member_id.clone(),
            other => panic!("expected a parked request, got {other:?}"),
        }
    }

    fn answered<T: Debug>(step: Step<T>) -> (T, Vec<Effect>) {
        match step.reply {
            Reply::Now(response) => (response, step.effects),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn joins(fx: &[Effect]) -> BTreeMap<String, JoinResponse> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Join {
                    member_id,
                    response,
                } => Some((member_id.clone(), response.clone())),
                Effect::Sync { .. } => None,
            })
            .collect()
    }

    fn syncs(fx: &[Effect]) -> BTreeMap<String, SyncResponse> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Sync {
                    member_id,
                    response,
                } => Some((member_id.clone(), response.clone())),
                Effect::Join { .. } => None,
            })
            .collect()
    }

    fn hb(g: &mut Group, member_id: &str, generation_id: i32, now_ms: i64) -> ErrorCode {
        let req = HeartbeatRequest {
            member_id: member_id.to_string(),
            generation_id,
            group_instance_id: g
                .member(member_id)
                .and_then(|m| m.group_instance_id.clone()),
        };
        g.heartbeat(&req, now_ms)
    }

    fn sync_req(
        member_id: &str,
        generation_id: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncRequest {
        SyncRequest {
            member_id: member_id.to_string(),
            generation_id,
            group_instance_id: None,
            protocol_type: Some("consumer".to_string()),
            protocol_name: Some("range".to_string()),
            assignments,
        }
    }

    fn assignment(i: usize) -> Bytes {
        Bytes::from(format!("assignment-{i}"))
    }

    /// Joins (v3, no initial delay) and syncs `reqs` at t=0: Stable at generation 1. Member
    /// `i` (in join order) is assigned `assignment(i)`.
    fn stable_group(reqs: Vec<JoinRequest>) -> (Group, Vec<String>) {
        let mut g = Group::new("g", config(0));
        let ids: Vec<String> = reqs
            .into_iter()
            .map(|r| parked(&g.join(r, 0, false)))
            .collect();
        let fx = g.tick(0);
        assert_eq!(joins(&fx).len(), ids.len());
        let leader = g.leader().map(str::to_string).unwrap_or_default();
        for id in ids.iter().filter(|id| **id != leader) {
            parked(&g.sync(sync_req(id, 1, Vec::new()), 0));
        }
        let assignments = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), assignment(i)))
            .collect();
        let (response, fx) = answered(g.sync(sync_req(&leader, 1, assignments), 0));
        assert_eq!(response.error, ErrorCode::NONE);
        assert_eq!(syncs(&fx).len(), ids.len() - 1);
        assert_eq!(g.state(), GroupState::Stable);
        (g, ids)
    }

    #[test]
    fn error_codes_match_the_kafka_protocol() {
        use kafka_protocol::ResponseError as E;
        let cases = [
            (ErrorCode::UNKNOWN_SERVER_ERROR, E::UnknownServerError),
            (
                ErrorCode::COORDINATOR_NOT_AVAILABLE,
                E::CoordinatorNotAvailable,
            ),
            (ErrorCode::NOT_COORDINATOR, E::NotCoordinator),
            (ErrorCode::ILLEGAL_GENERATION, E::IllegalGeneration),
            (
                ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
                E::InconsistentGroupProtocol,
            ),
            (ErrorCode::UNKNOWN_MEMBER_ID, E::UnknownMemberId),
            (ErrorCode::INVALID_SESSION_TIMEOUT, E::InvalidSessionTimeout),
            (ErrorCode::REBALANCE_IN_PROGRESS, E::RebalanceInProgress),
            (ErrorCode::NON_EMPTY_GROUP, E::NonEmptyGroup),
            (ErrorCode::GROUP_ID_NOT_FOUND, E::GroupIdNotFound),
            (ErrorCode::MEMBER_ID_REQUIRED, E::MemberIdRequired),
            (ErrorCode::GROUP_MAX_SIZE_REACHED, E::GroupMaxSizeReached),
            (ErrorCode::FENCED_INSTANCE_ID, E::FencedInstanceId),
        ];
        for (code, error) in cases {
            assert_eq!(code.code(), error.code(), "{error:?}");
        }
    }

    #[test]
    fn full_join_and_sync_of_three_members() {
        let mut g = Group::new("g", config(0));
        assert!(g.is_empty());
        let a = parked(&g.join(req("", "a"), 0, false));
        let b = parked(&g.join(req("", "b"), 0, false));
        let c = parked(&g.join(req("", "c"), 0, false));
        assert!(a.starts_with("a-") && b.starts_with("b-") && c.starts_with("c-"));
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(g.next_deadline(), Some(0));

        let fx = g.tick(0);
        let answers = joins(&fx);
        assert_eq!(answers.len(), 3);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        assert_eq!(g.generation_id(), 1);
        assert_eq!(g.leader(), Some(a.as_str()));
        let leader = &answers[&a];
        assert_eq!(leader.error, ErrorCode::NONE);
        assert_eq!(leader.generation_id, 1);
        assert_eq!(leader.leader, a);
        assert_eq!(leader.protocol_type.as_deref(), Some("consumer"));
        assert_eq!(leader.protocol_name.as_deref(), Some("range"));
        let metadata: Vec<(String, Bytes)> = leader
            .members
            .iter()
            .map(|m| (m.member_id.clone(), m.metadata.clone()))
            .collect();
        let mut expected = vec![
            (a.clone(), Bytes::from("range:a")),
            (b.clone(), Bytes::from("range:b")),
            (c.clone(), Bytes::from("range:c")),
        ];
        expected.sort();
        assert_eq!(metadata, expected);
        for follower in [&b, &c] {
            let r = &answers[follower];
            assert_eq!(
                (r.error, r.generation_id, r.leader.as_str()),
                (ErrorCode::NONE, 1, a.as_str())
            );
            assert!(r.members.is_empty());
        }

        // A follower's sync waits for the leader's.
        assert_eq!(parked(&g.sync(sync_req(&b, 1, Vec::new()), 100)), b);
        let assignments = vec![
            (a.clone(), assignment(0)),
            (b.clone(), assignment(1)),
            (c.clone(), assignment(2)),
        ];
        let (own, fx) = answered(g.sync(sync_req(&a, 1, assignments), 200));
        assert_eq!(own.assignment, assignment(0));
        assert_eq!(own.protocol_name.as_deref(), Some("range"));
        let synced = syncs(&fx);
        assert_eq!(synced.len(), 1);
        assert_eq!(synced[&b].assignment, assignment(1));
        assert_eq!(g.state(), GroupState::Stable);

        // A sync arriving after the leader's is answered at once.
        let (late, fx) = answered(g.sync(sync_req(&c, 1, Vec::new()), 300));
        assert!(fx.is_empty());
        assert_eq!(late.assignment, assignment(2));
        assert_eq!(hb(&mut g, &b, 1, 400), ErrorCode::NONE);

        let d = g.describe();
        assert_eq!(d.state, "Stable");
        assert_eq!(
            (d.protocol_type.as_str(), d.protocol_name.as_str()),
            ("consumer", "range")
        );
        let bm = d.members.iter().find(|m| m.member_id == b);
        let bm = bm.expect("b is described");
        assert_eq!(bm.client_id, "b");
        assert_eq!(bm.client_host, "/127.0.0.1");
        assert_eq!(bm.metadata, Bytes::from("range:b"));
        assert_eq!(bm.assignment, assignment(1));
    }

    #[test]
    fn member_id_required_then_join() {
        let mut g = Group::new("g", config(0));
        let (first, fx) = answered(g.join(req("", "a"), 0, true));
        assert!(fx.is_empty());
        assert_eq!(first.error, ErrorCode::MEMBER_ID_REQUIRED);
        assert!(first.member_id.starts_with("a-"), "{}", first.member_id);
        assert!(g.is_pending(&first.member_id));
        // Nothing has joined yet.
        assert_eq!(g.state(), GroupState::Empty);

        // A made-up id is refused.
        let (bogus, _) = answered(g.join(req("a-bogus", "a"), 10, true));
        assert_eq!(bogus.error, ErrorCode::UNKNOWN_MEMBER_ID);

        let id = parked(&g.join(req(&first.member_id, "a"), 10, true));
        assert_eq!(id, first.member_id);
        assert!(!g.is_pending(&id));
        let answers = joins(&g.tick(10));
        assert_eq!(answers[&id].generation_id, 1);
        assert_eq!(answers[&id].leader, id);
        assert_eq!(answers[&id].members.len(), 1);
    }

    #[test]
    fn an_unused_pending_member_id_lapses() {
        let mut g = Group::new("g", config(0));
        let (first, _) = answered(g.join(req("", "a"), 0, true));
        assert_eq!(g.next_deadline(), Some(i64::from(SESSION)));
        assert!(g.tick(i64::from(SESSION) - 1).is_empty());
        assert!(g.is_pending(&first.member_id));
        g.tick(i64::from(SESSION));
        assert!(!g.is_pending(&first.member_id));
        let (late, _) = answered(g.join(req(&first.member_id, "a"), 20_000, true));
        assert_eq!(late.error, ErrorCode::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn invalid_requests_are_refused() {
        let mut g = Group::new("g", config(0));
        let short = JoinRequest {
            session_timeout_ms: 5_999,
            ..req("", "a")
        };
        assert_eq!(
            answered(g.join(short, 0, false)).0.error,
            ErrorCode::INVALID_SESSION_TIMEOUT
        );
        let long = JoinRequest {
            session_timeout_ms: 1_800_001,
            ..req("", "a")
        };
        assert_eq!(
            answered(g.join(long, 0, false)).0.error,
            ErrorCode::INVALID_SESSION_TIMEOUT
        );
        let none = JoinRequest {
            protocols: Vec::new(),
            ..req("", "a")
        };
        assert_eq!(
            answered(g.join(none, 0, false)).0.error,
            ErrorCode::INCONSISTENT_GROUP_PROTOCOL
        );

        let mut small = Group::new(
            "g",
            GroupConfig {
                max_size: 1,
                ..config(0)
            },
        );
        parked(&small.join(req("", "a"), 0, false));
        assert_eq!(
            answered(small.join(req("", "b"), 0, false)).0.error,
            ErrorCode::GROUP_MAX_SIZE_REACHED
        );
    }

    #[test]
    fn a_new_member_in_a_stable_group_triggers_a_rebalance() {
        let (mut g, ids) = stable_group(vec![req("", "a"), req("", "b"), req("", "c")]);
        let (a, b, c) = (ids[0].clone(), ids[1].clone(), ids[2].clone());

        let d = parked(&g.join(req("", "d"), 1_000, false));
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        for id in [&a, &b, &c] {
            assert_eq!(hb(&mut g, id, 1, 1_100), ErrorCode::REBALANCE_IN_PROGRESS);
        }
        // Syncs of the old generation are refused too.
        assert_eq!(
            answered(g.sync(sync_req(&b, 1, Vec::new()), 1_100)).0.error,
            ErrorCode::REBALANCE_IN_PROGRESS
        );

        let step = g.join(req(&a, "a"), 1_200, false);
        assert!(step.effects.is_empty());
        parked(&step);
        parked(&g.join(req(&b, "b"), 1_300, false));
        assert_eq!(hb(&mut g, &c, 1, 1_350), ErrorCode::REBALANCE_IN_PROGRESS);
        // The last member in completes the rebalance: its own answer is immediate.
        let (own, fx) = answered(g.join(req(&c, "c"), 1_400, false));
        assert_eq!(own.generation_id, 2);
        let others = joins(&fx);
        assert_eq!(others.len(), 3);
        assert_eq!(others[&a].members.len(), 4);
        assert!(others[&b].members.is_empty() && others[&d].members.is_empty());
        assert_eq!(g.generation_id(), 2);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        assert_eq!(hb(&mut g, &a, 1, 1_500), ErrorCode::ILLEGAL_GENERATION);
        assert_eq!(hb(&mut g, &a, 2, 1_500), ErrorCode::NONE);
    }

    #[test]
    fn a_follower_rejoining_a_stable_group_unchanged_gets_the_current_generation() {
        let (mut g, ids) = stable_group(vec![req("", "a"), req("", "b")]);
        let (own, fx) = answered(g.join(req(&ids[1], "b"), 500, false));
        assert!(fx.is_empty());
        assert_eq!((own.error, own.generation_id), (ErrorCode::NONE, 1));
        assert!(own.members.is_empty());
        assert_eq!(g.state(), GroupState::Stable);

        // With new metadata it rebalances.
        let changed = JoinRequest {
            protocols: protocols(&["range"], "b-changed"),
            ..req(&ids[1], "b")
        };
        parked(&g.join(changed, 600, false));
        assert_eq!(g.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn session_expiry_removes_the_member_and_rebalances_the_others() {
        let (mut g, ids) = stable_group(vec![req("", "a"), req("", "b"), req("", "c")]);
        let (a, b, c) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
        assert_eq!(hb(&mut g, &a, 1, 6_000), ErrorCode::NONE);
        assert_eq!(hb(&mut g, &c, 1, 6_000), ErrorCode::NONE);
        assert_eq!(g.next_deadline(), Some(i64::from(SESSION)));

        assert!(g.tick(i64::from(SESSION) - 1).is_empty());
        assert_eq!(g.state(), GroupState::Stable);
        assert!(g.tick(i64::from(SESSION)).is_empty());
        assert!(g.member(&b).is_none());
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(hb(&mut g, &b, 1, 10_100), ErrorCode::UNKNOWN_MEMBER_ID);

        parked(&g.join(req(&a, "a"), 10_200, false));
        let (own, fx) = answered(g.join(req(&c, "c"), 10_300, false));
        assert_eq!(own.generation_id, 2);
        assert_eq!(joins(&fx)[&a].members.len(), 2);
        assert_eq!(g.members().count(), 2);
    }

    #[test]
    fn the_rebalance_timeout_drops_members_that_did_not_rejoin() {
        let short = |client: &str| JoinRequest {
            rebalance_timeout_ms: 5_000,
            ..req("", client)
        };
        let (mut g, ids) = stable_group(vec![short("a"), short("b"), short("c")]);
        let (a, b, c) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
        let d = parked(&g.join(short("d"), 1_000, false));
        assert_eq!(g.next_deadline(), Some(6_000));
        parked(&g.join(
            JoinRequest {
                member_id: a.clone(),
                ..short("a")
            },
            2_000,
            false,
        ));
        // b and c are alive but never rejoin.
        assert_eq!(hb(&mut g, &b, 1, 3_000), ErrorCode::REBALANCE_IN_PROGRESS);
        assert_eq!(hb(&mut g, &c, 1, 3_000), ErrorCode::REBALANCE_IN_PROGRESS);

        assert!(g.tick(5_999).is_empty());
        let answers = joins(&g.tick(6_000));
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[&a].generation_id, 2);
        assert_eq!(answers[&a].members.len(), 2);
        assert!(answers.contains_key(&d));
        assert!(g.member(&b).is_none() && g.member(&c).is_none());
        assert_eq!(hb(&mut g, &b, 1, 6_100), ErrorCode::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn the_leader_that_does_not_rejoin_is_replaced() {
        let short = |client: &str| JoinRequest {
            rebalance_timeout_ms: 5_000,
            ..req("", client)
        };
        let (mut g, ids) = stable_group(vec![short("a"), short("b")]);
        assert_eq!(g.leader(), Some(ids[0].as_str()));
        parked(&g.join(
            JoinRequest {
                member_id: ids[1].clone(),
                protocols: protocols(&["range"], "b2"),
                ..short("b")
            },
            1_000,
            false,
        ));
        let answers = joins(&g.tick(6_000));
        assert_eq!(g.leader(), Some(ids[1].as_str()));
        assert_eq!(answers[&ids[1]].leader, ids[1]);
        assert_eq!(answers[&ids[1]].members.len(), 1);
    }

    #[test]
    fn protocol_selection() {
        let mut g = Group::new("g", config(0));
        let a = parked(&g.join(
            JoinRequest {
                protocols: protocols(&["cooperative-sticky", "range"], "a"),
                ..req("", "a")
            },
            0,
            false,
        ));
        let b = parked(&g.join(req("", "b"), 0, false));
        let (refused, _) = answered(g.join(
            JoinRequest {
                protocols: protocols(&["roundrobin"], "c"),
                ..req("", "c")
            },
            0,
            false,
        ));
        assert_eq!(refused.error, ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
        let (other_type, _) = answered(g.join(
            JoinRequest {
                protocol_type: "connect".to_string(),
                ..req("", "c")
            },
            0,
            false,
        ));
        assert_eq!(other_type.error, ErrorCode::INCONSISTENT_GROUP_PROTOCOL);

        let answers = joins(&g.tick(0));
        assert_eq!(answers[&a].protocol_name.as_deref(), Some("range"));
        assert_eq!(answers[&a].members.len(), 2);
        assert!(
            answers[&a]
                .members
                .iter()
                .any(|m| m.member_id == a && m.metadata == "range:a")
        );
        assert!(
            answers[&a]
                .members
                .iter()
                .any(|m| m.member_id == b && m.metadata == "range:b")
        );
        // The sync must name the chosen protocol (v5).
        let wrong = SyncRequest {
            protocol_name: Some("cooperative-sticky".to_string()),
            ..sync_req(&a, 1, Vec::new())
        };
        assert_eq!(
            answered(g.sync(wrong, 10)).0.error,
            ErrorCode::INCONSISTENT_GROUP_PROTOCOL
        );
    }

    #[test]
    fn the_protocol_with_most_first_choice_votes_wins() {
        let mut g = Group::new("g", config(0));
        let mut join = |client: &str, names: &[&str]| {
            parked(&g.join(
                JoinRequest {
                    protocols: protocols(names, client),
                    ..req("", client)
                },
                0,
                false,
            ))
        };
        let a = join("a", &["range", "roundrobin"]);
        join("b", &["roundrobin", "range"]);
        join("c", &["roundrobin", "range", "sticky"]);
        let answers = joins(&g.tick(0));
        assert_eq!(answers[&a].protocol_name.as_deref(), Some("roundrobin"));
        assert!(
            answers[&a]
                .members
                .iter()
                .any(|m| m.metadata == "roundrobin:a")
        );
    }

    #[test]
    fn a_static_member_restart_keeps_its_assignment_without_a_rebalance() {
        let (mut g, ids) = stable_group(vec![
            req("", "a"),
            static_req("", "b", "instance-b"),
            req("", "c"),
        ]);
        let old = ids[1].clone();
        assert!(old.starts_with("instance-b-"));
        assert_eq!(g.static_member("instance-b"), Some(old.as_str()));

        // The new process rejoins with an empty member id, even with JoinGroup v4+.
        let (own, fx) = answered(g.join(static_req("", "b", "instance-b"), 2_000, true));
        assert!(fx.is_empty(), "the others see nothing: {fx:?}");
        assert_eq!(own.error, ErrorCode::NONE);
        assert_eq!(own.generation_id, 1);
        assert_eq!(own.leader, ids[0]);
        assert!(own.members.is_empty() && !own.skip_assignment);
        let new = own.member_id.clone();
        assert!(new.starts_with("instance-b-") && new != old);
        assert_eq!(g.state(), GroupState::Stable);
        assert_eq!(g.generation_id(), 1);
        assert_eq!(g.static_member("instance-b"), Some(new.as_str()));

        let mut sync = sync_req(&new, 1, Vec::new());
        sync.group_instance_id = Some("instance-b".to_string());
        let (synced, _) = answered(g.sync(sync, 2_100));
        assert_eq!(synced.assignment, assignment(1));

        // The old process is fenced.
        let fenced = HeartbeatRequest {
            member_id: old.clone(),
            generation_id: 1,
            group_instance_id: Some("instance-b".to_string()),
        };
        assert_eq!(g.heartbeat(&fenced, 2_200), ErrorCode::FENCED_INSTANCE_ID);
        let mut old_sync = sync_req(&old, 1, Vec::new());
        old_sync.group_instance_id = Some("instance-b".to_string());
        assert_eq!(
            answered(g.sync(old_sync, 2_200)).0.error,
            ErrorCode::FENCED_INSTANCE_ID
        );
        assert_eq!(hb(&mut g, &ids[0], 1, 2_300), ErrorCode::NONE);
        assert_eq!(hb(&mut g, &ids[2], 1, 2_300), ErrorCode::NONE);
        assert_eq!(g.state(), GroupState::Stable);
    }

    #[test]
    fn a_static_leader_restart_skips_assignment_from_v9_and_looks_like_a_follower_before() {
        let (mut g, ids) = stable_group(vec![static_req("", "a", "instance-a"), req("", "b")]);
        assert_eq!(g.leader(), Some(ids[0].as_str()));

        let (v9, fx) = answered(g.join(static_req("", "a", "instance-a"), 1_000, true));
        assert!(fx.is_empty());
        assert_eq!(v9.leader, v9.member_id);
        assert!(v9.skip_assignment);
        assert_eq!(v9.members.len(), 2);
        assert_eq!(g.leader(), Some(v9.member_id.as_str()));
        assert_eq!(g.state(), GroupState::Stable);

        let older = JoinRequest {
            supports_skip_assignment: false,
            ..static_req("", "a", "instance-a")
        };
        let (v8, _) = answered(g.join(older, 2_000, true));
        assert_eq!(v8.leader, v9.member_id, "told the old leader id");
        assert_ne!(v8.leader, v8.member_id);
        assert!(v8.members.is_empty() && !v8.skip_assignment);
        assert_eq!(g.state(), GroupState::Stable);
    }

    #[test]
    fn a_static_member_restart_fences_a_parked_join_of_the_old_process() {
        let (mut g, ids) = stable_group(vec![
            req("", "a"),
            static_req("", "b", "instance-b"),
            req("", "c"),
        ]);
        let old = ids[1].clone();
        // a's new metadata starts a rebalance; the old b process rejoins and waits.
        parked(&g.join(
            JoinRequest {
                protocols: protocols(&["range"], "a2"),
                ..req(&ids[0], "a")
            },
            1_000,
            false,
        ));
        parked(&g.join(static_req(&old, "b", "instance-b"), 1_100, false));
        // A new b process takes over: the old one's parked join is answered FENCED.
        let step = g.join(static_req("", "b", "instance-b"), 1_200, true);
        let new = parked(&step);
        assert_ne!(new, old);
        let fenced = joins(&step.effects);
        assert_eq!(fenced.len(), 1);
        assert_eq!(fenced[&old].error, ErrorCode::FENCED_INSTANCE_ID);
        assert_eq!(fenced[&old].member_id, old);

        let (own, fx) = answered(g.join(req(&ids[2], "c"), 1_300, false));
        assert_eq!(own.generation_id, 2);
        let answers = joins(&fx);
        assert_eq!(answers[&new].generation_id, 2);
        assert!(!answers.contains_key(&old));
        assert!(answers[&ids[0]].members.iter().any(|m| m.member_id == new));
    }

    #[test]
    fn a_static_member_session_expiry_removes_it_and_rebalances() {
        let (mut g, ids) = stable_group(vec![req("", "a"), static_req("", "b", "instance-b")]);
        assert_eq!(hb(&mut g, &ids[0], 1, 8_000), ErrorCode::NONE);
        g.tick(i64::from(SESSION));
        assert!(g.member(&ids[1]).is_none());
        assert_eq!(g.static_member("instance-b"), None);
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        let (own, _) = answered(g.join(req(&ids[0], "a"), 10_100, false));
        assert_eq!((own.generation_id, own.members.len()), (2, 1));
    }

    #[test]
    fn a_static_member_that_does_not_rejoin_stays_until_its_session_ends() {
        let short = |r: JoinRequest| JoinRequest {
            rebalance_timeout_ms: 5_000,
            ..r
        };
        let (mut g, ids) = stable_group(vec![
            short(req("", "a")),
            short(static_req("", "b", "instance-b")),
        ]);
        // The leader rejoining starts a rebalance that b (restarting, say) sits out.
        parked(&g.join(short(req(&ids[0], "a")), 1_000, false));
        assert!(g.tick(5_999).is_empty());
        let answers = joins(&g.tick(6_000));
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[&ids[0]].generation_id, 2);
        assert_eq!(answers[&ids[0]].members.len(), 2, "b is still a member");
        assert!(g.member(&ids[1]).is_some());
        // It never syncs either: dropped at the sync deadline, and the group rebalances.
        answered(g.sync(sync_req(&ids[0], 2, Vec::new()), 6_100));
        assert!(g.tick(10_999).is_empty());
        g.tick(11_000);
        assert!(g.member(&ids[1]).is_none());
        assert_eq!(g.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn leave_by_instance_id_and_by_member_id() {
        let (mut g, ids) = stable_group(vec![
            req("", "a"),
            req("", "b"),
            static_req("", "c", "instance-c"),
        ]);
        let (response, fx) = g.leave(
            LeaveRequest {
                members: vec![
                    LeavingMember {
                        member_id: String::new(),
                        group_instance_id: Some("instance-c".to_string()),
                    },
                    LeavingMember {
                        member_id: "nobody".to_string(),
                        group_instance_id: None,
                    },
                    LeavingMember {
                        member_id: String::new(),
                        group_instance_id: Some("instance-x".to_string()),
                    },
                ],
            },
            1_000,
        );
        assert!(fx.is_empty());
        assert_eq!(response.error, ErrorCode::NONE);
        let errors: Vec<ErrorCode> = response.members.iter().map(|m| m.error).collect();
        assert_eq!(
            errors,
            vec![
                ErrorCode::NONE,
                ErrorCode::UNKNOWN_MEMBER_ID,
                ErrorCode::UNKNOWN_MEMBER_ID
            ]
        );
        assert!(g.member(&ids[2]).is_none());
        assert_eq!(g.static_member("instance-c"), None);
        assert_eq!(g.state(), GroupState::PreparingRebalance);

        parked(&g.join(req(&ids[0], "a"), 1_100, false));
        let (own, _) = answered(g.join(req(&ids[1], "b"), 1_200, false));
        assert_eq!((own.generation_id, g.members().count()), (2, 2));

        // Everyone leaves: Empty, and one more generation.
        let leaving = ids[..2]
            .iter()
            .map(|id| LeavingMember {
                member_id: id.clone(),
                group_instance_id: None,
            })
            .collect();
        let (response, _) = g.leave(LeaveRequest { members: leaving }, 1_300);
        assert!(response.members.iter().all(|m| m.error == ErrorCode::NONE));
        assert!(g.is_empty());
        assert_eq!(g.generation_id(), 3);
        assert_eq!(g.leader(), None);
        assert_eq!(g.describe().state, "Empty");
        assert_eq!(g.next_deadline(), None);
    }

    #[test]
    fn a_leave_can_complete_the_join_phase() {
        let (mut g, ids) = stable_group(vec![req("", "a"), req("", "b"), req("", "c")]);
        let d = parked(&g.join(req("", "d"), 1_000, false));
        parked(&g.join(req(&ids[0], "a"), 1_100, false));
        parked(&g.join(req(&ids[1], "b"), 1_200, false));
        let (_, fx) = g.leave(
            LeaveRequest {
                members: vec![LeavingMember {
                    member_id: ids[2].clone(),
                    group_instance_id: None,
                }],
            },
            1_300,
        );
        let answers = joins(&fx);
        assert_eq!(answers.len(), 3);
        assert!(answers.contains_key(&d));
        assert_eq!(answers[&ids[0]].generation_id, 2);
    }

    #[test]
    fn a_leave_while_completing_rebalance_cancels_parked_syncs() {
        let mut g = Group::new("g", config(0));
        let a = parked(&g.join(req("", "a"), 0, false));
        let b = parked(&g.join(req("", "b"), 0, false));
        let c = parked(&g.join(req("", "c"), 0, false));
        g.tick(0);
        parked(&g.sync(sync_req(&b, 1, Vec::new()), 10));
        let (_, fx) = g.leave(
            LeaveRequest {
                members: vec![LeavingMember {
                    member_id: c.clone(),
                    group_instance_id: None,
                }],
            },
            20,
        );
        assert_eq!(syncs(&fx)[&b].error, ErrorCode::REBALANCE_IN_PROGRESS);
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(
            answered(g.sync(sync_req(&a, 1, Vec::new()), 30)).0.error,
            ErrorCode::REBALANCE_IN_PROGRESS
        );
    }

    #[test]
    fn sync_errors() {
        let (mut g, ids) = stable_group(vec![req("", "a"), req("", "b")]);
        assert_eq!(
            answered(g.sync(sync_req(&ids[1], 2, Vec::new()), 100))
                .0
                .error,
            ErrorCode::ILLEGAL_GENERATION
        );
        assert_eq!(
            answered(g.sync(sync_req(&ids[1], 0, Vec::new()), 100))
                .0
                .error,
            ErrorCode::ILLEGAL_GENERATION
        );
        assert_eq!(
            answered(g.sync(sync_req("stranger", 1, Vec::new()), 100))
                .0
                .error,
            ErrorCode::UNKNOWN_MEMBER_ID
        );
        let other_type = SyncRequest {
            protocol_type: Some("connect".to_string()),
            ..sync_req(&ids[1], 1, Vec::new())
        };
        assert_eq!(
            answered(g.sync(other_type, 100)).0.error,
            ErrorCode::INCONSISTENT_GROUP_PROTOCOL
        );
        // Before v5 the fields are absent and not checked.
        let v4 = SyncRequest {
            protocol_type: None,
            protocol_name: None,
            ..sync_req(&ids[1], 1, Vec::new())
        };
        assert_eq!(answered(g.sync(v4, 100)).0.assignment, assignment(1));
    }

    #[test]
    fn heartbeat_errors() {
        let (mut g, ids) = stable_group(vec![req("", "a"), req("", "b")]);
        assert_eq!(hb(&mut g, &ids[0], 1, 100), ErrorCode::NONE);
        assert_eq!(hb(&mut g, &ids[0], 0, 100), ErrorCode::ILLEGAL_GENERATION);
        assert_eq!(hb(&mut g, "stranger", 1, 100), ErrorCode::UNKNOWN_MEMBER_ID);
        let unknown_instance = HeartbeatRequest {
            member_id: ids[0].clone(),
            generation_id: 1,
            group_instance_id: Some("nobody".to_string()),
        };
        assert_eq!(
            g.heartbeat(&unknown_instance, 100),
            ErrorCode::UNKNOWN_MEMBER_ID
        );
    }

    #[test]
    fn the_initial_delay_holds_the_first_rebalance_and_extends_while_members_join() {
        let mut g = Group::new("g", config(3_000));
        let ten = |client: &str| JoinRequest {
            rebalance_timeout_ms: 10_000,
            ..req("", client)
        };
        let a = parked(&g.join(ten("a"), 0, false));
        assert_eq!(g.next_deadline(), Some(3_000));
        let b = parked(&g.join(ten("b"), 1_000, false));
        // Everyone known has joined, but the delay waits for consumers nobody knows yet.
        assert!(g.tick(2_999).is_empty());
        // b joined during the first delay: one more delay.
        assert!(g.tick(3_000).is_empty());
        assert_eq!(g.next_deadline(), Some(6_000));
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        let answers = joins(&g.tick(6_000));
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[&a].generation_id, 1);
        assert_eq!(answers[&a].members.len(), 2);
        assert!(answers.contains_key(&b));
    }

    #[test]
    fn the_initial_delay_is_capped_by_the_rebalance_timeout() {
        let mut g = Group::new("g", config(3_000));
        let five = |client: &str| JoinRequest {
            rebalance_timeout_ms: 5_000,
            ..req("", client)
        };
        parked(&g.join(five("a"), 0, false));
        parked(&g.join(five("b"), 1_000, false));
        assert!(g.tick(3_000).is_empty());
        // Only 2000 ms of the rebalance timeout were left.
        assert_eq!(g.next_deadline(), Some(5_000));
        parked(&g.join(five("c"), 4_000, false));
        assert_eq!(joins(&g.tick(5_000)).len(), 3);
        assert_eq!(g.generation_id(), 1);
    }

    #[test]
    fn a_lone_first_member_waits_out_the_initial_delay() {
        let mut g = Group::new("g", config(3_000));
        let a = parked(&g.join(req("", "a"), 100, false));
        assert!(g.tick(3_099).is_empty());
        let answers = joins(&g.tick(3_100));
        assert_eq!(answers[&a].generation_id, 1);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
    }

    #[test]
    fn a_member_that_never_syncs_is_removed_at_the_sync_deadline() {
        let short = |client: &str| JoinRequest {
            rebalance_timeout_ms: 5_000,
            ..req("", client)
        };
        let mut g = Group::new("g", config(0));
        let a = parked(&g.join(short("a"), 0, false));
        let b = parked(&g.join(short("b"), 0, false));
        let c = parked(&g.join(short("c"), 0, false));
        g.tick(0);
        assert_eq!(g.next_deadline(), Some(5_000));
        answered(g.sync(sync_req(&a, 1, Vec::new()), 100));
        answered(g.sync(sync_req(&b, 1, Vec::new()), 200));
        assert!(g.tick(4_999).is_empty());
        assert_eq!(g.state(), GroupState::Stable);
        g.tick(5_000);
        assert!(g.member(&c).is_none());
        assert_eq!(g.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn a_parked_member_is_not_expired_by_its_session() {
        let (mut g, ids) = stable_group(vec![req("", "a"), req("", "b")]);
        // a rejoins and waits for b for longer than a session.
        parked(&g.join(
            JoinRequest {
                protocols: protocols(&["range"], "a2"),
                ..req(&ids[0], "a")
            },
            1_000,
            false,
        ));
        assert_eq!(
            hb(&mut g, &ids[1], 1, 9_000),
            ErrorCode::REBALANCE_IN_PROGRESS
        );
        g.tick(15_000);
        assert!(g.member(&ids[0]).is_some());
        assert!(g.member(&ids[1]).is_some());
        let (own, fx) = answered(g.join(req(&ids[1], "b"), 16_000, false));
        assert_eq!(own.generation_id, 2);
        assert_eq!(joins(&fx)[&ids[0]].members.len(), 2);
    }

    #[test]
    fn a_new_member_parked_too_long_is_dropped_but_not_at_the_deadline_that_includes_it() {
        let slow = |r: JoinRequest| JoinRequest {
            rebalance_timeout_ms: 300_000,
            ..r
        };
        let (mut g, ids) = stable_group(vec![slow(req("", "a"))]);
        // a goes quiet but heartbeats; n's join waits on a for the whole rebalance timeout.
        let n = parked(&g.join(slow(req("", "n")), 1_000, false));
        for t in (2_000..301_000).step_by(5_000) {
            assert_eq!(hb(&mut g, &ids[0], 1, t), ErrorCode::REBALANCE_IN_PROGRESS);
            g.tick(t);
        }
        let answers = joins(&g.tick(301_000));
        assert_eq!(answers[&n].error, ErrorCode::NONE);
        assert_eq!(answers[&n].generation_id, 2);
        assert_eq!(g.leader(), Some(n.as_str()));

        // In a group stuck waiting on the initial delay's deadline, the new-member timeout
        // applies on its own.
        let mut g = Group::new(
            "g",
            GroupConfig {
                new_member_join_timeout_ms: 1_000,
                ..config(3_000)
            },
        );
        let a = parked(&g.join(req("", "a"), 0, false));
        let fx = g.tick(1_000);
        assert_eq!(joins(&fx)[&a].error, ErrorCode::UNKNOWN_MEMBER_ID);
        assert!(g.member(&a).is_none());
    }

    #[test]
    fn delete_dead_and_unload() {
        let (mut g, ids) = stable_group(vec![req("", "a")]);
        assert_eq!(g.delete(), Err(ErrorCode::NON_EMPTY_GROUP));
        let (_, _) = g.leave(
            LeaveRequest {
                members: vec![LeavingMember {
                    member_id: ids[0].clone(),
                    group_instance_id: None,
                }],
            },
            100,
        );
        assert!(g.is_empty());
        assert_eq!(g.delete(), Ok(()));
        assert_eq!(g.describe().state, "Dead");
        assert_eq!(g.delete(), Err(ErrorCode::GROUP_ID_NOT_FOUND));
        assert_eq!(
            answered(g.join(req("", "b"), 200, false)).0.error,
            ErrorCode::COORDINATOR_NOT_AVAILABLE
        );
        assert_eq!(
            hb(&mut g, &ids[0], 1, 200),
            ErrorCode::COORDINATOR_NOT_AVAILABLE
        );

        let mut g = Group::new("g", config(3_000));
        let a = parked(&g.join(req("", "a"), 0, false));
        let fx = g.unload();
        assert_eq!(joins(&fx)[&a].error, ErrorCode::NOT_COORDINATOR);
        assert_eq!(g.state(), GroupState::Dead);
    }

    #[test]
    fn describe_hides_metadata_until_stable() {
        let mut g = Group::new("g", config(0));
        let a = parked(&g.join(req("", "a"), 0, false));
        g.tick(0);
        let d = g.describe();
        assert_eq!(d.state, "CompletingRebalance");
        assert_eq!(d.protocol_name, "");
        assert_eq!(d.members.len(), 1);
        assert_eq!(d.members[0].member_id, a);
        assert!(d.members[0].metadata.is_empty());
        assert_eq!(
            GroupState::PreparingRebalance.as_str(),
            "PreparingRebalance"
        );
    }

    #[test]
    fn offset_commit_validation() {
        let mut g = Group::new("g", config(0));
        // A simple (assign) consumer commits to an Empty group.
        assert_eq!(g.validate_offset_commit(-1, "", None, 0), ErrorCode::NONE);
        let a = parked(&g.join(req("", "a"), 0, false));
        g.tick(0);
        assert_eq!(
            g.validate_offset_commit(1, &a, None, 10),
            ErrorCode::REBALANCE_IN_PROGRESS
        );
        answered(g.sync(sync_req(&a, 1, Vec::new()), 20));
        assert_eq!(g.validate_offset_commit(1, &a, None, 30), ErrorCode::NONE);
        assert_eq!(
            g.validate_offset_commit(0, &a, None, 30),
            ErrorCode::ILLEGAL_GENERATION
        );
        assert_eq!(
            g.validate_offset_commit(1, "stranger", None, 30),
            ErrorCode::UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            g.validate_offset_commit(-1, "", None, 30),
            ErrorCode::UNKNOWN_MEMBER_ID
        );
        // The commit counts as a sign of life.
        assert_eq!(g.member(&a).map(|m| m.last_heartbeat_ms), Some(30));
    }
}
