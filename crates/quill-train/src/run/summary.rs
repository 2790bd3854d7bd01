//! What `quill runs` shows of a run directory: its settings, progress, best
//! validation loss, speed, wall time and state, read from the files the run wrote
//! (`last/`'s `config.json` and `state.json`, `metrics.jsonl`, `steps.jsonl`) and from
//! its lock, without loading any weights.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::run::checkpoint::{Checkpoint, best_dir, last_dir};
use crate::run::metrics::{self, EvalRecord};
use crate::run::run_dir::is_run_dir;
use crate::{PRESETS, RunConfig, StepReport};

/// Whether a run is training now, ended at its last step, or ended before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// A trainer holds the directory's lock.
    Running,
    /// It evaluated at its last step (`max_iters`).
    Finished,
    /// Interrupted or killed before its last step.
    Stopped,
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunState::Running => "running",
            RunState::Finished => "finished",
            RunState::Stopped => "stopped",
        })
    }
}

/// One run directory, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The directory.
    pub path: PathBuf,
    /// The preset its model is ([`preset_of`]), or `custom`; `None` before its first
    /// checkpoint.
    pub preset: Option<String>,
    /// Parameters of the model.
    pub params: Option<u64>,
    /// Optimizer steps recorded.
    pub steps: usize,
    /// Steps planned (`max_iters`).
    pub max_iters: Option<usize>,
    /// The lowest validation loss of its evaluations, and its step.
    pub best_val_loss: Option<(f32, usize)>,
    /// Median training tokens per second over its steps.
    pub tokens_per_s: Option<f64>,
    /// Training wall time at its last evaluation or checkpoint, in seconds.
    pub wall_s: Option<f64>,
    /// Running, finished or stopped.
    pub state: RunState,
    /// The effective settings (`last/config.json`).
    pub settings: Option<RunConfig>,
    /// What it trained on (`last/state.json`), when its checkpoints record it.
    pub data: Option<crate::DataRecord>,
}

/// The records a run directory holds: a line per step and one per evaluation.
#[derive(Debug, Clone, Default)]
pub struct RunRecords {
    /// `steps.jsonl`.
    pub steps: Vec<StepReport>,
    /// `metrics.jsonl`.
    pub evals: Vec<EvalRecord>,
}

impl RunRecords {
    /// Reads the records of the run directory `path` (none where a file is missing,
    /// and a line that is not a record is skipped).
    pub fn read(path: &Path) -> RunRecords {
        RunRecords {
            steps: metrics::read_jsonl(&path.join("steps.jsonl")),
            evals: metrics::read_jsonl(&path.join("metrics.jsonl")),
        }
    }
}

impl RunSummary {
    /// Summarises the run directory `path`; `None` for anything that is not one
    /// ([`is_run_dir`]).
    pub fn read(path: &Path) -> Option<RunSummary> {
        Self::read_with(path).map(|(summary, _)| summary)
    }

    /// [`RunSummary::read`], also giving the records it was made from.
    pub fn read_with(path: &Path) -> Option<(RunSummary, RunRecords)> {
        if !path.is_dir() || !is_run_dir(path) {
            return None;
        }
        let records = RunRecords::read(path);
        Some((Self::of(path, &records), records))
    }

    fn of(path: &Path, records: &RunRecords) -> RunSummary {
        let RunRecords { steps, evals } = records;
        let checkpoint = [last_dir(path), best_dir(path)]
            .iter()
            .find_map(|dir| Checkpoint::read_settings(dir).ok());
        let settings = checkpoint.as_ref().map(|(config, _)| config.clone());
        let max_iters = settings.as_ref().map(|c| c.train.max_iters);
        let done = steps
            .iter()
            .map(|s| s.iter)
            .chain(checkpoint.as_ref().map(|(_, state)| state.iter))
            .max()
            .unwrap_or(0);
        let best_val_loss = evals
            .iter()
            .filter(|e| e.val_loss.is_finite())
            .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
            .map(|e| (e.val_loss, e.iter));
        let mut speeds: Vec<f64> = steps.iter().map(|s| s.tokens_per_s).collect();
        speeds.sort_by(f64::total_cmp);
        let wall_s = evals
            .last()
            .map(|e| e.elapsed_s)
            .into_iter()
            .chain(checkpoint.as_ref().map(|(_, state)| state.elapsed_s))
            .reduce(f64::max);
        let state = if locked(path) {
            RunState::Running
        } else if max_iters.is_some_and(|m| evals.iter().any(|e| e.iter >= m)) {
            RunState::Finished
        } else {
            RunState::Stopped
        };
        RunSummary {
            path: path.to_path_buf(),
            preset: settings.as_ref().map(preset_of),
            params: settings.as_ref().map(|c| c.model.num_params() as u64),
            steps: done,
            max_iters,
            best_val_loss,
            tokens_per_s: speeds.get(speeds.len() / 2).copied(),
            wall_s,
            state,
            data: checkpoint
                .as_ref()
                .and_then(|(_, state)| state.data.clone()),
            settings,
        }
    }
}

