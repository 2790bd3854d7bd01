//! The training progress bar: an [`Observer`] drawn with indicatif.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use quill_train::{EvalRecord, Observer, StepReport};

/// Steps whose time the estimate leaves out: the first steps of a run (or a resumed
/// run) compile kernels, fill caches and allocate.
const WARMUP_STEPS: usize = 3;

/// Steps measured after warm-up for the run's time estimate.
const TIMED_STEPS: usize = 2;

/// A run on the CPU longer than this gets a suggestion.
const LONG_ON_CPU_S: f64 = 3600.0;

/// An evaluation longer than this says so when it starts, with the run's time.
const LONG_EVAL_S: f64 = 30.0;

/// A training step reads its rows forward and backward: about three forward passes.
const STEP_PER_FORWARD: f64 = 3.0;

/// Iteration, smoothed train loss, last val loss, learning rate, tokens/s and ETA; a bar
/// of batches while an evaluation runs. When stdout is not a terminal (a pipe, a log
/// file) the bar is not drawn there, so a step line is printed every `log_interval`
/// steps instead, as nanoGPT prints.
pub struct Progress {
    bar: ProgressBar,
    smoothed_loss: Option<f32>,
    last_val: Option<f32>,
    /// Steps since the start or the last evaluation (the estimate's warm-up).
    since: usize,
    /// The evaluation in progress: when it started, and when its first batch ended.
    evaluating: Option<Instant>,
    first_batch: Option<Instant>,
    /// Evaluation batches of a step's rows (`grad_accum`): an evaluation batch has
    /// a micro-step's rows.
    batches_per_step: usize,
    /// Step lines every this many steps, when stdout is not a terminal (0: none).
    log_interval: usize,
    /// FLOPs of a token's forward and backward pass (nanoGPT's MFU numerator).
    flops_per_token: f64,
    /// Tokens a step trains on (all ranks).
    tokens_per_step: usize,
    /// Steps this process took, the seconds of those after warm-up, and whether the
    /// time estimate was printed.
    timing: (usize, f64, bool),
    /// Whether the run computes on the CPU (a long run gets a suggestion).
    on_cpu: bool,
    piped: bool,
}

impl Progress {
    pub fn new(
        log_interval: usize,
        flops_per_token: f64,
        tokens_per_step: usize,
        batches_per_step: usize,
        on_cpu: bool,
    ) -> Self {
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} | ETA {eta}")
                .expect("a valid template"),
        );
        Progress {
            bar,
            smoothed_loss: None,
            last_val: None,
            since: 0,
            evaluating: None,
            first_batch: None,
            batches_per_step,
            log_interval,
            flops_per_token,
            tokens_per_step,
            timing: (0, 0.0, false),
            on_cpu,
            piped: !std::io::stdout().is_terminal(),
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn print(&self, text: &str) {
        self.bar.suspend(|| println!("{text}"));
    }
}

impl Observer for Progress {
    fn on_start(&mut self, start: usize, max_iters: usize) {
        self.bar.set_length(max_iters as u64);
        self.bar.set_position(start as u64);
        self.bar.reset_eta();
    }

    fn on_step(&mut self, step: &StepReport) {
        let smoothed = match self.smoothed_loss {
            Some(s) => 0.9 * s + 0.1 * step.loss,
            None => step.loss,
        };
        self.smoothed_loss = Some(smoothed);
        // The estimate counts the steps after warm-up (and after each evaluation).
        self.since += 1;
        if self.since == WARMUP_STEPS {
            self.bar.reset_eta();
        }
        // Once, at the start: the time a step takes after warm-up, and the whole run's.
        self.timing.0 += 1;
        if self.timing.0 > WARMUP_STEPS {
            self.timing.1 += self.tokens_per_step as f64 / step.tokens_per_s.max(1e-9);
        }
        if self.timing.0 == WARMUP_STEPS + TIMED_STEPS && !self.timing.2 {
            self.timing.2 = true;
            let per_step = self.timing.1 / TIMED_STEPS as f64;
            let left = (self.bar.length().unwrap_or(0)).saturating_sub(step.iter as u64);
            let on_cpu = self.on_cpu;
            self.bar
                .suspend(|| print_time_estimate(per_step, left as usize, on_cpu));
        }
        let val = self.last_val.map_or("-".into(), |v| format!("{v:.4}"));
        self.bar.set_position(step.iter as u64);
        self.bar.set_message(format!(
            "loss {smoothed:.4} | val {val} | lr {:.2e} | {:.0} tok/s",
            step.lr, step.tokens_per_s
        ));
        if self.piped && self.log_interval > 0 && step.iter.is_multiple_of(self.log_interval) {
            self.print(&step_line(step, self.flops_per_token, self.tokens_per_step));
        }
    }

