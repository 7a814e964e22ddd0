//! The interface every layer kind implements.
//!
//! A layer is an operation: its configuration (the core's `LayerSpec`, which the
//! model file stores) and its shapes. Its parameters belong to the [`Network`], which
//! hands them to every call, and what a backward pass needs from the forward pass
//! (pre-activations, im2col patches) goes to a scratch buffer the caller owns, as
//! `spartan-core`'s arena is caller-owned. So one network serves every thread at once,
//! inference takes `&self`, and how a step is differentiated is an argument of each
//! backward pass ([`GradMode`]), never a setting to restore.
//!
//! Batches are NHWC [`ArrayView4`]s (`n × h × w × c`; a dense layer's output is
//! `n × 1 × 1 × units`) in standard layout, so kernels hand the contiguous values
//! underneath to GEMM. Parameters are the layer's tensors in model-file order (weight,
//! then bias), each shaped as `LayerSpec::params` says. Adding a layer kind is one file
//! in `layers/` implementing this trait, plus its variant of the core's `LayerSpec`.
//!
//! [`Network`]: super::Network

use super::act::GradMode;
use super::init::Init;
use ndarray::{ArrayD, ArrayView, ArrayView4, ArrayViewMut, ArrayViewMut4, Dimension};
use rand::RngCore;
use std::fmt;

/// One layer kind's passes, given the layer's parameters. What the layer is, its
/// `LayerSpec`, is the network's (`net.spec().layers[i]`), as in the model file.
pub trait Layer: fmt::Debug + Send + Sync {
    /// Fresh parameters (docs/maths.md for filters, `init` for conv and dense), in
    /// model-file order. None by default.
    fn init(&self, init: Init, rng: &mut dyn RngCore) -> Vec<ArrayD<f32>> {
        let _ = (init, rng);
        Vec::new()
    }

    /// Writes to `out` (cleared first) values derived from the parameters once per
    /// pass and handed to every chunk's `forward` and `backward` (e.g. transformed
    /// weights); nothing by default. `input_grad`: whether the pass also computes this
    /// layer's input gradient.
    fn prepare(&self, p: &[ArrayD<f32>], input_grad: bool, out: &mut Vec<f32>) {
        let _ = (p, input_grad);
        out.clear();
    }

    /// Scratch values per sample that `forward` leaves for `backward`.
    fn scratch_len(&self) -> usize {
        0
    }

    /// Forward pass of a batch with parameters `p`.
    fn forward(&self, p: &[ArrayD<f32>], pass: Forward<'_>);

    /// Backward pass of the batch of the last `forward` with this scratch.
    fn backward(&self, p: &[ArrayD<f32>], pass: Backward<'_>);

    /// Weight of an L1 penalty on the layer's output, `weight · mean_batch Σ|y|` (the
    /// Conv-Filtering regulariser), or 0. The network adds its value and gradient.
    fn activity_l1(&self) -> f32 {
        0.0
    }

    /// A penalty on the parameters alone (the Offset-Filtering regulariser), or 0.
    fn param_penalty(&self, p: &[ArrayD<f32>]) -> f32 {
        let _ = p;
        0.0
    }

    /// Adds the gradient of [`param_penalty`](Layer::param_penalty) to `grads` (the
    /// layer's tensors concatenated in model-file order).
    fn add_param_penalty_grad(&self, p: &[ArrayD<f32>], grads: &mut [f32]) {
        let _ = (p, grads);
    }

    /// Projection after each optimiser step (e.g. clipping thresholds into range).
    fn project(&self, p: &mut [ArrayD<f32>]) {
        let _ = p;
    }
}

/// Everything a forward pass reads and writes besides the parameters.
#[derive(Debug)]
pub struct Forward<'a> {
    /// The batch.
    pub x: ArrayView4<'a, f32>,
    /// Receives the output (overwritten).
    pub y: ArrayViewMut4<'a, f32>,
    /// `n ·` [`Layer::scratch_len`] values for what the backward pass will need: hand
    /// them, untouched, to the `backward` of the same batch.
    pub scratch: &'a mut [f32],
    /// What [`Layer::prepare`] gave for this pass.
    pub prepared: &'a [f32],
}

/// Everything a backward pass reads and writes besides the parameters.
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
    /// in model-file order.
    pub grads: Option<&'a mut [f32]>,
    /// How steps are differentiated.
    pub mode: GradMode,
    /// What [`Layer::prepare`] gave for this pass.
    pub prepared: &'a [f32],
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

/// A tensor of `dims` holding `values`.
///
/// # Panics
/// When the sizes differ (a caller's bug: sizes come from the spec).
pub fn tensor(dims: &[usize], values: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(dims, values).expect("parameter sizes follow the spec")
}
