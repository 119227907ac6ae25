//! The chained CNI plugin (spec 1.0.0; configs of 0.3.0, 0.3.1 and 0.4.0 are accepted too).
//!
//! - **ADD** prints `prevResult` unchanged. Before that, for a Kubernetes pod (`K8S_POD_NAME`
//!   and `K8S_POD_NAMESPACE` in `CNI_ARGS`) that is not in an excluded namespace and is not
//!   one of ztunnel's own pods (`ztunnel-*` in the system namespace, checked by name so the
//!   node agent's own sandbox never waits on the agent or on a kubeconfig the agent writes),
//!   it reads the pod and its namespace from the API server and applies Istio's rules. Only a
//!   pod that belongs in the mesh is sent to the node agent over the plugin-event socket, and
//!   ADD returns once the agent says the pod is captured, so the pod's first connection is
//!   captured. An agent that cannot be reached or does not confirm fails ADD (fail closed).
//! - **API server unreachable**: as Istio's plugin, ADD retries the reads until the deadline
//!   (`kubernetes.api_deadline_seconds`, 30 s by default) and then fails: the plugin cannot
//!   tell whether the pod belongs in the mesh, and the runtime retries the sandbox later.
//! - **DEL** and **CHECK** succeed without doing anything: the node agent releases a pod when
//!   its watch sees it deleted, and holds no state the runtime could check.
//! - **VERSION** lists the supported versions.
//!
//! stdout carries only the result or the error; logs go to stderr, and only when the config
//! sets `log_level`.

pub(crate) mod agent;
pub(crate) mod config;
pub(crate) mod env;
pub(crate) mod error;
pub(crate) mod pod_lookup;
pub(crate) mod prev_result;

use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::{Value, json};
use ztunnel::kubernetes::cni_event::{ANSWER_TIMEOUT, PodAdded};
use ztunnel::kubernetes::rules::Decision;

use self::config::{IMPLEMENTED_VERSION, PluginConfig, SUPPORTED_VERSIONS};
use self::env::{Command, EnvSource, PodRef, ProcessEnv};
use self::error::PluginError;

/// Name prefix of ztunnel's own pods (the DaemonSet `ztunnel`) in the system namespace.
const OWN_POD_PREFIX: &str = "ztunnel-";

/// Runs one plugin call from the process environment and stdin; prints the outcome.
pub(crate) fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run(&ProcessEnv, &stdin),
        Err(e) => Err(PluginError::Stdin(e)),
    };
    let mut out = std::io::stdout().lock();
    let (printed, code) = match outcome {
        Ok(Some(result)) => (Some(result), ExitCode::SUCCESS),
        Ok(None) => (None, ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!("{e}");
            let version = config::version_hint(&stdin)
                .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
                .unwrap_or_else(|| IMPLEMENTED_VERSION.to_string());
            (Some(e.to_json(&version)), ExitCode::FAILURE)
        }
    };
    if let Some(value) = printed {
        let written =
            serde_json::to_writer(&mut out, &value).map_err(std::io::Error::from).and_then(|()| out.write_all(b"\n"));
        if written.is_err() {
            return ExitCode::FAILURE;
        }
    }
    code
}

/// One plugin call: what to print on success (`None`: nothing).
pub(crate) fn run(env: &impl EnvSource, stdin: &[u8]) -> Result<Option<Value>, PluginError> {
    let command = env::command(env)?;
    if command == Command::Version {
        return Ok(Some(json!({ "cniVersion": IMPLEMENTED_VERSION, "supportedVersions": SUPPORTED_VERSIONS })));
    }
    let conf = config::parse(stdin)?;
    init_logging(&conf);
    let invocation = env::invocation(env, command)?;
    match command {
        Command::Add => add(&conf, invocation).map(Some),
        Command::Check if !conf.supports_check() => Err(PluginError::CheckUnsupported(conf.cni_version)),
        Command::Check | Command::Del => {
            tracing::debug!(container = %invocation.container_id, ?command, "nothing to do");
            Ok(None)
        }
        Command::Version => unreachable!("answered above"),
    }
}

fn add(conf: &PluginConfig, invocation: env::Invocation) -> Result<Value, PluginError> {
    let result = prev_result::add_result(conf.prev_result.as_ref(), &conf.cni_version);
    let Some(pod) = invocation.pod.pod_ref() else {
        tracing::debug!(container = %invocation.container_id, "not a Kubernetes pod");
        return Ok(result);
    };
    if conf.scope.excluded_namespaces.contains(&pod.namespace) {
        tracing::info!(%pod, "namespace excluded");
        return Ok(result);
    }
    if is_own_pod(&pod, conf) {
        tracing::info!(%pod, "ztunnel's own pod");
        return Ok(result);
    }
    let verdict = pod_lookup::judge(conf, &pod)?;
    if let Decision::Skip(reason) = verdict.decision {
        tracing::info!(%pod, %reason, "not enrolled");
        return Ok(result);
    }
    let ips = prev_result::pod_ips(conf.prev_result.as_ref())
        .map_err(|source| PluginError::PrevResult { pod: pod.clone(), source })?;
    let added = PodAdded {
        pod_uid: invocation.pod.uid.or(verdict.uid).unwrap_or_default(),
        pod_name: pod.name.clone(),
        pod_namespace: pod.namespace.clone(),
        netns: invocation.netns.unwrap_or_default().into(),
        container_id: invocation.container_id,
        ips,
    };
    tracing::info!(%pod, socket = %conf.plugin_event_socket.display(), "asking the node agent to capture the pod");
    agent::request_capture(&conf.plugin_event_socket, &added, ANSWER_TIMEOUT)
        .map_err(|source| PluginError::Agent { pod: pod.clone(), source })?;
    tracing::info!(%pod, "captured");
    Ok(result)
}

fn is_own_pod(pod: &PodRef, conf: &PluginConfig) -> bool {
    pod.namespace == conf.scope.system_namespace && pod.name.starts_with(OWN_POD_PREFIX)
}

/// Logs to stderr at the configured level; nothing when `log_level` is unset.
fn init_logging(conf: &PluginConfig) {
    let Some(level) = &conf.log_level else { return };
    let _already = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .try_init();
}

#[cfg(test)]
mod tests;
