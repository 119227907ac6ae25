//! `ztunnel-cni`: the chained CNI plugin that hands each new ambient pod to ztunnel's node agent
//! before the pod's containers start, and the step that installs it on a node.
//!
//! One binary, two roles, told apart the way the container runtime calls it:
//! - with `CNI_COMMAND` in the environment it is the **plugin** ([`plugin`]): config on stdin,
//!   result or CNI error JSON on stdout, exit status non-zero on error;
//! - otherwise it is a command line tool ([`install`]): `ztunnel-cni install [--watch]` copies
//!   itself into the host's CNI bin dir, writes the plugin's kubeconfig and chains itself into
//!   the node's primary network config; `ztunnel-cni uninstall` takes all of that back out.
//!
//! The plugin never decides enrollment on its own: it asks the API server for the pod and its
//! namespace and applies `ztunnel::kubernetes::rules::decide`, the same rules the node agent
//! uses, and leaves capture itself to the agent.

mod install;
mod plugin;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if std::env::var_os(plugin::env::COMMAND_VAR).is_some() {
        return plugin::main();
    }
    let cli = install::Cli::parse();
    install::main(cli)
}
