//! The binary filtering layer (layer 1) with its data-starving regulariser.
//!
//! The forward maths comes from `spartan-core` (`unit_preactivation`,
//! `conv_filter_preactivation`, the activation), so the trainer, the float path and the
//! bit tables agree bit for bit.

use super::act::{backward_in_place, GradMode};
use spartan_core::filter::{
    binary_entropy, binary_entropy_grad, conv_filter_preactivation, offset_rescaled_threshold,
    unit_preactivation, FilterKind, FilterSpec,
};
use spartan_core::spec::Shape;

/// Lowest and highest input value (pixels are `u8 / 255`): Offset thresholds live here,
/// and `offset_rescaled_threshold` of the core assumes exactly this range.
pub const INPUT_RANGE: (f32, f32) = (0.0, 1.0);

/// A filtering layer's configuration and parameters.
#[derive(Clone, Debug)]
pub struct FilterLayer {
    /// Configuration.
    pub spec: FilterSpec,
    /// Input shape.
    pub input: Shape,
    /// Output shape.
    pub output: Shape,
    /// Conv: `[C, β]`; Offset: empty (weights fixed to 1).
    pub weight: Vec<f32>,
    /// Conv: `[β]`; Offset: `[H, W, C·β]`.
    pub bias: Vec<f32>,
}

impl FilterLayer {
    /// A layer with the given parameters.
    pub fn new(
        spec: FilterSpec,
        input: Shape,
        output: Shape,
        weight: Vec<f32>,
        bias: Vec<f32>,
    ) -> Self {
        FilterLayer {
            spec,
            input,
            output,
            weight,
            bias,
        }
    }

    /// Forward pass of `n` samples; pre-activations always go to `pre` (steps need
    /// them). Returns `Σ|y|` over the chunk, the Conv-Filtering regulariser's raw sum.
    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32], pre: &mut [f32]) -> f32 {
        let (in_len, out_len) = (self.input.len(), self.output.len());
        let c = self.input.channels as usize;
        let beta = self.spec.beta as usize;
        let act = self.spec.activation;
        let samples = x
            .chunks_exact(in_len)
            .zip(y.chunks_exact_mut(out_len))
            .zip(pre.chunks_exact_mut(out_len));
        for ((xs, ys), ps) in samples.take(n) {
            match self.spec.kind {
                // Element (p, c) feeds outputs (p, c·β + k) with weight 1.
                FilterKind::Offset => {
                    for (o, (z, yv)) in ps.iter_mut().zip(ys.iter_mut()).enumerate() {
                        *z = unit_preactivation(1.0, xs[o / beta], self.bias[o]);
                        *yv = act.forward(*z);
                    }
                }
                // A 1×1 convolution of the C channels into β outputs.
                FilterKind::Conv => {
                    for ((px, zs), yv) in xs
                        .chunks_exact(c)
                        .zip(ps.chunks_exact_mut(beta))
                        .zip(ys.chunks_exact_mut(beta))
                    {
                        for k in 0..beta {
                            zs[k] = conv_filter_preactivation(
                                |ch| self.weight[ch * beta + k],
                                self.bias[k],
                                px,
                            );
                            yv[k] = act.forward(zs[k]);
                        }
                    }
                }
            }
        }
        y[..n * out_len].iter().map(|v| v.abs()).sum()
    }

    /// The Offset-Filtering regulariser `sf · Σ h(B_i)` (data independent), or 0.
    pub fn offset_regularizer(&self) -> f32 {
        match self.spec.kind {
            FilterKind::Conv => 0.0,
            FilterKind::Offset => {
                self.spec.sf
                    * self
                        .bias
                        .iter()
                        .map(|&b| binary_entropy(offset_rescaled_threshold(b)))
                        .sum::<f32>()
            }
        }
    }

    /// Adds `d(sf Σ h(B))/db = -sf · h'(B)` (with `B = -b`) to `gb` (Offset only).
    pub fn add_offset_regularizer_grad(&self, gb: &mut [f32]) {
        if self.spec.kind == FilterKind::Offset {
            for (g, &b) in gb.iter_mut().zip(&self.bias) {
                *g -= self.spec.sf * binary_entropy_grad(offset_rescaled_threshold(b));
            }
        }
    }

    /// Backward pass of `n` samples. `gy` (overwritten) is the loss gradient of `y`.
    /// `l1_scale` (= sf / batch size, or 0) adds the Conv-Filtering regulariser's
    /// gradient `l1_scale · sign(y)` before the surrogate. Parameter gradients are *added* to
    /// `param_grads` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        x: &[f32],
        n: usize,
        pre: &[f32],
        y: &[f32],
        gy: &mut [f32],
        gx: Option<&mut [f32]>,
        mode: GradMode,
        l1_scale: f32,
        param_grads: Option<(&mut [f32], &mut [f32])>,
    ) {
        let (in_len, out_len) = (self.input.len(), self.output.len());
        let c = self.input.channels as usize;
        let beta = self.spec.beta as usize;
        let kind = self.spec.kind;
        let gy = &mut gy[..n * out_len];
        if kind == FilterKind::Conv && l1_scale != 0.0 {
            for (g, &v) in gy.iter_mut().zip(y) {
                if v != 0.0 {
                    *g += l1_scale * v.signum();
                }
            }
        }
        backward_in_place(
            self.spec.activation,
            mode,
            &pre[..n * out_len],
            &y[..n * out_len],
            gy,
        );
        if let Some((gw, gb)) = param_grads {
            for (xs, dz) in x.chunks_exact(in_len).zip(gy.chunks_exact(out_len)).take(n) {
                match kind {
                    FilterKind::Offset => {
                        for (b, g) in gb.iter_mut().zip(dz) {
                            *b += g;
                        }
                    }
                    FilterKind::Conv => {
                        for (px, dzp) in xs.chunks_exact(c).zip(dz.chunks_exact(beta)) {
                            for (k, &g) in dzp.iter().enumerate() {
                                gb[k] += g;
                                for (ch, &xv) in px.iter().enumerate() {
                                    gw[ch * beta + k] += g * xv;
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(gx) = gx {
            for (gxs, dz) in gx
                .chunks_exact_mut(in_len)
                .zip(gy.chunks_exact(out_len))
                .take(n)
            {
                for (p, gpx) in gxs.chunks_exact_mut(c).enumerate() {
                    for (ch, g) in gpx.iter_mut().enumerate() {
                        *g = (0..beta)
                            .map(|k| match kind {
                                FilterKind::Offset => dz[(p * c + ch) * beta + k],
                                FilterKind::Conv => dz[p * beta + k] * self.weight[ch * beta + k],
                            })
                            .sum();
                    }
                }
            }
        }
    }

    /// Keeps Offset thresholds `τ = -b` inside the input range (after each update).
    pub fn clip_thresholds(&mut self) {
        if self.spec.kind == FilterKind::Offset {
            let (lo, hi) = INPUT_RANGE;
            for b in &mut self.bias {
                *b = b.clamp(-hi, -lo);
            }
        }
    }
}
