//! What a run records: `metrics.jsonl` (one [`EvalRecord`] per evaluation) and
//! `steps.jsonl` (one [`StepReport`](crate::StepReport) per optimizer step), as JSON lines.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
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

/// `record` as one line of JSON, without the newline.
pub fn to_json_line(record: &impl Serialize) -> String {
    serde_json::to_string(record).expect("a record always serialises")
}

/// Appends `record` to the JSON-lines file at `path`.
pub fn append(path: &Path, record: &impl Serialize) -> Result<(), TrainError> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    writeln!(file, "{}", to_json_line(record)).map_err(|e| TrainError::io(path, e))
}

/// Reads the records of the JSON-lines file at `path` (none if it does not exist);
/// lines that do not parse (e.g. the last one of a killed writer) are skipped.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Vec<T> {
    quill_data::files::read_regular_text(path, quill_data::files::RECORD_LIMIT)
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Rewrites `path` atomically with `records` (on resume, to drop records past the
/// checkpoint).
pub fn rewrite(path: &Path, records: &[impl Serialize]) -> Result<(), TrainError> {
    let text: String = records.iter().map(|r| to_json_line(r) + "\n").collect();
    Ok(quill_data::atomic::write_file(path, text.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StepReport;

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
            read_jsonl::<EvalRecord>(&path),
            vec![record(0, 4.2, 4.3), record(250, 2.1, 2.2)]
        );
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steps.jsonl");
        let step = StepReport {
            iter: 1,
            loss: 4.0,
            lr: 1e-3,
            grad_norm: 2.0,
            tokens_per_s: 10.0,
            loss_scale: None,
            skipped_steps: None,
        };
        fs::write(&path, to_json_line(&step) + "\n{\"iter\":2,\"lo").unwrap();
        assert_eq!(read_jsonl::<StepReport>(&path), [step]);
        let json: serde_json::Value = serde_json::from_str(&to_json_line(&step)).unwrap();
        for key in ["iter", "loss", "lr", "grad_norm", "tokens_per_s"] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
