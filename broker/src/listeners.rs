//! Every port a node serves, bound before the node touches its data dir: a
//! start that cannot listen must not initialise (or change) a data dir and
//! then fail. Port 0 binds any free port; the node writes the bound addresses
//! to `listeners.json` in the data dir (and shown on `/status`), so a
//! supervisor or a test learns them without picking ports itself.
//!
//! A cluster's nodes must know each other's broker-to-broker addresses
//! before they start, so port 0 does not work there: a supervisor (`keel
//! dev`, the process tests) binds every node's broker listener itself,
//! keeps them for the cluster's life, and hands each node its socket as an
//! inherited file descriptor (`--broker-listener-fd`, like systemd socket
//! activation). Nothing can take such a port between its choice and its
//! use, and a restarted node gets the same port back.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};

use keel_node::Listeners;
use tokio::net::TcpListener;

async fn bind_one(flag: &str, addr: &str) -> Result<(TcpListener, SocketAddr), String> {
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {flag} {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("{flag} {addr}: no local address: {e}"))?;
    Ok((listener, bound))
}

/// The broker listener inherited as `fd`: it must be a listening TCP
/// socket, on `expected_port` unless that is 0.
fn inherited(fd: i32, expected_port: u16) -> Result<(TcpListener, SocketAddr), String> {
    if fd < 3 {
        return Err(format!("--broker-listener-fd {fd} is stdin, stdout or stderr; give the number of an inherited listening socket"));
    }
    // SAFETY: fcntl(F_GETFD) only asks whether `fd` is open in this process.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(format!("--broker-listener-fd {fd} is not an open file descriptor of this process"));
    }
    // SAFETY: the fd is open (checked above) and given to this process to
    // own; nothing else in keel uses it. Ownership moves into the listener.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listener = std::net::TcpListener::from(owned);
    let bound = listener.local_addr().map_err(|e| format!("--broker-listener-fd {fd} is not a TCP socket: {e}"))?;
    if expected_port != 0 && bound.port() != expected_port {
        return Err(format!("--broker-listener-fd {fd} listens on {bound}, but this node's --peers entry says port {expected_port}"));
    }
    listener.set_nonblocking(true).map_err(|e| format!("--broker-listener-fd {fd}: {e}"))?;
    let listener = TcpListener::from_std(listener).map_err(|e| format!("--broker-listener-fd {fd} is not a listening TCP socket: {e}"))?;
    Ok((listener, bound))
}

/// Binds the Kafka, admin and broker listeners (or takes the broker's
/// from `broker_fd`); any failure is bad input (exit 2), before any disk work.
pub async fn bind_all(kafka_addr: &str, admin_addr: &str, broker_addr: &str, broker_fd: Option<i32>) -> Result<Listeners, String> {
    let (broker, _) = match broker_fd {
        Some(fd) => inherited(fd, crate::config::parse_host_port(broker_addr).map(|(_, port)| port).unwrap_or(0))?,
        None => bind_one("--peers (this node's entry)", broker_addr).await?,
    };
    let (kafka, _) = bind_one("--kafka-addr", kafka_addr).await?;
    let (admin, _) = bind_one("--admin-addr", admin_addr).await?;
    Ok(Listeners { kafka, admin, broker })
}
