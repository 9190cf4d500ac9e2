//! A node's network endpoint: accepts peers, connects to peers, moves frames.
//!
//! Delivery is at-most-once: a frame in flight when a connection breaks is
//! lost, and the protocols above (Raft, replication fetches) retransmit.
//! Memory is bounded: each peer has a queue of `peer_queue_len` frames, and a
//! full queue is a `SendError::QueueFull` the caller sees, never a silent drop.
//! Every connection starts with a hello naming the cluster and the node; a
//! connection from another cluster or an unknown node is refused and logged.
//!
//! Inbound frames are demultiplexed by kind: each protocol registers the kinds
//! it serves with a queue of its own, so a protocol whose reader falls behind
//! never holds up another's frames on the same connection (a full queue drops
//! the frame, counted in `NetStats::inbound`, and the sender retransmits).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keel_io::{Clock, NodeRng};
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::frame::{read_frame, write_frame, FrameError, FRAME_KIND_RAFT, FRAME_KIND_REPL_FETCH, FRAME_KIND_REPL_FETCH_RESPONSE};

/// Frame kind of the connection hello; reserved, callers use 1..=255.
const KIND_HELLO: u8 = 0;

/// Inbound drops of one kind are logged at most this often (with the total so
/// far): a reader that falls behind under load must not flood the log.
const DROP_LOG_INTERVAL_MS: u64 = 10_000;

