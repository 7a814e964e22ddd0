//! Kernels for hosts: a conv row's accumulators for all its pixels and channels on the
//! stack (AVX-512 VNNI where the CPU has it, else portable loops LLVM vectorises), then
//! the output stage a pixel's channels at a time.

use super::exec::{Conv, Dense, Scratch as ExecScratch, Window};
use super::kernels::Finisher;
use super::model::OutputStage;
use super::record::le_i32;
use crate::quant::Requant;

/// Accumulators a host keeps for one conv row (16 KiB).
const TILE: usize = 4096;

/// The row kernels' buffers, on the stack of one inference.
pub(super) struct Scratch {
    tile: [i32; TILE],
    #[cfg(target_arch = "x86_64")]
    vnni: super::vnni::Scratch,
}

impl Scratch {
    pub(super) fn new() -> Self {
        Scratch {
            tile: [0; TILE],
            #[cfg(target_arch = "x86_64")]
            vnni: super::vnni::Scratch::new(),
        }
    }
}

/// One output row of a conv — or, `pooled`, one row of its 2×2 max-pool from two conv
/// rows — into `dst` (`u8`, pixels × channels). Rows too wide for the tile go to the
/// microcontroller kernel, which needs only the arena's scratch.
pub(super) fn conv_row(
    c: &Conv<'_>,
    win: &Window<'_>,
    pooled: bool,
    dst: &mut [u8],
    scratch: &mut ExecScratch<'_>,
) {
    let co = c.out_channels;
    let rows = if pooled { 2 } else { 1 };
    // Whole pool windows per chunk of columns.
    let cols = (TILE / (rows * co).max(1)) & !1;
    if cols == 0 {
        super::mcu::conv_row(c, win, pooled, dst, scratch.arena);
        return;
    }
    let Scratch {
        tile,
        #[cfg(target_arch = "x86_64")]
        vnni,
    } = &mut *scratch.host;
    let mut x0 = 0;
    while x0 < c.out_width {
        let x1 = (x0 + cols).min(c.out_width);
        let n = x1 - x0;
        let tile = &mut tile[..rows * n * co];
        accumulate(
            c,
            win,
            rows,
            x0..x1,
            tile,
            #[cfg(target_arch = "x86_64")]
            vnni,
        );
        if pooled {
            // The window's maximum accumulator per channel, compacted to the front of
            // the tile (window `q` reads pixels `2q`, `2q + 1` of both rows, at or
            // after where it writes), then the output stage.
            for q in 0..n / 2 {
                let (top, bottom) = tile.split_at_mut(n * co);
                let (b0, b1) = bottom[2 * q * co..(2 * q + 2) * co].split_at(co);
                for ((t, &x), &y) in top[2 * q * co..(2 * q + 1) * co].iter_mut().zip(b0).zip(b1) {
                    *t = (*t).max(x.max(y));
                }
                let (head, tail) = top.split_at_mut((2 * q + 1) * co);
                for (t, &x) in head[2 * q * co..].iter_mut().zip(&tail[..co]) {
                    *t = (*t).max(x);
                }
                top.copy_within(2 * q * co..(2 * q + 1) * co, q * co);
            }
            let pixels = n / 2;
            let out = &mut dst[x0 / 2 * co..(x0 / 2 + pixels) * co];
            finish_pixels(&c.out, &tile[..pixels * co], co, out);
        } else {
            finish_pixels(&c.out, tile, co, &mut dst[x0 * co..x1 * co]);
        }
        x0 = x1;
    }
}

/// The `u8` outputs of pixels' accumulators (`co` channels innermost): AVX-512 where
/// the CPU has it, else the portable output stage.
fn finish_pixels(out: &OutputStage<'_>, tile: &[i32], co: usize, dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if super::vnni::finish_pixels(out, tile, co, dst) {
        return;
    }
    for (acc, o) in tile.chunks_exact(co).zip(dst.chunks_exact_mut(co)) {
        finish_channels(out, acc, o);
    }
}

/// Accumulators of output columns `cols` of window rows `0..rows` (each conv row `dy`
/// reads window rows `dy..dy + k`), `[dy][x][channel]`.
fn accumulate(
    c: &Conv<'_>,
    win: &Window<'_>,
    rows: usize,
    cols: core::ops::Range<usize>,
    tile: &mut [i32],
    #[cfg(target_arch = "x86_64")] vnni: &mut super::vnni::Scratch,
) {
    #[cfg(target_arch = "x86_64")]
    if super::vnni::accumulate(c, win, rows, cols.clone(), tile, vnni) {
        return;
    }
    portable_accumulate(c, win, rows, cols, tile);
}

