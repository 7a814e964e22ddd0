//! Element-wise kernels of the hot path, compiled for AVX-512, AVX2 and the baseline and
//! picked at run time (`multiversion`, a safe API): the crate targets baseline x86-64,
//! where these loops would only get SSE2. Measured: pooling, col2im and ReLU masks were
//! about a third of a training step before this.

use multiversion::multiversion;
use spartan_core::activation::heaviside;
use spartan_core::filter::unit_preactivation;

/// `v = max(v, 0)` with the core's ReLU semantics (`v > 0 ? v : 0`).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn relu_in_place(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = if *v > 0.0 { *v } else { 0.0 };
    }
}

/// `v = H(v)`, the core's [`heaviside`] (inlined, so vectorised here): the forward of
/// HSID, HSAT and HSND.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn step_in_place(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = heaviside(*v);
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

/// Pre-activations of a one-channel Conv-Filtering layer: `zs[p·β + k] =
/// unit_preactivation(w[k], xs[p], b[k])` (the core's expression), with `β = w.len()`.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn unit_filter_preactivations(xs: &[f32], w: &[f32], b: &[f32], zs: &mut [f32]) {
    for (&x, z) in xs.iter().zip(zs.chunks_exact_mut(w.len())) {
        for ((z, &w), &b) in z.iter_mut().zip(w).zip(b) {
            *z = unit_preactivation(w, x, b);
        }
    }
}

/// Parameter gradients of a one-channel Conv-Filtering layer from the gradients `dz`
/// of its pre-activations (`β = gb.len()` per pixel): `gb[k] += dz[p][k]` and
/// `gw[k] += dz[p][k]·xs[p]`, pixel after pixel as the plain loop adds them, the
/// sums held in vector lanes four units at a time (in memory, each add waited on the
/// store of the one before: 5 % of a candidate's step).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn add_unit_filter_grads(xs: &[f32], dz: &[f32], gw: &mut [f32], gb: &mut [f32]) {
    let beta = gb.len();
    if beta.is_multiple_of(4) {
        for k in (0..beta).step_by(4) {
            add_unit_filter_grad_lanes::<4>(xs, dz, k, gw, gb);
        }
    } else {
        for k in 0..beta {
            add_unit_filter_grad_lanes::<1>(xs, dz, k, gw, gb);
        }
    }
}

/// [`add_unit_filter_grads`] of units `k..k + L`.
#[inline(always)]
fn add_unit_filter_grad_lanes<const L: usize>(
    xs: &[f32],
    dz: &[f32],
    k: usize,
    gw: &mut [f32],
    gb: &mut [f32],
) {
    let beta = gb.len();
    let (mut sw, mut sb) = ([0.0f32; L], [0.0f32; L]);
    sw.copy_from_slice(&gw[k..k + L]);
    sb.copy_from_slice(&gb[k..k + L]);
    for (&x, d) in xs.iter().zip(dz.chunks_exact(beta)) {
        let (d, _) = d[k..k + L].as_chunks::<L>();
        for ((w, b), &g) in sw.iter_mut().zip(sb.iter_mut()).zip(&d[0]) {
            *b += g;
            *w += g * x;
        }
    }
    gw[k..k + L].copy_from_slice(&sw);
    gb[k..k + L].copy_from_slice(&sb);
}

/// Whether every value is 0 or 1 (a step layer's output).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn all_binary(values: &[f32]) -> bool {
    values
        .iter()
        .fold(true, |ok, &v| ok & ((v == 0.0) | (v == 1.0)))
}

