//! A node's network endpoint: accepts peers, connects to peers, moves frames.
//!
//! Delivery is at-most-once: a frame in flight when a connection breaks is
//! lost, and the protocols above (Raft, replication fetches) retransmit.
//! Memory is bounded: each peer has a queue of `peer_queue_len` frames, and a
//! full queue is a `SendError::QueueFull` the caller sees, never a silent drop.
//! Every connection starts with a hello naming the cluster and the node; a
//! connection from another cluster or an unknown node is refused and logged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keel_io::{Clock, NodeRng};
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::frame::{read_frame, write_frame, FrameError};

/// Frame kind of the connection hello; reserved, callers use 1..=255.
const KIND_HELLO: u8 = 0;

#[derive(Clone, Debug)]
pub struct NetConfig {
    pub cluster_id: String,
    pub node_id: u64,
    pub frame_bytes_max: usize,
    pub peer_queue_len: usize,
    pub inbox_len: usize,
    pub reconnect_backoff_ms_min: u64,
    pub reconnect_backoff_ms_max: u64,
    pub hello_timeout_ms: u64,
}

impl NetConfig {
    pub fn new(cluster_id: &str, node_id: u64) -> Self {
        NetConfig {
            cluster_id: cluster_id.to_string(),
            node_id,
            frame_bytes_max: 16 * 1024 * 1024,
            peer_queue_len: 4096,
            inbox_len: 4096,
            reconnect_backoff_ms_min: 20,
            reconnect_backoff_ms_max: 1_000,
            hello_timeout_ms: 5_000,
        }
    }
}

/// A frame from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub from: u64,
    pub kind: u8,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("node {0} is not a configured peer")]
    UnknownPeer(u64),
    #[error("send queue to node {0} is full (peer slow or unreachable); retry later")]
    QueueFull(u64),
    #[error("frame kind 0 is reserved for the connection hello")]
    ReservedKind,
}

/// Counters, for metrics and for tests that must see a fault happen.
#[derive(Debug, Default)]
pub struct NetStats {
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub queue_full: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connection_errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn encode_hello(config: &NetConfig) -> Vec<u8> {
    let mut hello = config.node_id.to_le_bytes().to_vec();
    hello.extend_from_slice(config.cluster_id.as_bytes());
    hello
}

fn decode_hello(payload: &[u8]) -> Option<(u64, &[u8])> {
    let node_id = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    Some((node_id, &payload[8..]))
}

pub struct Endpoint {
    config: NetConfig,
    local_addr: String,
    clock: Clock,
    rng: NodeRng,
    allowed_peers: Arc<RwLock<BTreeSet<u64>>>,
    senders: BTreeMap<u64, mpsc::Sender<(u8, Vec<u8>)>>,
    tasks: Vec<JoinHandle<()>>,
    stats: Arc<NetStats>,
}

impl Endpoint {
    /// Listens on `listen_addr` (`host:port`, port 0 for any). Frames from
    /// accepted peers arrive on the returned receiver.
    pub async fn bind(config: NetConfig, listen_addr: &str, clock: Clock, rng: NodeRng) -> std::io::Result<(Endpoint, mpsc::Receiver<Inbound>)> {
        let listener = TcpListener::bind(listen_addr).await?;
        Endpoint::on_listener(config, listener, clock, rng)
    }

    /// Serves peers on a listener bound beforehand (a node binds every port
    /// before it touches its data dir, so a taken port changes nothing).
    pub fn on_listener(config: NetConfig, listener: TcpListener, clock: Clock, rng: NodeRng) -> std::io::Result<(Endpoint, mpsc::Receiver<Inbound>)> {
        let local_addr = listener.local_addr()?.to_string();
        let (inbox, inbox_receiver) = mpsc::channel(config.inbox_len);
        let allowed_peers = Arc::new(RwLock::new(BTreeSet::new()));
        let stats = Arc::new(NetStats::default());
        let accept = tokio::spawn(accept_loop(listener, config.clone(), Arc::clone(&allowed_peers), inbox, Arc::clone(&stats)));
        let endpoint = Endpoint { config, local_addr, clock, rng, allowed_peers, senders: BTreeMap::new(), tasks: vec![accept], stats };
        Ok((endpoint, inbox_receiver))
    }

    /// The address peers connect to (useful after binding port 0).
    pub fn local_addr(&self) -> &str {
        &self.local_addr
    }

    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Adds a peer: frames to it are sent over a connection this endpoint
    /// keeps open (reconnecting with backoff), and its connections are accepted.
    pub fn add_peer(&mut self, peer_id: u64, addr: &str) {
        assert_ne!(peer_id, self.config.node_id, "a node is not its own peer");
        self.allowed_peers.write().expect("peers lock").insert(peer_id);
        let (sender, queue) = mpsc::channel(self.config.peer_queue_len);
        self.senders.insert(peer_id, sender);
        let task = tokio::spawn(peer_loop(
            peer_id,
            addr.to_string(),
            queue,
            self.config.clone(),
            self.clock.clone(),
            self.rng.fork(peer_id),
            Arc::clone(&self.stats),
        ));
        self.tasks.push(task);
    }

