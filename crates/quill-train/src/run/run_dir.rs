//! The run directory: one trainer at a time, what it records (metrics, the loss
//! picture, checkpoints), and the leftovers of writers that were killed.
//!
//! | entry | written |
//! |---|---|
//! | `last/`, `best/` | at each evaluation ([`crate::run::checkpoint`], atomic) |
//! | `metrics.jsonl` | one [`EvalRecord`] per evaluation, appended |
//! | `steps.jsonl` | one [`StepReport`] per optimizer step, buffered, flushed at each evaluation |
//! | `loss.svg`, `loss.png` | redrawn from the records at each evaluation ([`crate::run::plot`]) |
//! | `events.out.tfevents.*.quill` | TensorBoard's event file ([`crate::run::tensorboard`]): the configuration at step 0, each step's `train/*` scalars, each evaluation's `eval/*` losses and sample; buffered like `steps.jsonl` (off with [`RunDir::without_tensorboard`]) |
//! | `.lock` | held (an OS file lock) while a trainer uses the directory |
//! | `.quill-run.json` | the [`RUN`] marker: this directory is quill's |
//!
//! [`RunDir::open`] opens only a directory that is absent, empty or quill's
//! ([`check_run_dir`]): it never writes among a user's files. It takes the lock, so a
//! second trainer on the same directory is refused; holding it, the temporary entries
//! that killed writers left (of the files and checkpoints above, for processes that are
//! gone) are removed, or, when a checkpoint was caught between its two renames, put
//! back in place ([`quill_data::atomic::recover_dir`]).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use quill_data::atomic::{self, Marker};

use crate::run::checkpoint::{CHECKPOINT, Checkpoint, best_dir, last_dir};
use crate::run::metrics::{self, EvalRecord};
#[cfg(feature = "plot")]
use crate::run::plot::LossPlot;
use crate::run::tensorboard::{self, EventFile};
use crate::{StepReport, TrainError};

/// An open run directory, locked for one trainer.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// Holds the OS lock on `.lock` until dropped.
    _lock: File,
    /// `steps.jsonl`, opened for appending at the first step.
    steps_file: Option<BufWriter<File>>,
    recovered: Vec<String>,
    /// This run's records so far (for the picture).
    evals: Vec<EvalRecord>,
    steps: Vec<StepReport>,
    /// TensorBoard's event file, once the run has started; never with `tensorboard`
    /// off.
    events: Option<EventFile>,
    tensorboard: bool,
}

/// The lock file's name.
const LOCK_FILE: &str = ".lock";
const METRICS_FILE: &str = "metrics.jsonl";
const STEPS_FILE: &str = "steps.jsonl";

/// The loss pictures (feature `plot`), redrawn at each evaluation.
pub(crate) const PLOT_FILES: [&str; 2] = ["loss.svg", "loss.png"];

/// A run directory is quill's when it carries this marker.
pub const RUN: Marker = Marker {
    file: ".quill-run.json",
    format: "quill-run-v1",
    alternates: &[],
};

/// Whether `path` is a run directory quill wrote: it carries the [`RUN`] marker. A
/// checkpoint inside (a downloaded `last/`, say) does not make its folder a run
/// directory: quill reads from it, and writes a resumed run elsewhere (`--out`).
pub fn is_run_dir(path: &Path) -> bool {
    RUN.is_on(path)
}

/// Whether `path` holds a run: a run directory ([`is_run_dir`]) with a checkpoint or
/// records in it. A new run is written there only when asked to replace it.
pub fn holds_run(path: &Path) -> bool {
    is_run_dir(path)
        && [
            last_dir(path),
            best_dir(path),
            path.join(METRICS_FILE),
            path.join(STEPS_FILE),
        ]
        .iter()
        .any(|p| p.symlink_metadata().is_ok())
}

/// Whether a new run may take `path` without replacing anything: it is absent, an
/// empty directory, or a run directory that holds no run yet and no trainer uses.
fn is_free(path: &Path) -> bool {
    match fs::read_dir(path) {
        Ok(mut entries) => {
            entries.next().is_none()
                || (is_run_dir(path) && !holds_run(path) && !super::summary::locked(path))
        }
        Err(_) => path.symlink_metadata().is_err(),
    }
}

