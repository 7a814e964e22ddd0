//! Valid 2-D convolution, stride 1, NHWC, weights `[k, k, C_in, C_out]`: im2col + GEMM
//! over a chunk of samples stacked along the rows (single-threaded; the network
//! spreads chunks over cores). 3×3 convs with whole 2×2 output tiles run forward by
//! Winograd's F(2×2, 3×3) instead ([`winograd`]), 2.25× less GEMM work; their
//! backward pass makes the patch matrix it needs from the input.

use super::affine::{Affine, AffineBackward};
use crate::nn::act::keeps_preactivation;
use crate::nn::gemm::matmul;
use crate::nn::init::Init;
use crate::nn::kernels::{
    add_binary_weight_grad, add_patches, all_binary, binary_matmul, patches_of, patches_with_bits,
};
use crate::nn::layer::{tensor, values, values_mut, Backward, Forward, Layer};
use crate::nn::winograd::{self, Geometry};
use crate::nn::winograd4;
use ndarray::{ArrayD, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, ArrayViewMut4, Axis};
use rand::RngCore;
use spartan_core::spec::{ConvSpec, Shape};

/// How a conv's forward pass runs.
#[derive(Clone, Copy, Debug)]
enum ForwardKind {
    F4(Geometry),
    F2(Geometry),
    Im2col,
}

impl ForwardKind {
    /// Values of the forward weights [`Layer::prepare`] makes (first in its output).
    fn transformed_len(self) -> usize {
        match self {
            ForwardKind::F4(g) => winograd4::transformed_len(g),
            ForwardKind::F2(g) => g.transformed_len(),
            ForwardKind::Im2col => 0,
        }
    }
}

/// A convolution layer: weights `[k, k, C_in, C_out]` (as a `[k·k·C_in, C_out]`
/// matrix, the GEMM's right operand), biases `[C_out]`.
#[derive(Clone, Debug)]
pub struct Conv {
    pub(super) spec: ConvSpec,
    pub(super) input: Shape,
    pub(super) output: Shape,
}

/// Copies the `k×k×C` patch under every output pixel of one image `x` (`h × w × C`)
/// into a row of `cols` (`oh·ow × k·k·C`).
pub fn im2col(x: ArrayView3<'_, f32>, k: usize, cols: ArrayViewMut2<'_, f32>) {
    patches_of(values(&x), x.dim(), k, values_mut(cols));
}

/// Adjoint of [`im2col`]: scatters patch gradients back onto the image (overwrites `dx`).
pub fn col2im(dcols: ArrayView2<'_, f32>, k: usize, dx: ArrayViewMut3<'_, f32>) {
    let dim = dx.dim();
    add_patches(values(&dcols), dim, k, values_mut(dx));
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

    /// The conv's shape, as the Winograd kernels see it.
    fn geometry(&self) -> Geometry {
        Geometry {
            height: self.input.height as usize,
            width: self.input.width as usize,
            c_in: self.input.channels as usize,
            c_out: self.spec.filters as usize,
        }
    }

    /// How the forward pass runs: F(4×4, 3×3) where the output sides allow it, else
    /// F(2×2, 3×3), else im2col.
    fn forward_kind(&self) -> ForwardKind {
        let (g, k) = (self.geometry(), self.spec.kernel as usize);
        if winograd4::applies(g, k) {
            ForwardKind::F4(g)
        } else if g.applies(k) {
            ForwardKind::F2(g)
        } else {
            ForwardKind::Im2col
        }
    }

    /// The Winograd geometry of the gradients (F(2×2, 3×3)), when they run that way.
    fn winograd(&self) -> Option<Geometry> {
        let g = self.geometry();
        g.applies(self.spec.kernel as usize).then_some(g)
    }

    /// The Winograd geometry, when this conv's input gradient runs that way.
    fn winograd_input_grad(&self) -> Option<Geometry> {
        let g = self.geometry();
        (self.spec.kernel == 3 && g.input_grad().is_some()).then_some(g)
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

    /// Splits the scratch of `n` samples into the pre-activations and the rest.
    fn split_scratch<'s>(
        &self,
        n: usize,
        scratch: &'s mut [f32],
    ) -> (&'s mut [f32], &'s mut [f32]) {
        scratch.split_at_mut(n * self.pre_len())
    }

    /// The patch matrix of `n` samples, at the start of `rest`.
    fn cols<'s>(&self, n: usize, rest: &'s mut [f32]) -> ArrayViewMut2<'s, f32> {
        let dim = (n * self.pixels(), self.patch_len());
        ArrayViewMut2::from_shape(dim, &mut rest[..dim.0 * dim.1])
            .expect("scratch sized by scratch_len")
    }
}

