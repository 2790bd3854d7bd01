//! The trainer end to end on a small corpus and model (CPU backend): exact resume,
//! interruption, atomic and validated checkpoints, NaN handling.

use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use burn_flex::Flex;
use quill_data::{DataError, Dataset};
use quill_model::{Activation, Norm, Position};
use quill_train::checkpoint::last_dir;
use quill_train::metrics::read_jsonl;
use quill_train::{
    Checkpoint, EvalRecord, LossPlot, OptimizerKind, Outcome, RunConfig, Schedule, StepReport,
    TrainError, human_count,
};

use crate::common;

use common::{Record, config, expected_vocab, gpt, interrupted_then_resumed_with, run_to, tweak};

#[test]
fn training_lowers_the_loss_and_writes_the_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = Record::default();
    let config = tweak(config(), |c| {
        c.train.max_iters = 40;
        c.train.eval_interval = 20;
        c.train.lr = 1e-2;
    });
    let Outcome::Finished(last) = run_to(config, dir.path(), None, None, &mut rec).unwrap() else {
        panic!("not finished")
    };
    assert_eq!(rec.losses.len(), 40);
    assert_eq!(
        rec.evals.iter().map(|r| r.iter).collect::<Vec<_>>(),
        vec![0, 20, 40]
    );
    assert!(
        last.val_loss < rec.evals[0].val_loss - 0.5,
        "{:?}",
        rec.evals
    );
    assert_eq!(rec.samples.len(), 3);
    assert!(rec.samples.iter().all(|s| s.chars().count() == 10));
    for file in [
        "metrics.jsonl",
        "steps.jsonl",
        "loss.svg",
        "loss.png",
        "last/model.safetensors",
        "best/model.safetensors",
        "last/config.json",
        "last/vocab.json",
        "last/optimizer.safetensors",
        "last/state.json",
    ] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }
    // config.json holds the model once, under "model"; "train" has training settings.
    let config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("last/config.json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            config["model"]["kind"].as_str(),
            config["model"]["n_layer"].as_u64()
        ),
        (Some("gpt"), Some(1))
    );
    let train = config["train"].as_object().unwrap();
    for key in quill_model::ModelOverrides::KEYS {
        assert!(!train.contains_key(*key), "\"train\" repeats {key}");
    }
    assert_eq!(train["max_iters"], 40);
    assert_eq!(
        fs::read_to_string(dir.path().join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    // One record per step, with the losses the observer saw.
    let steps: Vec<StepReport> = read_jsonl(&dir.path().join("steps.jsonl"));
    assert_eq!(
        steps.iter().map(|s| s.iter).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
    assert_eq!(
        steps.iter().map(|s| s.loss).collect::<Vec<_>>(),
        rec.losses.iter().map(|l| l.1).collect::<Vec<_>>()
    );
    assert!(steps.iter().all(|s| s.grad_norm > 0.0 && s.lr > 0.0));
    let checkpoint = Checkpoint::load(&last_dir(dir.path())).unwrap();
    assert_eq!(checkpoint.state.iter, 40);
    assert_eq!(checkpoint.state.best_val_loss, Some(last.val_loss));
}

/// Trains `config()` into `out`, stopped (as by Ctrl-C) after `stop_after` steps, then
/// resumes from `out/last`; returns the losses of both parts and the final outcome.
fn interrupted_then_resumed(
    out: &Path,
    stop_after: usize,
    flag: &'static AtomicBool,
) -> (Vec<(usize, f32)>, Outcome) {
    interrupted_then_resumed_with(config(), out, stop_after, flag)
}

#[test]
fn resume_continues_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let mut full = Record::default();
    let Outcome::Finished(expected) =
        run_to(config(), &dir.path().join("full"), None, None, &mut full).unwrap()
    else {
        panic!("not finished")
    };
    assert_eq!(full.losses.len(), 8);

    // Stopped right after the evaluation at step 4, and between evaluations at step 3.
    static AT_EVAL: AtomicBool = AtomicBool::new(false);
    static BETWEEN: AtomicBool = AtomicBool::new(false);
    for (name, stop_after, flag) in [("at-eval", 4, &AT_EVAL), ("between", 3, &BETWEEN)] {
        let out = dir.path().join(name);
        let (losses, outcome) = interrupted_then_resumed(&out, stop_after, flag);
        assert_eq!(losses, full.losses, "{name}");
        let Outcome::Finished(got) = outcome else {
            panic!("not finished")
        };
        assert_eq!(
            (got.iter, got.train_loss, got.val_loss, got.lr),
            (
                expected.iter,
                expected.train_loss,
                expected.val_loss,
                expected.lr
            )
        );
        // metrics.jsonl has each evaluation once, steps.jsonl each step once, with the
        // uninterrupted run's losses.
        let evals: Vec<EvalRecord> = read_jsonl(&out.join("metrics.jsonl"));
        let iters: Vec<usize> = evals.iter().map(|r| r.iter).collect();
        assert_eq!(iters, vec![0, 4, 8], "{name}");
        let steps: Vec<StepReport> = read_jsonl(&out.join("steps.jsonl"));
        let step_losses: Vec<(usize, f32)> = steps.iter().map(|s| (s.iter, s.loss)).collect();
        assert_eq!(step_losses, full.losses, "{name}");
        // The picture was redrawn from all the records, not from the resumed part alone.
        let svg = fs::read_to_string(out.join("loss.svg")).unwrap();
        let title = format!(
            "{name} · GPT 1 layers × 16 (2 heads) · {} parameters · {} tokens seen",
            human_count(config().model_for(expected_vocab()).num_params()),
            human_count((8 * config().tokens_per_iter()) as f64)
        );
        let redrawn = LossPlot {
            title: &title,
            steps: &steps,
            evals: &evals,
        };
        assert_eq!(svg, redrawn.svg().unwrap(), "{name}");
        assert_eq!(svg.matches("<circle").count(), 2 * 3 + 2, "{name}");
    }
}

#[test]
fn every_option_of_the_fast_recipe_and_of_precision_is_recorded_and_resumes_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    type Change = fn(&mut RunConfig);
    let options: [(&str, Change); 9] = [
        ("bf16-master", |c| c.train.emulate_bf16 = true),
        ("bf16-alone", |c| {
            (c.train.emulate_bf16, c.train.master_weights) = (true, false)
        }),
        ("muon", |c| c.train.optimizer = OptimizerKind::Muon),
        ("rotary", |c| gpt(c).position = Position::Rotary),
        ("relu2", |c| gpt(c).activation = Activation::Relu2),
        ("rmsnorm", |c| gpt(c).norm = Norm::Rms),
        ("zero-init", |c| gpt(c).zero_init_proj = true),
        ("wsd", |c| {
            (c.train.schedule, c.train.cooldown_iters) = (Schedule::Wsd, 4)
        }),
        ("all", |c| {
            c.train.optimizer = OptimizerKind::Muon;
            (gpt(c).position, gpt(c).activation) = (Position::Rotary, Activation::Relu2);
            (gpt(c).norm, gpt(c).zero_init_proj) = (Norm::Rms, true);
            (c.train.schedule, c.train.cooldown_iters) = (Schedule::Wsd, 4);
        }),
    ];
    let mut trajectories = vec![];
    for (name, change) in options {
        let mut config = config();
        change(&mut config);
        let mut full = Record::default();
        let out = dir.path().join(format!("{name}-full"));
        run_to(config.clone(), &out, None, None, &mut full).unwrap();
        let saved = Checkpoint::load(&out.join("last")).unwrap();
        assert_eq!(
            saved.config.train, config.train,
            "{name}: the checkpoint records it"
        );
        assert_eq!(
            saved.config.model,
            config.model_for(expected_vocab()),
            "{name}"
        );

        let flag: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let out = dir.path().join(name);
        let (losses, _) = interrupted_then_resumed_with(config, &out, 3, flag);
        assert_eq!(losses, full.losses, "{name}: resumed losses differ");
        let resumed = Checkpoint::load(&out.join("last")).unwrap();
        assert_eq!(
            resumed.weights, saved.weights,
            "{name}: resumed weights differ"
        );
        assert_eq!(
            resumed.optimizer, saved.optimizer,
            "{name}: optimizer state differs"
        );
        // bf16 storage saves the f32 master copies, or the rounded weights without.
        let bf16 = |v: &f32| burn::tensor::bf16::from_f32(*v).to_f32() == *v;
        let all_bf16 = (saved.weights.values()).all(|t| t.values.iter().all(bf16));
        assert_eq!(all_bf16, name == "bf16-alone", "{name}");
        if name == "muon" || name == "all" {
            assert!(
                saved
                    .optimizer
                    .keys()
                    .any(|k| k.starts_with("momentum_buffer.")),
                "{name}: Muon's momentum is saved"
            );
        }
        trajectories.push(full.losses);
    }
    // Each option changes the training (none is silently ignored).
    let baseline = {
        let mut full = Record::default();
        run_to(
            config(),
            &dir.path().join("baseline"),
            None,
            None,
            &mut full,
        )
        .unwrap();
        full.losses
    };
    for (losses, (name, _)) in trajectories.iter().zip(options) {
        assert_ne!(losses, &baseline, "{name} trains like the baseline");
    }
}

