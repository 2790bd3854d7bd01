use burn::tensor::{Distribution, Int, Tensor};
use burn_autodiff::Autodiff;
use burn_flex::Flex;
use quill_model::{GptConfig, LanguageModel, ModelConfig, cross_entropy};
use std::time::Instant;
type B = Autodiff<Flex>;
fn time<R>(name: &str, mut f: impl FnMut() -> R) {
    for _ in 0..3 {
        f();
    }
    let n = 40;
    let s = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    println!(
        "{name}: {:.3} ms",
        s.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}
fn main() {
    let d = Default::default();
    let cfg = GptConfig {
        vocab_size: 65,
        block_size: 64,
        n_layer: 4,
        n_head: 4,
        n_embd: 128,
        dropout: 0.0,
        bias: true,
        tie_weights: true,
    };
    let model: LanguageModel<B> = ModelConfig::Gpt(cfg).init::<B>(0, &d).unwrap();
    let LanguageModel::Gpt(gpt) = &model else {
        panic!()
    };
    let idx = Tensor::<B, 2, Int>::random([12, 64], Distribution::Uniform(0.0, 65.0), &d);
    time("loss fwd+bwd", || {
        model.loss(idx.clone(), idx.clone()).unwrap().backward()
    });
    let logits =
        Tensor::<B, 3>::random([12, 64, 65], Distribution::Normal(0.0, 1.0), &d).require_grad();
    time("cross_entropy fwd+bwd", || {
        cross_entropy(logits.clone(), idx.clone()).backward()
    });
    time("wte fwd+bwd", || {
        gpt.wte.forward(idx.clone()).sum().backward()
    });
    let x =
        Tensor::<B, 3>::random([12, 64, 128], Distribution::Normal(0.0, 1.0), &d).require_grad();
    time("block fwd+bwd", || {
        gpt.h[0].forward(x.clone(), None).sum().backward()
    });
    time("head tied fwd+bwd", || {
        x.clone()
            .reshape([768, 128])
            .matmul(gpt.wte.weight.val().transpose())
            .sum()
            .backward()
    });
    time("residual add fwd+bwd", || {
        (x.clone() + x.clone()).sum().backward()
    });
}
