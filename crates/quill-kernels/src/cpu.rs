//! The fused kernels themselves: plain `f32` slices in, plain `f32` slices out, each one
//! pass over its data where Burn's generic composition takes several. Work is split over
//! rayon's threads by rows (LayerNorm, GELU) or by sequence (attention), and every task
//! runs in [`simd`], compiled for AVX-512, else AVX2 + FMA, when the CPU has them.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

pub mod decode;

/// Runs `f` compiled for the widest vector unit this x86-64 CPU has: AVX-512 (F, VL,
/// BW, DQ; loops then run 16 lanes wide), else AVX2 and FMA (8 lanes), else as built.
/// `f` and the `#[inline(always)]` helpers it calls are inlined into the
/// `target_feature` function, so their loops are vectorised that wide. The closure
/// must be marked too, `simd(#[inline(always)] || …)`: a large one is otherwise
/// compiled on its own, without either, and called from here (objdump found GELU,
/// LayerNorm and attention running 4 lanes wide).
#[inline(always)]
pub(super) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match unit() {
            // SAFETY: the CPU has these features (detected by `vector_unit`).
            VectorUnit::Avx512 => return unsafe { avx512(f) },
            // SAFETY: as above.
            VectorUnit::Avx2 => return unsafe { avx2(f) },
            VectorUnit::Baseline => {}
        }
    }
    f()
}

/// The vector unit the kernels run on: [`vector_unit`], or in unit tests one that a
/// test chose (any the CPU has).
#[inline(always)]
fn unit() -> VectorUnit {
    #[cfg(test)]
    if let Some(unit) = tests::forced_unit() {
        return unit;
    }
    vector_unit()
}

/// The widest vector unit [`simd`] compiles for on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VectorUnit {
    /// AVX-512 F, VL, BW and DQ (with AVX2 and FMA).
    Avx512,
    /// AVX2 and FMA.
    Avx2,
    /// Neither: the build's own target features.
    Baseline,
}

/// What this CPU has, detected once; `QUILL_SIMD=avx2` (or `baseline`) caps it, so
/// that the narrower paths can be tested and measured on a machine with AVX-512.
pub(super) fn vector_unit() -> VectorUnit {
    static UNIT: std::sync::OnceLock<VectorUnit> = std::sync::OnceLock::new();
    *UNIT.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let cap = std::env::var("QUILL_SIMD").unwrap_or_default();
            let avx2 = has!("avx2") && has!("fma") && cap != "baseline";
            let avx512 = avx2
                && has!("avx512f")
                && has!("avx512vl")
                && has!("avx512bw")
                && has!("avx512dq")
                && cap != "avx2";
            match (avx512, avx2) {
                (true, _) => VectorUnit::Avx512,
                (false, true) => VectorUnit::Avx2,
                _ => VectorUnit::Baseline,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        VectorUnit::Baseline
    })
}

/// Where a kernel writes its result: `f32` values, overwritten, or a fresh
/// `MaybeUninit<f32>` buffer, which then needs no zero fill first (every value is
/// written; a kernel that adds to its output takes `f32` values only).
pub trait Output: sealed::Sealed + Send + Sync {
    /// Whether the values are initialised (`f32`).
    const INIT: bool;
    /// Writes `value`.
    fn set(&mut self, value: f32);
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for std::mem::MaybeUninit<f32> {}
}

impl Output for f32 {
    const INIT: bool = true;
    #[inline(always)]
    fn set(&mut self, value: f32) {
        *self = value;
    }
}

impl Output for std::mem::MaybeUninit<f32> {
    const INIT: bool = false;
    #[inline(always)]
    fn set(&mut self, value: f32) {
        self.write(value);
    }
}

/// `out` as `f32` values.
///
/// # Safety
/// Every value of `out` must have been written.
unsafe fn assume_init<O: Output>(out: &mut [O]) -> &mut [f32] {
    // SAFETY: `O` is `f32` or `MaybeUninit<f32>` (sealed), both laid out as `f32`, and
    // the caller wrote every value.
    unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<f32>(), out.len()) }
}

/// Rows per rayon task: about two tasks per thread, at least one row.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(2 * rayon::current_num_threads()).max(1)
}

// ---------------------------------------------------------------- element-wise math

/// `eˣ` to within 2 ulp, branch-free so that loops over it vectorise (Cephes' `expf`:
/// `x = n·ln 2 + r`, a degree-6 polynomial for `eʳ`, `2ⁿ` built in the exponent bits).
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let x = x.clamp(-87.3, 88.3); // 2ⁿ stays a normal number
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4; // x - n·ln 2 in two parts
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let n = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    er * f32::from_bits(((n + 127) << 23) as u32)
}

/// `Φ(x)` (the standard normal CDF) and `e^(−x²/2)`, which GELU and its derivative
/// share. `erf` by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5·10⁻⁷).
#[inline(always)]
fn normal_cdf(x: f32) -> (f32, f32) {
    let a = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = 1.061_405_4;
    let poly = poly * t - 1.453_152_1;
    let poly = poly * t + 1.421_413_7;
    let poly = poly * t - 0.284_496_74;
    let poly = poly * t + 0.254_829_6;
    let gauss = exp(-a * a); // e^(−x²/2)
    let erf = (1.0 - poly * t * gauss).copysign(x);
    (0.5 + 0.5 * erf, gauss)
}

/// `1/√(2π)`.
const FRAC_1_SQRT_TAU: f32 = 0.398_942_3;

/// GELU (the exact, erf form nanoGPT uses): `y = x·Φ(x)`.
pub fn gelu_forward<O: Output>(x: &[f32], y: &mut [O]) {
    let n = rows_per_task(x.len() / 64) * 64;
    y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| {
        simd(
            #[inline(always)]
            || {
                for (y, &x) in y.iter_mut().zip(x) {
                    y.set(x * normal_cdf(x).0);
                }
            },
        )
    });
}

/// GELU's backward pass: `dx = dy·(Φ(x) + x·φ(x))`.
pub fn gelu_backward<O: Output>(x: &[f32], dy: &[f32], dx: &mut [O]) {
    let n = rows_per_task(x.len() / 64) * 64;
    dx.par_chunks_mut(n)
        .zip(x.par_chunks(n).zip(dy.par_chunks(n)))
        .for_each(|(dx, (x, dy))| {
            simd(
                #[inline(always)]
                || {
                    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                        let (cdf, gauss) = normal_cdf(x);
                        dx.set(dy * (cdf + x * FRAC_1_SQRT_TAU * gauss));
                    }
                },
            )
        });
}

// ---------------------------------------------------------------- Newton–Schulz

