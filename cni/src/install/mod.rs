//! `ztunnel-cni install` and `uninstall`: what the DaemonSet's container runs to put the plugin
//! on its node (host directories mounted into the container, by default under `/host`).
//!
//! `install`, in this order so the runtime never finds our entry before its files:
//! 1. copies this binary into the host's CNI bin dir as `ztunnel-cni` (write, then rename);
//! 2. writes the plugin's kubeconfig into the CNI net dir from the pod's service-account token
//!    and CA ([`kubeconfig`]);
//! 3. chains our entry last into the primary network config ([`net_dir`], [`conflist`]).
//!
//! Each step is skipped when its result is already in place, so re-running changes nothing.
//! With `--watch` it then checks all three every interval (bounded polling) and repairs what
//! changed: a primary CNI that rewrites its conflist, a deleted binary, a rotated token. It
//! runs until stopped and leaves everything in place when stopped, so pods created while the
//! DaemonSet restarts still wait for the node agent (fail closed), as istio-cni does.
//!
//! `uninstall` removes our entry from every network config in the dir (the rest of each file
//! stays semantically as it was: same fields and plugins, re-serialised), the binary and the
//! kubeconfig.

mod conflist;
mod files;
mod kubeconfig;
mod net_dir;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use ztunnel::kubernetes::cni_event::DEFAULT_SOCKET_PATH;
use ztunnel::kubernetes::rules::DEFAULT_SYSTEM_NAMESPACE;

use self::conflist::PLUGIN_TYPE;
use self::kubeconfig::{ApiServer, DEFAULT_SERVICE_ACCOUNT_DIR, ServiceAccountError};
use self::net_dir::NetDirError;

/// Command line of the install role.
#[derive(Debug, Parser)]
#[command(
    name = "ztunnel-cni",
    version,
    about = "ztunnel's chained CNI plugin. Called with CNI_COMMAND set it is the plugin; these \
             commands install it on a node or remove it."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Copy the plugin into the host's CNI bin dir, write its kubeconfig and chain it into the
    /// node's primary network config.
    Install(Box<InstallArgs>),
    /// Remove the plugin's entry from the node's network configs, and its binary and kubeconfig.
    Uninstall(HostDirs),
}

/// The host directories as mounted into this container.
#[derive(Debug, Args)]
struct HostDirs {
    /// The host's CNI network config dir, as mounted here.
    #[arg(long, env = "MOUNTED_CNI_NET_DIR", default_value = "/host/etc/cni/net.d")]
    mounted_cni_net_dir: PathBuf,
    /// The host's CNI bin dir, as mounted here.
    #[arg(long, env = "MOUNTED_CNI_BIN_DIR", default_value = "/host/opt/cni/bin")]
    mounted_cni_bin_dir: PathBuf,
    /// File name of the plugin's kubeconfig in the network config dir.
    #[arg(long, env = "KUBECONFIG_FILENAME", default_value = "ZZZ-ztunnel-cni-kubeconfig")]
    kubeconfig_filename: String,
}

#[derive(Debug, Args)]
struct InstallArgs {
    #[command(flatten)]
    dirs: HostDirs,
    /// The network config dir as the host sees it (written into the plugin's config).
    #[arg(long, env = "CNI_NET_DIR", default_value = "/etc/cni/net.d")]
    cni_net_dir: PathBuf,
    /// The CNI bin dir as the host sees it (written into the plugin's config).
    #[arg(long, env = "CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// The network config file to chain into; default: the one the runtime uses (the first
    /// valid *.conf, *.conflist or *.json in lexical order).
    #[arg(long, env = "CNI_CONF_NAME")]
    cni_conf_name: Option<String>,
    /// The plugin binary to copy; default: this executable.
    #[arg(long)]
    plugin_binary: Option<PathBuf>,
    /// Where this pod's service-account token and cluster CA are.
    #[arg(long, default_value = DEFAULT_SERVICE_ACCOUNT_DIR)]
    service_account_dir: PathBuf,
    /// The API server's in-cluster address.
    #[arg(long, env = "KUBERNETES_SERVICE_HOST")]
    kubernetes_service_host: Option<String>,
    #[arg(long, env = "KUBERNETES_SERVICE_PORT")]
    kubernetes_service_port: Option<String>,
    #[arg(long, env = "KUBERNETES_SERVICE_PROTOCOL", default_value = "https")]
    kubernetes_service_protocol: String,
    /// The node agent's plugin-event socket, as the host sees it.
    #[arg(long, default_value = DEFAULT_SOCKET_PATH)]
    plugin_event_socket: PathBuf,
    /// Istio's system namespace (where ztunnel runs).
    #[arg(long, env = "POD_NAMESPACE", default_value = DEFAULT_SYSTEM_NAMESPACE)]
    system_namespace: String,
    /// Namespaces whose pods are never enrolled (comma-separated); default: kube-system and the
    /// system namespace.
    #[arg(long, value_delimiter = ',')]
    exclude_namespaces: Option<Vec<String>>,
    /// The plugin's log level on stderr (none, error, warn, info, debug, trace).
    #[arg(long, env = "PLUGIN_LOG_LEVEL")]
    plugin_log_level: Option<String>,
    /// Keep checking and repair what changes.
    #[arg(long)]
    watch: bool,
    /// How often `--watch` checks, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=600_000))]
    watch_interval_ms: u64,
}

