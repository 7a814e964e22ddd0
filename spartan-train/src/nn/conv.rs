//! Valid 2-D convolution, stride 1, NHWC, weights `[k, k, C_in, C_out]`: im2col + GEMM
//! per sample, samples spread over rayon in fixed chunks.

use super::act::{backward_in_place, forward_in_place, GradMode};
use super::batch;
use super::gemm::{matmul, Op, Threads};
use rayon::prelude::*;
use spartan_core::spec::{ConvSpec, Shape};

/// Per-chunk scratch, reused across steps so the hot path does not allocate.
#[derive(Clone, Debug, Default)]
struct Scratch {
    cols: Vec<f32>,
    dcols: Vec<f32>,
    grad_weight: Vec<f32>,
    grad_bias: Vec<f32>,
}

/// A convolution layer with its parameters and gradients.
#[derive(Clone, Debug)]
pub struct ConvLayer {
    /// Configuration.
    pub spec: ConvSpec,
    /// Input shape.
    pub input: Shape,
    /// Output shape.
    pub output: Shape,
    /// `[k·k·C_in, C_out]`, row-major.
    pub weight: Vec<f32>,
    /// `[C_out]`.
    pub bias: Vec<f32>,
    /// Gradient of the loss with respect to `weight` (set by `backward`).
    pub grad_weight: Vec<f32>,
    /// Gradient with respect to `bias`.
    pub grad_bias: Vec<f32>,
    scratch: Vec<Scratch>,
}

