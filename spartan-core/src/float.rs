//! Float reference inference: a validated f32 model and a straightforward forward pass
//! into a caller-provided arena.
//!
//! This is the semantics every other path is checked against, so it favours clarity
//! over speed; the trainer has its own GEMM-based layers and tests that they agree.

use crate::error::{Error, Result};
use crate::filter::{conv_filter_preactivation, pixel_to_unit, unit_preactivation, FilterKind};
use crate::format::{DType, ModelFile, ModelKind, TensorRef};
use crate::spec::{ArchSpec, LayerSpec, Shape, MAX_LAYERS};

/// Little-endian f32 values borrowed from a model file (possibly unaligned flash).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct F32Slice<'a>(&'a [u8]);

impl<'a> F32Slice<'a> {
    /// Wraps little-endian bytes; the length must be a multiple of 4 (validated).
    pub fn new(bytes: &'a [u8]) -> Self {
        F32Slice(bytes)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// True when there is no value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Value `i`; `0.0` past the end (never reached after validation).
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self.0.get(i * 4..i * 4 + 4) {
            Some(b) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0.0,
        }
    }

    /// Little-endian bytes of values `start .. start + len` (empty if out of range).
    #[inline]
    pub fn range(&self, start: usize, len: usize) -> &'a [u8] {
        self.0.get(start * 4..(start + len) * 4).unwrap_or(&[])
    }

    /// All values in order.
    pub fn iter(&self) -> impl Iterator<Item = f32> + 'a {
        self.0
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// Learned tensors of one layer (empty slices where the layer has none).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LayerWeights<'a> {
    /// Weight values in the layout of `LayerSpec::params`.
    pub weight: F32Slice<'a>,
    /// Bias values.
    pub bias: F32Slice<'a>,
}

/// Checks the tensors of `body` against `spec` for a given dtype and returns, per
/// layer, the indices of its weight and bias tensors. Shared by every model kind so the
/// rule "weight then bias, in layer order" is written once.
pub(crate) fn bind_layer_tensors(
    spec: &ArchSpec,
    shapes: &[Shape],
    tensors: &[TensorRef<'_>],
    weight_dtype: DType,
    bias_dtype: DType,
) -> Result<heapless::Vec<(Option<usize>, Option<usize>), MAX_LAYERS>> {
    let mut bound = heapless::Vec::new();
    let mut next = 0usize;
    let mut take = |dtype: DType, dims: &[u32]| -> Result<usize> {
        let index = next;
        let t = tensors.get(index).ok_or(Error::TensorCount {
            expected: index + 1,
            got: tensors.len(),
        })?;
        t.expect(index, dtype, dims)?;
        next += 1;
        Ok(index)
    };
    for (layer, &input) in spec.layers.iter().zip(shapes) {
        let p = layer.params(input);
        let w = p.weight.map(|s| take(weight_dtype, s.dims())).transpose()?;
        let b = p.bias.map(|s| take(bias_dtype, s.dims())).transpose()?;
        let _ = bound.push((w, b));
    }
    Ok(bound)
}

/// Position of the largest value (first one on ties; NaNs never win).
pub fn argmax<T: PartialOrd + Copy>(values: &[T]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        // `partial_cmp` of a value with itself is `None` only for NaN.
        let best_is_nan = values[best].partial_cmp(&values[best]).is_none();
        if v > values[best] || best_is_nan {
            best = i;
        }
    }
    best
}

/// Where each intermediate activation lives in the arena: odd layers at the front, even
/// layers at the back, so a layer's input and output never overlap.
pub(crate) fn arena_need(shapes: &[Shape]) -> usize {
    // shapes[1..len-1] are the intermediates (the last output goes to the caller).
    let inner = &shapes[1..shapes.len().saturating_sub(1).max(1)];
    let single = inner.iter().map(|s| s.len()).max().unwrap_or(0);
    let pairs = inner
        .windows(2)
        .map(|w| w[0].len() + w[1].len())
        .max()
        .unwrap_or(0);
    single.max(pairs)
}

/// Splits the arena into (input, output) views for layer `i` (0-based).
pub(crate) fn arena_views<T>(
    arena: &mut [T],
    i: usize,
    in_len: usize,
    out_len: usize,
) -> (&[T], &mut [T]) {
    let n = arena.len();
    // Layer i writes activation i+1: front when i is even, back when odd.
    if i.is_multiple_of(2) {
        let (front, back) = arena.split_at_mut(n - in_len);
        (&back[..], &mut front[..out_len])
    } else {
        let (front, back) = arena.split_at_mut(in_len);
        let back_len = back.len();
        (&front[..], &mut back[back_len - out_len..])
    }
}

