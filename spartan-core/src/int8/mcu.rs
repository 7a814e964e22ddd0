//! Kernels for microcontrollers: convolutions in blocks of four output pixels.
//!
//! A block's inputs are *staged* first: each pixel's `k·k·C_in` taps, widened to
//! 16-bit lanes minus the zero point ([`dsp::widen`]), interleaved group by group (four
//! taps) so that one `LDM` loads two pixels' group. Every output channel then reads
//! its weights once per group for all four pixels ([`dsp::block4`]): staging costs one
//! pass over the taps per block, the multiply-adds run 32 channels times over them.
//!
//! Blocks are one row of four pixels, or — when the conv is fused with a 2×2 max-pool —
//! a 2×2 window, whose four accumulators reduce to their maximum before the single
//! rescale. Scratch: one staged block, in the caller's arena.

use super::dsp::{self, GROUP_BYTES};
use super::exec::{Conv, Dense, Window};
use super::kernels::Finisher;
use super::record::le_i32;

/// Arena bytes to stage one block of a conv with `taps` taps per output pixel.
pub(super) fn scratch_bytes(taps: usize) -> usize {
    4 * taps.div_ceil(4) * GROUP_BYTES
}

/// One output row of a conv — or, `pooled`, one row of its 2×2 max-pool from two conv
/// rows (window rows 0..=k) — into `dst` (`u8`, pixels × channels).
pub(super) fn conv_row(
    c: &Conv<'_>,
    win: &Window<'_>,
    pooled: bool,
    dst: &mut [u8],
    scratch: &mut [u8],
) {
    let co = c.out_channels;
    if pooled {
        for q in 0..c.out_width / 2 {
            let x = 2 * q;
            let staged = stage(c, win, &[(0, x), (0, x + 1), (1, x), (1, x + 1)], scratch);
            for ch in 0..co {
                let [a, b, d, e] = channel4(c, ch, staged);
                let f = Finisher::new(&c.out, ch, c.acc_bound);
                dst[q * co + ch] = f.hidden(a.max(b).max(d.max(e)));
            }
        }
        return;
    }
    let mut x = 0;
    while x + 4 <= c.out_width {
        let staged = stage(
            c,
            win,
            &[(0, x), (0, x + 1), (0, x + 2), (0, x + 3)],
            scratch,
        );
        for ch in 0..co {
            let acc = channel4(c, ch, staged);
            let f = Finisher::new(&c.out, ch, c.acc_bound);
            for (p, &a) in acc.iter().enumerate() {
                dst[(x + p) * co + ch] = f.hidden(a);
            }
        }
        x += 4;
    }
    while x < c.out_width {
        // The row's last one or two pixels (a lone one is staged twice).
        let x1 = (x + 1).min(c.out_width - 1);
        let staged = stage(c, win, &[(0, x), (0, x1)], scratch);
        for ch in 0..co {
            let acc = channel2(c, ch, staged);
            let f = Finisher::new(&c.out, ch, c.acc_bound);
            dst[x * co + ch] = f.hidden(acc[0]);
            dst[x1 * co + ch] = f.hidden(acc[1]);
        }
        x += 2;
    }
}

/// Accumulators of channel `ch` for the four staged pixels.
#[inline(always)]
fn channel4(c: &Conv<'_>, ch: usize, staged: &[u8]) -> [i32; 4] {
    let taps = c.kernel * c.kernel * c.in_channels;
    let w = c.weight.get(ch * taps..(ch + 1) * taps).unwrap_or(&[]);
    let acc = dsp::block4(staged, w, [le_i32(c.bias, ch); 4]);
    tail::<4>(staged, w, acc)
}

/// Accumulators of channel `ch` for the two staged pixels.
#[inline(always)]
fn channel2(c: &Conv<'_>, ch: usize, staged: &[u8]) -> [i32; 2] {
    let taps = c.kernel * c.kernel * c.in_channels;
    let w = c.weight.get(ch * taps..(ch + 1) * taps).unwrap_or(&[]);
    let acc = dsp::block2(staged, w, [le_i32(c.bias, ch); 2]);
    tail::<2>(staged, w, acc)
}