    fn on_eval_batch(&mut self, done: usize, total: usize) {
        let start = *self.evaluating.get_or_insert_with(Instant::now);
        let spent = start.elapsed().as_secs_f64();
        let left = spent / done as f64 * (total - done) as f64;
        self.bar.set_message(format!(
            "evaluating: batch {done}/{total}, {left:.0} s left"
        ));
        // A long evaluation before any step was timed (a big model's first one on a
        // CPU): say so, with the run's time estimated from the second batch's speed.
        match done {
            1 => self.first_batch = Some(Instant::now()),
            2 if !self.timing.2 => {
                let batch_s = self
                    .first_batch
                    .map_or(spent, |t| t.elapsed().as_secs_f64());
                let whole = batch_s * total as f64;
                if whole > LONG_EVAL_S {
                    self.timing.2 = true;
                    let per_step = STEP_PER_FORWARD * batch_s * self.batches_per_step as f64;
                    let steps =
                        (self.bar.length().unwrap_or(0)).saturating_sub(self.bar.position());
                    let on_cpu = self.on_cpu;
                    self.bar.suspend(|| {
                        println!(
                            "# evaluating {total} batches: about {} (Ctrl-C stops it and saves the run)",
                            duration(whole)
                        );
                        print_time_estimate(per_step, steps as usize, on_cpu);
                    });
                }
            }
            _ => {}
        }
    }

    fn on_eval(&mut self, record: &EvalRecord, sample: Option<&str>) {
        self.last_val = Some(record.val_loss);
        let eval_s = self
            .evaluating
            .take()
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        let trained = match record.tokens_per_s > 0.0 {
            true => format!(
                "trained at {:.0} tok/s since the last evaluation, {:.1} s into the run; ",
                record.tokens_per_s, record.elapsed_s
            ),
            false => String::new(),
        };
        self.print(&format!(
            "step {}: train loss {:.4}, val loss {:.4} ({trained}evaluated in {eval_s:.1} s)",
            record.iter, record.train_loss, record.val_loss
        ));
        if let Some(sample) = sample {
            self.print(&format!("--- sample ---\n{sample}\n--------------"));
        }
        // Time spent evaluating is not training time: the estimate starts again.
        self.since = 0;
        self.bar.reset_eta();
    }
}

/// `step 10: loss 2.1234, lr 1.00e-3, 25.3 ms, 2523 tok/s, 1.42 GFLOP/s`: nanoGPT's
/// log line, with the achieved FLOP rate (MFU's numerator; quill does not guess the
/// machine's peak).
fn step_line(step: &StepReport, flops_per_token: f64, tokens_per_step: usize) -> String {
    let tokens_per_s = step.tokens_per_s.max(1e-9);
    format!(
        "step {}: loss {:.4}, lr {:.2e}, {:.1} ms, {:.0} tok/s, {:.2} GFLOP/s",
        step.iter,
        step.loss,
        step.lr,
        tokens_per_step as f64 / tokens_per_s * 1e3,
        tokens_per_s,
        flops_per_token * tokens_per_s / 1e9
    )
}

/// Prints `# time: about 21 ms a step, about 42 s for the 1997 steps left (evaluations
/// extra)`, and on the CPU past an hour a warning on stderr that names what fits better.
pub fn print_time_estimate(per_step_s: f64, steps: usize, on_cpu: bool) {
    let total = per_step_s * steps as f64;
    println!(
        "# time: about {} a step, about {} for the {steps} steps left (evaluations extra)",
        duration(per_step_s),
        duration(total)
    );
    if on_cpu && total > LONG_ON_CPU_S {
        eprintln!(
            "warning: this run would take about {} on the CPU: a GPU (--device cuda or wgpu) fits it, or on the CPU a smaller model (--preset cpu) or fewer --max-iters",
            duration(total)
        );
    }
}

/// `42 ms`, `3.1 s`, `12 min`, `2.4 h`.
fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 1.0 => format!("{:.0} ms", s * 1e3),
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

/// A bar of evaluation batches on stderr (drawn only on a terminal).
pub fn batches_bar(total: usize) -> ProgressBar {
    ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("evaluating {bar:30} {pos}/{len} batches | ETA {eta}")
            .expect("a valid template"),
    )
}

/// A hidden bar of bytes (downloads): shown once its caller points it at stderr.
pub fn bytes_bar() -> ProgressBar {
    ProgressBar::hidden().with_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .expect("a valid template"),
    )
}
