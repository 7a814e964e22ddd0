//! Inference as a row pipeline: the image enters one pixel row at a time, and each
//! stage keeps only the input rows its window still needs, so the arena holds a few
//! rows per layer instead of whole activation maps.
//!
//! - A convolution keeps a ring of `k` input rows (`k + 1` when fused with the 2×2
//!   max-pool after it: it then makes the two conv rows a pooled row needs at once, and
//!   requantises only the maximum of each window — the rescale and the step never
//!   decrease as the accumulator grows, so that is the same integer).
//! - A standalone max-pool folds each input row into its output row in place.
//! - A dense layer accumulates each input row into its `i32` sums as it arrives.
//!
//! Every stage writes its output row straight into the next stage's ring; the last
//! stage (a dense layer) writes the logits. The integers are those of layer-by-layer
//! evaluation: only the order of the work changes.

use super::mcu;
use super::model::{FilterTables, Int8Layer, Int8Model, OutputStage};
use super::record::{le_i32, le_u16};
use crate::error::Result;
use crate::float::{argmax, check_arena, check_len};
use crate::spec::{ArchSpec, LayerSpec, Shape, MAX_LAYERS};

/// Observes the row pipeline: which stage is working. The firmware self-test counts
/// instructions per stage with it; [`Int8Model::infer`] uses `()`, which does nothing.
pub trait Probe {
    /// Stage `Some(s)` starts working on a row; `None`: back in the row loop.
    fn stage(&mut self, stage: Option<usize>);
}

impl Probe for () {
    #[inline(always)]
    fn stage(&mut self, _: Option<usize>) {}
}

/// What one stage of the pipeline does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StageKind {
    /// The layer-1 filter, on pixel rows.
    Filter,
    /// A convolution; `pooled`: fused with the 2×2 max-pool after it.
    Conv { pooled: bool },
    /// A standalone max-pool.
    Pool,
    /// A dense layer.
    Dense,
}

/// One stage and where its input rows live in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stage {
    /// Its (first) layer.
    pub layer: u8,
    pub kind: StageKind,
    /// Input rows it keeps (0 for the filter, which reads the pixels).
    pub slots: u8,
    /// Bytes per input row.
    pub row_len: u32,
    /// Where its region starts in the arena, after the scratch.
    pub offset: u32,
}

/// The stages of a model and the arena they need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(super) stages: heapless::Vec<Stage, MAX_LAYERS>,
    /// Bytes of kernel scratch at the start of the (word-aligned) arena.
    scratch: u32,
    /// Bytes of the whole arena, scratch included.
    bytes: u32,
}

/// Rounds up to a whole number of 4-byte words.
fn words(bytes: usize) -> usize {
    bytes.div_ceil(4) * 4
}

impl Plan {
    /// Lays out the pipeline of a validated model.
    pub(super) fn new(spec: &ArchSpec, shapes: &[Shape], layers: &[Int8Layer<'_>]) -> Self {
        let mut stages = heapless::Vec::new();
        let (mut scratch, mut offset) = (0usize, 0usize);
        let mut i = 0;
        while i < spec.layers.len() {
            let input = shapes[i];
            let row_len = input.width as usize * input.channels as usize;
            let (kind, slots, extra, covers) = match (spec.layers[i], layers[i]) {
                (LayerSpec::Filter(_), _) => (StageKind::Filter, 0, 0, 1),
                (LayerSpec::Conv(c), Int8Layer::Conv { out, .. }) => {
                    let pooled = out.is_monotone()
                        && matches!(spec.layers.get(i + 1), Some(LayerSpec::MaxPool(p)) if p.size == 2);
                    let k = c.kernel as usize;
                    scratch = scratch.max(mcu::scratch_bytes(
                        k * k * input.channels as usize,
                        c.filters as usize,
                    ));
                    let slots = k + usize::from(pooled);
                    (
                        StageKind::Conv { pooled },
                        slots,
                        0,
                        1 + usize::from(pooled),
                    )
                }
                (LayerSpec::MaxPool(_), _) => (StageKind::Pool, 1, 0, 1),
                (LayerSpec::Dense(d), _) => {
                    scratch = scratch.max(mcu::dense_scratch_bytes(row_len));
                    (StageKind::Dense, 1, 4 * d.units as usize, 1)
                }
                // Validation pairs every layer with its spec.
                _ => (StageKind::Pool, 1, 0, 1),
            };
            let _ = stages.push(Stage {
                layer: i as u8,
                kind,
                slots: slots as u8,
                row_len: row_len as u32,
                offset: offset as u32,
            });
            offset += words(slots * row_len) + extra;
            i += covers;
        }
        Plan {
            stages,
            scratch: scratch as u32,
            bytes: (scratch + offset) as u32,
        }
    }

    /// Arena bytes, including up to 3 to align it to a word.
    pub(super) fn arena_len(&self) -> usize {
        self.bytes as usize + 3
    }
}

/// Which kernels run the convolutions and dense layers; all compute the same integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernels {
    /// Blocks of four output pixels through staged, widened inputs (`SMLAD` on
    /// Armv7E-M): little stack, no vector unit needed. Hosts run them in tests.
    #[cfg_attr(not(any(test, target_os = "none")), allow(dead_code))]
    Mcu,
    /// Whole rows of accumulators on the stack, vector-friendly (AVX-512 VNNI where the
    /// CPU has it). Not built for bare metal.
    #[cfg(not(target_os = "none"))]
    Host,
}

