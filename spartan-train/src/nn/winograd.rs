//! 3×3 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, *Fast
//! Algorithms for Convolutional Neural Networks*, 2016): a 4×4 input tile gives a 2×2
//! output tile with 16 multiplies per (input, output) channel pair instead of 36, so
//! the GEMM work of a 3×3 conv falls 2.25×. That GEMM work is most of a training step
//! and of batch inference, and already ran near the FMA limit as im2col + GEMM.
//!
//! With `Bᵀ`, `G`, `Aᵀ` the F(2, 3) matrices, a tile's output is
//! `Y = Aᵀ [Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B)] A`: the input tiles `V = Bᵀ d B` and the
//! weights `U = G g Gᵀ` are transformed once, then for each of the 16 tile positions
//! `ξ` one GEMM `M_ξ = V_ξ · U_ξ` (tiles × C_in by C_in × C_out) sums over channels.
//! The transforms are vectorised over channels (NHWC keeps them contiguous).
//!
//! The result equals the direct convolution up to rounding (the transforms add and
//! subtract values, and `G` halves them); it is deterministic, and the same for any
//! number of threads.

use super::gemm::matmul;
use multiversion::multiversion;
use ndarray::{ArrayView2, ArrayViewMut2};
use std::ops::Range;

/// Values of a transformed tile (4×4).
const XI: usize = 16;

/// Tiles transformed and multiplied at a time: the block's `V` and `M` (16 values per
/// tile and channel) stay in L2.
const BLOCK_TILES: usize = 96;

/// Channels (in and out) below which the transforms and thin GEMMs cost more than the
/// multiplications they save (measured: a 32→4 input-gradient conv ran slower).
const MIN_CHANNELS: usize = 8;

/// Shape of a valid 3×3 convolution, stride 1, NHWC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
}

impl Geometry {
    /// Whether a conv of kernel `k` runs this way: 3×3, even output sides (whole
    /// 2×2 tiles), and enough input and output channels to pay for the transforms.
    pub fn applies(self, k: usize) -> bool {
        k == 3
            && self.height >= 4
            && self.width >= 4
            && self.height.is_multiple_of(2)
            && self.width.is_multiple_of(2)
            && self.c_in >= MIN_CHANNELS
            && self.c_out >= MIN_CHANNELS
    }

    /// The geometry of the conv that gives this conv's input gradient (its output
    /// gradient padded by 2, channels swapped), when that runs this way too.
    pub fn input_grad(self) -> Option<Geometry> {
        let back = Geometry {
            height: self.height + 2,
            width: self.width + 2,
            c_in: self.c_out,
            c_out: self.c_in,
        };
        back.applies(3).then_some(back)
    }

    /// Values of the weights after [`transform_weights`].
    pub fn transformed_len(self) -> usize {
        XI * self.c_in * self.c_out
    }

    /// Scratch values per sample [`conv3x3_weight_grad`] needs.
    pub fn weight_grad_scratch_per_sample(self) -> usize {
        let weights = (XI + 12) * self.c_in * self.c_out;
        weights + self.scratch_per_sample() + 4 * (self.width - 2) * self.c_out
    }

    /// Scratch values per sample [`conv3x3_input_grad`] needs (0 when it does not apply).
    pub fn input_grad_scratch_per_sample(self) -> usize {
        self.input_grad().map_or(0, |back| {
            back.height * back.width * back.c_in + back.scratch_per_sample()
        })
    }

    fn tiles_x(self) -> usize {
        (self.width - 2) / 2
    }

    fn tiles_per_sample(self) -> usize {
        (self.height - 2) / 2 * self.tiles_x()
    }

    /// Scratch values per sample [`conv3x3`] needs.
    pub fn scratch_per_sample(self) -> usize {
        let rows = 4 * self.width * self.c_in + self.c_out;
        rows + XI * self.tiles_per_sample() * (self.c_in + self.c_out)
    }
}

/// Appends to `out` the weights `w` (`[3][3][c_in][c_out]`) as [`conv3x3`] takes
/// them: `U = G g Gᵀ` for the kernel `g` of every channel pair, `[16][c_in][c_out]`.
/// Done once per pass and shared by every chunk of samples.
pub fn transform_weights(w: &[f32], g: Geometry, out: &mut Vec<f32>) {
    let pair = g.c_in * g.c_out;
    let start = out.len();
    // U, then room for the intermediate `G g`, dropped at the end.
    out.resize(start + (XI + 12) * pair, 0.0);
    let (u, gg) = out[start..].split_at_mut(XI * pair);
    transform_into(&w[..9 * pair], pair, gg, u);
    out.truncate(start + XI * pair);
}

