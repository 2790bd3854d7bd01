//! The train/val split and the seeded sampler of `(x, y)` training batches.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::shards::ShardSet;
use crate::token_file::TokenFile;
use crate::{DataError, Rng};

/// Token ids, in memory or memory-mapped from a token file.
#[derive(Debug)]
pub enum Tokens {
    /// Held in memory.
    Owned(Vec<u32>),
    /// Read from disk as needed.
    Mapped(TokenFile),
    /// Read from many files on disk as needed, as their concatenation.
    Shards(ShardSet),
}

impl Tokens {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        match self {
            Tokens::Owned(ids) => ids.len(),
            Tokens::Mapped(file) => file.len(),
            Tokens::Shards(set) => set.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u32>> for Tokens {
    fn from(ids: Vec<u32>) -> Self {
        Tokens::Owned(ids)
    }
}

/// Where batches are drawn from: anything that can hand out a window of token ids.
pub trait TokenSource {
    /// Number of tokens.
    fn token_count(&self) -> usize;
    /// Appends tokens `start..start + n` to `out`.
    fn read_window(&self, start: usize, n: usize, out: &mut Vec<u32>) -> Result<(), DataError>;
}

impl TokenSource for [u32] {
    fn token_count(&self) -> usize {
        self.len()
    }
    fn read_window(&self, start: usize, n: usize, out: &mut Vec<u32>) -> Result<(), DataError> {
        out.extend_from_slice(&self[start..start + n]);
        Ok(())
    }
}

impl TokenSource for Vec<u32> {
    fn token_count(&self) -> usize {
        self.len()
    }
    fn read_window(&self, start: usize, n: usize, out: &mut Vec<u32>) -> Result<(), DataError> {
        self.as_slice().read_window(start, n, out)
    }
}

impl TokenSource for Tokens {
    fn token_count(&self) -> usize {
        self.len()
    }
    fn read_window(&self, start: usize, n: usize, out: &mut Vec<u32>) -> Result<(), DataError> {
        match self {
            Tokens::Owned(ids) => ids.read_window(start, n, out),
            Tokens::Mapped(file) => file.read_window(start, n, out),
            Tokens::Shards(set) => set.read_window(start, n, out),
        }
    }
}

/// A corpus' token ids split into a training prefix and a validation suffix.
#[derive(Debug)]
pub struct Split {
    /// The first `(1 - val_fraction)` of the tokens.
    pub train: Tokens,
    /// The remaining tokens.
    pub val: Tokens,
}

impl Split {
    /// Splits `tokens` like nanoGPT: the first `floor((1 - val_fraction) · n)` tokens
    /// train, the rest validate. `val_fraction` must lie strictly between 0 and 1.
    pub fn new(mut tokens: Vec<u32>, val_fraction: f64) -> Result<Split, DataError> {
        check_val_fraction(val_fraction)?;
        let n_train = ((1.0 - val_fraction) * tokens.len() as f64) as usize;
        let val = tokens.split_off(n_train);
        Ok(Split {
            train: tokens.into(),
            val: val.into(),
        })
    }

    /// Checks that both splits hold at least `block_size + 1` tokens.
    pub fn check_block_size(&self, block_size: usize) -> Result<(), DataError> {
        for (split, data) in [("train", &self.train), ("val", &self.val)] {
            check_len(split, data.len(), block_size)?;
        }
        Ok(())
    }
}

/// `val_fraction` must lie strictly between 0 and 1.
pub(crate) fn check_val_fraction(val_fraction: f64) -> Result<(), DataError> {
    if val_fraction > 0.0 && val_fraction < 1.0 {
        Ok(())
    } else {
        Err(DataError::BadValFraction(val_fraction))
    }
}

fn check_len(split: &'static str, len: usize, block_size: usize) -> Result<(), DataError> {
    if len < block_size + 1 {
        return Err(DataError::TooShort {
            split,
            len,
            block_size,
        });
    }
    Ok(())
}

/// Draws batches of `batch_size` windows of `block_size + 1` tokens at uniformly random
/// offsets (`0..=len - block_size - 1`), from a generator it owns.
///
/// The same seed draws the same batches, and [`BatchSampler::rng`] /
/// [`BatchSampler::set_rng`] save and restore the generator for an exact resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchSampler {
    batch_size: usize,
    block_size: usize,
    rng: Rng,
    #[serde(default)]
    shard: Shard,
}

/// The share of every batch one process takes. Rank `rank` of `ranks` takes rows
/// `rank·b .. (rank + 1)·b` of each batch of `ranks·b` rows drawn from the shared seeded
/// stream, so the ranks of a data-parallel run together see exactly the batches one
/// process would; [`Shard::WHOLE`] (the default) is one process taking everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This process's place, `0..ranks`.
    pub rank: usize,
    /// How many processes share each batch.
    pub ranks: usize,
}

