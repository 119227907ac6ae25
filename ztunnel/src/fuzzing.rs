//! Entry points for the cargo-fuzz targets in `fuzz/`: each takes arbitrary bytes, runs one
//! parser that sees untrusted input the way the daemon runs it, and panics only when the
//! parser breaks a promise (a panic inside it, an error that does not name its source, a
//! framing result that disagrees with a plain reference).
//!
//! Compiled only with the `fuzzing` cargo feature, which only the fuzz crate enables (and in
//! this crate's unit tests, which run each entry point on a few inputs), so the internals
//! these functions reach stay `pub(crate)`. A new target is one function here, one file in
//! `fuzz/fuzz_targets/` and one `[[bin]]` in `fuzz/Cargo.toml`; `cargo xtask fuzz` finds it.

use crate::pods::control::{self, ControlResponse, LineFramer};
use crate::state::{SharedState, apply, parse_local_config};

/// The file name given to the local config parser; every error must name it.
const CONFIG_FILE: &str = "fuzz.yaml";

/// The bytes as a local config file (`--config`): a config that applies to a state and
/// dumps, or an error naming the file.
pub fn local_config(data: &[u8]) {
    match parse_local_config(data, CONFIG_FILE, "cluster.local") {
        Ok(config) => {
            let state = SharedState::new("");
            apply(&state, config);
            let dump = state.config_dump();
            assert!(dump.get("error").is_none(), "an applied config must dump: {dump}");
        }
        Err(error) => {
            let text = error.to_string();
            assert!(text.starts_with(&format!("local config {CONFIG_FILE}")), "error must name the file: {text}");
        }
    }
}

/// The bytes as what a client sends on the control socket. The first byte picks the size of
/// each read (1 to 64 bytes), the second the line limit (1 to 1021 bytes); the rest is the
/// stream. The framer must give exactly the lines a plain split gives, stop at the first
/// line over the limit, and never hold more than the limit plus one read; each line parses
/// into a request that survives a round trip, or into an error answer that is one JSON line.
pub fn control_stream(data: &[u8]) {
    let [read_size, limit, stream @ ..] = data else { return };
    let read_size = usize::from(*read_size % 64) + 1;
    let max_line = usize::from(*limit) * 4 + 1;

    let mut framer = LineFramer::new(max_line);
    let mut got = Vec::new();
    let mut too_long = false;
    'reads: for read in stream.chunks(read_size) {
        framer.push(read);
        loop {
            match framer.next_line() {
                Ok(Some(line)) => got.push(line),
                Ok(None) => break,
                Err(_) => {
                    too_long = true;
                    break 'reads;
                }
            }
        }
        assert!(framer.buffered() <= max_line + read_size, "framer holds {} bytes", framer.buffered());
    }
    if !too_long {
        got.extend(framer.finish());
    }
    let (expected, expect_too_long) = reference_lines(stream, max_line);
    assert_eq!(got, expected, "lines differ from a plain split (limit {max_line}, reads of {read_size})");
    assert_eq!(too_long, expect_too_long, "over-limit verdict (limit {max_line})");

    for line in &got {
        match control::parse_request(line) {
            Ok(request) => {
                let text = serde_json::to_vec(&request).expect("a parsed request serializes");
                let again = control::parse_request(&text).unwrap_or_else(|e| panic!("round trip: {e:?}"));
                assert_eq!(again, request, "a request survives a round trip");
            }
            Err(answer) => {
                let bytes = control::answer_line(&answer);
                let (last, body) = bytes.split_last().expect("an answer is not empty");
                assert!(*last == b'\n' && !body.contains(&b'\n'), "an answer is one line");
                let back: ControlResponse = serde_json::from_slice(body).expect("an answer is JSON");
                assert_eq!(back, answer);
                assert!(!answer.ok && answer.error.is_some(), "a bad request is answered an error");
            }
        }
    }
}

