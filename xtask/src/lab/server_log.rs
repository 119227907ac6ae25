//! What the demo's server apps logged about their clients. The traffic checks and the
//! capture-cost run both read it.

use ztunnel_tests::traffic;

use super::layout::App;

/// The peer of the last connection the server app logged: testapp's `accepted` lines (its
/// echo server and its sink alike), python's access log (`<client ip> - - [date] "GET / ..."`).
pub(crate) fn last_peer(output: &str, app: App) -> Option<String> {
    match app {
        App::Http(_) => output
            .lines()
            .rev()
            .find_map(|line| line.contains("\"GET ").then(|| line.split_whitespace().next().map(str::to_string))?),
        _ => traffic::last(output, "accepted").and_then(|v| v["peer"].as_str().map(str::to_string)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_peers_are_read_from_each_apps_log() {
        let testapp = [
            traffic::line("listening", json!({"local": "0.0.0.0:9000"})),
            traffic::line("accepted", json!({"peer": "127.0.0.6:40000", "local": "10.1.2.3:9000"})),
            traffic::line("closed", json!({"peer": "127.0.0.6:40000", "bytes": 5})),
        ]
        .join("\n");
        assert_eq!(last_peer(&testapp, App::Echo(9000)).as_deref(), Some("127.0.0.6:40000"));
        let python =
            "Serving HTTP on 0.0.0.0 port 8080\n127.0.0.6 - - [21/Nov/2025 07:40:00] \"GET / HTTP/1.1\" 200 -\n";
        assert_eq!(last_peer(python, App::Http(8080)).as_deref(), Some("127.0.0.6"));
        assert_eq!(last_peer(&traffic::line("listening", json!({"local": "x"})), App::Echo(1)), None);
    }
}