/// A validated float model borrowing its weights from the file bytes.
#[derive(Clone, Debug)]
pub struct F32Model<'a> {
    spec: ArchSpec,
    shapes: heapless::Vec<Shape, { MAX_LAYERS + 1 }>,
    weights: heapless::Vec<LayerWeights<'a>, MAX_LAYERS>,
    crc: u32,
}

impl<'a> F32Model<'a> {
    /// Parses and validates a model file of kind f32.
    pub fn load(bytes: &'a [u8]) -> Result<Self> {
        Self::from_file(&ModelFile::parse(bytes)?)
    }

    /// Validates an already parsed file: spec, tensor types, shapes, finiteness.
    pub fn from_file(file: &ModelFile<'a>) -> Result<Self> {
        if file.kind != ModelKind::F32 {
            return Err(Error::WrongKind {
                expected: ModelKind::F32 as u8,
                got: file.kind as u8,
            });
        }
        let spec = file.body.spec.clone();
        let shapes = spec.shapes()?;
        let tensors = &file.body.tensors;
        let bound = bind_layer_tensors(&spec, &shapes, tensors, DType::F32, DType::F32)?;
        let used: usize = bound
            .iter()
            .map(|(w, b)| w.is_some() as usize + b.is_some() as usize)
            .sum();
        if used != tensors.len() {
            return Err(Error::TensorCount {
                expected: used,
                got: tensors.len(),
            });
        }
        let mut weights = heapless::Vec::new();
        for (w, b) in bound {
            let view = |i: Option<usize>| -> Result<F32Slice<'a>> {
                let Some(i) = i else {
                    return Ok(F32Slice::default());
                };
                let s = F32Slice::new(tensors[i].data);
                if s.iter().any(|v| !v.is_finite()) {
                    return Err(Error::BadValue {
                        tensor: i,
                        reason: "not finite",
                    });
                }
                Ok(s)
            };
            let _ = weights.push(LayerWeights {
                weight: view(w)?,
                bias: view(b)?,
            });
        }
        Ok(F32Model {
            spec,
            shapes,
            weights,
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

    /// Weights of layer `i`.
    pub fn layer_weights(&self, i: usize) -> Option<LayerWeights<'a>> {
        self.weights.get(i).copied()
    }

    /// CRC-32 of the file the model came from.
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// Input elements (H·W·C).
    pub fn input_len(&self) -> usize {
        self.shapes[0].len()
    }

    /// Number of logits.
    pub fn classes(&self) -> usize {
        self.spec.classes()
    }

    /// Exact number of `f32` scratch elements [`infer`](Self::infer) needs.
    pub fn arena_len(&self) -> usize {
        arena_need(&self.shapes)
    }

    /// Runs the network on an image in `[0, 1]` (HWC order), writes the logits, and
    /// returns the predicted class.
    pub fn infer(&self, input: &[f32], arena: &mut [f32], logits: &mut [f32]) -> Result<usize> {
        check_len("input", self.input_len(), input.len())?;
        check_len("logits", self.classes(), logits.len())?;
        let need = self.arena_len();
        check_arena(need, arena.len())?;
        let arena = &mut arena[..need];
        let last = self.spec.layers.len() - 1;
        for (i, layer) in self.spec.layers.iter().enumerate() {
            let (in_shape, out_shape) = (self.shapes[i], self.shapes[i + 1]);
            let w = self.weights[i];
            if i == 0 {
                let out: &mut [f32] = if i == last {
                    logits
                } else {
                    &mut arena[..out_shape.len()]
                };
                run_layer(layer, &w, in_shape, out_shape, input, out);
            } else if i == last {
                let (src, _) = arena_views(arena, i, in_shape.len(), 0);
                run_layer(layer, &w, in_shape, out_shape, src, logits);
            } else {
                let (src, dst) = arena_views(arena, i, in_shape.len(), out_shape.len());
                run_layer(layer, &w, in_shape, out_shape, src, dst);
            }
        }
        Ok(argmax(logits))
    }

    /// [`infer`](Self::infer) on raw `u8` pixels, converted with [`pixel_to_unit`].
    /// `scratch` must hold `input_len()` values.
    pub fn infer_u8(
        &self,
        pixels: &[u8],
        scratch: &mut [f32],
        arena: &mut [f32],
        logits: &mut [f32],
    ) -> Result<usize> {
        check_len("pixels", self.input_len(), pixels.len())?;
        check_len("scratch", self.input_len(), scratch.len())?;
        for (x, &p) in scratch.iter_mut().zip(pixels) {
            *x = pixel_to_unit(p);
        }
        self.infer(scratch, arena, logits)
    }
}

pub(crate) fn check_len(buffer: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::BufferSize {
            buffer,
            expected,
            got,
        })
    }
}