/// The lines of `stream` split at `\n` (a `\r` before it dropped; a last line without `\n`
/// kept as it is), up to the first one longer than `max_line`; and whether there was one.
fn reference_lines(stream: &[u8], max_line: usize) -> (Vec<Vec<u8>>, bool) {
    let mut lines = Vec::new();
    let segments: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let count = segments.len();
    for (i, segment) in segments.into_iter().enumerate() {
        let last = i + 1 == count;
        let trimmed = segment.strip_suffix(b"\r").unwrap_or(segment);
        if trimmed.len() > max_line {
            return (lines, true);
        }
        if !last {
            lines.push(trimmed.to_vec());
        } else if !segment.is_empty() {
            lines.push(segment.to_vec());
        }
    }
    (lines, false)
}

/// The bytes as an `istio.workload.Address` resource from istiod: decoded and converted,
/// or an error naming the resource.
pub fn xds_address(data: &[u8]) {
    if let Err(e) = crate::xds::convert::check_address("fuzz", data, "cluster.local") {
        assert!(e.to_string().starts_with("Address \"fuzz\""), "error must name the resource: {e}");
    }
}

/// The bytes as an `istio.security.Authorization` resource from istiod (see [`xds_address`]).
pub fn xds_authorization(data: &[u8]) {
    if let Err(e) = crate::xds::convert::check_authorization("fuzz", data) {
        assert!(e.to_string().starts_with("Authorization \"fuzz\""), "error must name the resource: {e}");
    }
}

/// The bytes as a SOCKS5 client's stream (greeting and request): the handshake gives a
/// destination or an error, never a panic, and writes only the two answers the protocol
/// allows before the reply (the method choice, or "no acceptable method").
pub fn socks5_handshake(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime");
    let mut written = Vec::new();
    let result = runtime.block_on(async {
        let mut stream = tokio::io::join(data, &mut written);
        crate::proxy::socks5::handshake(&mut stream).await
    });
    assert!(
        written.is_empty() || written == [5, 0] || written == [5, 0xff],
        "unexpected bytes before the reply: {written:?}"
    );
    if let Ok(dst) = result {
        assert_eq!(written, [5, 0], "a destination is read only after choosing \"no authentication\"");
        // Greeting (2 + methods), request head (4), address, port: exactly where they say.
        let request = 2 + usize::from(data[1]);
        let address = request + 4;
        let port = address + if data[request + 3] == 1 { 4 } else { 16 };
        let expected = u16::from_be_bytes([data[port], data[port + 1]]);
        assert_eq!(dst.port(), expected, "the port is the two bytes after the address");
        let ip = &data[address..port];
        let parsed = match dst.ip() {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        assert_eq!(parsed, ip, "the address is the bytes after the request head");
    }
}

/// The bytes as an HBONE `CONNECT` request's parts: the first byte picks the method, then
/// newline-separated `:authority` and `name: value` header lines. Malformed requests are
/// refused (never a panic); a well-formed one is a `CONNECT` to an `ip:port`; and whatever
/// the headers say, an ordinary peer's client address is its connection's peer address,
/// while only the destination's waypoint may name another.
pub fn hbone_connect(data: &[u8]) {
    use crate::identity::Identity;
    use crate::proxy::client_address::{client_address, forwarded_param};

    let [method, rest @ ..] = data else { return };
    let method = match method % 3 {
        0 => http::Method::CONNECT,
        1 => http::Method::GET,
        _ => http::Method::POST,
    };
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\n');
    let authority = lines.next().unwrap_or_default();
    let Ok(mut request) = http::Request::builder().method(method.clone()).uri(authority).body(()) else { return };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(name.trim().as_bytes()), http::HeaderValue::from_str(value.trim()))
        else {
            continue;
        };
        request.headers_mut().append(name, value);
    }
    match crate::hbone::server::parse_request(&request) {
        Ok(target) => {
            assert_eq!(method, http::Method::CONNECT, "only CONNECT is accepted");
            assert_eq!(authority.parse::<std::net::SocketAddr>().ok(), Some(target), "the target is the authority");
        }
        Err(reason) => assert!(!reason.is_empty(), "a refusal says why"),
    }
    let _ = forwarded_param(request.headers(), "host");
    let state = connect_state();
    let destination = state.workload_by_ip([10, 0, 0, 2].into()).expect("the fuzz state has the destination");
    let peer: std::net::SocketAddr = ([10, 0, 0, 50], 41000).into();
    let ordinary = Identity::new("cluster.local", "lab", "sleep");
    let client = client_address(&state, peer, &ordinary, &destination, None, request.headers());
    assert_eq!(client, peer, "an ordinary peer cannot choose its client address");
    let waypoint = Identity::new("cluster.local", "shop", "waypoint");
    let _ = client_address(&state, peer, &waypoint, &destination, None, request.headers());
}

