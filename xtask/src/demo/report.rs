//! Printing what the demo saw: the plan, the flow table, the throughput comparison, the
//! `istio_tcp_*` samples of each node compacted to the labels worth reading, and the
//! certificates from `/config_dump`. Formatting only; no IO besides stdout.

use std::fmt::Write as _;

use super::metrics::Sample;
use super::topology::{HBONE_PORT, Topology};
use super::traffic::{Bulk, Flow};

/// Prints the mesh layout.
pub(crate) fn plan(topo: &Topology) {
    for n in [&topo.node_a, &topo.node_b] {
        let workloads: Vec<String> = topo
            .workloads()
            .into_iter()
            .filter(|w| w.node == n.name)
            .map(|w| match w.app_port {
                0 => format!("{} {} (client)", w.name, w.ip),
                port => format!("{} {} (app :{port}, hbone :{HBONE_PORT})", w.name, w.ip),
            })
            .collect();
        println!(
            "    {}: socks5 {}, admin {}, metrics {}, readiness {}",
            n.name, n.socks5, n.admin, n.metrics, n.readiness
        );
        println!("            workloads: {}", workloads.join(", "));
    }
    let s = &topo.web_service;
    println!("    service {} VIP {} -> {}:{}", s.hostname(), s.vip_addr(), topo.web.name, s.target_port);
    println!("    outside the mesh: echo server {}", topo.outside);
}

/// Prints the flow table: one row per flow, identities on a second line.
pub(crate) fn flows(flows: &[Flow]) {
    let rows: Vec<[String; 6]> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| {
            [
                format!("{}", i + 1),
                f.what.clone(),
                format!("{} -> {}", f.source, f.destination),
                f.route.label().to_string(),
                format!("{}/{}", human_bytes(f.sent), human_bytes(f.received)),
                match &f.outcome {
                    Ok(_) => "ok".to_string(),
                    Err(_) => "FAILED".to_string(),
                },
            ]
        })
        .collect();
    let header = ["#", "flow", "source -> destination", "path", "bytes out/in", "result"].map(String::from);
    let widths: Vec<usize> =
        (0..6).map(|c| rows.iter().chain([&header]).map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let line = |r: &[String; 6]| {
        let mut s = String::from("   ");
        for (cell, w) in r.iter().zip(&widths) {
            let _ = write!(s, " {cell:<w$} ");
        }
        s.trim_end().to_string()
    };
    println!("{}", line(&header));
    for (row, flow) in rows.iter().zip(flows) {
        println!("{}", line(row));
        let pad = " ".repeat(widths[0] + 6);
        match &flow.identities {
            Some((src, dst)) => println!("{pad}identities: {src} -> {dst}"),
            None => println!("{pad}identities: none (plain TCP, no mTLS)"),
        }
        match &flow.outcome {
            Ok(note) => println!("{pad}{}", shorten(note, 110)),
            Err(e) => println!("{pad}error: {e}"),
        }
    }
}

/// Prints mesh vs direct throughput and their ratio.
pub(crate) fn throughput(mesh: &Bulk, direct: &Bulk, hash_mib_per_s: f64) {
    let show = |name: &str, b: &Bulk| match b.mib_per_s {
        Some(rate) => {
            println!(
                "    {name:<22} {rate:>8.1} MiB/s  ({} in {:.2} s)",
                human_bytes(b.flow.sent),
                b.elapsed.as_secs_f64()
            )
        }
        None => println!("    {name:<22}   failed"),
    };
    show("through the mesh", mesh);
    show("direct TCP (no mesh)", direct);
    if let (Some(m), Some(d)) = (mesh.mib_per_s, direct.mib_per_s) {
        println!("    mesh / direct          {:>8.2}x", m / d);
    }
    println!(
        "    (one connection each; SHA-256 runs at {hash_mib_per_s:.0} MiB/s here and the sink hashes inline, \
         so that caps both; client, sink and both ztunnels share this host's {} CPUs)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
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
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).chain([header[c].len()]).max().unwrap_or(0))
        .collect();
    let print_row = |cells: Vec<String>| {
        let mut s = String::from("     ");
        for (c, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if c >= 4 {
                let _ = write!(s, " {cell:>w$}");
            } else {
                let _ = write!(s, " {cell:<w$} ");
            }
        }
        println!("{}", s.trim_end());
    };
    print_row(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        print_row(row);
    }
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

/// `1234` -> `1234 B`, `5 MiB` style for larger values.
pub(crate) fn human_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    match n {
        n if n >= MIB => format!("{:.1} MiB", n as f64 / MIB as f64),
        n if n >= 10 * KIB => format!("{:.1} KiB", n as f64 / KIB as f64),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_and_sizes_are_compacted() {
        assert_eq!(short_principal("spiffe://cluster.local/ns/default/sa/web"), "sa/web");
        assert_eq!(short_principal("unknown"), "-");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(256 * 1024 * 1024), "256.0 MiB");
    }
}