/// Appends to `rows` the patches (rows of [`patches_of`]'s matrix, numbered from
/// `first`) of an image `xs` of `(h, w, c)` that hold a value other than +0; the others
/// are all +0. Found from the image, a bit per pixel in a mask per image row (windows
/// are shifts of it), not by reading every patch: after a filter layer two thirds of
/// them are background.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn patches_with_bits(
    xs: &[f32],
    (h, w, c): (usize, usize, usize),
    k: usize,
    first: usize,
    rows: &mut Vec<usize>,
) {
    let (oh, ow) = (h + 1 - k, w + 1 - k);
    // Per image row, 64 columns a word: first a bit per pixel with a bit set (no
    // branch: they mispredicted), then bit `x` for a window starting at `x` along the
    // row that covers one (the row shifted by 0..k, carrying across words).
    let words = w.div_ceil(64);
    let mut across = vec![0u64; h * words];
    for (line, masks) in xs.chunks_exact(w * c).zip(across.chunks_exact_mut(words)) {
        for (mask, pixels) in masks.iter_mut().zip(line.chunks(64 * c)) {
            *mask = match c {
                4 => pixel_bits::<4>(pixels, c),
                _ => pixel_bits::<1>(pixels, c),
            };
        }
        let mut next = 0;
        for m in masks.iter_mut().rev() {
            let pixels = *m;
            for d in 1..k {
                *m |= (pixels >> d) | (next << (64 - d));
            }
            next = pixels;
        }
    }
    for oy in 0..oh {
        for word in 0..words {
            let mut m = (0..k).fold(0, |m, d| m | across[(oy + d) * words + word]);
            while m != 0 {
                let ox = word * 64 + m.trailing_zeros() as usize;
                if ox < ow {
                    rows.push(first + oy * ow + ox);
                }
                m &= m - 1;
            }
        }
    }
}

/// Bit `x` set when pixel `x` of up to 64 (`c` values each, in blocks of `B`) has a
/// value other than +0.
#[inline(always)]
fn pixel_bits<const B: usize>(pixels: &[f32], c: usize) -> u64 {
    let mut m = 0u64;
    for (x, px) in pixels.chunks_exact(c).enumerate() {
        let (blocks, _) = px.as_chunks::<B>();
        let bits = blocks
            .iter()
            .fold(0, |b, q| q.iter().fold(b, |b, v| b | v.to_bits()));
        m |= u64::from(bits != 0) << x;
    }
    m
}

/// `z = a·w` for a matrix `a` of zeros and ones (`m × kk`; `w` is `kk × n`, `z` is
/// `m × n`, row-major) whose rows not in `rows` (ascending) are all +0: those give +0
/// without a look at `w` (after a filter layer, two thirds of a conv's patches are
/// background). The listed rows are fused multiply-adds in column order from +0, the
/// sums GEMM micro-kernels compute over a short `kk` (faer's for a conv after a
/// 4-unit filter, `kk` = 36, tested against it to the bit), so a sample gives the
/// same values either way. (The build for CPUs without FMA calls a software `fma`:
/// slow, but the same values.)
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn binary_matmul(a: &[f32], w: &[f32], n: usize, rows: &[usize], z: &mut [f32]) {
    z.fill(0.0);
    // Output blocks of a width the compiler knows: the sums stay in registers.
    match n {
        n if n.is_multiple_of(32) => binary_matmul_lanes::<32>(a, w, n, rows, z),
        n if n.is_multiple_of(8) => binary_matmul_lanes::<8>(a, w, n, rows, z),
        _ => binary_matmul_lanes::<1>(a, w, n, rows, z),
    }
}

/// Rows of `a` summed together by [`binary_matmul`]: independent chains of adds that
/// overlap (one row's chain alone waited on the latency of each add).
const BINARY_ROWS: usize = 8;

/// [`binary_matmul`] in blocks of `L` output columns (`L` divides `n`), the rows
/// [`BINARY_ROWS`] at a time through [`binary_rows`].
#[inline(always)]
fn binary_matmul_lanes<const L: usize>(
    a: &[f32],
    w: &[f32],
    n: usize,
    rows: &[usize],
    z: &mut [f32],
) {
    let (groups, rest) = rows.as_chunks::<BINARY_ROWS>();
    for group in groups {
        binary_rows::<L, BINARY_ROWS>(a, w, n, z, *group);
    }
    for &i in rest {
        binary_rows::<L, 1>(a, w, n, z, [i]);
    }
}

