//! Endpoints on 127.0.0.1: delivery, refusal of strangers and garbage (the
//! endpoint keeps serving its real peers), reconnection, bounded queues, and
//! inbound queues per frame kind that drop (and count) rather than block.
#![cfg(not(madsim))]

use std::sync::atomic::Ordering;
use std::time::Duration;

use keel_io::{Clock, NodeRng};
use keel_net::{Endpoint, Inbound, NetConfig, SendError};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Kinds 5 and 9 (the ones these tests send) share one inbound queue.
async fn endpoint(cluster: &str, node_id: u64, addr: &str) -> (Endpoint, mpsc::Receiver<Inbound>) {
    let (endpoint, [inbox]) =
        Endpoint::bind(NetConfig::new(cluster, node_id), addr, Clock::new(), NodeRng::new(1, node_id, 0), [(&[5, 9], 4096)]).await.expect("bind");
    (endpoint, inbox)
}

async fn receive(inbox: &mut mpsc::Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await.expect("frame within 10 s").expect("inbox open")
}

#[tokio::test]
async fn peers_exchange_frames_both_ways() {
    let (mut a, mut a_inbox) = endpoint("c", 1, "127.0.0.1:0").await;
    let (mut b, mut b_inbox) = endpoint("c", 2, "127.0.0.1:0").await;
    a.add_peer(2, b.local_addr());
    b.add_peer(1, a.local_addr());
    for n in 0..100u8 {
        a.send(2, 5, vec![n; n as usize]).expect("send");
    }
    for n in 0..100u8 {
        assert_eq!(receive(&mut b_inbox).await, Inbound { from: 1, kind: 5, payload: vec![n; n as usize] });
    }
    b.send(1, 9, b"reply".to_vec()).expect("send");
    assert_eq!(receive(&mut a_inbox).await, Inbound { from: 2, kind: 9, payload: b"reply".to_vec() });
    assert_eq!(a.send(7, 5, vec![]), Err(SendError::UnknownPeer(7)));
    assert_eq!(a.send(2, 0, vec![]), Err(SendError::ReservedKind));
}

#[tokio::test]
async fn strangers_and_garbage_are_refused_while_peers_are_served() {
    let (mut a, mut a_inbox) = endpoint("prod", 1, "127.0.0.1:0").await;
    let a_addr = a.local_addr().to_string();
    // A node of another cluster.
    let (mut stranger, _s_inbox) = endpoint("staging", 2, "127.0.0.1:0").await;
    stranger.add_peer(1, &a_addr);
    stranger.send(1, 5, b"wrong cluster".to_vec()).expect("queued");
    // Raw garbage on a TCP connection.
    let mut raw = tokio::net::TcpStream::connect(a_addr.as_str()).await.expect("connect");
    raw.write_all(&[0xff; 64]).await.expect("write garbage");
    // A real peer, configured on both sides.
    let (mut b, _b_inbox) = endpoint("prod", 3, "127.0.0.1:0").await;
    a.add_peer(3, b.local_addr());
    b.add_peer(1, &a_addr);
    b.send(1, 5, b"hello from 3".to_vec()).expect("send");
    assert_eq!(receive(&mut a_inbox).await, Inbound { from: 3, kind: 5, payload: b"hello from 3".to_vec() });
    for _ in 0..200 {
        if a.stats().connections_refused.load(Ordering::Relaxed) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a.stats().connections_refused.load(Ordering::Relaxed) >= 2, "the stranger and the garbage connection were refused");
}

