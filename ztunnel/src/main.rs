//! The `ztunnel` command.

use clap::Parser;
use ztunnel::config::{Cli, Command, LogFormatArg, ProxyConfig};
use ztunnel::descriptors;
use ztunnel::pods::control::{self, ControlRequest};
use ztunnel::telemetry::{self, LogFormat};

/// jemalloc with its background purging thread rather than the system allocator: with
/// thousands of short-lived connections the system allocator kept the freed memory (8.8x the
/// idle resident size a minute after 10,000 connections closed, `cargo xtask bench` S6), and
/// jemalloc gives freed pages back to the system within seconds, without waiting for the next
/// allocation.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Sends one control request to the running daemon and prints its answer.
fn control(socket: &std::path::Path, request: ControlRequest) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let response = runtime.block_on(control::request(socket, &request))?;
    if let Some(error) = response.error {
        anyhow::bail!("{error}");
    }
    for pod in &response.pods {
        println!("{}\tnetns={}\tcookie={:#x}\tsource={:?}", pod.uid, pod.netns.display(), pod.netns_cookie, pod.source);
    }
    if response.pods.is_empty() && matches!(request, ControlRequest::Pods) {
        println!("no pods enrolled");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Enroll(a) => {
            let request = ControlRequest::Enroll { uid: a.uid, netns: a.netns, ips: a.ip, cgroup: None };
            control(&a.control.control_socket, request)
        }
        Command::Unenroll(a) => control(&a.control.control_socket, ControlRequest::Unenroll { uid: a.uid }),
        Command::Pods(a) => control(&a.control_socket, ControlRequest::Pods),
        Command::Version => {
            println!("ztunnel {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Proxy(args) => {
            let format = match args.log_format {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            };
            let log = telemetry::init(format, &args.log_level)?;
            match descriptors::raise_open_file_limit() {
                Ok(limit) if limit.now > limit.before => {
                    tracing::info!(from = limit.before, to = limit.now, "raised the open-file limit to the hard limit");
                }
                Ok(limit) => tracing::info!(limit = limit.now, "open-file limit"),
                Err(e) => tracing::warn!(error = %e, "keeping the open-file limit"),
            }
            let config = ProxyConfig::try_from(*args)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async move {
                let running = ztunnel::app::start(config, log).await?;
                running.run_until_signal().await;
                anyhow::Ok(())
            })
        }
    }
}