/// An arena (scratch) buffer must hold at least `need` elements.
pub(crate) fn check_arena(need: usize, got: usize) -> Result<()> {
    if got < need {
        return Err(Error::BufferSize {
            buffer: "arena",
            expected: need,
            got,
        });
    }
    Ok(())
}

/// One layer of the float forward pass (shapes already validated).
fn run_layer(
    layer: &LayerSpec,
    w: &LayerWeights<'_>,
    input: Shape,
    output: Shape,
    x: &[f32],
    y: &mut [f32],
) {
    match *layer {
        LayerSpec::Filter(f) => {
            let c_in = input.channels as usize;
            let beta = f.beta as usize;
            let pixels = input.height as usize * input.width as usize;
            for p in 0..pixels {
                let xs = &x[p * c_in..(p + 1) * c_in];
                match f.kind {
                    // Offset: element (p, c) feeds outputs (p, c·β + k) with weight 1.
                    FilterKind::Offset => {
                        for (c, &xv) in xs.iter().enumerate() {
                            for k in 0..beta {
                                let o = (p * c_in + c) * beta + k;
                                let z = unit_preactivation(1.0, xv, w.bias.get(o));
                                y[o] = f.activation.forward(z);
                            }
                        }
                    }
                    // Conv: a 1×1 convolution of the C channels into β outputs.
                    FilterKind::Conv => {
                        for k in 0..beta {
                            let z = conv_filter_preactivation(
                                |c| w.weight.get(c * beta + k),
                                w.bias.get(k),
                                xs,
                            );
                            y[p * beta + k] = f.activation.forward(z);
                        }
                    }
                }
            }
        }
        LayerSpec::Conv(c) => {
            let (iw, ic) = (input.width as usize, input.channels as usize);
            let (oh, ow, oc) = (
                output.height as usize,
                output.width as usize,
                output.channels as usize,
            );
            let k = c.kernel as usize;
            for oy in 0..oh {
                for ox in 0..ow {
                    let acc = &mut y[(oy * ow + ox) * oc..(oy * ow + ox + 1) * oc];
                    for (co, a) in acc.iter_mut().enumerate() {
                        *a = w.bias.get(co);
                    }
                    for ky in 0..k {
                        for kx in 0..k {
                            for ci in 0..ic {
                                let xv = x[((oy + ky) * iw + ox + kx) * ic + ci];
                                let base = ((ky * k + kx) * ic + ci) * oc;
                                axpy(acc, xv, w.weight.range(base, oc));
                            }
                        }
                    }
                    for a in acc.iter_mut() {
                        *a = c.activation.forward(*a);
                    }
                }
            }
        }
        LayerSpec::MaxPool(p) => {
            let s = p.size as usize;
            let (iw, c) = (input.width as usize, input.channels as usize);
            let (oh, ow) = (output.height as usize, output.width as usize);
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let mut m = f32::NEG_INFINITY;
                        for dy in 0..s {
                            for dx in 0..s {
                                let v = x[((oy * s + dy) * iw + ox * s + dx) * c + ch];
                                if v > m {
                                    m = v;
                                }
                            }
                        }
                        y[(oy * ow + ox) * c + ch] = m;
                    }
                }
            }
        }
        LayerSpec::Dense(d) => {
            let n_out = d.units as usize;
            for (j, out) in y.iter_mut().enumerate().take(n_out) {
                *out = w.bias.get(j);
            }
            for (i, &xv) in x.iter().enumerate() {
                axpy(&mut y[..n_out], xv, w.weight.range(i * n_out, n_out));
            }
            for out in y.iter_mut() {
                *out = d.activation.forward(*out);
            }
        }
    }
}

/// `acc[j] += a · w[j]` over little-endian weights; written over byte chunks so the
/// compiler can vectorise it even though flash data may be unaligned.
#[inline]
fn axpy(acc: &mut [f32], a: f32, w_bytes: &[u8]) {
    for (y, b) in acc.iter_mut().zip(w_bytes.chunks_exact(4)) {
        *y += a * f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}
