//! A trainable network built from a core [`ArchSpec`]: its layers and their parameters,
//! nothing else (passes over batches are in [`super::pass`]), and conversion to and
//! from the core's model file.

use super::init::Init;
use super::layer::{tensor, Layer};
use super::layers::build;
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD};
use rand::RngCore;
use spartan_core::float::F32Model;
use spartan_core::format::{self, DType, ModelBody, ModelKind, TensorRef};
use spartan_core::spec::{ArchSpec, Shape};
use std::ops::Range;
use std::sync::Arc;

/// A network: its spec, the shapes between its layers, the layers, and each layer's
/// parameters (its tensors in model-file order, shaped as `LayerSpec::params` says).
#[derive(Clone, Debug)]
pub struct Network {
    spec: ArchSpec,
    shapes: Vec<Shape>,
    layers: Vec<Arc<dyn Layer>>,
    params: Vec<Vec<ArrayD<f32>>>,
    /// Per layer: where its tensors sit in a flat gradient vector.
    grad_ranges: Vec<Range<usize>>,
}

impl Network {
    /// A freshly initialised network with the default [`Init`].
    pub fn init(spec: &ArchSpec, rng: &mut dyn RngCore) -> Result<Self, spartan_core::Error> {
        Self::init_with(spec, Init::default(), rng)
    }

    /// A freshly initialised network: docs/maths.md for filters, `init` for the rest.
    pub fn init_with(
        spec: &ArchSpec,
        init: Init,
        rng: &mut dyn RngCore,
    ) -> Result<Self, spartan_core::Error> {
        let shapes = spec.shapes()?;
        Ok(Self::assemble(spec, &shapes, |_, layer| {
            layer.init(init, rng)
        }))
    }

    /// A network holding the weights of a validated core float model.
    pub fn from_model(model: &F32Model<'_>) -> Self {
        let (spec, shapes) = (model.spec(), model.shapes());
        Self::assemble(spec, shapes, |i, _| {
            let w = model.layer_weights(i).unwrap_or_default();
            let present = spec.layers[i].params(shapes[i]);
            let values = [(present.weight, w.weight), (present.bias, w.bias)];
            values
                .into_iter()
                .filter_map(|(shape, v)| Some(tensor(&dims(shape?.dims()), v.iter().collect())))
                .collect()
        })
    }

    /// Loads a model file (f32 kind).
    pub fn load(bytes: &[u8]) -> Result<Self, spartan_core::Error> {
        Ok(Self::from_model(&F32Model::load(bytes)?))
    }

    /// A network of a checked spec whose layer `i` gets the parameters `params(i, layer)`.
    fn assemble(
        spec: &ArchSpec,
        shapes: &[Shape],
        mut params: impl FnMut(usize, &dyn Layer) -> Vec<ArrayD<f32>>,
    ) -> Self {
        let mut net = Network {
            spec: spec.clone(),
            shapes: shapes.to_vec(),
            layers: Vec::new(),
            params: Vec::new(),
            grad_ranges: Vec::new(),
        };
        let mut offset = 0;
        for (i, &layer) in spec.layers.iter().enumerate() {
            let l = build(layer, shapes[i], shapes[i + 1]);
            let p = params(i, &*l);
            let len: usize = p.iter().map(|t| t.len()).sum();
            net.grad_ranges.push(offset..offset + len);
            offset += len;
            net.layers.push(l);
            net.params.push(p);
        }
        net
    }

    /// The architecture.
    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    /// `shapes()[0]` is the input shape, `shapes()[i + 1]` layer `i`'s output.
    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }

    /// The layers, in order (`spec().layers[i]` says what layer `i` is).
    pub fn layers(&self) -> &[Arc<dyn Layer>] {
        &self.layers
    }

    /// Layer `i`'s parameters: its tensors in model-file order.
    pub fn layer_params(&self, i: usize) -> &[ArrayD<f32>] {
        &self.params[i]
    }

    /// Layer `i`'s parameters, writable.
    pub fn layer_params_mut(&mut self, i: usize) -> &mut [ArrayD<f32>] {
        &mut self.params[i]
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.spec.classes()
    }

    /// Elements per input image.
    pub fn input_len(&self) -> usize {
        self.shapes[0].len()
    }

    /// Per layer, where its tensors sit in a flat gradient vector ([`super::Gradients`]).
    pub fn grad_ranges(&self) -> &[Range<usize>] {
        &self.grad_ranges
    }

    /// Every learned tensor, layer by layer in model-file order (the optimiser's order).
    pub fn params(&self) -> Vec<ArrayViewD<'_, f32>> {
        self.params.iter().flatten().map(|t| t.view()).collect()
    }

    /// Every learned tensor, writable, in the order of [`params`](Self::params).
    pub fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        self.params
            .iter_mut()
            .flatten()
            .map(|t| t.view_mut())
            .collect()
    }

    /// Lengths of every learned tensor, in the order of [`params`](Self::params).
    pub fn param_lens(&self) -> Vec<usize> {
        self.params.iter().flatten().map(|t| t.len()).collect()
    }

    /// Copies of every learned tensor (for checkpoints), in the order of
    /// [`params`](Self::params).
    pub fn param_values(&self) -> Vec<Vec<f32>> {
        self.params
            .iter()
            .flatten()
            .map(|t| t.iter().copied().collect())
            .collect()
    }

    /// Restores parameters saved by [`param_values`](Self::param_values).
    pub fn set_param_values(&mut self, values: &[Vec<f32>]) -> Result<(), String> {
        let lens = self.param_lens();
        if values.len() != lens.len() || values.iter().zip(&lens).any(|(v, &n)| v.len() != n) {
            return Err("parameter shapes differ from the architecture".into());
        }
        for (t, v) in self.params.iter_mut().flatten().zip(values) {
            t.iter_mut().zip(v).for_each(|(t, &v)| *t = v);
        }
        Ok(())
    }

    /// Projections that follow every optimiser step (Offset threshold clipping).
    pub fn project(&mut self) {
        for (layer, p) in self.layers.iter().zip(&mut self.params) {
            layer.project(p);
        }
    }

    /// The network as a core model file (f32 kind).
    pub fn to_model_bytes(&self) -> Vec<u8> {
        let owned: Vec<(Vec<u32>, Vec<u8>)> = self
            .params
            .iter()
            .flatten()
            .map(|t| {
                let dims = t.shape().iter().map(|&d| d as u32).collect();
                (dims, t.iter().flat_map(|v| v.to_le_bytes()).collect())
            })
            .collect();
        let mut tensors = heapless::Vec::new();
        for (dims, bytes) in &owned {
            // The spec bounds the tensor count well under MAX_TENSORS.
            let _ = tensors.push(TensorRef::new(DType::F32, dims, bytes));
        }
        let body = ModelBody {
            spec: self.spec.clone(),
            tensors,
        };
        format::to_vec(ModelKind::F32, &body)
    }
}

/// A spec's tensor dimensions as `ndarray` wants them.
fn dims(d: &[u32]) -> Vec<usize> {
    d.iter().map(|&v| v as usize).collect()
}