/// Where a new run writes when no directory is named: `base` (`runs/cpu`) when that
/// is free — absent, empty, or a run directory with nothing in it yet — else the first
/// free one of `base-2`, `base-3`, …; an earlier run is never replaced.
pub fn fresh_run_dir(base: &Path) -> PathBuf {
    if is_free(base) {
        return base.to_path_buf();
    }
    let name = base
        .file_name()
        .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
    (2..)
        .map(|n| base.with_file_name(format!("{name}-{n}")))
        .find(|candidate| is_free(candidate))
        .expect("some numbered directory is free")
}

/// Where a run writes: the directory named (`--out`), checked, or the one chosen for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutRequest<'a> {
    /// The directory the user named.
    pub named: Option<&'a Path>,
    /// The checkpoint the run resumes from.
    pub resume: Option<&'a Path>,
    /// The checkpoint the run finetunes.
    pub init_from: Option<&'a Path>,
    /// The preset named (`cpu` when none is).
    pub preset: Option<&'a str>,
    /// A named directory holding another run may be replaced.
    pub overwrite: bool,
}

impl OutRequest<'_> {
    /// The directory, and why it is not the obvious one when it is not: a named one
    /// holding another run is replaced only with `overwrite`, and never while the run
    /// reads a checkpoint inside it; a resumed run writes to its checkpoint's run
    /// directory (or a new one under `runs/` for a checkpoint outside one); a new run
    /// gets `runs/<preset>` (`runs/finetune` for `--init-from` alone), or the first of
    /// `-2`, `-3`, … that is free ([`fresh_run_dir`]).
    pub fn choose(&self) -> Result<(PathBuf, Option<String>), TrainError> {
        if let Some(out) = self.named {
            self.check_named(out)?;
            return Ok((out.to_path_buf(), None));
        }
        if let Some(checkpoint) = self.resume {
            return Ok(resumed_run_dir(checkpoint));
        }
        let base = match (self.init_from, self.preset) {
            (Some(_), None) => PathBuf::from("runs/finetune"),
            (_, preset) => Path::new("runs").join(preset.unwrap_or(crate::config::DEFAULT_PRESET)),
        };
        let out = fresh_run_dir(&base);
        let why = (out != base).then(|| format!("{} holds an earlier run", base.display()));
        Ok((out, why))
    }

    /// Checks the directory a user named for this run.
    fn check_named(&self, out: &Path) -> Result<(), TrainError> {
        if !holds_run(out) || self.resume.is_some_and(|c| checkpoint_in(c, out)) {
            return Ok(());
        }
        if !self.overwrite {
            let what = super::summary::RunSummary::read(out).map_or_else(String::new, |run| {
                let best = (run.best_val_loss)
                    .map_or_else(String::new, |(loss, _)| format!(", best val {loss:.4}"));
                format!(" ({} steps{best})", run.steps)
            });
            return Err(TrainError::OutDir(format!(
                "{} holds another run{what}: --resume {} continues it, --overwrite replaces it, or name another --out (without --out a new run gets a directory of its own)",
                out.display(),
                out.join("last").display()
            )));
        }
        for (flag, checkpoint) in [("--resume", self.resume), ("--init-from", self.init_from)] {
            if let Some(checkpoint) = checkpoint.filter(|c| inside(c, out)) {
                return Err(TrainError::OutDir(format!(
                    "--overwrite would delete {} that {flag} reads: name another --out",
                    checkpoint.display()
                )));
            }
        }
        Ok(())
    }
}

/// Where a run resumed from `checkpoint` writes: the run directory the checkpoint is
/// in (`runs/x` for `runs/x/last`); for a checkpoint outside one (an import, a
/// download), a new directory under `runs/` named after it ([`fresh_run_dir`]), with
/// the reason.
fn resumed_run_dir(checkpoint: &Path) -> (PathBuf, Option<String>) {
    let parent = parent(checkpoint);
    if is_run_dir(parent) {
        return (parent.to_path_buf(), None);
    }
    let named = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = match named(checkpoint).as_deref() {
        Some("last" | "best") | None => named(parent),
        Some(name) => Some(name.to_string()),
    };
    let out = fresh_run_dir(&Path::new("runs").join(name.unwrap_or_else(|| "resumed".into())));
    let why = format!(
        "{} is not in a run directory; --out chooses another",
        checkpoint.display()
    );
    (out, Some(why))
}

