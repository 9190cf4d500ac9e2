//! Replication messages between brokers (prost, Keel's own; no protoc).
//! A follower sends `FetchMessage` (frame kind `FRAME_KIND_FETCH`); the
//! leader answers `FetchResponseMessage` (`FRAME_KIND_FETCH_RESPONSE`).

/// Frame kind of a follower's fetch on the broker transport (kinds are allocated in keel-net).
pub const FRAME_KIND_FETCH: u8 = keel_net::FRAME_KIND_REPL_FETCH;
/// Frame kind of the leader's answer.
pub const FRAME_KIND_FETCH_RESPONSE: u8 = keel_net::FRAME_KIND_REPL_FETCH_RESPONSE;

#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchMessage {
    /// Echoed in the response: the follower accepts only the answer to its latest fetch.
    #[prost(uint64, tag = "1")]
    pub request_id: u64,
    #[prost(string, tag = "2")]
    pub topic: String,
    #[prost(uint32, tag = "3")]
    pub partition: u32,
    #[prost(uint32, tag = "4")]
    pub leader_epoch: u32,
    #[prost(uint64, tag = "5")]
    pub fetch_offset: u64,
    #[prost(uint32, optional, tag = "6")]
    pub last_fetched_epoch: Option<u32>,
    #[prost(uint32, tag = "7")]
    pub bytes_max: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchResponseMessage {
    #[prost(uint64, tag = "1")]
    pub request_id: u64,
    #[prost(string, tag = "2")]
    pub topic: String,
    #[prost(uint32, tag = "3")]
    pub partition: u32,
    /// The leader epoch the fetch named.
    #[prost(uint32, tag = "4")]
    pub leader_epoch: u32,
    /// Kafka error code; 0 when the fetch was served.
    #[prost(int32, tag = "5")]
    pub error_code: i32,
    #[prost(string, tag = "6")]
    pub error_message: String,
    #[prost(uint64, tag = "7")]
    pub high_watermark: u64,
    /// Set when the follower's log diverges: what this epoch wrote ends at `diverging_end_offset`.
    #[prost(uint32, optional, tag = "8")]
    pub diverging_epoch: Option<u32>,
    #[prost(uint64, optional, tag = "9")]
    pub diverging_end_offset: Option<u64>,
    /// Offset of the first record in `records`.
    #[prost(uint64, tag = "10")]
    pub base_offset: u64,
    /// Stored records exactly as in the leader's log (`stored` format).
    #[prost(bytes = "vec", repeated, tag = "11")]
    pub records: Vec<Vec<u8>>,
}
