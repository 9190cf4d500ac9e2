//! Frames: `payload_len u32 | crc32c u32 (of kind and payload) | kind u8 | payload`.
//!
//! The length is bounded before anything is allocated, and the checksum is
//! verified before the payload is handed on. A bad frame loses the frame
//! boundary, so the caller closes that connection (and only that one).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const FRAME_HEADER_BYTES: usize = 9;

// Frame kinds of the broker transport, in one table so no two protocols can
// claim the same kind. Kind 0 is the endpoint's connection hello.
/// A metadata Raft message.
pub const FRAME_KIND_RAFT: u8 = 1;
/// A follower's replication fetch.
pub const FRAME_KIND_REPL_FETCH: u8 = 2;
/// A leader's answer to a replication fetch.
pub const FRAME_KIND_REPL_FETCH_RESPONSE: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame checksum {stored:#010x} does not match {actual:#010x}")]
    Checksum { stored: u32, actual: u32 },
}

fn checksum(kind: u8, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload)
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, kind: u8, payload: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge { len: payload.len(), max: u32::MAX as usize })?;
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&checksum(kind, payload).to_le_bytes());
    header[8] = kind;
    writer.write_all(&header).await?;
    writer.write_all(payload).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one frame of at most `frame_bytes_max` payload bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, frame_bytes_max: usize) -> Result<(u8, Vec<u8>), FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(error) => return Err(error.into()),
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    if len > frame_bytes_max {
        return Err(FrameError::TooLarge { len, max: frame_bytes_max });
    }
    let stored = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let kind = header[8];
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    let actual = checksum(kind, &payload);
    if stored != actual {
        return Err(FrameError::Checksum { stored, actual });
    }
    Ok((kind, payload))
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_damage_is_detected() {
        let mut wire = Vec::new();
        write_frame(&mut wire, 7, b"raft message").await.expect("write");
        write_frame(&mut wire, 1, b"").await.expect("write empty");
        let mut reader = wire.as_slice();
        assert_eq!(read_frame(&mut reader, 1024).await.expect("first"), (7, b"raft message".to_vec()));
        assert_eq!(read_frame(&mut reader, 1024).await.expect("second"), (1, Vec::new()));
        assert!(matches!(read_frame(&mut reader, 1024).await, Err(FrameError::Closed)));

        let mut flipped = wire.clone();
        flipped[12] ^= 0x20;
        assert!(matches!(read_frame(&mut flipped.as_slice(), 1024).await, Err(FrameError::Checksum { .. })));
        assert!(matches!(read_frame(&mut wire.as_slice(), 4).await, Err(FrameError::TooLarge { len: 12, max: 4 })));
        assert!(matches!(read_frame(&mut &wire[..15], 1024).await, Err(FrameError::Io(_))));
    }
}
