//! The int8 convolution's accumulators on x86-64 hosts with AVX-512 VNNI.
//!
//! `vpdpbusd` multiplies four `u8` activations by four `i8` weights and adds the four
//! products into an `i32` lane: 64 multiply-adds an instruction, against 16 for the
//! portable kernel's widening multiplies. That is what brings batch-1 latency of the
//! standard network under 0.1 ms (`spartan bench infer`).
//!
//! Same integers as the portable kernel: `Σ w·(x − zp) = Σ w·x − zp·Σ w` in wrapping
//! `i32` arithmetic, and validation at load guarantees the true accumulator fits an
//! `i32`, so the wrapping sum is exact.
//!
//! Its `unsafe`: unaligned vector loads and stores of bounds-checked arrays, and the call
//! into the feature-gated kernel after runtime detection.
#![allow(unsafe_code)]

use core::arch::x86_64::*;
use core::ops::Range;

use super::exec::{Conv, Window};
use super::model::OutputStage;
use super::record::le_i32;

/// Output channels per vector.
const LANES: usize = 16;

/// Whether this CPU runs [`accumulate`] (the result is cached by `std`).
fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512dq")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vnni")
}

/// Interleaved weight vectors one channel block can hold (16 KiB); larger fan-ins (more
/// than 256 quads of taps, `k·⌈k·C_in/4⌉`) take the portable kernel.
const MAX_QUADS: usize = 256;

/// The interleaved weights of one channel block, made once per inference.
pub(super) struct Scratch {
    packed: [__m512i; MAX_QUADS],
}

impl Scratch {
    pub(super) fn new() -> Self {
        // SAFETY: a zero vector needs only SSE2, which every x86-64 CPU has.
        Scratch {
            packed: [unsafe { _mm512_setzero_si512() }; MAX_QUADS],
        }
    }
}