#[tokio::test]
async fn a_peer_that_comes_back_is_reconnected() {
    let (mut a, _a_inbox) = endpoint("c", 1, "127.0.0.1:0").await;
    let a_addr = a.local_addr().to_string();
    let (mut b, mut b_inbox) = endpoint("c", 2, "127.0.0.1:0").await;
    let b_addr = b.local_addr().to_string();
    b.add_peer(1, &a_addr);
    a.add_peer(2, &b_addr);
    a.send(2, 5, b"first".to_vec()).expect("send");
    assert_eq!(receive(&mut b_inbox).await.payload, b"first".to_vec());
    drop(b);
    drop(b_inbox);
    // Frames sent while b is down may be lost (at-most-once); keep sending until b is back.
    // The dropped endpoint's listener closes once its aborted task is polled.
    let mut rebound = None;
    for _ in 0..500 {
        match Endpoint::bind(NetConfig::new("c", 2), &b_addr, Clock::new(), NodeRng::new(1, 2, 1), [(&[5], 4096)]).await {
            Ok((endpoint, [inbox])) => {
                rebound = Some((endpoint, inbox));
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let (mut b_again, mut b_inbox) = rebound.expect("port free again within 5 s");
    b_again.add_peer(1, &a_addr);
    let mut delivered = None;
    for n in 0..500u32 {
        let _ = a.send(2, 5, n.to_le_bytes().to_vec());
        if let Ok(Some(frame)) = tokio::time::timeout(Duration::from_millis(20), b_inbox.recv()).await {
            delivered = Some(frame);
            break;
        }
    }
    assert!(delivered.is_some(), "no frame reached the restarted peer");
}

#[tokio::test]
async fn a_full_queue_is_an_error_the_caller_sees() {
    let mut config = NetConfig::new("c", 1);
    config.peer_queue_len = 4;
    let (mut a, _inboxes) = Endpoint::bind(config, "127.0.0.1:0", Clock::new(), NodeRng::new(1, 1, 0), [(&[5], 4096)]).await.expect("bind");
    // Nobody listens at this address's port for long: bind and drop to get a dead port.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").to_string();
    a.add_peer(2, &dead);
    let results: Vec<Result<(), SendError>> = (0..50).map(|_| a.send(2, 5, vec![0; 16])).collect();
    assert!(results.contains(&Err(SendError::QueueFull(2))), "{results:?}");
    assert!(a.stats().queue_full.load(Ordering::Relaxed) > 0);
}

fn count(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[tokio::test]
async fn a_kind_whose_reader_stalls_drops_counted_frames_while_other_kinds_flow_and_recovers_once_drained() {
    const STALLED: u8 = 5;
    const FLOWING: u8 = 6;
    const UNSERVED: u8 = 7;
    const STALLED_QUEUE_LEN: usize = 4;
    let (mut a, _a_inboxes) = endpoint("c", 1, "127.0.0.1:0").await;
    let inboxes: [(&[u8], usize); 2] = [(&[STALLED], STALLED_QUEUE_LEN), (&[FLOWING], 1024)];
    let (mut b, [mut stalled, mut flowing]) =
        Endpoint::bind(NetConfig::new("c", 2), "127.0.0.1:0", Clock::new(), NodeRng::new(1, 2, 0), inboxes).await.expect("bind");
    b.add_peer(1, a.local_addr());
    a.add_peer(2, b.local_addr());

    // Nobody reads `stalled` yet: its queue fills and the rest are dropped.
    for n in 0..20u8 {
        a.send(2, STALLED, vec![n]).expect("send");
    }
    a.send(2, UNSERVED, b"nobody serves this kind".to_vec()).expect("send");
    // Sent after them on the same connection, yet not held up behind them.
    for n in 0..10u8 {
        a.send(2, FLOWING, vec![n]).expect("send");
    }
    for n in 0..10u8 {
        assert_eq!(receive(&mut flowing).await, Inbound { from: 1, kind: FLOWING, payload: vec![n] });
    }
    // Frames on one connection are handled in order, so every earlier frame was handled.
    let stats = b.stats();
    assert_eq!(count(&stats.inbound(STALLED).frames_delivered), STALLED_QUEUE_LEN as u64);
    assert_eq!(count(&stats.inbound(STALLED).frames_dropped_queue_full), 20 - STALLED_QUEUE_LEN as u64);
    assert_eq!(count(&stats.inbound(UNSERVED).frames_dropped_unserved), 1);
    assert_eq!(count(&stats.inbound(FLOWING).frames_delivered), 10);
    assert_eq!(count(&stats.inbound(FLOWING).frames_dropped_queue_full), 0);

    // Drained, the stalled kind receives what it queued, then new frames again.
    for n in 0..STALLED_QUEUE_LEN as u8 {
        assert_eq!(stalled.try_recv().expect("queued before the queue filled"), Inbound { from: 1, kind: STALLED, payload: vec![n] });
    }
    assert!(stalled.try_recv().is_err(), "dropped frames must not reappear");
    for n in 100..103u8 {
        a.send(2, STALLED, vec![n]).expect("send");
    }
    for n in 100..103u8 {
        assert_eq!(receive(&mut stalled).await, Inbound { from: 1, kind: STALLED, payload: vec![n] });
    }
    assert_eq!(count(&stats.inbound(STALLED).frames_delivered), STALLED_QUEUE_LEN as u64 + 3);
    assert_eq!(count(&stats.inbound(STALLED).frames_dropped_queue_full), 20 - STALLED_QUEUE_LEN as u64, "no drops after the drain");
}