#[test]
fn checkpoints_are_written_atomically() {
    let dir = tempfile::tempdir().unwrap();
    run_to(config(), dir.path(), None, None, &mut Record::default()).unwrap();
    let last = last_dir(dir.path());
    let good = Checkpoint::load(&last).unwrap();
    // Nothing but the finished checkpoints is left beside them.
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    names.sort();
    // And TensorBoard's event file.
    let events = names.iter().filter(|n| n.contains("tfevents")).count();
    assert_eq!(events, 1, "{names:?}");
    names.retain(|n| !n.contains("tfevents"));
    assert_eq!(
        names,
        [
            ".lock",
            ".quill-run.json",
            "best",
            "last",
            "loss.png",
            "loss.svg",
            "metrics.jsonl",
            "steps.jsonl"
        ]
    );

    // A save that fails part-way (its temporary directory cannot be created) leaves the
    // previous checkpoint complete.
    let blocker = dir.path().join(format!(".last.tmp-{}", std::process::id()));
    fs::write(&blocker, "in the way").unwrap();
    let mut newer = good.clone();
    newer.state.iter = 999;
    assert!(newer.save(&last).is_err());
    let after = Checkpoint::load(&last).unwrap();
    assert_eq!(after.state, good.state);
    assert_eq!(after.weights, good.weights);
    fs::remove_file(&blocker).unwrap();
    newer.save(&last).unwrap();
    assert_eq!(Checkpoint::load(&last).unwrap().state.iter, 999);
}