#[derive(Clone, Debug)]
pub struct NetConfig {
    pub cluster_id: String,
    pub node_id: u64,
    pub frame_bytes_max: usize,
    pub peer_queue_len: usize,
    /// Inbound metadata Raft frames queued for the metadata driver (`for_node`).
    pub raft_inbox_len: usize,
    /// Inbound replication frames queued for the replication driver (`for_node`).
    pub repl_inbox_len: usize,
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
            raft_inbox_len: 4096,
            repl_inbox_len: 4096,
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
#[derive(Debug)]
pub struct NetStats {
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    /// Sends refused because the queue to a peer was full.
    pub queue_full: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connection_errors: AtomicU64,
    /// Inbound frames by kind (indexed by the kind byte).
    inbound: Box<[KindStats]>,
}

impl Default for NetStats {
    fn default() -> Self {
        NetStats {
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
            inbound: (0..=u8::MAX).map(|_| KindStats::default()).collect(),
        }
    }
}

impl NetStats {
    /// What became of the inbound frames of `kind`.
    pub fn inbound(&self, kind: u8) -> &KindStats {
        &self.inbound[usize::from(kind)]
    }
}

/// What became of the inbound frames of one kind.
#[derive(Debug, Default)]
pub struct KindStats {
    /// Handed to the kind's queue.
    pub frames_delivered: AtomicU64,
    /// Dropped because the kind's queue was full (its reader fell behind).
    pub frames_dropped_queue_full: AtomicU64,
    /// Dropped because no queue serves the kind (or its reader is gone).
    pub frames_dropped_unserved: AtomicU64,
    /// The node clock's milliseconds + 1 when a drop was last logged (0: never).
    drop_logged_ms: AtomicU64,
}

impl KindStats {
    /// Whether a drop happening at `now_ms` should be logged (rate limit).
    fn drop_log_due(&self, now_ms: u64) -> bool {
        let logged = self.drop_logged_ms.load(Ordering::Relaxed);
        let due = logged == 0 || (now_ms + 1).saturating_sub(logged) >= DROP_LOG_INTERVAL_MS;
        due && self.drop_logged_ms.compare_exchange(logged, now_ms + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
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

/// Where inbound frames go: the queue serving each kind.
struct Demux {
    node_id: u64,
    /// Index into `queues` by kind; `None`: no queue serves the kind.
    routes: [Option<usize>; 256],
    queues: Vec<mpsc::Sender<Inbound>>,
    clock: Clock,
    stats: Arc<NetStats>,
}

impl Demux {
    fn new(config: &NetConfig, inboxes: &[(&[u8], usize)], clock: Clock, stats: Arc<NetStats>) -> (Demux, Vec<mpsc::Receiver<Inbound>>) {
        let mut routes = [None; 256];
        let mut queues = Vec::with_capacity(inboxes.len());
        let mut receivers = Vec::with_capacity(inboxes.len());
        for (index, (kinds, len)) in inboxes.iter().enumerate() {
            assert!(*len > 0, "inbox {index} has no room");
            for kind in kinds.iter() {
                assert_ne!(*kind, KIND_HELLO, "frame kind 0 is the connection hello");
                assert!(routes[usize::from(*kind)].is_none(), "frame kind {kind} registered twice");
                routes[usize::from(*kind)] = Some(index);
            }
            let (queue, receiver) = mpsc::channel(*len);
            queues.push(queue);
            receivers.push(receiver);
        }
        (Demux { node_id: config.node_id, routes, queues, clock, stats }, receivers)
    }

    /// Hands `frame` to its kind's queue without waiting, so one kind's slow
    /// reader never blocks another kind's frames behind it on a connection.
    /// Returns false once no queue has a reader (the endpoint's users are gone).
    fn deliver(&self, frame: Inbound) -> bool {
        let (from, kind) = (frame.from, frame.kind);
        let stats = self.stats.inbound(kind);
        let Some(index) = self.routes[usize::from(kind)] else {
            bump(&stats.frames_dropped_unserved);
            if stats.drop_log_due(self.clock.now().as_millis()) {
                let dropped = stats.frames_dropped_unserved.load(Ordering::Relaxed);
                tracing::warn!(node_id = self.node_id, from, kind, dropped, "frames of a kind this node does not serve dropped (a peer of another version?)");
            }
            return true;
        };
        match self.queues[index].try_send(frame) {
            Ok(()) => bump(&stats.frames_delivered),
            Err(mpsc::error::TrySendError::Full(_)) => {
                bump(&stats.frames_dropped_queue_full);
                if stats.drop_log_due(self.clock.now().as_millis()) {
                    let dropped = stats.frames_dropped_queue_full.load(Ordering::Relaxed);
                    tracing::debug!(
                        node_id = self.node_id,
                        from,
                        kind,
                        dropped,
                        "inbound queue full: frames dropped until its reader catches up (senders retransmit)"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                bump(&stats.frames_dropped_unserved);
                return self.queues.iter().any(|queue| !queue.is_closed());
            }
        }
        true
    }
}

/// A node's transport: its one endpoint, with an inbound queue per protocol.
pub struct NodeTransport {
    /// Shared by the drivers that send (metadata and replication).
    pub endpoint: Arc<Endpoint>,
    /// Metadata Raft frames (`FRAME_KIND_RAFT`), for the metadata driver.
    pub raft_frames: mpsc::Receiver<Inbound>,
    /// Replication fetches and their responses, for the replication driver.
    pub repl_frames: mpsc::Receiver<Inbound>,
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
    /// A node's transport on a listener bound beforehand, with the metadata
    /// Raft and the replication kinds registered and every other node of
    /// `nodes` (id to `host:port`, this node's entry skipped) added as a peer.
    /// Touches no disk, so a node may build it before taking its disk lock.
    pub fn for_node(config: NetConfig, listener: TcpListener, clock: Clock, rng: NodeRng, nodes: &BTreeMap<u64, String>) -> std::io::Result<NodeTransport> {
        let inboxes: [(&[u8], usize); 2] =
            [(&[FRAME_KIND_RAFT], config.raft_inbox_len), (&[FRAME_KIND_REPL_FETCH, FRAME_KIND_REPL_FETCH_RESPONSE], config.repl_inbox_len)];
        let (mut endpoint, [raft_frames, repl_frames]) = Endpoint::on_listener(config, listener, clock, rng, inboxes)?;
        for (node_id, addr) in nodes {
            if *node_id != endpoint.config.node_id {
                endpoint.add_peer(*node_id, addr);
            }
        }
        Ok(NodeTransport { endpoint: Arc::new(endpoint), raft_frames, repl_frames })
    }

    /// Listens on `listen_addr` (`host:port`, port 0 for any); see `on_listener`.
    pub async fn bind<const N: usize>(
        config: NetConfig,
        listen_addr: &str,
        clock: Clock,
        rng: NodeRng,
        inboxes: [(&[u8], usize); N],
    ) -> std::io::Result<(Endpoint, [mpsc::Receiver<Inbound>; N])> {
        let listener = TcpListener::bind(listen_addr).await?;
        Endpoint::on_listener(config, listener, clock, rng, inboxes)
    }

    /// Serves peers on a listener bound beforehand (a node binds every port
    /// before it touches its data dir, so a taken port changes nothing).
    /// `inboxes` lists, per inbound queue, the frame kinds it receives and
    /// how many frames it holds; the receivers come back in the same order.
    /// Panics if a kind is 0 (the hello) or listed twice, or a queue holds nothing.
    pub fn on_listener<const N: usize>(
        config: NetConfig,
        listener: TcpListener,
        clock: Clock,
        rng: NodeRng,
        inboxes: [(&[u8], usize); N],
    ) -> std::io::Result<(Endpoint, [mpsc::Receiver<Inbound>; N])> {
        let local_addr = listener.local_addr()?.to_string();
        let stats = Arc::new(NetStats::default());
        let (demux, receivers) = Demux::new(&config, &inboxes, clock.clone(), Arc::clone(&stats));
        let receivers: [mpsc::Receiver<Inbound>; N] = receivers.try_into().expect("one receiver per inbox");
        let allowed_peers = Arc::new(RwLock::new(BTreeSet::new()));
        let accept = tokio::spawn(accept_loop(listener, config.clone(), Arc::clone(&allowed_peers), Arc::new(demux), Arc::clone(&stats)));
        let endpoint = Endpoint { config, local_addr, clock, rng, allowed_peers, senders: BTreeMap::new(), tasks: vec![accept], stats };
        Ok((endpoint, receivers))
    }

    /// The node this endpoint speaks for.
    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    /// Whether `peer_id` was added as a peer.
    pub fn has_peer(&self, peer_id: u64) -> bool {
        self.senders.contains_key(&peer_id)
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
        let task =
            tokio::spawn(peer_loop(peer_id, addr.to_string(), queue, self.config.clone(), self.clock.clone(), self.rng.fork(peer_id), Arc::clone(&self.stats)));
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

async fn accept_loop(listener: TcpListener, config: NetConfig, allowed_peers: Arc<RwLock<BTreeSet<u64>>>, demux: Arc<Demux>, stats: Arc<NetStats>) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let remote = remote.to_string();
                tokio::spawn(serve_connection(stream, remote, config.clone(), Arc::clone(&allowed_peers), Arc::clone(&demux), Arc::clone(&stats)));
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
    demux: Arc<Demux>,
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
                if !demux.deliver(Inbound { from, kind, payload }) {
                    return; // nobody reads any queue: the endpoint's users are gone
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
