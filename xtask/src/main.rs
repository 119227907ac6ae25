//! `cargo xtask`: developer automation for the ztunnel workspace.
//!
//! This file owns only the command line and the dispatch to one module per subcommand
//! (`demo`, `bench`, `test_suite`, `ebpf`, `fuzz`). Commands run tools
//! and processes; they never reach into the daemon's internals, so they exercise exactly what
//! a user runs.

mod bench;
mod cni_tools;
mod demo;
mod ebpf;
mod fuzz;
mod lab;
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
    /// Build ztunnel (release), run two namespaced nodes with eBPF capture, send real traffic
    /// from pods through the mesh, print what happened and what capture costs. Needs root.
    /// Exits non-zero, naming the step, if anything fails; removes everything it created.
    Demo(demo::DemoArgs),
    /// Measure the mesh against direct TCP in one run (throughput, latency, CPU, connection
    /// rates, memory, state at scale); prints a table and writes JSON. Needs root.
    Bench(bench::BenchArgs),
    /// Run the project's full test suite, installing missing prerequisites (Envoy) first.
    Test(test_suite::TestArgs),
    /// Compile the eBPF programs into the committed ebpf/ztunnel.bpf.o (needs clang-19);
    /// `--check` only verifies that the committed object is up to date.
    Ebpf(ebpf::EbpfArgs),
    /// Smoke-run each fuzz target in `fuzz/` for a bounded time (needs the nightly toolchain).
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::main(args),
        Command::Test(args) => test_suite::main(args),
        Command::Bench(args) => bench::main(args),
        Command::Ebpf(args) => ebpf::main(args),
        Command::Fuzz(args) => fuzz::main(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
