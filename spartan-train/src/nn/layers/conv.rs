//! Valid 2-D convolution, stride 1, NHWC, weights `[k, k, C_in, C_out]`: im2col + GEMM
//! over a chunk of samples stacked along the rows (single-threaded; the network
//! spreads chunks over cores).

use super::affine::{Affine, AffineBackward};
use crate::nn::act::keeps_preactivation;
use crate::nn::init::Init;
use crate::nn::kernels::add_into;
use crate::nn::layer::{tensor, values, values_mut, Backward, Forward, Layer};
use ndarray::{ArrayD, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, ArrayViewMut4, Axis};
use rand::RngCore;
use spartan_core::spec::{ConvSpec, Shape};

/// A convolution layer: weights `[k, k, C_in, C_out]` (as a `[k·k·C_in, C_out]`
/// matrix, the GEMM's right operand), biases `[C_out]`.
#[derive(Clone, Debug)]
pub struct Conv {
    pub(super) spec: ConvSpec,
    pub(super) input: Shape,
    pub(super) output: Shape,
}

/// Calls `f(image_at, cols_at)` for every row of every patch of a `k×k` window over an
/// image of `(h, w, c)`: the `k·c` values at `image_at` in the image are the row that
/// sits at `cols_at` in the patch matrix (`oh·ow × k·k·c`, one patch per output pixel).
fn patch_rows((h, w, c): (usize, usize, usize), k: usize, mut f: impl FnMut(usize, usize)) {
    let row = k * c;
    let mut at = 0;
    for oy in 0..=h - k {
        for ox in 0..=w - k {
            for ky in 0..k {
                f(((oy + ky) * w + ox) * c, at);
                at += row;
            }
        }
    }
}

/// Copies the `k×k×C` patch under every output pixel of one image `x` (`h × w × C`)
/// into a row of `cols` (`oh·ow × k·k·C`).
pub fn im2col(x: ArrayView3<'_, f32>, k: usize, cols: ArrayViewMut2<'_, f32>) {
    let row = k * x.dim().2;
    let (xs, cols) = (values(&x), values_mut(cols));
    patch_rows(x.dim(), k, |src, dst| {
        cols[dst..dst + row].copy_from_slice(&xs[src..src + row]);
    });
}

/// Adjoint of [`im2col`]: scatters patch gradients back onto the image (overwrites `dx`).
pub fn col2im(dcols: ArrayView2<'_, f32>, k: usize, dx: ArrayViewMut3<'_, f32>) {
    let (dim, row) = (dx.dim(), k * dx.dim().2);
    let (dcols, dx) = (values(&dcols), values_mut(dx));
    dx.fill(0.0);
    patch_rows(dim, k, |dst, src| {
        add_into(&mut dx[dst..dst + row], &dcols[src..src + row]);
    });
}

impl Conv {
    /// Columns per patch: `k·k·C_in`.
    fn patch_len(&self) -> usize {
        let k = self.spec.kernel as usize;
        k * k * self.input.channels as usize
    }

    /// Output pixels per sample.
    fn pixels(&self) -> usize {
        self.output.height as usize * self.output.width as usize
    }

    /// Pre-activations kept per sample (steps only: ReLU needs just its output).
    fn pre_len(&self) -> usize {
        if keeps_preactivation(self.spec.activation) {
            self.output.len()
        } else {
            0
        }
    }

    /// `y = f(patches·W + b)`, the weights as the GEMM's `[k·k·C_in, C_out]` matrix.
    fn affine<'p>(&self, p: &'p [ArrayD<f32>]) -> Affine<'p> {
        let (kkc, co) = (self.patch_len(), self.spec.filters as usize);
        Affine {
            w: ArrayView2::from_shape((kkc, co), values(&p[0].view())).expect("weight shape"),
            b: &p[1],
            act: self.spec.activation,
        }
    }

    /// Splits the scratch into the pre-activations and the patch matrix of `n` samples.
    fn split_scratch<'s>(
        &self,
        n: usize,
        scratch: &'s mut [f32],
    ) -> (&'s mut [f32], ArrayViewMut2<'s, f32>) {
        let (pre, cols) = scratch.split_at_mut(n * self.pre_len());
        let dim = (n * self.pixels(), self.patch_len());
        let cols = ArrayViewMut2::from_shape(dim, &mut cols[..dim.0 * dim.1])
            .expect("scratch sized by scratch_len");
        (pre, cols)
    }
}

/// An `n × h × w × c` batch viewed as the GEMM's `[n·h·w, c]` matrix.
fn rows_of(y: ArrayViewMut4<'_, f32>) -> ArrayViewMut2<'_, f32> {
    let (n, h, w, c) = y.dim();
    y.into_shape_with_order((n * h * w, c))
        .expect("layer views are in standard layout")
}

impl Layer for Conv {
    fn init(&self, init: Init, rng: &mut dyn RngCore) -> Vec<ArrayD<f32>> {
        let k = self.spec.kernel as usize;
        let (ci, co) = (self.input.channels as usize, self.spec.filters as usize);
        let fans = (k * k * ci, k * k * co);
        let weight = init.sample(self.spec.activation, rng, k * k * ci * co, fans);
        vec![tensor(&[k, k, ci, co], weight), ArrayD::zeros(vec![co])]
    }

    fn scratch_len(&self) -> usize {
        self.pre_len() + self.pixels() * self.patch_len()
    }

    /// The patches stay in the scratch for `backward`; pre-activations too for steps.
    fn forward(&self, p: &[ArrayD<f32>], Forward { x, y, scratch }: Forward<'_>) {
        let k = self.spec.kernel as usize;
        let (pre, mut cols) = self.split_scratch(x.dim().0, scratch);
        for (xs, c) in x
            .outer_iter()
            .zip(cols.axis_chunks_iter_mut(Axis(0), self.pixels()))
        {
            im2col(xs, k, c);
        }
        self.affine(p).forward(cols.view(), rows_of(y), pre);
    }

    /// Writes the input gradient through the patch matrix (clobbering it).
    fn backward(&self, p: &[ArrayD<f32>], b: Backward<'_>) {
        let k = self.spec.kernel as usize;
        let (pre, mut cols) = self.split_scratch(b.x.dim().0, b.scratch);
        let affine = self.affine(p);
        let pass = AffineBackward {
            a: cols.view(),
            pre,
            y: values(&b.y),
            gy: rows_of(b.gy),
            mode: b.mode,
        };
        let gz = affine.backward(pass, b.grads);
        if let Some(mut gx) = b.gx {
            affine.input_grad(gz.view(), cols.view_mut());
            for (dc, g) in cols
                .axis_chunks_iter(Axis(0), self.pixels())
                .zip(gx.outer_iter_mut())
            {
                col2im(dc, k, g);
            }
        }
    }
}