/// A destination `shop/web` at 10.0.0.2 whose waypoint is `shop/waypoint` at 10.0.0.9.
fn connect_state() -> std::sync::Arc<crate::state::ProxyState> {
    static STATE: std::sync::OnceLock<SharedState> = std::sync::OnceLock::new();
    STATE
        .get_or_init(|| {
            let yaml = br#"
workloads:
- {uid: c/web, name: web, namespace: shop, serviceAccount: web, workloadIps: ["10.0.0.2"], node: b, protocol: HBONE,
   waypoint: {destination: "/10.0.0.9", hboneMtlsPort: 15008}}
- {uid: c/waypoint, name: waypoint, namespace: shop, serviceAccount: waypoint, workloadIps: ["10.0.0.9"], node: a, protocol: HBONE}
"#;
            let config = parse_local_config(yaml, "connect.yaml", "cluster.local").expect("the fuzz state is valid");
            let state = SharedState::new("");
            apply(&state, config);
            state
        })
        .read()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_config_accepts_a_real_file_and_survives_garbage() {
        local_config(include_bytes!("state/testdata/istio-local.yaml"));
        for input in [&b""[..], b"-", b"workloads: 7", b"{workloads: [{uid: 1}]}", b"\xff\xfe", b"a: &a [*a]"] {
            local_config(input);
        }
    }

    #[test]
    fn control_stream_agrees_with_the_reference() {
        let requests = b"{\"op\":\"pods\"}\r\n{\"op\":\"enroll\",\"uid\":\"u\",\"netns\":\"/n\",\"cgroup\":\"/c\"}\nnot json\n\r\n{\"op\"";
        for read_size in [0u8, 1, 7, 63] {
            for limit in [0u8, 3, 255] {
                let mut data = vec![read_size, limit];
                data.extend_from_slice(requests);
                control_stream(&data);
            }
        }
        assert_eq!(
            reference_lines(b"ab\r\ncd\ne\r", 2),
            (vec![b"ab".to_vec(), b"cd".to_vec(), b"e\r".to_vec()], false)
        );
        assert_eq!(reference_lines(b"ab\nabc\nx", 2), (vec![b"ab".to_vec()], true));
    }

    #[test]
    fn socks5_and_connect_entry_points_take_real_requests_and_garbage() {
        socks5_handshake(&[5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 2, 0x1f, 0x90]);
        socks5_handshake(&[5, 1, 0, 5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80, 9]);
        socks5_handshake(&[5, 1, 2]);
        socks5_handshake(b"GET / HTTP/1.1");
        hbone_connect(b"\x0010.0.0.2:8080\nforwarded: for=\"10.0.0.3:1\";host=web\nbaggage: k8s.namespace.name=x");
        hbone_connect(b"\x01web:80\nforwarded: for=10.0.0.9:1");
        hbone_connect(b"\x00[::1]:80\n\xff: \x00");
        hbone_connect(b"");
    }

    #[test]
    fn xds_entry_points_take_garbage() {
        for input in [&b""[..], b"\x0a\x05hello", b"\xff\xff\xff"] {
            xds_address(input);
            xds_authorization(input);
        }
    }
}
