//! The training progress bar: an [`Observer`] drawn with indicatif.

use indicatif::{ProgressBar, ProgressStyle};
use quill_train::{EvalRecord, Observer, StepReport};

/// Iteration, smoothed train loss, last val loss, learning rate, tokens/s and ETA.
pub struct Progress {
    bar: ProgressBar,
    smoothed_loss: Option<f32>,
    last_val: Option<f32>,
}

impl Progress {
    pub fn new() -> Self {
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} | ETA {eta}")
                .expect("a valid template"),
        );
        Progress {
            bar,
            smoothed_loss: None,
            last_val: None,
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
        let val = self.last_val.map_or("-".into(), |v| format!("{v:.4}"));
        self.bar.set_position(step.iter as u64);
        self.bar.set_message(format!(
            "loss {smoothed:.4} | val {val} | lr {:.2e} | {:.0} tok/s",
            step.lr, step.tokens_per_s
        ));
    }

    fn on_eval(&mut self, record: &EvalRecord, sample: Option<&str>) {
        self.last_val = Some(record.val_loss);
        self.print(&format!(
            "step {}: train loss {:.4}, val loss {:.4} ({:.0} tok/s, {:.1} s)",
            record.iter, record.train_loss, record.val_loss, record.tokens_per_s, record.elapsed_s
        ));
        if let Some(sample) = sample {
            self.print(&format!("--- sample ---\n{sample}\n--------------"));
        }
    }
}

/// A hidden bar of bytes (downloads): shown once its caller points it at stderr.
pub fn bytes_bar() -> ProgressBar {
    ProgressBar::hidden().with_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .expect("a valid template"),
    )
}