/// Whether a trainer holds the run directory's lock now.
pub(crate) fn locked(path: &Path) -> bool {
    let Ok(file) = quill_data::files::open_regular(&path.join(".lock")) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(fs::TryLockError::WouldBlock) => true,
        Err(fs::TryLockError::Error(_)) => false,
    }
}

/// The preset `config` started from, by its settings: of the presets with the same
/// model (but the vocabulary), the one with the fewest other training settings;
/// `custom` when no preset has this model.
pub fn preset_of(config: &RunConfig) -> String {
    let vocab = config.model.vocab_size();
    let differences = |p: &RunConfig| {
        let (mine, theirs) = (flat_settings(config), flat_settings(p));
        mine.iter()
            .filter(|(k, v)| theirs.get(*k) != Some(v))
            .count()
    };
    PRESETS
        .iter()
        .map(|p| (p, p.config()))
        .filter(|(_, c)| c.model_for(vocab) == config.model)
        .min_by_key(|(_, c)| differences(c))
        .map_or_else(|| "custom".to_string(), |(p, _)| p.name.to_string())
}

/// The settings, flattened to `model.n_layer`, `train.lr`, … → value, of each run.
pub fn flat_settings(config: &RunConfig) -> Map<String, Value> {
    fn flatten(prefix: &str, value: Value, out: &mut Map<String, Value>) {
        match value {
            Value::Object(fields) => {
                for (key, value) in fields {
                    let name = match prefix {
                        "" => key,
                        _ => format!("{prefix}.{key}"),
                    };
                    flatten(&name, value, out);
                }
            }
            value => {
                out.insert(prefix.to_string(), value);
            }
        }
    }
    let mut out = Map::new();
    flatten(
        "",
        serde_json::to_value(config).unwrap_or(Value::Null),
        &mut out,
    );
    out
}

/// The settings whose values are not the same in all of `runs` (a setting a run lacks
/// counts as different): `(setting, value per run)`, sorted by name.
pub fn differing_settings(runs: &[&RunConfig]) -> Vec<(String, Vec<Option<Value>>)> {
    let flat: Vec<Map<String, Value>> = runs.iter().map(|c| flat_settings(c)).collect();
    let mut names: Vec<&String> = flat.iter().flat_map(|f| f.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let values: Vec<Option<Value>> = flat.iter().map(|f| f.get(name).cloned()).collect();
            let differ = values.iter().any(|v| v != &values[0]);
            differ.then(|| (name.clone(), values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_recognised_by_their_settings() {
        let mut cpu = RunConfig::preset("cpu").unwrap();
        cpu.model = cpu.model_for(65);
        assert_eq!(preset_of(&cpu), "cpu");
        let mut slower = cpu.clone();
        slower.train.lr = 1e-4;
        assert_eq!(preset_of(&slower), "cpu");
        let mut gpt2 = RunConfig::preset("shakespeare-gpt2").unwrap();
        gpt2.model = gpt2.model_for(50257);
        assert_eq!(preset_of(&gpt2), "shakespeare-gpt2");
        let mut wider = cpu.clone();
        if let quill_model::ModelConfig::Gpt(g) = &mut wider.model {
            g.n_embd = 256;
        }
        assert_eq!(preset_of(&wider), "custom");
        let differ = differing_settings(&[&cpu, &slower, &wider]);
        let names: Vec<&str> = differ.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["model.n_embd", "train.lr"]);
        assert_eq!(differ[1].1[1], Some(serde_json::json!(1e-4)));
    }
}