impl Kernels {
    /// Microcontrollers take the block kernels, hosts the row kernels.
    #[cfg(target_os = "none")]
    pub(crate) const NATIVE: Kernels = Kernels::Mcu;
    /// Microcontrollers take the block kernels, hosts the row kernels.
    #[cfg(not(target_os = "none"))]
    pub(crate) const NATIVE: Kernels = Kernels::Host;
}

/// A convolution's operands for one output row (or pooled row).
#[derive(Clone, Copy)]
pub(super) struct Conv<'a> {
    /// `i8 [C_out, k, k, C_in]`.
    pub weight: &'a [u8],
    /// `i32 [C_out]`.
    pub bias: &'a [u8],
    pub zp_in: i32,
    pub out: OutputStage<'a>,
    pub acc_bound: u32,
    pub kernel: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Output pixels per row: those the pool keeps (an even number) when pooled.
    pub out_width: usize,
}

/// The last `slots` input rows of a stage, oldest first, stored as a ring.
#[derive(Clone, Copy)]
pub(super) struct Window<'a> {
    pub rows: &'a [u8],
    pub slots: usize,
    pub row_len: usize,
    /// Index of the oldest row the computation needs.
    pub first: usize,
}

impl<'a> Window<'a> {
    /// Row `i` of the window (0 = `first`).
    #[inline]
    pub fn row(&self, i: usize) -> &'a [u8] {
        let slot = (self.first + i) % self.slots;
        self.rows
            .get(slot * self.row_len..(slot + 1) * self.row_len)
            .unwrap_or(&[])
    }
}

/// A dense layer's operands.
#[derive(Clone, Copy)]
pub(super) struct Dense<'a> {
    /// `i8 [N_out, N_in]`.
    pub weight: &'a [u8],
    pub zp_in: i32,
    pub out: OutputStage<'a>,
    pub inputs: usize,
}

/// Kernel scratch: the arena's (counted in [`Int8Model::arena_len`]) and, on hosts, the
/// row kernels' stack buffers, made once per inference rather than once per row.
pub(super) struct Scratch<'s> {
    pub arena: &'s mut [u8],
    #[cfg(not(target_os = "none"))]
    pub host: &'s mut super::host::Scratch,
}

