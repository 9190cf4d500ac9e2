//! Kafka frames on a byte stream: a 4-byte big-endian size, then a request
//! (header + body) or a response (correlation id + body).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Kafka's `socket.request.max.bytes` default.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 100 * 1024 * 1024;
/// api_key i16 + api_version i16 + correlation_id i32.
pub const HEADER_PREFIX_BYTES: usize = 8;
/// Bytes read and dropped per step when skipping an oversized frame.
const DISCARD_CHUNK_BYTES: usize = 64 * 1024;

/// What arrived on a connection.
#[derive(Debug)]
pub enum Inbound {
    /// A whole request frame (without its size).
    Frame(Bytes),
    /// A frame larger than the limit: its first bytes (enough for the
    /// header prefix, when the frame had them); the rest was read and dropped,
    /// so the next frame starts where it should.
    Oversized { size_bytes: usize, head: Bytes },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame boundary is lost: nothing after this can be parsed.
    #[error("negative frame size {0}; closing the connection (the frame boundary is lost)")]
    NegativeSize(i32),
    #[error("connection closed in the middle of a frame")]
    CutShort,
    #[error("reading from the connection: {0}")]
    Io(std::io::Error),
}

fn read_error(error: std::io::Error) -> FrameError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameError::CutShort
    } else {
        FrameError::Io(error)
    }
}

/// Reads the next frame; `Ok(None)` when the peer closed between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, frame_bytes_max: usize) -> Result<Option<Inbound>, FrameError> {
    let mut size = [0u8; 4];
    let mut filled = 0;
    while filled < size.len() {
        match reader.read(&mut size[filled..]).await.map_err(FrameError::Io)? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(FrameError::CutShort),
            n => filled += n,
        }
    }
    let size = i32::from_be_bytes(size);
    let size_bytes = usize::try_from(size).map_err(|_| FrameError::NegativeSize(size))?;
    if size_bytes > frame_bytes_max {
        let head_bytes = size_bytes.min(HEADER_PREFIX_BYTES);
        let mut head = vec![0u8; head_bytes];
        reader.read_exact(&mut head).await.map_err(read_error)?;
        let mut left = size_bytes - head_bytes;
        let mut sink = vec![0u8; DISCARD_CHUNK_BYTES.min(left)];
        while left > 0 {
            let step = left.min(sink.len());
            reader.read_exact(&mut sink[..step]).await.map_err(read_error)?;
            left -= step;
        }
        return Ok(Some(Inbound::Oversized { size_bytes, head: Bytes::from(head) }));
    }
    let mut frame = vec![0u8; size_bytes];
    reader.read_exact(&mut frame).await.map_err(read_error)?;
    Ok(Some(Inbound::Frame(Bytes::from(frame))))
}

/// The fixed start of every request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// `None` when the frame is too short to say whom to answer.
pub fn peek_header(frame: &[u8]) -> Option<HeaderPrefix> {
    if frame.len() < HEADER_PREFIX_BYTES {
        return None;
    }
    Some(HeaderPrefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// A response frame: size, header (in the version the API's version asks
/// for), body.
pub fn encode_response(api_key: ApiKey, api_version: i16, correlation_id: i32, body: &ResponseKind) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut buf, api_key.response_header_version(api_version)).map_err(|error| error.to_string())?;
    body.encode(&mut buf, api_version).map_err(|error| format!("{api_key:?} v{api_version} response: {error}"))?;
    finish_frame(buf)
}

/// The answer to a request Keel cannot decode into its API's response
/// (unknown key, unsupported version, undecodable body): the correlation id
/// and a bare error code, which is what every response begins with after
/// its header for the APIs whose first field is an error code. The
/// connection stays usable.
pub fn encode_bare_error(correlation_id: i32, error_code: i16) -> Bytes {
    let mut buf = BytesMut::with_capacity(10);
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    buf.put_i16(error_code);
    finish_frame(buf).expect("a 6-byte body fits any frame")
}

fn finish_frame(mut buf: BytesMut) -> Result<Bytes, String> {
    let body_bytes = i32::try_from(buf.len() - 4).map_err(|_| format!("response of {} bytes exceeds a frame", buf.len()))?;
    buf[0..4].copy_from_slice(&body_bytes.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames_of(bytes: Vec<u8>, frame_bytes_max: usize) -> Vec<Result<Option<Inbound>, String>> {
        let mut reader: &[u8] = &bytes;
        let mut out = Vec::new();
        loop {
            let next = read_frame(&mut reader, frame_bytes_max).await.map_err(|e| e.to_string());
            let stop = !matches!(next, Ok(Some(_)));
            out.push(next);
            if stop {
                return out;
            }
        }
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn an_oversized_frame_is_skipped_and_the_next_frame_still_parses() {
        let mut bytes = framed(&[0, 3, 0, 1, 0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.extend(framed(&[0, 18, 0, 3, 0, 0, 0, 10]));
        let frames = frames_of(bytes, 10).await;
        match &frames[0] {
            Ok(Some(Inbound::Oversized { size_bytes, head })) => {
                assert_eq!(*size_bytes, 16);
                assert_eq!(peek_header(head).map(|h| h.correlation_id), Some(9));
            }
            other => panic!("expected an oversized frame, got {other:?}"),
        }
        match &frames[1] {
            Ok(Some(Inbound::Frame(frame))) => assert_eq!(peek_header(frame).map(|h| (h.api_key, h.correlation_id)), Some((18, 10))),
            other => panic!("expected a frame, got {other:?}"),
        }
        assert!(matches!(frames[2], Ok(None)), "clean close between frames");
    }

    #[tokio::test]
    async fn a_negative_size_and_a_frame_cut_short_are_errors() {
        let frames = frames_of((-5i32).to_be_bytes().to_vec(), 100).await;
        assert!(frames[0].as_ref().is_err_and(|e| e.contains("negative frame size")));
        let mut cut = framed(&[0, 18, 0, 3, 0, 0, 0, 10]);
        cut.truncate(7);
        let frames = frames_of(cut, 100).await;
        assert!(frames[0].as_ref().is_err_and(|e| e.contains("middle of a frame")));
        let frames = frames_of(vec![0, 0], 100).await;
        assert!(frames[0].as_ref().is_err_and(|e| e.contains("middle of a frame")));
    }

    #[test]
    fn a_header_prefix_needs_eight_bytes() {
        assert_eq!(peek_header(&[0, 1, 0, 2, 0, 0, 0]), None);
        assert_eq!(peek_header(&[0, 1, 0, 2, 0, 0, 1, 0]), Some(HeaderPrefix { api_key: 1, api_version: 2, correlation_id: 256 }));
    }
}