/// Appends to `out` the weights `w` as [`conv3x3_input_grad`] takes them: turned by
/// 180° with their channels swapped (`[3][3][c_out][c_in]`), then transformed like
/// [`transform_weights`].
pub fn transform_input_grad_weights(w: &[f32], g: Geometry, out: &mut Vec<f32>) {
    let (ci, co) = (g.c_in, g.c_out);
    let mut turned = vec![0.0f32; 9 * ci * co];
    for (k, tap) in turned.chunks_exact_mut(ci * co).enumerate() {
        let src = &w[(8 - k) * ci * co..][..ci * co];
        for (c, row) in src.chunks_exact(co).enumerate() {
            for (o, &v) in row.iter().enumerate() {
                tap[o * ci + c] = v;
            }
        }
    }
    let back = Geometry {
        c_in: co,
        c_out: ci,
        ..g
    };
    transform_weights(&turned, back, out);
}

/// `u[ξ][c_in][c_out] = (G g Gᵀ)[ξ]` for the 3×3 kernel `g` of every channel pair of
/// `w` (`[3][3][c_in][c_out]`). `gg` holds `12 · c_in · c_out` values.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn transform_into(w: &[f32], pair: usize, gg: &mut [f32], u: &mut [f32]) {
    // `G h` for three rows h0, h1, h2 (each a slice of channel pairs) into four rows.
    #[inline(always)]
    fn g_rows(h: [&[f32]; 3], out: &mut [f32], pair: usize, row_stride: usize) {
        let (o0, rest) = out.split_at_mut(row_stride);
        let (o1, rest) = rest.split_at_mut(row_stride);
        let (o2, o3) = rest.split_at_mut(row_stride);
        o0[..pair].copy_from_slice(h[0]);
        o3[..pair].copy_from_slice(h[2]);
        for (((a, b), (p, q)), r) in o1[..pair]
            .iter_mut()
            .zip(&mut o2[..pair])
            .zip(h[0].iter().zip(h[1]))
            .zip(h[2])
        {
            *a = 0.5 * (p + q + r);
            *b = 0.5 * (p - q + r);
        }
    }
    let tap = |k: usize| &w[k * pair..][..pair];
    // Rows: `gg[r][kx] = (G g)[r][kx]`, 4 × 3 slices of pairs.
    for kx in 0..3 {
        g_rows(
            [tap(kx), tap(3 + kx), tap(6 + kx)],
            &mut gg[kx * pair..],
            pair,
            3 * pair,
        );
    }
    // Columns: `u[r][col] = ((G g) Gᵀ)[r][col]`.
    for r in 0..4 {
        let h = |kx: usize| &gg[(3 * r + kx) * pair..][..pair];
        g_rows([h(0), h(1), h(2)], &mut u[4 * r * pair..], pair, pair);
    }
}

/// Channels per vector: a 16-lane AVX-512 register of f32. The per-tile kernels take
/// channels in groups of this many as fixed-size arrays, which LLVM turns into single
/// vector instructions (loops over a run-time count of 32 channels compiled to
/// remainder and gather code that cost more than the GEMMs).
const LANES: usize = 16;

/// `o = a − b`, element by element (long rows: plain loops vectorise well).
#[inline(always)]
fn sub(o: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
        *o = a - b;
    }
}

/// `o = a + b`, element by element.
#[inline(always)]
fn add(o: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
        *o = a + b;
    }
}

/// The `L`-channel groups of four slices of one length (and what is left of each).
macro_rules! groups {
    ($($s:expr),+) => { ($($s.as_chunks::<LANES>()),+) };
}

/// The columns of `B` for every channel: `(p0 − p2, p1 + p2, p2 − p1, p1 − p3)` into
/// `o0..o3` (slices of one length).
#[inline(always)]
fn b_columns([p0, p1, p2, p3]: [&[f32]; 4], [o0, o1, o2, o3]: [&mut [f32]; 4]) {
    let ((a, a1), (b, b1), (c, c1), (d, d1)) = groups!(p0, p1, p2, p3);
    let ((w, w1), (x, x1), (y, y1), (z, z1)) = (
        o0.as_chunks_mut::<LANES>(),
        o1.as_chunks_mut::<LANES>(),
        o2.as_chunks_mut::<LANES>(),
        o3.as_chunks_mut::<LANES>(),
    );
    let inputs = a.iter().zip(b).zip(c.iter().zip(d));
    let outputs = w.iter_mut().zip(x).zip(y.iter_mut().zip(z));
    for (((a, b), (c, d)), ((w, x), (y, z))) in inputs.zip(outputs) {
        // Through locals, which cannot alias: one vector instruction each.
        let (a, b, c, d) = (*a, *b, *c, *d);
        let mut o = [[0.0f32; LANES]; 4];
        for l in 0..LANES {
            o[0][l] = a[l] - c[l];
            o[1][l] = b[l] + c[l];
            o[2][l] = c[l] - b[l];
            o[3][l] = b[l] - d[l];
        }
        (*w, *x, *y, *z) = (o[0], o[1], o[2], o[3]);
    }
    let inputs = a1.iter().zip(b1).zip(c1.iter().zip(d1));
    let outputs = w1.iter_mut().zip(x1).zip(y1.iter_mut().zip(z1));
    for (((a, b), (c, d)), ((w, x), (y, z))) in inputs.zip(outputs) {
        (*w, *x, *y, *z) = (a - c, b + c, c - b, b - d);
    }
}

