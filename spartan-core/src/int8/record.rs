//! The int8 record of each layer — which tensors it stores, in which order, layout and
//! range — defined once: [`Int8Writer`] encodes the numbers a quantiser chose, and
//! `parse` (behind [`crate::int8::Int8Model::load`]) reads and validates them (docs/format.md, "Tensors of an int8 model").
//!
//! | layer                      | tensors, in order                                        |
//! |----------------------------|----------------------------------------------------------|
//! | Conv-Filtering (1 channel) | `U8 [β, 32]` bit tables                                  |
//! | Offset-Filtering           | `U16 [H, W, C·β]` thresholds, or `U8 [H·W·C·β, 32]` tables |
//! | conv k×k                   | `I8 [C_out, k, k, C_in]`, `I32 [C_out]`, `I32 [C_out, 2]`, `I32 [4]` |
//! | dense                      | `I8 [N_out, N_in]`, `I32 [N_out]`, `I32 [N_out, 2]`, `I32 [4]` |
//! | max pool                   | —                                                        |
//!
//! Weights are stored with the reduction axis innermost (each output channel's taps
//! contiguous), the layout integer kernels read with one load per four taps; the
//! writer takes them in the spec's layout (`LayerSpec::params`, reduction outermost)
//! and transposes them.

use super::model::{FilterTables, Int8Layer, OutputStage, NEVER_ON};
use crate::activation::Activation;
use crate::error::{Error, Result};
use crate::filter::FilterKind;
use crate::format::{DType, TensorRef};
use crate::quant::Requant;
use crate::spec::{ArchSpec, LayerSpec, Shape};

/// Per-layer quantisation metadata stored in the file (`i32 [4]`): input zero point,
/// output zero point, output scale (f32 bits, for hosts), reserved.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LayerMeta {
    /// Zero point of the layer's input.
    pub zp_in: i32,
    /// Zero point of its output.
    pub zp_out: i32,
    /// Real value of one output step (informative; the device never uses floats).
    pub scale_out: f32,
}

/// Stored shapes of a conv or dense layer's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LinearDims {
    /// Weight dims, outermost first; only the first `rank` count.
    weight: [u32; 4],
    rank: usize,
    /// Output channels (units).
    channels: u32,
    /// Inputs per output: `k·k·C_in`, or `N_in`.
    fan_in: u32,
}

impl LinearDims {
    fn of(layer: &LayerSpec, input: Shape) -> Option<Self> {
        match *layer {
            LayerSpec::Conv(c) => {
                let (k, ci, co) = (c.kernel as u32, input.channels as u32, c.filters as u32);
                Some(LinearDims {
                    weight: [co, k, k, ci],
                    rank: 4,
                    channels: co,
                    fan_in: k * k * ci,
                })
            }
            LayerSpec::Dense(d) => {
                let (ni, no) = (input.len() as u32, d.units as u32);
                Some(LinearDims {
                    weight: [no, ni, 0, 0],
                    rank: 2,
                    channels: no,
                    fan_in: ni,
                })
            }
            LayerSpec::Filter(_) | LayerSpec::MaxPool(_) => None,
        }
    }

    fn weight(&self) -> &[u32] {
        &self.weight[..self.rank]
    }

    fn bias(&self) -> [u32; 1] {
        [self.channels]
    }

    fn output(&self) -> [u32; 2] {
        [self.channels, 2]
    }
}

/// Dims of the metadata tensor.
const META: [u32; 1] = [4];
/// Bytes of one 256-entry bit table.
const TABLE_BYTES: u32 = 32;

/// Dims of a filter's threshold tensor (Offset-Filtering, monotone units).
fn threshold_dims(input: Shape, output: Shape) -> [u32; 3] {
    [
        input.height as u32,
        input.width as u32,
        output.channels as u32,
    ]
}

pub(super) fn le_i32(b: &[u8], i: usize) -> i32 {
    match b.get(i * 4..i * 4 + 4) {
        Some(c) => i32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        None => 0,
    }
}

pub(super) fn le_u16(b: &[u8], i: usize) -> u16 {
    match b.get(i * 2..i * 2 + 2) {
        Some(c) => u16::from_le_bytes([c[0], c[1]]),
        None => NEVER_ON,
    }
}

/// The file's tensors in order, each checked against what its layer needs.
struct Cursor<'a, I> {
    tensors: I,
    next: usize,
    count: usize,
    _bytes: core::marker::PhantomData<&'a [u8]>,
}

