//! Int8 inference: raw `u8` pixels in, `i8` logits and the class out, integers only.
//!
//! - Layer 1 (a filtering layer) is a bit table over raw pixels: no arithmetic at all.
//! - Hidden activations are `u8` with a per-tensor zero point (`real = s·(q − zp)`);
//!   binary activations are exactly 0/1; the logits are `i8`.
//! - Weights are per-output-channel symmetric `i8`, biases `i32`; accumulators are
//!   `i32`; outputs are rescaled by a fixed-point multiplier and shift ([`Requant`]).
//! - Inputs equal to their zero point (zero activations, unset filter bits) are
//!   skipped, so a convolution over a binary filter output only adds the weights
//!   where a bit is set.
//!
//! The layout of an int8 model file is in docs/format.md.

use crate::activation::Activation;
use crate::error::{Error, Result};
use crate::filter::FilterKind;
use crate::float::{arena_need, arena_views, argmax, check_len};
use crate::format::{DType, ModelFile, ModelKind, TensorRef};
use crate::quant::{cos_positive, Requant};
use crate::spec::{ArchSpec, LayerSpec, Shape, MAX_LAYERS};

#[cfg(all(target_arch = "x86_64", not(target_os = "none")))]
mod vnni;

/// `u16` "first pixel value that is on" meaning "never on".
pub const NEVER_ON: u16 = 256;

fn le_i32(b: &[u8], i: usize) -> i32 {
    match b.get(i * 4..i * 4 + 4) {
        Some(c) => i32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        None => 0,
    }
}

fn le_u16(b: &[u8], i: usize) -> u16 {
    match b.get(i * 2..i * 2 + 2) {
        Some(c) => u16::from_le_bytes([c[0], c[1]]),
        None => NEVER_ON,
    }
}

/// How a layer-1 filter is stored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FilterTables<'a> {
    /// Conv-Filtering on one channel: `[β, 32]` bytes, one 256-bit table per unit.
    Shared(&'a [u8]),
    /// Offset-Filtering, monotone units: `u16` first-on pixel value per unit.
    Thresholds(&'a [u8]),
    /// Offset-Filtering, any units: one 256-bit table per unit.
    PerUnit(&'a [u8]),
}

/// How a conv or dense layer turns accumulators into outputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OutputStage<'a> {
    /// Fixed-point rescale to `u8` (or `i8` logits), ReLU as a clamp at the zero point.
    Requant {
        /// `[C, 2]` i32: multiplier, shift.
        params: &'a [u8],
        /// Output zero point.
        zero_point: i32,
        /// Clamp below at the zero point.
        relu: bool,
    },
    /// `H(z)`: on iff the accumulator is positive.
    Step,
    /// `H(cos z)`: `[C, 2]` i32 (low, high words of the Q48 phase factor).
    Cosine(&'a [u8]),
}

/// One int8 layer: borrowed tensors and the quantisation it needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Int8Layer<'a> {
    /// Layer-1 binary filter.
    Filter(FilterTables<'a>),
    /// Convolution (`weight` is `i8` `[k, k, C_in, C_out]`, `bias` `i32`).
    Conv {
        /// Weights.
        weight: &'a [u8],
        /// Biases.
        bias: &'a [u8],
        /// Zero point of the input.
        zp_in: i32,
        /// Output stage.
        out: OutputStage<'a>,
    },
    /// Max pooling.
    Pool,
    /// Dense (`weight` is `i8` `[N_in, N_out]`, `bias` `i32`).
    Dense {
        /// Weights.
        weight: &'a [u8],
        /// Biases.
        bias: &'a [u8],
        /// Zero point of the input.
        zp_in: i32,
        /// Output stage.
        out: OutputStage<'a>,
    },
}

/// Per-layer quantisation metadata stored in the file (`i32 [4]`): input zero point,
/// output zero point, output scale (f32 bits, for hosts), reserved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerMeta {
    /// Zero point of the layer's input.
    pub zp_in: i32,
    /// Zero point of its output.
    pub zp_out: i32,
    /// Real value of one output step (informative; the device never uses floats).
    pub scale_out: f32,
}

/// A validated int8 model borrowing its tensors from the file bytes (flash).
#[derive(Clone, Debug)]
pub struct Int8Model<'a> {
    spec: ArchSpec,
    shapes: heapless::Vec<Shape, { MAX_LAYERS + 1 }>,
    layers: heapless::Vec<Int8Layer<'a>, MAX_LAYERS>,
    logit_scale: f32,
    logit_zero_point: i32,
    crc: u32,
}