#[test]
fn corrupt_truncated_and_foreign_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    run_to(config(), dir.path(), None, None, &mut Record::default()).unwrap();
    let last = last_dir(dir.path());
    let copy = |name: &str| {
        let to = dir.path().join(name);
        fs::create_dir_all(&to).unwrap();
        for entry in fs::read_dir(&last).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
        to
    };
    let error = |path: &Path| Checkpoint::load(path).unwrap_err().to_string();

    let truncated = copy("truncated");
    let bytes = fs::read(truncated.join("model.safetensors")).unwrap();
    fs::write(
        truncated.join("model.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let e = error(&truncated);
    assert!(
        e.contains("not a valid quill checkpoint: model.safetensors:"),
        "{e}"
    );

    let corrupt = copy("corrupt");
    fs::write(corrupt.join("config.json"), "{ not json").unwrap();
    assert!(error(&corrupt).contains("config.json:"));

    let foreign = copy("foreign");
    let state = fs::read_to_string(foreign.join("state.json")).unwrap();
    fs::write(
        foreign.join("state.json"),
        state.replace("quill-checkpoint-v1", "nanogpt"),
    )
    .unwrap();
    assert!(error(&foreign).contains("format \"nanogpt\", expected \"quill-checkpoint-v1\""));

    let missing = copy("missing");
    fs::remove_file(missing.join("vocab.json")).unwrap();
    assert!(error(&missing).contains("vocab.json:"));

    let e = error(&dir.path().join("nowhere"));
    assert!(
        e.ends_with("not a valid quill checkpoint: no such directory"),
        "{e}"
    );

    // Weights of another shape: loads, but building the model says which tensor.
    let other = dir.path().join("other");
    run_to(
        tweak(config(), |c| {
            gpt(c).n_embd = 8;
        }),
        &other,
        None,
        None,
        &mut Record::default(),
    )
    .unwrap();
    let mixed = copy("mixed");
    fs::copy(
        other.join("last/model.safetensors"),
        mixed.join("model.safetensors"),
    )
    .unwrap();
    let e = Checkpoint::load(&mixed)
        .unwrap()
        .model::<Flex>(&Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("has shape") && e.contains("the model needs"),
        "{e}"
    );
}

#[test]
fn data_with_another_vocabulary_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    run_to(config(), dir.path(), None, None, &mut Record::default()).unwrap();
    let checkpoint = Checkpoint::load(&last_dir(dir.path())).unwrap();
    let err = Dataset::with_tokenizer("only these letters", checkpoint.tokenizer.clone(), 0.1)
        .unwrap_err();
    assert!(
        matches!(err, DataError::VocabMismatch { data: 10, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("the data's vocabulary (10 characters) differs from the checkpoint's (")
    );
    // Resuming with a different model shape is refused too.
    let err = run_to(
        tweak(config(), |c| {
            gpt(c).n_layer = 2;
        }),
        dir.path(),
        Some(checkpoint),
        None,
        &mut Record::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "n_layer is 1 in the checkpoint but 2 here; only training settings may change on resume"
    );
}

#[test]
fn a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = tweak(config(), |c| {
        c.train.lr = 1e30;
        c.train.min_lr = 0.0;
        c.train.warmup_iters = 0;
        c.train.grad_clip = 0.0;
    });
    let err = run_to(config, dir.path(), None, None, &mut Record::default()).unwrap_err();
    assert!(
        matches!(err, TrainError::NonFinite { iter: 1..=3, .. }),
        "{err}"
    );
    let checkpoint = Checkpoint::load(&last_dir(dir.path())).unwrap();
    assert_eq!(checkpoint.state.iter, 0);
    assert!(
        checkpoint
            .weights
            .values()
            .all(|t| t.values.iter().all(|v| v.is_finite()))
    );
}
