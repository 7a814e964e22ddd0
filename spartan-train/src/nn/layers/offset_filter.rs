//! Offset-Filtering (layer 1): one step unit per input element and threshold, weight
//! fixed to 1, only the bias learned, `y_i = f(x_i + b_i)`, thresholds `τ = -b` kept in
//! the input range, with the binary-entropy penalty on the thresholds that starves the
//! network of information (docs/maths.md, filtering layers).
//!
//! The forward maths comes from `spartan-core` (`unit_preactivation`, the activation),
//! so the trainer, the float path and the bit tables agree bit for bit.

use crate::nn::act::backward_in_place;
use crate::nn::layer::{tensor, values, values_in, values_mut, Backward, Layer, Params};
use ndarray::{Array3, ArrayView3, ArrayView4, ArrayViewD, ArrayViewMut4, ArrayViewMutD};
use spartan_core::filter::{
    binary_entropy, binary_entropy_grad, initial_step_bias, offset_rescaled_threshold,
    unit_preactivation, FilterKind, FilterSpec,
};
use spartan_core::spec::{LayerSpec, Shape};

/// Lowest and highest input value (pixels are `u8 / 255`): Offset thresholds live here,
/// and `offset_rescaled_threshold` of the core assumes exactly this range.
pub const INPUT_RANGE: (f32, f32) = (0.0, 1.0);

/// An Offset-Filtering layer's configuration and thresholds.
#[derive(Clone, Debug)]
pub struct OffsetFilter {
    spec: FilterSpec,
    input: Shape,
    output: Shape,
    /// `[H, W, C·β]`: output `(p, c·β + k)` is input `(p, c)` against threshold `k`.
    bias: Array3<f32>,
}

impl OffsetFilter {
    /// A layer with fresh (`τ = (k+1)/(β+1)`, evenly spread) or given biases.
    pub fn new(spec: FilterSpec, input: Shape, output: Shape, mut params: Params<'_>) -> Self {
        debug_assert_eq!(spec.kind, FilterKind::Offset);
        let beta = spec.beta as usize;
        let bias = params.next(|_, _| {
            (0..output.len())
                .map(|o| initial_step_bias(o % beta, beta))
                .collect()
        });
        let dims = (
            output.height as usize,
            output.width as usize,
            output.channels as usize,
        );
        OffsetFilter {
            spec,
            input,
            output,
            bias: tensor(dims, bias),
        }
    }

    /// The biases, `[H, W, C·β]` (thresholds `τ = -b`).
    pub fn bias(&self) -> ArrayView3<'_, f32> {
        self.bias.view()
    }
}

impl Layer for OffsetFilter {
    fn spec(&self) -> LayerSpec {
        LayerSpec::Filter(self.spec)
    }

    fn input_shape(&self) -> Shape {
        self.input
    }

    fn output_shape(&self) -> Shape {
        self.output
    }

    fn params(&self) -> Vec<ArrayViewD<'_, f32>> {
        vec![self.bias.view().into_dyn()]
    }

    fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        vec![self.bias.view_mut().into_dyn()]
    }

    /// Pre-activations (steps need them).
    fn scratch_len(&self) -> usize {
        self.output.len()
    }

    fn forward(&self, x: ArrayView4<'_, f32>, y: ArrayViewMut4<'_, f32>, pre: &mut [f32]) {
        let beta = self.spec.beta as usize;
        let act = self.spec.activation;
        let b = values(&self.bias.view());
        let out_len = self.output.len();
        let samples = values(&x)
            .chunks_exact(self.input.len())
            .zip(values_mut(y).chunks_exact_mut(out_len))
            .zip(pre.chunks_exact_mut(out_len));
        for ((xs, ys), ps) in samples {
            // Element (p, c) feeds outputs (p, c·β + k) with weight 1.
            for (o, (z, yv)) in ps.iter_mut().zip(ys.iter_mut()).enumerate() {
                *z = unit_preactivation(1.0, xs[o / beta], b[o]);
                *yv = act.forward(*z);
            }
        }
    }

    fn backward(&self, b: Backward<'_>) {
        let beta = self.spec.beta as usize;
        let out_len = self.output.len();
        let mut gy = b.gy;
        let dz = values_in(&mut gy);
        backward_in_place(self.spec.activation, b.mode, b.scratch, values(&b.y), dz);
        let dz: &[f32] = dz;
        if let Some(gb) = b.grads {
            for d in dz.chunks_exact(out_len) {
                for (g, v) in gb.iter_mut().zip(d) {
                    *g += v;
                }
            }
        }
        if let Some(gx) = b.gx {
            for (g, d) in values_mut(gx).iter_mut().zip(dz.chunks_exact(beta)) {
                *g = d.iter().sum();
            }
        }
    }

    /// `sf · Σ h(B_i)`, data independent.
    fn param_penalty(&self) -> f32 {
        self.spec.sf
            * self
                .bias
                .iter()
                .map(|&b| binary_entropy(offset_rescaled_threshold(b)))
                .sum::<f32>()
    }

    /// `d(sf Σ h(B))/db = -sf · h'(B)` (with `B = -b`).
    fn add_param_penalty_grad(&self, grads: &mut [f32]) {
        for (g, &b) in grads.iter_mut().zip(&self.bias) {
            *g -= self.spec.sf * binary_entropy_grad(offset_rescaled_threshold(b));
        }
    }

    /// Keeps thresholds `τ = -b` inside the input range.
    fn project(&mut self) {
        let (lo, hi) = INPUT_RANGE;
        self.bias.mapv_inplace(|b| b.clamp(-hi, -lo));
    }

    fn clone_box(&self) -> Box<dyn Layer> {
        Box::new(self.clone())
    }
}
