//! Kernels for microcontrollers: convolutions in blocks of four output pixels.
//!
//! A block's inputs are *staged* first: each pixel's `k·k·C_in` taps, widened to
//! 16-bit lanes minus the zero point ([`dsp::widen`]), interleaved group by group (four
//! taps) so that one `LDM` loads two pixels' group. Every output channel then reads
//! its weights once per group for all four pixels ([`dsp::channels4`]): staging costs
//! one pass over the taps per block, the multiply-adds run `C_out` times over them.
//!
//! Blocks are one row of four pixels, or — when the conv is fused with a 2×2 max-pool —
//! a 2×2 window, whose four accumulators reduce to their maximum before the single
//! rescale. The output stage's parameters are decoded once per row.
//!
//! Scratch, in the caller's arena: one staged block, its accumulators, and the decoded
//! parameters (16 bytes per output channel each).

use super::dsp::{self, GROUP_BYTES};
use super::exec::{Conv, Dense, Window};
use super::kernels::Finisher;
use super::model::OutputStage;
use super::record::le_i32;
use crate::quant::{NarrowRequant, Requant};

/// Bytes per output channel of accumulators (four pixels).
const CHANNEL_BYTES: usize = 16;
/// Bytes per output channel of decoded output-stage parameters.
const PARAM_BYTES: usize = 20;

/// Arena bytes a conv with `taps` taps per output pixel and `channels` outputs needs.
pub(super) fn scratch_bytes(taps: usize, channels: usize) -> usize {
    staged_bytes(taps) + (CHANNEL_BYTES + PARAM_BYTES) * channels
}

/// Bytes of one staged block of four pixels.
fn staged_bytes(taps: usize) -> usize {
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
    let taps = c.kernel * c.kernel * c.in_channels;
    let co = c.out_channels;
    let Some(scratch) = scratch.get_mut(..scratch_bytes(taps, co)) else {
        return;
    };
    let (staged_buf, rest) = scratch.split_at_mut(staged_bytes(taps));
    let (acc, params) = rest.split_at_mut(CHANNEL_BYTES * co);
    let out = Stage::decode(c, params);
    let params = &*params;
    let mut x = 0;
    while x < c.out_width {
        let block = Block::at(pooled, x, c.out_width);
        let staged = stage(c, win, &block.pixels, staged_buf);
        accumulate(c, staged, acc);
        let Some(dst) = dst.get_mut(block.first * co..) else {
            return;
        };
        out.finish(block.kind, acc, params, dst);
        x += block.advance;
    }
}

/// How a block's accumulators become outputs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A 2×2 pool window: one output, the maximum.
    Pool,
    /// Four pixels of a row.
    Row4,
    /// The last one or two pixels of a row, each computed twice (rows are rarely not
    /// a multiple of four wide: one kernel is less flash than two).
    Pair,
}

/// Four output pixels computed together.
struct Block {
    kind: Kind,
    /// `(row within the window, column)` of each pixel.
    pixels: [(usize, usize); 4],
    /// The first output pixel it writes.
    first: usize,
    /// Columns to the next block.
    advance: usize,
}

impl Block {
    fn at(pooled: bool, x: usize, width: usize) -> Self {
        if pooled {
            return Block {
                kind: Kind::Pool,
                pixels: [(0, x), (0, x + 1), (1, x), (1, x + 1)],
                first: x / 2,
                advance: 2,
            };
        }
        if x + 4 <= width {
            return Block {
                kind: Kind::Row4,
                pixels: [(0, x), (0, x + 1), (0, x + 2), (0, x + 3)],
                first: x,
                advance: 4,
            };
        }
        let x1 = (x + 1).min(width - 1);
        Block {
            kind: Kind::Pair,
            pixels: [(0, x), (0, x1), (0, x), (0, x1)],
            first: x,
            advance: 2,
        }
    }
}

/// Accumulator `i` of a channel's four (`a`: 16 bytes).
#[inline(always)]
fn acc_at(a: &[u8; CHANNEL_BYTES], i: usize) -> i32 {
    i32::from_le_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
}

