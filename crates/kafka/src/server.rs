//! The Kafka listener: one task per connection, one request at a time per
//! connection (as Kafka does: a connection is muted while its request is in
//! flight), so responses leave in request order and a producer's batches to
//! a partition are appended in the order it sent them.

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::codec::{read_frame, FrameError};
use crate::front::{KafkaFront, Reply};

pub async fn serve(listener: TcpListener, front: KafkaFront) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let front = front.clone();
                tokio::spawn(async move {
                    if let Err(reason) = serve_connection(stream, &front).await {
                        tracing::debug!(%peer, %reason, "Kafka connection closed");
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "Kafka listener accept failed"),
        }
    }
}

/// Serves one connection until the client closes it (`Ok`) or it cannot go
/// on (`Err` with why).
pub async fn serve_connection(mut stream: TcpStream, front: &KafkaFront) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let frame_bytes_max = front.config().frame_bytes_max;
    loop {
        let inbound = match read_frame(&mut stream, frame_bytes_max).await {
            Ok(Some(inbound)) => inbound,
            Ok(None) => return Ok(()),
            Err(error @ FrameError::NegativeSize(_)) => {
                tracing::warn!(%error, "Kafka connection: frame boundary lost");
                return Err(error.to_string());
            }
            // A client that goes away mid-frame is routine, not a warning.
            Err(error) => return Err(error.to_string()),
        };
        match front.handle(inbound).await {
            Reply::Send(bytes) => stream.write_all(&bytes).await.map_err(|error| format!("writing a response: {error}"))?,
            Reply::Nothing => {}
            Reply::Close(reason) => {
                tracing::warn!(%reason, "Kafka connection closed by the broker");
                return Err(reason);
            }
        }
    }
}
