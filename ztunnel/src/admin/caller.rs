//! Who may change things through the admin endpoint: a client on loopback whose socket
//! belongs to root or to ztunnel's own user, the same people who may use the control socket.
//!
//! TCP carries no credentials, so the kernel's socket table is asked instead: the client's
//! socket is the row of `/proc/self/net/tcp` (or `tcp6`) whose local address is the
//! connection's peer and whose remote address is our end, and its `uid` column is the user
//! that created it. Only an established socket counts: a socket its process has already
//! closed may linger in the table as a stub that always shows uid 0. Anything not found or
//! not readable is refused.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::server::ConnectionAddrs;

/// The kernel's socket tables of ztunnel's network namespace, where the admin server listens.
const TCP_TABLES: [&str; 2] = ["/proc/self/net/tcp", "/proc/self/net/tcp6"];
/// `st` of an established TCP socket in those tables.
const ESTABLISHED: u8 = 0x01;

/// Why a caller is refused a change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallerError {
    #[error("the connection's addresses are unknown")]
    NoAddresses,
    #[error("the caller {peer} is not on loopback")]
    NotLoopback { peer: SocketAddr },
    #[error("the caller {peer} runs as uid {uid}, not as root or as ztunnel's uid {own}")]
    NotPermitted { peer: SocketAddr, uid: u32, own: u32 },
    #[error("no established socket of the caller {peer} is in {tables}", tables = TCP_TABLES.join(" or "))]
    NotFound { peer: SocketAddr },
    #[error("cannot read the socket table {table}: {source}")]
    Table {
        table: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Checks that the client of `addrs` may change things; returns its uid. Reads procfs: call
/// it off the async workers.
pub(crate) fn authorize(addrs: Option<ConnectionAddrs>) -> Result<u32, CallerError> {
    let addrs = addrs.ok_or(CallerError::NoAddresses)?;
    let peer = canonical(addrs.peer);
    if !peer.ip().is_loopback() {
        return Err(CallerError::NotLoopback { peer: addrs.peer });
    }
    let uid = socket_owner(peer, canonical(addrs.local))?;
    let own = rustix::process::geteuid().as_raw();
    if uid == 0 || uid == own { Ok(uid) } else { Err(CallerError::NotPermitted { peer: addrs.peer, uid, own }) }
}

/// The uid owning the established socket `client` -> `server` in our namespace.
fn socket_owner(client: SocketAddr, server: SocketAddr) -> Result<u32, CallerError> {
    for table in TCP_TABLES {
        let file = std::fs::File::open(table).map_err(|source| CallerError::Table { table, source })?;
        let found =
            find_owner(BufReader::new(file), client, server).map_err(|source| CallerError::Table { table, source })?;
        if let Some(uid) = found {
            return Ok(uid);
        }
    }
    Err(CallerError::NotFound { peer: client })
}

/// Scans one socket table (the text of `/proc/net/tcp` or `tcp6`) for the established socket
/// whose local address is `client` and remote address is `server`; returns its uid.
pub(crate) fn find_owner(table: impl BufRead, client: SocketAddr, server: SocketAddr) -> std::io::Result<Option<u32>> {
    // Rows: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`; the first line
    // holds the column names.
    for line in table.lines().skip(1) {
        let line = line?;
        let mut fields = line.split_ascii_whitespace();
        let (Some(_), Some(local), Some(remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if parse_endpoint(local) != Some(client) || parse_endpoint(remote) != Some(server) {
            continue;
        }
        if u8::from_str_radix(state, 16).ok() != Some(ESTABLISHED) {
            continue;
        }
        // `uid` is the fourth field after `st`.
        return Ok(fields.nth(3).and_then(|uid| uid.parse().ok()));
    }
    Ok(None)
}

/// `ADDR:PORT` as the kernel prints it: the address in hex, one 32-bit word at a time in
/// host byte order (one word for IPv4, four for IPv6), the port in hex. IPv4-mapped IPv6
/// addresses come back as IPv4.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word =
        |i: usize| addr.get(i * 8..i * 8 + 8).and_then(|w| u32::from_str_radix(w, 16).ok()).map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(canonical(SocketAddr::new(ip, port)))
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows as a little-endian kernel prints them: a listener, our accepted socket, the
    /// client's socket (uid 1000), a closed client's stub (uid 0), and an IPv6 pair.
    const TABLE: &str =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:3A98 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0 100 0 0 10 0
   1: 0100007F:3A98 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 101 1 0 20 4 30 10 -1
   2: 0100007F:D431 0100007F:3A98 01 00000000:00000000 00:00000000 00000000  1000        0 102 1 0 20 4 30 10 -1
   3: 0100007F:D432 0100007F:3A98 05 00000000:00000000 00:00000000 00000000     0        0 0 3 0
";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn finds_the_client_socket_by_both_ends() {
        let server = addr("127.0.0.1:15000");
        let owner = |client: &str| find_owner(TABLE.as_bytes(), addr(client), server).unwrap();
        assert_eq!(owner("127.0.0.1:54321"), Some(1000), "the client's row, not our accepted socket's");
        assert_eq!(owner("127.0.0.1:54322"), None, "a closed client's stub (FIN_WAIT2, uid 0) never counts");
        assert_eq!(owner("127.0.0.1:54323"), None);
        assert_eq!(find_owner(TABLE.as_bytes(), addr("127.0.0.1:54321"), addr("127.0.0.1:15001")).unwrap(), None);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_kernel_endpoints() {
        assert_eq!(parse_endpoint("0100007F:3A98"), Some(addr("127.0.0.1:15000")));
        // ::1 and ::ffff:127.0.0.2 in four host-order words.
        assert_eq!(parse_endpoint("00000000000000000000000001000000:1F90"), Some(addr("[::1]:8080")));
        assert_eq!(parse_endpoint("0000000000000000FFFF00000200007F:0050"), Some(addr("127.0.0.2:80")));
        assert_eq!(parse_endpoint("0100007F"), None);
        assert_eq!(parse_endpoint("01007F:0050"), None);
        assert_eq!(parse_endpoint("zz00007F:0050"), None);
    }

    #[test]
    fn refuses_callers_off_loopback_without_reading_tables() {
        let addrs = ConnectionAddrs { peer: addr("10.0.0.1:5000"), local: addr("10.0.0.2:15000") };
        assert!(matches!(authorize(Some(addrs)), Err(CallerError::NotLoopback { .. })));
        assert!(matches!(authorize(None), Err(CallerError::NoAddresses)));
    }

    /// This process connecting to itself over loopback is found as itself.
    #[test]
    fn finds_this_process_as_the_caller() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let addrs = ConnectionAddrs { peer, local: accepted.local_addr().unwrap() };
        assert_eq!(peer, client.local_addr().unwrap());
        let uid = authorize(Some(addrs)).expect("this process may call itself");
        assert_eq!(uid, rustix::process::geteuid().as_raw());
    }
}