/// A channel's decoded narrow rescale (`p`: its 20 bytes).
#[inline(always)]
fn narrow_at(p: &[u8; PARAM_BYTES]) -> NarrowRequant {
    NarrowRequant::from_words(core::array::from_fn(|i| {
        u32::from_le_bytes([p[4 * i], p[4 * i + 1], p[4 * i + 2], p[4 * i + 3]])
    }))
}

/// How the row's outputs are finished.
enum Stage<'o> {
    /// Every channel's rescale in its narrow form, decoded into the parameter scratch.
    Narrow { zero_point: i32, floor: i32 },
    /// Anything else, decoded per output.
    Other(&'o OutputStage<'o>, u32),
}

impl<'o> Stage<'o> {
    /// Decodes the output stage of `c` (into `params` when every channel's rescale has
    /// a narrow form).
    fn decode(c: &'o Conv<'o>, params: &mut [u8]) -> Self {
        if let OutputStage::Requant {
            params: raw,
            zero_point,
            relu,
        } = c.out
        {
            let mut all = true;
            for (ch, slot) in params.chunks_exact_mut(PARAM_BYTES).enumerate() {
                let r = Requant {
                    multiplier: le_i32(raw, 2 * ch),
                    shift: le_i32(raw, 2 * ch + 1),
                };
                match NarrowRequant::new(&r, c.acc_bound) {
                    Some(n) => {
                        for (b, w) in slot.chunks_exact_mut(4).zip(n.to_words()) {
                            b.copy_from_slice(&w.to_le_bytes());
                        }
                    }
                    None => all = false,
                }
            }
            if all {
                let floor = if relu { zero_point } else { i32::MIN };
                return Stage::Narrow { zero_point, floor };
            }
        }
        Stage::Other(&c.out, c.acc_bound)
    }

    /// Each channel's outputs of a block into `dst` (from the block's first output
    /// pixel on, channels innermost).
    fn finish(&self, kind: Kind, acc: &[u8], params: &[u8], dst: &mut [u8]) {
        let co = acc.len() / CHANNEL_BYTES;
        let &Stage::Narrow { zero_point, floor } = self else {
            self.finish_any(kind, acc, params, dst);
            return;
        };
        let f = |p: &[u8], a: i32| -> u8 {
            let p: &[u8; PARAM_BYTES] = p.try_into().unwrap_or(&[0; PARAM_BYTES]);
            // `|q| < 2^30`: adding the zero point cannot overflow.
            (narrow_at(p).apply(a) + zero_point)
                .max(floor)
                .clamp(0, 255) as u8
        };
        let channels = acc
            .chunks_exact(CHANNEL_BYTES)
            .zip(params.chunks_exact(PARAM_BYTES));
        match kind {
            Kind::Pool => {
                for ((a, p), o) in channels.zip(dst.iter_mut()) {
                    let a: &[u8; CHANNEL_BYTES] = a.try_into().unwrap_or(&[0; CHANNEL_BYTES]);
                    let m = acc_at(a, 0)
                        .max(acc_at(a, 1))
                        .max(acc_at(a, 2).max(acc_at(a, 3)));
                    *o = f(p, m);
                }
            }
            Kind::Row4 => {
                let (d0, rest) = dst.split_at_mut(co.min(dst.len()));
                let (d1, rest) = rest.split_at_mut(co.min(rest.len()));
                let (d2, d3) = rest.split_at_mut(co.min(rest.len()));
                let outs = d0
                    .iter_mut()
                    .zip(d1.iter_mut())
                    .zip(d2.iter_mut().zip(d3.iter_mut()));
                for ((a, p), ((o0, o1), (o2, o3))) in channels.zip(outs) {
                    let a: &[u8; CHANNEL_BYTES] = a.try_into().unwrap_or(&[0; CHANNEL_BYTES]);
                    *o0 = f(p, acc_at(a, 0));
                    *o1 = f(p, acc_at(a, 1));
                    *o2 = f(p, acc_at(a, 2));
                    *o3 = f(p, acc_at(a, 3));
                }
            }
            Kind::Pair => {
                // The second pixel may not exist (a row of odd width ends with one).
                let (d0, d1) = dst.split_at_mut(co.min(dst.len()));
                for (ch, ((a, p), o0)) in channels.zip(d0.iter_mut()).enumerate() {
                    let a: &[u8; CHANNEL_BYTES] = a.try_into().unwrap_or(&[0; CHANNEL_BYTES]);
                    *o0 = f(p, acc_at(a, 0));
                    if let Some(o1) = d1.get_mut(ch) {
                        *o1 = f(p, acc_at(a, 1));
                    }
                }
            }
        }
    }