/// Walks the tensor list in order, checking each against what the layer needs.
struct Cursor<'t, 'a> {
    tensors: &'t [TensorRef<'a>],
    next: usize,
}

impl<'t, 'a> Cursor<'t, 'a> {
    fn take(&mut self, dtype: DType, dims: &[u32]) -> Result<(usize, &'a [u8])> {
        let index = self.next;
        let t = self.tensors.get(index).ok_or(Error::TensorCount {
            expected: index + 1,
            got: self.tensors.len(),
        })?;
        t.expect(index, dtype, dims)?;
        self.next += 1;
        Ok((index, t.data))
    }

    fn peek_dtype(&self) -> Option<DType> {
        self.tensors.get(self.next).map(|t| t.dtype)
    }

    /// The next tensor if it has `dtype`; its dims are checked by the caller.
    fn take_any_dims(&mut self, dtype: DType) -> Result<(usize, &'t TensorRef<'a>)> {
        let index = self.next;
        let t = self.tensors.get(index).ok_or(Error::TensorCount {
            expected: index + 1,
            got: self.tensors.len(),
        })?;
        if t.dtype != dtype {
            return Err(Error::TensorMismatch {
                tensor: index,
                reason: "wrong element type",
            });
        }
        self.next += 1;
        Ok((index, t))
    }
}

fn bad(tensor: usize, reason: &'static str) -> Error {
    Error::BadValue { tensor, reason }
}

/// Reads and checks a layer's metadata tensor.
fn read_meta(c: &mut Cursor<'_, '_>) -> Result<LayerMeta> {
    let (i, m) = c.take(DType::I32, &[4])?;
    let meta = LayerMeta {
        zp_in: le_i32(m, 0),
        zp_out: le_i32(m, 1),
        scale_out: f32::from_bits(le_i32(m, 2) as u32),
    };
    if le_i32(m, 3) != 0 {
        return Err(bad(i, "reserved metadata word is not zero"));
    }
    Ok(meta)
}

impl<'a> Int8Model<'a> {
    /// Parses and validates a model file of kind int8.
    pub fn load(bytes: &'a [u8]) -> Result<Self> {
        Self::from_file(&ModelFile::parse(bytes)?)
    }