/// The rows of `Aᵀ` for every channel: `(a + b + c + z, b − c − d + z)` into `o`, `p`.
#[inline(always)]
fn a_rows([p0, p1, p2, p3]: [&[f32]; 4], z: &[f32], o: &mut [f32], p: &mut [f32]) {
    let ((a, a1), (b, b1), (c, c1), (d, d1), (z, z1)) = groups!(p0, p1, p2, p3, z);
    let ((o, o1), (p, p1)) = (o.as_chunks_mut::<LANES>(), p.as_chunks_mut::<LANES>());
    let inputs = a.iter().zip(b).zip(c.iter().zip(d)).zip(z);
    for ((o, p), (((a, b), (c, d)), z)) in o.iter_mut().zip(p).zip(inputs) {
        let (a, b, c, d, z) = (*a, *b, *c, *d, *z);
        let (mut r, mut s) = ([0.0f32; LANES], [0.0f32; LANES]);
        for l in 0..LANES {
            r[l] = a[l] + b[l] + c[l] + z[l];
            s[l] = b[l] - c[l] - d[l] + z[l];
        }
        (*o, *p) = (r, s);
    }
    let inputs = a1.iter().zip(b1).zip(c1.iter().zip(d1)).zip(z1);
    for ((o, p), (((a, b), (c, d)), z)) in o1.iter_mut().zip(p1).zip(inputs) {
        (*o, *p) = (a + b + c + z, b - c - d + z);
    }
}

/// Four consecutive rows of `m` (`stride` apart) from row `first`, each cut to
/// `[at..at + len]`.
fn four_rows(
    m: &mut [f32],
    first: usize,
    stride: usize,
    (at, len): (usize, usize),
) -> [&mut [f32]; 4] {
    let mut rows = m[first * stride..]
        .chunks_mut(stride)
        .map(|r| &mut r[at..at + len]);
    let mut next = || rows.next().expect("four rows");
    [next(), next(), next(), next()]
}

/// `V = Bᵀ d B` of every tile of one tile row: `x` holds the 4 input rows of the tiles
/// (from their first pixel), `t` 4 rows of scratch, and the tile `j`'s values go to
/// `v[ξ · stride + j · c_in ..]`.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn input_row(x: &[f32], g: Geometry, t: &mut [f32], v: &mut [f32], stride: usize) {
    let (c, row) = (g.c_in, g.width * g.c_in);
    let r = |k: usize| &x[k * row..][..row];
    // t = Bᵀ d along the rows: d0 − d2, d1 + d2, d2 − d1, d1 − d3.
    let (t0, rest) = t.split_at_mut(row);
    let (t1, rest) = rest.split_at_mut(row);
    let (t2, t3) = rest.split_at_mut(row);
    sub(t0, r(0), r(2));
    add(t1, r(1), r(2));
    sub(t2, r(2), r(1));
    sub(t3, r(1), r(3));
    // V = t B along the columns of each tile: tile j reads pixels 2j .. 2j + 3.
    let tiles = g.tiles_x();
    for (k, t) in [&*t0, &*t1, &*t2, &*t3].into_iter().enumerate() {
        let [o0, o1, o2, o3] = four_rows(v, 4 * k, stride, (0, tiles * c));
        let pairs = t.chunks_exact(2 * c).zip(t[2 * c..].chunks_exact(2 * c));
        let outs = o0.chunks_exact_mut(c).zip(o1.chunks_exact_mut(c));
        let outs = outs.zip(o2.chunks_exact_mut(c).zip(o3.chunks_exact_mut(c)));
        for ((here, next), ((o0, o1), (o2, o3))) in pairs.zip(outs) {
            let ((p0, p1), (p2, p3)) = (here.split_at(c), next.split_at(c));
            b_columns([p0, p1, p2, p3], [o0, o1, o2, o3]);
        }
    }
}

