//! `metrics.jsonl` (one object per evaluation) and the `loss.svg` loss curve.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// One evaluation, one line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Optimizer steps taken.
    pub iter: usize,
    /// Mean training loss over the evaluation batches.
    pub train_loss: f32,
    /// Mean validation loss over the evaluation batches.
    pub val_loss: f32,
    /// Learning rate of the latest step.
    pub lr: f64,
    /// Training throughput since the previous evaluation.
    pub tokens_per_s: f64,
    /// Training wall time so far, in seconds.
    pub elapsed_s: f64,
}

/// Appends `record` to the JSON-lines file at `path`.
pub fn append(path: &Path, record: &EvalRecord) -> Result<(), TrainError> {
    let line = serde_json::to_string(record).expect("a record always serialises");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    writeln!(file, "{line}").map_err(|e| TrainError::io(path, e))
}

/// Reads the records of `path` (none if it does not exist); unreadable lines are skipped.
pub fn read(path: &Path) -> Vec<EvalRecord> {
    fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Rewrites `path` with `records` (used on resume to drop evaluations past the checkpoint).
pub fn rewrite(path: &Path, records: &[EvalRecord]) -> Result<(), TrainError> {
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).expect("a record always serialises") + "\n")
        .collect();
    Ok(quill_data::corpus::write_atomic(path, text.as_bytes())?)
}

/// Draws train and val loss against iteration as an SVG document.
pub fn loss_svg(records: &[EvalRecord]) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 400.0, 60.0, 20.0, 20.0, 40.0);
    let max_iter = records.iter().map(|r| r.iter).max().unwrap_or(1).max(1) as f64;
    let losses = records
        .iter()
        .flat_map(|r| [r.train_loss, r.val_loss])
        .filter(|l| l.is_finite());
    let (lo, hi) = losses.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), l| {
        (lo.min(l), hi.max(l))
    });
    let (lo, hi) = if lo.is_finite() {
        (lo as f64, (hi as f64).max(lo as f64 + 1e-3))
    } else {
        (0.0, 1.0)
    };
    let x = |iter: usize| left + (w - left - right) * iter as f64 / max_iter;
    let y = |loss: f64| top + (h - top - bottom) * (hi - loss) / (hi - lo);
    let line = |pick: fn(&EvalRecord) -> f32, colour: &str| {
        let points: Vec<String> = records
            .iter()
            .map(|r| format!("{:.1},{:.1}", x(r.iter), y(pick(r) as f64)))
            .collect();
        format!(
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        )
    };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>
"#,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=4 {
        let loss = lo + (hi - lo) * i as f64 / 4.0;
        svg += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{loss:.2}</text>\n",
            left - 6.0,
            y(loss) + 4.0
        );
        let iter = (max_iter * i as f64 / 4.0) as usize;
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{iter}</text>\n",
            x(iter),
            h - bottom + 16.0
        );
    }
    svg += &line(|r| r.train_loss, "#1f77b4");
    svg += "\n";
    svg += &line(|r| r.val_loss, "#ff7f0e");
    svg += &format!(
        "\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">iter</text>\n\
         <text x=\"{}\" y=\"34\" fill=\"#1f77b4\" text-anchor=\"end\">train loss</text>\n\
         <text x=\"{}\" y=\"50\" fill=\"#ff7f0e\" text-anchor=\"end\">val loss</text>\n</svg>\n",
        (left + w - right) / 2.0,
        h - 6.0,
        w - right - 10.0,
        w - right - 10.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(iter: usize, train_loss: f32, val_loss: f32) -> EvalRecord {
        EvalRecord {
            iter,
            train_loss,
            val_loss,
            lr: 1e-3,
            tokens_per_s: 1.0,
            elapsed_s: 0.0,
        }
    }

    #[test]
    fn jsonl_round_trips_and_has_the_documented_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        append(&path, &record(0, 4.2, 4.3)).unwrap();
        append(&path, &record(250, 2.1, 2.2)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for key in [
            "iter",
            "train_loss",
            "val_loss",
            "lr",
            "tokens_per_s",
            "elapsed_s",
        ] {
            assert!(first.get(key).is_some(), "{key}");
        }
        assert_eq!(
            read(&path),
            vec![record(0, 4.2, 4.3), record(250, 2.1, 2.2)]
        );
    }

    #[test]
    fn svg_plots_both_curves_within_the_canvas() {
        let svg = loss_svg(&[record(0, 4.0, 4.1), record(100, 2.0, 2.5)]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        // The highest loss (4.1, val at iter 0) sits on the top edge, the lowest (2.0,
        // train at iter 100) on the bottom axis.
        assert!(svg.contains("points=\"60.0,20.0 620.0,279.0\""), "{svg}");
        assert!(svg.contains("points=\"60.0,36.2 620.0,360.0\""), "{svg}");
    }
}