    /// Validates an already parsed file: spec, tensor types and shapes, zero points,
    /// fixed-point parameters, and accumulator ranges (no overflow is possible).
    pub fn from_file(file: &ModelFile<'a>) -> Result<Self> {
        if file.kind != ModelKind::Int8 {
            return Err(Error::WrongKind {
                expected: ModelKind::Int8 as u8,
                got: file.kind as u8,
            });
        }
        let spec = file.body.spec.clone();
        let shapes = spec.shapes()?;
        let mut cur = Cursor {
            tensors: &file.body.tensors,
            next: 0,
        };
        let mut layers = heapless::Vec::new();
        // Zero point of the current activation: raw pixels and binary maps have 0.
        let mut zp = 0i32;
        let last = spec.layers.len() - 1;
        let mut logit_scale = 1.0f32;
        let mut logit_zero_point = 0i32;
        for (li, layer) in spec.layers.iter().enumerate() {
            let (input, output) = (shapes[li], shapes[li + 1]);
            let q = match *layer {
                LayerSpec::Filter(f) => {
                    let units = output.len() as u32;
                    let tables = match f.kind {
                        FilterKind::Conv => {
                            if input.channels != 1 {
                                return Err(Error::InvalidSpec {
                                    layer: li,
                                    reason: "int8 Conv-Filtering needs a single-channel input",
                                });
                            }
                            FilterTables::Shared(c_take(&mut cur, DType::U8, &[f.beta as u32, 32])?)
                        }
                        FilterKind::Offset => {
                            // Thresholds (u16) for monotone units, else full tables (u8).
                            let dtype = match cur.peek_dtype() {
                                Some(DType::U16) => DType::U16,
                                _ => DType::U8,
                            };
                            let (i, t) = cur.take_any_dims(dtype)?;
                            match t.dtype {
                                DType::U16 => {
                                    t.expect(
                                        i,
                                        DType::U16,
                                        &[
                                            input.height as u32,
                                            input.width as u32,
                                            output.channels as u32,
                                        ],
                                    )?;
                                    if (0..units as usize).any(|u| le_u16(t.data, u) > NEVER_ON) {
                                        return Err(bad(i, "filter threshold above 256"));
                                    }
                                    FilterTables::Thresholds(t.data)
                                }
                                _ => {
                                    t.expect(i, DType::U8, &[units, 32])?;
                                    FilterTables::PerUnit(t.data)
                                }
                            }
                        }
                    };
                    zp = 0;
                    Int8Layer::Filter(tables)
                }
                LayerSpec::Conv(cs) => {
                    let k = cs.kernel as u32;
                    let (ci, co) = (input.channels as u32, cs.filters as u32);
                    let (_, weight) = cur.take(DType::I8, &[k, k, ci, co])?;
                    let (bi, bias) = cur.take(DType::I32, &[co])?;
                    let (pi, params) = cur.take(DType::I32, &[co, 2])?;
                    let meta = read_meta(&mut cur)?;
                    let fan_in = (k * k * ci) as usize;
                    let out = check_output(cs.activation, li == last, params, pi, &meta)?;
                    check_accumulators(fan_in, bias, co as usize, zp, bi)?;
                    check_zp_in(&meta, zp, pi)?;
                    zp = output_zero_point(&out);
                    Int8Layer::Conv {
                        weight,
                        bias,
                        zp_in: meta.zp_in,
                        out,
                    }
                }
                LayerSpec::MaxPool(_) => Int8Layer::Pool,
                LayerSpec::Dense(d) => {
                    let (ni, no) = (input.len() as u32, d.units as u32);
                    let (_, weight) = cur.take(DType::I8, &[ni, no])?;
                    let (bi, bias) = cur.take(DType::I32, &[no])?;
                    let (pi, params) = cur.take(DType::I32, &[no, 2])?;
                    let meta = read_meta(&mut cur)?;
                    let out = check_output(d.activation, li == last, params, pi, &meta)?;
                    check_accumulators(ni as usize, bias, no as usize, zp, bi)?;
                    check_zp_in(&meta, zp, pi)?;
                    zp = output_zero_point(&out);
                    if li == last {
                        logit_scale = meta.scale_out;
                        logit_zero_point = meta.zp_out;
                    }
                    Int8Layer::Dense {
                        weight,
                        bias,
                        zp_in: meta.zp_in,
                        out,
                    }
                }
            };
            let _ = layers.push(q);
        }
        if cur.next != file.body.tensors.len() {
            return Err(Error::TensorCount {
                expected: cur.next,
                got: file.body.tensors.len(),
            });
        }
        Ok(Int8Model {
            spec,
            shapes,
            layers,
            logit_scale,
            logit_zero_point,
            crc: file.crc,
        })
    }

