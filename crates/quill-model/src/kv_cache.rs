//! The key/value cache of generation: each new token attends to the cached keys and
//! values of the tokens before it instead of recomputing them.

use burn::tensor::{Tensor, backend::Backend};

/// The cached keys and values of one attention layer: `[B, nh, P, hs]` tensors each,
/// or, where the fused CPU kernels run the attention, their own buffer that grows in
/// place ([`quill_kernels::decode::KvBuffer`]).
#[derive(Debug, Clone, Default)]
pub struct LayerKv<B: Backend> {
    kv: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    /// The fused kernels' cache (used only while `kv` is empty).
    #[cfg(feature = "fused-cpu")]
    pub(crate) buffer: quill_kernels::decode::KvBuffer,
}

impl<B: Backend> LayerKv<B> {
    /// Positions cached.
    pub fn len(&self) -> usize {
        #[cfg(feature = "fused-cpu")]
        if self.kv.is_none() {
            return self.buffer.len();
        }
        self.kv.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the keys and values are held as tensors (the generic path).
    #[cfg(feature = "fused-cpu")]
    pub(crate) fn holds_tensors(&self) -> bool {
        self.kv.is_some()
    }

    /// Appends the new positions' keys and values `[B, nh, T, hs]`; returns all of them,
    /// `[B, nh, P + T, hs]`, and the number `P` of positions cached before.
    pub fn append(
        &mut self,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>, usize) {
        let (k, v, past) = match self.kv.take() {
            Some((pk, pv)) => {
                let past = pk.dims()[2];
                (
                    Tensor::cat(vec![pk, k], 2),
                    Tensor::cat(vec![pv, v], 2),
                    past,
                )
            }
            None => (k, v, 0),
        };
        self.kv = Some((k.clone(), v.clone()));
        (k, v, past)
    }
}

/// A key/value cache for a whole model: one [`LayerKv`] per block and the number of
/// positions it holds.
#[derive(Debug, Clone, Default)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerKv<B>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache.
    pub fn new() -> Self {
        KvCache {
            layers: Vec::new(),
            len: 0,
        }
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counts `t` new positions and returns the caches of the `n_layer` layers they are
    /// to be added to.
    pub(crate) fn extend(&mut self, n_layer: usize, t: usize) -> &mut [LayerKv<B>] {
        self.layers.resize_with(n_layer, LayerKv::default);
        self.len += t;
        &mut self.layers
    }

    /// Counts `t` more positions without storing anything (models without attention).
    pub(crate) fn skip(&mut self, t: usize) {
        self.len += t;
    }

    /// Forgets everything (e.g. when the context window shifts).
    pub fn clear(&mut self) {
        *self = KvCache::new();
    }
}