    /// Queues a frame for `peer_id` without waiting.
    pub fn send(&self, peer_id: u64, kind: u8, payload: Vec<u8>) -> Result<(), SendError> {
        if kind == KIND_HELLO {
            return Err(SendError::ReservedKind);
        }
        let sender = self.senders.get(&peer_id).ok_or(SendError::UnknownPeer(peer_id))?;
        sender.try_send((kind, payload)).map_err(|_| {
            bump(&self.stats.queue_full);
            SendError::QueueFull(peer_id)
        })
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: NetConfig,
    allowed_peers: Arc<RwLock<BTreeSet<u64>>>,
    inbox: mpsc::Sender<Inbound>,
    stats: Arc<NetStats>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let remote = remote.to_string();
                tokio::spawn(serve_connection(stream, remote, config.clone(), Arc::clone(&allowed_peers), inbox.clone(), Arc::clone(&stats)));
            }
            Err(error) => {
                tracing::warn!(node_id = config.node_id, %error, "accept failed");
                bump(&stats.connection_errors);
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    remote: String,
    config: NetConfig,
    allowed_peers: Arc<RwLock<BTreeSet<u64>>>,
    inbox: mpsc::Sender<Inbound>,
    stats: Arc<NetStats>,
) {
    let (mut reader, _writer) = tokio::io::split(stream);
    let hello = tokio::time::timeout(Duration::from_millis(config.hello_timeout_ms), read_frame(&mut reader, config.frame_bytes_max)).await;
    let refuse = |reason: String| {
        tracing::warn!(node_id = config.node_id, %remote, %reason, "refusing connection");
        bump(&stats.connections_refused);
    };
    let from = match hello {
        Ok(Ok((KIND_HELLO, payload))) => match decode_hello(&payload) {
            Some((from, cluster)) if cluster != config.cluster_id.as_bytes() => {
                return refuse(format!("node {from} belongs to cluster `{}`, this is `{}`", String::from_utf8_lossy(cluster), config.cluster_id));
            }
            Some((from, _)) if !allowed_peers.read().expect("peers lock").contains(&from) => {
                return refuse(format!("node {from} is not a configured peer"));
            }
            Some((from, _)) => from,
            None => return refuse("malformed hello".into()),
        },
        Ok(Ok((kind, _))) => return refuse(format!("first frame has kind {kind}, expected a hello")),
        Ok(Err(error)) => return refuse(format!("no valid hello: {error}")),
        Err(_) => return refuse(format!("no hello within {} ms", config.hello_timeout_ms)),
    };
    loop {
        match read_frame(&mut reader, config.frame_bytes_max).await {
            Ok((kind, payload)) => {
                bump(&stats.frames_received);
                if inbox.send(Inbound { from, kind, payload }).await.is_err() {
                    return; // the endpoint is gone
                }
            }
            Err(FrameError::Closed) => return,
            Err(error) => {
                // The frame boundary is lost: close this connection only.
                tracing::warn!(node_id = config.node_id, peer = from, %error, "closing connection after a bad frame");
                bump(&stats.connection_errors);
                return;
            }
        }
    }
}

async fn peer_loop(
    peer_id: u64,
    addr: String,
    mut queue: mpsc::Receiver<(u8, Vec<u8>)>,
    config: NetConfig,
    clock: Clock,
    mut rng: NodeRng,
    stats: Arc<NetStats>,
) {
    let mut backoff_ms = config.reconnect_backoff_ms_min;
    let hello = encode_hello(&config);
    while !queue.is_closed() {
        if let Ok(stream) = TcpStream::connect(addr.as_str()).await {
            let _ = stream.set_nodelay(true);
            let (_reader, mut writer) = tokio::io::split(stream);
            if write_frame(&mut writer, KIND_HELLO, &hello).await.is_ok() {
                backoff_ms = config.reconnect_backoff_ms_min;
                loop {
                    let Some((kind, payload)) = queue.recv().await else { return };
                    if let Err(error) = write_frame(&mut writer, kind, &payload).await {
                        tracing::debug!(node_id = config.node_id, peer = peer_id, %error, "connection to peer broke");
                        bump(&stats.connection_errors);
                        break;
                    }
                    bump(&stats.frames_sent);
                }
            }
        }
        // Jittered exponential backoff, from the node RNG so simulation replays it.
        let jitter_ms = rng.gen_range(0..=backoff_ms / 2);
        clock.sleep(Duration::from_millis(backoff_ms + jitter_ms)).await;
        backoff_ms = (backoff_ms * 2).min(config.reconnect_backoff_ms_max);
    }
}