/// Rows `rows` of `z = a·w`, each by fused multiply-adds in order over `a`'s columns
/// from +0 (a one adds its row of `w` exactly, a zero adds nothing).
#[inline(always)]
fn binary_rows<const L: usize, const R: usize>(
    a: &[f32],
    w: &[f32],
    n: usize,
    z: &mut [f32],
    rows: [usize; R],
) {
    let kk = w.len() / n;
    let a_rows = rows.map(|i| &a[i * kk..][..kk]);
    for j in (0..n).step_by(L) {
        let mut sums = [[0.0f32; L]; R];
        for (t, w) in w.chunks_exact(n).take(kk).enumerate() {
            let (w, _) = w[j..j + L].as_chunks::<L>();
            let w = w[0];
            for (sum, row) in sums.iter_mut().zip(&a_rows) {
                let v = row[t];
                for (s, &w) in sum.iter_mut().zip(&w) {
                    *s = v.mul_add(w, *s);
                }
            }
        }
        for (&i, sum) in rows.iter().zip(&sums) {
            z[i * n + j..][..L].copy_from_slice(sum);
        }
    }
}

/// Rows of `a` that faer's GEMM sums apart, then adds to the output: its depth block
/// `kc` for a conv's weight-gradient shapes on the dev machine, found by comparing
/// bits. Where faer picks another block, the sums differ from its own in the last
/// bits, and are as deterministic.
const GEMM_DEPTH_BLOCK: usize = 512;

/// `gw += aᵀ·gz` for a matrix `a` of zeros and ones (`m × kk`; `gz` is `m × n`, `gw`
/// is `kk × n`, row-major) whose rows not in `rows` (ascending) are all +0: a conv's
/// weight gradient from its patches, skipping the background. Rows are summed by fused
/// multiply-adds from +0 in blocks of 512 rows, each block's sum then
/// added to `gw`: faer's order, so the values are its values to the bit (tested).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn add_binary_weight_grad(a: &[f32], gz: &[f32], n: usize, rows: &[usize], gw: &mut [f32]) {
    let kk = gw.len() / n;
    // Taps and output columns in blocks of sizes the compiler knows: the sums stay
    // in registers.
    match (kk.is_multiple_of(4), n.is_multiple_of(32)) {
        (true, true) => binary_weight_grad_lanes::<4, 32>(a, gz, n, rows, gw),
        (_, true) => binary_weight_grad_lanes::<1, 32>(a, gz, n, rows, gw),
        _ => binary_weight_grad_lanes::<1, 1>(a, gz, n, rows, gw),
    }
}

