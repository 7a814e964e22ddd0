//! What conv and dense layers share: `y = f(a·W + b)` over the rows of a matrix `a` (a
//! conv's patches, a dense layer's flattened samples), and its backward pass.

use crate::nn::act::{backward_in_place, forward_in_place, GradMode};
use crate::nn::gemm::matmul;
use crate::nn::kernels::add_rows;
use crate::nn::layer::{values, values_in, values_mut};
use ndarray::{ArrayD, ArrayView2, ArrayViewMut2};
use spartan_core::activation::Activation;

/// The parameters and activation of `y = f(a·W + b)`.
pub(super) struct Affine<'p> {
    /// `[fan_in, units]`.
    pub w: ArrayView2<'p, f32>,
    /// `[units]`.
    pub b: &'p ArrayD<f32>,
    /// `f`.
    pub act: Activation,
}

/// The gradient side of one backward pass through an [`Affine`].
pub(super) struct AffineBackward<'a, 'g> {
    /// The forward pass's `a`; `None` when the caller adds the weight gradient itself
    /// (only the bias gradient is added then).
    pub a: Option<ArrayView2<'a, f32>>,
    /// Its pre-activations (kept for steps only) and its output.
    pub pre: &'a [f32],
    /// Its output `y`.
    pub y: &'a [f32],
    /// The loss gradient of `y`, rows like `a`'s.
    pub gy: ArrayViewMut2<'g, f32>,
    /// How steps are differentiated.
    pub mode: GradMode,
}

impl Affine<'_> {
    /// `y = f(a·W + b)`; pre-activations to `pre` unless it is empty.
    pub fn forward(&self, a: ArrayView2<'_, f32>, y: ArrayViewMut2<'_, f32>, pre: &mut [f32]) {
        self.forward_with(y, pre, |y| matmul(y, a, self.w, false));
    }

    /// [`forward`](Self::forward) with `product` writing `a·W` into `y` its own way.
    pub fn forward_with(
        &self,
        mut y: ArrayViewMut2<'_, f32>,
        pre: &mut [f32],
        product: impl FnOnce(ArrayViewMut2<'_, f32>),
    ) {
        // The bias row by row in a vectorised kernel: `assign` (a broadcast per output
        // pixel) cost a fifth of a batch-1 inference, a `memmove` call per row 5 % of
        // batch-256 inference. `bias + a·W` rounds once either way.
        product(y.view_mut());
        add_rows(values_in(&mut y), values(&self.b.view()));
        self.activate(values_mut(y), pre);
    }

    /// `y = f(z)` in place, for `z = a·W + b` computed by the caller; pre-activations
    /// to `pre` unless it is empty.
    pub fn activate(&self, z: &mut [f32], pre: &mut [f32]) {
        let keep = (!pre.is_empty()).then_some(pre);
        forward_in_place(self.act, z, keep);
    }

    /// Turns the loss gradient of `y` into that of `a·W + b`, which it returns, and adds
    /// the parameter gradients (`aᵀ·g` to the weights, column sums to the biases) to
    /// `grads` (the weights' then the biases') when given.
    pub fn backward<'g>(
        &self,
        pass: AffineBackward<'_, 'g>,
        grads: Option<&mut [f32]>,
    ) -> ArrayViewMut2<'g, f32> {
        let mut gz = pass.gy;
        backward_in_place(self.act, pass.mode, pass.pre, pass.y, values_in(&mut gz));
        if let Some(grads) = grads {
            let (gw, gb) = grads.split_at_mut(self.w.len());
            for row in values(&gz.view()).chunks_exact(gb.len()) {
                for (s, v) in gb.iter_mut().zip(row) {
                    *s += v;
                }
            }
            if let Some(a) = pass.a {
                let gw = ArrayViewMut2::from_shape(self.w.dim(), gw)
                    .expect("gradient sized like the weights");
                matmul(gw, a.t(), gz.view(), true);
            }
        }
        gz
    }

    /// The loss gradient of `a` from that of `a·W + b`: `ga = gz·Wᵀ` (overwritten).
    pub fn input_grad(&self, gz: ArrayView2<'_, f32>, ga: ArrayViewMut2<'_, f32>) {
        matmul(ga, gz, self.w.t(), false);
    }
}
