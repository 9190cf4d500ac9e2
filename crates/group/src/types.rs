//! The coordinator's configuration, requests, responses and views: plain
//! Rust types the network front maps Kafka's wire types to and from.

use bytes::Bytes;

use keel_error_codes as error_code;

/// Kafka's `group.*` broker settings, plus how member ids are made unique.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// A JoinGroup with a smaller session timeout is refused
    /// (`group.min.session.timeout.ms`).
    pub group_min_session_timeout_ms: u64,
    /// A JoinGroup with a larger session timeout is refused
    /// (`group.max.session.timeout.ms`).
    pub group_max_session_timeout_ms: u64,
    /// How long the first rebalance of an Empty group waits for more members
    /// (`group.initial.rebalance.delay.ms`); 0 turns the wait off.
    pub group_initial_rebalance_delay_ms: u64,
    /// A new member whose JoinGroup waits this long is dropped (Kafka's
    /// `NewMemberJoinTimeoutMs`): it cannot heartbeat yet, and a client that
    /// gave up would otherwise hold the rebalance until its timeout.
    pub new_member_join_timeout_ms: u64,
    /// Part of every generated member id. Must differ between coordinator
    /// instances that may serve the same group (e.g. node id and incarnation,
    /// or a draw from the node's RNG): after a failover, a client still
    /// holding an id from the old coordinator must get UNKNOWN_MEMBER_ID, not
    /// be mistaken for a member the new coordinator named the same.
    pub member_id_epoch: u64,
}

impl Default for Config {
    /// Kafka's defaults.
    fn default() -> Self {
        Config {
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            new_member_join_timeout_ms: 300_000,
            member_id_epoch: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("group_min_session_timeout_ms {min_ms} exceeds group_max_session_timeout_ms {max_ms}")]
    SessionTimeoutBounds { min_ms: u64, max_ms: u64 },
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return Err(ConfigError::SessionTimeoutBounds { min_ms: self.group_min_session_timeout_ms, max_ms: self.group_max_session_timeout_ms });
        }
        Ok(())
    }
}

/// Kafka's group states. `Dead` is only ever reported for a group the
/// coordinator does not hold (unknown, removed, or dropped by `clear`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports in DescribeGroups and ListGroups.
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

/// One protocol a member supports (e.g. "range" with its subscription).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// JoinGroup v0..v7.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member that has no id yet.
    pub member_id: String,
    /// Static membership is not supported: `Some` is answered UNSUPPORTED_VERSION.
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    /// JoinGroup v0 has none: the front passes the session timeout, as Kafka does.
    pub rebalance_timeout_ms: u64,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a member without an id is given one with
    /// MEMBER_ID_REQUIRED and must join again with it.
    pub require_known_member_id: bool,
}

/// One member as the leader sees it in its JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResponseMember {
    pub member_id: String,
    /// The member's metadata for the chosen protocol.
    pub metadata: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    pub error_code: i16,
    /// -1 on error.
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Empty on error.
    pub leader_id: String,
    /// The member's id; the generated one with MEMBER_ID_REQUIRED.
    pub member_id: String,
    /// Every member, for the leader only; empty for followers.
    pub members: Vec<JoinResponseMember>,
}

impl JoinResponse {
    pub fn error(member_id: &str, error_code: i16) -> JoinResponse {
        assert!(error_code != error_code::NONE);
        JoinResponse {
            error_code,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader_id: String::new(),
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

/// One member's assignment, as the leader sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberAssignment {
    pub member_id: String,
    pub assignment: Bytes,
}

/// SyncGroup v0..v5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    /// `Some` is answered UNSUPPORTED_VERSION.
    pub group_instance_id: Option<String>,
    /// SyncGroup v5+; checked against the group's when present.
    pub protocol_type: Option<String>,
    /// SyncGroup v5+; checked against the group's when present.
    pub protocol_name: Option<String>,
    /// The leader's assignments; followers send none. A member listed twice
    /// gets the later entry; members not listed get an empty assignment.
    pub assignments: Vec<MemberAssignment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    pub error_code: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error_code: i16) -> SyncResponse {
        assert!(error_code != error_code::NONE);
        SyncResponse { error_code, protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// Heartbeat v0..v4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    /// `Some` is answered UNSUPPORTED_VERSION.
    pub group_instance_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub error_code: i16,
}

/// One member leaving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveMember {
    pub member_id: String,
    /// `Some` is answered UNSUPPORTED_VERSION for this member.
    pub group_instance_id: Option<String>,
}

/// LeaveGroup: v0..v2 carry one member (the front makes a one-element
/// list), v3+ a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveRequest {
    pub group_id: String,
    pub members: Vec<LeaveMember>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveMemberResponse {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub error_code: i16,
}

/// For LeaveGroup v0..v2 the front answers the single member's error as the
/// top-level error when `error_code` is NONE, as Kafka does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveResponse {
    pub error_code: i16,
    /// One entry per requested member, in request order.
    pub members: Vec<LeaveMemberResponse>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(HeartbeatResponse),
    Leave(LeaveResponse),
}

impl Response {
    pub fn error_code(&self) -> i16 {
        match self {
            Response::Join(r) => r.error_code,
            Response::Sync(r) => r.error_code,
            Response::Heartbeat(r) => r.error_code,
            Response::Leave(r) => r.error_code,
        }
    }
}

/// What a call produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The answer to the request the caller tagged `request_id`.
    Reply { request_id: u64, response: Response },
    /// Make `group` durable, so that a coordinator that takes over carries
    /// on from it (`Coordinator::load`). `store_id` grows with every store
    /// of this coordinator, so later stores of a group are newer; the caller
    /// reports the outcome with `Coordinator::stored` or
    /// `Coordinator::store_failed`. A generation's assignment is handed out
    /// only once its store succeeded.
    Store { store_id: u64, group: StoredGroup },
}

/// One member of a group as it is made durable: everything a coordinator
/// needs to keep it in its generation after a failover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMember {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    /// The leader's assignment for this member in the stored generation.
    pub assignment: Bytes,
}

/// A group as it is made durable (Kafka's GroupMetadata record): either a
/// settled generation (members with their assignments) or an Empty group
/// with the generation it reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredGroup {
    pub group_id: String,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    /// Some exactly when there are members.
    pub protocol_name: Option<String>,
    /// Some exactly when there are members: the first of them.
    pub leader_id: Option<String>,
    /// In the order they joined, the leader first.
    pub members: Vec<StoredMember>,
}

/// A stored group that `Coordinator::load` refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stored group `{group_id}` cannot be loaded: {reason}")]
pub struct LoadError {
    pub group_id: String,
    pub reason: String,
}

/// One member in DescribeGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata for the chosen protocol; empty unless Stable (as Kafka).
    pub metadata: Bytes,
    /// Empty unless Stable (as Kafka).
    pub assignment: Bytes,
}

/// DescribeGroups' view of one group, plus the generation and leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    /// Empty if none.
    pub protocol_type: String,
    /// Empty unless Stable (as Kafka).
    pub protocol_name: String,
    /// Not in DescribeGroups; for tests and the simulator's checks.
    pub generation_id: i32,
    /// Not in DescribeGroups; for tests and the simulator's checks.
    pub leader_id: Option<String>,
    /// In member id order.
    pub members: Vec<MemberDescription>,
}

/// ListGroups' view of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupOverview {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}
