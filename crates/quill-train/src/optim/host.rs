//! The bridge to the fused CPU kernels: element-wise passes over the host values of
//! Flex tensors (feature `fused-cpu`); elsewhere the callers use tensor operations.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Values per rayon task in the host passes: small enough that a 128-wide model's
/// matrices are shared by the cores, large enough that a task outweighs its cost.
#[cfg(any(feature = "fused-cpu", test))]
pub(super) const CHUNK: usize = 1 << 14;

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

/// `f` applied to every position of `tensors` (see `quill_kernels::par_map`), on the
/// host in parallel chunks, where the fused CPU kernels serve the backend; `None`
/// elsewhere.
pub(super) fn host_map<B: Backend, const I: usize, const N: usize>(
    tensors: [&Tensor<B, 1>; I],
    f: impl Fn([f32; I]) -> [f32; N] + Sync,
) -> Option<[Vec<f32>; N]> {
    #[cfg(feature = "fused-cpu")]
    return quill_kernels::with_f32_values(tensors, |values| {
        quill_kernels::par_map(values, CHUNK, f)
    });
    #[cfg(not(feature = "fused-cpu"))]
    {
        let _ = (tensors, f);
        None
    }
}
