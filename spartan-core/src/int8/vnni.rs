//! The int8 convolution on x86-64 hosts with AVX-512 VNNI.
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
//! The only `unsafe` in spartan-core: unaligned vector loads and stores of bounds-checked
//! arrays, and the call into the feature-gated kernel after runtime detection.
#![allow(unsafe_code)]

use core::arch::x86_64::*;

use super::{finish_block, le_i32, ConvGeometry, ConvOperands, OutputStage, Sink};

/// Output channels per vector.
const LANES: usize = 16;

/// `vpermb` indices turning four 16-channel weight rows (one per tap, 16 bytes apart)
/// into 16 lanes of four taps each: byte `4j + i` takes byte `16i + j`.
const INTERLEAVE: [u8; 64] = {
    let mut a = [0u8; 64];
    let mut p = 0;
    while p < 64 {
        a[p] = ((p % 4) * 16 + p / 4) as u8;
        p += 1;
    }
    a
};

/// Whether this CPU runs [`conv`] (the result is cached by `std`).
fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512dq")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vnni")
        && std::is_x86_feature_detected!("avx512vbmi")
}

/// Runs the convolution if the CPU has AVX-512 VNNI and VBMI (and the fan-in fits);
/// `false` leaves it to the portable kernel.
pub(super) fn conv(c: &ConvOperands<'_>, y: &mut Sink<'_>) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: `conv_vnni` only needs the target features checked just above.
    unsafe { conv_vnni(c, y) }
}

/// Interleaved weight vectors one channel block can hold (16 KiB on the stack); larger
/// fan-ins (more than 256 quads of taps, `k·⌈k·C_in/4⌉`) take the portable kernel.
const MAX_QUADS: usize = 256;

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")]
fn conv_vnni(c: &ConvOperands<'_>, y: &mut Sink<'_>) -> bool {
    let g = c.g;
    let row_quads = (g.kernel * g.in_channels).div_ceil(4);
    let quads = g.kernel * row_quads;
    if quads > MAX_QUADS {
        return false;
    }
    // SAFETY: `INTERLEAVE` is 64 readable bytes; the load is unaligned.
    let interleave = unsafe { _mm512_loadu_si512(INTERLEAVE.as_ptr().cast()) };
    let mut packed = [_mm512_setzero_si512(); MAX_QUADS];
    let packed = &mut packed[..quads];
    for cb in (0..g.out_channels).step_by(LANES) {
        let valid = (g.out_channels - cb).min(LANES);
        let finish = Finish {
            out: &c.out,
            offset: pack_block(c, cb, valid, interleave, packed),
            valid,
            requant: decode_requant(&c.out, cb, valid),
        };
        for oy in 0..g.out_height {
            let mut ox = 0;
            while ox < g.out_width {
                // Several output pixels share each weight vector.
                let pixels = match g.out_width - ox {
                    8.. => 8,
                    4.. => 4,
                    _ => 1,
                };
                let at = (oy, ox, cb);
                match pixels {
                    8 => block8(c, packed, at, &finish, y),
                    4 => block4(c, packed, at, &finish, y),
                    _ => block1(c, packed, at, &finish, y),
                }
                ox += pixels;
            }
        }
    }
    true
}

/// Interleaves the weights of channels `cb..cb + valid` into `packed` (per kernel row,
/// quads of taps; missing taps and channels zero) and returns each channel's constant
/// term `bias − zp·Σ w` as a vector.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")]
fn pack_block(
    c: &ConvOperands<'_>,
    cb: usize,
    valid: usize,
    interleave: __m512i,
    packed: &mut [__m512i],
) -> __m512i {
    let g = c.g;
    let row_taps = g.kernel * g.in_channels;
    let row_quads = row_taps.div_ceil(4);
    let mut weight_sum = _mm512_setzero_si512();
    for (q, slot) in packed.iter_mut().enumerate() {
        let (ky, t) = (q / row_quads, 4 * (q % row_quads));
        let taps = (row_taps - t).min(4);
        let w = weight_quad(c.weight, ky * row_taps + t, taps, g.out_channels, cb, valid);
        *slot = _mm512_permutexvar_epi8(interleave, w);
        weight_sum = _mm512_dpbusd_epi32(weight_sum, _mm512_set1_epi8(1), *slot);
    }
    let sums = to_array(weight_sum);
    let offset: [i32; LANES] = core::array::from_fn(|j| {
        le_i32(c.bias, cb + j).wrapping_sub(c.zp_in.wrapping_mul(sums[j]))
    });
    // SAFETY: `offset` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(offset.as_ptr().cast()) }
}

