//! The validated int8 model: borrowed tensors per layer, the quantisation each needs,
//! and the row-pipeline plan its inference follows.

use super::exec::{Kernels, Plan, Probe};
use super::record::{self, LayerMeta};
use crate::error::{Error, Result};
use crate::format::{ModelFile, ModelKind, ModelReader, TensorRef};
use crate::spec::{ArchSpec, Shape, MAX_LAYERS};

/// `u16` "first pixel value that is on" meaning "never on".
pub const NEVER_ON: u16 = 256;

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

impl OutputStage<'_> {
    /// Whether the output never decreases when the accumulator grows, so that the
    /// maximum of the outputs is the output of the maximum accumulator: true of the
    /// fixed-point rescale (its multipliers are never negative) and of the step, not
    /// of the cosine.
    pub fn is_monotone(&self) -> bool {
        !matches!(self, OutputStage::Cosine(_))
    }

    /// The zero point of what this stage produces (binary maps have 0).
    pub fn zero_point(&self) -> i32 {
        match *self {
            OutputStage::Requant { zero_point, .. } => zero_point,
            OutputStage::Step | OutputStage::Cosine(_) => 0,
        }
    }
}

/// One int8 layer: borrowed tensors and the quantisation it needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Int8Layer<'a> {
    /// Layer-1 binary filter.
    Filter(FilterTables<'a>),
    /// Convolution (`weight` is `i8` `[C_out, k, k, C_in]`, `bias` `i32`).
    Conv {
        /// Weights, each output channel's `k·k·C_in` taps contiguous.
        weight: &'a [u8],
        /// Biases.
        bias: &'a [u8],
        /// Zero point of the input.
        zp_in: i32,
        /// Output stage.
        out: OutputStage<'a>,
        /// Largest `|accumulator|` any input can produce (from validation).
        acc_bound: u32,
        /// Real value of one output step (informative: hosts, inspection).
        scale_out: f32,
    },
    /// Max pooling.
    Pool,
    /// Dense (`weight` is `i8` `[N_out, N_in]`, `bias` `i32`).
    Dense {
        /// Weights, each output's `N_in` inputs contiguous.
        weight: &'a [u8],
        /// Biases.
        bias: &'a [u8],
        /// Zero point of the input.
        zp_in: i32,
        /// Output stage.
        out: OutputStage<'a>,
        /// Largest `|accumulator|` any input can produce (from validation).
        acc_bound: u32,
        /// Real value of one output step (informative: hosts, inspection).
        scale_out: f32,
    },
}

fn check_kind(kind: ModelKind) -> Result<()> {
    if kind != ModelKind::Int8 {
        return Err(Error::WrongKind {
            expected: ModelKind::Int8 as u8,
            got: kind as u8,
        });
    }
    Ok(())
}

/// A validated int8 model borrowing its tensors from the file bytes (flash).
#[derive(Clone, Debug)]
pub struct Int8Model<'a> {
    pub(super) spec: ArchSpec,
    pub(super) shapes: heapless::Vec<Shape, { MAX_LAYERS + 1 }>,
    pub(super) layers: heapless::Vec<Int8Layer<'a>, MAX_LAYERS>,
    pub(super) plan: Plan,
    logit_scale: f32,
    logit_zero_point: i32,
    crc: u32,
}

impl<'a> Int8Model<'a> {
    /// Parses and validates a model file of kind int8.
    pub fn load(bytes: &'a [u8]) -> Result<Self> {
        let mut slot = None;
        Self::load_into(&mut slot, bytes)?;
        slot.ok_or(Error::Decode)
    }

    /// [`load`](Self::load) into `slot`, building the model in place. Firmware keeps its
    /// model in a static this way: the model is the largest value it holds, and moving
    /// it out of a function would put a copy on the stack. Tensors are decoded one at a
    /// time. On error the slot is left empty.
    pub fn load_into<'s>(slot: &'s mut Option<Self>, bytes: &'a [u8]) -> Result<&'s Self> {
        let reader = ModelReader::parse(bytes)?;
        check_kind(reader.kind)?;
        let model = slot.insert(Self::empty(reader.crc));
        let filled = model.fill(reader.spec()?, reader.tensors(), reader.tensor_count());
        match filled {
            Ok(()) => slot.as_ref().ok_or(Error::Decode),
            Err(e) => {
                *slot = None;
                Err(e)
            }
        }
    }