impl<'a, I: Iterator<Item = TensorRef<'a>>> Cursor<'a, I> {
    /// The next tensor, whatever it holds.
    fn any(&mut self) -> Result<(usize, TensorRef<'a>)> {
        let index = self.next;
        let t = self.tensors.next().ok_or(Error::TensorCount {
            expected: index + 1,
            got: self.count,
        })?;
        self.next += 1;
        Ok((index, t))
    }

    /// The next tensor, which must have exactly this dtype and these dims.
    fn take(&mut self, dtype: DType, dims: &[u32]) -> Result<(usize, &'a [u8])> {
        let (index, t) = self.any()?;
        t.expect(index, dtype, dims)?;
        Ok((index, t.data))
    }
}

fn bad(tensor: usize, reason: &'static str) -> Error {
    Error::BadValue { tensor, reason }
}

/// Reads and validates the record of every layer of `spec` from `tensors` (`count` of
/// them), handing each layer to `visit` in order, with the metadata of the last one
/// (the logits' quantisation).
pub(super) fn parse<'a>(
    spec: &ArchSpec,
    shapes: &[Shape],
    tensors: impl Iterator<Item = TensorRef<'a>>,
    count: usize,
    mut visit: impl FnMut(Int8Layer<'a>, Option<LayerMeta>),
) -> Result<()> {
    let mut cur = Cursor {
        tensors,
        next: 0,
        count,
        _bytes: core::marker::PhantomData,
    };
    // Zero point of the current activation: raw pixels and binary maps have 0.
    let mut zp = 0i32;
    let last = spec.layers.len() - 1;
    for (li, layer) in spec.layers.iter().enumerate() {
        let (input, output) = (shapes[li], shapes[li + 1]);
        let mut logit_meta = None;
        let q = match *layer {
            LayerSpec::Filter(f) => {
                zp = 0;
                Int8Layer::Filter(parse_filter(&mut cur, li, f.kind, f.beta, input, output)?)
            }
            LayerSpec::MaxPool(_) => Int8Layer::Pool,
            LayerSpec::Conv(_) | LayerSpec::Dense(_) => {
                let Some(dims) = LinearDims::of(layer, input) else {
                    return Err(Error::InvalidSpec {
                        layer: li,
                        reason: "not a conv or dense layer",
                    });
                };
                let act = layer.activation().unwrap_or(Activation::Linear);
                let (_, weight) = cur.take(DType::I8, dims.weight())?;
                let (bi, bias) = cur.take(DType::I32, &dims.bias())?;
                let (pi, params) = cur.take(DType::I32, &dims.output())?;
                let meta = read_meta(&mut cur)?;
                let out = check_output(act, li == last, params, pi, &meta)?;
                let acc_bound = accumulator_bound(dims.fan_in, bias, zp, bi)?;
                if meta.zp_in != zp {
                    return Err(bad(
                        pi + 1,
                        "input zero point differs from the previous layer's output",
                    ));
                }
                zp = out.zero_point();
                if li == last {
                    logit_meta = Some(meta);
                }
                let (zp_in, scale_out) = (meta.zp_in, meta.scale_out);
                match layer {
                    LayerSpec::Conv(_) => Int8Layer::Conv {
                        weight,
                        bias,
                        zp_in,
                        out,
                        acc_bound,
                        scale_out,
                    },
                    _ => Int8Layer::Dense {
                        weight,
                        bias,
                        zp_in,
                        out,
                        acc_bound,
                        scale_out,
                    },
                }
            }
        };
        visit(q, logit_meta);
    }
    if cur.next != count {
        return Err(Error::TensorCount {
            expected: cur.next,
            got: count,
        });
    }
    Ok(())
}

fn parse_filter<'a>(
    cur: &mut Cursor<'a, impl Iterator<Item = TensorRef<'a>>>,
    layer: usize,
    kind: FilterKind,
    beta: u16,
    input: Shape,
    output: Shape,
) -> Result<FilterTables<'a>> {
    let units = output.len() as u32;
    match kind {
        FilterKind::Conv => {
            if input.channels != 1 {
                return Err(Error::InvalidSpec {
                    layer,
                    reason: "int8 Conv-Filtering needs a single-channel input",
                });
            }
            let (_, t) = cur.take(DType::U8, &[beta as u32, TABLE_BYTES])?;
            Ok(FilterTables::Shared(t))
        }
        // Thresholds (u16) for monotone units, else full tables (u8).
        FilterKind::Offset => match cur.any()? {
            (i, t) if t.dtype == DType::U16 => {
                t.expect(i, DType::U16, &threshold_dims(input, output))?;
                if (0..units as usize).any(|u| le_u16(t.data, u) > NEVER_ON) {
                    return Err(bad(i, "filter threshold above 256"));
                }
                Ok(FilterTables::Thresholds(t.data))
            }
            (i, t) => {
                t.expect(i, DType::U8, &[units, TABLE_BYTES])?;
                Ok(FilterTables::PerUnit(t.data))
            }
        },
    }
}

