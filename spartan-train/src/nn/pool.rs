//! Non-overlapping max pooling (window = stride, floor), NHWC.

use super::kernels::{max_pool_backward_sample, max_pool_sample, PoolGeometry};
use spartan_core::spec::Shape;

fn geometry(input: Shape, output: Shape, size: usize) -> PoolGeometry {
    PoolGeometry {
        in_width: input.width as usize,
        channels: input.channels as usize,
        out_height: output.height as usize,
        out_width: output.width as usize,
        size,
    }
}

/// Forward pass over `n` samples.
pub fn forward(x: &[f32], n: usize, input: Shape, output: Shape, size: usize, y: &mut [f32]) {
    let g = geometry(input, output, size);
    for (xs, ys) in x
        .chunks_exact(input.len())
        .zip(y.chunks_exact_mut(output.len()))
        .take(n)
    {
        max_pool_sample(xs, g, ys);
    }
}

/// Backward pass: each output gradient goes to the first input that holds the window's
/// maximum (the same tie rule as the forward `>` comparison). Overwrites `gx`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    n: usize,
    input: Shape,
    output: Shape,
    size: usize,
    y: &[f32],
    gy: &[f32],
    gx: &mut [f32],
) {
    let g = geometry(input, output, size);
    let (il, ol) = (input.len(), output.len());
    gx[..n * il].fill(0.0);
    let samples = x
        .chunks_exact(il)
        .zip(y.chunks_exact(ol))
        .zip(gy.chunks_exact(ol))
        .zip(gx.chunks_exact_mut(il));
    for (((xs, ys), gys), gxs) in samples.take(n) {
        max_pool_backward_sample(xs, ys, gys, g, gxs);
    }
}
