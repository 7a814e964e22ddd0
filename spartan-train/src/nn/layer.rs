//! The interface every layer kind implements.
//!
//! A layer holds its configuration (the core's [`LayerSpec`], which the model file
//! stores) and its parameters, nothing else. What a backward pass needs from the
//! forward pass (pre-activations, im2col patches) goes to a scratch buffer the caller
//! owns, as `spartan-core`'s arena is caller-owned: one network serves every thread at
//! once, inference takes `&self`, and how a step is differentiated is an argument of
//! each backward pass ([`GradMode`]), never a setting to restore.
//!
//! Batches are NHWC [`ArrayView4`]s (`n × h × w × c`; a dense layer's output is
//! `n × 1 × 1 × units`) in standard layout, so kernels hand the contiguous values
//! underneath to GEMM. Adding a layer kind is one file in `layers/` implementing this
//! trait, plus its variant of the core's `LayerSpec`.

use super::act::GradMode;
use super::init::Init;
use ndarray::{
    ArrayView, ArrayView4, ArrayViewD, ArrayViewMut, ArrayViewMut4, ArrayViewMutD, Dimension,
};
use rand::RngCore;
use spartan_core::spec::{LayerSpec, Shape};
use std::fmt;

/// One layer: its spec, its parameters, and its forward and backward passes.
pub trait Layer: fmt::Debug + Send + Sync {
    /// What the layer is (stored in the model file next to the parameters).
    fn spec(&self) -> LayerSpec;

    /// Shape of one input sample.
    fn input_shape(&self) -> Shape;

    /// Shape of one output sample.
    fn output_shape(&self) -> Shape;

    /// The learned tensors in model-file order (weight, then bias), each in the layout
    /// of `LayerSpec::params`. None by default.
    fn params(&self) -> Vec<ArrayViewD<'_, f32>> {
        Vec::new()
    }

    /// The learned tensors, writable, in the order of [`params`](Layer::params).
    fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        Vec::new()
    }

    /// Scratch values per sample that `forward` leaves for `backward`.
    fn scratch_len(&self) -> usize {
        0
    }

    /// Forward pass of a batch. `scratch` holds `n ·` [`scratch_len`](Layer::scratch_len)
    /// values and must be handed, untouched, to the `backward` of the same batch.
    fn forward(&self, x: ArrayView4<'_, f32>, y: ArrayViewMut4<'_, f32>, scratch: &mut [f32]);

    /// Backward pass of the batch of the last `forward` with this scratch.
    fn backward(&self, pass: Backward<'_>);

    /// Weight of an L1 penalty on the layer's output, `weight · mean_batch Σ|y|` (the
    /// Conv-Filtering regulariser), or 0. The network adds its value and gradient.
    fn activity_l1(&self) -> f32 {
        0.0
    }

    /// A penalty on the parameters alone (the Offset-Filtering regulariser), or 0.
    fn param_penalty(&self) -> f32 {
        0.0
    }

    /// Adds the gradient of [`param_penalty`](Layer::param_penalty) to `grads` (the
    /// layer's tensors concatenated in [`params`](Layer::params) order).
    fn add_param_penalty_grad(&self, grads: &mut [f32]) {
        let _ = grads;
    }

    /// Projection after each optimiser step (e.g. clipping thresholds into range).
    fn project(&mut self) {}

    /// A boxed copy (networks are cloned for checkpoints and experiments).
    fn clone_box(&self) -> Box<dyn Layer>;
}

/// Everything a backward pass reads and writes.
#[derive(Debug)]
pub struct Backward<'a> {
    /// The input of the forward pass.
    pub x: ArrayView4<'a, f32>,
    /// Its output.
    pub y: ArrayView4<'a, f32>,
    /// What the forward pass left in its scratch (may be clobbered).
    pub scratch: &'a mut [f32],
    /// Loss gradient with respect to `y` (may be clobbered).
    pub gy: ArrayViewMut4<'a, f32>,
    /// Receives the loss gradient with respect to `x` (overwritten), when given.
    pub gx: Option<ArrayViewMut4<'a, f32>>,
    /// Parameter gradients, *added* to, when given: the layer's tensors concatenated
    /// in [`Layer::params`] order.
    pub grads: Option<&'a mut [f32]>,
    /// How steps are differentiated.
    pub mode: GradMode,
}

/// Where a new layer's parameters come from.
pub enum Params<'r> {
    /// Fresh values: docs/maths.md for filters, this [`Init`] for conv and dense.
    Init(Init, &'r mut dyn RngCore),
    /// Given values: one flat vector per tensor, in model-file order, of the sizes
    /// `LayerSpec::params` states (checked by whoever read them).
    Values(Vec<Vec<f32>>),
}

impl fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Params::Init(init, _) => write!(f, "Init({init:?})"),
            Params::Values(v) => write!(f, "Values({} tensors)", v.len()),
        }
    }
}

impl Params<'_> {
    /// The next given tensor, or `fresh(init, rng)` when initialising.
    pub(crate) fn next(
        &mut self,
        fresh: impl FnOnce(Init, &mut dyn RngCore) -> Vec<f32>,
    ) -> Vec<f32> {
        match self {
            Params::Init(init, rng) => fresh(*init, &mut **rng),
            Params::Values(v) => {
                if v.is_empty() {
                    Vec::new()
                } else {
                    v.remove(0)
                }
            }
        }
    }
}

/// The contiguous values under a view the network made (standard layout by contract).
pub(crate) fn values<'a, D: Dimension>(v: &ArrayView<'a, f32, D>) -> &'a [f32] {
    v.to_slice().expect("layer views are in standard layout")
}

/// The contiguous values under a writable view the network made.
pub(crate) fn values_mut<'a, D: Dimension>(v: ArrayViewMut<'a, f32, D>) -> &'a mut [f32] {
    v.into_slice().expect("layer views are in standard layout")
}

/// The contiguous values under a writable view the network made, borrowed.
pub(crate) fn values_in<'a, D: Dimension>(v: &'a mut ArrayViewMut<'_, f32, D>) -> &'a mut [f32] {
    v.as_slice_mut()
        .expect("layer views are in standard layout")
}

/// A tensor of `dims` holding `values` (whose length the spec fixed).
pub(crate) fn tensor<D: Dimension>(
    dims: impl ndarray::IntoDimension<Dim = D>,
    values: Vec<f32>,
) -> ndarray::Array<f32, D> {
    ndarray::Array::from_shape_vec(dims.into_dimension(), values)
        .expect("parameter sizes follow the spec")
}
