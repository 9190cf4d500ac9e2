//! The Kafka listener: one task per connection, one request at a time per
//! connection (as Kafka does: a connection is muted while its request is in
//! flight), so responses leave in request order and a producer's batches to
//! a partition are appended in the order it sent them.
//!
//! Every request is counted in `KafkaMetrics` (API, latency from the whole
//! frame read to the response written, request-level error code).
//!
//! Draining (`serve_until`, on SIGTERM): when the `StopSignal` fires the
//! listener stops accepting, a connection waiting for its next request is
//! closed, a request in flight is finished and answered before its connection
//! closes, and after `drain_timeout` whatever is left is aborted. When
//! `serve_until` returns, every connection task (and so every clone of the
//! `KafkaFront` with its driver handles) is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_io::Clock;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::apis::is_supported;
use crate::codec::{peek_header, read_frame, FrameError, Inbound};
use crate::front::{KafkaFront, Reply};
use crate::metrics::{KafkaMetrics, UNKNOWN_API_KEY};
use keel_error_codes as error_code;

/// A response frame of exactly this many bytes is a v0 response header
/// (correlation id) and a 2-byte body, and a 2-byte response body is always
/// an error code: `codec::encode_bare_error`'s answers and the v0 bodies that
/// are nothing but an error code. Other bodies are longer (every other field
/// layout begins with an array, a 4-byte field or a flexible header's tag byte).
const ERROR_ONLY_FRAME_BYTES: usize = 10;

/// Drains when a connection lingers; see `ServeOptions::drain_timeout`.
pub const DRAIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// A one-way stop signal shared by listeners and their connections.
#[derive(Clone, Default)]
pub struct StopSignal {
    inner: Arc<StopInner>,
}

#[derive(Default)]
struct StopInner {
    stopped: AtomicBool,
    // A Notify, not a watch: tokio's watch picks a waker slot with its thread
    // RNG, which would break replay under madsim.
    notify: Notify,
}

impl StopSignal {
    pub fn new() -> Self {
        StopSignal::default()
    }

    /// Fires the signal: every `stopped()` returns, now and later.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// Returns once `stop` was called (at once if it already was).
    pub async fn stopped(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a stop between the two is not missed.
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

/// What the listener records into and when it stops.
#[derive(Clone)]
pub struct ServeOptions {
    pub metrics: Arc<KafkaMetrics>,
    pub clock: Clock,
    pub stop: StopSignal,
    /// After the stop signal, requests in flight get this long to finish;
    /// then their connections are aborted.
    pub drain_timeout: Duration,
}

impl ServeOptions {
    /// Fresh metrics, a stop signal nobody fires yet, the default drain timeout.
    pub fn new(clock: Clock) -> Self {
        ServeOptions { metrics: Arc::new(KafkaMetrics::new()), clock, stop: StopSignal::new(), drain_timeout: DRAIN_TIMEOUT_DEFAULT }
    }
}

/// How draining went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Tasks still running when the stop signal fired.
    pub tasks_running: usize,
    /// Of those, the ones still running at the drain timeout, aborted.
    pub tasks_aborted: usize,
}

/// Serves until `options.stop` fires, then drains (see the module docs).
pub async fn serve_until(listener: TcpListener, front: KafkaFront, options: ServeOptions) -> Drained {
    let front = front.with_metrics(Arc::clone(&options.metrics));
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = options.stop.stopped() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.retain(|connection| !connection.is_finished());
                let (front, options) = (front.clone(), options.clone());
                connections.push(tokio::spawn(async move {
                    let _open = options.metrics.connection_opened();
                    if let Err(reason) = serve_connection_until(stream, &front, &options).await {
                        tracing::debug!(%peer, %reason, "Kafka connection closed");
                    }
                }));
            }
            Err(error) => tracing::warn!(%error, "Kafka listener accept failed"),
        }
    }
    // New connections are refused from here on.
    drop(listener);
    let drained = drain_tasks(connections, options.drain_timeout).await;
    tracing::info!(connections_running = drained.tasks_running, connections_aborted = drained.tasks_aborted, "Kafka listener drained");
    drained
}

