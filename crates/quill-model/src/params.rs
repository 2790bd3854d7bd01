//! Model parameters under their PyTorch names, for checkpoints that PyTorch users can
//! load.
//!
//! Names and layouts follow nanoGPT's `state_dict`: `transformer.wte.weight`,
//! `transformer.h.0.attn.c_attn.weight`, …, `lm_head.weight`; LayerNorm's `gamma`/`beta`
//! are `weight`/`bias`; Linear weights are stored `[out, in]` like `torch.nn.Linear`
//! (Burn keeps them `[in, out]`). A tied GPT also exports `lm_head.weight` (a copy of
//! `transformer.wte.weight`), as PyTorch's state dict does. The bigram model uses the
//! seed notebook's names: `token_embedding_table.weight`,
//! `position_embedding_table.weight`, `lm_head.weight`, `lm_head.bias`.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::{LanguageModel, ModelError};

/// One parameter on the host, in PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// PyTorch-style name.
    pub name: String,
    /// Shape, in PyTorch layout.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

const TIED_HEAD: &str = "lm_head.weight";
const TIED_SOURCE: &str = "transformer.wte.weight";

/// Tracks where a visitor or mapper is in the module tree and names parameters.
#[derive(Debug, Default, Clone)]
pub struct ParamPath {
    stack: Vec<(String, String)>,
}

impl ParamPath {
    /// Called from `enter_module`.
    pub fn enter(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    /// Called from `exit_module`.
    pub fn exit(&mut self) {
        self.stack.pop();
    }

    /// Whether the current parameter is an embedding table.
    pub fn is_embedding(&self) -> bool {
        self.stack
            .last()
            .is_some_and(|(_, c)| c == "Struct:Embedding")
    }

    /// The current parameter's PyTorch name, and whether it is a Linear weight (stored
    /// transposed relative to PyTorch).
    pub fn name(&self) -> (String, bool) {
        let mut parts: Vec<&str> = Vec::new();
        let mut in_gpt = false;
        for (name, container) in &self.stack {
            match container.as_str() {
                c if c.starts_with("Enum:") => in_gpt = name == "Gpt",
                "Struct:LayerNorm" if name == "gamma" => parts.push("weight"),
                "Struct:LayerNorm" if name == "beta" => parts.push("bias"),
                _ => parts.push(name),
            }
        }
        if in_gpt && parts.first() != Some(&"lm_head") {
            parts.insert(0, "transformer");
        }
        let linear_weight = self
            .stack
            .last()
            .is_some_and(|(n, c)| c == "Struct:Linear" && n == "weight");
        (parts.join("."), linear_weight)
    }
}

/// Every float parameter of `model`, in PyTorch names and layout.
pub fn export<B: Backend>(model: &LanguageModel<B>) -> Vec<NamedTensor> {
    struct Exporter {
        path: ParamPath,
        out: Vec<NamedTensor>,
    }
    impl<B: Backend> ModuleVisitor<B> for Exporter {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let (name, transposed) = self.path.name();
            let tensor = if transposed {
                param.val().transpose()
            } else {
                param.val()
            };
            self.out.push(NamedTensor {
                name,
                shape: tensor.dims().to_vec(),
                values: tensor
                    .into_data()
                    .convert::<f32>()
                    .to_vec()
                    .expect("f32 data"),
            });
        }
    }
    let mut exporter = Exporter {
        path: ParamPath::default(),
        out: Vec::new(),
    };
    model.visit(&mut exporter);
    if model.ties_weights()
        && let Some(wte) = exporter.out.iter().find(|t| t.name == TIED_SOURCE)
    {
        let head = NamedTensor {
            name: TIED_HEAD.to_string(),
            ..wte.clone()
        };
        exporter.out.push(head);
    }
    exporter.out
}

/// Replaces every parameter of `model` by the tensor of the same name. A missing
/// tensor, a shape that differs, or a tensor the model has no place for is an error.
pub fn import<B: Backend>(
    model: LanguageModel<B>,
    tensors: &BTreeMap<String, NamedTensor>,
) -> Result<LanguageModel<B>, ModelError> {
    struct Importer<'a> {
        path: ParamPath,
        tensors: &'a BTreeMap<String, NamedTensor>,
        used: BTreeSet<String>,
        errors: Vec<String>,
    }
    impl<B: Backend> ModuleMapper<B> for Importer<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let (name, transposed) = self.path.name();
            let mut expected = tensor.dims();
            if transposed {
                expected.swap(0, 1);
            }
            let loaded = match self.tensors.get(&name) {
                None => Err(format!("missing tensor {name}")),
                Some(t) if t.shape != expected => Err(format!(
                    "tensor {name} has shape {:?}, the model needs {expected:?}",
                    t.shape
                )),
                Some(t) => {
                    let data = TensorData::new(t.values.clone(), expected);
                    let new = Tensor::<B, D>::from_data(data, &tensor.device());
                    Ok(if transposed { new.transpose() } else { new })
                }
            };
            self.used.insert(name);
            let value = match loaded {
                Ok(new) => new.set_require_grad(tensor.is_require_grad()),
                Err(e) => {
                    self.errors.push(e);
                    tensor
                }
            };
            Param::from_mapped_value(id, value, mapper)
        }
    }
    let mut importer = Importer {
        path: ParamPath::default(),
        tensors,
        used: BTreeSet::new(),
        errors: Vec::new(),
    };
    let tied = model.ties_weights();
    let model = model.map(&mut importer);
    let unused = tensors
        .keys()
        .filter(|k| !(importer.used.contains(*k) || tied && k.as_str() == TIED_HEAD));
    importer
        .errors
        .extend(unused.map(|k| format!("unexpected tensor {k}")));
    match importer.errors.first() {
        None => Ok(model),
        Some(first) => Err(ModelError::Params(format!(
            "{first}{}",
            match importer.errors.len() {
                1 => String::new(),
                n => format!(" (and {} more problems)", n - 1),
            }
        ))),
    }
}
