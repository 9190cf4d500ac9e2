//! Kafka's consumer-group coordinator for the classic (eager) rebalance
//! protocol, as a sans-io state machine.
//!
//! `Coordinator` follows Kafka's `GroupCoordinator` / `GroupMetadata`
//! (JoinGroup v0..v7, SyncGroup, Heartbeat, LeaveGroup v0..v4, the
//! OffsetCommit membership check, DeleteGroups). It does no I/O and reads no
//! clock: every call takes `now_ms` (the node's monotonic clock) and returns
//! `Output`s. The network front maps Kafka's request and response types to
//! the plain types in `types` and back.
//!
//! # Waiting requests
//!
//! JoinGroup waits until every known member rejoined (or the rebalance
//! timeout passed), and a follower's SyncGroup waits for the leader's. Each
//! request therefore carries a caller-chosen `request_id`, and its answer is
//! an `Output::Reply` with that id, returned by the call itself or by a later
//! call (another member's request, `tick`, `clear`). Every request is answered
//! exactly once: immediately, or later, or by `clear` (NOT_COORDINATOR).
//! A `request_id` must not be reused while its request is still waiting.
//!
//! # Timers
//!
//! Requests never fire timers. The driver calls `tick(now_ms)` whenever
//! `now_ms >= next_deadline_ms()`; `tick` handles every due deadline
//! earliest first. A request arriving after a deadline but before the `tick`
//! is handled as if it came first, as in Kafka, whose purgatory timers also
//! race with request handling.
//!
//! # Deviations from Kafka
//!
//! - Static membership (`group.instance.id`, KIP-345) is not supported: any
//!   request carrying a `group_instance_id` is answered UNSUPPORTED_VERSION
//!   (35), which is what Kafka brokers answered before static membership was
//!   enabled (in LeaveGroup v3+, per member). Versions that have the field
//!   (JoinGroup v5+, SyncGroup v3+, Heartbeat v3+, LeaveGroup v3+,
//!   OffsetCommit v7+) work as long as it is null, which it is unless the
//!   client configured `group.instance.id`; the front passes it through.
//! - Member ids are `{client_id}-{member_id_epoch}-{counter}` instead of
//!   `{client_id}-{uuid}` (no randomness); `Config::member_id_epoch` keeps
//!   ids of different coordinator instances apart.
//! - A JoinGroup that supersedes a waiting JoinGroup of the same member, and
//!   a SyncGroup that supersedes a waiting SyncGroup, answer the older
//!   request REBALANCE_IN_PROGRESS (Kafka drops the older callback, leaving
//!   the request unanswered). Java clients retry a JoinGroup and rejoin after
//!   a SyncGroup on that error, keeping their member id.
//! - A member removed while its SyncGroup waits (LeaveGroup) gets
//!   UNKNOWN_MEMBER_ID on it (Kafka leaves it unanswered).
//! - Protocol compatibility of a rejoining member is checked against the
//!   other members only, so the group's candidate set can never become empty
//!   (Kafka counts the member's own old protocols and can reach a state where
//!   no protocol is common to all).
//! - Protocol votes that tie are broken by the leader's preference order
//!   (Kafka picks an arbitrary one out of a hash map).
//! - A JoinGroup that fails validation does not create the group (Kafka
//!   creates an empty one first).
//! - No `group.max.size` (GROUP_MAX_SIZE_REACHED), no JoinGroup v9
//!   `skip_assignment`. Groups are not expired: an Empty group stays until
//!   `remove_group` or `clear`.
//!
//! # Durable group state
//!
//! As Kafka writes a GroupMetadata record, the coordinator asks for a
//! group's state to be made durable (`Output::Store`) when the leader's
//! assignment of a generation arrives, and when a group becomes Empty. The
//! assignment is handed out only after the caller reports the store done
//! (`stored`); a failed store (`store_failed`) sends the members back to
//! JoinGroup. So every generation a member was given an assignment in is
//! durable, and a coordinator that takes over (`load`, on a new
//! `Coordinator`) continues from the stored groups: a Stable group keeps its
//! generation, members and assignments (each member's session starts anew at
//! the load), and its members carry on without rejoining. A rebalance that
//! was in progress is lost; its members rejoin the stored generation. The
//! caller owns offsets and where the stored groups live, and must make sure
//! no store of an earlier coordinator lands after a newer one loaded.
//! - Transactional offset commits are not distinguished (`validate_commit`
//!   implements the plain OffsetCommit rules).

mod coordinator;
mod group;
mod types;

pub use coordinator::Coordinator;
pub use types::{
    Config, ConfigError, GroupDescription, GroupOverview, GroupState, HeartbeatRequest, HeartbeatResponse, JoinRequest, JoinResponse, JoinResponseMember,
    LeaveMember, LeaveMemberResponse, LeaveRequest, LeaveResponse, LoadError, MemberAssignment, MemberDescription, Output, Protocol, Response, StoredGroup,
    StoredMember, SyncRequest, SyncResponse,
};