    /// The architecture.
    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    /// `shapes()[0]` is the input, `shapes()[i + 1]` the output of layer `i`.
    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }

    /// The validated layers.
    pub fn layers(&self) -> &[Int8Layer<'a>] {
        &self.layers
    }

    /// CRC-32 of the file (a model identity).
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// Pixels per image.
    pub fn input_len(&self) -> usize {
        self.shapes[0].len()
    }

    /// Number of logits.
    pub fn classes(&self) -> usize {
        self.spec.classes()
    }

    /// Exact number of scratch bytes [`infer`](Self::infer) needs.
    pub fn arena_len(&self) -> usize {
        arena_need(&self.shapes)
    }

    /// Real value of one logit step and the logits' zero point (for hosts that want
    /// approximate real logits: `scale · (q − zp)`).
    pub fn logit_quantization(&self) -> (f32, i32) {
        (self.logit_scale, self.logit_zero_point)
    }

    /// Classifies raw pixels (HWC `u8`), writing `i8` logits; returns the class.
    pub fn infer(&self, pixels: &[u8], arena: &mut [u8], logits: &mut [i8]) -> Result<usize> {
        check_len("pixels", self.input_len(), pixels.len())?;
        check_len("logits", self.classes(), logits.len())?;
        let need = self.arena_len();
        if arena.len() < need {
            return Err(Error::BufferSize {
                buffer: "arena",
                expected: need,
                got: arena.len(),
            });
        }
        let arena = &mut arena[..need];
        let last = self.layers.len() - 1;
        let mut logit_buf = Sink::Logits(logits);
        for (i, (layer, spec)) in self.layers.iter().zip(self.spec.layers.iter()).enumerate() {
            let (input, output) = (self.shapes[i], self.shapes[i + 1]);
            let (src, dst): (&[u8], Sink<'_>) = match (i == 0, i == last) {
                (true, true) => (pixels, logit_buf.reborrow()),
                (true, false) => (pixels, Sink::Hidden(&mut arena[..output.len()])),
                (false, true) => (
                    arena_views(arena, i, input.len(), 0).0,
                    logit_buf.reborrow(),
                ),
                (false, false) => {
                    let (s, d) = arena_views(arena, i, input.len(), output.len());
                    (s, Sink::Hidden(d))
                }
            };
            run_layer(layer, spec, input, output, src, dst);
        }
        Ok(argmax(logits))
    }
}

fn c_take<'a>(cur: &mut Cursor<'_, 'a>, dtype: DType, dims: &[u32]) -> Result<&'a [u8]> {
    cur.take(dtype, dims).map(|(_, d)| d)
}

fn check_zp_in(meta: &LayerMeta, expected: i32, tensor: usize) -> Result<()> {
    if meta.zp_in != expected {
        return Err(bad(
            tensor + 1,
            "input zero point differs from the previous layer's output",
        ));
    }
    Ok(())
}

fn output_zero_point(out: &OutputStage<'_>) -> i32 {
    match *out {
        OutputStage::Requant { zero_point, .. } => zero_point,
        OutputStage::Step | OutputStage::Cosine(_) => 0,
    }
}

/// Checks the output stage against the activation and its parameters.
fn check_output<'a>(
    act: Activation,
    is_last: bool,
    params: &'a [u8],
    tensor: usize,
    meta: &LayerMeta,
) -> Result<OutputStage<'a>> {
    let channels = params.len() / 8;
    let (lo, hi) = if is_last { (-128, 127) } else { (0, 255) };
    let stage = match act {
        Activation::Relu | Activation::Linear => {
            for c in 0..channels {
                let r = Requant {
                    multiplier: le_i32(params, 2 * c),
                    shift: le_i32(params, 2 * c + 1),
                };
                if !r.is_valid() {
                    return Err(bad(
                        tensor,
                        "requantisation multiplier or shift out of range",
                    ));
                }
            }
            if !(lo..=hi).contains(&meta.zp_out) {
                return Err(bad(tensor + 1, "output zero point out of range"));
            }
            OutputStage::Requant {
                params,
                zero_point: meta.zp_out,
                relu: act == Activation::Relu,
            }
        }
        _ if is_last => {
            return Err(Error::InvalidSpec {
                layer: 0,
                reason: "int8 logits need a linear or ReLU last layer",
            })
        }
        a if a.is_cosine() => OutputStage::Cosine(params),
        _ => {
            if params.iter().any(|&b| b != 0) {
                return Err(bad(
                    tensor,
                    "a step output has no parameters; expected zeros",
                ));
            }
            OutputStage::Step
        }
    };
    if !matches!(stage, OutputStage::Requant { .. }) && meta.zp_out != 0 {
        return Err(bad(tensor + 1, "binary outputs have zero point 0"));
    }
    Ok(stage)
}