/// Copies the `k×k×C` patch under every output pixel into a row of `cols`.
pub fn im2col(x: &[f32], input: Shape, k: usize, output: Shape, cols: &mut [f32]) {
    let (iw, c) = (input.width as usize, input.channels as usize);
    let (oh, ow) = (output.height as usize, output.width as usize);
    let row = k * c;
    let kkc = k * row;
    for oy in 0..oh {
        for ox in 0..ow {
            let dst = &mut cols[(oy * ow + ox) * kkc..(oy * ow + ox + 1) * kkc];
            for ky in 0..k {
                let src = ((oy + ky) * iw + ox) * c;
                dst[ky * row..(ky + 1) * row].copy_from_slice(&x[src..src + row]);
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
    for oy in 0..oh {
        for ox in 0..ow {
            let src = &dcols[(oy * ow + ox) * kkc..(oy * ow + ox + 1) * kkc];
            for ky in 0..k {
                let dst = ((oy + ky) * iw + ox) * c;
                for (d, s) in dx[dst..dst + row]
                    .iter_mut()
                    .zip(&src[ky * row..(ky + 1) * row])
                {
                    *d += s;
                }
            }
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
        let (gw, gb) = (vec![0.0; weight.len()], vec![0.0; bias.len()]);
        ConvLayer {
            spec,
            input,
            output,
            weight,
            bias,
            grad_weight: gw,
            grad_bias: gb,
            scratch: Vec::new(),
        }
    }

    fn kkc(&self) -> usize {
        let k = self.spec.kernel as usize;
        k * k * self.input.channels as usize
    }

    fn ensure_scratch(&mut self, with_backward: bool) {
        let pixels = self.output.height as usize * self.output.width as usize;
        let cols = pixels * self.kkc();
        if self.scratch.len() < batch::MAX_CHUNKS {
            self.scratch.resize(batch::MAX_CHUNKS, Scratch::default());
        }
        for s in &mut self.scratch {
            s.cols.resize(cols, 0.0);
            if with_backward {
                s.dcols.resize(cols, 0.0);
                s.grad_weight.resize(self.weight.len(), 0.0);
                s.grad_bias.resize(self.bias.len(), 0.0);
            }
        }
    }

    /// Forward pass of `n` samples; keeps pre-activations in `pre` when given.
    pub fn forward(&mut self, x: &[f32], n: usize, y: &mut [f32], pre: Option<&mut [f32]>) {
        self.ensure_scratch(false);
        let (in_len, out_len) = (self.input.len(), self.output.len());
        let (input, output, spec) = (self.input, self.output, self.spec);
        let (k, kkc, co) = (spec.kernel as usize, self.kkc(), spec.filters as usize);
        let pixels = output.height as usize * output.width as usize;
        let threads = inner_threads(n);
        let (weight, bias) = (&self.weight, &self.bias);
        let pres = batch::optional_chunks_mut(pre, out_len, n);
        batch::chunks(x, in_len, n)
            .zip(batch::chunks_mut(y, out_len, n))
            .zip(pres)
            .zip(self.scratch.iter_mut())
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|(((xc, yc), mut prec), s)| {
                for (i, (xs, ys)) in xc.chunks(in_len).zip(yc.chunks_mut(out_len)).enumerate() {
                    im2col(xs, input, k, output, &mut s.cols);
                    for px in ys.chunks_mut(co) {
                        px.copy_from_slice(bias);
                    }
                    matmul(
                        ys,
                        &s.cols,
                        Op::N,
                        weight,
                        Op::N,
                        (pixels, kkc, co),
                        true,
                        threads,
                    );
                    let keep = prec
                        .as_deref_mut()
                        .map(|p| &mut p[i * out_len..(i + 1) * out_len]);
                    forward_in_place(spec.activation, ys, keep);
                }
            });
    }

    /// Backward pass: `gy` (overwritten with the pre-activation gradient) is the loss
    /// gradient of the output `y`; sets the parameter gradients and, if asked, `gx`.
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
    ) {
        self.ensure_scratch(true);
        let (in_len, out_len) = (self.input.len(), self.output.len());
        let (input, output, spec) = (self.input, self.output, self.spec);
        let (k, kkc, co) = (spec.kernel as usize, self.kkc(), spec.filters as usize);
        let pixels = output.height as usize * output.width as usize;
        let threads = inner_threads(n);
        let weight = &self.weight;
        let keeps_pre = !pre.is_empty();
        let pre_chunks: Vec<&[f32]> = if keeps_pre {
            batch::chunks(pre, out_len, n).collect()
        } else {
            vec![&[][..]; batch::chunk_count(n)]
        };
        let gxs = batch::optional_chunks_mut(gx, in_len, n);
        let used = batch::chunk_count(n);
        batch::chunks(x, in_len, n)
            .zip(batch::chunks(y, out_len, n))
            .zip(batch::chunks_mut(gy, out_len, n))
            .zip(pre_chunks)
            .zip(gxs)
            .zip(self.scratch.iter_mut())
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|(((((xc, yc), gc), pc), mut gxc), s)| {
                s.grad_weight.fill(0.0);
                s.grad_bias.fill(0.0);
                for i in 0..xc.len() / in_len {
                    let xs = &xc[i * in_len..(i + 1) * in_len];
                    let ys = &yc[i * out_len..(i + 1) * out_len];
                    let dz = &mut gc[i * out_len..(i + 1) * out_len];
                    let ps = if keeps_pre {
                        &pc[i * out_len..(i + 1) * out_len]
                    } else {
                        &[][..]
                    };
                    backward_in_place(spec.activation, mode, ps, ys, dz);
                    for px in dz.chunks(co) {
                        for (b, g) in s.grad_bias.iter_mut().zip(px) {
                            *b += g;
                        }
                    }
                    im2col(xs, input, k, output, &mut s.cols);
                    matmul(
                        &mut s.grad_weight,
                        &s.cols,
                        Op::T,
                        dz,
                        Op::N,
                        (kkc, pixels, co),
                        true,
                        threads,
                    );
                    if let Some(gx) = gxc.as_deref_mut() {
                        matmul(
                            &mut s.dcols,
                            dz,
                            Op::N,
                            weight,
                            Op::T,
                            (pixels, co, kkc),
                            false,
                            threads,
                        );
                        col2im(
                            &s.dcols,
                            input,
                            k,
                            output,
                            &mut gx[i * in_len..(i + 1) * in_len],
                        );
                    }
                }
            });
        batch::sum_partials(
            &mut self.grad_weight,
            self.scratch[..used]
                .iter()
                .map(|s| s.grad_weight.as_slice()),
        );
        batch::sum_partials(
            &mut self.grad_bias,
            self.scratch[..used].iter().map(|s| s.grad_bias.as_slice()),
        );
    }
}

/// A lone sample gets every core inside its products; otherwise chunks run in
/// parallel and each product is sequential.
pub fn inner_threads(n: usize) -> Threads {
    if n == 1 {
        Threads::Rayon(rayon::current_num_threads())
    } else {
        Threads::Seq
    }
}
