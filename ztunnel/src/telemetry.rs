//! Logging setup and the per-connection access log.
//!
//! Owns the process's `tracing` subscriber: an [`EnvFilter`] behind a reload layer (so the
//! admin `/logging` endpoint can change levels live through a [`LogHandle`]) feeding a text
//! or JSON formatter on stdout. The access log ([`log_connection`]) is one event per
//! connection with target `access`.
//!
//! This module must not decide what gets logged elsewhere or know about connections beyond
//! the plain values in [`ConnectionLog`]; serving `/logging` over HTTP lives in `admin`.

use std::io::IsTerminal as _;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::Dispatch;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::ParseError;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry, reload};

mod access_log;
#[cfg(test)]
mod tests;

pub use access_log::{ACCESS_LOG_TARGET, ConnectionFailure, ConnectionLog, Direction, FailureSource, log_connection};

/// The filter used when none is configured.
pub const DEFAULT_FILTER: &str = "info";

/// Errors from this module.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log filter {spec:?}: {source}")]
    InvalidFilter {
        spec: String,
        #[source]
        source: ParseError,
    },
    #[error("log filter {spec:?}: no directives")]
    EmptyFilter { spec: String },
    #[error("log format {value:?}: expected \"plain\" (or \"text\") or \"json\"")]
    UnknownFormat { value: String },
    #[error("log filter: the subscriber it controls is gone")]
    Reload(#[source] reload::Error),
    #[error("tracing: a global subscriber not installed by telemetry::init already exists")]
    ForeignSubscriber,
}

/// Output format of every log line, access log included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable `key=value` lines (Istio's `LOG_FORMAT=plain`).
    #[default]
    Text,
    /// One JSON object per line, event fields at the top level (Istio's `LOG_FORMAT=json`).
    Json,
}

impl FromStr for LogFormat {
    type Err = TelemetryError;

    fn from_str(s: &str) -> Result<LogFormat, TelemetryError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "plain" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(TelemetryError::UnknownFormat { value: s.to_string() }),
        }
    }
}

/// Changes the log filter of a subscriber while it runs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LogHandle {
    inner: Arc<HandleInner>,
}

#[derive(Debug)]
struct HandleInner {
    filter: reload::Handle<EnvFilter, Registry>,
    initial: String,
    /// Serializes read-modify-write updates so concurrent `/logging` calls do not lose one.
    update: Mutex<()>,
    /// Keeps a subscriber that is not installed globally alive (see [`LogHandle::detached`]).
    _subscriber: Option<Dispatch>,
}

/// The handle of the subscriber installed by the first successful [`init`].
static GLOBAL: Mutex<Option<LogHandle>> = Mutex::new(None);

/// Installs the global subscriber writing `format` lines to stdout, filtered by `filter`
/// (`EnvFilter` syntax, e.g. `info` or `hbone=debug,info`; Istio's `target:level` form is
/// accepted too). Only the first call in a process installs anything: later calls return the
/// handle of the subscriber already installed and ignore their arguments.
pub fn init(format: LogFormat, filter: &str) -> Result<LogHandle, TelemetryError> {
    let mut global = GLOBAL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = global.as_ref() {
        tracing::debug!(
            requested = filter,
            current = %handle.current(),
            "logging already initialized; keeping the existing subscriber"
        );
        return Ok(handle.clone());
    }
    let env_filter = parse_filter(filter)?;
    let ansi = std::io::stdout().is_terminal();
    let (dispatch, reload) = build(format, env_filter, std::io::stdout, ansi);
    tracing::dispatcher::set_global_default(dispatch).map_err(|_| TelemetryError::ForeignSubscriber)?;
    let handle = LogHandle::new(reload, filter, None);
    *global = Some(handle.clone());
    Ok(handle)
}

/// Builds a subscriber (not installed anywhere) and the handle of its filter.
fn build<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> (Dispatch, reload::Handle<EnvFilter, Registry>)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter_layer, reload) = reload::Layer::new(filter);
    let output = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(writer).boxed(),
    };
    let subscriber = Registry::default().with(filter_layer).with(output);
    (Dispatch::new(subscriber), reload)
}