/// The taps after the last whole group of four (`taps % 4` of them), one at a time:
/// weights past a channel's end belong to the next channel and are not read.
#[inline(always)]
fn tail<const P: usize>(staged: &[u8], w: &[u8], mut acc: [i32; P]) -> [i32; P] {
    let whole = w.len() / 4;
    let group = &staged[(whole * P * GROUP_BYTES).min(staged.len())..];
    for (i, &wt) in w[4 * whole..].iter().enumerate() {
        let (word, half) = (i & 1, (i >> 1) as u32);
        for (p, a) in acc.iter_mut().enumerate() {
            let x = dsp::lane(dsp::staged_word(group, 2 * p + word), half);
            *a += i32::from(wt as i8) * x;
        }
    }
    acc
}

/// Stages the taps of the output pixels `(dy, x)` (dy: row within the window) for the
/// block kernels; returns the staged bytes.
fn stage<'s>(
    c: &Conv<'_>,
    win: &Window<'_>,
    pixels: &[(usize, usize)],
    scratch: &'s mut [u8],
) -> &'s [u8] {
    let (k, ci) = (c.kernel, c.in_channels);
    let taps = k * k * ci;
    let p_count = pixels.len();
    let stride = p_count * GROUP_BYTES;
    let len = taps.div_ceil(4) * stride;
    let Some(out) = scratch.get_mut(..len) else {
        return &[];
    };
    let zp2 = (c.zp_in as u32 & 0xFFFF) * 0x0001_0001;
    let row_taps = k * ci;
    for (p, &(dy, x)) in pixels.iter().enumerate() {
        if row_taps.is_multiple_of(4) {
            // Whole groups per kernel row: four input bytes widen to two words.
            for ky in 0..k {
                let src = win
                    .row(dy + ky)
                    .get(x * ci..x * ci + row_taps)
                    .unwrap_or(&[]);
                let first = ky * row_taps / 4;
                for (quad, group) in src
                    .chunks_exact(4)
                    .zip(out[first * stride..].chunks_exact_mut(stride))
                {
                    let [even, odd] = dsp::widen(dsp::weight_word(quad), zp2);
                    group[p * GROUP_BYTES..p * GROUP_BYTES + 4]
                        .copy_from_slice(&even.to_le_bytes());
                    group[p * GROUP_BYTES + 4..(p + 1) * GROUP_BYTES]
                        .copy_from_slice(&odd.to_le_bytes());
                }
            }
        } else {
            // Groups straddle kernel rows (e.g. one input channel): tap by tap, the last
            // group padded with zeros.
            for g in 0..taps.div_ceil(4) {
                let mut lanes = [0i32; 4];
                for (i, lane) in lanes.iter_mut().enumerate() {
                    let t = 4 * g + i;
                    if t < taps {
                        let (ky, r) = (t / row_taps, t % row_taps);
                        let v = win.row(dy + ky).get(x * ci + r).copied().unwrap_or(0);
                        *lane = i32::from(v) - c.zp_in;
                    }
                }
                let at = g * stride + p * GROUP_BYTES;
                let word = |lo: i32, hi: i32| (lo as u16 as u32) | ((hi as u16 as u32) << 16);
                out[at..at + 4].copy_from_slice(&word(lanes[0], lanes[2]).to_le_bytes());
                out[at + 4..at + 8].copy_from_slice(&word(lanes[1], lanes[3]).to_le_bytes());
            }
        }
    }
    out
}

/// Adds one input row (flat inputs `first..first + row.len()`) to a dense layer's
/// sums (`i32` little-endian in `acc`).
pub(super) fn dense_row(d: &Dense<'_>, row: &[u8], first: usize, acc: &mut [u8]) {
    let zp2 = (d.zp_in as u32 & 0xFFFF) * 0x0001_0001;
    for (n, a) in acc.chunks_exact_mut(4).enumerate() {
        let w = d
            .weight
            .get(n * d.inputs + first..n * d.inputs + first + row.len())
            .unwrap_or(&[]);
        let mut sum = i32::from_le_bytes([a[0], a[1], a[2], a[3]]);
        let mut xs = row.chunks_exact(4);
        let mut ws = w.chunks_exact(4);
        for (xq, wq) in (&mut xs).zip(&mut ws) {
            sum = dsp::mac_group(
                dsp::widen(dsp::weight_word(xq), zp2),
                dsp::weight_word(wq),
                sum,
            );
        }
        for (&x, &wt) in xs.remainder().iter().zip(ws.remainder()) {
            sum += i32::from(wt as i8) * (i32::from(x) - d.zp_in);
        }
        a.copy_from_slice(&sum.to_le_bytes());
    }
}
