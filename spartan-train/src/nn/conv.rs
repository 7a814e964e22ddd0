//! Valid 2-D convolution, stride 1, NHWC, weights `[k, k, C_in, C_out]`: im2col + GEMM
//! over a chunk of samples stacked along the rows (single-threaded; the network
//! spreads chunks over cores).

use super::act::{backward_in_place, forward_in_place, GradMode};
use super::gemm::{matmul, Op};
use super::kernels::add_into;
use spartan_core::spec::{ConvSpec, Shape};

/// A convolution layer's configuration and parameters.
#[derive(Clone, Debug)]
pub struct ConvLayer {
    /// Configuration.
    pub spec: ConvSpec,
    /// Input shape.
    pub input: Shape,
    /// Output shape.
    pub output: Shape,
    /// `[k·k·C_in, C_out]`, row-major (the GEMM's right operand as stored).
    pub weight: Vec<f32>,
    /// `[C_out]`.
    pub bias: Vec<f32>,
}

/// Copies the `k×k×C` patch under every output pixel into a row of `cols`.
pub fn im2col(x: &[f32], input: Shape, k: usize, output: Shape, cols: &mut [f32]) {
    let (iw, c) = (input.width as usize, input.channels as usize);
    let (oh, ow) = (output.height as usize, output.width as usize);
    let row = k * c;
    let kkc = k * row;
    for (oy, rows) in cols.chunks_exact_mut(ow * kkc).enumerate().take(oh) {
        for (ox, dst) in rows.chunks_exact_mut(kkc).enumerate() {
            for (ky, d) in dst.chunks_exact_mut(row).enumerate() {
                let src = ((oy + ky) * iw + ox) * c;
                d.copy_from_slice(&x[src..src + row]);
            }
        }
    }
}

/// Adjoint of [`im2col`]: scatters patch gradients back onto the image (overwrites `dx`).
pub fn col2im(dcols: &[f32], input: Shape, k: usize, output: Shape, dx: &mut [f32]) {
    let (iw, c) = (input.width as usize, input.channels as usize);
    let (oh, ow) = (output.height as usize, output.width as usize);
    let row = k * c;
    let kkc = k * row;
    dx.fill(0.0);
    for (oy, rows) in dcols.chunks_exact(ow * kkc).enumerate().take(oh) {
        for (ox, src) in rows.chunks_exact(kkc).enumerate() {
            for (ky, s) in src.chunks_exact(row).enumerate() {
                let dst = ((oy + ky) * iw + ox) * c;
                add_into(&mut dx[dst..dst + row], s);
            }
        }
    }
}

/// Adds each column of `rows` (`m × n`) into `sums` (`n`).
pub fn add_column_sums(rows: &[f32], sums: &mut [f32]) {
    for row in rows.chunks_exact(sums.len()) {
        for (s, v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
}

impl ConvLayer {
    /// A layer with the given parameters.
    pub fn new(
        spec: ConvSpec,
        input: Shape,
        output: Shape,
        weight: Vec<f32>,
        bias: Vec<f32>,
    ) -> Self {
        ConvLayer {
            spec,
            input,
            output,
            weight,
            bias,
        }
    }

    /// Columns per patch: `k·k·C_in`.
    pub fn patch_len(&self) -> usize {
        let k = self.spec.kernel as usize;
        k * k * self.input.channels as usize
    }

    /// Scratch values `forward` needs per sample (the im2col matrix).
    pub fn cols_len(&self) -> usize {
        self.output.height as usize * self.output.width as usize * self.patch_len()
    }

    /// Forward pass of `n` samples. `cols` (`n · cols_len()`) receives the patches,
    /// which `backward` reuses; pre-activations go to `pre` when given.
    pub fn forward(
        &self,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        pre: Option<&mut [f32]>,
        cols: &mut [f32],
    ) {
        let k = self.spec.kernel as usize;
        let (in_len, out_len, cl) = (self.input.len(), self.output.len(), self.cols_len());
        for (xs, c) in x
            .chunks_exact(in_len)
            .zip(cols.chunks_exact_mut(cl))
            .take(n)
        {
            im2col(xs, self.input, k, self.output, c);
        }
        for px in y[..n * out_len].chunks_exact_mut(self.bias.len()) {
            px.copy_from_slice(&self.bias);
        }
        let rows = n * out_len / self.bias.len();
        matmul(
            &mut y[..n * out_len],
            &cols[..n * cl],
            Op::N,
            &self.weight,
            Op::N,
            (rows, self.patch_len(), self.bias.len()),
            true,
        );
        forward_in_place(
            self.spec.activation,
            &mut y[..n * out_len],
            pre.map(|p| &mut p[..n * out_len]),
        );
    }

    /// Backward pass of `n` samples after `forward` (whose `cols` must be passed back).
    /// `gy` (overwritten) is the loss gradient of `y`; parameter gradients are *added*
    /// to `param_grads` when given; `gx`, if given, receives the input gradient (`cols` is clobbered).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        n: usize,
        pre: &[f32],
        y: &[f32],
        gy: &mut [f32],
        gx: Option<&mut [f32]>,
        mode: GradMode,
        param_grads: Option<(&mut [f32], &mut [f32])>,
        cols: &mut [f32],
    ) {
        let (in_len, out_len, cl) = (self.input.len(), self.output.len(), self.cols_len());
        let (co, kkc) = (self.bias.len(), self.patch_len());
        let rows = n * out_len / co;
        let gy = &mut gy[..n * out_len];
        backward_in_place(self.spec.activation, mode, pre, &y[..n * out_len], gy);
        if let Some((gw, gb)) = param_grads {
            add_column_sums(gy, gb);
            matmul(gw, &cols[..n * cl], Op::T, gy, Op::N, (kkc, rows, co), true);
        }
        if let Some(gx) = gx {
            let dcols = &mut cols[..n * cl];
            matmul(
                dcols,
                gy,
                Op::N,
                &self.weight,
                Op::T,
                (rows, co, kkc),
                false,
            );
            let k = self.spec.kernel as usize;
            for (dc, g) in dcols.chunks_exact(cl).zip(gx.chunks_exact_mut(in_len)) {
                col2im(dc, self.input, k, self.output, g);
            }
        }
    }
}
