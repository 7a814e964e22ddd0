//! Offset-Filtering (layer 1): one step unit per input element and threshold, weight
//! fixed to 1, only the bias learned, `y_i = f(x_i + b_i)`, thresholds `τ = -b` kept in
//! the input range, with the binary-entropy penalty on the thresholds that starves the
//! network of information (docs/maths.md, filtering layers).
//!
//! The forward maths comes from `spartan-core` (`unit_preactivation`, the activation),
//! so the trainer, the float path and the bit tables agree bit for bit.

use crate::nn::act::backward_in_place;
use crate::nn::init::Init;
use crate::nn::layer::{tensor, values, values_in, values_mut, Backward, Forward, Layer};
use ndarray::ArrayD;
use rand::RngCore;
use spartan_core::filter::{
    binary_entropy, binary_entropy_grad, initial_step_bias, offset_rescaled_threshold,
    unit_preactivation, FilterSpec,
};
use spartan_core::spec::Shape;

/// Lowest and highest input value (pixels are `u8 / 255`): Offset thresholds live here,
/// and `offset_rescaled_threshold` of the core assumes exactly this range.
pub const INPUT_RANGE: (f32, f32) = (0.0, 1.0);

/// An Offset-Filtering layer: biases `[H, W, C·β]`, output `(p, c·β + k)` being input
/// `(p, c)` against threshold `k` (`τ = -b`).
#[derive(Clone, Debug)]
pub struct OffsetFilter {
    pub(super) spec: FilterSpec,
    pub(super) input: Shape,
    pub(super) output: Shape,
}

impl Layer for OffsetFilter {
    /// `τ = (k+1)/(β+1)` for the `k`-th threshold of every element (evenly spread).
    fn init(&self, _: Init, _: &mut dyn RngCore) -> Vec<ArrayD<f32>> {
        let beta = self.spec.beta as usize;
        let o = self.output;
        let bias = (0..o.len())
            .map(|i| initial_step_bias(i % beta, beta))
            .collect();
        let dims = [o.height as usize, o.width as usize, o.channels as usize];
        vec![tensor(&dims, bias)]
    }

    /// Pre-activations (steps need them).
    fn scratch_len(&self) -> usize {
        self.output.len()
    }

    fn forward(
        &self,
        p: &[ArrayD<f32>],
        Forward {
            x, y, scratch: pre, ..
        }: Forward<'_>,
    ) {
        let beta = self.spec.beta as usize;
        let act = self.spec.activation;
        let b = values(&p[0].view());
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

    fn backward(&self, _: &[ArrayD<f32>], b: Backward<'_>) {
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
    fn param_penalty(&self, p: &[ArrayD<f32>]) -> f32 {
        let entropy = |&b: &f32| binary_entropy(offset_rescaled_threshold(b));
        self.spec.sf * p[0].iter().map(entropy).sum::<f32>()
    }

    /// `d(sf Σ h(B))/db = -sf · h'(B)` (with `B = -b`).
    fn add_param_penalty_grad(&self, p: &[ArrayD<f32>], grads: &mut [f32]) {
        for (g, &b) in grads.iter_mut().zip(&p[0]) {
            *g -= self.spec.sf * binary_entropy_grad(offset_rescaled_threshold(b));
        }
    }

    /// Keeps thresholds `τ = -b` inside the input range.
    fn project(&self, p: &mut [ArrayD<f32>]) {
        let (lo, hi) = INPUT_RANGE;
        p[0].mapv_inplace(|b| b.clamp(-hi, -lo));
    }
}
