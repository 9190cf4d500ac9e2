//! The APIs and versions Keel serves. ApiVersions advertises exactly this
//! table; a request outside it is answered UNSUPPORTED_VERSION.

use kafka_protocol::messages::ApiKey;

/// (api, lowest version, highest version) implemented end to end. Fetch
/// stops at v12 and Produce at v11: later versions name topics by id, and
/// Keel's topics have names only. ListOffsets stops at v7 (no tiered storage).
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
];

/// Whether Keel serves `api_key` at `api_version`.
pub fn is_supported(api_key: i16, api_version: i16) -> bool {
    SUPPORTED_APIS.iter().any(|(key, min, max)| *key as i16 == api_key && (*min..=*max).contains(&api_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_version_is_one_the_protocol_crate_can_decode_and_encode() {
        for (key, min, max) in SUPPORTED_APIS {
            let valid = key.valid_versions();
            assert!(min <= max, "{key:?}");
            assert!(*min >= valid.min, "{key:?} min {min} < {}", valid.min);
            assert!(*max <= valid.max, "{key:?} max {max} > {}", valid.max);
        }
    }

    #[test]
    fn unknown_keys_and_versions_are_not_supported() {
        assert!(is_supported(ApiKey::Fetch as i16, 12));
        assert!(!is_supported(ApiKey::Fetch as i16, 13));
        assert!(!is_supported(ApiKey::Fetch as i16, 3));
        assert!(!is_supported(ApiKey::JoinGroup as i16, 8));
        assert!(!is_supported(ApiKey::EndTxn as i16, 0));
        assert!(!is_supported(999, 0));
        assert!(!is_supported(-1, 0));
    }
}
