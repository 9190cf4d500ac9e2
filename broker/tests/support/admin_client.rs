//! A minimal client for keel's admin endpoint, shared by the process tests and
//! the metadata benchmark (included with `#[path]`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One HTTP request: (status code, body), or None if the node does not answer.
pub fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    http_with_body(port, method, path, "")
}

/// One HTTP request with a body.
pub fn http_with_body(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, response.split_once("\r\n\r\n")?.1.to_string()))
}

/// A top-level field of a flat JSON object, as text (`"true"`, `"12"`, `"null"`).
pub fn json_field(json: &str, key: &str) -> Option<String> {
    let rest = json.split(&format!("\"{key}\":")).nth(1)?;
    Some(rest.split([',', '}']).next()?.trim_matches('"').to_string())
}

/// Every node's `/status` says ready and registered, at one metadata version:
/// each node registered itself AND has applied everyone's registration (a
/// node registered only on itself would refuse a replication factor 3 create).
pub fn cluster_settled(statuses: &[Option<String>]) -> bool {
    let Some(statuses) = statuses.iter().cloned().collect::<Option<Vec<String>>>() else { return false };
    let ready = statuses.iter().all(|s| json_field(s, "ready").as_deref() == Some("true") && json_field(s, "registered").as_deref() == Some("true"));
    ready && statuses.windows(2).all(|w| json_field(&w[0], "metadata_version") == json_field(&w[1], "metadata_version"))
}
