//! Model parameters under their PyTorch names, for checkpoints that PyTorch users can
//! load, and their weight-decay groups, for the optimizer.
//!
//! The model declares both itself ([`crate::LanguageModel::param_specs`]), as nanoGPT's
//! `configure_optimizers` lives on the model: names and layouts follow nanoGPT's
//! `state_dict` (`transformer.wte.weight`, `transformer.h.0.attn.c_attn.weight`, …,
//! `lm_head.weight`); Linear weights are stored `[out, in]` like `torch.nn.Linear`
//! (quill keeps them `[in, out]`). A tied GPT also exports `lm_head.weight` (a copy of
//! `transformer.wte.weight`), as PyTorch's state dict does. The bigram model uses the
//! lecture notebook's names: `token_embedding_table.weight`,
//! `position_embedding_table.weight`, `lm_head.weight`, `lm_head.bias`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::nn::Embedding;
use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

use crate::layers::{Linear, Normalization};
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

/// What the model declares about one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// PyTorch (nanoGPT) name.
    pub name: String,
    /// Whether PyTorch stores it transposed (a Linear weight).
    pub transposed: bool,
    /// Whether AdamW's weight decay applies to it.
    pub decays: bool,
    /// Whether it is a hidden matrix: a Linear weight inside a block (not an embedding,
    /// the LM head or a gain), which Muon may update instead of AdamW.
    pub hidden: bool,
}

/// The values of a `[r, c]` matrix laid out `[c, r]`: a Linear weight between PyTorch's
/// `[out, in]` and quill's `[in, out]`.
pub fn transposed(shape: &[usize], values: &[f32]) -> Vec<f32> {
    let (r, c) = (shape[0], shape[1]);
    let mut out = vec![0.0; values.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = values[i * c + j];
        }
    }
    out
}

/// A saved parameter's values (PyTorch layout) in quill's layout, flat: a Linear
/// weight `[out, in]` becomes `[in, out]`.
pub fn quill_layout(spec: &ParamSpec, saved: &NamedTensor) -> Vec<f32> {
    match (spec.transposed, saved.shape.len()) {
        (true, 2) => transposed(&saved.shape, &saved.values),
        _ => saved.values.clone(),
    }
}

/// Every parameter of a model, by id, as the model declares them.
#[derive(Debug, Clone, Default)]
pub struct ParamSpecs {
    by_id: HashMap<ParamId, ParamSpec>,
}

impl ParamSpecs {
    /// The spec of the parameter with this id.
    pub fn get(&self, id: &ParamId) -> Option<&ParamSpec> {
        self.by_id.get(id)
    }

    fn add<B: Backend, const D: usize>(
        &mut self,
        param: &Param<Tensor<B, D>>,
        name: String,
        transposed: bool,
        decays: bool,
    ) {
        let spec = ParamSpec {
            name,
            transposed,
            decays,
            hidden: false,
        };
        self.by_id.insert(param.id, spec);
    }

    /// `{prefix}.weight` (transposed, decays, a hidden matrix) and `{prefix}.bias`.
    pub fn linear<B: Backend>(&mut self, prefix: &str, layer: &Linear<B>) {
        self.head(prefix, layer);
        if let Some(spec) = self.by_id.get_mut(&layer.weight.id) {
            spec.hidden = true;
        }
    }

    /// An output layer: [`ParamSpecs::linear`], but not a hidden matrix.
    pub fn head<B: Backend>(&mut self, prefix: &str, layer: &Linear<B>) {
        self.add(&layer.weight, format!("{prefix}.weight"), true, true);
        if let Some(bias) = &layer.bias {
            self.add(bias, format!("{prefix}.bias"), false, false);
        }
    }

    /// `{prefix}.weight` and `{prefix}.bias`, neither decaying.
    pub fn norm<B: Backend>(&mut self, prefix: &str, layer: &Normalization<B>) {
        self.add(&layer.weight, format!("{prefix}.weight"), false, false);
        if let Some(bias) = &layer.bias {
            self.add(bias, format!("{prefix}.bias"), false, false);
        }
    }

    /// An embedding table called `name`.
    pub fn embedding<B: Backend>(&mut self, name: &str, table: &Embedding<B>, decays: bool) {
        self.add(&table.weight, name.to_string(), false, decays);
    }
}