/// Accumulators of output columns `cols` of conv rows `0..rows` of the window into
/// `tile` (`[dy][x][channel]`), if the CPU has AVX-512 VNNI and the fan-in fits; `false`
/// leaves it to the portable kernel.
pub(super) fn accumulate(
    c: &Conv<'_>,
    win: &Window<'_>,
    rows: usize,
    cols: Range<usize>,
    tile: &mut [i32],
    scratch: &mut Scratch,
) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: `accumulate_vnni` only needs the target features checked just above.
    unsafe { accumulate_vnni(c, win, rows, cols, tile, &mut scratch.packed) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
fn accumulate_vnni(
    c: &Conv<'_>,
    win: &Window<'_>,
    rows: usize,
    cols: Range<usize>,
    tile: &mut [i32],
    packed: &mut [__m512i; MAX_QUADS],
) -> bool {
    let row_quads = (c.kernel * c.in_channels).div_ceil(4);
    let quads = c.kernel * row_quads;
    if quads > MAX_QUADS || tile.len() < rows * cols.len() * c.out_channels {
        return false;
    }
    let packed = &mut packed[..quads];
    for cb in (0..c.out_channels).step_by(LANES) {
        let valid = (c.out_channels - cb).min(LANES);
        let block = Block {
            offset: pack_block(c, cb, valid, packed),
            cb,
            valid,
            cols: cols.clone(),
        };
        for dy in 0..rows {
            let mut ox = cols.start;
            while ox < cols.end {
                // Several output pixels share each weight vector.
                let pixels = match cols.end - ox {
                    8.. => 8,
                    4.. => 4,
                    _ => 1,
                };
                match pixels {
                    8 => block8(c, win, packed, (dy, ox), &block, tile),
                    4 => block4(c, win, packed, (dy, ox), &block, tile),
                    _ => block1(c, win, packed, (dy, ox), &block, tile),
                }
                ox += pixels;
            }
        }
    }
    true
}

/// Interleaves the weights of channels `cb..cb + valid` into `packed` (per kernel row,
/// quads of taps; lane `j` of quad `q` holds channel `cb + j`'s four taps, missing taps
/// and channels zero) and returns each channel's constant term `bias − zp·Σ w`.
///
/// Runs for every output row (the row pipeline keeps no state between rows), so the
/// common case — kernel rows of whole quads, each channel's quads contiguous — is a
/// 16×16 transpose of 32-bit words rather than a gather.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
fn pack_block(c: &Conv<'_>, cb: usize, valid: usize, packed: &mut [__m512i]) -> __m512i {
    if (c.kernel * c.in_channels).is_multiple_of(4) {
        pack_whole_quads(c, cb, valid, packed);
    } else {
        pack_any(c, cb, valid, packed);
    }
    let mut offset: [i32; LANES] = core::array::from_fn(|j| le_i32(c.bias, cb + j));
    if c.zp_in != 0 {
        let mut weight_sum = _mm512_setzero_si512();
        for &w in packed.iter() {
            weight_sum = _mm512_dpbusd_epi32(weight_sum, _mm512_set1_epi8(1), w);
        }
        let sums = to_array(weight_sum);
        for (o, s) in offset.iter_mut().zip(sums) {
            *o = o.wrapping_sub(c.zp_in.wrapping_mul(s));
        }
    }
    // SAFETY: `offset` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(offset.as_ptr().cast()) }
}

/// [`pack_block`] when each channel's `k·k·C_in` taps are whole quads: sixteen channels'
/// rows of sixteen quads, transposed.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
fn pack_whole_quads(c: &Conv<'_>, cb: usize, valid: usize, packed: &mut [__m512i]) {
    let fan_in = c.kernel * c.kernel * c.in_channels;
    let quads = packed.len();
    for first in (0..quads).step_by(LANES) {
        let n = (quads - first).min(LANES);
        let mask = (((1u32 << n) - 1) & 0xFFFF) as __mmask16;
        let load = |rows: &mut [__m512i; LANES]| {
            for (j, row) in rows.iter_mut().enumerate() {
                let at = (cb + j) * fan_in + 4 * first;
                *row = match c.weight.get(at..at + 4 * n) {
                    // SAFETY: the mask enables the first `n` words, all within `w`.
                    Some(w) if j < valid => unsafe {
                        _mm512_maskz_loadu_epi32(mask, w.as_ptr().cast())
                    },
                    _ => _mm512_setzero_si512(),
                };
            }
            transpose16(rows);
        };
        // Whole chunks are transposed where they are kept; the last one through a copy.
        match packed
            .get_mut(first..first + LANES)
            .map(<&mut [__m512i; LANES]>::try_from)
        {
            Some(Ok(rows)) => load(rows),
            _ => {
                let mut rows = [_mm512_setzero_si512(); LANES];
                load(&mut rows);
                if let Some(dst) = packed.get_mut(first..first + n) {
                    dst.copy_from_slice(&rows[..n]);
                }
            }
        }
    }
}

/// [`pack_block`] for any kernel row: quad by quad, lane by lane.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
fn pack_any(c: &Conv<'_>, cb: usize, valid: usize, packed: &mut [__m512i]) {
    let row_taps = c.kernel * c.in_channels;
    let fan_in = c.kernel * row_taps;
    let row_quads = row_taps.div_ceil(4);
    for (q, slot) in packed.iter_mut().enumerate() {
        let (ky, t) = (q / row_quads, 4 * (q % row_quads));
        let taps = (row_taps - t).min(4);
        let mut lanes = [0u8; 4 * LANES];
        for (j, lane) in lanes.chunks_exact_mut(4).enumerate().take(valid) {
            let at = (cb + j) * fan_in + ky * row_taps + t;
            if let Some(w) = c.weight.get(at..at + taps) {
                lane[..taps].copy_from_slice(w);
            }
        }
        // SAFETY: `lanes` is 64 readable bytes; the load is unaligned.
        *slot = unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) };
    }
}