impl Shard {
    /// One process, every row.
    pub const WHOLE: Shard = Shard { rank: 0, ranks: 1 };

    /// Rank `rank` of `ranks`; `rank` must be below `ranks`.
    pub fn new(rank: usize, ranks: usize) -> Result<Shard, DataError> {
        if rank >= ranks {
            return Err(DataError::BadShard { rank, ranks });
        }
        Ok(Shard { rank, ranks })
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

/// Inputs `x` and targets `y`, both `[batch, block]` token ids on a device.
pub type TokenBatch<B> = (Tensor<B, 2, Int>, Tensor<B, 2, Int>);

/// One batch on the host: `x` and `y` are `batch_size · block_size` ids, row-major, and
/// `y` is `x` shifted left by one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBatch {
    /// Inputs.
    pub x: Vec<u32>,
    /// Targets.
    pub y: Vec<u32>,
}

impl BatchSampler {
    /// A sampler of `[batch_size, block_size]` batches seeded with `seed`.
    pub fn new(batch_size: usize, block_size: usize, seed: u64) -> Result<Self, DataError> {
        if batch_size == 0 {
            return Err(DataError::ZeroSize("batch_size"));
        }
        if block_size == 0 {
            return Err(DataError::ZeroSize("block_size"));
        }
        Ok(BatchSampler {
            batch_size,
            block_size,
            rng: Rng::new(seed),
            shard: Shard::WHOLE,
        })
    }

    /// The same sampler for one `shard` of a data-parallel run: each draw is a batch of
    /// `shard.ranks × batch_size` rows (the generator moves past every row), of which
    /// this sampler returns the shard's `batch_size`.
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// Rows per batch (this shard's).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Tokens per row.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The generator's current state.
    pub fn rng(&self) -> &Rng {
        &self.rng
    }

    /// Restores a state saved from [`BatchSampler::rng`].
    pub fn set_rng(&mut self, rng: Rng) {
        self.rng = rng;
    }

    /// Draws one batch from `data` on the host: this shard's rows of it.
    pub fn sample_host(
        &mut self,
        data: &(impl TokenSource + ?Sized),
    ) -> Result<HostBatch, DataError> {
        check_len("data", data.token_count(), self.block_size)?;
        let n_offsets = (data.token_count() - self.block_size) as u64;
        let (b, t) = (self.batch_size, self.block_size);
        let rows = self.shard.rank * b..(self.shard.rank + 1) * b;
        let mut x = Vec::with_capacity(b * t);
        let mut y = Vec::with_capacity(b * t);
        let mut window = Vec::with_capacity(t + 1);
        for row in 0..b * self.shard.ranks {
            let i = self.rng.below(n_offsets) as usize;
            if !rows.contains(&row) {
                continue;
            }
            window.clear();
            data.read_window(i, t + 1, &mut window)?;
            x.extend_from_slice(&window[..t]);
            y.extend_from_slice(&window[1..]);
        }
        Ok(HostBatch { x, y })
    }

