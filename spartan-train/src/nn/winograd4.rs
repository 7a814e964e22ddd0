//! The forward pass of 3×3 convs whose output sides are multiples of 4, by Winograd's
//! F(4×4, 3×3): a 6×6 input tile gives a 4×4 output tile with 36 multiplies per
//! channel pair instead of 144 (F(2×2, 3×3), [`super::winograd`], needs 64), so the
//! GEMM work falls 4× against im2col. Same scheme as F(2×2, 3×3) (transformed input
//! tiles, one GEMM per tile position ξ, output transform), with Lavin & Gray's
//! matrices (interpolation points 0, ±1, ±2):
//!
//! ```text
//! Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]
//! G  = [1/4 0 0; −1/6 −1/6 −1/6; −1/6 1/6 −1/6; 1/24 1/12 1/6; 1/24 −1/12 1/6; 0 0 1]
//! Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]
//! ```
//!
//! Its rounding error is a few times F(2×2, 3×3)'s (the transforms scale values by up
//! to 8); the gradients stay on F(2×2, 3×3).

use super::winograd::{multiply_positions, Geometry, TileRows};
use multiversion::multiversion;

/// Values of a transformed tile (6×6).
const XI: usize = 36;

/// Tiles transformed and multiplied at a time (their `V` and `M` stay in L2).
const BLOCK_TILES: usize = 48;

/// Channels per vector (see [`super::winograd`]).
const LANES: usize = 16;

/// Whether a conv of kernel `k` runs forward this way: [`Geometry::applies`] and output
/// sides that are multiples of 4.
pub fn applies(g: Geometry, k: usize) -> bool {
    g.applies(k) && (g.height - 2).is_multiple_of(4) && (g.width - 2).is_multiple_of(4)
}

fn tiles_x(g: Geometry) -> usize {
    (g.width - 2) / 4
}

/// Scratch values per sample [`conv3x3`] needs.
pub fn scratch_per_sample(g: Geometry) -> usize {
    let tiles = (g.height - 2) / 4 * tiles_x(g);
    6 * g.width * g.c_in + XI * tiles * (g.c_in + g.c_out)
}

/// Values of the weights after [`transform_weights`].
pub fn transformed_len(g: Geometry) -> usize {
    XI * g.c_in * g.c_out
}

/// `o = Bᵀ d` for six slices of one length (element by element). This and [`at`] keep
/// one loop with the lane and single-value cases inline: a shared generic form (two
/// loops over `rows::<L>`/`set_rows::<L>` helpers) gave the same bits but measured 25 %
/// slower batch-256 inference (28,300 vs 38,100 samples/s).
#[inline(always)]
fn bt(d: [&[f32]; 6], o: [&mut [f32]; 6]) {
    let n = d[0].len();
    let [o0, o1, o2, o3, o4, o5] = o;
    let (whole, rest) = (n / LANES, n % LANES);
    for i in 0..whole + rest {
        // 16 channels at a time, then one at a time.
        let (at, one) = if i < whole {
            (i * LANES, false)
        } else {
            (whole * LANES + i - whole, true)
        };
        if one {
            let x = [
                [d[0][at]],
                [d[1][at]],
                [d[2][at]],
                [d[3][at]],
                [d[4][at]],
                [d[5][at]],
            ];
            let y = bt_lanes(&x);
            (o0[at], o1[at], o2[at], o3[at], o4[at], o5[at]) =
                (y[0][0], y[1][0], y[2][0], y[3][0], y[4][0], y[5][0]);
            continue;
        }
        let x = [
            lanes(d[0], at),
            lanes(d[1], at),
            lanes(d[2], at),
            lanes(d[3], at),
            lanes(d[4], at),
            lanes(d[5], at),
        ];
        let y = bt_lanes(&x);
        for (o, y) in [&mut *o0, &mut *o1, &mut *o2, &mut *o3, &mut *o4, &mut *o5]
            .into_iter()
            .zip(y)
        {
            set_lanes(o, at, y);
        }
    }
}

/// A copy of `s[at..at + LANES]`.
#[inline(always)]
fn lanes(s: &[f32], at: usize) -> [f32; LANES] {
    *<&[f32; LANES]>::try_from(&s[at..at + LANES]).expect("LANES values")
}

