//! Decoding's products: a few rows of activations (one per sequence) times a weight
//! stored in `f32`, `bf16`, `f16` or 8-bit blocks, each weight read once from memory;
//! and the read bandwidth that bounds them.
//!
//! A decoded token reads every weight once and does two flops with it, so its speed is
//! memory bandwidth ÷ bytes of weights. Narrower weights are widened to `f32` a chunk
//! at a time in a buffer that stays in the L1 cache, and the product then runs in
//! `f32` exactly as for `f32` weights: activations and sums never leave `f32`.

use std::ops::Range;

use half::{bf16, f16};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::VectorUnit;
use super::{View, axpy, dot_wide, over_inputs, over_outputs, simd, unit, with_simd};

/// The values of a row-major matrix as stored for decoding.
#[derive(Debug, Clone, Copy)]
pub enum Packed<'a> {
    /// 4 bytes a value.
    F32(&'a [f32]),
    /// 2 bytes a value; widened exactly (the 16 bits become an `f32`'s high half).
    Bf16(&'a [bf16]),
    /// 2 bytes a value; widened exactly, by integer operations that vectorise at every
    /// vector width (see `hf`).
    F16(&'a [f16]),
    /// 8-bit values with one `f32` scale per `block` consecutive values (in row-major
    /// order): value `i` is `values[i]·scales[i / block]`. Burn's symmetric `Q8S`
    /// block scheme; llama.cpp's `Q8_0` is the same with 32 values and an `f16` scale.
    Q8 {
        /// One per value.
        values: &'a [i8],
        /// One per block.
        scales: &'a [f32],
        /// Values per block.
        block: usize,
    },
}

impl Packed<'_> {
    /// How many values the matrix has.
    pub fn len(&self) -> usize {
        match self {
            Packed::F32(v) => v.len(),
            Packed::Bf16(v) => v.len(),
            Packed::F16(v) => v.len(),
            Packed::Q8 { values, .. } => values.len(),
        }
    }

    /// Whether the matrix has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes read from memory for one pass over the matrix (values and scales).
    pub fn bytes(&self) -> usize {
        match self {
            Packed::F32(v) => 4 * v.len(),
            Packed::Bf16(v) => 2 * v.len(),
            Packed::F16(v) => 2 * v.len(),
            Packed::Q8 { values, scales, .. } => values.len() + 4 * scales.len(),
        }
    }

    /// Whether every value and scale lies in its slice.
    fn consistent(&self) -> bool {
        match *self {
            Packed::Q8 {
                values,
                scales,
                block,
            } => block > 0 && scales.len() >= values.len().div_ceil(block),
            _ => true,
        }
    }

    /// Values `start..start + out.len()` widened to `f32` into `out`.
    #[inline(always)]
    fn widen(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match *self {
            Packed::F32(v) => out.copy_from_slice(&v[start..end]),
            Packed::Bf16(v) => {
                for (o, b) in out.iter_mut().zip(&v[start..end]) {
                    *o = f32::from_bits((b.to_bits() as u32) << 16);
                }
            }
            Packed::F16(v) => {
                for (o, &h) in out.iter_mut().zip(&v[start..end]) {
                    *o = hf(h);
                }
            }
            Packed::Q8 {
                values,
                scales,
                block,
            } => {
                let mut i = start;
                while i < end {
                    let stop = ((i / block + 1) * block).min(end);
                    let scale = scales[i / block];
                    let (o, q) = (&mut out[i - start..stop - start], &values[i..stop]);
                    for (o, &q) in o.iter_mut().zip(q) {
                        *o = q as f32 * scale;
                    }
                    i = stop;
                }
            }
        }
    }
}

/// How a weight is laid out for `y = x·W`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    /// `W` stored `[in, out]`, row-major (a Linear weight).
    InOut,
    /// `W` stored `[out, in]`, row-major: `y = x·Wᵀ` of the stored matrix (a tied LM
    /// head, the `[V, C]` token table).
    OutIn,
}

/// Values widened per chunk: 4 rows of this many fill 8 KiB of the L1 cache.
const CHUNK: usize = 512;

