//! Printing what the demo saw: the plan, the flow table, the `istio_tcp_*` samples of each
//! node compacted to the labels worth reading, the certificates from `/config_dump`, and the
//! capture-cost comparison. Formatting only; no IO besides stdout.

use std::fmt::Write as _;

use super::flows::{Client, Flow};
use crate::bench::capture_cost::Measurement;
use crate::lab::cluster::Cluster;
use crate::lab::layout::{NODES, WEB_SERVICE};
use crate::lab::metrics::Sample;
use crate::lab::units::human_bytes;

/// Prints the nodes, their pods and the service.
pub(crate) fn plan(cluster: &Cluster) {
    for node in NODES {
        let n = cluster.node(node);
        println!("    {node}: netns {}, fabric address {}, pods in {}", n.netns_name(), n.ip(), n.pod_subnet());
        let rows: Vec<Vec<String>> = cluster
            .pods
            .iter()
            .filter(|p| p.spec.node == node)
            .map(|p| {
                let mut app = p.spec.describe_app();
                if WEB_SERVICE.endpoints.contains(&p.spec.name) {
                    let _ = write!(
                        app,
                        "; endpoint of svc {} VIP {}:{} -> :{}",
                        WEB_SERVICE.hostname(),
                        WEB_SERVICE.vip,
                        WEB_SERVICE.port,
                        WEB_SERVICE.target_port
                    );
                }
                vec![
                    p.spec.name.to_string(),
                    p.ip().to_string(),
                    p.spec.service_account.map_or("not in the mesh".to_string(), |sa| format!("sa/{sa}")),
                    app,
                ]
            })
            .collect();
        print_table("      ", &[], &rows, usize::MAX);
    }
}

/// Prints the flow table: one row per flow, then identities, the client's and the server's
/// view on lines of their own.
pub(crate) fn flows(flows: &[Flow]) {
    let header = ["#", "source -> destination", "client", "captured", "HBONE", "bytes up / down", "result"];
    let rows: Vec<Vec<String>> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let e = &f.evidence;
            let bytes = match &e.source {
                Some(s) => format!("{} / {}", human_bytes(s.upstream), human_bytes(s.downstream)),
                None => "-".to_string(),
            };
            vec![
                format!("{}", i + 1),
                format!("{} ({}) -> {}", f.spec.from.spec.name, f.spec.from.spec.node, f.spec.dst_label),
                match f.spec.client {
                    Client::Curl => "curl".to_string(),
                    Client::Echo { bytes } => format!("testapp {}", human_bytes(bytes)),
                },
                yes_no(e.captured()).to_string(),
                if e.hbone() { "yes, mTLS".to_string() } else { "no".to_string() },
                bytes,
                if f.ok() { "ok".to_string() } else { "FAILED".to_string() },
            ]
        })
        .collect();
    let pad = "         ";
    let mut details = Vec::new();
    for f in flows {
        let mut lines = Vec::new();
        match f.evidence.identities() {
            Some((src, dst)) if f.evidence.hbone() => lines.push(format!("{pad}identities  {src} -> {dst}")),
            Some((src, _)) => lines.push(format!("{pad}identities  {} -> none (plain TCP, no mTLS)", or_dash(&src))),
            None => lines.push(format!("{pad}identities  none counted")),
        }
        match &f.client {
            Ok(view) => lines.push(format!("{pad}client      {}; getpeername() = {}", view.summary, view.peer)),
            Err(e) => lines.push(format!("{pad}client      error: {e}")),
        }
        if let Some(peer) = &f.server_saw {
            let who = if peer.starts_with("127.0.0.6") {
                "ztunnel, dialling from inside the destination pod"
            } else if peer.starts_with(&f.spec.from.ip().to_string()) && f.evidence.destination.is_some() {
                "the client pod's address, kept by ztunnel inside the destination pod"
            } else if peer.starts_with(&f.spec.from.ip().to_string()) {
                "the client pod itself"
            } else {
                "?"
            };
            lines.push(format!("{pad}server saw  {peer} ({who})"));
        }
        lines.extend(f.problems.iter().map(|p| format!("{pad}problem     {p}")));
        details.push(lines);
    }
    print_table_with_details("    ", &header, &rows, &details);
}

/// Prints the capture-cost comparison: latency percentiles and throughput, with ratios.
pub(crate) fn bench(measurements: &[Measurement; 2]) {
    let [captured, direct] = measurements;
    let header = ["", captured.path.label(), direct.path.label(), "captured / direct"];
    let mut rows = Vec::new();
    let latency_rows = [
        ("min", captured.latency.min_us, direct.latency.min_us),
        ("p50", captured.latency.p50_us, direct.latency.p50_us),
        ("p90", captured.latency.p90_us, direct.latency.p90_us),
        ("p99", captured.latency.p99_us, direct.latency.p99_us),
    ];
    let first = "connect + 1-byte echo + close";
    for (i, (name, c, d)) in latency_rows.into_iter().enumerate() {
        let label = if i == 0 { format!("{first}, {name}") } else { format!("{name:>w$}", w = first.len() + 5) };
        rows.push(vec![label, format!("{c} µs"), format!("{d} µs"), ratio(c as f64, d as f64)]);
    }
    let (c_rate, d_rate) = (captured.median_rate(), direct.median_rate());
    rows.push(vec![
        format!("one stream, {} upload (median)", human_bytes(captured.upload_bytes)),
        format!("{c_rate:.0} MiB/s"),
        format!("{d_rate:.0} MiB/s"),
        ratio(c_rate, d_rate),
    ]);
    print_table("    ", &header, &rows, 1);
    let rounds = |m: &Measurement| m.rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
    println!(
        "    {} cycles per path; upload MiB/s per round: captured {}, direct {}",
        captured.cycles,
        rounds(captured),
        rounds(direct),
    );
    println!(
        "    the sink saw captured uploads from {} (counted by data's ztunnel) and direct ones from {}",
        captured.sink_saw, direct.sink_saw,
    );
    println!(
        "    clients, servers and both ztunnels share this host's {} CPUs; load average {}: under load, \
         percentiles above min mostly measure scheduling",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average()
    );
}