/// `Aᵀ M` of a block, in place: for each column `q` of the tiles, row `q` becomes
/// `m_q + m_{4+q} + m_{8+q}` and row `12 + q` becomes `m_{4+q} − m_{8+q} − m_{12+q}`
/// (ξ rows `stride` apart, the first `len` values of each). Whole rows at once: long
/// loops.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn a_transpose_rows(m: &mut [f32], stride: usize, len: usize) {
    for q in 0..4 {
        let mut rows = m
            .chunks_mut(stride)
            .skip(q)
            .step_by(4)
            .map(|r| &mut r[..len]);
        let mut next = || rows.next().expect("four rows");
        let (a, b, c, d) = (next(), next(), next(), next());
        for (((a, b), c), d) in a.iter_mut().zip(&*b).zip(&*c).zip(d.iter_mut()) {
            (*a, *d) = (*a + b + c, b - c - *d);
        }
    }
}

/// `Y = s A + b` of one tile row: `s` the four rows of `Aᵀ M` for one output row (tile
/// `j` at `j · c`), its outputs to the pixel pairs `2j, 2j + 1` of `y` (one row).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn output_row([s0, s1, s2, s3]: [&[f32]; 4], bias: &[f32], c: usize, y: &mut [f32]) {
    let ins = s0.chunks_exact(c).zip(s1.chunks_exact(c));
    let ins = ins.zip(s2.chunks_exact(c).zip(s3.chunks_exact(c)));
    for (((a, b), (e, d)), pair) in ins.zip(y.chunks_exact_mut(2 * c)) {
        let (left, right) = pair.split_at_mut(c);
        a_rows([a, b, e, d], bias, left, right);
    }
}

/// The columns of `A` for every channel: `(p0, p0 + p1, p0 − p1, −p1)` into `o0..o3`
/// (the adjoint of the output transform's columns).
#[inline(always)]
fn a_columns([p0, p1]: [&[f32]; 2], [o0, o1, o2, o3]: [&mut [f32]; 4]) {
    let ((a, a1), (b, b1)) = groups!(p0, p1);
    let ((w, w1), (x, x1), (y, y1), (z, z1)) = (
        o0.as_chunks_mut::<LANES>(),
        o1.as_chunks_mut::<LANES>(),
        o2.as_chunks_mut::<LANES>(),
        o3.as_chunks_mut::<LANES>(),
    );
    let outputs = w.iter_mut().zip(x).zip(y.iter_mut().zip(z));
    for ((a, b), ((w, x), (y, z))) in a.iter().zip(b).zip(outputs) {
        let (a, b) = (*a, *b);
        let mut o = [[0.0f32; LANES]; 4];
        for l in 0..LANES {
            o[0][l] = a[l];
            o[1][l] = a[l] + b[l];
            o[2][l] = a[l] - b[l];
            o[3][l] = -b[l];
        }
        (*w, *x, *y, *z) = (o[0], o[1], o[2], o[3]);
    }
    let outputs = w1.iter_mut().zip(x1).zip(y1.iter_mut().zip(z1));
    for ((a, b), ((w, x), (y, z))) in a1.iter().zip(b1).zip(outputs) {
        (*w, *x, *y, *z) = (*a, a + b, a - b, -b);
    }
}

/// `dM = A dY Aᵀ` of every tile of one tile row (the adjoint of [`output_row`]'s
/// transform): `gz` holds the 2 output-gradient rows of the tiles (from their first
/// pixel), `u` 4 rows of scratch, and tile `j`'s values go to `dm[ξ · stride + j · c_out ..]`.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn grad_output_row(gz: &[f32], g: Geometry, u: &mut [f32], dm: &mut [f32], stride: usize) {
    let (c, row) = (g.c_out, (g.width - 2) * g.c_out);
    let (y0, y1) = (&gz[..row], &gz[row..2 * row]);
    // u = A dY along the rows: y0, y0 + y1, y0 − y1, −y1.
    let (u0, rest) = u.split_at_mut(row);
    let (u1, rest) = rest.split_at_mut(row);
    let (u2, u3) = rest.split_at_mut(row);
    u0.copy_from_slice(y0);
    add(u1, y0, y1);
    sub(u2, y0, y1);
    for (o, v) in u3[..row].iter_mut().zip(y1) {
        *o = -v;
    }
    // dM = u Aᵀ along the columns of each tile: tile j reads pixels 2j, 2j + 1.
    let tiles = g.tiles_x();
    for (k, u) in [&*u0, &*u1, &*u2, &*u3].into_iter().enumerate() {
        let [o0, o1, o2, o3] = four_rows(dm, 4 * k, stride, (0, tiles * c));
        let outs = o0.chunks_exact_mut(c).zip(o1.chunks_exact_mut(c));
        let outs = outs.zip(o2.chunks_exact_mut(c).zip(o3.chunks_exact_mut(c)));
        for (pair, ((o0, o1), (o2, o3))) in u.chunks_exact(2 * c).zip(outs) {
            let (p0, p1) = pair.split_at(c);
            a_columns([p0, p1], [o0, o1, o2, o3]);
        }
    }
}