/// [`add_binary_weight_grad`] in blocks of `T` taps (rows of `gw`) by `L` columns.
#[inline(always)]
fn binary_weight_grad_lanes<const T: usize, const L: usize>(
    a: &[f32],
    gz: &[f32],
    n: usize,
    rows: &[usize],
    gw: &mut [f32],
) {
    let kk = gw.len() / n;
    let mut rest = rows;
    while let Some(&first) = rest.first() {
        let end = (first / GEMM_DEPTH_BLOCK + 1) * GEMM_DEPTH_BLOCK;
        let (busy, after) = rest.split_at(rest.partition_point(|&r| r < end));
        rest = after;
        for t in (0..kk).step_by(T) {
            for j in (0..n).step_by(L) {
                let mut sums = [[0.0f32; L]; T];
                for &r in busy {
                    let (g, _) = gz[r * n + j..][..L].as_chunks::<L>();
                    let g = g[0];
                    for (sum, &v) in sums.iter_mut().zip(&a[r * kk + t..][..T]) {
                        for (s, &g) in sum.iter_mut().zip(&g) {
                            *s = v.mul_add(g, *s);
                        }
                    }
                }
                for (u, sum) in sums.iter().enumerate() {
                    for (d, s) in gw[(t + u) * n + j..][..L].iter_mut().zip(sum) {
                        *d += s;
                    }
                }
            }
        }
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
        // 4-value moves, like `patches_of`: a patch overlaps the one before it, and
        // the loads then meet stores of the same place and size, which the CPU
        // forwards (col2im of a conv after a filter ran at 0.7 cycles per value).
        let (d, d1) = dx[dst..dst + row].as_chunks_mut::<4>();
        let (s, s1) = dcols[src..src + row].as_chunks::<4>();
        for (d, s) in d.iter_mut().zip(s) {
            for (d, s) in d.iter_mut().zip(s) {
                *d += s;
            }
        }
        for (d, s) in d1.iter_mut().zip(s1) {
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
    use spartan_core::activation::heaviside;

    /// Against the plain per-pixel loops of the layer, bit for bit, for β with and
    /// without whole groups of four.
    #[test]
    fn unit_filter_kernels_match_the_plain_loops() {
        for beta in [4usize, 8, 3, 1] {
            let xs: Vec<f32> = (0..157).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
            let w: Vec<f32> = (0..beta).map(|k| 1.0 + k as f32 * 0.13).collect();
            let b: Vec<f32> = (0..beta).map(|k| -(k as f32 + 1.0) / 5.0).collect();
            let mut zs = vec![0.0; xs.len() * beta];
            unit_filter_preactivations(&xs, &w, &b, &mut zs);
            for (p, &x) in xs.iter().enumerate() {
                for k in 0..beta {
                    assert_eq!(zs[p * beta + k], unit_preactivation(w[k], x, b[k]));
                }
            }
            let dz: Vec<f32> = (0..zs.len())
                .map(|i| ((i * 7919) % 13) as f32 * 0.31 - 2.0)
                .collect();
            let (mut gw, mut gb) = (vec![0.5f32; beta], vec![-0.25f32; beta]);
            let (mut want_w, mut want_b) = (gw.clone(), gb.clone());
            for (&x, d) in xs.iter().zip(dz.chunks_exact(beta)) {
                for k in 0..beta {
                    want_b[k] += d[k];
                    want_w[k] += d[k] * x;
                }
            }
            add_unit_filter_grads(&xs, &dz, &mut gw, &mut gb);
            assert_eq!((gw, gb), (want_w, want_b), "β {beta}");
        }
    }

    /// `len` values, 1 where `one(i)`, else 0.
    fn zeros_and_ones(len: usize, one: impl Fn(usize) -> bool) -> Vec<f32> {
        (0..len).map(|i| if one(i) { 1.0 } else { 0.0 }).collect()
    }

    /// `len` values spread over [-1, 1) in no particular order, both signs.
    fn spread(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 104_729) % 1999) as f32 * 1e-3 - 1.0)
            .collect()
    }

    /// The rows of `a` (`kk` columns) with a value other than +0, read one by one.
    fn rows_with_bits(a: &[f32], kk: usize) -> Vec<usize> {
        let lit = |row: &[f32]| row.iter().any(|v| v.to_bits() != 0);
        a.chunks_exact(kk)
            .enumerate()
            .filter(|(_, r)| lit(r))
            .map(|(i, _)| i)
            .collect()
    }

    /// The patches found from the image are those of the patch matrix with a bit set.
    #[test]
    fn patches_with_bits_are_the_nonzero_patches() {
        for (h, w, c, k) in [(28, 28, 4, 3), (9, 7, 1, 3), (8, 8, 2, 5)] {
            // Ones scattered over the bottom two rows, background above.
            let lit = |i: usize| i / (w * c) >= h - 2 && (i * 7919).is_multiple_of(7);
            let xs: Vec<f32> = (0..h * w * c)
                .map(|i| if lit(i) { 1.0 } else { 0.0 })
                .collect();
            let (oh, ow) = (h + 1 - k, w + 1 - k);
            let mut cols = vec![0.0; oh * ow * k * k * c];
            patches_of(&xs, (h, w, c), k, &mut cols);
            let mut rows = vec![7];
            patches_with_bits(&xs, (h, w, c), k, 3, &mut rows);
            let want: Vec<usize> = rows_with_bits(&cols, k * k * c)
                .iter()
                .map(|r| r + 3)
                .collect();
            assert!(
                !want.is_empty() && want.len() < oh * ow,
                "{h}×{w}×{c}: a mixed test"
            );
            assert_eq!(rows[1..], want[..], "{h}×{w}×{c}, k {k}");
        }
    }

    /// Against faer's product, bit for bit, on the shapes the filter layers give (a
    /// 3×3 conv after β = 4, 1, 2 units, 32 or 8 or 5 outputs), rows of zeros and
    /// weights of both signs included.
    #[test]
    fn binary_matmul_is_the_gemm_bit_for_bit() {
        use crate::nn::gemm::matmul;
        use ndarray::ArrayView2;
        for (m, kk, n) in [(1352, 36, 32), (676, 9, 32), (100, 18, 8), (30, 36, 5)] {
            let a = zeros_and_ones(m * kk, |i| (i / kk) % 7 != 0 && (i * 7919) % 5 == 0);
            let w = spread(kk * n);
            let mut want = ndarray::Array2::<f32>::zeros((m, n));
            let av = ArrayView2::from_shape((m, kk), &a).unwrap();
            let wv = ArrayView2::from_shape((kk, n), &w).unwrap();
            matmul(want.view_mut(), av, wv, false);
            let mut z = vec![f32::NAN; m * n];
            binary_matmul(&a, &w, n, &rows_with_bits(&a, kk), &mut z);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&z), bits(want.as_slice().unwrap()), "{m}×{kk}×{n}");
        }
        assert!(all_binary(&[0.0, 1.0, -0.0, 1.0]));
        assert!(!all_binary(&[0.0, 1.0, 0.5]));
        assert!(!all_binary(&[f32::NAN]));
    }

    /// Against faer's `gw += aᵀ·gz`, bit for bit, on a conv's weight-gradient shapes
    /// (two samples' or one sample's patches after β = 4 or 1 units; 32 or 5 outputs).
    #[test]
    fn binary_weight_grad_is_the_gemm_bit_for_bit() {
        use crate::nn::gemm::matmul;
        use ndarray::ArrayView2;
        for (m, kk, n) in [(1352, 36, 32), (676, 36, 32), (1352, 9, 32), (700, 36, 5)] {
            let a = zeros_and_ones(m * kk, |i| (i / kk) % 3 == 0 && (i * 7919) % 5 <= 1);
            let gz = spread(m * n);
            let start: Vec<f32> = (0..kk * n).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
            let mut want = ndarray::Array2::from_shape_vec((kk, n), start.clone()).unwrap();
            let av = ArrayView2::from_shape((m, kk), &a).unwrap();
            let gv = ArrayView2::from_shape((m, n), &gz).unwrap();
            matmul(want.view_mut(), av.t(), gv, true);
            let mut gw = start;
            add_binary_weight_grad(&a, &gz, n, &rows_with_bits(&a, kk), &mut gw);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&gw), bits(want.as_slice().unwrap()), "{m}×{kk}×{n}");
        }
    }

    /// col2im as the plain scatter of patch values, bit for bit, for rows of whole
    /// and partial 4-value moves.
    #[test]
    fn add_patches_is_the_plain_scatter() {
        for (h, w, c, k) in [(28, 28, 4, 3), (28, 28, 1, 3), (7, 9, 3, 5), (6, 6, 33, 3)] {
            let (oh, ow) = (h + 1 - k, w + 1 - k);
            let dcols: Vec<f32> = (0..oh * ow * k * k * c)
                .map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 187.0)
                .collect();
            let mut want = vec![0.0f32; h * w * c];
            let mut values = dcols.iter();
            for oy in 0..oh {
                for ox in 0..ow {
                    for ky in 0..k {
                        for kx in 0..k {
                            for ch in 0..c {
                                want[((oy + ky) * w + ox + kx) * c + ch] += values.next().unwrap();
                            }
                        }
                    }
                }
            }
            let mut dx = vec![f32::NAN; h * w * c];
            add_patches(&dcols, (h, w, c), k, &mut dx);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&dx), bits(&want), "{h}×{w}×{c}, k {k}");
        }
    }

    #[test]
    fn step_is_the_cores_heaviside() {
        let mut v = vec![
            -1.0f32,
            -0.0,
            0.0,
            f32::MIN_POSITIVE,
            0.5,
            f32::INFINITY,
            f32::NAN,
        ];
        v.extend((0..40).map(|i| i as f32 * 0.1 - 2.0));
        let want: Vec<f32> = v.iter().map(|&z| heaviside(z)).collect();
        step_in_place(&mut v);
        assert_eq!(v, want);
    }

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