const TIED_HEAD: &str = "lm_head.weight";
const TIED_SOURCE: &str = "transformer.wte.weight";

/// A parameter's values in PyTorch layout.
fn to_pytorch<B: Backend, const D: usize>(spec: &ParamSpec, value: Tensor<B, D>) -> Tensor<B, D> {
    match spec.transposed {
        true => value.transpose(),
        false => value,
    }
}

/// Every float parameter of `model`, in PyTorch names and layout.
pub fn export<B: Backend>(model: &LanguageModel<B>) -> Vec<NamedTensor> {
    struct Exporter {
        specs: ParamSpecs,
        out: Vec<NamedTensor>,
    }
    impl<B: Backend> ModuleVisitor<B> for Exporter {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let spec = self
                .specs
                .get(&param.id)
                .expect("the model declares every parameter");
            let value = match param.val().dtype() {
                DType::QFloat(_) => param.val().dequantize(),
                _ => param.val(),
            };
            let tensor = to_pytorch(spec, value);
            self.out.push(NamedTensor {
                name: spec.name.clone(),
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
        specs: model.param_specs(),
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

/// The PyTorch name and shape of every float parameter of `model` (the tied head
/// included), without copying a value: what a file's tensors are checked against
/// before they are read.
pub fn shapes<B: Backend>(model: &LanguageModel<B>) -> BTreeMap<String, Vec<usize>> {
    struct Shapes {
        specs: ParamSpecs,
        out: BTreeMap<String, Vec<usize>>,
    }
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let spec = self
                .specs
                .get(&param.id)
                .expect("the model declares every parameter");
            let mut dims = param.shape().dims::<D>().to_vec();
            if spec.transposed {
                dims.reverse();
            }
            self.out.insert(spec.name.clone(), dims);
        }
    }
    let mut shapes = Shapes {
        specs: model.param_specs(),
        out: BTreeMap::new(),
    };
    model.visit(&mut shapes);
    if model.ties_weights()
        && let Some(wte) = shapes.out.get(TIED_SOURCE).cloned()
    {
        shapes.out.insert(TIED_HEAD.to_string(), wte);
    }
    shapes.out
}

/// Replaces every parameter of `model` by the tensor of the same name. A missing
/// tensor, a shape that differs, or a tensor the model has no place for is an error
/// (the first one found).
pub fn import<B: Backend>(
    model: LanguageModel<B>,
    tensors: &BTreeMap<String, NamedTensor>,
) -> Result<LanguageModel<B>, ModelError> {
    struct Importer<'a> {
        specs: ParamSpecs,
        tensors: &'a BTreeMap<String, NamedTensor>,
        used: BTreeSet<String>,
        error: Option<ModelError>,
    }
    impl<B: Backend> ModuleMapper<B> for Importer<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let spec = self
                .specs
                .get(&id)
                .expect("the model declares every parameter");
            let expected = to_pytorch(spec, tensor.clone()).dims().to_vec();
            let name = spec.name.clone();
            let loaded = match self.tensors.get(&name) {
                None => Err(ModelError::MissingTensor(name.clone())),
                Some(t) if t.shape != expected => Err(ModelError::TensorShape {
                    name: name.clone(),
                    found: t.shape.clone(),
                    expected,
                }),
                Some(t) => {
                    let data = TensorData::new(t.values.clone(), t.shape.clone());
                    let new = Tensor::<B, D>::from_data(data, &tensor.device());
                    Ok(to_pytorch(spec, new))
                }
            };
            self.used.insert(name);
            let value = match loaded {
                Ok(new) => new.set_require_grad(tensor.is_require_grad()),
                Err(e) => {
                    self.error.get_or_insert(e);
                    tensor
                }
            };
            Param::from_mapped_value(id, value, mapper)
        }
    }
    let mut importer = Importer {
        specs: model.param_specs(),
        tensors,
        used: BTreeSet::new(),
        error: None,
    };
    let tied = model.ties_weights();
    let model = model.map(&mut importer);
    if let Some(error) = importer.error {
        return Err(error);
    }
    let unused = tensors
        .keys()
        .find(|k| !(importer.used.contains(*k) || tied && k.as_str() == TIED_HEAD));
    match unused {
        Some(name) => Err(ModelError::UnexpectedTensor(name.clone())),
        None => Ok(model),
    }
}