    /// Draws one batch from `data` as `(x, y)` tensors of shape `[batch, block]` on
    /// `device` (this shard's rows).
    pub fn sample<B: Backend>(
        &mut self,
        data: &(impl TokenSource + ?Sized),
        device: &B::Device,
    ) -> Result<TokenBatch<B>, DataError> {
        let shape = [self.batch_size, self.block_size];
        let batch = self.sample_host(data)?;
        Ok((
            ids_to_tensor(&batch.x, shape, device),
            ids_to_tensor(&batch.y, shape, device),
        ))
    }
}

/// Uploads token ids as an integer tensor of `shape`.
pub fn ids_to_tensor<B: Backend, const D: usize>(
    ids: &[u32],
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D, Int> {
    let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(ids, shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    fn data() -> Vec<u32> {
        (0..100).collect()
    }

    #[test]
    fn split_sizes_follow_nanogpt() {
        let s = Split::new((0..1_115_394).collect(), 0.1).unwrap();
        assert_eq!((s.train.len(), s.val.len()), (1_003_854, 111_540));
        let Tokens::Owned(val) = &s.val else {
            unreachable!()
        };
        assert_eq!(val[0], 1_003_854);
        let s = Split::new((0..10).collect(), 0.25).unwrap();
        assert_eq!((s.train.len(), s.val.len()), (7, 3));
    }

    #[test]
    fn val_fraction_must_be_inside_the_unit_interval() {
        for f in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
            assert!(matches!(
                Split::new(data(), f),
                Err(DataError::BadValFraction(_))
            ));
        }
    }

    #[test]
    fn zero_sizes_are_errors() {
        assert!(matches!(
            BatchSampler::new(0, 8, 1),
            Err(DataError::ZeroSize("batch_size"))
        ));
        assert!(matches!(
            BatchSampler::new(4, 0, 1),
            Err(DataError::ZeroSize("block_size"))
        ));
    }

    #[test]
    fn too_short_splits_are_errors() {
        let s = Split::new(data(), 0.1).unwrap(); // 90 / 10
        assert!(s.check_block_size(9).is_ok());
        let err = s.check_block_size(10).unwrap_err();
        assert!(matches!(
            err,
            DataError::TooShort {
                split: "val",
                len: 10,
                block_size: 10
            }
        ));
        let mut sampler = BatchSampler::new(2, 10, 0).unwrap();
        assert!(sampler.sample_host(&s.val).is_err());
    }

    #[test]
    fn batches_have_the_right_shape_and_y_is_x_shifted() {
        let mut sampler = BatchSampler::new(4, 8, 1).unwrap();
        let (x, y) = sampler.sample::<B>(&data(), &Default::default()).unwrap();
        assert_eq!(x.dims(), [4, 8]);
        assert_eq!(y.dims(), [4, 8]);
        let x: Vec<i64> = x.into_data().convert::<i64>().to_vec().unwrap();
        let y: Vec<i64> = y.into_data().convert::<i64>().to_vec().unwrap();
        for row in 0..4 {
            for t in 0..8 {
                // data[i] == i, so the shift shows as +1.
                assert_eq!(y[row * 8 + t], x[row * 8 + t] + 1);
                if t > 0 {
                    assert_eq!(x[row * 8 + t], x[row * 8 + t - 1] + 1);
                }
            }
        }
    }

    #[test]
    fn slices_of_a_batch_are_its_rows_and_leave_the_generator_where_the_batch_does() {
        let data: Vec<u32> = (0..500).collect();
        let mut whole = BatchSampler::new(6, 8, 42).unwrap();
        let all = whole.sample_host(&data).unwrap();
        for (rank, rows) in [0..3, 3..6].into_iter().enumerate() {
            let shard = Shard::new(rank, 2).unwrap();
            let mut part = BatchSampler::new(3, 8, 42).unwrap().with_shard(shard);
            let slice = part.sample_host(&data).unwrap();
            assert_eq!(slice.x, all.x[rows.start * 8..rows.end * 8], "rank {rank}");
            assert_eq!(slice.y, all.y[rows.start * 8..rows.end * 8], "rank {rank}");
            assert_eq!(part.rng(), whole.rng(), "rank {rank}");
        }
        assert_eq!(
            Shard::new(2, 2).unwrap_err().to_string(),
            "rank 2 is not below the number of ranks, 2"
        );
    }

    #[test]
    fn offsets_cover_the_whole_range_and_only_it() {
        // With len = block + 2 there are exactly two offsets: 0 and 1.
        let mut sampler = BatchSampler::new(1, 8, 5).unwrap();
        let data: Vec<u32> = (0..10).collect();
        let mut seen = [false; 2];
        for _ in 0..64 {
            let b = sampler.sample_host(&data).unwrap();
            seen[b.x[0] as usize] = true;
            assert!(b.y[7] <= 9);
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn same_seed_same_batches_and_rng_restore_resumes_exactly() {
        let mut a = BatchSampler::new(3, 5, 42).unwrap();
        let mut b = BatchSampler::new(3, 5, 42).unwrap();
        let mut c = BatchSampler::new(3, 5, 43).unwrap();
        let first = a.sample_host(&data()).unwrap();
        assert_eq!(first, b.sample_host(&data()).unwrap());
        assert_ne!(first, c.sample_host(&data()).unwrap());

        let saved = serde_json::to_string(a.rng()).unwrap();
        let expected: Vec<HostBatch> = (0..5).map(|_| a.sample_host(&data()).unwrap()).collect();
        let mut resumed = BatchSampler::new(3, 5, 999).unwrap();
        resumed.set_rng(serde_json::from_str(&saved).unwrap());
        let got: Vec<HostBatch> = (0..5)
            .map(|_| resumed.sample_host(&data()).unwrap())
            .collect();
        assert_eq!(got, expected);
    }
}