/// Parses a filter spec strictly (any bad directive is an error), after rewriting Istio's
/// `target:level` directives into `target=level`.
pub(crate) fn parse_filter(spec: &str) -> Result<EnvFilter, TelemetryError> {
    let normalized = normalize_filter(spec);
    if normalized.split(',').all(|d| d.trim().is_empty()) {
        return Err(TelemetryError::EmptyFilter { spec: spec.to_string() });
    }
    EnvFilter::builder()
        .with_regex(false)
        .parse(&normalized)
        .map_err(|source| TelemetryError::InvalidFilter { spec: spec.to_string(), source })
}

/// Rewrites each `target:level` directive (single colon, so `a::b` paths are untouched) to
/// `target=level`; everything else is kept as written.
fn normalize_filter(spec: &str) -> String {
    spec.split(',')
        .map(|directive| {
            let directive = directive.trim();
            if directive.contains(['=', '[', '{']) {
                return directive.to_string();
            }
            match directive.rsplit_once(':') {
                Some((target, level))
                    if !target.is_empty() && !target.ends_with(':') && LevelFilter::from_str(level).is_ok() =>
                {
                    format!("{target}={level}")
                }
                _ => directive.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl LogHandle {
    fn new(filter: reload::Handle<EnvFilter, Registry>, initial: &str, subscriber: Option<Dispatch>) -> LogHandle {
        LogHandle {
            inner: Arc::new(HandleInner {
                filter,
                initial: initial.to_string(),
                update: Mutex::new(()),
                _subscriber: subscriber,
            }),
        }
    }

    /// A handle to a fresh subscriber that is installed nowhere and writes nothing: for
    /// exercising code that takes a `LogHandle` without touching the global subscriber.
    pub fn detached(filter: &str) -> Result<LogHandle, TelemetryError> {
        let (dispatch, reload) = build(LogFormat::Text, parse_filter(filter)?, std::io::sink, false);
        Ok(LogHandle::new(reload, filter, Some(dispatch)))
    }

    /// Replaces the whole filter with `spec`.
    pub fn set_filter(&self, spec: &str) -> Result<(), TelemetryError> {
        let filter = parse_filter(spec)?;
        let _update = self.lock_update();
        self.install(filter)
    }

    /// Adds `spec`'s directives on top of the current filter; a directive for a target that
    /// already has one replaces it (`debug` on top of `info` yields `debug`). This is how
    /// Istio's `/logging?level=` behaves.
    pub fn add_directives(&self, spec: &str) -> Result<(), TelemetryError> {
        if normalize_filter(spec).split(',').all(|d| d.trim().is_empty()) {
            return Err(TelemetryError::EmptyFilter { spec: spec.to_string() });
        }
        let _update = self.lock_update();
        let merged = format!("{},{}", self.current(), spec);
        let filter = parse_filter(&merged).map_err(|e| with_spec(e, spec))?;
        self.install(filter)
    }

    /// Restores the filter given at startup, then adds `spec`'s directives if not empty.
    pub fn reset(&self, spec: &str) -> Result<(), TelemetryError> {
        let merged = if spec.trim().is_empty() {
            self.inner.initial.clone()
        } else {
            format!("{},{}", self.inner.initial, spec)
        };
        let filter = parse_filter(&merged).map_err(|e| with_spec(e, spec))?;
        let _update = self.lock_update();
        self.install(filter)
    }

    /// The filter in effect, in `EnvFilter` syntax.
    pub fn current(&self) -> String {
        self.inner.filter.with_current(|f| f.to_string()).unwrap_or_else(|e| format!("unavailable ({e})"))
    }

    /// The filter given at startup.
    pub fn initial(&self) -> &str {
        &self.inner.initial
    }

    fn install(&self, filter: EnvFilter) -> Result<(), TelemetryError> {
        self.inner.filter.reload(filter).map_err(TelemetryError::Reload)?;
        tracing::info!(filter = %self.current(), "log filter changed");
        Ok(())
    }

    fn lock_update(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.update.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reports a parse failure against the spec the caller gave, not the merged string.
fn with_spec(error: TelemetryError, spec: &str) -> TelemetryError {
    match error {
        TelemetryError::InvalidFilter { source, .. } => {
            TelemetryError::InvalidFilter { spec: spec.to_string(), source }
        }
        other => other,
    }
}