/// What stops an install or uninstall; messages name the file (and field).
#[derive(Debug, thiserror::Error)]
enum InstallError {
    #[error("{0} not set (is this running in a pod? or pass --{flag})", flag = .0.to_lowercase().replace('_', "-"))]
    MissingEnv(&'static str),
    #[error("the plugin binary: {0}")]
    OwnBinary(std::io::Error),
    #[error("copying {from} to {to}: {source}")]
    Copy { from: PathBuf, to: PathBuf, source: std::io::Error },
    #[error("service account: {0}")]
    ServiceAccount(#[from] ServiceAccountError),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    NetDir(#[from] NetDirError),
}

/// Runs a command; errors go to stderr and a failing exit status.
pub(crate) fn main(cli: Cli) -> ExitCode {
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).try_init();
    let outcome = match cli.command {
        CliCommand::Install(args) if args.watch => watch(&args),
        CliCommand::Install(args) => reconcile(&args).map(|changes| report("installed", &changes)),
        CliCommand::Uninstall(dirs) => uninstall(&dirs).map(|changes| report("uninstalled", &changes)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ztunnel-cni: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(what: &str, changes: &[String]) {
    if changes.is_empty() {
        tracing::info!("{what}: nothing to change");
    }
    for change in changes {
        tracing::info!("{what}: {change}");
    }
}

/// Installs, then keeps checking every interval until the process is stopped.
fn watch(args: &InstallArgs) -> Result<(), InstallError> {
    let interval = Duration::from_millis(args.watch_interval_ms);
    let mut last_error = None;
    loop {
        match reconcile(args) {
            Ok(changes) => {
                if last_error.take().is_some() || !changes.is_empty() {
                    report("installed", &changes);
                }
            }
            Err(e) => {
                let message = e.to_string();
                if last_error.as_ref() != Some(&message) {
                    tracing::warn!("{message}; retrying every {interval:?}");
                }
                last_error = Some(message);
            }
        }
        std::thread::sleep(interval);
    }
}

/// Brings binary, kubeconfig and chain entry to the wanted state; says what it changed.
fn reconcile(args: &InstallArgs) -> Result<Vec<String>, InstallError> {
    let mut changes = Vec::new();
    let source = match &args.plugin_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(InstallError::OwnBinary)?,
    };
    let target = args.dirs.mounted_cni_bin_dir.join(PLUGIN_TYPE);
    let copied = files::copy_executable_if_changed(&source, &target).map_err(|source_error| InstallError::Copy {
        from: source.clone(),
        to: target.clone(),
        source: source_error,
    })?;
    if copied {
        changes.push(format!("copied {} to {}", source.display(), target.display()));
    }

    let server = ApiServer {
        protocol: args.kubernetes_service_protocol.clone(),
        host: args.kubernetes_service_host.clone().ok_or(InstallError::MissingEnv("KUBERNETES_SERVICE_HOST"))?,
        port: args.kubernetes_service_port.clone().ok_or(InstallError::MissingEnv("KUBERNETES_SERVICE_PORT"))?,
    };
    let (token, ca) = kubeconfig::read_service_account(&args.service_account_dir)?;
    let kubeconfig_path = args.dirs.mounted_cni_net_dir.join(&args.dirs.kubeconfig_filename);
    let text = kubeconfig::render(&server, &token, &ca);
    let wrote = files::write_if_changed(&kubeconfig_path, text.as_bytes(), 0o600)
        .map_err(|source| InstallError::Write { path: kubeconfig_path.clone(), source })?;
    if wrote {
        changes.push(format!("wrote {} for {}", kubeconfig_path.display(), server.url()));
    }

    let file = net_dir::primary(&args.dirs.mounted_cni_net_dir, args.cni_conf_name.as_deref())?;
    let (list, changed) = conflist::chain(file.config.clone(), &plugin_entry(args));
    if changed {
        let written = net_dir::replace(&file, &list)?;
        changes.push(format!("chained {PLUGIN_TYPE} last into {}", written.display()));
    }
    Ok(changes)
}

/// Our entry in the network config list.
fn plugin_entry(args: &InstallArgs) -> Value {
    let excluded = args
        .exclude_namespaces
        .clone()
        .unwrap_or_else(|| vec!["kube-system".to_string(), args.system_namespace.clone()]);
    let mut entry = json!({
        "name": PLUGIN_TYPE,
        "type": PLUGIN_TYPE,
        "plugin_event_socket": args.plugin_event_socket,
        "system_namespace": args.system_namespace,
        "kubernetes": {
            "kubeconfig": args.cni_net_dir.join(&args.dirs.kubeconfig_filename),
            "cni_bin_dir": args.cni_bin_dir,
            "exclude_namespaces": excluded,
        },
    });
    if let Some(level) = &args.plugin_log_level {
        entry["log_level"] = Value::from(level.as_str());
    }
    entry
}

/// Removes our entries from every network config in the dir, then our files.
fn uninstall(dirs: &HostDirs) -> Result<Vec<String>, InstallError> {
    let mut changes = Vec::new();
    for path in net_dir::candidates(&dirs.mounted_cni_net_dir)? {
        // Files that do not load are not ours to judge; a runtime skips them as well.
        let Ok(file) = net_dir::load(&path) else { continue };
        let conflist::NetworkConfig::List(list) = &file.config else { continue };
        let (list, removed) = conflist::unchain(list.clone());
        if removed > 0 {
            net_dir::replace(&file, &list)?;
            changes.push(format!("removed {PLUGIN_TYPE} from {}", path.display()));
        }
    }
    for path in [dirs.mounted_cni_bin_dir.join(PLUGIN_TYPE), dirs.mounted_cni_net_dir.join(&dirs.kubeconfig_filename)] {
        if remove(&path)? {
            changes.push(format!("removed {}", path.display()));
        }
    }
    Ok(changes)
}

fn remove(path: &Path) -> Result<bool, InstallError> {
    files::remove_if_present(path).map_err(|source| InstallError::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests;