/// Transposes sixteen vectors of sixteen 32-bit words (`r[i][j]` becomes `r[j][i]`):
/// pairs of words, then pairs of pairs within 128-bit lanes, then the lanes themselves.
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512i; LANES]) {
    let mut a = [_mm512_setzero_si512(); LANES];
    for i in 0..8 {
        a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // b[4i + m], 128-bit lane L: column 4L + m of rows 4i..4i + 4.
    let mut b = [_mm512_setzero_si512(); LANES];
    for i in 0..4 {
        b[4 * i] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
        b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
    // Column 4L + m gathers lane L of b[m], b[4 + m], b[8 + m], b[12 + m].
    for m in 0..4 {
        let t0 = _mm512_shuffle_i32x4::<0x88>(b[m], b[4 + m]);
        let t1 = _mm512_shuffle_i32x4::<0xDD>(b[m], b[4 + m]);
        let t2 = _mm512_shuffle_i32x4::<0x88>(b[8 + m], b[12 + m]);
        let t3 = _mm512_shuffle_i32x4::<0xDD>(b[8 + m], b[12 + m]);
        r[m] = _mm512_shuffle_i32x4::<0x88>(t0, t2);
        r[4 + m] = _mm512_shuffle_i32x4::<0x88>(t1, t3);
        r[8 + m] = _mm512_shuffle_i32x4::<0xDD>(t0, t2);
        r[12 + m] = _mm512_shuffle_i32x4::<0xDD>(t1, t3);
    }
}

/// One 16-channel block of the row: its constant terms and where it goes in the tile.
struct Block {
    /// `bias − zp·Σ w` per channel.
    offset: __m512i,
    cb: usize,
    /// Channels of the block that exist.
    valid: usize,
    cols: Range<usize>,
}

/// One channel block's requantisation as 64-bit lanes (low and high eight channels),
/// with the rounding masks precomputed: decoded once per block, applied per pixel.
#[derive(Clone, Copy)]
struct BlockRequant {
    multiplier: [__m512i; 2],
    left: [__m512i; 2],
    right: [__m512i; 2],
    /// `2^right − 1`.
    mask: [__m512i; 2],
    /// `mask / 2`.
    half: [__m512i; 2],
    zero_point: i32,
    floor: i32,
}

/// The requantisation of channels `cb..cb + 16`, if the stage is one.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
fn decode_requant(params: &[u8], zero_point: i32, relu: bool, cb: usize) -> Option<BlockRequant> {
    let block = params.get(8 * cb..8 * (cb + LANES))?;
    let lanes = |f: &dyn Fn(usize) -> i64| -> [__m512i; 2] {
        let v: [i64; LANES] = core::array::from_fn(f);
        [
            _mm512_set_epi64(v[7], v[6], v[5], v[4], v[3], v[2], v[1], v[0]),
            _mm512_set_epi64(v[15], v[14], v[13], v[12], v[11], v[10], v[9], v[8]),
        ]
    };
    let multiplier = |j: usize| i64::from(le_i32(block, 2 * j));
    let shift = |j: usize| i64::from(le_i32(block, 2 * j + 1));
    let right = |j: usize| (-shift(j)).clamp(0, 31);
    Some(BlockRequant {
        multiplier: lanes(&multiplier),
        left: lanes(&|j| shift(j).clamp(0, 31)),
        right: lanes(&right),
        mask: lanes(&|j| (1i64 << right(j)) - 1),
        half: lanes(&|j| ((1i64 << right(j)) - 1) >> 1),
        zero_point,
        floor: if relu { zero_point } else { i32::MIN },
    })
}

/// [`Requant::apply`] on sixteen accumulators, then the zero point and the ReLU floor,
/// clamped to `u8`.
///
/// Valid multipliers lie in `[2^30, 2^31)` or are 0, so gemmlowp's `MIN · MIN`
/// saturation never arises and `vpmuldq` (signed 32 × 32 → 64) is exact.
///
/// [`Requant::apply`]: crate::quant::Requant::apply
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
fn requantize(acc: __m512i, r: &BlockRequant) -> __m128i {
    let halves = [
        _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc)),
        _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(acc)),
    ];
    let zero = _mm512_setzero_si512();
    let one = _mm512_set1_epi64(1);
    let mut out = [_mm256_setzero_si256(); 2];
    for (h, x) in halves.into_iter().enumerate() {
        let scaled = _mm512_sllv_epi64(x, r.left[h]);
        let scaled = _mm512_max_epi64(
            _mm512_min_epi64(scaled, _mm512_set1_epi64(i64::from(i32::MAX))),
            _mm512_set1_epi64(i64::from(i32::MIN)),
        );
        // SaturatingRoundingDoublingHighMul: nudge, then truncate toward zero.
        let ab = _mm512_mul_epi32(scaled, r.multiplier[h]);
        let negative = _mm512_cmplt_epi64_mask(ab, zero);
        let nudge = _mm512_mask_blend_epi64(
            negative,
            _mm512_set1_epi64(1 << 30),
            _mm512_set1_epi64(1 - (1 << 30)),
        );
        let v = _mm512_add_epi64(ab, nudge);
        let v = _mm512_mask_add_epi64(
            v,
            _mm512_cmplt_epi64_mask(v, zero),
            v,
            _mm512_set1_epi64((1 << 31) - 1),
        );
        let high = _mm512_srai_epi64::<31>(v);
        // RoundingDivideByPOT: ties away from zero.
        let threshold = _mm512_mask_add_epi64(
            r.half[h],
            _mm512_cmplt_epi64_mask(high, zero),
            r.half[h],
            one,
        );
        let remainder = _mm512_and_si512(high, r.mask[h]);
        let q = _mm512_srav_epi64(high, r.right[h]);
        let q = _mm512_mask_add_epi64(q, _mm512_cmpgt_epi64_mask(remainder, threshold), q, one);
        // Zero point, floor, then the u8 range (what saturating to i32 first would
        // give, as the clamp to u8 follows anyway).
        let q = _mm512_add_epi64(q, _mm512_set1_epi64(i64::from(r.zero_point)));
        let q = _mm512_max_epi64(q, _mm512_set1_epi64(i64::from(r.floor)));
        let q = _mm512_min_epi64(_mm512_max_epi64(q, zero), _mm512_set1_epi64(255));
        out[h] = _mm512_cvtepi64_epi32(q);
    }
    let words = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(out[0]), out[1]);
    _mm512_cvtepi32_epi8(words)
}

