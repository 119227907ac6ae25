//! The Prometheus endpoint (port 15020): `/metrics` and `/stats/prometheus`.
//!
//! The body is always the OpenMetrics text of [`Metrics`]; like Istio's ztunnel, the content
//! type is the OpenMetrics one when the scraper's `Accept` asks for it and plain text
//! otherwise.

use std::sync::Arc;

use http::header::ACCEPT;
use http::{HeaderMap, StatusCode};
use tokio::net::TcpListener;

use super::server::{self, HttpResponse};
use crate::drain::DrainWatch;
use crate::metrics::Metrics;

/// Content type answered to scrapers that accept OpenMetrics.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text;charset=utf-8;version=1.0.0";
/// Content type answered otherwise.
pub(crate) const PLAIN_TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Serves the metrics endpoint on `listener` until `drain` fires.
pub(crate) async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>, drain: DrainWatch) {
    server::serve("metrics", listener, drain, move |req| {
        let metrics = metrics.clone();
        async move {
            match req.uri().path() {
                "/metrics" | "/stats/prometheus" => render(&metrics, req.headers()),
                _ => server::not_found(),
            }
        }
    })
    .await
}

fn render(metrics: &Metrics, headers: &HeaderMap) -> HttpResponse {
    match metrics.try_encode() {
        Ok(body) => server::with_type(StatusCode::OK, body, content_type(headers)),
        Err(error) => server::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
    }
}

/// OpenMetrics if any `Accept` entry names `application/openmetrics-text`, else plain text.
fn content_type(headers: &HeaderMap) -> &'static str {
    let wants_openmetrics = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.split(';').next())
        .any(|media| media.trim().eq_ignore_ascii_case("application/openmetrics-text"));
    if wants_openmetrics { OPENMETRICS_CONTENT_TYPE } else { PLAIN_TEXT_CONTENT_TYPE }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn accept(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(ACCEPT, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn negotiates_content_type_like_istio() {
        assert_eq!(content_type(&accept(&[])), PLAIN_TEXT_CONTENT_TYPE);
        assert_eq!(content_type(&accept(&["application/json"])), PLAIN_TEXT_CONTENT_TYPE);
        assert_eq!(
            content_type(&accept(&["application/json", "application/openmetrics-text; x"])),
            OPENMETRICS_CONTENT_TYPE
        );
        // What Prometheus 3 sends.
        let prometheus = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
        assert_eq!(content_type(&accept(&[prometheus])), OPENMETRICS_CONTENT_TYPE);
    }
}
