//! What the demo's server apps logged about their clients. The traffic checks and the
//! capture-cost run both read it.

use super::layout::App;

/// The peer of the last connection the server app logged: testapp's `accepted peer=...`
/// lines, python's access log (`<client ip> - - [date] "GET / ..."`), the probe's
/// `received peer=...`.
pub(crate) fn last_peer(output: &str, app: App) -> Option<String> {
    output.lines().rev().find_map(|line| match app {
        App::Http(_) => line.contains("\"GET ").then(|| line.split_whitespace().next().map(str::to_string))?,
        _ => line
            .strip_prefix("accepted peer=")
            .or_else(|| line.strip_prefix("received peer="))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_peers_are_read_from_each_apps_log() {
        let testapp = "listening local=0.0.0.0:9000\naccepted peer=127.0.0.6:40000 local=10.1.2.3:9000\nclosed peer=127.0.0.6:40000 bytes=5\n";
        assert_eq!(last_peer(testapp, App::Echo(9000)).as_deref(), Some("127.0.0.6:40000"));
        let python =
            "Serving HTTP on 0.0.0.0 port 8080\n127.0.0.6 - - [21/Nov/2025 07:40:00] \"GET / HTTP/1.1\" 200 -\n";
        assert_eq!(last_peer(python, App::Http(8080)).as_deref(), Some("127.0.0.6"));
        assert_eq!(last_peer("listening local=x\n", App::Echo(1)), None);
    }
}