/// `dw += Gᵀ du G` for every channel pair (the adjoint of [`transform_weights`]):
/// `du` is `[16][pair]`, `dw` `[3][3][pair]`, `tmp` holds `12 · pair` values.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn add_weight_grad(du: &[f32], pair: usize, tmp: &mut [f32], dw: &mut [f32]) {
    // `Gᵀ h` for four rows h0..h3 into three: h0 + (h1 + h2)/2, (h1 − h2)/2,
    // (h1 + h2)/2 + h3; written (or added) at `out[k · stride ..]`.
    #[inline(always)]
    fn gt_rows(h: [&[f32]; 4], out: &mut [f32], pair: usize, stride: usize, accumulate: bool) {
        let (o0, rest) = out.split_at_mut(stride);
        let (o1, o2) = rest.split_at_mut(stride);
        let outs = o0[..pair]
            .iter_mut()
            .zip(&mut o1[..pair])
            .zip(&mut o2[..pair]);
        let ins = h[0].iter().zip(h[1]).zip(h[2].iter().zip(h[3]));
        for (((o0, o1), o2), ((a, b), (c, d))) in outs.zip(ins) {
            let (k0, k1, k2) = (a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + d);
            if accumulate {
                (*o0, *o1, *o2) = (*o0 + k0, *o1 + k1, *o2 + k2);
            } else {
                (*o0, *o1, *o2) = (k0, k1, k2);
            }
        }
    }
    // Columns: tmp[r][kx] = Σ_col du[r][col] G[col][kx].
    for r in 0..4 {
        let h = |col: usize| &du[(4 * r + col) * pair..][..pair];
        gt_rows(
            [h(0), h(1), h(2), h(3)],
            &mut tmp[3 * r * pair..],
            pair,
            pair,
            false,
        );
    }
    // Rows: dw[ky][kx] += Σ_r G[r][ky] tmp[r][kx].
    for kx in 0..3 {
        let h = |r: usize| &tmp[(3 * r + kx) * pair..][..pair];
        gt_rows(
            [h(0), h(1), h(2), h(3)],
            &mut dw[kx * pair..],
            pair,
            3 * pair,
            true,
        );
    }
}

/// Adds to `dw` (`[3][3][c_in][c_out]`) the loss gradient of a [`conv3x3`]'s weights,
/// from its input `x` and the loss gradient `gz` of its output (`n` samples): the
/// gradient of the Winograd form, `dU_ξ = V_ξᵀ dM_ξ` with `dM = A dY Aᵀ`, brought
/// back by `dW = Gᵀ dU G`. `scratch` holds at least
/// `n ·` [`Geometry::weight_grad_scratch_per_sample`] values.
///
/// # Panics
/// When the geometry does not [apply](Geometry::applies) or a buffer is too short.
pub fn conv3x3_weight_grad(
    x: &[f32],
    gz: &[f32],
    n: usize,
    g: Geometry,
    dw: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(g.applies(3), "winograd: geometry {g:?}");
    let (ci, co) = (g.c_in, g.c_out);
    let (du, rest) = scratch.split_at_mut(XI * ci * co);
    let (tmp, rest) = rest.split_at_mut(12 * ci * co);
    du.fill(0.0);
    let tiles_x = g.tiles_x();
    let tile_rows = TileRows::new(n, (g.height - 2) / 2, tiles_x, BLOCK_TILES);
    let block = tile_rows.block();
    let (v, rest) = rest.split_at_mut(XI * block * ci);
    let (dm, rest) = rest.split_at_mut(XI * block * co);
    let (t, rest) = rest.split_at_mut(4 * g.width * ci);
    let out_row = (g.width - 2) * co;
    let u = &mut rest[..4 * out_row];
    let (in_len, out_len) = (g.height * g.width * ci, (g.height - 2) * out_row);
    for rows in tile_rows.blocks() {
        let tiles = rows.len() * tiles_x;
        for (k, r) in rows.enumerate() {
            let (sample, ty) = tile_rows.locate(r);
            let xs = &x[sample * in_len + 2 * ty * g.width * ci..];
            input_row(xs, g, t, &mut v[k * tiles_x * ci..], block * ci);
            let gzs = &gz[sample * out_len + 2 * ty * out_row..];
            grad_output_row(gzs, g, u, &mut dm[k * tiles_x * co..], block * co);
        }
        for xi in 0..XI {
            let a = ArrayView2::from_shape((tiles, ci), &v[xi * block * ci..][..tiles * ci])
                .expect("block sized for its tiles");
            let b = ArrayView2::from_shape((tiles, co), &dm[xi * block * co..][..tiles * co])
                .expect("block sized for its tiles");
            let c = ArrayViewMut2::from_shape((ci, co), &mut du[xi * ci * co..][..ci * co])
                .expect("dU sized for the channels");
            matmul(c, a.t(), b, true);
        }
    }
    add_weight_grad(du, ci * co, tmp, dw);
}