/// Waits up to `timeout` for `tasks` to finish, then aborts the rest and
/// waits for them to be gone (so whatever they hold is dropped on return).
pub async fn drain_tasks(mut tasks: Vec<JoinHandle<()>>, timeout: Duration) -> Drained {
    tasks.retain(|task| !task.is_finished());
    let tasks_running = tasks.len();
    let all_finished = tokio::time::timeout(timeout, async {
        for task in tasks.iter_mut() {
            if !task.is_finished() {
                let _ = task.await;
            }
        }
    })
    .await
    .is_ok();
    let mut tasks_aborted = 0;
    if !all_finished {
        for task in tasks.iter_mut().filter(|task| !task.is_finished()) {
            task.abort();
            tasks_aborted += 1;
            let _ = task.await;
        }
    }
    Drained { tasks_running, tasks_aborted }
}

/// What the listener knows of a request before the front handles it.
struct RequestSeen {
    api_key: i16,
    oversized: bool,
    unsupported: bool,
}

impl RequestSeen {
    fn of(inbound: &Inbound) -> Self {
        let (head, oversized) = match inbound {
            Inbound::Frame(frame) => (frame, false),
            Inbound::Oversized { head, .. } => (head, true),
        };
        match peek_header(head) {
            Some(prefix) => RequestSeen { api_key: prefix.api_key, oversized, unsupported: !is_supported(prefix.api_key, prefix.api_version) },
            None => RequestSeen { api_key: UNKNOWN_API_KEY, oversized, unsupported: false },
        }
    }

    /// The request-level error code the reply carries, if any.
    fn error_code(&self, reply: &Reply) -> Option<i16> {
        let Reply::Send(bytes) = reply else { return None };
        if self.oversized {
            Some(error_code::MESSAGE_TOO_LARGE)
        } else if self.unsupported {
            Some(error_code::UNSUPPORTED_VERSION)
        } else if bytes.len() == ERROR_ONLY_FRAME_BYTES {
            Some(i16::from_be_bytes([bytes[8], bytes[9]])).filter(|code| *code != error_code::NONE)
        } else {
            None
        }
    }
}