/// Where a stage writes its output row.
pub(super) enum Dest<'d> {
    /// The next stage's input slot (`u8` activations).
    Hidden(&'d mut [u8]),
    /// The logits.
    Logits(&'d mut [i8]),
}

impl<'a> Int8Model<'a> {
    /// The pipeline with the given kernels.
    pub(crate) fn run(
        &self,
        pixels: &[u8],
        arena: &mut [u8],
        logits: &mut [i8],
        probe: &mut dyn Probe,
        kernels: Kernels,
    ) -> Result<usize> {
        check_len("pixels", self.input_len(), pixels.len())?;
        check_len("logits", self.classes(), logits.len())?;
        check_arena(self.arena_len(), arena.len())?;
        // The kernels' scratch is read a word at a time: align it.
        let skip = arena.as_ptr().align_offset(4).min(3);
        let arena = &mut arena[skip..skip + self.plan.bytes as usize];
        let (scratch, area) = arena.split_at_mut(self.plan.scratch as usize);
        #[cfg(not(target_os = "none"))]
        let mut host = super::host::Scratch::new();
        let mut scratch = Scratch {
            arena: scratch,
            #[cfg(not(target_os = "none"))]
            host: &mut host,
        };
        let stages = &self.plan.stages;
        let mut received = [0u16; MAX_LAYERS];
        let input = self.shapes[0];
        let row_len = input.width as usize * input.channels as usize;
        for pixel_row in pixels.chunks_exact(row_len) {
            // The first stage's input: a filter reads the pixels, others keep them.
            let first = stages[0];
            if first.kind != StageKind::Filter {
                let at = first.offset as usize + slot_of(&first, received[0]) * row_len;
                area[at..at + row_len].copy_from_slice(pixel_row);
            }
            for (s, stage) in stages.iter().enumerate() {
                probe.stage(Some(s));
                let row = received[s];
                received[s] = row.wrapping_add(1);
                let end = stages.get(s + 1).map_or(area.len(), |n| n.offset as usize);
                let (mine, rest) =
                    area[stage.offset as usize..].split_at_mut(end - stage.offset as usize);
                let dest = match stages.get(s + 1) {
                    Some(next) => {
                        let len = next.row_len as usize;
                        let at = slot_of(next, received[s + 1]) * len;
                        Dest::Hidden(&mut rest[at..at + len])
                    }
                    None => Dest::Logits(&mut *logits),
                };
                let emitted = self.step(
                    stage,
                    row as usize,
                    pixel_row,
                    mine,
                    dest,
                    &mut scratch,
                    kernels,
                );
                if !emitted {
                    break;
                }
            }
            probe.stage(None);
        }
        Ok(argmax(logits))
    }

    /// Stage `st` receives its input row number `j` (already in its ring, or `pixels`
    /// for the filter); returns whether it wrote an output row to `dest`.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        st: &Stage,
        j: usize,
        pixels: &[u8],
        mine: &mut [u8],
        dest: Dest<'_>,
        scratch: &mut Scratch<'_>,
        kernels: Kernels,
    ) -> bool {
        let li = st.layer as usize;
        let (input, output) = (self.shapes[li], self.shapes[li + 1]);
        let row_len = st.row_len as usize;
        match (st.kind, self.layers[li], self.spec.layers[li]) {
            (StageKind::Filter, Int8Layer::Filter(tables), LayerSpec::Filter(f)) => {
                let Dest::Hidden(dst) = dest else {
                    return false;
                };
                filter_row(tables, f.beta as usize, pixels, j * pixels.len(), dst);
                true
            }
            (
                StageKind::Conv { pooled },
                Int8Layer::Conv {
                    weight,
                    bias,
                    zp_in,
                    out,
                    acc_bound,
                    ..
                },
                LayerSpec::Conv(cs),
            ) => {
                let Dest::Hidden(dst) = dest else {
                    return false;
                };
                let k = cs.kernel as usize;
                let (bh, out_rows, out_width) = if pooled {
                    let pooled_shape = self.shapes[li + 2];
                    (
                        2,
                        pooled_shape.height as usize,
                        2 * pooled_shape.width as usize,
                    )
                } else {
                    (1, output.height as usize, output.width as usize)
                };
                let slots = st.slots as usize;
                let ready = slots - 1;
                if j < ready || !(j - ready).is_multiple_of(bh) || (j - ready) / bh >= out_rows {
                    return false;
                }
                let window = Window {
                    rows: &mine[..slots * row_len],
                    slots,
                    row_len,
                    first: j - ready,
                };
                let conv = Conv {
                    weight,
                    bias,
                    zp_in,
                    out,
                    acc_bound,
                    kernel: k,
                    in_channels: input.channels as usize,
                    out_channels: output.channels as usize,
                    out_width,
                };
                match kernels {
                    Kernels::Mcu => mcu::conv_row(&conv, &window, pooled, dst, scratch.arena),
                    #[cfg(not(target_os = "none"))]
                    Kernels::Host => super::host::conv_row(&conv, &window, pooled, dst, scratch),
                }
                true
            }
            (StageKind::Pool, _, LayerSpec::MaxPool(p)) => {
                let Dest::Hidden(dst) = dest else {
                    return false;
                };
                let s = p.size as usize;
                if j >= output.height as usize * s {
                    return false;
                }
                pool_row(
                    &mine[..row_len],
                    input.channels as usize,
                    s,
                    j.is_multiple_of(s),
                    dst,
                );
                j % s == s - 1
            }
            (
                StageKind::Dense,
                Int8Layer::Dense {
                    weight,
                    bias,
                    zp_in,
                    out,
                    ..
                },
                _,
            ) => {
                let (row, acc) = mine.split_at_mut(words(row_len));
                let dense = Dense {
                    weight,
                    zp_in,
                    out,
                    inputs: input.len(),
                };
                if j == 0 {
                    for (c, a) in acc.chunks_exact_mut(4).enumerate() {
                        a.copy_from_slice(&le_i32(bias, c).to_le_bytes());
                    }
                }
                match kernels {
                    Kernels::Mcu => {
                        mcu::dense_row(&dense, &row[..row_len], j * row_len, acc, scratch.arena)
                    }
                    #[cfg(not(target_os = "none"))]
                    Kernels::Host => {
                        super::host::dense_row(&dense, &row[..row_len], j * row_len, acc)
                    }
                }
                if j + 1 < input.height as usize {
                    return false;
                }
                dense_finish(&dense, acc, dest);
                true
            }
            // Validation and the plan pair every stage with its layer.
            _ => false,
        }
    }
}