/// The tile rows of `n` samples (`rows_y` per sample, `tiles_x` tiles each), walked in
/// blocks of at most `block_tiles` tiles — the loop every Winograd driver runs, so that
/// a block's transformed tiles stay in cache.
#[derive(Clone, Copy, Debug)]
pub(super) struct TileRows {
    rows_y: usize,
    tiles_x: usize,
    total: usize,
    block_rows: usize,
}

impl TileRows {
    pub(super) fn new(n: usize, rows_y: usize, tiles_x: usize, block_tiles: usize) -> Self {
        let total = n * rows_y;
        let block_rows = (block_tiles / tiles_x).clamp(1, total);
        Self {
            rows_y,
            tiles_x,
            total,
            block_rows,
        }
    }

    /// Tiles in a full block: the stride of a block's per-position buffers.
    pub(super) fn block(self) -> usize {
        self.block_rows * self.tiles_x
    }

    /// Each block's tile rows, numbered across samples (see [`Self::locate`]).
    pub(super) fn blocks(self) -> impl Iterator<Item = Range<usize>> {
        (0..self.total)
            .step_by(self.block_rows)
            .map(move |first| first..(first + self.block_rows).min(self.total))
    }

    /// The sample and the tile row within it of tile row `r`.
    pub(super) fn locate(self, r: usize) -> (usize, usize) {
        (r / self.rows_y, r % self.rows_y)
    }
}

/// `M_ξ = V_ξ · U_ξ` for each of the `positions` tile positions ξ of a block: `V` is
/// `[positions][block][c_in]` (its first `tiles` rows used), `U`
/// `[positions][c_in][c_out]`, `M` `[positions][block][c_out]`. Both tile sizes use it.
pub(super) fn multiply_positions(
    positions: usize,
    (v, u, m): (&[f32], &[f32], &mut [f32]),
    (block, tiles): (usize, usize),
    (ci, co): (usize, usize),
) {
    for xi in 0..positions {
        let a = ArrayView2::from_shape((tiles, ci), &v[xi * block * ci..][..tiles * ci])
            .expect("block sized for its tiles");
        let b = ArrayView2::from_shape((ci, co), &u[xi * ci * co..][..ci * co])
            .expect("U sized for the channels");
        let c = ArrayViewMut2::from_shape((tiles, co), &mut m[xi * block * co..][..tiles * co])
            .expect("block sized for its tiles");
        matmul(c, a, b, false);
    }
}

/// `y = conv(x, w) + b` (`b` zero when `None`) for `n` samples: `x` is
/// `n × height × width × c_in`, `u` is `w` (`[3][3][c_in][c_out]`) after
/// [`transform_weights`], `y` is
/// `n × (height−2) × (width−2) × c_out`. `scratch` holds at least
/// `n ·` [`Geometry::scratch_per_sample`] values.
///
/// # Panics
/// When the geometry does not [apply](Geometry::applies) or a buffer is too short (a
/// caller's bug: sizes come from the spec).
pub fn conv3x3(
    x: &[f32],
    n: usize,
    g: Geometry,
    u: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(g.applies(3), "winograd: geometry {g:?}");
    let (ci, co) = (g.c_in, g.c_out);
    let rest = scratch;
    let tiles_x = g.tiles_x();
    let tile_rows = TileRows::new(n, (g.height - 2) / 2, tiles_x, BLOCK_TILES);
    let block = tile_rows.block();
    let (v, rest) = rest.split_at_mut(XI * block * ci);
    let (m, rest) = rest.split_at_mut(XI * block * co);
    let (t, rest) = rest.split_at_mut(4 * g.width * ci);
    // The bias (zeros when there is none).
    let bias = &mut rest[..co];
    match b {
        Some(b) => bias.copy_from_slice(b),
        None => bias.fill(0.0),
    }
    let bias = &*bias;
    let (in_len, out_row) = (g.height * g.width * ci, (g.width - 2) * co);
    let out_len = (g.height - 2) * out_row;
    for rows in tile_rows.blocks() {
        let tiles = rows.len() * tiles_x;
        for (k, r) in rows.clone().enumerate() {
            let (sample, ty) = tile_rows.locate(r);
            let x = &x[sample * in_len + 2 * ty * g.width * ci..];
            input_row(x, g, t, &mut v[k * tiles_x * ci..], block * ci);
        }
        multiply_positions(XI, (v, u, m), (block, tiles), (ci, co));
        a_transpose_rows(m, block * co, tiles * co);
        let row_len = tiles_x * co;
        for (k, r) in rows.enumerate() {
            let (sample, ty) = tile_rows.locate(r);
            let y = &mut y[sample * out_len + 2 * ty * out_row..];
            let (top, bottom) = y.split_at_mut(out_row);
            for (out, first_row) in [(top, 0), (&mut bottom[..out_row], 12)] {
                let s = |q: usize| &m[(first_row + q) * block * co + k * row_len..][..row_len];
                output_row([s(0), s(1), s(2), s(3)], bias, co, out);
            }
        }
    }
}