/// `s[at..at + LANES] = v`.
#[inline(always)]
fn set_lanes(s: &mut [f32], at: usize, v: [f32; LANES]) {
    *<&mut [f32; LANES]>::try_from(&mut s[at..at + LANES]).expect("LANES values") = v;
}

/// `Bᵀ d` for `L` lanes.
#[inline(always)]
fn bt_lanes<const L: usize>(d: &[[f32; L]; 6]) -> [[f32; L]; 6] {
    let mut o = [[0.0f32; L]; 6];
    for l in 0..L {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        o[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        o[1][l] = -4.0 * (d1 + d2) + d3 + d4;
        o[2][l] = 4.0 * (d1 - d2) - d3 + d4;
        o[3][l] = 2.0 * (d3 - d1) - d2 + d4;
        o[4][l] = 2.0 * (d1 - d3) - d2 + d4;
        o[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    o
}

/// `Aᵀ m + z` for `L` lanes.
#[inline(always)]
fn at_lanes<const L: usize>(m: &[[f32; L]; 6], z: &[f32; L]) -> [[f32; L]; 4] {
    let mut o = [[0.0f32; L]; 4];
    for l in 0..L {
        let [m0, m1, m2, m3, m4, m5] = [m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]];
        let (p12, d12, p34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        o[0][l] = m0 + p12 + p34 + z[l];
        o[1][l] = d12 + 2.0 * d34 + z[l];
        o[2][l] = p12 + 4.0 * p34 + z[l];
        o[3][l] = d12 + 8.0 * d34 + m5 + z[l];
    }
    o
}

/// `o = Aᵀ m + z` for six slices of one length (element by element).
#[inline(always)]
fn at(m: [&[f32]; 6], z: &[f32], o: [&mut [f32]; 4]) {
    let n = m[0].len();
    let [o0, o1, o2, o3] = o;
    let (whole, rest) = (n / LANES, n % LANES);
    for i in 0..whole + rest {
        let (at, one) = if i < whole {
            (i * LANES, false)
        } else {
            (whole * LANES + i - whole, true)
        };
        if one {
            let x = [
                [m[0][at]],
                [m[1][at]],
                [m[2][at]],
                [m[3][at]],
                [m[4][at]],
                [m[5][at]],
            ];
            let y = at_lanes(&x, &[z[at]]);
            (o0[at], o1[at], o2[at], o3[at]) = (y[0][0], y[1][0], y[2][0], y[3][0]);
            continue;
        }
        let x = [
            lanes(m[0], at),
            lanes(m[1], at),
            lanes(m[2], at),
            lanes(m[3], at),
            lanes(m[4], at),
            lanes(m[5], at),
        ];
        let y = at_lanes(&x, &lanes(z, at));
        for (o, y) in [&mut *o0, &mut *o1, &mut *o2, &mut *o3].into_iter().zip(y) {
            set_lanes(o, at, y);
        }
    }
}

/// Appends to `out` the weights `w` (`[3][3][c_in][c_out]`) as [`conv3x3`] takes them:
/// `U = G g Gᵀ`, `[36][c_in][c_out]`.
pub fn transform_weights(w: &[f32], g: Geometry, out: &mut Vec<f32>) {
    let pair = g.c_in * g.c_out;
    let start = out.len();
    // U, then room for the intermediate `G g` (6 × 3 rows of pairs), dropped at the end.
    out.resize(start + (XI + 18) * pair, 0.0);
    let (u, gg) = out[start..].split_at_mut(XI * pair);
    transform_into(&w[..9 * pair], pair, gg, u);
    out.truncate(start + XI * pair);
}

/// `u = G g Gᵀ` for every channel pair (`gg`: `18 · pair` values of scratch).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn transform_into(w: &[f32], pair: usize, gg: &mut [f32], u: &mut [f32]) {
    // `G h` of three rows of pairs into six, at `out[r · stride ..]`.
    #[inline(always)]
    fn g_rows(h: [&[f32]; 3], out: &mut [f32], pair: usize, stride: usize) {
        for i in 0..pair {
            let (a, b, c) = (h[0][i], h[1][i], h[2][i]);
            let o = [
                a / 4.0,
                -(a + b + c) / 6.0,
                -(a - b + c) / 6.0,
                a / 24.0 + b / 12.0 + c / 6.0,
                a / 24.0 - b / 12.0 + c / 6.0,
                c,
            ];
            for (r, v) in o.into_iter().enumerate() {
                out[r * stride + i] = v;
            }
        }
    }
    let tap = |k: usize| &w[k * pair..][..pair];
    // Rows: gg[r][kx] = (G g)[r][kx], at (3r + kx) · pair.
    for kx in 0..3 {
        g_rows(
            [tap(kx), tap(3 + kx), tap(6 + kx)],
            &mut gg[kx * pair..],
            pair,
            3 * pair,
        );
    }
    // Columns: u[r][col] = ((G g) Gᵀ)[r][col], at (6r + col) · pair.
    for r in 0..6 {
        let h = |kx: usize| &gg[(3 * r + kx) * pair..][..pair];
        g_rows([h(0), h(1), h(2)], &mut u[6 * r * pair..], pair, pair);
    }
}

/// `V = Bᵀ d B` of every tile of one tile row: `x` holds the 6 input rows of the tiles
/// (from their first pixel), `t` 6 rows of scratch; tile `j`'s values go to
/// `v[ξ · stride + j · c_in ..]`.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn input_row(x: &[f32], g: Geometry, t: &mut [f32], v: &mut [f32], stride: usize) {
    let (c, row) = (g.c_in, g.width * g.c_in);
    let r = |k: usize| &x[k * row..][..row];
    let mut ts = t[..6 * row].chunks_exact_mut(row);
    let mut next = || ts.next().expect("six rows");
    let (t0, t1, t2, t3, t4, t5) = (next(), next(), next(), next(), next(), next());
    bt(
        [r(0), r(1), r(2), r(3), r(4), r(5)],
        [t0, t1, t2, t3, t4, t5],
    );
    let tiles = tiles_x(g);
    for (k, t) in [&*t0, &*t1, &*t2, &*t3, &*t4, &*t5].into_iter().enumerate() {
        let mut rows = v[6 * k * stride..]
            .chunks_mut(stride)
            .map(|r| &mut r[..tiles * c]);
        let mut next = || rows.next().expect("six rows").chunks_exact_mut(c);
        let mut outs = [next(), next(), next(), next(), next(), next()];
        for j in 0..tiles {
            let p = |q: usize| &t[(4 * j + q) * c..][..c];
            let [a, b, c2, d, e, f] = &mut outs;
            let (a, b, c2) = (a.next(), b.next(), c2.next());
            let (d, e, f) = (d.next(), e.next(), f.next());
            let o = [a, b, c2, d, e, f].map(|o| o.expect("a tile"));
            bt([p(0), p(1), p(2), p(3), p(4), p(5)], o);
        }
    }
}

/// `Aᵀ M` of a block, in place: for each column `q` of the tiles, rows `q + 6r`
/// (`r < 4`) become `Σ_k Aᵀ[r][k] m_{q + 6k}` (ξ rows `stride` apart, the first `len`
/// values of each).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn a_transpose_rows(m: &mut [f32], stride: usize, len: usize) {
    for q in 0..6 {
        let mut rows = m
            .chunks_mut(stride)
            .skip(q)
            .step_by(6)
            .map(|r| &mut r[..len]);
        let mut next = || rows.next().expect("six rows");
        let (a, b, c, d, e, f) = (next(), next(), next(), next(), next(), next());
        // Outputs go to rows 0..4 of the column: read all six first, chunk by chunk.
        let mut tmp = [[0.0f32; LANES]; 6];
        let split = len - len % LANES;
        for i in (0..split).step_by(LANES) {
            for (t, s) in tmp.iter_mut().zip([&*a, &*b, &*c, &*d, &*e, &*f]) {
                t.copy_from_slice(&s[i..i + LANES]);
            }
            let y = at_lanes(&tmp, &[0.0; LANES]);
            for (o, y) in [&mut *a, &mut *b, &mut *c, &mut *d].into_iter().zip(y) {
                o[i..i + LANES].copy_from_slice(&y);
            }
        }
        for i in split..len {
            let x = [[a[i]], [b[i]], [c[i]], [d[i]], [e[i]], [f[i]]];
            let y = at_lanes(&x, &[0.0]);
            (a[i], b[i], c[i], d[i]) = (y[0][0], y[1][0], y[2][0], y[3][0]);
        }
    }
}