/// The 1-minute load average, or `?`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 { format!("{:.2}x", a / b) } else { "-".to_string() }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Column widths over the header and rows.
fn widths(header: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let columns = rows.iter().map(Vec::len).chain([header.len()]).max().unwrap_or(0);
    (0..columns)
        .map(|c| {
            let cell = |r: &Vec<String>| r.get(c).map_or(0, |s| s.chars().count());
            rows.iter().map(cell).chain([header.get(c).map_or(0, |h| h.chars().count())]).max().unwrap_or(0)
        })
        .collect()
}

fn render_row(indent: &str, cells: &[String], widths: &[usize], right_from: usize) -> String {
    let mut s = String::from(indent);
    for (c, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if c >= right_from {
            let _ = write!(s, "{cell:>w$}  ");
        } else {
            let _ = write!(s, "{cell:<w$}  ");
        }
    }
    s.trim_end().to_string()
}

/// Prints an aligned table; columns from `right_from` on are right-aligned. An empty header
/// prints no header line.
fn print_table(indent: &str, header: &[&str], rows: &[Vec<String>], right_from: usize) {
    let w = widths(header, rows);
    if !header.is_empty() {
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        println!("{}", render_row(indent, &header, &w, right_from));
    }
    for row in rows {
        println!("{}", render_row(indent, row, &w, right_from));
    }
}

/// Like [`print_table`], each row followed by its detail lines.
fn print_table_with_details(indent: &str, header: &[&str], rows: &[Vec<String>], details: &[Vec<String>]) {
    let w = widths(header, rows);
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    println!("{}", render_row(indent, &header, &w, usize::MAX));
    for (row, lines) in rows.iter().zip(details) {
        println!("{}", render_row(indent, row, &w, usize::MAX));
        for line in lines {
            println!("{line}");
        }
    }
}

/// Prints one node's `istio_tcp_*` samples, one row per label set, the four counters as
/// columns.
pub(crate) fn metrics(node: &str, samples: &[Sample]) {
    println!("    {node}:");
    if samples.is_empty() {
        println!("      (no istio_tcp_* samples)");
        return;
    }
    // Group by the labels that identify a connection family.
    let mut groups: Vec<(Vec<String>, [u64; 4])> = Vec::new();
    for s in samples {
        let key = vec![
            s.label("reporter").to_string(),
            format!("{} -> {}", or_dash(s.label("source_workload")), destination(s)),
            format!(
                "{} -> {}",
                short_principal(s.label("source_principal")),
                short_principal(s.label("destination_principal"))
            ),
            or_dash(s.label("connection_security_policy")).to_string(),
        ];
        let column = match s.name.as_str() {
            "connections_opened_total" => 0,
            "connections_closed_total" => 1,
            "sent_bytes_total" => 2,
            "received_bytes_total" => 3,
            _ => continue,
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, values)) => values[column] += s.value as u64,
            None => {
                let mut values = [0; 4];
                values[column] = s.value as u64;
                groups.push((key, values));
            }
        }
    }
    groups.sort();
    let header =
        ["reporter", "source -> destination", "principals", "security", "opened", "closed", "sent", "received"];
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|(k, v)| {
            let mut row = k.clone();
            row.extend([v[0].to_string(), v[1].to_string(), human_bytes(v[2]), human_bytes(v[3])]);
            row
        })
        .collect();
    print_table("      ", &header, &rows, 4);
}

/// Prints the certificates of a `/config_dump`.
pub(crate) fn certificates(node: &str, dump: &serde_json::Value) {
    println!("    {node}:");
    let Some(certs) = dump["certificates"].as_array() else {
        println!("      (no certificates in config_dump)");
        return;
    };
    for c in certs {
        let identity = c["identity"].as_str().unwrap_or("?");
        let state = c["state"].as_str().unwrap_or("?");
        let leaf = &c["certChain"][0];
        let root = &c["rootCerts"][0];
        println!(
            "      {identity:<42} {state:<10} valid {} .. {}  serial {}",
            leaf["validFrom"].as_str().unwrap_or("?"),
            leaf["expirationTime"].as_str().unwrap_or("?"),
            shorten(leaf["serialNumber"].as_str().unwrap_or("?"), 14),
        );
        if let Some(root_expiry) = root["expirationTime"].as_str() {
            println!("      {:<42} {:<10} root expires {root_expiry}", "", "");
        }
    }
}

/// The destination workload, plus the service when the connection was addressed to one.
fn destination(s: &Sample) -> String {
    match (or_dash(s.label("destination_workload")), or_dash(s.label("destination_service"))) {
        ("-", _) => "unknown (passthrough)".to_string(),
        (w, "-") => w.to_string(),
        (w, svc) => format!("{w} (svc {svc})"),
    }
}

/// `spiffe://cluster.local/ns/default/sa/web` -> `sa/web`; empty/unknown -> `-`.
fn short_principal(p: &str) -> &str {
    match p.rfind("/sa/") {
        Some(i) => &p[i + 1..],
        None => or_dash(p),
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() || s == "unknown" { "-" } else { s }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}…", s.chars().take(max).collect::<String>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_and_sizes_are_compacted() {
        assert_eq!(short_principal("spiffe://cluster.local/ns/default/sa/web"), "sa/web");
        assert_eq!(short_principal("unknown"), "-");
    }
}
