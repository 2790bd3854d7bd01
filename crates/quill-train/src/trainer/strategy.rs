//! How the work of a run is shared: by one process alone ([`SingleProcess`]) or by the
//! ranks of a data-parallel world (`Collective`, feature `distributed`). The trainer and
//! the loop call the same methods either way; the strategy decides which rows of each
//! batch this process takes and what "over all ranks" means.

use std::time::Duration;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use quill_data::Shard;

use crate::TrainError;

/// How the processes of a run share each step.
pub trait Strategy<B: Backend> {
    /// The rows of each batch this process trains and evaluates on.
    fn shard(&self) -> Shard;

    /// The sum of `tensor` over all ranks; every rank gets it.
    fn sum(&self, tensor: Tensor<B, 1>) -> Result<Tensor<B, 1>, TrainError>;

    /// Every rank's `values` (the same length on every rank), by rank.
    fn gather(&self, values: &[f32]) -> Result<Vec<Vec<f32>>, TrainError>;

    /// An error unless every rank has the same `hash` of `what`.
    fn check_same(&self, what: &str, hash: u64) -> Result<(), TrainError>;

    /// Wall time spent in [`Strategy::sum`] so far, and the number of sums.
    fn time_in_sums(&self) -> (Duration, usize);

    /// How many processes share each batch.
    fn ranks(&self) -> usize {
        self.shard().ranks
    }

    /// The mean of `values` over all ranks.
    fn mean(&self, values: &[f32]) -> Result<Vec<f32>, TrainError> {
        if self.ranks() == 1 {
            return Ok(values.to_vec());
        }
        let all = self.gather(values)?;
        let n = all.len() as f32;
        Ok((0..values.len())
            .map(|i| all.iter().map(|v| v[i]).sum::<f32>() / n)
            .collect())
    }
}

/// One process takes every row; sums over ranks are the values themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl<B: Backend> Strategy<B> for SingleProcess {
    fn shard(&self) -> Shard {
        Shard::WHOLE
    }
    fn sum(&self, tensor: Tensor<B, 1>) -> Result<Tensor<B, 1>, TrainError> {
        Ok(tensor)
    }
    fn gather(&self, values: &[f32]) -> Result<Vec<Vec<f32>>, TrainError> {
        Ok(vec![values.to_vec()])
    }
    fn check_same(&self, _what: &str, _hash: u64) -> Result<(), TrainError> {
        Ok(())
    }
    fn time_in_sums(&self) -> (Duration, usize) {
        (Duration::ZERO, 0)
    }
}

/// A hash of `bytes` (FNV-1a, 64 bits): what ranks compare.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    fingerprint_more(0xcbf2_9ce4_8422_2325, bytes)
}

/// [`fingerprint`] of everything hashed into `hash` so far followed by `bytes`, so that
/// data can be hashed piece by piece without being copied together.
pub fn fingerprint_more(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