/// The ring slot of a stage's input row number `row`.
fn slot_of(stage: &Stage, row: u16) -> usize {
    usize::from(row) % usize::from(stage.slots.max(1))
}

/// One row of the layer-1 filter: `pixels` is image row data starting at flat pixel
/// index `first` (Offset-Filtering has per-pixel units).
fn filter_row(tables: FilterTables<'_>, beta: usize, pixels: &[u8], first: usize, dst: &mut [u8]) {
    match tables {
        FilterTables::Shared(t) => {
            for (out, &px) in dst.chunks_exact_mut(beta).zip(pixels) {
                let (byte, bit) = (usize::from(px >> 3), px & 7);
                for (o, table) in out.iter_mut().zip(t.chunks_exact(32)) {
                    *o = (table[byte] >> bit) & 1;
                }
            }
        }
        FilterTables::Thresholds(t) => {
            let units = dst.len() / pixels.len().max(1);
            for (o, out) in dst.iter_mut().enumerate() {
                let unit = first * units + o;
                *out = u8::from(u16::from(pixels[o / beta]) >= le_u16(t, unit));
            }
        }
        FilterTables::PerUnit(t) => {
            let units = dst.len() / pixels.len().max(1);
            for (o, out) in dst.iter_mut().enumerate() {
                *out = table_bit(t, first * units + o, pixels[o / beta]);
            }
        }
    }
}

/// Bit `p` of table `unit` (32 bytes per table, little-endian bit order).
#[inline]
fn table_bit(tables: &[u8], unit: usize, p: u8) -> u8 {
    tables
        .get(unit * 32 + (p >> 3) as usize)
        .map_or(0, |b| (b >> (p & 7)) & 1)
}

/// Folds one input row into a max-pool's output row: the maximum over `s` columns,
/// stored (`first` row of the window) or combined with what is there.
fn pool_row(src: &[u8], channels: usize, s: usize, first: bool, dst: &mut [u8]) {
    for (x, out) in dst.chunks_exact_mut(channels).enumerate() {
        let window = &src[x * s * channels..(x + 1) * s * channels];
        if first {
            out.copy_from_slice(&window[..channels]);
        }
        for run in window.chunks_exact(channels) {
            for (o, &v) in out.iter_mut().zip(run) {
                *o = (*o).max(v);
            }
        }
    }
}

/// A dense layer's outputs from its finished sums.
fn dense_finish(d: &Dense<'_>, acc: &[u8], dest: Dest<'_>) {
    let sums = acc
        .chunks_exact(4)
        .map(|a| i32::from_le_bytes([a[0], a[1], a[2], a[3]]));
    match dest {
        Dest::Hidden(dst) => {
            for (c, (o, a)) in dst.iter_mut().zip(sums).enumerate() {
                *o = super::kernels::finish(&d.out, c, a).clamp(0, 255) as u8;
            }
        }
        Dest::Logits(dst) => {
            for (c, (o, a)) in dst.iter_mut().zip(sums).enumerate() {
                *o = super::kernels::finish(&d.out, c, a).clamp(-128, 127) as i8;
            }
        }
    }
}
