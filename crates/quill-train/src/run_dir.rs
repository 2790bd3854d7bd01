//! The run directory: one trainer at a time, what it records, and the leftovers of
//! writers that were killed.
//!
//! | entry | written |
//! |---|---|
//! | `last/`, `best/` | at each evaluation ([`crate::checkpoint`], atomic) |
//! | `metrics.jsonl` | one [`EvalRecord`] per evaluation, appended |
//! | `steps.jsonl` | one [`StepReport`] per optimizer step, buffered, flushed at each evaluation |
//! | `loss.svg`, `loss.png` | redrawn from the records at each evaluation ([`crate::plot`]) |
//! | `.lock` | held (an OS file lock) while a trainer uses the directory |
//!
//! [`RunDir::open`] takes the lock, so a second trainer on the same directory is refused;
//! holding it, every temporary entry left in the directory belongs to a writer that is
//! gone (killed mid-write), so it is removed — or, when a checkpoint was caught between
//! its two renames, put back in place.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::StepReport;
use crate::TrainError;
use crate::checkpoint::{best_dir, last_dir};
use crate::metrics::{self, EvalRecord};

/// An open run directory, locked for one trainer.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// Holds the OS lock on `.lock` until dropped.
    _lock: File,
    /// `steps.jsonl`, opened for appending at the first step.
    steps: Option<BufWriter<File>>,
    recovered: Vec<String>,
}

/// The lock file's name.
const LOCK_FILE: &str = ".lock";
const METRICS_FILE: &str = "metrics.jsonl";
const STEPS_FILE: &str = "steps.jsonl";

