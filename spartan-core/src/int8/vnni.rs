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

/// Interleaved weight vectors one channel block can hold (16 KiB on the stack); larger
/// fan-ins (more than 256 quads of taps, `k·⌈k·C_in/4⌉`) take the portable kernel.
const MAX_QUADS: usize = 256;

/// Accumulators of output columns `cols` of conv rows `0..rows` of the window into
/// `tile` (`[dy][x][channel]`), if the CPU has AVX-512 VNNI and the fan-in fits; `false`
/// leaves it to the portable kernel.
pub(super) fn accumulate(
    c: &Conv<'_>,
    win: &Window<'_>,
    rows: usize,
    cols: Range<usize>,
    tile: &mut [i32],
) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: `accumulate_vnni` only needs the target features checked just above.
    unsafe { accumulate_vnni(c, win, rows, cols, tile) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
fn accumulate_vnni(
    c: &Conv<'_>,
    win: &Window<'_>,
    rows: usize,
    cols: Range<usize>,
    tile: &mut [i32],
) -> bool {
    let row_quads = (c.kernel * c.in_channels).div_ceil(4);
    let quads = c.kernel * row_quads;
    if quads > MAX_QUADS || tile.len() < rows * cols.len() * c.out_channels {
        return false;
    }
    let mut packed = [_mm512_setzero_si512(); MAX_QUADS];
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
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
fn pack_block(c: &Conv<'_>, cb: usize, valid: usize, packed: &mut [__m512i]) -> __m512i {
    let row_taps = c.kernel * c.in_channels;
    let fan_in = c.kernel * row_taps;
    let row_quads = row_taps.div_ceil(4);
    let mut weight_sum = _mm512_setzero_si512();
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
        weight_sum = _mm512_dpbusd_epi32(weight_sum, _mm512_set1_epi8(1), *slot);
    }
    let sums = to_array(weight_sum);
    let offset: [i32; LANES] = core::array::from_fn(|j| {
        le_i32(c.bias, cb + j).wrapping_sub(c.zp_in.wrapping_mul(sums[j]))
    });
    // SAFETY: `offset` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(offset.as_ptr().cast()) }
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
    let acc = to_array(_mm512_add_epi32(acc, block.offset));
    let n = block.cols.len();
    let at = (dy * n + x - block.cols.start) * c.out_channels + block.cb;
    if let Some(dst) = tile.get_mut(at..at + block.valid) {
        dst.copy_from_slice(&acc[..block.valid]);
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
            assert!(accumulate(&c, &win, case.rows, cols.clone(), &mut vnni));
            portable_accumulate(&c, &win, case.rows, cols, &mut portable);
            assert_eq!(vnni, portable);
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
        assert!(!accumulate(&c, &win, 1, 0..1, &mut tile));
        assert_eq!(tile, vec![7i32; 16], "nothing written");
    }
}
