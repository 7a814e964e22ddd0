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

/// Adds `row` to every row of `rows` (a matrix of `row.len()` columns).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn add_rows(rows: &mut [f32], row: &[f32]) {
    for r in rows.chunks_exact_mut(row.len()) {
        for (v, b) in r.iter_mut().zip(row) {
            *v += b;
        }
    }
}

/// `Σ |v|` over `values`, in 16 interleaved partial sums added in a fixed order
/// (deterministic, and vectorised: the sequential sum was 3 % of a candidate's step).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn l1_norm(values: &[f32]) -> f32 {
    let (chunks, rest) = values.as_chunks::<16>();
    let mut acc = [0.0f32; 16];
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v.abs();
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|v| v.abs()).sum::<f32>()
}

/// `grad += scale · sign(y)` where `y` is not zero: the gradient of `scale · Σ|y|`.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn add_scaled_sign(grad: &mut [f32], y: &[f32], scale: f32) {
    for (g, &v) in grad.iter_mut().zip(y) {
        *g += if v > 0.0 {
            scale
        } else if v < 0.0 {
            -scale
        } else {
            0.0
        };
    }
}

/// Calls `f(image_at, cols_at)` for every row of every patch of a `k×k` window over an
/// image of `(h, w, c)`: the `k·c` values at `image_at` in the image are the row that
/// sits at `cols_at` in the patch matrix (`oh·ow × k·k·c`, one patch per output pixel).
#[inline(always)]
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

/// The patch matrix of one image `xs` of `(h, w, c)` (im2col), into `cols`. Rows of a
/// conv after a filter are 12 values: copied as 4-value moves, not one `memmove` call
/// each.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn patches_of(xs: &[f32], dim: (usize, usize, usize), k: usize, cols: &mut [f32]) {
    let row = k * dim.2;
    patch_rows(dim, k, |src, dst| {
        let (d, d1) = cols[dst..dst + row].as_chunks_mut::<4>();
        let (s, s1) = xs[src..src + row].as_chunks::<4>();
        for (d, s) in d.iter_mut().zip(s) {
            *d = *s;
        }
        for (d, s) in d1.iter_mut().zip(s1) {
            *d = *s;
        }
    });
}

/// Adjoint of [`patches_of`]: adds every patch row back onto the image `dx`
/// (overwritten) (col2im).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn add_patches(dcols: &[f32], dim: (usize, usize, usize), k: usize, dx: &mut [f32]) {
    let row = k * dim.2;
    dx.fill(0.0);
    patch_rows(dim, k, |dst, src| {
        for (d, s) in dx[dst..dst + row].iter_mut().zip(&dcols[src..src + row]) {
            *d += s;
        }
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l1_norm_and_its_gradient() {
        let v: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.25).collect();
        let want: f32 = v.iter().map(|x| x.abs()).sum();
        assert!((l1_norm(&v) - want).abs() < 1e-4);
        let mut g = vec![1.0f32; v.len()];
        add_scaled_sign(&mut g, &v, 0.5);
        for (g, x) in g.iter().zip(&v) {
            let want = if *x == 0.0 {
                1.0
            } else {
                1.0 + 0.5 * x.signum()
            };
            assert_eq!(*g, want);
        }
    }
}