/// The `u8` outputs of pixels' accumulators (`tile`, `co` channels innermost) into
/// `dst`, sixteen channels at a time with the rescale decoded once per call, if the
/// output stage is a rescale and the CPU has AVX-512; `false` leaves them to the
/// portable output stage.
pub(super) fn finish_pixels(
    out: &OutputStage<'_>,
    tile: &[i32],
    co: usize,
    dst: &mut [u8],
) -> bool {
    if !available() {
        return false;
    }
    let OutputStage::Requant {
        params,
        zero_point,
        relu,
    } = *out
    else {
        return false;
    };
    // SAFETY: `finish_vnni` only needs the target features checked just above.
    unsafe { finish_vnni(out, params, zero_point, relu, tile, co, dst) };
    true
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
fn finish_vnni(
    out: &OutputStage<'_>,
    params: &[u8],
    zero_point: i32,
    relu: bool,
    tile: &[i32],
    co: usize,
    dst: &mut [u8],
) {
    let full = co / LANES * LANES;
    for cb in (0..full).step_by(LANES) {
        let Some(r) = decode_requant(params, zero_point, relu, cb) else {
            continue;
        };
        for (acc, o) in tile.chunks_exact(co).zip(dst.chunks_exact_mut(co)) {
            if let (Some(a), Some(o)) = (acc.get(cb..cb + LANES), o.get_mut(cb..cb + LANES)) {
                // SAFETY: `a` is 64 readable bytes and `o` 16 writable ones; unaligned.
                unsafe {
                    let v = requantize(_mm512_loadu_si512(a.as_ptr().cast()), &r);
                    _mm_storeu_si128(o.as_mut_ptr().cast(), v);
                }
            }
        }
    }
    for (acc, o) in tile.chunks_exact(co).zip(dst.chunks_exact_mut(co)) {
        for (ch, (&a, o)) in acc.iter().zip(o.iter_mut()).enumerate().skip(full) {
            *o = super::kernels::Finisher::reference(out, ch).hidden(a);
        }
    }
}

/// Adds one input row of a dense layer to its sums (`i32` little-endian in `acc`) with
/// `vpdpbusd`, 64 inputs at a time (`Σ w·(x − zp) = Σ w·x − zp·Σ w`), if the CPU has it.
pub(super) fn dense_row(
    d: &super::exec::Dense<'_>,
    row: &[u8],
    first: usize,
    acc: &mut [u8],
) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: `dense_vnni` only needs the target features checked just above.
    unsafe { dense_vnni(d, row, first, acc) };
    true
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
fn dense_vnni(d: &super::exec::Dense<'_>, row: &[u8], first: usize, acc: &mut [u8]) {
    let len = row.len();
    let ones = _mm512_set1_epi8(1);
    for (n, a) in acc.chunks_exact_mut(4).enumerate() {
        let at = n * d.inputs + first;
        let Some(w) = d.weight.get(at..at + len) else {
            continue;
        };
        let (mut sum, mut wsum) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        for (x, w) in row.chunks(64).zip(w.chunks(64)) {
            let mask = if x.len() == 64 {
                u64::MAX
            } else {
                (1u64 << x.len()) - 1
            };
            // SAFETY: the mask enables the first `x.len()` bytes, within `x` and `w`.
            let (xv, wv) = unsafe {
                (
                    _mm512_maskz_loadu_epi8(mask, x.as_ptr().cast()),
                    _mm512_maskz_loadu_epi8(mask, w.as_ptr().cast()),
                )
            };
            sum = _mm512_dpbusd_epi32(sum, xv, wv);
            wsum = _mm512_dpbusd_epi32(wsum, ones, wv);
        }
        let dot = _mm512_reduce_add_epi32(sum)
            .wrapping_sub(d.zp_in.wrapping_mul(_mm512_reduce_add_epi32(wsum)));
        let total = i32::from_le_bytes([a[0], a[1], a[2], a[3]]).wrapping_add(dot);
        a.copy_from_slice(&total.to_le_bytes());
    }
}

/// Defines `$name`: `P` neighbouring output pixels from `(dy, ox)`, channels
/// `cb..cb + 16` — accumulate `Σ w·x`, add the offsets, store in the tile. One named
/// accumulator per pixel: LLVM keeps named vectors in registers, not arrays of them.
macro_rules! pixel_block {
    ($name:ident, $($acc:ident $acc_x:ident @ $p:literal),+) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
        fn $name(
            c: &Conv<'_>,
            win: &Window<'_>,
            packed: &[__m512i],
            (dy, ox): (usize, usize),
            block: &Block,
            tile: &mut [i32],
        ) {
            let ci = c.in_channels;
            let row_quads = (c.kernel * ci).div_ceil(4);
            $(let mut $acc = _mm512_setzero_si512();)+
            let len = 4 * row_quads;
            for (ky, row_weights) in packed.chunks_exact(row_quads).enumerate() {
                let xs = win.row(dy + ky).get(ox * ci..).unwrap_or(&[]);
                if let ($(Some($acc_x),)+) = ($(xs.get($p * ci..$p * ci + len),)+) {
                    // Hot path: every read in bounds, checked once per kernel row.
                    for (q, &w) in row_weights.iter().enumerate() {
                        $($acc = _mm512_dpbusd_epi32(
                            $acc,
                            _mm512_set1_epi32(quad_at($acc_x, 4 * q)),
                            w,
                        );)+
                    }
                } else {
                    for (q, &w) in row_weights.iter().enumerate() {
                        $($acc = _mm512_dpbusd_epi32(
                            $acc,
                            _mm512_set1_epi32(input_quad(xs, $p * ci + 4 * q)),
                            w,
                        );)+
                    }
                }
            }
            $(store_pixel($acc, c, (dy, ox + $p), block, tile);)+
        }
    };
}