/// Rejects layers whose accumulator could overflow `i32`.
fn check_accumulators(
    fan_in: usize,
    bias: &[u8],
    channels: usize,
    zp_in: i32,
    tensor: usize,
) -> Result<()> {
    let max_x = (255 + zp_in.unsigned_abs()) as u64;
    let worst_sum = (fan_in as u64).saturating_mul(128 * max_x);
    let max_bias = (0..channels)
        .map(|c| le_i32(bias, c).unsigned_abs() as u64)
        .max()
        .unwrap_or(0);
    if worst_sum.saturating_add(max_bias) > i32::MAX as u64 {
        return Err(bad(
            tensor,
            "layer too large: its accumulator could overflow i32",
        ));
    }
    Ok(())
}

/// Where a layer writes: a hidden `u8` activation or the `i8` logits.
enum Sink<'s> {
    Hidden(&'s mut [u8]),
    Logits(&'s mut [i8]),
}

impl Sink<'_> {
    fn reborrow(&mut self) -> Sink<'_> {
        match self {
            Sink::Hidden(h) => Sink::Hidden(h),
            Sink::Logits(l) => Sink::Logits(l),
        }
    }

    /// Stores `v` at `at..`, clamped to the sink's type.
    #[inline(always)]
    fn store_block<const B: usize>(&mut self, at: usize, v: &[i32; B]) {
        match self {
            Sink::Hidden(h) => {
                if let Some(h) = h.get_mut(at..at + B) {
                    for (o, &x) in h.iter_mut().zip(v) {
                        *o = x.clamp(0, 255) as u8;
                    }
                }
            }
            Sink::Logits(l) => {
                if let Some(l) = l.get_mut(at..at + B) {
                    for (o, &x) in l.iter_mut().zip(v) {
                        *o = x.clamp(-128, 127) as i8;
                    }
                }
            }
        }
    }

    #[inline]
    fn store(&mut self, i: usize, v: i32) {
        match self {
            Sink::Hidden(h) => h[i] = v.clamp(0, 255) as u8,
            Sink::Logits(l) => l[i] = v.clamp(-128, 127) as i8,
        }
    }
}

/// The activation of accumulator `acc` of channel `c`.
#[inline]
fn finish(out: &OutputStage<'_>, c: usize, acc: i32) -> i32 {
    match *out {
        OutputStage::Requant {
            params,
            zero_point,
            relu,
        } => {
            let r = Requant {
                multiplier: le_i32(params, 2 * c),
                shift: le_i32(params, 2 * c + 1),
            };
            let v = requant(&r, acc).saturating_add(zero_point);
            if relu {
                v.max(zero_point)
            } else {
                v
            }
        }
        OutputStage::Step => i32::from(acc > 0),
        OutputStage::Cosine(f) => {
            let factor = (le_i32(f, 2 * c) as u32 as i64) | ((le_i32(f, 2 * c + 1) as i64) << 32);
            i32::from(cos_positive(acc, factor))
        }
    }
}