/// `y = x·W` for the `m` rows of `x` (`[m, k]`, row-major), `W` a `k → n` weight stored
/// as `w` in `orientation`; `y` is `[m, n]`, overwritten. Each thread streams one
/// contiguous stretch of `w`: input features of an [`Orientation::InOut`] weight (its
/// partial results summed at the end), outputs of an [`Orientation::OutIn`] one (dot
/// products, written in place). Runs on rayon's threads, compiled for the widest
/// vector unit the CPU has; the values do not depend on the unit.
///
/// # Panics
/// If the lengths disagree with `m`, `k` and `n`.
pub fn product(y: &mut [f32], x: &[f32], k: usize, w: Packed, n: usize, orientation: Orientation) {
    assert!(k > 0 && x.len().is_multiple_of(k), "x is not rows of {k}");
    let m = x.len() / k;
    assert_eq!(y.len(), m * n, "y is not [{m}, {n}]");
    assert!(
        w.len() == k * n && w.consistent(),
        "the weight is not {k} × {n}"
    );
    let x = View::rows(x, m, k, k);
    y.fill(0.0);
    match orientation {
        Orientation::InOut => over_inputs(y, m, n, k, |out, rows| {
            with_simd!(in_out(
                out: &mut [f32] = out,
                x: View = x,
                w: Packed = w,
                n: usize = n,
                rows: Range<usize> = rows,
            ));
        }),
        Orientation::OutIn => over_outputs(y, m, n, |out, cols| {
            with_simd!(out_in(
                out: &mut [f32] = out,
                x: View = x,
                w: Packed = w,
                n: usize = n,
                cols: Range<usize> = cols,
            ));
        }),
    }
}

/// Asks for the cache line at `p` ahead of its use (no effect off x86-64).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0)
    };
}

/// How far ahead the 8-bit kernels prefetch their weights, in bytes.
const AHEAD: usize = 1024;

/// `bf16` bits as the `f32` they are.
#[inline(always)]
fn bf(b: bf16) -> f32 {
    f32::from_bits((b.to_bits() as u32) << 16)
}

/// `f16` bits as the `f32` they are, exactly (the values of F16C's `vcvtph2ps`), in
/// integer and float operations without branches, so that a loop over them vectorises
/// at every vector width (F. Giesen's `half_to_float`).
#[inline(always)]
fn hf(h: f16) -> f32 {
    const SHIFTED_EXP: u32 = 0x7c00 << 13;
    let h = h.to_bits() as u32;
    let mut o = (h & 0x7fff) << 13;
    let exp = SHIFTED_EXP & o;
    o += (127 - 15) << 23;
    let value = if exp == SHIFTED_EXP {
        // Infinity or NaN: the largest exponent.
        f32::from_bits(o + ((128 - 16) << 23))
    } else if exp == 0 {
        // Zero or subnormal: renormalised by a subtraction.
        f32::from_bits(o + (1 << 23)) - f32::from_bits(113 << 23)
    } else {
        f32::from_bits(o)
    };
    f32::from_bits(value.to_bits() | ((h & 0x8000) << 16))
}

/// The 8-bit block the kernels widen inside their loop (the block of quill's `q8`
/// weights); blocks of other sizes are widened a [`CHUNK`] at a time first.
const IN_LOOP_Q8_BLOCK: usize = 32;

