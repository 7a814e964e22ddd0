//! Element-wise kernels of the hot path, compiled for AVX-512, AVX2 and the baseline and
//! picked at run time (`multiversion`, a safe API): the crate targets baseline x86-64,
//! where these loops would only get SSE2. Measured: pooling, col2im and ReLU masks were
//! about a third of a training step before this.

use multiversion::multiversion;

/// `v = max(v, 0)` with the core's ReLU semantics (`v > 0 ? v : 0`).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn relu_in_place(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = if *v > 0.0 { *v } else { 0.0 };
    }
}

/// Zeroes the gradient where the ReLU output is not positive.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn relu_mask(grad: &mut [f32], out: &[f32]) {
    for (g, &y) in grad.iter_mut().zip(out) {
        *g = if y > 0.0 { *g } else { 0.0 };
    }
}

/// Adds `src` into `dst` element-wise.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Geometry of one max-pooling layer (NHWC, window = stride = `size`).
#[derive(Clone, Copy, Debug)]
pub struct PoolGeometry {
    /// Input width.
    pub in_width: usize,
    /// Channels.
    pub channels: usize,
    /// Output height.
    pub out_height: usize,
    /// Output width.
    pub out_width: usize,
    /// Window side.
    pub size: usize,
}

/// Max pooling of one sample. Ties keep the first window element (the `>` rule of the
/// core's float path), written branch-free so it vectorises over channels.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn max_pool_sample(xs: &[f32], g: PoolGeometry, ys: &mut [f32]) {
    let c = g.channels;
    for oy in 0..g.out_height {
        for ox in 0..g.out_width {
            let out = &mut ys[(oy * g.out_width + ox) * c..][..c];
            for dy in 0..g.size {
                for dx in 0..g.size {
                    let src = &xs[((oy * g.size + dy) * g.in_width + ox * g.size + dx) * c..][..c];
                    if dy == 0 && dx == 0 {
                        out.copy_from_slice(src);
                    } else {
                        for (o, &v) in out.iter_mut().zip(src) {
                            *o = if v > *o { v } else { *o };
                        }
                    }
                }
            }
        }
    }
}

/// Channels handled per block by [`max_pool_backward_sample`] (stack-sized mask).
const POOL_BLOCK: usize = 64;

/// Routes each output gradient to the first window element equal to the maximum.
/// `gxs` must be zeroed by the caller (elements outside every window stay 0).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn max_pool_backward_sample(
    xs: &[f32],
    ys: &[f32],
    gys: &[f32],
    g: PoolGeometry,
    gxs: &mut [f32],
) {
    let c = g.channels;
    for oy in 0..g.out_height {
        for ox in 0..g.out_width {
            let o = (oy * g.out_width + ox) * c;
            for cb in (0..c).step_by(POOL_BLOCK) {
                let w = POOL_BLOCK.min(c - cb);
                let (m, gy) = (&ys[o + cb..][..w], &gys[o + cb..][..w]);
                let mut taken = [false; POOL_BLOCK];
                let taken = &mut taken[..w];
                for dy in 0..g.size {
                    for dx in 0..g.size {
                        let at = ((oy * g.size + dy) * g.in_width + ox * g.size + dx) * c + cb;
                        let xw = &xs[at..][..w];
                        let dst = &mut gxs[at..][..w];
                        for ch in 0..w {
                            let hit = (xw[ch] == m[ch]) & !taken[ch];
                            dst[ch] = if hit { gy[ch] } else { 0.0 };
                            taken[ch] |= hit;
                        }
                    }
                }
            }
        }
    }
}
