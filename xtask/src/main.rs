//! `cargo xtask`: developer automation for the ztunnel workspace.
//!
//! This file owns only the command line and the dispatch to one module per subcommand
//! (`demo`, `test_suite`, `ebpf`; `bench` will follow the same shape). Commands run tools
//! and processes; they never reach into the daemon's internals, so they exercise exactly what
//! a user runs.

mod demo;
mod ebpf;
mod processes;
mod test_suite;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Developer automation for ztunnel.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build ztunnel (release), run two nodes on loopback, send real traffic through the mesh
    /// and print what happened. Exits non-zero, naming the step, if any flow fails.
    Demo(demo::DemoArgs),
    /// Run the project's full test suite, installing missing prerequisites (Envoy) first.
    Test(test_suite::TestArgs),
    /// Compile the eBPF programs into the committed ebpf/ztunnel.bpf.o (needs clang-19);
    /// `--check` only verifies that the committed object is up to date.
    Ebpf(ebpf::EbpfArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::main(args),
        Command::Test(args) => test_suite::main(args),
        Command::Ebpf(args) => ebpf::main(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
