//! Topic administration and producer ids: DeleteTopics, CreatePartitions and
//! InitProducerId, each a metadata Raft operation (`keel_meta::admin_ops`).

use std::collections::BTreeSet;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, DeleteTopicsRequest, DeleteTopicsResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId,
};

use crate::front::{create_error_code, str_bytes, KafkaFront};
use keel_error_codes as code;

/// How many producer ids a broker takes from the metadata at a time (Kafka's
/// block size, KIP-730): one Raft write per thousand producers.
pub const PRODUCER_ID_BLOCK: u32 = 1000;

impl KafkaFront {
    fn admin_budget_ms(&self, timeout_ms: i32) -> u64 {
        u64::try_from(timeout_ms.max(0)).unwrap_or(0).clamp(1, self.config.create_budget_ms)
    }

    pub(crate) async fn delete_topics(&self, version: i16, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
        let budget_ms = self.admin_budget_ms(request.timeout_ms);
        // v6 names topics in `topics` (by name or id); earlier versions in `topic_names`.
        let named: Vec<Option<String>> = if version >= 6 {
            request.topics.iter().map(|t| t.name.as_ref().map(|n| n.0.as_str().to_string())).collect()
        } else {
            request.topic_names.iter().map(|n| Some(n.0.as_str().to_string())).collect()
        };
        let mut response = DeleteTopicsResponse::default();
        let mut seen = BTreeSet::new();
        for (index, name) in named.into_iter().enumerate() {
            let mut entry = DeletableTopicResult::default();
            if version >= 6 {
                entry.topic_id = request.topics[index].topic_id;
            }
            let outcome = match &name {
                None => Err((code::UNKNOWN_TOPIC_ID, "topics are named, not identified, in Keel: delete by name".to_string())),
                Some(name) if !seen.insert(name.clone()) => Err((code::INVALID_REQUEST, format!("topic {name} is named twice in one request"))),
                Some(name) => self.meta.delete_topic(name, budget_ms).await.map_err(|error| (create_error_code(&error), error.to_string())),
            };
            entry.name = name.as_deref().map(crate::front::topic_name);
            match outcome {
                Ok(_) => tracing::info!(topic = name.as_deref().unwrap_or(""), "DeleteTopics"),
                Err((error_code, message)) => {
                    tracing::debug!(topic = name.as_deref().unwrap_or(""), error_code, %message, "DeleteTopics refused");
                    entry.error_code = error_code;
                    if version >= 5 {
                        entry.error_message = Some(str_bytes(&message));
                    }
                }
            }
            response.responses.push(entry);
        }
        response
    }

    pub(crate) async fn create_partitions(&self, _version: i16, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
        let budget_ms = self.admin_budget_ms(request.timeout_ms);
        let mut response = CreatePartitionsResponse::default();
        let mut seen = BTreeSet::new();
        for topic in request.topics {
            let name = topic.name.0.as_str().to_string();
            let outcome = if !seen.insert(name.clone()) {
                Err((code::INVALID_REQUEST, format!("topic {name} is named twice in one request")))
            } else if topic.assignments.is_some() {
                Err((code::INVALID_REPLICA_ASSIGNMENT, "manual replica assignment is not supported; give a count".to_string()))
            } else {
                match u32::try_from(topic.count) {
                    Ok(count) => self
                        .meta
                        .create_partitions(&name, count, request.validate_only, budget_ms)
                        .await
                        .map_err(|error| (create_error_code(&error), error.to_string())),
                    Err(_) => Err((code::INVALID_PARTITIONS, format!("{} partitions: a topic needs at least 1", topic.count))),
                }
            };
            let mut entry = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
            match outcome {
                Ok(_) => tracing::info!(topic = %name, count = topic.count, validate_only = request.validate_only, "CreatePartitions"),
                Err((error_code, message)) => {
                    tracing::debug!(topic = %name, error_code, %message, "CreatePartitions refused");
                    entry.error_code = error_code;
                    entry.error_message = Some(str_bytes(&message));
                }
            }
            response.results.push(entry);
        }
        response
    }

    /// A producer id for an idempotent producer (epoch 0). A producer that
    /// asks again with its id and epoch (KIP-360, after it lost track of its
    /// sequences) gets a new id: every id starts its sequences afresh.
    pub(crate) async fn init_producer_id(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        let mut response = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
        if request.transactional_id.is_some() {
            tracing::debug!("InitProducerId with a transactional id refused: Keel has no transactions");
            response.error_code = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
            return response;
        }
        let mut ids = self.producer_ids.lock().await;
        if ids.is_empty() {
            match self.meta.allocate_producer_ids(self.config.node_id, PRODUCER_ID_BLOCK, self.config.create_budget_ms).await {
                Ok(block) => *ids = block,
                Err(error) => {
                    // Retriable for the client: it asks again after a backoff.
                    tracing::warn!(%error, "no producer id block");
                    response.error_code = code::COORDINATOR_NOT_AVAILABLE;
                    return response;
                }
            }
        }
        let producer_id = ids.next().expect("a fresh block is not empty");
        tracing::debug!(producer_id, "InitProducerId");
        response.producer_id = ProducerId(i64::try_from(producer_id).expect("producer ids fit int64"));
        response.producer_epoch = 0;
        response
    }
}
