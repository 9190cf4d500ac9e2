//! Kafka's numeric error codes (`org.apache.kafka.common.protocol.Errors`)
//! that the group coordinator answers with.

pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const NONE: i16 = 0;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const INVALID_GROUP_ID: i16 = 24;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
/// Answered to any request carrying a `group_instance_id`: static membership
/// is not supported (Kafka's answer before static membership was enabled).
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;
/// Not produced: static membership is not supported. Listed so the front
/// can name it.
pub const FENCED_INSTANCE_ID: i16 = 82;
