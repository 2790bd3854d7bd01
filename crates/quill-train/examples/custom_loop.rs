//! A GPT trained with quill's public step API on batches of its own: rows counting up
//! modulo 10. It needs only the training core:
//! `cargo run --release -p quill-train --no-default-features --example custom_loop`

use burn::tensor::{Int, Tensor, TensorData};
use burn_autodiff::Autodiff;
use burn_flex::Flex;
use quill_data::Rng;
use quill_model::{GptConfig, ModelConfig};
use quill_train::{Batch, RunConfig, TrainConfig, Trainer};

type B = Autodiff<Flex>;

/// One batch of `rows` × `t` tokens: `x` counts from a random start, `y` is `x` + 1.
fn counting_batch(rng: &mut Rng, rows: usize, t: usize) -> Batch<B> {
    let starts: Vec<usize> = (0..rows).map(|_| rng.below(10) as usize).collect();
    let ids = |shift: usize| -> Tensor<B, 2, Int> {
        let ids = starts
            .iter()
            .flat_map(|s| (0..t).map(move |i| (s + i + shift) % 10));
        let ids: Vec<i64> = ids.map(|id| id as i64).collect();
        Tensor::from_data(TensorData::new(ids, [rows, t]), &Default::default())
    };
    Batch::new(ids(0), ids(1))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The settings that differ from nanoGPT's defaults.
    let gpt = GptConfig {
        vocab_size: 10,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 32,
        bias: false,
        ..Default::default()
    };
    let model = ModelConfig::Gpt(gpt).init::<B>(0, &Default::default())?;
    // AdamW, schedule and clipping settings: the `cpu` preset's, shortened.
    let config = TrainConfig {
        max_iters: 60,
        warmup_iters: 5,
        lr: 3e-3,
        ..RunConfig::preset("cpu")?.train
    };
    let (mut trainer, mut rng, mut loss) = (Trainer::new(model, &config), Rng::new(1), f32::NAN);
    while trainer.iter() < config.max_iters {
        let out = trainer.step(&counting_batch(&mut rng, 8, 16))?;
        let (step, norm, lr) = (trainer.iter(), out.grad_norm, out.lr);
        loss = out.loss;
        if step % 10 == 0 {
            println!("step {step:2}: loss {loss:.4}, grad norm {norm:.3}, lr {lr:.2e}");
        }
    }
    // From ln 10 = 2.30 at the start: counting is learnable, so the loss must fall.
    match loss < 0.5 {
        true => Ok(()),
        false => Err(format!("the loss only fell to {loss}").into()),
    }
}