/// Reads and checks a layer's metadata tensor.
fn read_meta<'a>(cur: &mut Cursor<'a, impl Iterator<Item = TensorRef<'a>>>) -> Result<LayerMeta> {
    let (i, m) = cur.take(DType::I32, &META)?;
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

/// The largest `|accumulator|` of a layer (`|bias| + fan_in · 128 · max |x − zp|`), or
/// an error if it could overflow `i32`.
fn accumulator_bound(fan_in: u32, bias: &[u8], zp_in: i32, tensor: usize) -> Result<u32> {
    let max_x = u64::from(255 + zp_in.unsigned_abs());
    let worst_sum = u64::from(fan_in).saturating_mul(128 * max_x);
    let max_bias = (0..bias.len() / 4)
        .map(|c| u64::from(le_i32(bias, c).unsigned_abs()))
        .max()
        .unwrap_or(0);
    let bound = worst_sum.saturating_add(max_bias);
    if bound > i32::MAX as u64 {
        return Err(bad(
            tensor,
            "layer too large: its accumulator could overflow i32",
        ));
    }
    Ok(bound as u32)
}

#[cfg(feature = "alloc")]
pub use writer::{FilterRecord, Int8Writer, LinearRecord, OutputRecord, Record};

#[cfg(feature = "alloc")]
mod writer {
    use super::*;
    use crate::filter::BitTable;
    use crate::format::{self, ModelBody, ModelKind, MAX_TENSORS};
    use alloc::vec::Vec;

    /// A layer-1 filter as the quantiser compiled it.
    #[derive(Clone, Debug, PartialEq)]
    pub enum FilterRecord {
        /// Conv-Filtering on one channel: one table per unit (β of them).
        Shared(Vec<BitTable>),
        /// Offset-Filtering whose units are all monotone: the first pixel value that
        /// switches each unit on ([`NEVER_ON`] for never), in `(h, w, c·β)` order.
        Thresholds(Vec<u16>),
        /// Offset-Filtering, any units: one table per unit, in `(h, w, c·β)` order.
        PerUnit(Vec<BitTable>),
    }

    /// How a conv or dense layer's accumulators become outputs.
    #[derive(Clone, Debug, PartialEq)]
    pub enum OutputRecord {
        /// ReLU or linear: one fixed-point rescale per output channel.
        Requant(Vec<Requant>),
        /// A step activation: on iff the accumulator is positive.
        Step,
        /// A cosine step: one Q48 phase factor per output channel
        /// ([`crate::quant::phase_factor`]).
        Cosine(Vec<i64>),
    }

    /// The numbers a quantiser chose for one conv or dense layer.
    #[derive(Clone, Debug, PartialEq)]
    pub struct LinearRecord {
        /// Weights in the spec's layout (`LayerSpec::params`: `[k, k, C_in, C_out]` or
        /// `[N_in, N_out]`, the output channel fastest).
        pub weight: Vec<i8>,
        /// Biases in units of `s_in · s_w[c]`.
        pub bias: Vec<i32>,
        /// The output stage.
        pub output: OutputRecord,
        /// Zero point of the input (the previous layer's output zero point).
        pub zp_in: i32,
        /// Zero point of the output (0 for binary outputs).
        pub zp_out: i32,
        /// Real value of one output step (informative).
        pub scale_out: f32,
    }

    /// One layer's numbers, as [`Int8Writer::record`] takes them.
    #[derive(Clone, Debug, PartialEq)]
    pub enum Record {
        /// A layer-1 filter.
        Filter(FilterRecord),
        /// A conv or dense layer.
        Linear(LinearRecord),
        /// A max-pool (nothing stored).
        Pool,
    }

    fn tables(bytes: &[u8]) -> Vec<BitTable> {
        bytes
            .chunks_exact(TABLE_BYTES as usize)
            .map(|t| BitTable(core::array::from_fn(|i| le_i32(t, i) as u32)))
            .collect()
    }