/// How accumulators of one channel block become outputs.
struct Finish<'o, 'p> {
    out: &'o OutputStage<'p>,
    /// `bias − zp·Σ w` per channel.
    offset: __m512i,
    /// Channels of the block that exist.
    valid: usize,
    /// A full block's requantisation, decoded once per block rather than per pixel.
    requant: Option<BlockRequant>,
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

/// The requantisation of channels `cb..cb + 16`, if the stage is one and the block full.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")]
fn decode_requant(out: &OutputStage<'_>, cb: usize, valid: usize) -> Option<BlockRequant> {
    let OutputStage::Requant {
        params,
        zero_point,
        relu,
    } = *out
    else {
        return None;
    };
    if valid != LANES {
        return None;
    }
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

/// [`Requant::apply`] on sixteen accumulators, then the zero point and the ReLU floor.
///
/// Valid multipliers lie in `[2^30, 2^31)` or are 0, so gemmlowp's `MIN · MIN`
/// saturation never arises and `vpmuldq` (signed 32 × 32 → 64) is exact.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")]
fn requantize(acc: __m512i, r: &BlockRequant) -> [i32; LANES] {
    let halves = [
        _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc)),
        _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(acc)),
    ];
    let zero = _mm512_setzero_si512();
    let one = _mm512_set1_epi64(1);
    let mut out = [0i32; LANES];
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
        // Zero point and floor in 64 bits, then saturate to i32 as `saturating_add` does.
        let q = _mm512_add_epi64(q, _mm512_set1_epi64(i64::from(r.zero_point)));
        let q = _mm512_max_epi64(q, _mm512_set1_epi64(i64::from(r.floor)));
        let q = _mm512_cvtsepi64_epi32(q);
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` is 32 writable bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), q) };
        out[8 * h..8 * h + 8].copy_from_slice(&lanes);
    }
    out
}

/// Defines `$name`: `P` neighbouring output pixels from `(oy, ox)`, channels
/// `cb..cb + 16` — accumulate `Σ w·x`, add the offsets, apply the output stage. One
/// named accumulator per pixel: LLVM keeps named vectors in registers, not arrays of them.
macro_rules! pixel_block {
    ($name:ident, $($acc:ident $acc_x:ident @ $p:literal),+) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")]
        fn $name(
            c: &ConvOperands<'_>,
            packed: &[__m512i],
            (oy, ox, cb): (usize, usize, usize),
            finish: &Finish<'_, '_>,
            y: &mut Sink<'_>,
        ) {
            let (g, x) = (c.g, c.x);
            let ci = g.in_channels;
            let row_quads = (g.kernel * ci).div_ceil(4);
            $(let mut $acc = _mm512_setzero_si512();)+
            let len = 4 * row_quads;
            for (ky, row_weights) in packed.chunks_exact(row_quads).enumerate() {
                let row = ((oy + ky) * g.in_width + ox) * ci;
                let xs = x.get(row..).unwrap_or(&[]);
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
            $(finish_pixel($acc, g, (oy, ox + $p, cb), finish, y);)+
        }
    };
}

pixel_block!(block8, a0 x0 @ 0, a1 x1 @ 1, a2 x2 @ 2, a3 x3 @ 3, a4 x4 @ 4, a5 x5 @ 5, a6 x6 @ 6, a7 x7 @ 7);
pixel_block!(block4, a0 x0 @ 0, a1 x1 @ 1, a2 x2 @ 2, a3 x3 @ 3);
pixel_block!(block1, a0 x0 @ 0);

/// Adds the offsets to one pixel's accumulators and stores its outputs.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")]
fn finish_pixel(
    acc: __m512i,
    g: ConvGeometry,
    (oy, ox, cb): (usize, usize, usize),
    finish: &Finish<'_, '_>,
    y: &mut Sink<'_>,
) {
    let acc = _mm512_add_epi32(acc, finish.offset);
    let first = (oy * g.out_width + ox) * g.out_channels + cb;
    if let Some(r) = &finish.requant {
        let v = requantize(acc, r);
        y.store_block(first, &v);
    } else if finish.valid == LANES {
        finish_block(finish.out, cb, &to_array(acc), y, first);
    } else {
        for (j, &v) in to_array(acc).iter().enumerate().take(finish.valid) {
            y.store(first + j, super::finish(finish.out, cb + j, v));
        }
    }
}

/// Four input bytes from `at`, known to be in bounds.
#[inline(always)]
fn quad_at(x: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([x[at], x[at + 1], x[at + 2], x[at + 3]])
}

/// Four consecutive input bytes from `at` as one `i32`, zeros past the end (only at the
/// image's last row). Bytes past a kernel row's last tap meet zero weights.
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

/// Weight rows of taps `tap..tap + taps`, channels `cb..cb + 16`, one row per 128-bit
/// lane; missing taps and channels are zero.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")]
fn weight_quad(
    weight: &[u8],
    tap: usize,
    taps: usize,
    co: usize,
    cb: usize,
    valid: usize,
) -> __m512i {
    let start = tap * co + cb;
    let row = |i: usize| weight.get(start + i * co..start + i * co + LANES);
    if let (4, LANES, Some(r0), Some(r1), Some(r2), Some(r3)) =
        (taps, valid, row(0), row(1), row(2), row(3))
    {
        // SAFETY: each row is 16 readable bytes; the loads are unaligned.
        let (l0, l1, l2, l3) = unsafe {
            (
                _mm_loadu_si128(r0.as_ptr().cast()),
                _mm_loadu_si128(r1.as_ptr().cast()),
                _mm_loadu_si128(r2.as_ptr().cast()),
                _mm_loadu_si128(r3.as_ptr().cast()),
            )
        };
        let v = _mm512_castsi128_si512(l0);
        let v = _mm512_inserti32x4::<1>(v, l1);
        let v = _mm512_inserti32x4::<2>(v, l2);
        return _mm512_inserti32x4::<3>(v, l3);
    }
    // Edges: the last taps of a row, the last channels of a layer.
    let mut rows = [0u8; 4 * LANES];
    for i in 0..taps {
        let from = start + i * co;
        if let Some(part) = weight.get(from..from + valid) {
            rows[i * LANES..i * LANES + valid].copy_from_slice(part);
        }
    }
    // SAFETY: `rows` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(rows.as_ptr().cast()) }
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
    use super::super::conv as portable_conv;
    use super::*;
    use crate::quant::Requant;
    use crate::test_rng::XorShift as Rng;

    /// The layer's outputs from one kernel, into a hidden (`u8`) or logit (`i8`) sink.
    fn run(kernel: &str, case: &Case, out: &OutputStage<'_>, logits: bool) -> Vec<u8> {
        let g = case.g;
        let n = g.out_height * g.out_width * g.out_channels;
        let (mut hidden, mut logit) = (vec![0u8; n], vec![0i8; n]);
        let mut sink = if logits {
            Sink::Logits(&mut logit)
        } else {
            Sink::Hidden(&mut hidden)
        };
        let operands = ConvOperands {
            x: &case.x,
            g,
            weight: &case.weight,
            bias: &case.bias,
            zp_in: case.zp,
            out: *out,
        };
        match kernel {
            "vnni" => assert!(conv(&operands, &mut sink)),
            _ => portable_conv(&operands, &mut sink),
        }
        if logits {
            logit.iter().map(|&v| v as u8).collect()
        } else {
            hidden
        }
    }

    struct Case {
        g: ConvGeometry,
        x: Vec<u8>,
        weight: Vec<u8>,
        bias: Vec<u8>,
        zp: i32,
    }

    fn random_case(rng: &mut Rng) -> Case {
        let kernel = 1 + rng.below(3);
        let in_channels = 1 + rng.below(40);
        let out_channels = 1 + rng.below(40);
        let out_height = 1 + rng.below(9);
        let out_width = 1 + rng.below(19);
        let (ih, iw) = (out_height + kernel - 1, out_width + kernel - 1);
        let g = ConvGeometry {
            kernel,
            in_width: iw,
            in_channels,
            out_height,
            out_width,
            out_channels,
        };
        let binary = rng.below(3) == 0;
        let x = (0..ih * iw * in_channels)
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
        let zp = if binary { 0 } else { rng.below(256) as i32 };
        Case {
            g,
            x,
            weight,
            bias,
            zp,
        }
    }

    #[test]
    fn vnni_kernel_equals_the_portable_kernel() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI/VBMI");
            return;
        }
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for _ in 0..300 {
            let case = random_case(&mut rng);
            let params: Vec<u8> = (0..case.g.out_channels)
                .flat_map(|_| {
                    let r = Requant::from_real(1e-4 + (rng.below(1000) as f64) * 2e-5);
                    [r.multiplier.to_le_bytes(), r.shift.to_le_bytes()].concat()
                })
                .collect();
            let phase: Vec<u8> = (0..2 * case.g.out_channels)
                .flat_map(|_| (rng.next_u64() as i32 >> rng.below(16)).to_le_bytes())
                .collect();
            let logits = rng.below(2) == 0;
            let zero_point = if logits {
                rng.below(256) as i32 - 128
            } else {
                rng.below(256) as i32
            };
            for out in [
                OutputStage::Requant {
                    params: &params,
                    zero_point,
                    relu: rng.below(2) == 0,
                },
                OutputStage::Step,
                OutputStage::Cosine(&phase),
            ] {
                assert_eq!(
                    run("vnni", &case, &out, logits),
                    run("portable", &case, &out, logits),
                    "{:?} {out:?}",
                    case.g
                );
            }
        }
    }

    #[test]
    fn vector_requantisation_equals_the_scalar_one() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI/VBMI");
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
            let r: [Requant; LANES] = core::array::from_fn(|_| Requant {
                multiplier: if rng.below(9) == 0 {
                    0
                } else {
                    (1 << 30) | (rng.next_u64() >> 34) as i32
                },
                shift: rng.below(62) as i32 - 31,
            });
            let params: Vec<u8> = r
                .iter()
                .flat_map(|q| [q.multiplier.to_le_bytes(), q.shift.to_le_bytes()].concat())
                .collect();
            let zero_point = rng.below(256) as i32;
            let relu = rng.below(2) == 0;
            let stage = OutputStage::Requant {
                params: &params,
                zero_point,
                relu,
            };
            let acc: [i32; LANES] = core::array::from_fn(|j| match round % 3 {
                0 => edges[(j + round) % edges.len()],
                _ => (rng.next_u64() >> 32) as i32 >> rng.below(32),
            });
            let floor = if relu { zero_point } else { i32::MIN };
            let want: [i32; LANES] = core::array::from_fn(|j| {
                r[j].apply_reference(acc[j])
                    .saturating_add(zero_point)
                    .max(floor)
            });
            // SAFETY: the CPU has the features (checked above); `acc` is 64 readable bytes.
            let got = unsafe {
                let block = decode_requant(&stage, 0, LANES).expect("a full requant block");
                requantize(_mm512_loadu_si512(acc.as_ptr().cast()), &block)
            };
            assert_eq!(got, want, "{r:?} {acc:?}");
        }
    }

    #[test]
    fn fan_ins_beyond_the_weight_buffer_fall_back_to_the_portable_kernel() {
        let g = ConvGeometry {
            kernel: 1,
            in_width: 1,
            in_channels: 4 * MAX_QUADS + 1,
            out_height: 1,
            out_width: 1,
            out_channels: 16,
        };
        let (x, w, b) = (
            vec![1u8; 4 * MAX_QUADS + 1],
            vec![1u8; 16 * (4 * MAX_QUADS + 1)],
            vec![0u8; 64],
        );
        let mut y = vec![0u8; 16];
        let operands = ConvOperands {
            x: &x,
            g,
            weight: &w,
            bias: &b,
            zp_in: 0,
            out: OutputStage::Step,
        };
        assert!(!conv(&operands, &mut Sink::Hidden(&mut y)));
        assert_eq!(y, vec![0u8; 16], "nothing written");
    }
}
