//! The `ztunnel` command.

use clap::Parser;
use ztunnel::config::{Cli, Command, LogFormatArg, ProxyConfig};
use ztunnel::telemetry::{self, LogFormat};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
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
            let config = ProxyConfig::from(*args);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async move {
                let running = ztunnel::app::start(config, log).await?;
                running.run_until_signal().await;
                anyhow::Ok(())
            })
        }
    }
}
