//! A trainable network built from a core [`ArchSpec`]: its layers and their parameters,
//! nothing else (passes over batches are in [`super::pass`]), and conversion to and
//! from the core's model file.

use super::init::Init;
use super::layer::{Layer, Params};
use super::layers::build;
use rand::RngCore;
use spartan_core::float::F32Model;
use spartan_core::format::{self, DType, ModelBody, ModelKind, TensorRef};
use spartan_core::spec::{ArchSpec, Shape};
use std::ops::Range;

/// A network: its spec, the shapes between its layers, and the layers.
#[derive(Debug)]
pub struct Network {
    spec: ArchSpec,
    shapes: Vec<Shape>,
    layers: Vec<Box<dyn Layer>>,
    /// Per layer: where its tensors sit in a flat gradient vector.
    grad_ranges: Vec<Range<usize>>,
}

impl Clone for Network {
    fn clone(&self) -> Self {
        Network {
            spec: self.spec.clone(),
            shapes: self.shapes.clone(),
            layers: self.layers.iter().map(|l| l.clone_box()).collect(),
            grad_ranges: self.grad_ranges.clone(),
        }
    }
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
        Ok(Self::assemble(spec, &shapes, |i| {
            build(
                spec.layers[i],
                shapes[i],
                shapes[i + 1],
                Params::Init(init, &mut *rng),
            )
        }))
    }

    /// A network holding the weights of a validated core float model.
    pub fn from_model(model: &F32Model<'_>) -> Self {
        let (spec, shapes) = (model.spec(), model.shapes());
        Self::assemble(spec, shapes, |i| {
            let w = model.layer_weights(i).unwrap_or_default();
            let present = spec.layers[i].params(shapes[i]);
            let mut tensors = Vec::new();
            if present.weight.is_some() {
                tensors.push(w.weight.iter().collect());
            }
            if present.bias.is_some() {
                tensors.push(w.bias.iter().collect());
            }
            build(
                spec.layers[i],
                shapes[i],
                shapes[i + 1],
                Params::Values(tensors),
            )
        })
    }

    /// Loads a model file (f32 kind).
    pub fn load(bytes: &[u8]) -> Result<Self, spartan_core::Error> {
        Ok(Self::from_model(&F32Model::load(bytes)?))
    }

    /// A network of a checked spec whose layer `i` is `layer(i)`.
    fn assemble(
        spec: &ArchSpec,
        shapes: &[Shape],
        mut layer: impl FnMut(usize) -> Box<dyn Layer>,
    ) -> Self {
        let mut layers = Vec::new();
        let mut grad_ranges = Vec::new();
        let mut offset = 0;
        for i in 0..spec.layers.len() {
            let l = layer(i);
            let len: usize = l.params().iter().map(|p| p.len()).sum();
            grad_ranges.push(offset..offset + len);
            offset += len;
            layers.push(l);
        }
        Network {
            spec: spec.clone(),
            shapes: shapes.to_vec(),
            layers,
            grad_ranges,
        }
    }

    /// The architecture.
    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    /// `shapes()[0]` is the input shape, `shapes()[i + 1]` layer `i`'s output.
    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }

    /// The layers, in order (each says what it is through [`Layer::spec`]).
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
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
    pub fn params(&self) -> Vec<ndarray::ArrayViewD<'_, f32>> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }

    /// Every learned tensor, writable, in the order of [`params`](Self::params).
    pub fn params_mut(&mut self) -> Vec<ndarray::ArrayViewMutD<'_, f32>> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.params_mut())
            .collect()
    }

    /// Lengths of every learned tensor, in the order of [`params`](Self::params).
    pub fn param_lens(&self) -> Vec<usize> {
        self.params().iter().map(|p| p.len()).collect()
    }

    /// Copies of every learned tensor (for checkpoints), in the order of
    /// [`params`](Self::params).
    pub fn param_values(&self) -> Vec<Vec<f32>> {
        self.params()
            .iter()
            .map(|p| p.iter().copied().collect())
            .collect()
    }

    /// Restores parameters saved by [`param_values`](Self::param_values).
    pub fn set_param_values(&mut self, values: &[Vec<f32>]) -> Result<(), String> {
        let lens = self.param_lens();
        if values.len() != lens.len() || values.iter().zip(&lens).any(|(v, &n)| v.len() != n) {
            return Err("parameter shapes differ from the architecture".into());
        }
        for (mut p, v) in self.params_mut().into_iter().zip(values) {
            p.iter_mut().zip(v).for_each(|(p, &v)| *p = v);
        }
        Ok(())
    }

    /// Projections that follow every optimiser step (Offset threshold clipping).
    pub fn project(&mut self) {
        for l in &mut self.layers {
            l.project();
        }
    }

    /// The network as a core model file (f32 kind).
    pub fn to_model_bytes(&self) -> Vec<u8> {
        let mut owned: Vec<(Vec<u32>, Vec<u8>)> = Vec::new();
        for (i, layer) in self.spec.layers.iter().enumerate() {
            let shapes = layer.params(self.shapes[i]).iter();
            for (shape, values) in shapes.zip(self.layers[i].params()) {
                owned.push((
                    shape.dims().to_vec(),
                    values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ));
            }
        }
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
