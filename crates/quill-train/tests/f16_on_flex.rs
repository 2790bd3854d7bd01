//! Real 16-bit training on the host: Flex with f16 as its default float type (what a GPU
//! backend's f16 is), so that every parameter, activation and gradient is f16 except
//! where quill computes in f32. The f32 master copies and the loss scaler, saved and
//! resumed; and a checkpoint written before master copies existed.
//!
//! Its own test binary: a device's default float type is set once per process.

use std::fs;
use std::sync::Once;
use std::sync::atomic::AtomicBool;

use burn::tensor::{FloatDType, IntDType, f16};
use burn_flex::{Flex, FlexDevice};
use quill_train::metrics::read_jsonl;
use quill_train::{Checkpoint, LossScaler, Outcome, StepReport};

#[path = "it/common.rs"]
mod common;

use common::{Record, config, interrupted_then_resumed_with, run_to, tweak};

/// Makes f16 Flex's default float type (before any tensor is made on it).
fn f16_flex() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        burn::tensor::set_default_dtypes::<Flex>(&FlexDevice, FloatDType::F16, IntDType::I32)
            .expect("Flex runs f16")
    });
}

/// Whether every weight of `checkpoint` is an f16 value.
fn all_f16(checkpoint: &Checkpoint) -> bool {
    let exact = |v: &f32| f16::from_f32(*v).to_f32() == *v;
    (checkpoint.weights.values()).all(|t| t.values.iter().all(exact))
}

#[test]
fn f16_trains_with_master_copies_and_a_loss_scale_and_resumes_bit_for_bit() {
    f16_flex();
    let dir = tempfile::tempdir().unwrap();
    let mut full = Record::default();
    let out = dir.path().join("full");
    let Outcome::Finished(end) = run_to(config(), &out, None, None, &mut full).unwrap() else {
        panic!("not finished")
    };
    assert!(end.val_loss < full.evals[0].val_loss, "{:?}", full.evals);
    let saved = Checkpoint::load(&out.join("last")).unwrap();
    // The checkpoint holds the f32 master copies, not their f16 rounding.
    assert!(!all_f16(&saved));
    let scaler = LossScaler {
        scale: LossScaler::INIT_SCALE,
        good_steps: 8,
        skipped_steps: 0,
    };
    assert_eq!(saved.state.loss_scaler, Some(scaler));
    let steps: Vec<StepReport> = read_jsonl(&out.join("steps.jsonl"));
    assert!(
        (steps.iter()).all(|s| s.loss_scale == Some(65_536.0) && s.skipped_steps == Some(0)),
        "{steps:?}"
    );

    static STOP: AtomicBool = AtomicBool::new(false);
    let resumed_out = dir.path().join("resumed");
    let (losses, _) = interrupted_then_resumed_with(config(), &resumed_out, 3, &STOP);
    assert_eq!(losses, full.losses);
    let resumed = Checkpoint::load(&resumed_out.join("last")).unwrap();
    assert_eq!(resumed.weights, saved.weights);
    assert_eq!(resumed.optimizer, saved.optimizer);
    assert_eq!(resumed.state.loss_scaler, saved.state.loss_scaler);

    // Without master copies the parameters are f16 alone, and train otherwise.
    let alone = tweak(config(), |c| c.train.master_weights = false);
    let mut pure = Record::default();
    let out = dir.path().join("alone");
    run_to(alone, &out, None, None, &mut pure).unwrap();
    assert!(all_f16(&Checkpoint::load(&out.join("last")).unwrap()));
    assert_ne!(pure.losses, full.losses);

    // bf16 emulation rounds f32 parameters; f16 ones are refused.
    let emulated = tweak(config(), |c| c.train.emulate_bf16 = true);
    let err = run_to(
        emulated,
        &dir.path().join("emulated"),
        None,
        None,
        &mut Record::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("emulate_bf16 rounds f32 parameters"), "{err}");
}

#[test]
fn a_16_bit_checkpoint_from_before_master_copies_resumes_with_them() {
    f16_flex();
    let dir = tempfile::tempdir().unwrap();
    let alone = tweak(config(), |c| c.train.master_weights = false);
    let mut pure = Record::default();
    run_to(
        alone.clone(),
        &dir.path().join("pure"),
        None,
        None,
        &mut pure,
    )
    .unwrap();

    // Stopped after step 4's evaluation, then the settings and state written as before:
    // no master_weights, emulate_bf16 or loss_scaler keys.
    static STOP: AtomicBool = AtomicBool::new(false);
    let out = dir.path().join("old");
    let mut first = Record {
        stop_after: Some((4, &STOP)),
        ..Default::default()
    };
    run_to(alone, &out, None, Some(&STOP), &mut first).unwrap();
    let last = out.join("last");
    for (file, section) in [("config.json", Some("train")), ("state.json", None)] {
        let path = last.join(file);
        let mut json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let object = match section {
            Some(key) => json[key].as_object_mut().unwrap(),
            None => json.as_object_mut().unwrap(),
        };
        for key in ["master_weights", "emulate_bf16", "loss_scaler"] {
            object.remove(key);
        }
        fs::write(&path, json.to_string()).unwrap();
    }
    let old = Checkpoint::load(&last).unwrap();
    assert!(old.config.train.master_weights, "master copies by default");
    assert_eq!(old.state.loss_scaler, None);

    let mut resumed = Record::default();
    let config = old.config.clone();
    let outcome = run_to(config, &out, Some(old), None, &mut resumed).unwrap();
    assert!(matches!(outcome, Outcome::Finished(_)));
    // The first resumed step sees the same f16 weights as the run without copies (its
    // loss is the same); later ones differ, the copies keeping what f16 drops.
    assert_eq!(resumed.losses[0], pure.losses[4]);
    assert_ne!(resumed.losses[1..], pure.losses[5..]);
    let end = Checkpoint::load(&out.join("last")).unwrap();
    assert_eq!(end.state.loss_scaler.map(|s| s.good_steps), Some(4));
    assert!(!all_f16(&end));
}
