//! TCP ports something listens on in the daemon's network namespace, from
//! `/proc/net/tcp` and `/proc/net/tcp6` (no `ss`, no netlink socket needed).

use std::collections::BTreeSet;

/// `st` of a listening socket in `/proc/net/tcp*`.
const TCP_LISTEN: &str = "0A";

/// The local ports of listening sockets in one `/proc/net/tcp*` text.
pub fn parse_listening(text: &str) -> BTreeSet<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            if state != TCP_LISTEN {
                return None;
            }
            let port = local.rsplit_once(':')?.1;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

/// Every TCP port with a listener (IPv4 or IPv6) in this network namespace.
pub fn listening_ports() -> BTreeSet<u16> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| parse_listening(&t))
        .collect()
}

/// Waits until every port in `ports` has a listener; returns the first one that has
/// none after `timeout`.
pub fn wait_listening(ports: &[u16], timeout: std::time::Duration) -> Option<u16> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let now = listening_ports();
        let missing = ports.iter().copied().find(|p| !now.contains(p));
        match missing {
            None => return None,
            Some(p) if std::time::Instant::now() >= deadline => return Some(p),
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listening_sockets_count() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:22B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 0100007F:D2F0 0100007F:22B3 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n";
        assert_eq!(parse_listening(text), BTreeSet::from([22, 8883]));
        let v6 = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(parse_listening(v6), BTreeSet::from([443]));
    }
}