/// [`product`]'s pass over the input features `rows` of an [`Orientation::InOut`]
/// weight: `out[r, :] += x[r, i]·W[i, :]`, four rows of `W` at a time (a quarter of
/// the loads and stores of `out`). `bf16`, `f16` and 32-value 8-bit blocks are widened
/// in the loop (an 8-bit block's row of four takes `x[r, i]·scale` as its factor);
/// other blocks a [`CHUNK`] at a time into a buffer in the L1 cache.
#[inline(always)]
fn in_out(out: &mut [f32], x: View, w: Packed, n: usize, rows: Range<usize>) {
    let k = x.cols;
    let xr = |r: usize| &x.data[r * x.rs..r * x.rs + k];
    let q8_in_loop = |block: usize| block == IN_LOOP_Q8_BLOCK && n.is_multiple_of(IN_LOOP_Q8_BLOCK);
    let mut buf = [0f32; 4 * CHUNK];
    let mut i = rows.start;
    while i < rows.end {
        let group = (rows.end - i).min(4);
        if group < 4 {
            // The last rows, one at a time.
            let mut row = vec![0f32; n];
            for i in i..rows.end {
                w.widen(i * n, &mut row);
                for (r, out) in out.chunks_mut(n).enumerate() {
                    axpy(out, xr(r)[i], &row);
                }
            }
            break;
        }
        match w {
            Packed::F32(v) => {
                let wr = |q: usize| &v[(i + q) * n..(i + q + 1) * n];
                let (wa, wb, wc, wd) = (wr(0), wr(1), wr(2), wr(3));
                for (r, out) in out.chunks_mut(n).enumerate() {
                    let [a, b, c, d] = [0, 1, 2, 3].map(|q| xr(r)[i + q]);
                    for j in 0..n {
                        out[j] += a * wa[j] + b * wb[j] + c * wc[j] + d * wd[j];
                    }
                }
            }
            Packed::Bf16(v) => {
                let wr = |q: usize| &v[(i + q) * n..(i + q + 1) * n];
                let (wa, wb, wc, wd) = (wr(0), wr(1), wr(2), wr(3));
                for (r, out) in out.chunks_mut(n).enumerate() {
                    let [a, b, c, d] = [0, 1, 2, 3].map(|q| xr(r)[i + q]);
                    for j in 0..n {
                        out[j] += a * bf(wa[j]) + b * bf(wb[j]) + c * bf(wc[j]) + d * bf(wd[j]);
                    }
                }
            }
            Packed::F16(v) => {
                let wr = |q: usize| &v[(i + q) * n..(i + q + 1) * n];
                let (wa, wb, wc, wd) = (wr(0), wr(1), wr(2), wr(3));
                for (r, out) in out.chunks_mut(n).enumerate() {
                    let [a, b, c, d] = [0, 1, 2, 3].map(|q| xr(r)[i + q]);
                    for j in 0..n {
                        out[j] += a * hf(wa[j]) + b * hf(wb[j]) + c * hf(wc[j]) + d * hf(wd[j]);
                    }
                }
            }
            Packed::Q8 {
                values,
                scales,
                block,
            } if q8_in_loop(block) => {
                let wr = |q: usize| &values[(i + q) * n..(i + q + 1) * n];
                let sr = |q: usize| {
                    &scales[(i + q) * n / IN_LOOP_Q8_BLOCK..(i + q + 1) * n / IN_LOOP_Q8_BLOCK]
                };
                let (wa, wb, wc, wd) = (wr(0), wr(1), wr(2), wr(3));
                let (sa, sb, sc, sd) = (sr(0), sr(1), sr(2), sr(3));
                for (r, out) in out.chunks_mut(n).enumerate() {
                    let [a, b, c, d] = [0, 1, 2, 3].map(|q| xr(r)[i + q]);
                    for (blk, out) in out.chunks_exact_mut(IN_LOOP_Q8_BLOCK).enumerate() {
                        if blk % 2 == 0 {
                            for w in [wa, wb, wc, wd] {
                                prefetch(w.as_ptr().wrapping_add(blk * IN_LOOP_Q8_BLOCK + AHEAD));
                            }
                        }
                        let (ca, cb, cc, cd) = (a * sa[blk], b * sb[blk], c * sc[blk], d * sd[blk]);
                        let at = |w: &[i8]| -> [f32; IN_LOOP_Q8_BLOCK] {
                            let w = &w[blk * IN_LOOP_Q8_BLOCK..(blk + 1) * IN_LOOP_Q8_BLOCK];
                            std::array::from_fn(|l| w[l] as f32)
                        };
                        let (qa, qb, qc, qd) = (at(wa), at(wb), at(wc), at(wd));
                        for l in 0..IN_LOOP_Q8_BLOCK {
                            out[l] += ca * qa[l] + cb * qb[l] + cc * qc[l] + cd * qd[l];
                        }
                    }
                }
            }
            _ => {
                for j0 in (0..n).step_by(CHUNK) {
                    let width = CHUNK.min(n - j0);
                    for (q, chunk) in buf.chunks_mut(CHUNK).enumerate() {
                        w.widen((i + q) * n + j0, &mut chunk[..width]);
                    }
                    let wr = |q: usize| &buf[q * CHUNK..q * CHUNK + width];
                    let (wa, wb, wc, wd) = (wr(0), wr(1), wr(2), wr(3));
                    for (r, out) in out.chunks_mut(n).enumerate() {
                        let [a, b, c, d] = [0, 1, 2, 3].map(|q| xr(r)[i + q]);
                        let out = &mut out[j0..j0 + width];
                        for j in 0..width {
                            out[j] += a * wa[j] + b * wb[j] + c * wc[j] + d * wd[j];
                        }
                    }
                }
            }
        }
        i += 4;
    }
}

