//! The monitoring stack beside Flotilla (Prometheus, Loki, Grafana), as the web UI's monitoring
//! tab reports it: each configured service is probed at its readiness endpoint, and Prometheus is
//! asked how many of its scrape targets are up.

use std::time::Duration;

use serde::Deserialize;

use crate::config::MonitoringConfig;
use crate::outbound;

/// Longest wait for one probe or query.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Error text of a service that is not configured.
pub const NOT_CONFIGURED: &str = "not configured";

/// The stack as configured, checked at start.
#[derive(Debug, Clone, Default)]
pub struct Monitoring {
    pub prometheus_url: Option<String>,
    pub loki_url: Option<String>,
    pub grafana_url: Option<String>,
    /// Where the reverse proxy serves Grafana, without slashes (`grafana`).
    pub grafana_public_path: String,
    /// The panel's `--base-path` without slashes (`my-panel`), or empty.
    pub panel_path: String,
}

impl Monitoring {
    /// Checks `config` (every URL http(s)) and resolves its defaults.
    pub fn new(config: &MonitoringConfig, base_path: Option<&str>) -> Result<Monitoring, String> {
        let url = |key: &str, raw: &Option<String>| {
            raw.as_deref()
                .filter(|u| !u.trim().is_empty())
                .map(|u| outbound::parse_http_url(u).map_err(|e| format!("monitoring {key} {u:?}: {e}")))
                .transpose()
        };
        Ok(Monitoring {
            prometheus_url: url("prometheus_url", &config.prometheus_url)?,
            loki_url: url("loki_url", &config.loki_url)?,
            grafana_url: url("grafana_url", &config.grafana_url)?,
            grafana_public_path: config
                .grafana_public_path
                .as_deref()
                .unwrap_or("grafana")
                .trim_matches('/')
                .to_string(),
            panel_path: base_path.unwrap_or_default().trim_matches('/').to_string(),
        })
    }
}

/// The outcome of probing one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub enabled: bool,
    /// The configured URL, without credentials; empty when not configured.
    pub url: String,
    /// It answered 2xx.
    pub ok: bool,
    pub status_code: Option<u16>,
    /// Empty when ok; else why not (`not configured`, the transport error, or the answer's start).
    pub error: String,
}

/// Probes `{url}{path}` (blocking; call from `spawn_blocking`). `None` is a service that is not
/// configured.
pub fn probe(url: Option<&str>, path: &str) -> Probe {
    let Some(url) = url else {
        return Probe {
            enabled: false,
            url: String::new(),
            ok: false,
            status_code: None,
            error: NOT_CONFIGURED.into(),
        };
    };
    let shown = outbound::redact(url);
    let answer = outbound::agent(TIMEOUT, true).get(&format!("{url}{path}")).call();
    match answer {
        Ok(resp) => {
            Probe { enabled: true, url: shown, ok: true, status_code: Some(resp.status()), error: String::new() }
        }
        Err(ureq::Error::Status(code, resp)) => {
            // The start of the answer usually says why (Loki: "Ingester not ready: …").
            let text: String = resp.into_string().unwrap_or_default().trim().chars().take(120).collect();
            let error = if text.is_empty() { format!("HTTP {code}") } else { text };
            Probe { enabled: true, url: shown, ok: false, status_code: Some(code), error }
        }
        Err(e) => Probe { enabled: true, url: shown, ok: false, status_code: None, error: outbound::describe(&e) },
    }
}

/// Why a Prometheus query gave no number.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Request(String),
    #[error("unexpected answer: {0}")]
    Answer(String),
}

/// Runs an instant query against Prometheus's HTTP API (blocking) and returns the value of its
/// first series; an empty result (no series) is 0, as `sum()` over nothing is.
pub fn prometheus_query(prometheus_url: &str, query: &str) -> Result<f64, QueryError> {
    let answer = outbound::agent(TIMEOUT, true)
        .get(&format!("{prometheus_url}/api/v1/query"))
        .query("query", query)
        .call()
        .map_err(|e| QueryError::Request(outbound::describe(&e)))?;
    let body = answer.into_string().map_err(|e| QueryError::Request(e.to_string()))?;
    parse_query_answer(&body)
}

#[derive(Deserialize)]
struct QueryAnswer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<QueryData>,
}

#[derive(Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// Reads the value out of an instant query's answer (`vector` or `scalar`).
pub fn parse_query_answer(body: &str) -> Result<f64, QueryError> {
    let answer: QueryAnswer = serde_json::from_str(body).map_err(|e| QueryError::Answer(e.to_string()))?;
    if answer.status != "success" {
        return Err(QueryError::Answer(answer.error.unwrap_or(answer.status)));
    }
    let data = answer.data.ok_or_else(|| QueryError::Answer("no data".into()))?;
    // A sample is `[<unix time>, "<value as a string>"]`.
    let value = match data.result_type.as_str() {
        "vector" => match data.result.as_array().and_then(|r| r.first()) {
            None => return Ok(0.0),
            Some(series) => series["value"][1].clone(),
        },
        "scalar" => data.result[1].clone(),
        other => return Err(QueryError::Answer(format!("result type {other}"))),
    };
    value.as_str().and_then(|v| v.parse::<f64>().ok()).ok_or_else(|| QueryError::Answer(format!("value {value}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_answers_are_read() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1741800000.123,"3"]}]}}"#;
        assert_eq!(parse_query_answer(vector).unwrap(), 3.0);
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_query_answer(empty).unwrap(), 0.0);
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1741800000,"2.5"]}}"#;
        assert_eq!(parse_query_answer(scalar).unwrap(), 2.5);
        let bad = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert!(parse_query_answer(bad).unwrap_err().to_string().contains("parse error"));
        assert!(parse_query_answer("Prometheus Server is Ready.").is_err());
    }

    #[test]
    fn config_is_checked_and_paths_trimmed() {
        let m = Monitoring::new(&MonitoringConfig::default(), Some("/my-panel")).unwrap();
        assert_eq!((m.grafana_public_path.as_str(), m.panel_path.as_str()), ("grafana", "my-panel"));
        assert!(m.prometheus_url.is_none());
        let c = MonitoringConfig {
            prometheus_url: Some("http://127.0.0.1:9090/".into()),
            grafana_public_path: Some("/ops/grafana/".into()),
            ..Default::default()
        };
        let m = Monitoring::new(&c, None).unwrap();
        assert_eq!(m.prometheus_url.as_deref(), Some("http://127.0.0.1:9090"));
        assert_eq!((m.grafana_public_path.as_str(), m.panel_path.as_str()), ("ops/grafana", ""));
        let bad = MonitoringConfig { loki_url: Some("loki:3100".into()), ..Default::default() };
        assert!(Monitoring::new(&bad, None).unwrap_err().contains("loki_url"));
    }

    #[test]
    fn an_unconfigured_service_is_not_probed() {
        let p = probe(None, "/-/ready");
        assert_eq!(
            p,
            Probe { enabled: false, url: String::new(), ok: false, status_code: None, error: NOT_CONFIGURED.into() }
        );
    }
}