fn run_layer(
    layer: &Int8Layer<'_>,
    spec: &LayerSpec,
    input: Shape,
    output: Shape,
    x: &[u8],
    mut y: Sink<'_>,
) {
    match (*layer, *spec) {
        (Int8Layer::Filter(tables), LayerSpec::Filter(f)) => {
            let beta = f.beta as usize;
            let Sink::Hidden(y) = y else { return };
            match tables {
                FilterTables::Shared(t) => {
                    for (p, &px) in x.iter().enumerate() {
                        for k in 0..beta {
                            y[p * beta + k] = table_bit(t, k, px);
                        }
                    }
                }
                FilterTables::Thresholds(t) => {
                    for (o, out) in y.iter_mut().enumerate() {
                        *out = u8::from(u16::from(x[o / beta]) >= le_u16(t, o));
                    }
                }
                FilterTables::PerUnit(t) => {
                    for (o, out) in y.iter_mut().enumerate() {
                        *out = table_bit(t, o, x[o / beta]);
                    }
                }
            }
        }
        (
            Int8Layer::Conv {
                weight,
                bias,
                zp_in,
                out,
            },
            LayerSpec::Conv(cs),
        ) => {
            let g = ConvGeometry {
                kernel: cs.kernel as usize,
                in_width: input.width as usize,
                in_channels: input.channels as usize,
                out_height: output.height as usize,
                out_width: output.width as usize,
                out_channels: output.channels as usize,
            };
            conv_fastest(
                &ConvOperands {
                    x,
                    g,
                    weight,
                    bias,
                    zp_in,
                    out,
                },
                &mut y,
            );
        }
        (Int8Layer::Pool, LayerSpec::MaxPool(p)) => {
            let s = p.size as usize;
            let (iw, c) = (input.width as usize, input.channels as usize);
            let (oh, ow) = (output.height as usize, output.width as usize);
            for oy in 0..oh {
                for ox in 0..ow {
                    // Channels are innermost: a window is `s·s` contiguous channel runs.
                    let mut m = [0u8; POOL_CHANNELS];
                    for c0 in (0..c).step_by(POOL_CHANNELS) {
                        let n = (c - c0).min(POOL_CHANNELS);
                        m[..n].fill(0);
                        for dy in 0..s {
                            for dx in 0..s {
                                let at = ((oy * s + dy) * iw + ox * s + dx) * c + c0;
                                if let Some(run) = x.get(at..at + n) {
                                    for (m, &v) in m.iter_mut().zip(run) {
                                        *m = (*m).max(v);
                                    }
                                }
                            }
                        }
                        let first = (oy * ow + ox) * c + c0;
                        for (j, &v) in m[..n].iter().enumerate() {
                            y.store(first + j, i32::from(v));
                        }
                    }
                }
            }
        }
        (
            Int8Layer::Dense {
                weight,
                bias,
                zp_in,
                out,
            },
            LayerSpec::Dense(d),
        ) => {
            // A dense layer is a 1×1 convolution of a 1×1 image with N_in channels.
            let g = ConvGeometry {
                kernel: 1,
                in_width: 1,
                in_channels: x.len(),
                out_height: 1,
                out_width: 1,
                out_channels: d.units as usize,
            };
            conv_fastest(
                &ConvOperands {
                    x,
                    g,
                    weight,
                    bias,
                    zp_in,
                    out,
                },
                &mut y,
            );
        }
        // Validation pairs every layer with its spec.
        _ => {}
    }
}

/// The requantisation each target does best, with identical results: branch-free
/// 64-bit lanes where they vectorise (hosts), gemmlowp's scalar form on microcontrollers
/// (fewer 64-bit operations on a 32-bit core).
#[inline(always)]
fn requant(r: &Requant, acc: i32) -> i32 {
    if SKIP_ZERO_INPUTS {
        r.apply_reference(acc)
    } else {
        r.apply(acc)
    }
}

/// Channels a max-pool window handles at once.
const POOL_CHANNELS: usize = 64;