/// [`accumulate`] in portable Rust: per output, one dot product per kernel row over
/// `k · C_in` contiguous inputs and weights.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma",
    "x86_64+avx2+fma"
))]
pub(super) fn portable_accumulate(
    c: &Conv<'_>,
    win: &Window<'_>,
    rows: usize,
    cols: core::ops::Range<usize>,
    tile: &mut [i32],
) {
    let (k, ci, co) = (c.kernel, c.in_channels, c.out_channels);
    let row_taps = k * ci;
    let n = cols.len();
    for dy in 0..rows {
        for (i, x) in cols.clone().enumerate() {
            let out = &mut tile[(dy * n + i) * co..(dy * n + i + 1) * co];
            for (ch, acc) in out.iter_mut().enumerate() {
                let mut sum = le_i32(c.bias, ch);
                for ky in 0..k {
                    let xs = win
                        .row(dy + ky)
                        .get(x * ci..x * ci + row_taps)
                        .unwrap_or(&[]);
                    let at = (ch * k + ky) * row_taps;
                    let ws = c.weight.get(at..at + row_taps).unwrap_or(&[]);
                    sum += dot(xs, ws, c.zp_in);
                }
                *acc = sum;
            }
        }
    }
}

/// `Σ w·(x − zp)`: widening multiplies LLVM vectorises.
#[inline(always)]
fn dot(xs: &[u8], ws: &[u8], zp: i32) -> i32 {
    xs.iter()
        .zip(ws)
        .map(|(&x, &w)| (i32::from(x) - zp) * i32::from(w as i8))
        .sum()
}

/// Adds one input row (flat inputs `first..first + row.len()`) to a dense layer's
/// sums (`i32` little-endian in `acc`).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma",
    "x86_64+avx2+fma"
))]
pub(super) fn dense_row(d: &Dense<'_>, row: &[u8], first: usize, acc: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if super::vnni::dense_row(d, row, first, acc) {
        return;
    }
    for (n, a) in acc.chunks_exact_mut(4).enumerate() {
        let w = d
            .weight
            .get(n * d.inputs + first..n * d.inputs + first + row.len())
            .unwrap_or(&[]);
        let sum = i32::from_le_bytes([a[0], a[1], a[2], a[3]]) + dot(row, w, d.zp_in);
        a.copy_from_slice(&sum.to_le_bytes());
    }
}

/// Channels finished together on hosts: the rescale's branch-free 64-bit lanes
/// vectorise.
const LANES: usize = 16;

/// The `u8` activations of one pixel's accumulators, channels `0..acc.len()`.
///
/// Compiled for AVX-512/AVX2 and the baseline, picked at run time (`multiversion`).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma",
    "x86_64+avx2+fma"
))]
pub(super) fn finish_channels(out: &OutputStage<'_>, acc: &[i32], dst: &mut [u8]) {
    let OutputStage::Requant {
        params,
        zero_point,
        relu,
    } = *out
    else {
        for (c, (o, &a)) in dst.iter_mut().zip(acc).enumerate() {
            *o = Finisher::reference(out, c).hidden(a);
        }
        return;
    };
    let floor = if relu { zero_point } else { i32::MIN };
    let mut blocks = acc.chunks_exact(LANES);
    let mut outs = dst.chunks_exact_mut(LANES);
    let mut words = params.chunks_exact(8 * LANES);
    for ((a, o), p) in (&mut blocks).zip(&mut outs).zip(&mut words) {
        // Decoded once per block so the lanes below are straight-line (vectorised).
        let mut multiplier = [0i32; LANES];
        let mut shift = [0i32; LANES];
        for (j, word) in p.chunks_exact(8).enumerate() {
            multiplier[j] = le_i32(word, 0);
            shift[j] = le_i32(word, 1);
        }
        for j in 0..LANES {
            let r = Requant {
                multiplier: multiplier[j],
                shift: shift[j],
            };
            o[j] = r
                .apply(a[j])
                .saturating_add(zero_point)
                .max(floor)
                .clamp(0, 255) as u8;
        }
    }
    let done = acc.len() - blocks.remainder().len();
    for (j, (o, &a)) in outs
        .into_remainder()
        .iter_mut()
        .zip(blocks.remainder())
        .enumerate()
    {
        *o = Finisher::reference(out, done + j).hidden(a);
    }
}