    /// [`finish`](Self::finish) for any stage and block, one output at a time.
    #[inline(never)]
    fn finish_any(&self, kind: Kind, acc: &[u8], params: &[u8], dst: &mut [u8]) {
        let co = acc.len() / CHANNEL_BYTES;
        for (ch, a) in acc.chunks_exact(CHANNEL_BYTES).enumerate() {
            let a: &[u8; CHANNEL_BYTES] = a.try_into().unwrap_or(&[0; CHANNEL_BYTES]);
            let f = |v: i32| self.one(params, ch, v);
            let outputs: &[(usize, i32)] = &match kind {
                Kind::Pool => {
                    let m = acc_at(a, 0)
                        .max(acc_at(a, 1))
                        .max(acc_at(a, 2).max(acc_at(a, 3)));
                    [(0, m), (0, m), (0, m), (0, m)]
                }
                Kind::Row4 => [
                    (0, acc_at(a, 0)),
                    (1, acc_at(a, 1)),
                    (2, acc_at(a, 2)),
                    (3, acc_at(a, 3)),
                ],
                Kind::Pair => [
                    (0, acc_at(a, 0)),
                    (1, acc_at(a, 1)),
                    (0, acc_at(a, 0)),
                    (1, acc_at(a, 1)),
                ],
            };
            for &(p, v) in outputs {
                if let Some(o) = dst.get_mut(p * co + ch) {
                    *o = f(v);
                }
            }
        }
    }

    /// The output of accumulator `acc` of channel `ch` (any stage).
    fn one(&self, params: &[u8], ch: usize, acc: i32) -> u8 {
        match *self {
            Stage::Narrow { zero_point, floor } => {
                let p = params.get(ch * PARAM_BYTES..(ch + 1) * PARAM_BYTES);
                match p.and_then(|p| <&[u8; PARAM_BYTES]>::try_from(p).ok()) {
                    // `|q| < 2^30`: adding the zero point cannot overflow.
                    Some(p) => (narrow_at(p).apply(acc) + zero_point)
                        .max(floor)
                        .clamp(0, 255) as u8,
                    None => 0,
                }
            }
            Stage::Other(out, bound) => Finisher::new(out, ch, bound).hidden(acc),
        }
    }
}

/// Accumulators of every channel for the four staged pixels into `acc` (16 bytes per
/// channel).
fn accumulate(c: &Conv<'_>, staged: &[u8], acc: &mut [u8]) {
    let taps = c.kernel * c.kernel * c.in_channels;
    if taps.is_multiple_of(4) {
        dsp::channels4(staged, c.weight, c.bias, taps / 4, acc);
        return;
    }
    accumulate_any(c, staged, acc, taps);
}

/// [`accumulate`] when taps are not whole groups of four.
#[inline(never)]
fn accumulate_any(c: &Conv<'_>, staged: &[u8], acc: &mut [u8], taps: usize) {
    let weights = c.weight.chunks_exact(taps.max(1));
    for (ch, (a, w)) in acc.chunks_exact_mut(CHANNEL_BYTES).zip(weights).enumerate() {
        let sums = tail(staged, w, dsp::block4(staged, w, [le_i32(c.bias, ch); 4]));
        for (b, s) in a.chunks_exact_mut(4).zip(sums) {
            b.copy_from_slice(&s.to_le_bytes());
        }
    }
}