/// Muon's orthogonalisation of a row-major `rows × cols` matrix `g` into `out` (same
/// shape): `X = g / (‖g‖_F + 1e-7)`, then `steps` times `X ← a·X + (b·A + c·A²)·X` with
/// `A = X·Xᵀ`, on the orientation whose `A` is the smaller (a tall matrix is read
/// transposed and written back transposed). One thread: [`newton_schulz_all`] spreads
/// the matrices of a step over the cores (far better than splitting each of these
/// small products).
pub fn newton_schulz(
    g: &[f32],
    rows: usize,
    cols: usize,
    (a, b, c): (f32, f32, f32),
    steps: usize,
    out: &mut [f32],
) {
    let wide = rows <= cols;
    let (r, s) = if wide { (rows, cols) } else { (cols, rows) };
    // Pass 1: X, normalised, row-major r × s (a tall g transposed on the way).
    let norm = g.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
    let inv = (1.0 / (norm + 1e-7)) as f32;
    let mut x = vec![0f32; r * s];
    for (i, row) in x.chunks_mut(s).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = inv
                * if wide {
                    g[i * cols + j]
                } else {
                    g[j * cols + i]
                };
        }
    }
    let (mut gram, mut poly, mut next) = (vec![0f32; r * r], vec![0f32; r * r], vec![0f32; r * s]);
    for _ in 0..steps {
        let xv = View::rows(&x, r, s, s);
        // A = X·Xᵀ; then poly = b·A + c·A·A (A·A added onto b·A).
        gemm_on(&mut gram, r, xv, xv.t(), 1.0, false, false);
        for (p, &q) in poly.iter_mut().zip(&gram) {
            *p = b * q;
        }
        let gv = View::rows(&gram, r, r, r);
        gemm_on(&mut poly, r, gv, gv, c, true, false);
        // X' = a·X + poly·X.
        for (n, &v) in next.iter_mut().zip(&x) {
            *n = a * v;
        }
        gemm_on(
            &mut next,
            s,
            View::rows(&poly, r, r, r),
            xv,
            1.0,
            true,
            false,
        );
        std::mem::swap(&mut x, &mut next);
    }
    for (i, row) in out.chunks_mut(cols).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = if wide { x[i * s + j] } else { x[j * s + i] };
        }
    }
}

/// [`newton_schulz`] of each `(values, rows, cols)` matrix, one rayon task each
/// (largest first, so that the cores finish together).
pub fn newton_schulz_all(
    matrices: &[(&[f32], usize, usize)],
    coeffs: (f32, f32, f32),
    steps: usize,
) -> Vec<Vec<f32>> {
    let mut order: Vec<usize> = (0..matrices.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(matrices[i].1 * matrices[i].2));
    let mut done: Vec<(usize, Vec<f32>)> = order
        .into_par_iter()
        .map(|i| {
            let (g, rows, cols) = matrices[i];
            let mut out = vec![0f32; rows * cols];
            newton_schulz(g, rows, cols, coeffs, steps, &mut out);
            (i, out)
        })
        .collect();
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, out)| out).collect()
}

// ---------------------------------------------------------------- rotary positions

/// `cos` and `sin` of pair `i`'s angle at each position `past..past + t`, `[t, hs/2]`
/// row-major: `p·BASE^(−2i/hs)`, computed in `f64` (the same values as
/// `quill_model::rotary`'s tables).
pub fn rotary_tables(t: usize, past: usize, hs: usize, base: f64) -> (Vec<f32>, Vec<f32>) {
    let half = hs / 2;
    let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
    for p in past..past + t {
        for i in 0..half {
            let (s, c) = (p as f64 * base.powf(-2.0 * i as f64 / hs as f64)).sin_cos();
            cos.push(c as f32);
            sin.push(s as f32);
        }
    }
    (cos, sin)
}

/// Rotates the queries and keys of `qkv` `[B, T, 3C]` (heads of `hs` features; pair
/// `(i, i + hs/2)` of the row at time `τ` turns by the angle whose `cos`/`sin` are
/// `tables[τ·hs/2 + i]`) into `out`; values are copied. `inverse` turns the other way:
/// the backward pass, as the rotation's transpose is its inverse.
pub fn rotary(
    qkv: &[f32],
    dims: AttentionDims,
    (cos, sin): (&[f32], &[f32]),
    inverse: bool,
    out: &mut [f32],
) {
    let AttentionDims { t, c, .. } = dims;
    let (hs, half) = (dims.head_dim(), dims.head_dim() / 2);
    let sign = if inverse { -1.0f32 } else { 1.0 };
    out.par_chunks_mut(3 * c)
        .zip(qkv.par_chunks(3 * c))
        .enumerate()
        .for_each(|(row, (out, x))| {
            let tau = row % t;
            let (cos, sin) = (&cos[tau * half..][..half], &sin[tau * half..][..half]);
            // queries and keys: 2·n_head heads one after the other
            for (y, x) in out[..2 * c].chunks_mut(hs).zip(x[..2 * c].chunks(hs)) {
                let (y1, y2) = y.split_at_mut(half);
                let (x1, x2) = x.split_at(half);
                for i in 0..half {
                    let (cs, sn) = (cos[i], sign * sin[i]);
                    y1[i] = x1[i] * cs + x2[i] * sn;
                    y2[i] = x2[i] * cs - x1[i] * sn;
                }
            }
            out[2 * c..].copy_from_slice(&x[2 * c..]);
        });
}

// ---------------------------------------------------------------- vector helpers