    /// Validates an already parsed file: spec, tensor types and shapes, zero points,
    /// fixed-point parameters, and accumulator ranges (no overflow is possible).
    pub fn from_file(file: &ModelFile<'a>) -> Result<Self> {
        check_kind(file.kind)?;
        let mut model = Self::empty(file.crc);
        model.fill(
            file.body.spec.clone(),
            file.body.tensors.iter().cloned(),
            file.body.tensors.len(),
        )?;
        Ok(model)
    }

    /// A model with no layers, to be filled (inlined, so that it is built where it is
    /// stored: most of it is uninitialised capacity).
    #[inline(always)]
    fn empty(crc: u32) -> Self {
        Int8Model {
            spec: ArchSpec {
                input: Shape::new(0, 0, 0),
                layers: heapless::Vec::new(),
            },
            shapes: heapless::Vec::new(),
            layers: heapless::Vec::new(),
            plan: Plan::default(),
            logit_scale: 1.0,
            logit_zero_point: 0,
            crc,
        }
    }

    /// Validates `spec` and its tensors into `self`, in place.
    fn fill(
        &mut self,
        spec: ArchSpec,
        tensors: impl Iterator<Item = TensorRef<'a>>,
        count: usize,
    ) -> Result<()> {
        self.spec = spec;
        self.shapes = self.spec.shapes()?;
        let layers = &mut self.layers;
        let mut logits = LayerMeta::default();
        record::parse(&self.spec, &self.shapes, tensors, count, |layer, meta| {
            // `parse` visits at most as many layers as the spec holds.
            let _ = layers.push(layer);
            if let Some(m) = meta {
                logits = m;
            }
        })?;
        self.plan = Plan::new(&self.spec, &self.shapes, &self.layers);
        self.logit_scale = logits.scale_out;
        self.logit_zero_point = logits.zp_out;
        Ok(())
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

    /// Exact number of scratch bytes [`infer`](Self::infer) needs: the rows each stage
    /// keeps, the dense sums, the kernels' scratch, and up to 3 bytes of alignment.
    pub fn arena_len(&self) -> usize {
        self.plan.arena_len()
    }

    /// The layers each pipeline stage runs (a conv fused with its max-pool is one
    /// stage): the unit [`infer_probed`](Self::infer_probed) reports.
    pub fn stage_layers(&self) -> impl Iterator<Item = core::ops::Range<usize>> + '_ {
        let n = self.layers.len();
        let starts = self.plan.stages.iter().map(|s| s.layer as usize);
        let ends = self
            .plan
            .stages
            .iter()
            .skip(1)
            .map(|s| s.layer as usize)
            .chain([n]);
        starts.zip(ends).map(|(a, b)| a..b)
    }

    /// Classifies raw pixels (HWC `u8`), writing `i8` logits; returns the class.
    ///
    /// Never inlined: one entry point that tools can find in a firmware image (the
    /// CMSIS-NN peer's instruction-count cross-check marks it).
    #[inline(never)]
    pub fn infer(&self, pixels: &[u8], arena: &mut [u8], logits: &mut [i8]) -> Result<usize> {
        self.run(pixels, arena, logits, &mut (), Kernels::NATIVE)
    }

    /// [`infer`](Self::infer), telling `probe` which stage is working.
    pub fn infer_probed(
        &self,
        pixels: &[u8],
        arena: &mut [u8],
        logits: &mut [i8],
        probe: &mut dyn Probe,
    ) -> Result<usize> {
        self.run(pixels, arena, logits, probe, Kernels::NATIVE)
    }

    /// Real value of one logit step and the logits' zero point (for hosts that want
    /// approximate real logits: `scale · (q − zp)`).
    pub fn logit_quantization(&self) -> (f32, i32) {
        (self.logit_scale, self.logit_zero_point)
    }
}