/// `Y = s A + b` of one tile row for one output row: `s` the six rows of `Aᵀ M` (tile
/// `j` at `j · c`), its outputs to the pixels `4j .. 4j + 3` of `y` (one row).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn output_row(s: [&[f32]; 6], bias: &[f32], c: usize, y: &mut [f32]) {
    for (j, px) in y.chunks_exact_mut(4 * c).enumerate() {
        let p = |k: usize| &s[k][j * c..][..c];
        let mut it = px.chunks_exact_mut(c);
        let mut next = || it.next().expect("four pixels");
        let o = [next(), next(), next(), next()];
        at([p(0), p(1), p(2), p(3), p(4), p(5)], bias, o);
    }
}

/// `y = conv(x, w) + b` for `n` samples (see [`super::winograd::conv3x3`]), `u` from
/// [`transform_weights`]; `scratch` holds `n ·` [`scratch_per_sample`] values.
///
/// # Panics
/// When the geometry does not [apply](applies) or a buffer is too short.
pub fn conv3x3(
    x: &[f32],
    n: usize,
    g: Geometry,
    u: &[f32],
    b: &[f32],
    y: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(applies(g, 3), "winograd F(4, 3): geometry {g:?}");
    let (ci, co) = (g.c_in, g.c_out);
    let tx = tiles_x(g);
    let tile_rows = TileRows::new(n, (g.height - 2) / 4, tx, BLOCK_TILES);
    let block = tile_rows.block();
    let (v, rest) = scratch.split_at_mut(XI * block * ci);
    let (m, rest) = rest.split_at_mut(XI * block * co);
    let t = &mut rest[..6 * g.width * ci];
    let (in_len, out_row) = (g.height * g.width * ci, (g.width - 2) * co);
    let out_len = (g.height - 2) * out_row;
    for rows in tile_rows.blocks() {
        let tiles = rows.len() * tx;
        for (k, r) in rows.clone().enumerate() {
            let (sample, ty) = tile_rows.locate(r);
            let x = &x[sample * in_len + 4 * ty * g.width * ci..];
            input_row(x, g, t, &mut v[k * tx * ci..], block * ci);
        }
        multiply_positions(XI, (v, u, m), (block, tiles), (ci, co));
        a_transpose_rows(m, block * co, tiles * co);
        let row_len = tx * co;
        for (k, r) in rows.enumerate() {
            let (sample, ty) = tile_rows.locate(r);
            let y = &mut y[sample * out_len + 4 * ty * out_row..];
            for (r, out) in y.chunks_exact_mut(out_row).take(4).enumerate() {
                let s = |q: usize| &m[(6 * r + q) * block * co + k * row_len..][..row_len];
                output_row([s(0), s(1), s(2), s(3), s(4), s(5)], b, co, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::winograd::tests::{direct, geo, uniform};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn matches_the_direct_convolution() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let shapes = [(26, 26, 32, 32, 2), (10, 14, 9, 17, 3)];
        for (height, width, c_in, c_out, n) in shapes {
            let g = geo(height, width, c_in, c_out);
            let x = uniform(&mut rng, n * height * width * c_in, 1.0);
            let w = uniform(&mut rng, 9 * c_in * c_out, 0.5);
            let b = uniform(&mut rng, c_out, 0.5);
            let mut u = Vec::new();
            transform_weights(&w, g, &mut u);
            let mut y = vec![f32::NAN; n * (height - 2) * (width - 2) * c_out];
            let mut scratch = vec![f32::NAN; n * scratch_per_sample(g)];
            conv3x3(&x, n, g, &u, &b, &mut y, &mut scratch);
            let scale = (9 * c_in) as f64;
            for (i, (&got, want)) in y.iter().zip(direct(&x, n, g, &w, &b)).enumerate() {
                let got = f64::from(got);
                assert!(
                    (got - want).abs() <= 4e-6 * scale,
                    "{g:?} value {i}: {got} vs {want}"
                );
            }
        }
    }
}