/// Skip inputs equal to their zero point. On a microcontroller every skipped input
/// saves `B` multiply-adds; on SIMD hosts the unpredictable branch costs more than the
/// vector multiply-add it avoids. Skipping never changes the integer result.
const SKIP_ZERO_INPUTS: bool = !cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Applies the output stage to a block of accumulators of channels `cb..`, storing at `at..`.
#[inline(always)]
fn finish_block<const B: usize>(
    out: &OutputStage<'_>,
    cb: usize,
    acc: &[i32; B],
    y: &mut Sink<'_>,
    at: usize,
) {
    let mut v = [0i32; B];
    match *out {
        OutputStage::Requant {
            params,
            zero_point,
            relu,
        } => {
            let floor = if relu { zero_point } else { i32::MIN };
            // Decoded once per block so the lanes below are straight-line (vectorised).
            let Some(block) = params.get(8 * cb..8 * (cb + B)) else {
                return;
            };
            let mut multiplier = [0i32; B];
            let mut shift = [0i32; B];
            for (j, word) in block.chunks_exact(8).enumerate() {
                multiplier[j] = le_i32(word, 0);
                shift[j] = le_i32(word, 1);
            }
            for j in 0..B {
                let r = Requant {
                    multiplier: multiplier[j],
                    shift: shift[j],
                };
                v[j] = requant(&r, acc[j]).saturating_add(zero_point).max(floor);
            }
        }
        OutputStage::Step => {
            for (o, &a) in v.iter_mut().zip(acc) {
                *o = i32::from(a > 0);
            }
        }
        OutputStage::Cosine(_) => {
            for (j, o) in v.iter_mut().enumerate() {
                *o = finish(out, cb + j, acc[j]);
            }
        }
    }
    y.store_block(at, &v);
}

/// Shape of a valid, stride-1 convolution (a dense layer is the 1×1 case).
#[derive(Clone, Copy, Debug)]
struct ConvGeometry {
    kernel: usize,
    in_width: usize,
    in_channels: usize,
    out_height: usize,
    out_width: usize,
    out_channels: usize,
}

/// What a convolution (or dense) kernel reads: the input activations, the layer's
/// shape and tensors, and its output stage.
#[derive(Clone, Copy)]
struct ConvOperands<'a> {
    x: &'a [u8],
    g: ConvGeometry,
    /// `i8` `[k, k, C_in, C_out]`.
    weight: &'a [u8],
    /// `i32` `[C_out]`.
    bias: &'a [u8],
    zp_in: i32,
    out: OutputStage<'a>,
}

/// The fastest kernel this machine has: AVX-512 VNNI on hosts that have it, else the
/// portable one. Every kernel computes the same integers.
fn conv_fastest(c: &ConvOperands<'_>, y: &mut Sink<'_>) {
    #[cfg(all(target_arch = "x86_64", not(target_os = "none")))]
    if vnni::conv(c, y) {
        return;
    }
    conv(c, y);
}

/// A convolution (or dense layer) in integers: `acc = bias + Σ w·(x − zp_in)`, skipping
/// inputs equal to their zero point, then the output stage.
///
/// Compiled for AVX-512/AVX2 and the baseline, picked at run time on hosts with `std`,
/// statically elsewhere (`multiversion`): the arithmetic is the same integer arithmetic
/// on every path, so results are bit-identical on host and device.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma",
    "x86_64+avx2+fma"
))]
fn conv(c: &ConvOperands<'_>, y: &mut Sink<'_>) {
    // Fixed-size accumulator blocks stay in registers.
    match c.g.out_channels {
        co if co % 32 == 0 => conv_blocks::<32>(c, y),
        co if co % 16 == 0 => conv_blocks::<16>(c, y),
        co if co % 8 == 0 => conv_blocks::<8>(c, y),
        _ => conv_blocks::<1>(c, y),
    }
}

/// Output pixels computed together on SIMD hosts.
const PIXELS: usize = 4;

#[inline(always)]
fn conv_blocks<const B: usize>(c: &ConvOperands<'_>, y: &mut Sink<'_>) {
    let g = c.g;
    for oy in 0..g.out_height {
        let mut ox = 0;
        while ox < g.out_width {
            // Hosts: several output pixels share each weight row, widened once.
            // Microcontrollers (and a row's last pixels): one pixel at a time, skipping
            // zero inputs. Two loops because each is the other's slow case (measured:
            // widening once costs the Cortex-M4 20 % more instructions; the single-pixel
            // loop leaves hosts 10 % slower). Same integers either way.
            if !SKIP_ZERO_INPUTS && ox + PIXELS <= g.out_width {
                for cb in (0..g.out_channels).step_by(B) {
                    conv_pixels::<B, PIXELS>(c, (oy, ox, cb), y);
                }
                ox += PIXELS;
            } else {
                for cb in (0..g.out_channels).step_by(B) {
                    conv_pixel::<B>(c, (oy, ox, cb), y);
                }
                ox += 1;
            }
        }
    }
}

