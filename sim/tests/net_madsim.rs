//! keel-net over madsim's simulated TCP: the production transport, between
//! simulated hosts, cut off by a network fault and healed.
#![cfg(madsim)]

use std::time::Duration;

use keel_io::{Clock, NodeRng};
use keel_net::{Endpoint, Inbound, NetConfig};
use madsim::net::NetSim;
use madsim::runtime::Handle;
use tokio::sync::mpsc;

#[madsim::test]
async fn endpoints_talk_over_simulated_tcp_and_a_clogged_node_is_cut_off_until_healed() {
    let handle = Handle::current();
    let host1 = handle.create_node().name("broker-1").ip("10.0.0.1".parse().expect("ip")).build();
    let host2 = handle.create_node().name("broker-2").ip("10.0.0.2".parse().expect("ip")).build();
    let (delivered_tx, mut delivered) = mpsc::channel::<Inbound>(1024);
    host2.spawn(async move {
        let (mut endpoint, [mut inbox]) =
            Endpoint::bind(NetConfig::new("sim", 2), "10.0.0.2:9093", Clock::new(), NodeRng::new(5, 2, 0), [(&[7], 1024)]).await.expect("bind");
        endpoint.add_peer(1, "10.0.0.1:9093");
        while let Some(frame) = inbox.recv().await {
            delivered_tx.send(frame).await.expect("test listening");
        }
    });
    let (send_tx, mut send_rx) = mpsc::channel::<Vec<u8>>(1024);
    host1.spawn(async move {
        let (mut endpoint, _inboxes) =
            Endpoint::bind(NetConfig::new("sim", 1), "10.0.0.1:9093", Clock::new(), NodeRng::new(5, 1, 0), [(&[7], 1024)]).await.expect("bind");
        endpoint.add_peer(2, "10.0.0.2:9093");
        while let Some(payload) = send_rx.recv().await {
            let _ = endpoint.send(2, 7, payload);
        }
    });

    send_tx.send(b"before".to_vec()).await.expect("send");
    let first = tokio::time::timeout(Duration::from_secs(10), delivered.recv()).await.expect("delivered").expect("open");
    assert_eq!((first.from, first.kind, first.payload), (1, 7, b"before".to_vec()));

    NetSim::current().clog_node(host1.id());
    send_tx.send(b"during".to_vec()).await.expect("send");
    let during = tokio::time::timeout(Duration::from_secs(5), delivered.recv()).await;
    assert!(during.is_err(), "a frame crossed a clogged link: {during:?}");

    NetSim::current().unclog_node(host1.id());
    let mut healed = false;
    for n in 0..100u32 {
        send_tx.send(n.to_le_bytes().to_vec()).await.expect("send");
        if tokio::time::timeout(Duration::from_millis(200), delivered.recv()).await.is_ok() {
            healed = true;
            break;
        }
    }
    assert!(healed, "no frame arrived after the link healed");
}
