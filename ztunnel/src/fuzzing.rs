//! Entry points for the cargo-fuzz targets in `fuzz/`: each takes arbitrary bytes, runs one
//! parser that sees untrusted input the way the daemon runs it, and panics only when the
//! parser breaks a promise (a panic inside it, an error that does not name its source, a
//! framing result that disagrees with a plain reference).
//!
//! Compiled only with the `fuzzing` cargo feature, which only the fuzz crate enables (and in
//! this crate's unit tests, which run each entry point on a few inputs), so the internals
//! these functions reach stay `pub(crate)`. A new target is one function here, one file in
//! `fuzz/fuzz_targets/` and one `[[bin]]` in `fuzz/Cargo.toml`; `cargo xtask fuzz` finds it.

use crate::capture::control::{self, ControlResponse, LineFramer};
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
    fn xds_entry_points_take_garbage() {
        for input in [&b""[..], b"\x0a\x05hello", b"\xff\xff\xff"] {
            xds_address(input);
            xds_authorization(input);
        }
    }
}