impl Conv {
    /// The patch matrix of a batch, one image's patches after another.
    fn patches(&self, x: ndarray::ArrayView4<'_, f32>, mut cols: ArrayViewMut2<'_, f32>) {
        let k = self.spec.kernel as usize;
        for (xs, c) in x
            .outer_iter()
            .zip(cols.axis_chunks_iter_mut(Axis(0), self.pixels()))
        {
            im2col(xs, k, c);
        }
    }
}

impl Conv {
    /// `z = patches·W` over a batch: by [`binary_matmul`] when
    /// [`sparse_patches`](Self::sparse_patches) finds it pays, else by GEMM. Both give
    /// the same sums.
    fn product(
        &self,
        x: ndarray::ArrayView4<'_, f32>,
        cols: ArrayView2<'_, f32>,
        w: ArrayView2<'_, f32>,
        z: ArrayViewMut2<'_, f32>,
    ) {
        match self.sparse_patches(x) {
            Some(rows) => binary_matmul(values(&cols), values(&w), w.ncols(), &rows, values_mut(z)),
            None => matmul(z, cols, w, false),
        }
    }

    /// For samples `x` of zeros and ones only (after a filter layer), the rows of
    /// their patch matrix that hold a one, when at most two fifths do (MNIST after a
    /// filter: a third): the binary kernels then skip the others. Denser patches
    /// (uniform noise, as `spartan bench train` feeds) gain nothing from the skip and
    /// go to GEMM, as does any other input (`None`).
    fn sparse_patches(&self, x: ndarray::ArrayView4<'_, f32>) -> Option<Vec<usize>> {
        if !all_binary(values(&x)) {
            return None;
        }
        let (k, pixels) = (self.spec.kernel as usize, self.pixels());
        let mut rows = Vec::with_capacity(x.dim().0 * pixels);
        for (i, xs) in x.outer_iter().enumerate() {
            patches_with_bits(values(&xs), xs.dim(), k, i * pixels, &mut rows);
        }
        (rows.len() * 5 <= x.dim().0 * pixels * 2).then_some(rows)
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

    /// Winograd-transformed weights: for the forward pass, then (when asked) for the
    /// input gradient.
    fn prepare(&self, p: &[ArrayD<f32>], input_grad: bool, out: &mut Vec<f32>) {
        let w = values(&p[0].view());
        out.clear();
        match self.forward_kind() {
            ForwardKind::F4(g) => winograd4::transform_weights(w, g, out),
            ForwardKind::F2(g) => winograd::transform_weights(w, g, out),
            ForwardKind::Im2col => {}
        }
        if let (true, Some(g)) = (input_grad, self.winograd_input_grad()) {
            winograd::transform_input_grad_weights(w, g, out);
        }
    }

    fn scratch_len(&self) -> usize {
        let forward = match self.forward_kind() {
            ForwardKind::F4(g) => winograd4::scratch_per_sample(g),
            ForwardKind::F2(g) => g.scratch_per_sample(),
            ForwardKind::Im2col => 0,
        };
        // The weight gradient runs on F(2×2, 3×3) after either Winograd forward.
        let weight_grad = self
            .winograd()
            .map_or(0, Geometry::weight_grad_scratch_per_sample);
        let input_grad = self
            .winograd_input_grad()
            .map_or(0, Geometry::input_grad_scratch_per_sample);
        let patches = self.pixels() * self.patch_len();
        self.pre_len() + patches.max(forward).max(weight_grad).max(input_grad)
    }

    /// The patches stay in the scratch for `backward` (im2col path); pre-activations
    /// too for steps.
    fn forward(&self, p: &[ArrayD<f32>], pass: Forward<'_>) {
        let Forward {
            x,
            y,
            scratch,
            prepared,
        } = pass;
        let n = x.dim().0;
        let b = values(&p[1].view());
        let (pre, rest) = scratch.split_at_mut(n * self.pre_len());
        let kind = self.forward_kind();
        if let ForwardKind::Im2col = kind {
            let mut cols = self.cols(n, rest);
            self.patches(x, cols.view_mut());
            let affine = self.affine(p);
            let product = |z: ArrayViewMut2<'_, f32>| self.product(x, cols.view(), affine.w, z);
            return affine.forward_with(rows_of(y), pre, product);
        }
        let (xs, u, ys) = (
            values(&x),
            &prepared[..kind.transformed_len()],
            values_mut(y),
        );
        match kind {
            ForwardKind::F4(g) => winograd4::conv3x3(xs, n, g, u, b, ys, rest),
            ForwardKind::F2(g) => winograd::conv3x3(xs, n, g, u, Some(b), ys, rest),
            ForwardKind::Im2col => unreachable!("handled above"),
        }
        self.affine(p).activate(ys, pre);
    }

    /// Winograd convs compute every gradient in the Winograd form; the others through
    /// the patch matrix (the input gradient clobbering it).
    fn backward(&self, p: &[ArrayD<f32>], b: Backward<'_>) {
        let n = b.x.dim().0;
        let (pre, rest) = self.split_scratch(n, b.scratch);
        let affine = self.affine(p);
        let w = values(&p[0].view());
        let forward_winograd = self.winograd();
        // Sparse patches of zeros and ones (after a filter layer): their weight
        // gradient skips the background patches (the same values as the GEMM's).
        let sparse = match (forward_winograd, &b.grads) {
            (None, Some(_)) => self.sparse_patches(b.x.view()),
            _ => None,
        };
        let cols = self.cols(n, &mut *rest);
        let pass = AffineBackward {
            a: (forward_winograd.is_none() && sparse.is_none()).then(|| cols.view()),
            pre,
            y: values(&b.y),
            gy: rows_of(b.gy),
            mode: b.mode,
        };
        let mut grads = b.grads;
        let gz = affine.backward(pass, grads.as_deref_mut());
        if let Some(grads) = grads {
            let (dw, gz) = (&mut grads[..w.len()], values(&gz.view()));
            if let Some(g) = forward_winograd {
                winograd::conv3x3_weight_grad(values(&b.x), gz, n, g, dw, rest);
            } else if let Some(rows) = sparse {
                add_binary_weight_grad(values(&cols.view()), gz, affine.w.ncols(), &rows, dw);
            }
        }
        let Some(mut gx) = b.gx else { return };
        if let Some(g) = self.winograd_input_grad() {
            // After the forward pass's transformed weights, when it has them.
            let u_back = &b.prepared[self.forward_kind().transformed_len()..];
            winograd::conv3x3_input_grad(values(&gz.view()), n, g, u_back, values_mut(gx), rest);
            return;
        }
        let mut cols = self.cols(n, rest);
        affine.input_grad(gz.view(), cols.view_mut());
        let k = self.spec.kernel as usize;
        for (dc, g) in cols
            .axis_chunks_iter(Axis(0), self.pixels())
            .zip(gx.outer_iter_mut())
        {
            col2im(dc, k, g);
        }
    }
}