/// The directory a checkpoint is in (`.` for a bare name).
fn parent(checkpoint: &Path) -> &Path {
    match checkpoint.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether `checkpoint` is one of the directory `dir`'s own (`dir/last`): a run
/// resumed from it continues the run in `dir`.
pub fn checkpoint_in(checkpoint: &Path, dir: &Path) -> bool {
    same_dir(parent(checkpoint), dir)
}

/// Whether two paths name the same existing directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Whether `path` is `dir` or inside it.
fn inside(path: &Path, dir: &Path) -> bool {
    match (path.canonicalize(), dir.canonicalize()) {
        (Ok(path), Ok(dir)) => path.starts_with(dir),
        _ => false,
    }
}

/// The checkpoint of the run directory `path` a command should read when it was given
/// the run rather than one of its checkpoints: `best/` (or `last/` when there is no
/// `best/`) for [`Which::Best`], `last/` for [`Which::Last`].
pub fn checkpoint_of_run(path: &Path, which: Which) -> RunCheckpoint {
    if !is_run_dir(path) || path.join("state.json").exists() {
        return RunCheckpoint::NotARun;
    }
    let order: &[PathBuf] = match which {
        Which::Best => &[best_dir(path), last_dir(path)],
        Which::Last => &[last_dir(path)],
    };
    match order.iter().find(|dir| dir.is_dir()) {
        Some(dir) => RunCheckpoint::At(dir.clone()),
        None => RunCheckpoint::NoneYet,
    }
}

/// What [`checkpoint_of_run`] finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunCheckpoint {
    /// The path is not a run directory (or is a checkpoint itself).
    NotARun,
    /// A run directory that has saved no such checkpoint yet.
    NoneYet,
    /// The checkpoint to read.
    At(PathBuf),
}

/// Which checkpoint of a run a command wants ([`checkpoint_of_run`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The lowest validation loss: to sample, serve, evaluate or export.
    Best,
    /// The latest: to resume.
    Last,
}

/// Checks that quill may train into `path`: it is absent, an empty directory, or a run
/// directory quill wrote ([`is_run_dir`]). Otherwise an error that names what is there.
pub fn check_run_dir(path: &Path) -> Result<(), TrainError> {
    if is_run_dir(path) {
        return Ok(());
    }
    Ok(atomic::check_owned(path, &RUN)?)
}

impl RunDir {
    /// Opens the run directory `path`, which must be absent, empty or quill's
    /// ([`check_run_dir`]): creates and marks it, takes its lock (an error if another
    /// process holds it), and cleans up after writers that were killed: see
    /// [`RunDir::recovered`].
    pub fn open(path: impl Into<PathBuf>) -> Result<RunDir, TrainError> {
        let path = path.into();
        check_run_dir(&path)?;
        fs::create_dir_all(&path).map_err(|e| TrainError::io(&path, e))?;
        if !RUN.is_on(&path) {
            atomic::write_file(&path.join(RUN.file), &RUN.content())?;
        }
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
        let mut recovered = Vec::new();
        for checkpoint in [last_dir(&path), best_dir(&path)] {
            recovered.extend(atomic::recover_dir(&checkpoint, &CHECKPOINT)?);
        }
        let files = [METRICS_FILE, STEPS_FILE, RUN.file];
        let files = files.iter().chain(&PLOT_FILES).copied();
        recovered.extend(atomic::recover_files(&path, &files.collect::<Vec<_>>())?);
        Ok(RunDir {
            path,
            _lock: lock,
            steps_file: None,
            recovered,
            evals: Vec::new(),
            steps: Vec::new(),
            events: None,
            tensorboard: true,
        })
    }