pixel_block!(block8, a0 x0 @ 0, a1 x1 @ 1, a2 x2 @ 2, a3 x3 @ 3, a4 x4 @ 4, a5 x5 @ 5, a6 x6 @ 6, a7 x7 @ 7);
pixel_block!(block4, a0 x0 @ 0, a1 x1 @ 1, a2 x2 @ 2, a3 x3 @ 3);
pixel_block!(block1, a0 x0 @ 0);

/// Adds the offsets to one pixel's accumulators and stores the block's valid channels.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
fn store_pixel(
    acc: __m512i,
    c: &Conv<'_>,
    (dy, x): (usize, usize),
    block: &Block,
    tile: &mut [i32],
) {
    let acc = _mm512_add_epi32(acc, block.offset);
    let n = block.cols.len();
    let at = (dy * n + x - block.cols.start) * c.out_channels + block.cb;
    if let Some(dst) = tile.get_mut(at..at + block.valid) {
        let mask = (((1u32 << block.valid) - 1) & 0xFFFF) as __mmask16;
        // SAFETY: the mask enables `valid` words, all within `dst`; unaligned store.
        unsafe { _mm512_mask_storeu_epi32(dst.as_mut_ptr().cast(), mask, acc) };
    }
}

/// Four input bytes from `at`, known to be in bounds.
#[inline(always)]
fn quad_at(x: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([x[at], x[at + 1], x[at + 2], x[at + 3]])
}

