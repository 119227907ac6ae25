//! What the benchmark found, as plain data: per scenario the unit, the direct (no mesh) and
//! mesh series of repeated runs with their median, min and max, the ratio of the medians, the
//! target it is judged against, and scenario-specific details. Rendered as the table printed
//! at the end and as the JSON written by `--json` (one object keyed by scenario id).

use serde_json::{Value, json};

/// Repeated measurements of one quantity.
#[derive(Clone, Debug, Default)]
pub(crate) struct Series {
    pub(crate) runs: Vec<f64>,
}

impl Series {
    pub(crate) fn push(&mut self, value: f64) {
        self.runs.push(value);
    }

    /// The median run (the mean of the middle two for an even count); 0 if no runs.
    pub(crate) fn median(&self) -> f64 {
        let mut sorted = self.runs.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => 0.0,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    pub(crate) fn min(&self) -> f64 {
        self.runs.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub(crate) fn max(&self) -> f64 {
        self.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    fn json(&self) -> Value {
        json!({ "median": round(self.median()), "min": round(self.min()), "max": round(self.max()), "runs": self.runs.iter().map(|v| round(*v)).collect::<Vec<_>>() })
    }

    fn shown(&self) -> String {
        if self.runs.len() > 1 {
            format!("{} [{}–{}]", figure(self.median()), figure(self.min()), figure(self.max()))
        } else {
            figure(self.median())
        }
    }
}

/// Which way is better for a scenario's headline figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Better {
    Higher,
    Lower,
}

/// A target: the headline figure (or the ratio) against a bound.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// As the issue states it, e.g. `mesh >= 0.40 x direct`.
    pub(crate) text: String,
    /// Whether the measured figure meets it.
    pub(crate) met: bool,
}

/// One scenario's result.
#[derive(Clone, Debug)]
pub(crate) struct ScenarioResult {
    pub(crate) id: &'static str,
    pub(crate) title: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) better: Better,
    pub(crate) direct: Option<Series>,
    pub(crate) mesh: Series,
    pub(crate) targets: Vec<Target>,
    /// Scenario-specific figures (percentiles, per-ztunnel numbers, sizes).
    pub(crate) details: Value,
}

impl ScenarioResult {
    /// mesh median / direct median, where there is a baseline.
    pub(crate) fn ratio(&self) -> Option<f64> {
        let direct = self.direct.as_ref()?.median();
        (direct != 0.0).then(|| self.mesh.median() / direct)
    }

    fn json(&self) -> Value {
        json!({
            "title": self.title,
            "unit": self.unit,
            "higher_is_better": self.better == Better::Higher,
            "direct": self.direct.as_ref().map(Series::json),
            "mesh": self.mesh.json(),
            "ratio": self.ratio().map(|r| (r * 1000.0).round() / 1000.0),
            "targets": self.targets.iter().map(|t| json!({ "target": t.text, "met": t.met })).collect::<Vec<_>>(),
            "details": self.details,
        })
    }
}

/// The JSON document: one object keyed by scenario id, plus `meta`.
pub(crate) fn to_json(results: &[ScenarioResult], meta: Value) -> Value {
    let mut doc = serde_json::Map::new();
    doc.insert("meta".into(), meta);
    for r in results {
        doc.insert(r.id.into(), r.json());
    }
    Value::Object(doc)
}

/// The table printed at the end of a run.
pub(crate) fn table(results: &[ScenarioResult]) -> String {
    let header = ["id", "scenario", "unit", "direct", "mesh", "ratio", "targets"];
    let mut rows: Vec<[String; 7]> = vec![header.map(str::to_string)];
    for r in results {
        let targets: Vec<String> =
            r.targets.iter().map(|t| format!("{} {}", if t.met { "met" } else { "MISSED" }, t.text)).collect();
        rows.push([
            r.id.to_string(),
            r.title.to_string(),
            r.unit.to_string(),
            r.direct.as_ref().map_or_else(|| "-".to_string(), Series::shown),
            r.mesh.shown(),
            r.ratio().map_or_else(|| "-".to_string(), |x| format!("{x:.2}x")),
            targets.join("; "),
        ]);
    }
    let widths: Vec<usize> = (0..7).map(|c| rows.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A number shown with about three significant digits.
pub(crate) fn figure(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// JSON numbers keep three decimals.
pub(crate) fn round(v: f64) -> f64 {
    if v.is_finite() { (v * 1000.0).round() / 1000.0 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(runs: &[f64]) -> Series {
        Series { runs: runs.to_vec() }
    }

    #[test]
    fn median_min_max_of_odd_and_even_counts() {
        let s = series(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median(), s.min(), s.max()), (2.0, 1.0, 3.0));
        assert_eq!(series(&[4.0, 1.0, 2.0, 3.0]).median(), 2.5);
        assert_eq!(series(&[]).median(), 0.0);
    }

    #[test]
    fn json_is_keyed_by_scenario_with_ratio_and_raw_runs() {
        let r = ScenarioResult {
            id: "S4",
            title: "new connections",
            unit: "conn/s",
            better: Better::Higher,
            direct: Some(series(&[1000.0, 1200.0, 1100.0])),
            mesh: series(&[500.0, 400.0, 450.0]),
            targets: vec![Target { text: "mesh >= 0.40 x direct".into(), met: true }],
            details: json!({}),
        };
        let doc = to_json(&[r], json!({ "quick": true }));
        assert_eq!(doc["S4"]["direct"]["median"], 1100.0);
        assert_eq!(doc["S4"]["mesh"]["runs"], json!([500.0, 400.0, 450.0]));
        assert_eq!(doc["S4"]["ratio"], 0.409);
        assert_eq!(doc["S4"]["targets"][0]["met"], true);
        assert_eq!(doc["meta"]["quick"], true);
    }

    #[test]
    fn no_baseline_means_null_direct_and_ratio() {
        let r = ScenarioResult {
            id: "S7",
            title: "state",
            unit: "B/workload",
            better: Better::Lower,
            direct: None,
            mesh: series(&[700.0]),
            targets: Vec::new(),
            details: json!({}),
        };
        let doc = to_json(std::slice::from_ref(&r), json!({}));
        assert!(doc["S7"]["direct"].is_null() && doc["S7"]["ratio"].is_null());
        assert!(table(&[r]).contains("S7"), "the table lists the scenario");
    }
}