impl RunDir {
    /// Creates `path` if needed, takes its lock (an error if another process holds it),
    /// and cleans up after writers that were killed: see [`RunDir::recovered`].
    pub fn open(path: impl Into<PathBuf>) -> Result<RunDir, TrainError> {
        let path = path.into();
        fs::create_dir_all(&path).map_err(|e| TrainError::io(&path, e))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| TrainError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(TrainError::Busy(path)),
            Err(fs::TryLockError::Error(e)) => return Err(TrainError::io(&lock_path, e)),
        }
        let recovered = recover(&path)?;
        Ok(RunDir {
            path,
            _lock: lock,
            steps: None,
            recovered,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What [`RunDir::open`] cleaned up, one line each (e.g. `removed .last.tmp-4242/,
    /// left by a writer that was killed`).
    pub fn recovered(&self) -> &[String] {
        &self.recovered
    }

    /// The latest checkpoint, `last/`.
    pub fn last(&self) -> PathBuf {
        last_dir(&self.path)
    }

    /// The checkpoint with the lowest validation loss, `best/`.
    pub fn best(&self) -> PathBuf {
        best_dir(&self.path)
    }

    /// `metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join(METRICS_FILE)
    }

    /// `steps.jsonl`.
    pub fn steps_path(&self) -> PathBuf {
        self.path.join(STEPS_FILE)
    }

    /// A new run: forgets the records of an earlier run in this directory.
    pub fn start_fresh(&mut self) -> Result<(), TrainError> {
        self.steps = None;
        for path in [self.metrics_path(), self.steps_path()] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(TrainError::io(&path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A run resumed after step `iter`: keeps the records up to `iter` (a run that went
    /// further before it was stopped wrote some the resumed run will write again) and
    /// returns them. With `evaluates_again` (a finished run resumed at its end, which
    /// evaluates once more), the evaluation at `iter` is dropped too.
    pub fn resume_at(
        &mut self,
        iter: usize,
        evaluates_again: bool,
    ) -> Result<(Vec<EvalRecord>, Vec<StepReport>), TrainError> {
        self.steps = None;
        let evals: Vec<EvalRecord> = metrics::read_jsonl(&self.metrics_path())
            .into_iter()
            .filter(|r: &EvalRecord| r.iter < iter || (r.iter == iter && !evaluates_again))
            .collect();
        let steps: Vec<StepReport> = metrics::read_jsonl(&self.steps_path())
            .into_iter()
            .filter(|r: &StepReport| r.iter <= iter)
            .collect();
        metrics::rewrite(&self.metrics_path(), &evals)?;
        metrics::rewrite(&self.steps_path(), &steps)?;
        Ok((evals, steps))
    }

    /// Adds a step to `steps.jsonl` (buffered: it reaches the file at the next
    /// [`RunDir::record_eval`] or [`RunDir::flush`]).
    pub fn record_step(&mut self, step: &StepReport) -> Result<(), TrainError> {
        let path = self.steps_path();
        let writer = match &mut self.steps {
            Some(writer) => writer,
            None => {
                let file = File::options()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| TrainError::io(&path, e))?;
                self.steps.insert(BufWriter::new(file))
            }
        };
        writeln!(writer, "{}", metrics::to_json_line(step)).map_err(|e| TrainError::io(&path, e))
    }

    /// Writes the buffered step records to `steps.jsonl`.
    pub fn flush(&mut self) -> Result<(), TrainError> {
        let path = self.steps_path();
        match &mut self.steps {
            Some(writer) => writer.flush().map_err(|e| TrainError::io(&path, e)),
            None => Ok(()),
        }
    }

    /// Flushes the step records, then appends `record` to `metrics.jsonl`.
    pub fn record_eval(&mut self, record: &EvalRecord) -> Result<(), TrainError> {
        self.flush()?;
        metrics::append(&self.metrics_path(), record)
    }
}

/// Where a temporary entry of the directory came from.
enum Leftover {
    /// `.NAME.tmp-PID/`: a checkpoint being written (complete once `.NAME.old-PID` exists).
    CheckpointTmp(String),
    /// `.NAME.old-PID/`: the checkpoint being replaced.
    CheckpointOld(String),
    /// `.FILE.PID.tmp`: a file being written atomically.
    FileTmp,
}

fn classify(entry: &str) -> Option<Leftover> {
    let rest = entry.strip_prefix('.')?;
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((name, pid)) = rest.rsplit_once(".tmp-")
        && numeric(pid)
    {
        return Some(Leftover::CheckpointTmp(name.to_string()));
    }
    if let Some((name, pid)) = rest.rsplit_once(".old-")
        && numeric(pid)
    {
        return Some(Leftover::CheckpointOld(name.to_string()));
    }
    let stem = rest.strip_suffix(".tmp")?;
    let (_, pid) = stem.rsplit_once('.')?;
    numeric(pid).then_some(Leftover::FileTmp)
}

/// Removes what killed writers left in `dir`, restoring a checkpoint that was caught
/// between its two renames. Only called with the directory's lock held, so no writer of
/// this directory is alive.
fn recover(dir: &Path) -> Result<Vec<String>, TrainError> {
    let mut notes = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // `.last.old-P` sorts before `.last.tmp-P`: restore first, then clean.
    names.sort();
    let mut restored = Vec::new();
    for name in &names {
        if let Some(Leftover::CheckpointOld(checkpoint)) = classify(name) {
            let target = dir.join(&checkpoint);
            if target.exists() || restored.contains(&checkpoint) {
                continue;
            }
            // The writer had moved the old checkpoint aside; its new one (the .tmp beside
            // it, complete by then) was not yet in place. Put the new one there, or the
            // old one if the new one is gone.
            let newer = names.iter().find(
                |n| matches!(classify(n), Some(Leftover::CheckpointTmp(c)) if c == checkpoint),
            );
            let source = dir.join(newer.unwrap_or(name));
            fs::rename(&source, &target).map_err(|e| TrainError::io(&target, e))?;
            notes.push(format!(
                "restored {checkpoint}/ from {}, left by a writer that was killed",
                source.file_name().unwrap_or_default().to_string_lossy()
            ));
            restored.push(checkpoint);
        }
    }
    for name in &names {
        let path = dir.join(name);
        let removed = match classify(name) {
            Some(Leftover::CheckpointTmp(_) | Leftover::CheckpointOld(_)) if path.is_dir() => {
                fs::remove_dir_all(&path)
            }
            Some(Leftover::FileTmp) if path.is_file() => fs::remove_file(&path),
            _ => continue,
        };
        match removed {
            Ok(()) => notes.push(format!("removed {name}, left by a writer that was killed")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // restored above
            Err(e) => return Err(TrainError::io(&path, e)),
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_recognised_by_name() {
        assert!(
            matches!(classify(".last.tmp-42"), Some(Leftover::CheckpointTmp(n)) if n == "last")
        );
        assert!(matches!(classify(".best.old-7"), Some(Leftover::CheckpointOld(n)) if n == "best"));
        assert!(matches!(
            classify(".metrics.jsonl.123.tmp"),
            Some(Leftover::FileTmp)
        ));
        for keep in [
            "last",
            ".lock",
            "metrics.jsonl",
            ".last.tmp-",
            ".last.tmp-x1",
            "notes.tmp",
            ".x.tmp",
        ] {
            assert!(classify(keep).is_none(), "{keep}");
        }
    }

    #[test]
    fn a_second_trainer_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunDir::open(dir.path()).unwrap();
        let err = RunDir::open(dir.path()).unwrap_err();
        assert!(matches!(err, TrainError::Busy(_)), "{err}");
        assert!(err.to_string().contains("in use by another `quill train`"));
        drop(first);
        RunDir::open(dir.path()).unwrap();
    }

    #[test]
    fn killed_writers_leftovers_are_removed_or_restored() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mkdir = |name: &str, file: &str| {
            fs::create_dir_all(d.join(name)).unwrap();
            fs::write(d.join(name).join("state.json"), file).unwrap();
        };
        // best/ is in place; a killed write left its temporary beside it.
        mkdir("best", "best");
        mkdir(".best.tmp-99999", "half-written");
        // last/ was moved aside and its complete replacement not yet renamed in.
        mkdir(".last.old-99998", "old");
        mkdir(".last.tmp-99998", "new");
        fs::write(d.join(".metrics.jsonl.99997.tmp"), "{").unwrap();
        fs::write(d.join("notes.txt"), "mine").unwrap();
        let run = RunDir::open(d).unwrap();
        let read = |p: &str| fs::read_to_string(d.join(p)).unwrap();
        assert_eq!(read("best/state.json"), "best");
        assert_eq!(read("last/state.json"), "new");
        assert_eq!(read("notes.txt"), "mine");
        let mut left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".lock", "best", "last", "notes.txt"]);
        assert_eq!(run.recovered().len(), 4, "{:?}", run.recovered());
        assert!(run.recovered()[0].starts_with("restored last/ from .last.tmp-99998"));
    }

    #[test]
    fn step_records_reach_the_file_at_each_evaluation() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = RunDir::open(dir.path()).unwrap();
        let step = |iter| StepReport {
            iter,
            loss: 1.0,
            lr: 1e-3,
            grad_norm: 0.5,
            tokens_per_s: 100.0,
        };
        run.record_step(&step(1)).unwrap();
        run.record_step(&step(2)).unwrap();
        assert_eq!(fs::read_to_string(run.steps_path()).unwrap(), "");
        run.record_eval(&EvalRecord {
            iter: 2,
            train_loss: 1.0,
            val_loss: 1.1,
            lr: 1e-3,
            tokens_per_s: 1.0,
            elapsed_s: 1.0,
        })
        .unwrap();
        let steps: Vec<StepReport> = metrics::read_jsonl(&run.steps_path());
        assert_eq!(steps, [step(1), step(2)]);
        run.record_step(&step(3)).unwrap();
        run.flush().unwrap();
        let (evals, steps) = run.resume_at(2, false).unwrap();
        assert_eq!((evals.len(), steps.len()), (1, 2));
        let (evals, steps) = run.resume_at(2, true).unwrap();
        assert_eq!((evals.len(), steps.len()), (0, 2));
        assert_eq!(
            metrics::read_jsonl::<StepReport>(&run.steps_path()).len(),
            2
        );
    }
}
