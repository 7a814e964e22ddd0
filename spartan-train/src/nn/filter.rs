//! The binary filtering layer (layer 1) with its data-starving regulariser.
//!
//! The forward maths comes from `spartan-core` (`unit_preactivation`,
//! `conv_filter_preactivation`, the activation), so the trainer, the float path and the
//! bit tables agree bit for bit.

use super::act::{backward_in_place, GradMode};
use super::batch;
use rayon::prelude::*;
use spartan_core::filter::{
    binary_entropy, binary_entropy_grad, conv_filter_preactivation, offset_rescaled_threshold,
    unit_preactivation, FilterKind, FilterSpec,
};
use spartan_core::spec::Shape;

/// Lowest and highest input value (pixels are `u8 / 255`): Offset thresholds live here,
/// and `offset_rescaled_threshold` of the core assumes exactly this range.
pub const INPUT_RANGE: (f32, f32) = (0.0, 1.0);

/// A filtering layer with its parameters and gradients.
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
    /// Gradient with respect to `weight`.
    pub grad_weight: Vec<f32>,
    /// Gradient with respect to `bias`.
    pub grad_bias: Vec<f32>,
    partials: Vec<(Vec<f32>, Vec<f32>)>,
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
        let (gw, gb) = (vec![0.0; weight.len()], vec![0.0; bias.len()]);
        FilterLayer {
            spec,
            input,
            output,
            weight,
            bias,
            grad_weight: gw,
            grad_bias: gb,
            partials: Vec::new(),
        }
    }

    /// Forward pass of `n` samples; pre-activations always go to `pre` (steps need them).
    /// Returns the regulariser's value for this batch.
    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32], pre: &mut [f32]) -> f32 {
        let (in_len, out_len) = (self.input.len(), self.output.len());
        let c = self.input.channels as usize;
        let beta = self.spec.beta as usize;
        let act = self.spec.activation;
        let (weight, bias, kind) = (&self.weight, &self.bias, self.spec.kind);
        batch::chunks(x, in_len, n)
            .zip(batch::chunks_mut(y, out_len, n))
            .zip(batch::chunks_mut(pre, out_len, n))
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|((xc, yc), pc)| {
                for ((xs, ys), ps) in xc
                    .chunks(in_len)
                    .zip(yc.chunks_mut(out_len))
                    .zip(pc.chunks_mut(out_len))
                {
                    match kind {
                        FilterKind::Offset => {
                            for (o, (z, yv)) in ps.iter_mut().zip(ys.iter_mut()).enumerate() {
                                *z = unit_preactivation(1.0, xs[o / beta], bias[o]);
                                *yv = act.forward(*z);
                            }
                        }
                        FilterKind::Conv => {
                            for (p, px) in xs.chunks(c).enumerate() {
                                for k in 0..beta {
                                    let z = conv_filter_preactivation(
                                        |ch| weight[ch * beta + k],
                                        bias[k],
                                        px,
                                    );
                                    ps[p * beta + k] = z;
                                    ys[p * beta + k] = act.forward(z);
                                }
                            }
                        }
                    }
                }
            });
        self.regularizer(y, n)
    }

    /// `sf · mean_batch Σ|y|` (Conv) or `sf · Σ h(B_i)` (Offset).
    pub fn regularizer(&self, y: &[f32], n: usize) -> f32 {
        let sf = self.spec.sf;
        match self.spec.kind {
            FilterKind::Conv => sf * y.iter().map(|v| v.abs()).sum::<f32>() / n.max(1) as f32,
            FilterKind::Offset => {
                sf * self
                    .bias
                    .iter()
                    .map(|&b| binary_entropy(offset_rescaled_threshold(b)))
                    .sum::<f32>()
            }
        }
    }

    /// Backward pass. `gy` (overwritten) is the loss gradient of the output; with
    /// `regularize` the regulariser's gradient is added, through the surrogate for Conv.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        x: &[f32],
        n: usize,
        pre: &[f32],
        y: &[f32],
        gy: &mut [f32],
        gx: Option<&mut [f32]>,
        mode: GradMode,
        regularize: bool,
    ) {
        let (in_len, out_len) = (self.input.len(), self.output.len());
        let c = self.input.channels as usize;
        let beta = self.spec.beta as usize;
        let act = self.spec.activation;
        let (kind, sf) = (self.spec.kind, self.spec.sf);
        let (wl, bl) = (self.weight.len(), self.bias.len());
        self.partials
            .resize(batch::MAX_CHUNKS, (Vec::new(), Vec::new()));
        let weight = &self.weight;
        let gxs = batch::optional_chunks_mut(gx, in_len, n);
        let used = batch::chunk_count(n);
        batch::chunks(x, in_len, n)
            .zip(batch::chunks(pre, out_len, n))
            .zip(batch::chunks(y, out_len, n))
            .zip(batch::chunks_mut(gy, out_len, n))
            .zip(gxs)
            .zip(self.partials.iter_mut())
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|(((((xc, pc), yc), gc), mut gxc), (pw, pb))| {
                pw.clear();
                pw.resize(wl, 0.0);
                pb.clear();
                pb.resize(bl, 0.0);
                for i in 0..xc.len() / in_len {
                    let span = i * out_len..(i + 1) * out_len;
                    let (ys, dz) = (&yc[span.clone()], &mut gc[span.clone()]);
                    if regularize && kind == FilterKind::Conv {
                        // d(sf/n Σ|y|)/dy = sf/n · sign(y)
                        for (g, &v) in dz.iter_mut().zip(ys) {
                            *g += sf / n as f32 * v.signum() * (v != 0.0) as u8 as f32;
                        }
                    }
                    backward_in_place(act, mode, &pc[span], ys, dz);
                    let xs = &xc[i * in_len..(i + 1) * in_len];
                    match kind {
                        FilterKind::Offset => {
                            for (b, g) in pb.iter_mut().zip(dz.iter()) {
                                *b += g;
                            }
                        }
                        FilterKind::Conv => {
                            for (p, px) in xs.chunks(c).enumerate() {
                                for k in 0..beta {
                                    let g = dz[p * beta + k];
                                    pb[k] += g;
                                    for (ch, &xv) in px.iter().enumerate() {
                                        pw[ch * beta + k] += g * xv;
                                    }
                                }
                            }
                        }
                    }
                    if let Some(gx) = gxc.as_deref_mut() {
                        let gxs = &mut gx[i * in_len..(i + 1) * in_len];
                        for (p, gpx) in gxs.chunks_mut(c).enumerate() {
                            for (ch, g) in gpx.iter_mut().enumerate() {
                                *g = (0..beta)
                                    .map(|k| match kind {
                                        FilterKind::Offset => dz[(p * c + ch) * beta + k],
                                        FilterKind::Conv => {
                                            dz[p * beta + k] * weight[ch * beta + k]
                                        }
                                    })
                                    .sum();
                            }
                        }
                    }
                }
            });
        batch::sum_partials(
            &mut self.grad_weight,
            self.partials[..used].iter().map(|p| p.0.as_slice()),
        );
        batch::sum_partials(
            &mut self.grad_bias,
            self.partials[..used].iter().map(|p| p.1.as_slice()),
        );
        if regularize && kind == FilterKind::Offset {
            // d(sf Σ h(B))/db = sf · h'(B) · dB/db, with B = -b.
            for (g, &b) in self.grad_bias.iter_mut().zip(&self.bias) {
                *g -= sf * binary_entropy_grad(offset_rescaled_threshold(b));
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