/// One output pixel of one channel block, skipping inputs at their zero point on
/// microcontrollers (each skip saves `B` multiply-adds).
#[inline(always)]
fn conv_pixel<const B: usize>(
    c: &ConvOperands<'_>,
    (oy, ox, cb): (usize, usize, usize),
    y: &mut Sink<'_>,
) {
    let ConvOperands {
        x,
        g,
        weight,
        bias,
        zp_in,
        out,
    } = *c;
    let (k, ci, co) = (g.kernel, g.in_channels, g.out_channels);
    let zp = zp_in as i16;
    let mut acc = [0i32; B];
    for (j, a) in acc.iter_mut().enumerate() {
        *a = le_i32(bias, cb + j);
    }
    for ky in 0..k {
        let row = ((oy + ky) * g.in_width + ox) * ci;
        let Some(xs) = x.get(row..row + k * ci) else {
            continue;
        };
        for (t, &xv) in xs.iter().enumerate() {
            let xv = i16::from(xv) - zp;
            if SKIP_ZERO_INPUTS && xv == 0 {
                continue;
            }
            let base = (ky * k * ci + t) * co + cb;
            let Some(Ok(w)) = weight.get(base..base + B).map(<&[u8; B]>::try_from) else {
                continue;
            };
            for (a, &wv) in acc.iter_mut().zip(w) {
                *a += i32::from(i16::from(wv as i8) * xv);
            }
        }
    }
    finish_block(&out, cb, &acc, y, (oy * g.out_width + ox) * co + cb);
}

/// `P` neighbouring output pixels of one channel block: each weight row is loaded and
/// widened once for all of them.
#[inline(always)]
fn conv_pixels<const B: usize, const P: usize>(
    c: &ConvOperands<'_>,
    (oy, ox, cb): (usize, usize, usize),
    y: &mut Sink<'_>,
) {
    let g = c.g;
    let (k, ci, co) = (g.kernel, g.in_channels, g.out_channels);
    // |x − zp| ≤ 255 and |w| ≤ 128, so every product fits an i16 exactly.
    let zp = c.zp_in as i16;
    let mut acc = [[0i32; B]; P];
    for a in acc.iter_mut() {
        for (j, v) in a.iter_mut().enumerate() {
            *v = le_i32(c.bias, cb + j);
        }
    }
    let span = (P - 1) * ci + k * ci;
    for ky in 0..k {
        let row = ((oy + ky) * g.in_width + ox) * ci;
        let Some(xs) = c.x.get(row..row + span) else {
            continue;
        };
        for t in 0..k * ci {
            let base = (ky * k * ci + t) * co + cb;
            let Some(Ok(w)) = c.weight.get(base..base + B).map(<&[u8; B]>::try_from) else {
                continue;
            };
            let w16: [i16; B] = core::array::from_fn(|j| i16::from(w[j] as i8));
            for (p, a) in acc.iter_mut().enumerate() {
                let xv = i16::from(xs[p * ci + t]) - zp;
                for (v, &wv) in a.iter_mut().zip(&w16) {
                    *v += i32::from(wv * xv);
                }
            }
        }
    }
    for (p, a) in acc.iter().enumerate() {
        let at = (oy * g.out_width + ox + p) * co + cb;
        finish_block(&c.out, cb, a, y, at);
    }
}

/// Bit `p` of table `unit` (32 bytes per table, little-endian bit order).
#[inline]
fn table_bit(tables: &[u8], unit: usize, p: u8) -> u8 {
    (tables[unit * 32 + (p >> 3) as usize] >> (p & 7)) & 1
}
