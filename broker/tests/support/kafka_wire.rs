//! Raw Kafka request frames for the process tests (included with `#[path]`):
//! what a client should never send, written by hand.

use std::io::{Read, Write};
use std::net::TcpStream;

/// One request frame: size, then the bytes.
pub fn send_frame(stream: &mut TcpStream, body: &[u8]) {
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream.write_all(&frame).expect("send");
}

/// The next response frame's body (correlation id first).
pub fn read_response(stream: &mut TcpStream) -> Vec<u8> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("response size");
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("response body");
    body
}

/// A v1 request header with a null client id.
pub fn header(api_key: i16, api_version: i16, correlation_id: i32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&api_key.to_be_bytes());
    out.extend_from_slice(&api_version.to_be_bytes());
    out.extend_from_slice(&correlation_id.to_be_bytes());
    out.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    out
}