/// Four consecutive input bytes from `at` as one `i32`, zeros past the end (only at a
/// row's last pixel). Bytes past a kernel row's last tap meet zero weights.
#[inline(always)]
fn input_quad(x: &[u8], at: usize) -> i32 {
    if let Some(Ok(q)) = x.get(at..at + 4).map(<[u8; 4]>::try_from) {
        return i32::from_le_bytes(q);
    }
    let mut q = [0u8; 4];
    for (d, s) in q.iter_mut().zip(x.get(at..).unwrap_or(&[])) {
        *d = *s;
    }
    i32::from_le_bytes(q)
}

/// The sixteen `i32` lanes of `v`.
#[target_feature(enable = "avx512f")]
fn to_array(v: __m512i) -> [i32; LANES] {
    let mut a = [0i32; LANES];
    // SAFETY: `a` is 64 writable bytes; the store is unaligned.
    unsafe { _mm512_storeu_si512(a.as_mut_ptr().cast(), v) };
    a
}

#[cfg(test)]
mod tests {
    use super::super::host::portable_accumulate;
    use super::*;
    use crate::int8::OutputStage;
    use crate::test_rng::XorShift as Rng;

    /// A random conv row: window rows, weights (OHWI), biases, zero point.
    struct Case {
        kernel: usize,
        in_channels: usize,
        out_channels: usize,
        in_width: usize,
        rows: usize,
        slots: usize,
        first: usize,
        window: Vec<u8>,
        weight: Vec<u8>,
        bias: Vec<u8>,
        zp: i32,
    }

    fn random_case(rng: &mut Rng) -> Case {
        let kernel = 1 + rng.below(3);
        let in_channels = 1 + rng.below(40);
        let out_channels = 1 + rng.below(40);
        let in_width = kernel + rng.below(19);
        let rows = 1 + rng.below(2);
        let slots = kernel + rows - 1 + rng.below(2);
        let binary = rng.below(3) == 0;
        let window = (0..slots * in_width * in_channels)
            .map(|_| {
                if binary {
                    (rng.next_u64() & 1) as u8
                } else {
                    rng.next_u64() as u8
                }
            })
            .collect();
        let weight = (0..kernel * kernel * in_channels * out_channels)
            .map(|_| rng.next_u64() as u8)
            .collect();
        let bias = (0..out_channels)
            .flat_map(|_| ((rng.next_u64() % 200_001) as i32 - 100_000).to_le_bytes())
            .collect();
        Case {
            kernel,
            in_channels,
            out_channels,
            in_width,
            rows,
            slots,
            first: rng.below(slots),
            window,
            weight,
            bias,
            zp: if binary { 0 } else { rng.below(256) as i32 },
        }
    }