    /// Writes no TensorBoard event file (`quill train --no-tensorboard`); one an
    /// earlier run left is left as it is.
    pub fn without_tensorboard(mut self) -> Self {
        self.tensorboard = false;
        self
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

    /// Removes an earlier run's checkpoints, records and pictures from this directory
    /// (`--overwrite`): only what quill wrote, each checkpoint checked by its marker.
    pub fn clear(&mut self) -> Result<(), TrainError> {
        for dir in [self.last(), self.best()] {
            if CHECKPOINT.is_on(&dir) {
                fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
            }
        }
        let files = [METRICS_FILE, STEPS_FILE].iter().chain(&PLOT_FILES);
        for path in files.map(|f| self.path.join(f)) {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(TrainError::io(&path, e));
                }
                _ => {}
            }
        }
        tensorboard::remove_event_files(&self.path)?;
        self.start_fresh()
    }

    /// A new run: forgets the records of an earlier run in this directory.
    pub fn start_fresh(&mut self) -> Result<(), TrainError> {
        self.steps_file = None;
        self.evals.clear();
        self.steps.clear();
        self.events = None;
        if self.tensorboard {
            tensorboard::remove_event_files(&self.path)?;
            self.events = Some(EventFile::create(&self.path)?);
        }
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
    ) -> Result<(&[EvalRecord], &[StepReport]), TrainError> {
        self.steps_file = None;
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
        // The event file keeps the same: the configuration, the steps up to `iter`,
        // and the evaluations kept above.
        self.events = None;
        if self.tensorboard {
            let iter = iter as u64;
            let kept = tensorboard::keep_events(&self.path, |step, tags| {
                let evaluation = tags.iter().any(|t| t.starts_with("eval/"));
                step < iter || (step == iter && !(evaluation && evaluates_again))
            })?;
            self.events = Some(kept);
        }
        (self.evals, self.steps) = (evals, steps);
        Ok((&self.evals, &self.steps))
    }

    /// Adds a step to `steps.jsonl` (buffered: it reaches the file at the next
    /// [`RunDir::record_eval`] or [`RunDir::flush`]).
    pub fn record_step(&mut self, step: &StepReport) -> Result<(), TrainError> {
        let path = self.steps_path();
        self.steps.push(*step);
        let writer = match &mut self.steps_file {
            Some(writer) => writer,
            None => {
                let file = File::options()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| TrainError::io(&path, e))?;
                self.steps_file.insert(BufWriter::new(file))
            }
        };
        writeln!(writer, "{}", metrics::to_json_line(step))
            .map_err(|e| TrainError::io(&path, e))?;
        if let Some(events) = &mut self.events {
            let mut values = vec![
                ("train/loss", f64::from(step.loss)),
                ("train/lr", step.lr),
                ("train/grad_norm", step.grad_norm),
                ("train/tokens_per_s", step.tokens_per_s),
            ];
            if let Some(scale) = step.loss_scale {
                values.push(("train/loss_scale", scale));
            }
            events.scalars(step.iter, &values)?;
        }
        Ok(())
    }

    /// The run's effective configuration, as text at step 0 of the event file (a
    /// fresh run's start).
    pub fn record_config(&mut self, text: &str) -> Result<(), TrainError> {
        match &mut self.events {
            Some(events) => events.text(0, "config", &format!("```\n{text}\n```")),
            None => Ok(()),
        }
    }

    /// The text sampled at the evaluation of step `iter`, in the event file.
    pub fn record_sample(&mut self, iter: usize, text: &str) -> Result<(), TrainError> {
        match &mut self.events {
            Some(events) => {
                events.text(iter, "eval/sample", &format!("```\n{text}\n```"))?;
                events.flush()
            }
            None => Ok(()),
        }
    }

    /// Writes the buffered step records to `steps.jsonl` and the event file.
    pub fn flush(&mut self) -> Result<(), TrainError> {
        let path = self.steps_path();
        if let Some(events) = &mut self.events {
            events.flush()?;
        }
        match &mut self.steps_file {
            Some(writer) => writer.flush().map_err(|e| TrainError::io(&path, e)),
            None => Ok(()),
        }
    }

    /// Flushes the step records, appends `record` to `metrics.jsonl` and redraws the
    /// loss picture (`loss.svg`, `loss.png`; feature `plot`) under `title`.
    pub fn record_eval(&mut self, record: &EvalRecord, title: &str) -> Result<(), TrainError> {
        if let Some(events) = &mut self.events {
            let losses = [
                ("eval/train_loss", f64::from(record.train_loss)),
                ("eval/val_loss", f64::from(record.val_loss)),
            ];
            events.scalars(record.iter, &losses)?;
        }
        self.flush()?;
        metrics::append(&self.metrics_path(), record)?;
        self.evals.push(record.clone());
        self.draw(title)
    }

    /// Redraws the loss picture (`loss.svg`, `loss.png`; feature `plot`) from the
    /// records so far, under `title`: at each evaluation, and when a run stops early.
    pub fn draw(&self, title: &str) -> Result<(), TrainError> {
        #[cfg(feature = "plot")]
        return LossPlot {
            title,
            steps: &self.steps,
            evals: &self.evals,
        }
        .write(&self.path);
        #[cfg(not(feature = "plot"))]
        {
            let _ = title;
            Ok(())
        }
    }

    /// Writes `checkpoint` to `last/`, and to `best/` too when `best`.
    pub fn save_checkpoint(&self, checkpoint: &Checkpoint, best: bool) -> Result<(), TrainError> {
        checkpoint.save(&self.last())?;
        if best {
            checkpoint.save(&self.best())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(iter: usize) -> StepReport {
        StepReport {
            iter,
            loss: 1.0,
            lr: 1e-3,
            grad_norm: 0.5,
            tokens_per_s: 100.0,
            loss_scale: None,
            skipped_steps: None,
        }
    }

    fn eval(iter: usize) -> EvalRecord {
        EvalRecord {
            iter,
            train_loss: 1.0,
            val_loss: 1.1,
            lr: 1e-3,
            tokens_per_s: 1.0,
            elapsed_s: 1.0,
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
    fn step_records_reach_the_file_at_each_evaluation() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = RunDir::open(dir.path()).unwrap();
        run.record_step(&step(1)).unwrap();
        run.record_step(&step(2)).unwrap();
        assert_eq!(fs::read_to_string(run.steps_path()).unwrap(), "");
        run.record_eval(&eval(2), "test").unwrap();
        assert!(run.path().join("loss.svg").is_file());
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

    /// The event file follows the records: the configuration, the steps and the
    /// evaluations; on resume it keeps exactly what `metrics.jsonl` and `steps.jsonl`
    /// keep; without TensorBoard nothing is written.
    #[test]
    fn the_event_file_follows_the_records_and_their_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = RunDir::open(dir.path()).unwrap();
        run.start_fresh().unwrap();
        run.record_config("n_layer = 4").unwrap();
        run.record_eval(&eval(0), "t").unwrap();
        run.record_sample(0, "ab").unwrap();
        for i in 1..=4 {
            run.record_step(&step(i)).unwrap();
        }
        run.record_eval(&eval(4), "t").unwrap();
        run.record_step(&step(5)).unwrap();
        run.flush().unwrap();
        let events = || -> Vec<(u64, Vec<String>)> {
            let files = tensorboard::event_files(dir.path());
            assert_eq!(files.len(), 1);
            tensorboard::read_records(&files[0])
                .iter()
                .map(|r| tensorboard::step_and_tags(r).unwrap())
                .filter(|(_, tags)| !tags.is_empty())
                .map(|(step, tags)| (step, vec![tags[0].clone()]))
                .collect()
        };
        let tag = |step, t: &str| (step, vec![t.to_string()]);
        let all = vec![
            tag(0, "config"),
            tag(0, "eval/train_loss"),
            tag(0, "eval/sample"),
            tag(1, "train/loss"),
            tag(2, "train/loss"),
            tag(3, "train/loss"),
            tag(4, "train/loss"),
            tag(4, "eval/train_loss"),
            tag(5, "train/loss"),
        ];
        assert_eq!(events(), all);
        run.resume_at(4, false).unwrap();
        assert_eq!(events(), all[..8]);
        run.resume_at(4, true).unwrap();
        assert_eq!(events(), all[..7]);
        drop(run);
        let mut run = RunDir::open(dir.path()).unwrap().without_tensorboard();
        run.start_fresh().unwrap();
        run.record_step(&step(1)).unwrap();
        run.flush().unwrap();
        assert_eq!(events(), all[..7], "left as it was");
    }
}