    impl super::super::Int8Model<'_> {
        /// Each layer's numbers back in the writer's terms (weights in the spec's layout):
        /// writing them again gives the same file, which is how the tests check that the
        /// writer and the parser agree.
        pub fn records(&self) -> Vec<Record> {
            self.layers()
                .iter()
                .map(|layer| match *layer {
                    Int8Layer::Filter(t) => Record::Filter(match t {
                        FilterTables::Shared(b) => FilterRecord::Shared(tables(b)),
                        FilterTables::PerUnit(b) => FilterRecord::PerUnit(tables(b)),
                        FilterTables::Thresholds(b) => FilterRecord::Thresholds(
                            (0..b.len() / 2).map(|i| le_u16(b, i)).collect(),
                        ),
                    }),
                    Int8Layer::Pool => Record::Pool,
                    Int8Layer::Conv {
                        weight,
                        bias,
                        zp_in,
                        out,
                        scale_out,
                        ..
                    }
                    | Int8Layer::Dense {
                        weight,
                        bias,
                        zp_in,
                        out,
                        scale_out,
                        ..
                    } => {
                        let channels = bias.len() / 4;
                        let fan_in = weight.len() / channels.max(1);
                        // Back to the spec's layout: the transpose of the stored one.
                        let mut spec_weight = alloc::vec![0i8; weight.len()];
                        for (c, row) in weight.chunks_exact(fan_in.max(1)).enumerate() {
                            for (t, &w) in row.iter().enumerate() {
                                spec_weight[t * channels + c] = w as i8;
                            }
                        }
                        let output = match out {
                            OutputStage::Requant { params, .. } => OutputRecord::Requant(
                                (0..channels)
                                    .map(|c| Requant {
                                        multiplier: le_i32(params, 2 * c),
                                        shift: le_i32(params, 2 * c + 1),
                                    })
                                    .collect(),
                            ),
                            OutputStage::Step => OutputRecord::Step,
                            OutputStage::Cosine(f) => OutputRecord::Cosine(
                                (0..channels)
                                    .map(|c| {
                                        (le_i32(f, 2 * c) as u32 as i64)
                                            | ((le_i32(f, 2 * c + 1) as i64) << 32)
                                    })
                                    .collect(),
                            ),
                        };
                        Record::Linear(LinearRecord {
                            weight: spec_weight,
                            bias: (0..channels).map(|c| le_i32(bias, c)).collect(),
                            output,
                            zp_in,
                            zp_out: out.zero_point(),
                            scale_out,
                        })
                    }
                })
                .collect()
        }
    }

    /// Builds an int8 model file layer by layer, in the order and layout the parser
    /// reads, and refuses to produce a file the device would reject.
    #[derive(Debug)]
    pub struct Int8Writer {
        spec: ArchSpec,
        shapes: heapless::Vec<Shape, { crate::spec::MAX_LAYERS + 1 }>,
        /// Next layer to write.
        layer: usize,
        tensors: Vec<(DType, Vec<u32>, Vec<u8>)>,
    }

    fn mismatch(layer: usize, reason: &'static str) -> Error {
        Error::InvalidSpec { layer, reason }
    }

    fn check_len(buffer: &'static str, expected: usize, got: usize) -> Result<()> {
        if expected != got {
            return Err(Error::BufferSize {
                buffer,
                expected,
                got,
            });
        }
        Ok(())
    }

    impl Int8Writer {
        /// A writer for a network of this architecture.
        pub fn new(spec: ArchSpec) -> Result<Self> {
            let shapes = spec.shapes()?;
            Ok(Int8Writer {
                spec,
                shapes,
                layer: 0,
                tensors: Vec::new(),
            })
        }

        /// Max-pool layers store nothing: step over them.
        fn skip_pools(&mut self) {
            while let Some(LayerSpec::MaxPool(_)) = self.spec.layers.get(self.layer) {
                self.layer += 1;
            }
        }

        /// The next layer, which must be a filter: its compiled tables.
        pub fn filter(&mut self, record: &FilterRecord) -> Result<()> {
            self.skip_pools();
            let li = self.layer;
            let Some(LayerSpec::Filter(f)) = self.spec.layers.get(li).copied() else {
                return Err(mismatch(
                    li,
                    "a filter record for a layer that is not a filter",
                ));
            };
            let (input, output) = (self.shapes[li], self.shapes[li + 1]);
            let units = output.len();
            let table_bytes = |tables: &[BitTable]| -> Vec<u8> {
                tables
                    .iter()
                    .flat_map(|t| t.0)
                    .flat_map(u32::to_le_bytes)
                    .collect()
            };
            let tensor = match (f.kind, record) {
                (FilterKind::Conv, FilterRecord::Shared(t)) => {
                    check_len("filter tables", f.beta as usize, t.len())?;
                    (
                        DType::U8,
                        [f.beta as u32, TABLE_BYTES].to_vec(),
                        table_bytes(t),
                    )
                }
                (FilterKind::Offset, FilterRecord::Thresholds(t)) => {
                    check_len("filter thresholds", units, t.len())?;
                    (
                        DType::U16,
                        threshold_dims(input, output).to_vec(),
                        t.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    )
                }
                (FilterKind::Offset, FilterRecord::PerUnit(t)) => {
                    check_len("filter tables", units, t.len())?;
                    (
                        DType::U8,
                        [units as u32, TABLE_BYTES].to_vec(),
                        table_bytes(t),
                    )
                }
                _ => return Err(mismatch(li, "filter record of the wrong kind")),
            };
            self.tensors.push(tensor);
            self.layer += 1;
            Ok(())
        }

        /// The next layer, which must be a conv or dense layer: its quantised numbers.
        pub fn linear(&mut self, r: &LinearRecord) -> Result<()> {
            self.skip_pools();
            let li = self.layer;
            let layer = self
                .spec
                .layers
                .get(li)
                .ok_or(mismatch(li, "more records than layers"))?;
            let dims = LinearDims::of(layer, self.shapes[li]).ok_or(mismatch(
                li,
                "a conv/dense record for another kind of layer",
            ))?;
            let (fan_in, channels) = (dims.fan_in as usize, dims.channels as usize);
            check_len("weight", fan_in * channels, r.weight.len())?;
            check_len("bias", channels, r.bias.len())?;
            // Reduction axis innermost: a transpose of the `[fan_in, channels]` matrix.
            let mut weight = alloc::vec![0u8; r.weight.len()];
            for (t, row) in r.weight.chunks_exact(channels).enumerate() {
                for (c, &w) in row.iter().enumerate() {
                    weight[c * fan_in + t] = w as u8;
                }
            }
            let params: Vec<i32> = match &r.output {
                OutputRecord::Requant(q) => {
                    check_len("requantisation", channels, q.len())?;
                    q.iter().flat_map(|q| [q.multiplier, q.shift]).collect()
                }
                OutputRecord::Step => alloc::vec![0; 2 * channels],
                OutputRecord::Cosine(f) => {
                    check_len("phase factors", channels, f.len())?;
                    f.iter()
                        .flat_map(|&f| [f as u32 as i32, (f >> 32) as i32])
                        .collect()
                }
            };
            let i32s = |v: &[i32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
            let meta = [r.zp_in, r.zp_out, r.scale_out.to_bits() as i32, 0];
            self.tensors
                .push((DType::I8, dims.weight().to_vec(), weight));
            self.tensors
                .push((DType::I32, dims.bias().to_vec(), i32s(&r.bias)));
            self.tensors
                .push((DType::I32, dims.output().to_vec(), i32s(&params)));
            self.tensors.push((DType::I32, META.to_vec(), i32s(&meta)));
            self.layer += 1;
            Ok(())
        }

        /// The next layer, whatever its kind.
        pub fn record(&mut self, record: &Record) -> Result<()> {
            match record {
                Record::Filter(f) => self.filter(f),
                Record::Linear(l) => self.linear(l),
                Record::Pool => {
                    let li = self.layer;
                    match self.spec.layers.get(li) {
                        Some(LayerSpec::MaxPool(_)) => {
                            self.layer += 1;
                            Ok(())
                        }
                        _ => Err(mismatch(li, "a pool record for a layer that is not a pool")),
                    }
                }
            }
        }

        /// Encodes the model file after checking it as the device will.
        pub fn finish(mut self) -> Result<Vec<u8>> {
            self.skip_pools();
            if self.layer != self.spec.layers.len() {
                return Err(mismatch(self.layer, "no record for this layer"));
            }
            let mut refs = heapless::Vec::<TensorRef<'_>, MAX_TENSORS>::new();
            for (dtype, dims, bytes) in &self.tensors {
                refs.push(TensorRef::new(*dtype, dims, bytes))
                    .map_err(|_| Error::TensorCount {
                        expected: MAX_TENSORS,
                        got: self.tensors.len(),
                    })?;
            }
            let bytes = format::to_vec(
                ModelKind::Int8,
                &ModelBody {
                    spec: self.spec.clone(),
                    tensors: refs,
                },
            );
            super::super::Int8Model::load(&bytes)?;
            Ok(bytes)
        }
    }
}