/// The largest of `x` (−∞ when empty), in 8 partial maxima so that it vectorises.
#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let x8 = x.chunks_exact(8);
    let tail = x8
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for x in x8 {
        for l in 0..8 {
            acc[l] = acc[l].max(x[l]);
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// `Σ x`, in 8 partial sums so that it vectorises.
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    sum_in::<8>(x)
}

/// `Σ x` in `N` partial sums: 8 vectorise; 64 keep four 16-lane accumulators, and as
/// many loads, in flight.
#[inline(always)]
fn sum_in<const N: usize>(x: &[f32]) -> f32 {
    let mut acc = [0f32; N];
    let chunks = x.chunks_exact(N);
    let tail: f32 = chunks.remainder().iter().sum();
    for x in chunks {
        for l in 0..N {
            acc[l] += x[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `a·b`, in eight partial sums so that the loop vectorises.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (a, b) in a8.zip(b8) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `a·b` in 32 partial sums: four independent vector accumulators, so that the
/// additions do not wait on each other (with [`dot`]'s one accumulator, a long dot
/// product is bound by the latency of one addition per 8 elements, not by memory).
#[inline(always)]
fn dot_wide(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 32];
    let (a32, b32) = (a.chunks_exact(32), b.chunks_exact(32));
    let tail: f32 = a32
        .remainder()
        .iter()
        .zip(b32.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (a, b) in a32.zip(b32) {
        for l in 0..32 {
            acc[l] += a[l] * b[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ (x − m)²`, in eight partial sums so that it vectorises.
#[inline(always)]
fn squared_deviation(x: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; 8];
    let x8 = x.chunks_exact(8);
    let tail: f32 = x8.remainder().iter().map(|&v| (v - m) * (v - m)).sum();
    for x in x8 {
        for l in 0..8 {
            acc[l] += (x[l] - m) * (x[l] - m);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += alpha·x`.
#[inline(always)]
fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

// ---------------------------------------------------------------- LayerNorm

/// LayerNorm over rows of `c` features: `y = (x − mean)·rstd·γ + β` with
/// `rstd = 1/√(var + eps)` (biased variance, as PyTorch). Writes each row's `mean` and
/// `rstd` for the backward pass.
pub fn layer_norm_forward<O: Output>(
    x: &[f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    eps: f32,
    y: &mut [O],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let c = gamma.len();
    let rows = rows_per_task(mean.len());
    y.par_chunks_mut(rows * c)
        .zip(x.par_chunks(rows * c))
        .zip(mean.par_chunks_mut(rows).zip(rstd.par_chunks_mut(rows)))
        .for_each(|((y, x), (mean, rstd))| {
            simd(
                #[inline(always)]
                || {
                    for (((y, x), mean), rstd) in
                        y.chunks_mut(c).zip(x.chunks(c)).zip(mean).zip(rstd)
                    {
                        let m = sum(x) / c as f32;
                        let var = squared_deviation(x, m) / c as f32;
                        let r = 1.0 / (var + eps).sqrt();
                        match beta {
                            Some(beta) => {
                                let params = gamma.iter().zip(beta);
                                for ((y, &x), (&g, &b)) in y.iter_mut().zip(x).zip(params) {
                                    y.set((x - m) * r * g + b);
                                }
                            }
                            None => {
                                for ((y, &x), &g) in y.iter_mut().zip(x).zip(gamma) {
                                    y.set((x - m) * r * g);
                                }
                            }
                        }
                        (*mean, *rstd) = (m, r);
                    }
                },
            )
        });
}

/// LayerNorm's backward pass. With `x̂ = (x − mean)·rstd` and `g = dy·γ`:
/// `dx = rstd·(g − mean(g) − x̂·mean(g·x̂))`, `dγ = Σ_rows dy·x̂`, `dβ = Σ_rows dy`.
/// Returns `(dγ, dβ)`.
pub fn layer_norm_backward<O: Output>(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [O],
) -> (Vec<f32>, Vec<f32>) {
    let c = gamma.len();
    let rows = rows_per_task(mean.len());
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(rows * c)
        .zip(x.par_chunks(rows * c).zip(dy.par_chunks(rows * c)))
        .zip(mean.par_chunks(rows).zip(rstd.par_chunks(rows)))
        .map(|((dx, (x, dy)), (mean, rstd))| {
            simd(
                #[inline(always)]
                || {
                    let (mut dgamma, mut dbeta) = (vec![0f32; c], vec![0f32; c]);
                    let (mut xhat, mut g) = (vec![0f32; c], vec![0f32; c]);
                    let rows = dx.chunks_mut(c).zip(x.chunks(c)).zip(dy.chunks(c));
                    for (((dx, x), dy), (&m, &r)) in rows.zip(mean.iter().zip(rstd)) {
                        for ((xh, g), ((&x, &dy), &gamma)) in
                            xhat.iter_mut().zip(&mut g).zip(x.iter().zip(dy).zip(gamma))
                        {
                            *xh = (x - m) * r;
                            *g = dy * gamma;
                        }
                        // Partial sums, not one running total: the loops vectorise.
                        let (mean_g, mean_gx) = (sum(&g) / c as f32, dot(&g, &xhat) / c as f32);
                        for ((dx, &xh), &g) in dx.iter_mut().zip(&xhat).zip(&g) {
                            dx.set(r * (g - mean_g - xh * mean_gx));
                        }
                        axpy(&mut dbeta, 1.0, dy);
                        for ((dg, &xh), &dy) in dgamma.iter_mut().zip(&xhat).zip(dy) {
                            *dg += dy * xh;
                        }
                    }
                    (dgamma, dbeta)
                },
            )
        })
        .collect();
    let (mut dgamma, mut dbeta) = (vec![0f32; c], vec![0f32; c]);
    for (dg, db) in partials {
        axpy(&mut dgamma, 1.0, &dg);
        axpy(&mut dbeta, 1.0, &db);
    }
    (dgamma, dbeta)
}

// ---------------------------------------------------------------- matrix products

/// A strided matrix over a slice: `rows × cols`, element `(r, c)` at `r·rs + c·cs`.
#[derive(Debug, Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix whose rows are `rs` apart.
    fn rows(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Self {
        View {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// Whether every element of a `rows × cols` matrix with strides `rs`, `cs` lies in
/// `len` elements.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
}

/// `dst = scale·lhs·rhs` for a row-major `dst` (rows `rs` apart), plus `dst`'s old
/// values when `add`. A bounds-checked front to the `gemm` crate (the matrix
/// multiplication Flex itself uses); products of at least 192³ multiply-adds are
/// spread over rayon's threads, smaller ones run on the calling thread, as do all of
/// them when rayon has one thread (a shard of the training step: `gemm`'s parallel
/// path then only adds its own overhead, about 5% of the step).
fn gemm<O: Output>(dst: &mut [O], rs: usize, lhs: View, rhs: View, scale: f32, add: bool) {
    let parallel =
        lhs.rows * rhs.cols * lhs.cols >= 192 * 192 * 192 && rayon::current_num_threads() > 1;
    gemm_on(dst, rs, lhs, rhs, scale, add, parallel);
}

/// [`gemm`], on all of rayon's threads when `parallel`, else on the calling thread.
///
/// `dst` may be uninitialised unless `accumulate`: on x86-64, `gemm` then writes each
/// value of the product without reading it (its kernels, the few-row and the
/// small-size paths all branch on a zero `alpha` before they load `dst`). Elsewhere it
/// is zeroed first, as only those were checked: gemm-common 0.19's Apple AMX kernels
/// (its `experimental-apple-amx` feature) copy partial tiles of `dst` out before that
/// branch.
fn gemm_on<O: Output>(
    dst: &mut [O],
    dst_rs: usize,
    lhs: View,
    rhs: View,
    scale: f32,
    accumulate: bool,
    parallel: bool,
) {
    let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
    assert_eq!(rhs.rows, k, "inner dimensions");
    assert!(fits(dst.len(), m, n, dst_rs, 1), "dst out of bounds");
    assert!(
        fits(lhs.data.len(), m, k, lhs.rs, lhs.cs),
        "lhs out of bounds"
    );
    assert!(
        fits(rhs.data.len(), k, n, rhs.rs, rhs.cs),
        "rhs out of bounds"
    );
    assert!(
        O::INIT || !accumulate,
        "only initialised values are added to"
    );
    if !O::INIT && cfg!(not(target_arch = "x86_64")) {
        for row in dst.chunks_mut(dst_rs).take(m) {
            row[..n].iter_mut().for_each(|d| d.set(0.0));
        }
    }
    let parallelism = match parallel {
        true => ::gemm::Parallelism::Rayon(0),
        false => ::gemm::Parallelism::None,
    };
    // SAFETY: the three matrices lie within their slices (asserted above), and `dst`
    // is borrowed mutably, so it aliases neither input. `O` is laid out as `f32`, and
    // `gemm` reads `dst` only when `accumulate`, which needs initialised values.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<f32>(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `dst = scale·lhs·rhs`, overwriting `dst`.
fn matmul<O: Output>(dst: &mut [O], dst_rs: usize, lhs: View, rhs: View, scale: f32) {
    gemm(dst, dst_rs, lhs, rhs, scale, false);
}

// ---------------------------------------------------------------- Linear

/// A linear layer on `n` rows: `y = x·W + b` for `x` `[n, in]`, `W` `[in, out]`, `b`
/// `[out]`, with the bias written first and the product added onto it (no second
/// pass). `y` is `[n, out]`.
pub fn linear_forward<O: Output>(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    d_in: usize,
    y: &mut [O],
) {
    let d_out = w.len() / d_in;
    linear_forward_strided(x, StridedWeight::rows(w, d_in, d_out), b, y);
}

/// A `d_in × d_out` weight read in place from `data`: element `(i, j)` at
/// `data[i·rs + j·cs]`. A tied LM head is the transpose of the `[V, C]` token table
/// (`rs` 1, `cs` C), multiplied without copying the table.
#[derive(Debug, Clone, Copy)]
pub struct StridedWeight<'a> {
    /// The elements (the view's first element first).
    pub data: &'a [f32],
    /// Input features (rows).
    pub d_in: usize,
    /// Output features (columns).
    pub d_out: usize,
    /// Distance between rows.
    pub rs: usize,
    /// Distance between columns.
    pub cs: usize,
}

impl<'a> StridedWeight<'a> {
    /// A row-major `[d_in, d_out]` weight.
    pub fn rows(data: &'a [f32], d_in: usize, d_out: usize) -> Self {
        StridedWeight {
            data,
            d_in,
            d_out,
            rs: d_out,
            cs: 1,
        }
    }
}

/// [`linear_forward`] with the weight a [`StridedWeight`].
pub fn linear_forward_strided<O: Output>(
    x: &[f32],
    w: StridedWeight,
    b: Option<&[f32]>,
    y: &mut [O],
) {
    let (d_in, d_out) = (w.d_in, w.d_out);
    let rows = x.len() / d_in;
    let few = rows <= FEW_ROWS && (w.cs == 1 || w.rs == 1);
    let w = View {
        data: w.data,
        rows: d_in,
        cols: d_out,
        rs: w.rs,
        cs: w.cs,
    };
    let x = View::rows(x, rows, d_in, d_in);
    if b.is_none() && !few {
        return gemm(y, d_out, x, w, 1.0, false);
    }
    // The product is added onto the bias, or onto zeros for `few_rows`.
    for row in y.chunks_mut(d_out) {
        match b {
            Some(b) => row.iter_mut().zip(b).for_each(|(y, &b)| y.set(b)),
            None => row.iter_mut().for_each(|y| y.set(0.0)),
        }
    }
    // SAFETY: every value was just written.
    let y = unsafe { assume_init(y) };
    match few {
        true => few_rows(y, x, w),
        false => gemm(y, d_out, x, w, 1.0, true),
    }
}

/// Calls `$f(name: Type = value, …)` — an `#[inline(always)]` function — compiled for
/// the vector unit
/// [`simd`] picks. [`simd`] itself takes a closure, but a closure as large as a whole
/// pass over a weight is not inlined into `simd`'s function, and then runs 4 lanes
/// wide (`perf annotate` showed `mulps` on `xmm` registers).
macro_rules! with_simd {
    ($f:ident($($arg:ident: $ty:ty = $val:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
            fn avx512($($arg: $ty),*) {
                $f($($arg),*)
            }
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) {
                $f($($arg),*)
            }
            match unit() {
                // SAFETY: the CPU has these features (detected by `vector_unit`).
                VectorUnit::Avx512 => unsafe { avx512($($val),*) },
                // SAFETY: as above.
                VectorUnit::Avx2 => unsafe { avx2($($val),*) },
                VectorUnit::Baseline => $f($($val),*),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        $f($($val),*)
    }};
}
pub(super) use with_simd;

/// [`few_rows`]' pass over the input features `rows` of a row-contiguous `W`:
/// `out[r, :] += x[r, i]·W[i, :]` (`out` is `[m, n]`).
#[inline(always)]
fn rows_of_w(out: &mut [f32], x: View, w: View, rows: Range<usize>) {
    let (k, n) = (w.rows, w.cols);
    let w_row = |i: usize| &w.data[i * w.rs..i * w.rs + n];
    // Four rows of `W` per pass over `out`: a quarter of the loads and stores of `out`.
    let mut i = rows.start;
    while i + 4 <= rows.end {
        for (r, out) in out.chunks_mut(n).enumerate() {
            let x = &x.data[r * x.rs..r * x.rs + k];
            let (a, b, c, d) = (x[i], x[i + 1], x[i + 2], x[i + 3]);
            let (wa, wb, wc, wd) = (w_row(i), w_row(i + 1), w_row(i + 2), w_row(i + 3));
            for j in 0..n {
                out[j] += a * wa[j] + b * wb[j] + c * wc[j] + d * wd[j];
            }
        }
        i += 4;
    }
    for i in i..rows.end {
        for (r, out) in out.chunks_mut(n).enumerate() {
            axpy(out, x.data[r * x.rs + i], w_row(i));
        }
    }
}

/// [`few_rows`]' pass over the outputs `cols` of a column-contiguous `W`:
/// `out[r, j − cols.start] = x[r, :]·W[:, j]` (`out` is `[m, cols.len()]`).
#[inline(always)]
fn columns_of_w(out: &mut [f32], x: View, w: View, cols: Range<usize>) {
    let (k, width) = (w.rows, cols.len());
    for (jj, j) in cols.enumerate() {
        let w_j = &w.data[j * w.cs..j * w.cs + k];
        for r in 0..x.rows {
            out[r * width + jj] = dot_wide(&x.data[r * x.rs..r * x.rs + k], w_j);
        }
    }
}

/// Up to this many rows, [`few_rows`] multiplies instead of `gemm`: sampling's rows,
/// one per sequence, and a step of continuous batching (`quill serve --max-batch`'s
/// default is 16). 16 rows through `few_rows` served GPT-2 124M's shapes at 99 tokens/s
/// where two passes of 8 gave 84 (BENCHMARKS.md).
pub(super) const FEW_ROWS: usize = 16;

/// `y += x·W` for the few rows of `x` that sampling feeds (one per sequence), reading
/// `W` once, straight from memory. Such a product is bound by reading the weight:
/// `gemm` first packs `W` into blocks — as much traffic again — and keeps a
/// single-row product on one thread. Here each thread streams one contiguous stretch
/// of `W`, whichever way it is laid out:
/// - rows of `W` contiguous (`cs` 1, a Linear weight `[in, out]`): a stretch of input
///   features `i`, each adding `x[r, i]·W[i, :]` to a partial `[m, n]` result; the
///   partial results are summed at the end;
/// - columns contiguous (`rs` 1, the transposed `[V, C]` table of a tied LM head): a
///   stretch of outputs `j`, each `y[r, j]` the dot product of row `r` of `x` with
///   column `j` of `W`.
fn few_rows(y: &mut [f32], x: View, w: View) {
    let (m, k, n) = (x.rows, w.rows, w.cols);
    assert!(fits(x.data.len(), m, k, x.rs, x.cs) && fits(w.data.len(), k, n, w.rs, w.cs));
    assert!(y.len() >= m * n && x.cs == 1);
    if w.cs == 1 {
        over_inputs(y, m, n, k, |out, rows| {
            with_simd!(rows_of_w(out: &mut [f32] = out, x: View = x, w: View = w, rows: Range<usize> = rows));
        });
    } else {
        over_outputs(y, m, n, |out, cols| {
            with_simd!(columns_of_w(out: &mut [f32] = out, x: View = x, w: View = w, cols: Range<usize> = cols));
        });
    }
}

/// `y += Σ_tasks out` for `y` `[m, n]`, `pass(out, rows)` adding to a zeroed `[m, n]`
/// `out` the terms of the input features `rows`: one contiguous stretch of `0..k` per
/// task, about two tasks per rayon thread; the partial results summed at the end.
pub(super) fn over_inputs(
    y: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    pass: impl Fn(&mut [f32], Range<usize>) + Sync,
) {
    let stretch = k.div_ceil(2 * rayon::current_num_threads()).max(1);
    let partial = (0..k)
        .step_by(stretch)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|i0| {
            let mut out = vec![0f32; m * n];
            pass(&mut out, i0..(i0 + stretch).min(k));
            out
        })
        .reduce_with(|mut a, b| {
            simd(
                #[inline(always)]
                || axpy(&mut a, 1.0, &b),
            );
            a
        });
    if let Some(partial) = partial {
        simd(
            #[inline(always)]
            || axpy(&mut y[..m * n], 1.0, &partial),
        );
    }
}

/// `y[r, cols] += out[r, :]` for `y` `[m, n]`, `pass(out, cols)` writing a zeroed `[m,
/// cols.len()]` `out`: one contiguous stretch of the outputs `0..n` per task, about two
/// tasks per rayon thread.
pub(super) fn over_outputs(
    y: &mut [f32],
    m: usize,
    n: usize,
    pass: impl Fn(&mut [f32], Range<usize>) + Sync,
) {
    let stretch = n.div_ceil(2 * rayon::current_num_threads()).max(1);
    let blocks: Vec<(usize, Vec<f32>)> = (0..n)
        .step_by(stretch)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|j0| {
            let width = stretch.min(n - j0);
            let mut out = vec![0f32; m * width];
            pass(&mut out, j0..j0 + width);
            (j0, out)
        })
        .collect();
    for (j0, out) in blocks {
        let width = out.len() / m;
        for (r, part) in out.chunks(width).enumerate() {
            let dst = &mut y[r * n + j0..r * n + j0 + width];
            dst.iter_mut().zip(part).for_each(|(d, p)| *d += p);
        }
    }
}

/// The backward pass of [`linear_forward`] from `dy` `[n, out]`: writes `dx = dy·Wᵀ`
/// and `dw = xᵀ·dy`, returns `db = Σ_rows dy`.
pub fn linear_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    d_in: usize,
    dx: &mut [impl Output],
    dw: &mut [impl Output],
) -> Vec<f32> {
    let d_out = w.len() / d_in;
    let rows = x.len() / d_in;
    let (x, w) = (
        View::rows(x, rows, d_in, d_in),
        View::rows(w, d_in, d_out, d_out),
    );
    let dyv = View::rows(dy, rows, d_out, d_out);
    matmul(dx, d_in, dyv, w.t(), 1.0);
    matmul(dw, d_out, x.t(), dyv, 1.0);
    let mut db = vec![0f32; d_out];
    simd(
        #[inline(always)]
        || {
            for row in dy.chunks(d_out) {
                axpy(&mut db, 1.0, row);
            }
        },
    );
    db
}

// ---------------------------------------------------------------- causal attention

/// The shape of one causal self-attention call: `qkv` is `[b, t, 3c]` (queries, keys,
/// values side by side, as the fused `c_attn` projection writes them), the output
/// `[b, t, c]`, with `n_head` heads of `c / n_head` features. (The batch size is the
/// slices' length over one sequence's.)
#[derive(Debug, Clone, Copy)]
pub struct AttentionDims {
    /// Sequence length `T`.
    pub t: usize,
    /// Embedding width `C`.
    pub c: usize,
    /// Number of heads.
    pub n_head: usize,
}

impl AttentionDims {
    fn head_dim(&self) -> usize {
        self.c / self.n_head
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim() as f32).sqrt()
    }
}

/// One head of one sequence in a `[T, 3C]` block of `qkv`: its `q`, `k` and `v` as
/// `[T, hs]` views (rows `3C` apart, no copies).
fn head(qkv: &[f32], dims: AttentionDims, h: usize) -> [View<'_>; 3] {
    let (t, c, hs) = (dims.t, dims.c, dims.head_dim());
    [0, 1, 2].map(|part| View::rows(&qkv[part * c + h * hs..], t, hs, 3 * c))
}

/// `s = scale·q·kᵀ` `[T, T]`.
#[inline(always)]
fn scores(q: View, k: View, scale: f32, s: &mut [f32]) {
    matmul(s, q.rows, q, k.t(), scale);
}

/// Scores turned in place into the causal softmax probabilities, and each row `i`'s
/// log-sum-exp over its past, `lse_i = ln Σ_{j≤i} e^(s_ij)`, in one pass of `exp`:
/// `e^(s_ij − max_i)` for `j ≤ i`, their sum, then the row scaled by its inverse;
/// 0 after the diagonal.
#[inline(always)]
fn causal_softmax_lse(s: &mut [f32], lse: &mut [impl Output]) {
    let t = lse.len();
    for (i, (row, lse)) in s.chunks_mut(t).zip(lse).enumerate() {
        let (past, future) = row.split_at_mut(i + 1);
        let max = max(past);
        for p in past.iter_mut() {
            *p = exp(*p - max);
        }
        let total = sum(past);
        let inv = 1.0 / total;
        for p in past.iter_mut() {
            *p *= inv;
        }
        future.fill(0.0);
        lse.set(max + total.ln());
    }
}

/// Scores turned in place into the causal softmax probabilities:
/// `p_ij = e^(s_ij − lse_i)` for `j ≤ i`, 0 after.
#[inline(always)]
fn causal_softmax(s: &mut [f32], lse: &[f32]) {
    let t = lse.len();
    for (i, (row, &lse)) in s.chunks_mut(t).zip(lse).enumerate() {
        let (past, future) = row.split_at_mut(i + 1);
        for p in past.iter_mut() {
            *p = exp(*p - lse);
        }
        future.fill(0.0);
    }
}

/// Causal softmax attention, every head at once: `y_i = Σ_{j≤i} softmax_j(q_i·k_j/√hs)·v_j`.
/// Reads `q`, `k` and `v` in place from `qkv` (no transposes of the activations),
/// writes `y` `[B, T, C]` and each row's log-sum-exp `lse` `[B, nh, T]`, from which
/// the backward pass recomputes the probabilities instead of storing `[B, nh, T, T]`
/// of them. One rayon task per sequence; per head, two small matrix products.
pub fn attention_forward(
    qkv: &[f32],
    dims: AttentionDims,
    y: &mut [impl Output],
    lse: &mut [impl Output],
) {
    let AttentionDims { t, c, n_head } = dims;
    let (hs, scale) = (dims.head_dim(), dims.scale());
    y.par_chunks_mut(t * c)
        .zip(lse.par_chunks_mut(n_head * t))
        .zip(qkv.par_chunks(t * 3 * c))
        .for_each(|((y, lse), qkv)| {
            simd(
                #[inline(always)]
                || {
                    let mut p = vec![0f32; t * t];
                    for (h, lse) in lse.chunks_mut(t).enumerate() {
                        let [q, k, v] = head(qkv, dims, h);
                        scores(q, k, scale, &mut p);
                        causal_softmax_lse(&mut p, lse);
                        matmul(&mut y[h * hs..], c, View::rows(&p, t, t, t), v, 1.0);
                    }
                },
            )
        });
}

/// The backward pass of [`attention_forward`]: from `dy` `[B, T, C]` to `dqkv`
/// `[B, T, 3C]`. With `p` recomputed from `lse`, `dp = dy·vᵀ`, `D_i = Σ_j p_ij·dp_ij`
/// and `ds_ij = p_ij·(dp_ij − D_i)/√hs`: `dq = ds·k`, `dk = dsᵀ·q`, `dv = pᵀ·dy`.
pub fn attention_backward(
    qkv: &[f32],
    lse: &[f32],
    dy: &[f32],
    dims: AttentionDims,
    dqkv: &mut [impl Output],
) {
    let AttentionDims { t, c, n_head } = dims;
    let (hs, scale) = (dims.head_dim(), dims.scale());
    dqkv.par_chunks_mut(t * 3 * c)
        .zip(qkv.par_chunks(t * 3 * c))
        .zip(lse.par_chunks(n_head * t).zip(dy.par_chunks(t * c)))
        .for_each(|((dqkv, qkv), (lse, dy))| {
            simd(
                #[inline(always)]
                || {
                    let (mut p, mut ds) = (vec![0f32; t * t], vec![0f32; t * t]);
                    for (h, lse) in lse.chunks(t).enumerate() {
                        let [q, k, v] = head(qkv, dims, h);
                        let dy = View::rows(&dy[h * hs..], t, hs, c);
                        scores(q, k, scale, &mut p);
                        causal_softmax(&mut p, lse); // recomputed, not stored
                        matmul(&mut ds, t, dy, v.t(), 1.0); // dp
                        for (p, ds) in p.chunks(t).zip(ds.chunks_mut(t)) {
                            let d = dot(p, ds);
                            for (ds, &p) in ds.iter_mut().zip(p) {
                                *ds = p * (*ds - d) * scale;
                            }
                        }
                        let (p, ds) = (View::rows(&p, t, t, t), View::rows(&ds, t, t, t));
                        matmul(&mut dqkv[h * hs..], 3 * c, ds, k, 1.0);
                        matmul(&mut dqkv[c + h * hs..], 3 * c, ds.t(), q, 1.0);
                        matmul(&mut dqkv[2 * c + h * hs..], 3 * c, p.t(), dy, 1.0);
                    }
                },
            )
        });
}

// ---------------------------------------------------------------- cross-entropy

/// Cross-entropy of each row of `logits` `[N, V]` against its target class (each
/// `< V`): writes each row's log-sum-exp `lse` `[N]` and returns the mean loss,
/// `(1/N)·Σ_i (lse_i − logit_{i, t_i})`. One pass of `exp` per row; no `[N, V]`
/// log-probabilities are kept.
pub fn cross_entropy_forward(logits: &[f32], targets: &[usize], lse: &mut [f32]) -> f32 {
    let n = targets.len();
    let v = logits.len() / n.max(1);
    let rows = rows_per_task(n);
    let losses: Vec<f64> = (logits.par_chunks(rows * v))
        .zip(targets.par_chunks(rows).zip(lse.par_chunks_mut(rows)))
        .map(|(logits, (targets, lse))| {
            simd(
                #[inline(always)]
                || {
                    let (mut total, mut e) = (0f64, vec![0f32; v]);
                    for ((row, &t), lse) in logits.chunks(v).zip(targets).zip(lse) {
                        let max = max(row);
                        for (e, &x) in e.iter_mut().zip(row) {
                            *e = exp(x - max);
                        }
                        *lse = max + sum(&e).ln();
                        total += f64::from(*lse - row[t]);
                    }
                    total
                },
            )
        })
        .collect();
    (losses.iter().sum::<f64>() / n as f64) as f32
}

/// The backward pass of [`cross_entropy_forward`] for a loss gradient `dloss`:
/// `dlogits_ij = dloss/N · (softmax_ij − [j = t_i])`, the softmax recomputed from `lse`.
pub fn cross_entropy_backward(
    logits: &[f32],
    targets: &[usize],
    lse: &[f32],
    dloss: f32,
    dlogits: &mut [impl Output],
) {
    let n = targets.len();
    let v = logits.len() / n.max(1);
    let scale = dloss / n as f32;
    let rows = rows_per_task(n);
    (dlogits.par_chunks_mut(rows * v))
        .zip(logits.par_chunks(rows * v))
        .zip(targets.par_chunks(rows).zip(lse.par_chunks(rows)))
        .for_each(|((dlogits, logits), (targets, lse))| {
            simd(
                #[inline(always)]
                || {
                    let rows = dlogits.chunks_mut(v).zip(logits.chunks(v));
                    for ((d, row), (&t, &lse)) in rows.zip(targets.iter().zip(lse)) {
                        for (d, &x) in d.iter_mut().zip(row) {
                            d.set(scale * exp(x - lse));
                        }
                        d[t].set(scale * (exp(row[t] - lse) - 1.0));
                    }
                },
            )
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// The unit [`every_vector_unit_computes_the_same_bits`] runs the kernels on (0: none
    /// forced). Other tests that run meanwhile use it too, and pass on any unit.
    static FORCED: AtomicU8 = AtomicU8::new(0);

    pub(super) fn forced_unit() -> Option<VectorUnit> {
        match FORCED.load(Ordering::Relaxed) {
            1 => Some(VectorUnit::Baseline),
            2 => Some(VectorUnit::Avx2),
            3 => Some(VectorUnit::Avx512),
            _ => None,
        }
    }

    /// Every kernel's outputs, on fixed inputs: GELU, LayerNorm and attention, forward
    /// and backward.
    /// Every kernel's outputs on small inputs, each output buffer filled with NaN
    /// before the kernel runs.
    fn all_kernels() -> Vec<Vec<f32>> {
        let dims = AttentionDims {
            t: 13,
            c: 24,
            n_head: 3,
        };
        let (b, c) = (2, dims.c);
        let x = values(b * dims.t * c, 1);
        let (gamma, beta, dy) = (values(c, 2), values(c, 3), values(x.len(), 4));
        let nan = |n: usize| vec![f32::NAN; n];
        let (mut gelu, mut dgelu) = (nan(x.len()), nan(x.len()));
        gelu_forward(&x, &mut gelu);
        gelu_backward(&x, &dy, &mut dgelu);
        let rows = x.len() / c;
        let (mut ln, mut mean, mut rstd) = (nan(x.len()), nan(rows), nan(rows));
        layer_norm_forward(&x, &gamma, Some(&beta), 1e-5, &mut ln, &mut mean, &mut rstd);
        let mut ln_unbiased = nan(x.len());
        let (mut mean2, mut rstd2) = (nan(rows), nan(rows));
        layer_norm_forward(
            &x,
            &gamma,
            None,
            1e-5,
            &mut ln_unbiased,
            &mut mean2,
            &mut rstd2,
        );
        let mut dln = nan(x.len());
        let (dgamma, dbeta) = layer_norm_backward(&x, &gamma, &mean, &rstd, &dy, &mut dln);
        let qkv: Vec<f32> = values(3 * x.len(), 5).iter().map(|v| 3.0 * v).collect();
        let (mut y, mut lse) = (nan(x.len()), nan(b * dims.n_head * dims.t));
        attention_forward(&qkv, dims, &mut y, &mut lse);
        let mut dqkv = nan(qkv.len());
        attention_backward(&qkv, &lse, &dy, dims, &mut dqkv);
        // Linear, `c → 40`: gemm with and without bias, the few-row path, backward.
        let (w, bias) = (values(c * 40, 6), values(40, 7));
        let (mut lin, mut lin_biased) = (nan(rows * 40), nan(rows * 40));
        linear_forward(&x, &w, None, c, &mut lin);
        linear_forward(&x, &w, Some(&bias), c, &mut lin_biased);
        let mut lin_few = nan(2 * 40);
        linear_forward(&x[..2 * c], &w, None, c, &mut lin_few);
        let (mut dlin_x, mut dlin_w) = (nan(x.len()), nan(w.len()));
        let dlin_b = linear_backward(&x, &w, &lin, c, &mut dlin_x, &mut dlin_w);
        // Cross-entropy of the 26 rows of `lin` (40 classes).
        let targets: Vec<usize> = (0..rows).map(|i| (i * 7) % 40).collect();
        let mut ce_lse = nan(rows);
        let ce = vec![cross_entropy_forward(&lin, &targets, &mut ce_lse)];
        let mut dce = nan(lin.len());
        cross_entropy_backward(&lin, &targets, &ce_lse, 1.5, &mut dce);
        // Decoding: each narrow format's few-row products, both orientations (`lin`'s
        // weight stored narrower; 40 columns, so q8 in blocks of 8 is widened first and
        // blocks of 40, one per row, are not), and the cached attention.
        let (wb, wh): (Vec<half::bf16>, Vec<half::f16>) = (
            w.iter().map(|&v| half::bf16::from_f32(v)).collect(),
            w.iter().map(|&v| half::f16::from_f32(v)).collect(),
        );
        let wq: Vec<i8> = w.iter().map(|&v| (v * 127.0) as i8).collect();
        let scales = values(w.len() / 8, 8);
        let mut decoded = Vec::new();
        for packed in [
            decode::Packed::Bf16(&wb),
            decode::Packed::F16(&wh),
            decode::Packed::Q8 {
                values: &wq,
                scales: &scales,
                block: 8,
            },
            decode::Packed::Q8 {
                values: &wq,
                scales: &scales,
                block: 40,
            },
        ] {
            for (orientation, k, n) in [
                (decode::Orientation::InOut, c, 40),
                (decode::Orientation::OutIn, 40, c),
            ] {
                let mut y = nan(2 * n);
                decode::product(&mut y, &x[..2 * k], k, packed, n, orientation);
                decoded.push(y);
            }
        }
        // q8 in blocks of 32 along 32 columns: the kernels that widen in the loop.
        let q32 = decode::Packed::Q8 {
            values: &wq[..c * 32],
            scales: &scales[..c],
            block: 32,
        };
        for (orientation, k, n) in [
            (decode::Orientation::InOut, c, 32),
            (decode::Orientation::OutIn, 32, c),
        ] {
            let mut y = nan(2 * n);
            decode::product(&mut y, &x[..2 * k], k, q32, n, orientation);
            decoded.push(y);
        }
        let mut cache = decode::KvBuffer::default();
        let mut cached = nan(x.len());
        decode::cached_attention(&qkv, b, c, dims.n_head, &mut cache, &mut cached);
        decoded.push(cached);
        vec![
            gelu,
            dgelu,
            ln,
            mean,
            rstd,
            ln_unbiased,
            dln,
            dgamma,
            dbeta,
            y,
            lse,
            dqkv,
            lin,
            lin_biased,
            lin_few,
            dlin_x,
            dlin_w,
            dlin_b,
            ce_lse,
            ce,
            dce,
        ]
        .into_iter()
        .chain(decoded)
        .collect()
    }

    /// The kernels also write into fresh, uninitialised buffers ([`Output`]), which is
    /// only sound if no value is skipped: none may still be NaN.
    #[test]
    fn every_output_value_is_written() {
        for (i, output) in all_kernels().iter().enumerate() {
            assert!(!output.is_empty());
            assert!(output.iter().all(|v| v.is_finite()), "output {i}");
        }
    }

    /// The same bits on every unit: Rust never fuses `a·b + c` into one FMA on its own,
    /// and the kernels' sums run in a fixed order of 8 partial sums, so the width of
    /// the vectors changes the speed, not the values.
    #[test]
    fn every_vector_unit_computes_the_same_bits() {
        let baseline = {
            FORCED.store(1, Ordering::Relaxed);
            all_kernels()
        };
        // The units this CPU has, beyond the baseline.
        let units = match vector_unit() {
            VectorUnit::Avx512 => vec![2, 3],
            VectorUnit::Avx2 => vec![2],
            VectorUnit::Baseline => vec![],
        };
        for unit in units {
            FORCED.store(unit, Ordering::Relaxed);
            for (i, (got, want)) in all_kernels().iter().zip(&baseline).enumerate() {
                for (g, w) in got.iter().zip(want) {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "unit {unit}, output {i}: {g} against {w} on the baseline"
                    );
                }
            }
        }
        FORCED.store(0, Ordering::Relaxed);
    }

    /// Reference `erf` in f64 (std has none): Simpson's rule on `2/√π·e^(−t²)`.
    fn erf_ref(x: f64) -> f64 {
        let n = 2000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (got, want) = (exp(x), (x as f64).exp());
            assert!(
                ((got as f64 - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn gelu_matches_the_erf_definition() {
        let xs: Vec<f32> = (-1000..=1000).map(|i| i as f32 / 100.0).collect();
        let (mut y, mut dx) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
        gelu_forward(&xs, &mut y);
        gelu_backward(&xs, &vec![1.0; xs.len()], &mut dx);
        for ((&x, &y), &dx) in xs.iter().zip(&y).zip(&dx) {
            let x64 = x as f64;
            let cdf = 0.5 * (1.0 + erf_ref(x64 / std::f64::consts::SQRT_2));
            let pdf = (-x64 * x64 / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!(
                (y as f64 - x64 * cdf).abs() < 1e-6 * (1.0 + x64.abs()),
                "gelu({x}) = {y}"
            );
            assert!(
                (dx as f64 - (cdf + x64 * pdf)).abs() < 1e-6,
                "gelu'({x}) = {dx}"
            );
        }
    }

    /// `n` values in [−1, 1), from a xorshift generator seeded with `seed` (the kernels'
    /// tests' data, `decode`'s too).
    pub(super) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// `x·W (+ b)` in f64, `W` element `(i, j)` at `w[i·rs + j·cs]`.
    fn product(x: &[f32], w: &[f32], b: Option<&[f32]>, [m, k, n, rs, cs]: [usize; 5]) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|i| x[r * k + i] as f64 * w[i * rs + j * cs] as f64)
                    .sum();
                y[r * n + j] = dot + b.map_or(0.0, |b| b[j] as f64);
            }
        }
        y
    }

    /// The few-row products of sampling (one to eight rows, each weight streamed once
    /// on all threads) and the gemm path beyond, for a row-major weight and for the
    /// transpose of a table read in place (the tied LM head), against the product in
    /// f64: odd sizes, with and without bias.
    #[test]
    fn few_row_and_strided_products_are_exact() {
        let (k, n) = (77, 301); // neither a multiple of 4 nor of 32
        let (w, b) = (values(k * n, 3), values(n, 4));
        for m in [1, 2, 3, 8, 9] {
            let x = values(m * k, m as u64);
            for bias in [None, Some(b.as_slice())] {
                let layouts = [
                    (StridedWeight::rows(&w, k, n), [m, k, n, n, 1]),
                    (
                        StridedWeight {
                            data: &w,
                            d_in: k,
                            d_out: n,
                            rs: 1,
                            cs: k,
                        },
                        [m, k, n, 1, k],
                    ),
                ];
                for (weight, dims) in layouts {
                    let mut y = vec![f32::NAN; m * n];
                    linear_forward_strided(&x, weight, bias, &mut y);
                    let want = product(&x, &w, bias, dims);
                    let err = y
                        .iter()
                        .zip(&want)
                        .map(|(&a, b)| (a as f64 - b).abs())
                        .fold(0.0, f64::max);
                    assert!(
                        err < 1e-4,
                        "m {m}, rs {}, bias {}: off by {err:e}",
                        dims[3],
                        bias.is_some()
                    );
                }
            }
        }
    }
}

/// Values per rayon task in the element-wise passes: small enough that a 128-wide
/// model's matrices are shared by the cores, large enough that a task outweighs its
/// cost.
const PASS_CHUNK: usize = 1 << 14;

/// [`crate::AdamWUpdate::apply`].
pub(crate) fn adamw(
    step: &crate::AdamWUpdate,
    p: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
) -> [Vec<f32>; 3] {
    let fill = |[p, g, m, v]: [&[f32]; 4], [p2, m2, v2]: [&mut [MaybeUninit<f32>]; 3]| {
        let outputs = p2.iter_mut().zip(m2.iter_mut()).zip(v2.iter_mut());
        let inputs = p.iter().zip(g).zip(m.iter().zip(v));
        for (((p2, m2), v2), ((&p, &g), (&m, &v))) in outputs.zip(inputs) {
            let [p, m, v] = step.value([p, g, m, v]);
            p2.write(p);
            m2.write(m);
            v2.write(v);
        }
    };
    // SAFETY: `fill` writes every value of its chunks (its inputs are as long).
    unsafe { par_fill([p, g, m, v], fill) }
}

/// [`crate::add_then_divide`].
pub(crate) fn add_then_divide(a: &[f32], b: &[f32], divisor: Option<f32>) -> Vec<f32> {
    let fill = |[a, b]: [&[f32]; 2], [out]: [&mut [MaybeUninit<f32>]; 1]| {
        for ((out, &a), &b) in out.iter_mut().zip(a).zip(b) {
            out.write(match divisor {
                Some(n) => (a + b) / n,
                None => a + b,
            });
        }
    };
    // SAFETY: `fill` writes every value of its chunk (its inputs are as long).
    let [sum] = unsafe { par_fill([a, b], fill) };
    sum
}

/// `N` vectors as long as the `I` inputs, written in chunks of [`PASS_CHUNK`] on
/// rayon's threads by `fill(inputs, outputs)`: the same chunk of each input and output.
/// Each call runs vectorised. No zero fill first: the caller's loop writes every value.
///
/// # Panics
/// If the inputs differ in length.
///
/// # Safety
/// `fill` must write every value of the output chunks it is given.
unsafe fn par_fill<const I: usize, const N: usize>(
    inputs: [&[f32]; I],
    fill: impl Fn([&[f32]; I], [&mut [MaybeUninit<f32>]; N]) + Sync,
) -> [Vec<f32>; N] {
    const {
        assert!(
            I > 0 && N > 0,
            "par_fill splits an input and an output into chunks"
        )
    };
    let len = inputs[0].len();
    assert!(
        inputs.iter().all(|x| x.len() == len),
        "the inputs of an element-wise pass have one length"
    );
    let mut out = [(); N].map(|_| Vec::with_capacity(len));
    let mut outputs = out
        .each_mut()
        .map(|x| x.spare_capacity_mut()[..len].chunks_mut(PASS_CHUNK));
    // The chunks side by side (four for the `cpu` preset's largest matrix, some
    // thousands for GPT-2's embedding), gathered first, then written in parallel.
    let chunks: Vec<_> = (0..len.div_ceil(PASS_CHUNK))
        .map(|_| {
            outputs
                .each_mut()
                .map(|x| x.next().expect("outputs of `len` values"))
        })
        .collect();
    chunks.into_par_iter().enumerate().for_each(|(i, chunk)| {
        let range = i * PASS_CHUNK..i * PASS_CHUNK + chunk[0].len();
        let inputs = inputs.map(|x| &x[range.clone()]);
        simd(
            #[inline(always)]
            || fill(inputs, chunk),
        )
    });
    for x in &mut out {
        // SAFETY: `fill` wrote each of the first `len` values.
        unsafe { x.set_len(len) };
    }
    out
}

#[cfg(test)]
mod pass_tests {
    use super::*;

    #[test]
    fn par_fill_writes_every_chunk_of_every_output_at_its_place() {
        let len = 2 * PASS_CHUNK + 7;
        let index: Vec<f32> = (0..len).map(|i| i as f32).collect();
        // SAFETY: each output gets every value of its chunk written.
        let out = unsafe {
            par_fill([&index], |[index], chunks: [&mut [MaybeUninit<f32>]; 2]| {
                for (k, chunk) in chunks.into_iter().enumerate() {
                    for (x, &i) in chunk.iter_mut().zip(index) {
                        x.write(i * 2.0 + k as f32);
                    }
                }
            })
        };
        for (k, x) in out.iter().enumerate() {
            let want: Vec<f32> = (0..len).map(|i| (i * 2 + k) as f32).collect();
            assert_eq!(x, &want);
        }
    }

    #[test]
    #[should_panic(expected = "have one length")]
    fn inputs_of_different_lengths_are_refused() {
        let (a, b) = (vec![1.0; PASS_CHUNK + 1], vec![1.0; PASS_CHUNK]);
        let _ = add_then_divide(&a, &b, None);
    }

    #[test]
    fn the_passes_are_their_values_everywhere() {
        let len = 2 * PASS_CHUNK + 7;
        let a: Vec<f32> = (0..len).map(|i| (i % 97) as f32 * 0.5).collect();
        let b: Vec<f32> = (0..len).map(|i| (i % 89) as f32 * 0.25).collect();
        let mean = add_then_divide(&a, &b, Some(2.0));
        assert!((0..len).all(|i| mean[i] == (a[i] + b[i]) / 2.0));
        let step = crate::AdamWUpdate {
            scale: 0.7,
            beta1: 0.9,
            beta2: 0.99,
            decay: 0.9999,
            step_size: 1e-3,
            sqrt_bias_correction2: 0.1,
            eps: 1e-8,
        };
        let v: Vec<f32> = b.iter().map(|x| x + 1e-3).collect();
        let [p, m, v2] = adamw(&step, &a, &b, &a, &v);
        for i in 0..len {
            assert_eq!(
                [p[i], m[i], v2[i]],
                step.value([a[i], b[i], a[i], v[i]]),
                "{i}"
            );
        }
    }
}