    #[test]
    fn vnni_accumulators_equal_the_portable_ones() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for _ in 0..500 {
            let case = random_case(&mut rng);
            let out_width = case.in_width - case.kernel + 1;
            let c = Conv {
                weight: &case.weight,
                bias: &case.bias,
                zp_in: case.zp,
                out: OutputStage::Step,
                acc_bound: 0,
                kernel: case.kernel,
                in_channels: case.in_channels,
                out_channels: case.out_channels,
                out_width,
            };
            let win = Window {
                rows: &case.window,
                slots: case.slots,
                row_len: case.in_width * case.in_channels,
                first: case.first,
            };
            let x0 = rng.below(out_width);
            let cols = x0..out_width;
            let n = case.rows * cols.len() * case.out_channels;
            let (mut vnni, mut portable) = (vec![0i32; n], vec![1i32; n]);
            assert!(accumulate(
                &c,
                &win,
                case.rows,
                cols.clone(),
                &mut vnni,
                &mut Scratch::new()
            ));
            portable_accumulate(&c, &win, case.rows, cols, &mut portable);
            assert_eq!(vnni, portable);
        }
    }

    #[test]
    fn vector_output_stage_equals_the_scalar_one() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let edges = [
            0,
            1,
            -1,
            i32::MAX,
            i32::MIN,
            i32::MAX - 1,
            i32::MIN + 1,
            1 << 20,
        ];
        for round in 0..2_000 {
            let co = 1 + rng.below(40);
            let params: Vec<u8> = (0..co)
                .flat_map(|_| {
                    let r = crate::quant::Requant {
                        multiplier: if rng.below(9) == 0 {
                            0
                        } else {
                            (1 << 30) | (rng.next_u64() >> 34) as i32
                        },
                        shift: rng.below(62) as i32 - 31,
                    };
                    [r.multiplier.to_le_bytes(), r.shift.to_le_bytes()].concat()
                })
                .collect();
            let stage = OutputStage::Requant {
                params: &params,
                zero_point: rng.below(256) as i32,
                relu: rng.below(2) == 0,
            };
            let pixels = 1 + rng.below(4);
            let tile: Vec<i32> = (0..pixels * co)
                .map(|j| match round % 3 {
                    0 => edges[(j + round) % edges.len()],
                    _ => (rng.next_u64() >> 32) as i32 >> rng.below(32),
                })
                .collect();
            let mut got = vec![0u8; pixels * co];
            assert!(finish_pixels(&stage, &tile, co, &mut got));
            let want: Vec<u8> = tile
                .iter()
                .enumerate()
                .map(|(i, &a)| super::super::kernels::Finisher::reference(&stage, i % co).hidden(a))
                .collect();
            assert_eq!(got, want, "{stage:?}");
        }
    }

    #[test]
    fn the_transpose_equals_the_lane_by_lane_packing() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let mut rng = Rng(0x7A5E);
        for _ in 0..200 {
            let kernel = 1 + rng.below(3);
            let in_channels = 4 * (1 + rng.below(12));
            let out_channels = 1 + rng.below(40);
            let weight: Vec<u8> = (0..kernel * kernel * in_channels * out_channels)
                .map(|_| rng.next_u64() as u8)
                .collect();
            let bias = vec![0u8; 4 * out_channels];
            let c = Conv {
                weight: &weight,
                bias: &bias,
                zp_in: 0,
                out: OutputStage::Step,
                acc_bound: 0,
                kernel,
                in_channels,
                out_channels,
                out_width: 1,
            };
            let quads = kernel * kernel * in_channels / 4;
            let cb = 16 * rng.below(out_channels.div_ceil(16));
            let valid = (out_channels - cb).min(16);
            // SAFETY: the CPU has the features (checked above).
            let (fast, slow) = unsafe {
                let mut fast = vec![_mm512_set1_epi32(-1); quads];
                let mut slow = vec![_mm512_set1_epi32(-2); quads];
                pack_whole_quads(&c, cb, valid, &mut fast);
                pack_any(&c, cb, valid, &mut slow);
                (
                    fast.iter().map(|&v| to_array(v)).collect::<Vec<_>>(),
                    slow.iter().map(|&v| to_array(v)).collect::<Vec<_>>(),
                )
            };
            assert_eq!(
                fast, slow,
                "k {kernel} ci {in_channels} co {out_channels} cb {cb}"
            );
        }
    }

    #[test]
    fn fan_ins_beyond_the_weight_buffer_fall_back_to_the_portable_kernel() {
        let ci = 4 * MAX_QUADS + 1;
        let (x, w, b) = (vec![1u8; ci], vec![1u8; 16 * ci], vec![0u8; 64]);
        let c = Conv {
            weight: &w,
            bias: &b,
            zp_in: 0,
            out: OutputStage::Step,
            acc_bound: 0,
            kernel: 1,
            in_channels: ci,
            out_channels: 16,
            out_width: 1,
        };
        let win = Window {
            rows: &x,
            slots: 1,
            row_len: ci,
            first: 0,
        };
        let mut tile = vec![7i32; 16];
        assert!(!accumulate(
            &c,
            &win,
            1,
            0..1,
            &mut tile,
            &mut Scratch::new()
        ));
        assert_eq!(tile, vec![7i32; 16], "nothing written");
    }
}