/// [`product`]'s pass over the outputs `cols` of an [`Orientation::OutIn`] weight:
/// `out[r, j − cols.start] = x[r, :]·W[j, :]`, in 32 partial sums. `bf16`, `f16` and
/// 32-value 8-bit blocks are widened in the loop (a block's products summed, then
/// scaled); other formats a row at a time into a buffer.
#[inline(always)]
fn out_in(out: &mut [f32], x: View, w: Packed, _n: usize, cols: Range<usize>) {
    let k = x.cols;
    let width = cols.len();
    let xr = |r: usize| &x.data[r * x.rs..r * x.rs + k];
    let mut row = Vec::new();
    for (jj, j) in cols.enumerate() {
        for r in 0..x.rows {
            out[r * width + jj] = match w {
                Packed::F32(v) => dot_wide(xr(r), &v[j * k..(j + 1) * k]),
                Packed::Bf16(v) => dot_with(xr(r), &v[j * k..(j + 1) * k], bf),
                Packed::F16(v) => dot_with(xr(r), &v[j * k..(j + 1) * k], hf),
                Packed::Q8 {
                    values,
                    scales,
                    block,
                } if block == IN_LOOP_Q8_BLOCK && k.is_multiple_of(IN_LOOP_Q8_BLOCK) => dot_q8(
                    xr(r),
                    &values[j * k..(j + 1) * k],
                    &scales[j * k / IN_LOOP_Q8_BLOCK..(j + 1) * k / IN_LOOP_Q8_BLOCK],
                ),
                _ => {
                    if r == 0 {
                        row.resize(k, 0.0);
                        w.widen(j * k, &mut row);
                    }
                    dot_wide(xr(r), &row)
                }
            };
        }
    }
}