/// The taps after the last whole group of four (`taps % 4` of them), one at a time:
/// weights past a channel's end belong to the next channel and are not read.
fn tail(staged: &[u8], w: &[u8], mut acc: [i32; 4]) -> [i32; 4] {
    let whole = w.len() / 4;
    let group = staged.get(whole * 4 * GROUP_BYTES..).unwrap_or(&[]);
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
    let row_taps = k * ci;
    let stride = pixels.len() * GROUP_BYTES;
    let len = (k * row_taps).div_ceil(4) * stride;
    let Some(out) = scratch.get_mut(..len) else {
        return &[];
    };
    let zp2 = (c.zp_in as u32 & 0xFFFF) * 0x0001_0001;
    let whole_groups = row_taps.is_multiple_of(4);
    if !whole_groups {
        // Padding lanes of the last group stay zero.
        out.fill(0);
    }
    for (p, &(dy, x)) in pixels.iter().enumerate() {
        for ky in 0..k {
            let src = win
                .row(dy + ky)
                .get(x * ci..x * ci + row_taps)
                .unwrap_or(&[]);
            if whole_groups {
                // Four input bytes widen to one group's two words.
                let at = ky * row_taps / 4 * stride + p * GROUP_BYTES;
                let dst = out.get_mut(at..).unwrap_or(&mut []);
                dsp::widen_run(src, zp2, dst);
                continue;
            }
            // Groups straddle kernel rows (e.g. one input channel): tap by tap, into
            // lane `t % 4` of group `t / 4` (lanes (0, 2) in the first word, (1, 3) in
            // the second).
            for (r, &v) in src.iter().enumerate() {
                let t = ky * row_taps + r;
                let (g, lane) = (t / 4, t % 4);
                let at = g * stride + p * GROUP_BYTES + (lane & 1) * 4 + (lane >> 1) * 2;
                let value = (i32::from(v) - c.zp_in) as i16;
                if let Some(d) = out.get_mut(at..at + 2) {
                    d.copy_from_slice(&value.to_le_bytes());
                }
            }
        }
    }
    out
}

/// Arena bytes to stage one dense input row of `row_len` inputs.
pub(super) fn dense_scratch_bytes(row_len: usize) -> usize {
    row_len / 4 * GROUP_BYTES
}

/// Adds one input row (flat inputs `first..first + row.len()`) to a dense layer's
/// sums (`i32` little-endian in `acc`): the row is widened once (as a block's pixel
/// is), then each output reads its weights a word at a time.
pub(super) fn dense_row(
    d: &Dense<'_>,
    row: &[u8],
    first: usize,
    acc: &mut [u8],
    scratch: &mut [u8],
) {
    let zp2 = (d.zp_in as u32 & 0xFFFF) * 0x0001_0001;
    let whole = row.len() / 4;
    let Some(staged) = scratch.get_mut(..whole * GROUP_BYTES) else {
        return;
    };
    for (quad, group) in row
        .chunks_exact(4)
        .zip(staged.chunks_exact_mut(GROUP_BYTES))
    {
        let [even, odd] = dsp::widen(dsp::weight_word(quad), zp2);
        group[..4].copy_from_slice(&even.to_le_bytes());
        group[4..].copy_from_slice(&odd.to_le_bytes());
    }
    let staged = &*staged;
    for (n, a) in acc.chunks_exact_mut(4).enumerate() {
        let at = n * d.inputs + first;
        let w = d.weight.get(at..at + row.len()).unwrap_or(&[]);
        let mut sum = dsp::dot(staged, w);
        let ws = w.chunks_exact(4);
        for (&x, &wt) in row[4 * whole..].iter().zip(ws.remainder()) {
            sum += i32::from(wt as i8) * (i32::from(x) - d.zp_in);
        }
        let sum = sum.wrapping_add(i32::from_le_bytes([a[0], a[1], a[2], a[3]]));
        a.copy_from_slice(&sum.to_le_bytes());
    }
}