/// The loss gradient of a [`conv3x3`]'s input from that of its output `gz`
/// (`n × (height−2) × (width−2) × c_out`), written to `gx` (`n × height × width × c_in`):
/// the full correlation of `gz` with the kernel turned by 180° and its channels
/// swapped, i.e. a valid 3×3 conv of `gz` padded by 2 (see
/// [`Geometry::input_grad`]); `u_back` is `w` after [`transform_input_grad_weights`].
/// `scratch` holds at least
/// `n ·` [`Geometry::input_grad_scratch_per_sample`] values.
///
/// # Panics
/// When [`Geometry::input_grad`] is `None` or a buffer is too short.
pub fn conv3x3_input_grad(
    gz: &[f32],
    n: usize,
    g: Geometry,
    u_back: &[f32],
    gx: &mut [f32],
    scratch: &mut [f32],
) {
    let back = g
        .input_grad()
        .unwrap_or_else(|| panic!("winograd: no input gradient for {g:?}"));
    let co = g.c_out;
    let (oh, ow) = (g.height - 2, g.width - 2);
    let (padded, rest) = scratch.split_at_mut(n * back.height * back.width * co);
    // `gz` framed by two zero pixels on every side, each value written once.
    let (out_row, pad_row) = (ow * co, back.width * co);
    let samples = padded.chunks_exact_mut(back.height * pad_row);
    for (sample, gz) in samples.zip(gz.chunks_exact(oh * out_row)) {
        let (top, rest) = sample.split_at_mut(2 * pad_row);
        let (middle, bottom) = rest.split_at_mut(oh * pad_row);
        top.fill(0.0);
        bottom.fill(0.0);
        for (dst, src) in middle
            .chunks_exact_mut(pad_row)
            .zip(gz.chunks_exact(out_row))
        {
            let (left, rest) = dst.split_at_mut(2 * co);
            let (inside, right) = rest.split_at_mut(out_row);
            left.fill(0.0);
            inside.copy_from_slice(src);
            right.fill(0.0);
        }
    }
    conv3x3(padded, n, back, u_back, None, gx, rest);
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A conv of `height × width × c_in` inputs and `c_out` filters.
    pub(in crate::nn) fn geo(height: usize, width: usize, c_in: usize, c_out: usize) -> Geometry {
        Geometry {
            height,
            width,
            c_in,
            c_out,
        }
    }

    /// `len` values drawn uniformly from `[-scale, scale)`.
    pub(in crate::nn) fn uniform(rng: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-scale..scale)).collect()
    }

    /// The direct convolution, in f64.
    pub(in crate::nn) fn direct(
        x: &[f32],
        n: usize,
        g: Geometry,
        w: &[f32],
        b: &[f32],
    ) -> Vec<f64> {
        let (oh, ow) = (g.height - 2, g.width - 2);
        let mut y = vec![0.0f64; n * oh * ow * g.c_out];
        for s in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for o in 0..g.c_out {
                        let mut acc = f64::from(b[o]);
                        for ky in 0..3 {
                            for kx in 0..3 {
                                for c in 0..g.c_in {
                                    let xv = x[((s * g.height + oy + ky) * g.width + ox + kx)
                                        * g.c_in
                                        + c];
                                    let wv = w[((ky * 3 + kx) * g.c_in + c) * g.c_out + o];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        y[((s * oh + oy) * ow + ox) * g.c_out + o] = acc;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn matches_the_direct_convolution() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (n, g) in [
            (1, geo(4, 4, 8, 8)),
            (3, geo(26, 26, 32, 32)),
            (2, geo(12, 8, 9, 17)),
            (5, geo(10, 10, 32, 64)),
        ] {
            let x = uniform(&mut rng, n * g.height * g.width * g.c_in, 1.0);
            let w = uniform(&mut rng, 9 * g.c_in * g.c_out, 0.5);
            let b = uniform(&mut rng, g.c_out, 0.5);
            let mut y = vec![f32::NAN; n * (g.height - 2) * (g.width - 2) * g.c_out];
            let mut scratch = vec![f32::NAN; n * g.scratch_per_sample()];
            let mut u = Vec::new();
            transform_weights(&w, g, &mut u);
            conv3x3(&x, n, g, &u, Some(&b), &mut y, &mut scratch);
            let want = direct(&x, n, g, &w, &b);
            let scale = (9 * g.c_in) as f64;
            for (i, (&got, &want)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(got) - want).abs() <= 1e-6 * scale,
                    "{g:?} value {i}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn input_gradient_is_the_adjoint_of_the_convolution() {
        // <conv(x), gz> = <x, conv_input_grad(gz)> for random x, gz (bias 0).
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for (n, g) in [
            (2, geo(26, 26, 32, 32)),
            (3, geo(12, 10, 16, 8)),
            (1, geo(28, 28, 8, 32)),
        ] {
            let (oh, ow) = (g.height - 2, g.width - 2);
            let x = uniform(&mut rng, n * g.height * g.width * g.c_in, 1.0);
            let w = uniform(&mut rng, 9 * g.c_in * g.c_out, 0.5);
            let gz = uniform(&mut rng, n * oh * ow * g.c_out, 1.0);
            let zero = vec![0.0f32; g.c_out];
            let y = direct(&x, n, g, &w, &zero);
            let lhs: f64 = y.iter().zip(&gz).map(|(a, &b)| a * f64::from(b)).sum();
            let mut gx = vec![f32::NAN; x.len()];
            let mut scratch = vec![f32::NAN; n * g.input_grad_scratch_per_sample()];
            let mut u_back = Vec::new();
            transform_input_grad_weights(&w, g, &mut u_back);
            conv3x3_input_grad(&gz, n, g, &u_back, &mut gx, &mut scratch);
            let rhs: f64 = gx
                .iter()
                .zip(&x)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let scale: f64 = gz.len() as f64;
            assert!((lhs - rhs).abs() <= 1e-5 * scale, "{g:?}: {lhs} vs {rhs}");
        }
    }

    #[test]
    fn weight_gradient_matches_the_direct_sum() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (n, g) in [(2, geo(26, 26, 32, 32)), (3, geo(12, 10, 17, 9))] {
            let (oh, ow) = (g.height - 2, g.width - 2);
            let x = uniform(&mut rng, n * g.height * g.width * g.c_in, 1.0);
            let gz = uniform(&mut rng, n * oh * ow * g.c_out, 1.0);
            let start = uniform(&mut rng, 9 * g.c_in * g.c_out, 1.0);
            let mut dw = start.clone();
            let mut scratch = vec![f32::NAN; n * g.weight_grad_scratch_per_sample()];
            conv3x3_weight_grad(&x, &gz, n, g, &mut dw, &mut scratch);
            let scale = (n * oh * ow) as f64;
            for k in 0..9 {
                let (ky, kx) = (k / 3, k % 3);
                for c in 0..g.c_in {
                    for o in 0..g.c_out {
                        let mut want = f64::from(start[(k * g.c_in + c) * g.c_out + o]);
                        for s in 0..n {
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let xv = x[((s * g.height + oy + ky) * g.width + ox + kx)
                                        * g.c_in
                                        + c];
                                    let gv = gz[((s * oh + oy) * ow + ox) * g.c_out + o];
                                    want += f64::from(xv) * f64::from(gv);
                                }
                            }
                        }
                        let got = f64::from(dw[(k * g.c_in + c) * g.c_out + o]);
                        assert!(
                            (got - want).abs() <= 1e-5 * scale,
                            "{g:?} ({k}, {c}, {o}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn applies_only_to_whole_tiles_of_a_3x3_kernel() {
        let g = geo(26, 26, 32, 32);
        assert!(g.applies(3));
        assert!(!g.applies(5));
        assert!(!Geometry { height: 27, ..g }.applies(3));
        assert!(!Geometry { c_in: 1, ..g }.applies(3));
        assert!(!Geometry { c_out: 4, ..g }.applies(3));
        assert!(Geometry { c_out: 4, ..g }.input_grad().is_none());
    }
}
