//! The bridge to the fused CPU kernels: element-wise passes over the host values of
//! Flex tensors (feature `fused-cpu`); elsewhere the callers use tensor operations.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Runs `f` (vectorised) on the host `f32` values of `tensors` where the fused CPU
/// kernels serve the backend (feature `fused-cpu`, Flex); `None` elsewhere, where the
/// caller uses tensor operations.
pub(super) fn on_host<B: Backend, const N: usize, R>(
    tensors: [&Tensor<B, 1>; N],
    f: impl FnOnce([&[f32]; N]) -> R,
) -> Option<R> {
    #[cfg(feature = "fused-cpu")]
    return quill_kernels::with_f32_values(tensors, |values| {
        quill_kernels::vectorized(
            #[inline(always)]
            || f(values),
        )
    });
    #[cfg(not(feature = "fused-cpu"))]
    {
        let _ = (tensors, f);
        None
    }
}

/// AdamW's update of `[p, g, m, v]` in one pass over their host values (the fused
/// kernel), where the fused CPU kernels serve the backend; `None` elsewhere.
pub(super) fn adamw_on_host<B: Backend>(
    hyper: &super::adamw::Hyper,
    tensors: [&Tensor<B, 1>; 4],
) -> Option<[Vec<f32>; 3]> {
    #[cfg(feature = "fused-cpu")]
    return quill_kernels::with_f32_values(tensors, |[p, g, m, v]| {
        hyper.kernel().apply(p, g, m, v)
    });
    #[cfg(not(feature = "fused-cpu"))]
    {
        let _ = (hyper, tensors);
        None
    }
}

/// `(a + b) / divisor` (or `a + b`) in one pass over host values, where the fused CPU
/// kernels serve the backend; `None` elsewhere.
pub(super) fn add_then_divide_on_host<B: Backend>(
    a: &Tensor<B, 1>,
    b: &Tensor<B, 1>,
    divisor: Option<f32>,
) -> Option<Vec<f32>> {
    #[cfg(feature = "fused-cpu")]
    return quill_kernels::with_f32_values([a, b], |[a, b]| {
        quill_kernels::add_then_divide(a, b, divisor)
    });
    #[cfg(not(feature = "fused-cpu"))]
    {
        let _ = (a, b, divisor);
        None
    }
}
