//! Kafka's numeric error codes (`org.apache.kafka.common.protocol.Errors`)
//! that Keel answers with or acts on, under Kafka's names: the one table
//! every Keel crate uses. It is a leaf crate so that the sans-io cores
//! (`keel-group`, `keel-repl`) and the Kafka front (`keel-kafka`) share it
//! without depending on one another.

/// States each code once and, for the tests, lists them all.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $code:literal,)*) => {
        $($(#[$doc])* pub const $name: i16 = $code;)*

        /// Every code of the table with its name, in table order.
        #[cfg(test)]
        const ALL: &[(&str, i16)] = &[$((stringify!($name), $code),)*];
    };
}

error_codes! {
    UNKNOWN_SERVER_ERROR = -1,
    NONE = 0,
    OFFSET_OUT_OF_RANGE = 1,
    CORRUPT_MESSAGE = 2,
    UNKNOWN_TOPIC_OR_PARTITION = 3,
    LEADER_NOT_AVAILABLE = 5,
    NOT_LEADER_OR_FOLLOWER = 6,
    REQUEST_TIMED_OUT = 7,
    BROKER_NOT_AVAILABLE = 8,
    MESSAGE_TOO_LARGE = 10,
    OFFSET_METADATA_TOO_LARGE = 12,
    NETWORK_EXCEPTION = 13,
    COORDINATOR_LOAD_IN_PROGRESS = 14,
    COORDINATOR_NOT_AVAILABLE = 15,
    NOT_COORDINATOR = 16,
    INVALID_TOPIC_EXCEPTION = 17,
    NOT_ENOUGH_REPLICAS = 19,
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20,
    INVALID_REQUIRED_ACKS = 21,
    ILLEGAL_GENERATION = 22,
    INCONSISTENT_GROUP_PROTOCOL = 23,
    INVALID_GROUP_ID = 24,
    UNKNOWN_MEMBER_ID = 25,
    INVALID_SESSION_TIMEOUT = 26,
    REBALANCE_IN_PROGRESS = 27,
    INVALID_COMMIT_OFFSET_SIZE = 28,
    /// Also the group coordinator's answer to any request carrying a
    /// `group_instance_id`: static membership is not supported (Kafka's
    /// answer before static membership was enabled).
    UNSUPPORTED_VERSION = 35,
    TOPIC_ALREADY_EXISTS = 36,
    INVALID_PARTITIONS = 37,
    INVALID_REPLICATION_FACTOR = 38,
    INVALID_REPLICA_ASSIGNMENT = 39,
    INVALID_CONFIG = 40,
    INVALID_REQUEST = 42,
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45,
    INVALID_PRODUCER_EPOCH = 47,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53,
    KAFKA_STORAGE_ERROR = 56,
    NON_EMPTY_GROUP = 68,
    GROUP_ID_NOT_FOUND = 69,
    FENCED_LEADER_EPOCH = 74,
    UNKNOWN_LEADER_EPOCH = 75,
    UNSUPPORTED_COMPRESSION_TYPE = 76,
    MEMBER_ID_REQUIRED = 79,
    /// Never answered (static membership is not supported); listed so that
    /// the front can name it.
    FENCED_INSTANCE_ID = 82,
    INVALID_RECORD = 87,
    UNKNOWN_TOPIC_ID = 100,
}

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;

    /// `UNKNOWN_TOPIC_OR_PARTITION` from `UnknownTopicOrPartition`.
    fn screaming_snake(camel: &str) -> String {
        let mut name = String::new();
        for (i, c) in camel.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        name
    }

    #[test]
    fn every_code_has_kafkas_number_under_kafkas_name() {
        for &(name, code) in super::ALL {
            let expected = match ResponseError::try_from_code(code) {
                None => "NONE".to_string(),
                Some(ResponseError::Unknown(_)) => panic!("{name} = {code} is not a Kafka error code"),
                Some(error) => screaming_snake(&error.to_string()),
            };
            assert_eq!(name, expected, "code {code}");
        }
    }

    #[test]
    fn codes_are_listed_once_in_ascending_order() {
        for pair in super::ALL.windows(2) {
            assert!(pair[0].1 < pair[1].1, "{} = {} before {} = {}", pair[0].0, pair[0].1, pair[1].0, pair[1].1);
        }
    }
}
