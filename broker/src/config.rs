//! Command-line configuration, validated before anything starts.

use std::collections::BTreeMap;

/// `--peers 1=127.0.0.1:19091,2=127.0.0.1:19092,...`: every voter, this node included.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("peer `{item}` is not ID=HOST:PORT (example: --peers 1=127.0.0.1:19091,2=127.0.0.1:19092)"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("peer id `{id}` is not a number (example: 1=127.0.0.1:19091)"))?;
        let addr = addr.trim();
        if parse_host_port(addr).is_err() {
            return Err(format!("peer {id} address `{addr}` is not HOST:PORT with a port from 1 to 65535"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("node id {id} appears twice in --peers; every node needs its own id"));
        }
    }
    if peers.is_empty() {
        return Err("--peers is empty; list every voter as ID=HOST:PORT".into());
    }
    let mut addresses: Vec<&String> = peers.values().collect();
    addresses.sort();
    if let Some(pair) = addresses.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("address {} is given to two nodes in --peers", pair[0]));
    }
    Ok(peers)
}

/// `HOST:PORT` with a port from 1 to 65535.
pub fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    match text.trim().rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok((host.to_string(), port)),
            _ => Err(format!("`{text}` is not HOST:PORT with a port from 1 to 65535 (example: 127.0.0.1:9092)")),
        },
        _ => Err(format!("`{text}` is not HOST:PORT (example: 127.0.0.1:9092)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_peers_say_how_to_fix_them() {
        let peers = parse_peers("1=127.0.0.1:19091, 2=127.0.0.1:19092").expect("valid");
        assert_eq!(peers.get(&2).map(String::as_str), Some("127.0.0.1:19092"));
        assert!(parse_peers("1=a:1,1=b:2").expect_err("dup").contains("appears twice"));
        assert!(parse_peers("1=a:1,2=a:1").expect_err("dup addr").contains("two nodes"));
        assert!(parse_peers("x=a:1").expect_err("id").contains("not a number"));
        assert!(parse_peers("1=nohost").expect_err("addr").contains("HOST:PORT"));
        assert!(parse_peers("1=a:0").expect_err("port").contains("HOST:PORT"));
        assert!(parse_peers("").expect_err("empty").contains("empty"));
        assert_eq!(parse_host_port("127.0.0.1:9092"), Ok(("127.0.0.1".to_string(), 9092)));
        assert!(parse_host_port("9092").expect_err("no host").contains("HOST:PORT"));
        assert!(parse_host_port("h:70000").expect_err("port").contains("65535"));
    }
}