/// `a·b` for 16-bit values `b` that `wide` turns into `f32`, in 32 partial sums (as
/// [`dot_wide`]).
#[inline(always)]
fn dot_with<T: Copy>(a: &[f32], b: &[T], wide: impl Fn(T) -> f32) -> f32 {
    let mut acc = [0f32; 32];
    let (a32, b32) = (a.chunks_exact(32), b.chunks_exact(32));
    let tail: f32 = (a32.remainder().iter().zip(b32.remainder()))
        .map(|(&x, &y)| x * wide(y))
        .sum();
    for (a, b) in a32.zip(b32) {
        for l in 0..32 {
            acc[l] += a[l] * wide(b[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `a·b` for 8-bit values `q` in blocks of [`IN_LOOP_Q8_BLOCK`] with their `scales`: each
/// block's 32 products summed lane by lane, scaled, and added to 32 partial sums.
#[inline(always)]
fn dot_q8(a: &[f32], q: &[i8], scales: &[f32]) -> f32 {
    let mut acc = [0f32; IN_LOOP_Q8_BLOCK];
    for (blk, ((a, q), &s)) in (a
        .chunks_exact(IN_LOOP_Q8_BLOCK)
        .zip(q.chunks_exact(IN_LOOP_Q8_BLOCK)))
    .zip(scales)
    .enumerate()
    {
        if blk % 2 == 0 {
            prefetch(q.as_ptr().wrapping_add(AHEAD));
        }
        for l in 0..IN_LOOP_Q8_BLOCK {
            acc[l] += a[l] * q[l] as f32 * s;
        }
    }
    acc.iter().sum::<f32>()
}

/// Every value of `w` widened to `f32` into `out` (as long), on rayon's threads.
///
/// # Panics
/// If `out`'s length is not `w`'s.
pub fn widen_all(w: Packed, out: &mut [f32]) {
    assert!(out.len() == w.len() && w.consistent());
    out.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(i, chunk)| w.widen(i << 16, chunk));
}

/// Rows `ids` of a row-major `[rows, c]` table stored as `w`, widened to `f32`:
/// `[ids.len(), c]` (an embedding lookup that reads only the rows it returns).
///
/// # Panics
/// If an id is not a row of the table.
pub fn rows(w: Packed, c: usize, ids: &[usize]) -> Vec<f32> {
    assert!(c > 0 && w.len().is_multiple_of(c) && w.consistent());
    let mut out = vec![0f32; ids.len() * c];
    for (&id, out) in ids.iter().zip(out.chunks_mut(c)) {
        assert!(id < w.len() / c, "row {id} of a table of {}", w.len() / c);
        w.widen(id * c, out);
    }
    out
}

/// The machine's read bandwidth in bytes per second, as decoding sees it: the best of
/// `rounds` timings of passes over a buffer of `bytes` (the size of the weights a
/// token reads: a buffer larger than the caches measures memory, a smaller one the
/// cache it fits in), each pass a sum split into one contiguous part per rayon thread
/// and summed with wide vector loads. Each thread repeats its part until 256 MiB were
/// read in all, so that a small buffer's passes outweigh the cost of starting them.
pub fn read_bandwidth(bytes: usize, rounds: usize) -> f64 {
    let values = vec![1f32; (bytes / 4).max(1)];
    let threads = rayon::current_num_threads();
    let part = values.len().div_ceil(threads);
    let passes = ((256 << 20) / (4 * values.len())).max(1);
    let mut best = 0f64;
    for _ in 0..rounds.max(1) {
        let start = std::time::Instant::now();
        let total: f32 = values
            .par_chunks(part)
            .map(|part| {
                (0..passes)
                    .map(|_| {
                        simd(
                            #[inline(always)]
                            || super::sum_in::<64>(std::hint::black_box(part)),
                        )
                    })
                    .sum::<f32>()
            })
            .sum();
        std::hint::black_box(total);
        let seconds = start.elapsed().as_secs_f64();
        best = best.max((4 * values.len() * passes) as f64 / seconds);
    }
    best
}

/// The keys and values one attention layer has seen while decoding, position after
/// position: position `p`'s keys of every sequence `b` and head at
/// `k[(p·batch + b)·c..][..c]`, so that a new position is appended without moving the
/// others.
#[derive(Debug, Clone, Default)]
pub struct KvBuffer {
    k: Vec<f32>,
    v: Vec<f32>,
    batch: usize,
    c: usize,
}

impl KvBuffer {
    /// Positions held.
    pub fn len(&self) -> usize {
        match self.batch * self.c {
            0 => 0,
            row => self.k.len() / row,
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.k.is_empty()
    }
}

/// Causal attention of `n_head` heads for `t` new positions of `batch` sequences that
/// follow the `cache.len()` positions in `cache`: `qkv` is `[batch, t, 3c]` (queries,
/// keys, values side by side), `y` `[batch, t, c]`. Appends the new keys and values to
/// `cache`, then each head of each sequence, on rayon's threads, scores its queries
/// against every key up to its own position, softmaxes them and sums the values.
///
/// # Panics
/// If the shapes disagree, or `cache` holds another batch size or width.
pub fn cached_attention(
    qkv: &[f32],
    batch: usize,
    c: usize,
    n_head: usize,
    cache: &mut KvBuffer,
    y: &mut [f32],
) {
    assert!(batch > 0 && n_head > 0 && c.is_multiple_of(n_head));
    assert!(qkv.len().is_multiple_of(batch * 3 * c) && y.len() * 3 == qkv.len());
    if cache.is_empty() {
        (cache.batch, cache.c) = (batch, c);
    }
    assert_eq!(
        (cache.batch, cache.c),
        (batch, c),
        "the cache holds other sequences"
    );
    let t = qkv.len() / (batch * 3 * c);
    let past = cache.len();
    for tau in 0..t {
        for b in 0..batch {
            let row = &qkv[(b * t + tau) * 3 * c..][..3 * c];
            cache.k.extend_from_slice(&row[c..2 * c]);
            cache.v.extend_from_slice(&row[2 * c..]);
        }
    }
    let hs = c / n_head;
    let (k, v) = (&cache.k, &cache.v);
    let heads: Vec<Vec<f32>> = (0..batch * n_head)
        .into_par_iter()
        .map(|bh| {
            let (b, h) = (bh / n_head, bh % n_head);
            let rows = Rows {
                qkv,
                k,
                v,
                batch,
                c,
                past,
            };
            one_head(&rows, b, h, t, hs)
        })
        .collect();
    for (bh, out) in heads.iter().enumerate() {
        let (b, h) = (bh / n_head, bh % n_head);
        for tau in 0..t {
            y[(b * t + tau) * c + h * hs..][..hs].copy_from_slice(&out[tau * hs..][..hs]);
        }
    }
}

/// [`cached_attention`] of one new position for several groups of sequences, each
/// with its own cache (continuous batching's step): `qkv` `[N, 3c]` holds the groups'
/// rows one after another, `groups` each group's row count and cache; `y` is `[N, c]`.
/// Every head of every row runs in one parallel loop, and computes what
/// [`cached_attention`] computes for its group alone, bit for bit.
///
/// # Panics
/// If the shapes disagree, or a cache holds another batch size or width.
pub fn cached_attention_groups(
    qkv: &[f32],
    c: usize,
    n_head: usize,
    groups: &mut [(usize, &mut KvBuffer)],
    y: &mut [f32],
) {
    assert!(n_head > 0 && c.is_multiple_of(n_head) && y.len() * 3 == qkv.len());
    let n: usize = groups.iter().map(|(rows, _)| rows).sum();
    assert_eq!(n * 3 * c, qkv.len(), "the groups' rows are not qkv's rows");
    let mut first = 0;
    for (batch, cache) in groups.iter_mut() {
        if cache.is_empty() {
            (cache.batch, cache.c) = (*batch, c);
        }
        assert_eq!(
            (cache.batch, cache.c),
            (*batch, c),
            "the cache holds other sequences"
        );
        for row in qkv[first * 3 * c..(first + *batch) * 3 * c].chunks(3 * c) {
            cache.k.extend_from_slice(&row[c..2 * c]);
            cache.v.extend_from_slice(&row[2 * c..]);
        }
        first += *batch;
    }
    let hs = c / n_head;
    // Each row's group: its rows (with the group's first row of qkv) and cache.
    let mut views = Vec::with_capacity(groups.len());
    let mut first = 0;
    for (batch, cache) in groups.iter() {
        let rows = Rows {
            qkv: &qkv[first * 3 * c..(first + batch) * 3 * c],
            k: &cache.k,
            v: &cache.v,
            batch: *batch,
            c,
            past: cache.len() - 1,
        };
        views.extend((0..*batch).map(|b| (first + b, b, rows)));
        first += batch;
    }
    let heads: Vec<Vec<f32>> = (0..n * n_head)
        .into_par_iter()
        .map(|rh| {
            let (row, h) = (rh / n_head, rh % n_head);
            let (_, b, rows) = &views[row];
            one_head(rows, *b, h, 1, hs)
        })
        .collect();
    for (rh, out) in heads.iter().enumerate() {
        let (row, h) = (rh / n_head, rh % n_head);
        y[row * c + h * hs..][..hs].copy_from_slice(out);
    }
}

/// What one head of a batch of sequences attends over: the new rows' `qkv` `[batch,
/// t, 3c]`, and the cache's keys and values (`past` positions before the new ones,
/// which are already appended).
#[derive(Debug, Clone, Copy)]
struct Rows<'a> {
    qkv: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    batch: usize,
    c: usize,
    past: usize,
}

/// Head `h` of sequence `b`: for each of its `t` new positions, the scores of its query
/// against every key up to its own position, softmaxed, times the values: `[t, hs]`.
fn one_head(rows: &Rows, b: usize, h: usize, t: usize, hs: usize) -> Vec<f32> {
    let Rows {
        qkv,
        k,
        v,
        batch,
        c,
        past,
    } = *rows;
    let scale = 1.0 / (hs as f32).sqrt();
    let mut out = vec![0f32; t * hs];
    let mut scores = vec![0f32; past + t];
    simd(
        #[inline(always)]
        || {
            for tau in 0..t {
                let q = &qkv[(b * t + tau) * 3 * c + h * hs..][..hs];
                let seen = past + tau + 1;
                let at = |p: usize| (p * batch + b) * c + h * hs;
                for (p, s) in scores[..seen].iter_mut().enumerate() {
                    *s = super::dot(q, &k[at(p)..at(p) + hs]) * scale;
                }
                let max = super::max(&scores[..seen]);
                let mut total = 0f32;
                for s in &mut scores[..seen] {
                    *s = super::exp(*s - max);
                    total += *s;
                }
                let out = &mut out[tau * hs..(tau + 1) * hs];
                for (p, &s) in scores[..seen].iter().enumerate() {
                    axpy(out, s / total, &v[at(p)..at(p) + hs]);
                }
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cpu::tests::values;

    /// `x·W` in f64 for `W` `[k, n]` row-major.
    fn reference(x: &[f32], w: &[f32], k: usize, n: usize) -> Vec<f32> {
        let m = x.len() / k;
        let mut y = vec![0f32; m * n];
        for r in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|i| x[r * k + i] as f64 * w[i * n + j] as f64)
                    .sum();
                y[r * n + j] = s as f32;
            }
        }
        y
    }

    /// The transpose of a row-major `[rows, cols]` matrix.
    fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0f32; w.len()];
        for i in 0..rows {
            for j in 0..cols {
                t[j * rows + i] = w[i * cols + j];
            }
        }
        t
    }

    /// Symmetric 8-bit blocks of `block` values: `(values, scales)`, `max |w| / 127`,
    /// rounded to nearest (Burn's `Q8S` and llama.cpp's `Q8_0` rule).
    fn q8(w: &[f32], block: usize) -> (Vec<i8>, Vec<f32>) {
        let mut q = Vec::new();
        let mut scales = Vec::new();
        for b in w.chunks(block) {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            scales.push(scale);
            q.extend(b.iter().map(|v| (v / scale).round() as i8));
        }
        (q, scales)
    }

    /// The largest `|got − want|` over the largest `|want|`.
    fn relative_error(got: &[f32], want: &[f32]) -> f32 {
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = (got.iter().zip(want)).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
        diff / scale
    }

    /// Each format's product, both orientations, 1 and 3 rows, against the f64
    /// product of the weights it stores; the narrow formats also against the f32
    /// weights they were made from, within the error their rounding allows (bf16:
    /// 8 bits of precision, f16: 11, q8: 127 steps per block).
    #[test]
    fn every_format_multiplies_as_its_weights_say() {
        let (k, n) = (96, 70);
        let w = values(k * n, 1);
        let stored_bf16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let stored_f16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        for m in [1, 3] {
            let x = values(m * k, 2 + m as u64);
            let exact = reference(&x, &w, k, n);
            let cases: [(Packed, Vec<f32>, f32); 3] = [
                (Packed::F32(&w), w.clone(), 0.0),
                (
                    Packed::Bf16(&stored_bf16),
                    stored_bf16.iter().map(|v| v.to_f32()).collect(),
                    2e-2,
                ),
                (
                    Packed::F16(&stored_f16),
                    stored_f16.iter().map(|v| v.to_f32()).collect(),
                    2e-3,
                ),
            ];
            for (packed, as_stored, loss) in cases {
                let mut y = vec![f32::NAN; m * n];
                product(&mut y, &x, k, packed, n, Orientation::InOut);
                let want = reference(&x, &as_stored, k, n);
                assert!(relative_error(&y, &want) < 1e-5, "{packed:?}");
                assert!(relative_error(&y, &exact) <= loss.max(1e-5), "{packed:?}");
                // The same weight stored [out, in].
                let t: Vec<f32> = transpose(&as_stored, k, n);
                let (tb, th): (Vec<bf16>, Vec<f16>) = (
                    t.iter().map(|&v| bf16::from_f32(v)).collect(),
                    t.iter().map(|&v| f16::from_f32(v)).collect(),
                );
                let packed_t = match packed {
                    Packed::F32(_) => Packed::F32(&t),
                    Packed::Bf16(_) => Packed::Bf16(&tb),
                    _ => Packed::F16(&th),
                };
                let mut yt = vec![f32::NAN; m * n];
                product(&mut yt, &x, k, packed_t, n, Orientation::OutIn);
                assert!(
                    relative_error(&yt, &want) < 1e-5,
                    "{packed:?} stored [out, in]"
                );
            }
            // q8 in blocks of 32 (the in-loop kernels) and of 24 (widened first; blocks
            // that span rows), both orientations.
            for block in [32, 24] {
                let n32 = 64;
                let w = &w[..k * n32];
                let (q, scales) = q8(w, block);
                let dequantized: Vec<f32> = (q.iter().enumerate())
                    .map(|(i, &v)| v as f32 * scales[i / block])
                    .collect();
                let packed = Packed::Q8 {
                    values: &q,
                    scales: &scales,
                    block,
                };
                let mut y = vec![f32::NAN; m * n32];
                product(&mut y, &x, k, packed, n32, Orientation::InOut);
                let want = reference(&x, &dequantized, k, n32);
                assert!(relative_error(&y, &want) < 1e-5, "q8 block {block}");
                assert!(relative_error(&y, &reference(&x, w, k, n32)) < 2e-2);
                let t = transpose(w, k, n32);
                let (qt, st) = q8(&t, block);
                let dq_t: Vec<f32> = (qt.iter().enumerate())
                    .map(|(i, &v)| v as f32 * st[i / block])
                    .collect();
                let packed_t = Packed::Q8 {
                    values: &qt,
                    scales: &st,
                    block,
                };
                let mut yt = vec![f32::NAN; m * n32];
                product(&mut yt, &x, k, packed_t, n32, Orientation::OutIn);
                let want_t = reference(&x, &transpose(&dq_t, n32, k), k, n32);
                assert!(
                    relative_error(&yt, &want_t) < 1e-5,
                    "q8 block {block} [out, in]"
                );
            }
        }
    }

    /// Every f16 bit pattern widens to the value `half` gives it (NaNs to NaNs).
    #[test]
    fn f16_widening_is_exact() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let (got, want) = (hf(h), h.to_f32());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} != {want}"
            );
        }
    }

    /// Rows of each format, and the whole-matrix widening, give the stored values.
    #[test]
    fn rows_and_widening_read_the_stored_values() {
        let w = values(6 * 32, 9);
        let (q, scales) = q8(&w, 32);
        let packed = Packed::Q8 {
            values: &q,
            scales: &scales,
            block: 32,
        };
        let got = rows(packed, 32, &[4, 0]);
        for (r, id) in [4usize, 0].iter().enumerate() {
            for j in 0..32 {
                assert_eq!(got[r * 32 + j], q[id * 32 + j] as f32 * scales[*id]);
            }
        }
        let mut all = vec![0f32; w.len()];
        widen_all(packed, &mut all);
        assert_eq!(&all[4 * 32..5 * 32], &got[..32]);
        assert_eq!(packed.bytes(), 6 * 32 + 6 * 4);
    }

    /// The attention over a cache that grows a token at a time equals attention over
    /// the whole sequence at once (same keys, same order of sums).
    #[test]
    fn cached_attention_grows_one_position_at_a_time() {
        let (batch, c, n_head, t) = (2, 12, 3, 5);
        let qkv = values(batch * t * 3 * c, 4);
        let mut whole = KvBuffer::default();
        let mut y_whole = vec![0f32; batch * t * c];
        cached_attention(&qkv, batch, c, n_head, &mut whole, &mut y_whole);
        let mut grown = KvBuffer::default();
        for tau in 0..t {
            // Position tau of each sequence: [batch, 1, 3c].
            let step: Vec<f32> = (0..batch)
                .flat_map(|b| qkv[(b * t + tau) * 3 * c..][..3 * c].to_vec())
                .collect();
            let mut y = vec![0f32; batch * c];
            cached_attention(&step, batch, c, n_head, &mut grown, &mut y);
            for b in 0..batch {
                assert_eq!(y[b * c..][..c], y_whole[(b * t + tau) * c..][..c]);
            }
        }
        assert_eq!((grown.len(), whole.len()), (t, t));
        // The first position attends to itself alone: its values.
        assert_eq!(y_whole[..c], qkv[2 * c..3 * c]);
    }

    /// One pass over several groups' caches, at different positions, gives each row
    /// what its group's own [`cached_attention`] gives, bit for bit, and grows each
    /// cache by one position.
    #[test]
    fn grouped_attention_equals_each_group_alone() {
        let (c, n_head) = (12, 3);
        // (rows, positions cached before the step)
        let groups = [(2, 4), (1, 1), (3, 6)];
        let mut together: Vec<KvBuffer> = Vec::new();
        let mut alone: Vec<KvBuffer> = Vec::new();
        for (g, &(rows, past)) in groups.iter().enumerate() {
            let prompt = values(rows * past * 3 * c, 10 + g as u64);
            for caches in [&mut together, &mut alone] {
                let mut cache = KvBuffer::default();
                cached_attention(
                    &prompt,
                    rows,
                    c,
                    n_head,
                    &mut cache,
                    &mut vec![0f32; rows * past * c],
                );
                caches.push(cache);
            }
        }
        let n: usize = groups.iter().map(|&(rows, _)| rows).sum();
        let step = values(n * 3 * c, 99);
        let mut y = vec![0f32; n * c];
        let mut args: Vec<(usize, &mut KvBuffer)> = groups
            .iter()
            .map(|&(rows, _)| rows)
            .zip(together.iter_mut())
            .collect();
        cached_attention_groups(&step, c, n_head, &mut args, &mut y);
        let mut first = 0;
        for (&(rows, past), cache) in groups.iter().zip(alone.iter_mut()) {
            let mut expected = vec![0f32; rows * c];
            let part = &step[first * 3 * c..(first + rows) * 3 * c];
            cached_attention(part, rows, c, n_head, cache, &mut expected);
            assert_eq!(y[first * c..(first + rows) * c], expected[..]);
            assert_eq!(cache.len(), past + 1);
            first += rows;
        }
        assert!(
            together
                .iter()
                .zip(&alone)
                .all(|(a, b)| a.k == b.k && a.v == b.v)
        );
    }
}