/// Serves one connection until the client closes it (`Ok`), the stop signal
/// fires between two requests (`Ok`), or it cannot go on (`Err` with why).
async fn serve_connection_until(mut stream: TcpStream, front: &KafkaFront, options: &ServeOptions) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let frame_bytes_max = front.config().frame_bytes_max;
    let client_host = stream.peer_addr().map(|peer| format!("/{}", peer.ip())).unwrap_or_default();
    loop {
        // Draining closes a connection between requests, never inside one.
        let read = tokio::select! {
            biased;
            _ = options.stop.stopped() => return Ok(()),
            read = read_frame(&mut stream, frame_bytes_max) => read,
        };
        let inbound = match read {
            Ok(Some(inbound)) => inbound,
            Ok(None) => return Ok(()),
            Err(error @ FrameError::NegativeSize(_)) => {
                tracing::warn!(%error, "Kafka connection: frame boundary lost");
                options.metrics.connection_closed_by_broker();
                return Err(error.to_string());
            }
            // A client that goes away mid-frame is routine, not a warning.
            Err(error) => return Err(error.to_string()),
        };
        let started = options.clock.now();
        let in_flight = options.metrics.request_started();
        let seen = RequestSeen::of(&inbound);
        let reply = front.handle_from(&client_host, inbound).await;
        let error_code = seen.error_code(&reply);
        let outcome = match reply {
            // madsim's TcpStream buffers until flushed (real tokio's sends on write).
            Reply::Send(bytes) => match stream.write_all(&bytes).await {
                Ok(()) => stream.flush().await.map_err(|error| format!("sending a response: {error}")),
                Err(error) => Err(format!("writing a response: {error}")),
            },
            Reply::Nothing => Ok(()),
            Reply::Close(reason) => {
                tracing::warn!(%reason, "Kafka connection closed by the broker");
                options.metrics.connection_closed_by_broker();
                Err(reason)
            }
        };
        options.metrics.record_request(seen.api_key, options.clock.now().saturating_since(started), error_code);
        drop(in_flight);
        outcome?;
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::*;

    use super::*;
    use crate::apis::SUPPORTED_APIS;
    use crate::codec::{encode_bare_error, encode_response};

    /// The smallest response of each served API (every field at its default).
    fn smallest_response(api_key: ApiKey) -> Option<ResponseKind> {
        Some(match api_key {
            ApiKey::Produce => ResponseKind::Produce(ProduceResponse::default()),
            ApiKey::Fetch => ResponseKind::Fetch(FetchResponse::default()),
            ApiKey::ListOffsets => ResponseKind::ListOffsets(ListOffsetsResponse::default()),
            ApiKey::Metadata => ResponseKind::Metadata(MetadataResponse::default()),
            ApiKey::ApiVersions => ResponseKind::ApiVersions(ApiVersionsResponse::default()),
            ApiKey::CreateTopics => ResponseKind::CreateTopics(CreateTopicsResponse::default()),
            ApiKey::OffsetForLeaderEpoch => ResponseKind::OffsetForLeaderEpoch(OffsetForLeaderEpochResponse::default()),
            ApiKey::DescribeConfigs => ResponseKind::DescribeConfigs(DescribeConfigsResponse::default()),
            ApiKey::DescribeCluster => ResponseKind::DescribeCluster(DescribeClusterResponse::default()),
            ApiKey::FindCoordinator => ResponseKind::FindCoordinator(FindCoordinatorResponse::default()),
            ApiKey::JoinGroup => ResponseKind::JoinGroup(JoinGroupResponse::default()),
            ApiKey::SyncGroup => ResponseKind::SyncGroup(SyncGroupResponse::default()),
            ApiKey::Heartbeat => ResponseKind::Heartbeat(HeartbeatResponse::default()),
            ApiKey::LeaveGroup => ResponseKind::LeaveGroup(LeaveGroupResponse::default()),
            ApiKey::OffsetCommit => ResponseKind::OffsetCommit(OffsetCommitResponse::default()),
            ApiKey::OffsetFetch => ResponseKind::OffsetFetch(OffsetFetchResponse::default()),
            ApiKey::ListGroups => ResponseKind::ListGroups(ListGroupsResponse::default()),
            ApiKey::DescribeGroups => ResponseKind::DescribeGroups(DescribeGroupsResponse::default()),
            ApiKey::InitProducerId => ResponseKind::InitProducerId(InitProducerIdResponse::default()),
            ApiKey::DeleteTopics => ResponseKind::DeleteTopics(DeleteTopicsResponse::default()),
            ApiKey::CreatePartitions => ResponseKind::CreatePartitions(CreatePartitionsResponse::default()),
            _ => return None,
        })
    }

    #[test]
    fn only_error_only_responses_are_counted_as_request_errors() {
        let seen = RequestSeen { api_key: ApiKey::Fetch as i16, oversized: false, unsupported: false };
        let bare = encode_bare_error(7, error_code::INVALID_REQUEST);
        assert_eq!(bare.len(), ERROR_ONLY_FRAME_BYTES);
        assert_eq!(seen.error_code(&Reply::Send(bare)), Some(error_code::INVALID_REQUEST));
        // A successful response of a served API is never read as an error,
        // whatever its version: its smallest encoding is not error-only, or
        // its error-only body says 0 (no error).
        for (api_key, version_min, version_max) in SUPPORTED_APIS {
            let Some(response) = smallest_response(*api_key) else { continue };
            for version in *version_min..=*version_max {
                // (Some defaults do not encode in every version; those cannot be answered either.)
                let Ok(bytes) = encode_response(*api_key, version, 7, &response) else { continue };
                let seen = RequestSeen { api_key: *api_key as i16, oversized: false, unsupported: false };
                assert_eq!(seen.error_code(&Reply::Send(bytes)), None, "{api_key:?} v{version}");
            }
        }
        let unsupported = RequestSeen { api_key: 99, oversized: false, unsupported: true };
        assert_eq!(unsupported.error_code(&Reply::Send(encode_bare_error(1, error_code::UNSUPPORTED_VERSION))), Some(error_code::UNSUPPORTED_VERSION));
        assert_eq!(unsupported.error_code(&Reply::Nothing), None);
    }
}
