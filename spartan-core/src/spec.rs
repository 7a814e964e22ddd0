//! Layer and architecture specifications: configuration apart from state.
//!
//! A spec says what each layer is; the tensors in the model file say what it learned.
//! Shape rules (valid padding, stride 1, floor pooling, NHWC, flatten order) are
//! defined here once and used by the trainer, the float path and the int8 path.

use crate::activation::Activation;
use crate::error::{Error, Result};
use crate::filter::{FilterKind, FilterSpec, DEFAULT_SF};
use serde::{Deserialize, Serialize};

/// Most layers a spec may hold (the paper's network has 9).
pub const MAX_LAYERS: usize = 24;
/// Largest number of elements any one activation tensor may have (guards arithmetic).
pub const MAX_ELEMENTS: usize = 1 << 24;

/// Height × width × channels of an activation (NHWC without the batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// Rows.
    pub height: u16,
    /// Columns.
    pub width: u16,
    /// Channels (features for a flat vector, with height = width = 1).
    pub channels: u16,
}

impl Shape {
    /// A new shape.
    pub const fn new(height: u16, width: u16, channels: u16) -> Self {
        Shape {
            height,
            width,
            channels,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.height as usize * self.width as usize * self.channels as usize
    }

    /// True when the shape holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A 3×3-style convolution, valid padding, stride 1 (square kernel).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvSpec {
    /// Output channels.
    pub filters: u16,
    /// Kernel side.
    pub kernel: u8,
    /// Activation (ReLU, or a composite one for the paper's filter layers 2 and 3).
    pub activation: Activation,
}

/// Non-overlapping max pooling (window = stride = `size`, floor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Window side and stride.
    pub size: u8,
}

/// A fully connected layer; its input is flattened in (h, w, c) order.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseSpec {
    /// Output features.
    pub units: u16,
    /// Activation (`linear` for the logits).
    pub activation: Activation,
}

/// One layer of a network.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerSpec {
    /// A binary filtering layer (first layer only).
    Filter(FilterSpec),
    /// A convolution.
    Conv(ConvSpec),
    /// Max pooling.
    MaxPool(PoolSpec),
    /// A dense layer.
    Dense(DenseSpec),
}

/// Shape of one parameter tensor, outermost dimension first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamShape {
    /// Dimensions; only the first `rank` are meaningful.
    pub dims: [u32; 4],
    /// Number of dimensions.
    pub rank: u8,
}

impl ParamShape {
    fn of(dims: &[usize]) -> Self {
        let mut d = [1u32; 4];
        for (slot, &v) in d.iter_mut().zip(dims) {
            *slot = v as u32;
        }
        ParamShape {
            dims: d,
            rank: dims.len() as u8,
        }
    }

    /// The meaningful dimensions.
    pub fn dims(&self) -> &[u32] {
        &self.dims[..self.rank as usize]
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims().iter().map(|&d| d as usize).product()
    }

    /// True when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The learned tensors of one layer: weight (absent for Offset-Filtering) and bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerParams {
    /// Weight shape, if the layer has weights.
    pub weight: Option<ParamShape>,
    /// Bias shape, if the layer has biases.
    pub bias: Option<ParamShape>,
}

impl LayerParams {
    const NONE: LayerParams = LayerParams {
        weight: None,
        bias: None,
    };

    /// The present tensors in file order: weight then bias.
    pub fn iter(&self) -> impl Iterator<Item = ParamShape> {
        self.weight.into_iter().chain(self.bias)
    }

    /// Number of learned scalars.
    pub fn count(&self) -> usize {
        self.iter().map(|s| s.len()).sum()
    }
}

impl LayerSpec {
    /// Output shape for a given input shape, or why the layer cannot take it.
    pub fn output_shape(&self, index: usize, input: Shape) -> Result<Shape> {
        let bad = |reason: &'static str| Error::InvalidSpec {
            layer: index,
            reason,
        };
        let out = match *self {
            LayerSpec::Filter(f) => {
                if f.beta == 0 {
                    return Err(bad("a filter needs beta >= 1"));
                }
                if !f.activation.is_binary() {
                    return Err(bad("a filter's activation must be a binary (step) one"));
                }
                if !f.sf.is_finite() || f.sf < 0.0 {
                    return Err(bad("sf must be finite and >= 0"));
                }
                // Conv-Filtering mixes the C channels into β; Offset-Filtering keeps
                // every element and gives each its own β thresholds.
                let c = match f.kind {
                    FilterKind::Conv => f.beta as u32,
                    FilterKind::Offset => input.channels as u32 * f.beta as u32,
                };
                let c = u16::try_from(c).map_err(|_| bad("too many filter channels"))?;
                Shape::new(input.height, input.width, c)
            }
            LayerSpec::Conv(c) => {
                let k = c.kernel as u16;
                if k == 0 || c.filters == 0 {
                    return Err(bad("a conv needs kernel >= 1 and filters >= 1"));
                }
                if k > input.height || k > input.width {
                    return Err(bad("conv kernel larger than its input"));
                }
                Shape::new(input.height - k + 1, input.width - k + 1, c.filters)
            }
            LayerSpec::MaxPool(p) => {
                let s = p.size as u16;
                if s == 0 {
                    return Err(bad("a pool needs size >= 1"));
                }
                if s > input.height || s > input.width {
                    return Err(bad("pool window larger than its input"));
                }
                Shape::new(input.height / s, input.width / s, input.channels)
            }
            LayerSpec::Dense(d) => {
                if d.units == 0 {
                    return Err(bad("a dense layer needs units >= 1"));
                }
                Shape::new(1, 1, d.units)
            }
        };
        if !self.activation().is_none_or(|a| a.is_valid()) {
            return Err(bad("activation sigma must be finite and > 0"));
        }
        if out.is_empty() || out.len() > MAX_ELEMENTS {
            return Err(bad("output shape is empty or too large"));
        }
        Ok(out)
    }

    /// Shapes of the layer's learned tensors for a given input shape.
    pub fn params(&self, input: Shape) -> LayerParams {
        let (h, w, c) = (
            input.height as usize,
            input.width as usize,
            input.channels as usize,
        );
        match *self {
            LayerSpec::Filter(f) => {
                let beta = f.beta as usize;
                match f.kind {
                    FilterKind::Conv => LayerParams {
                        weight: Some(ParamShape::of(&[c, beta])),
                        bias: Some(ParamShape::of(&[beta])),
                    },
                    FilterKind::Offset => LayerParams {
                        weight: None,
                        bias: Some(ParamShape::of(&[h, w, c * beta])),
                    },
                }
            }
            LayerSpec::Conv(cv) => {
                let k = cv.kernel as usize;
                let o = cv.filters as usize;
                LayerParams {
                    weight: Some(ParamShape::of(&[k, k, c, o])),
                    bias: Some(ParamShape::of(&[o])),
                }
            }
            LayerSpec::MaxPool(_) => LayerParams::NONE,
            LayerSpec::Dense(d) => LayerParams {
                weight: Some(ParamShape::of(&[h * w * c, d.units as usize])),
                bias: Some(ParamShape::of(&[d.units as usize])),
            },
        }
    }

    /// Multiply-adds of one inference of this layer (convs and dense layers; filters are
    /// table look-ups and pools comparisons, so 0), between these shapes.
    pub fn macs(&self, input: Shape, output: Shape) -> u64 {
        match *self {
            LayerSpec::Conv(c) => {
                let k = u64::from(c.kernel);
                output.len() as u64 * k * k * u64::from(input.channels)
            }
            LayerSpec::Dense(d) => input.len() as u64 * u64::from(d.units),
            LayerSpec::Filter(_) | LayerSpec::MaxPool(_) => 0,
        }
    }

    /// The layer's activation, if it has one.
    pub fn activation(&self) -> Option<Activation> {
        match *self {
            LayerSpec::Filter(f) => Some(f.activation),
            LayerSpec::Conv(c) => Some(c.activation),
            LayerSpec::Dense(d) => Some(d.activation),
            LayerSpec::MaxPool(_) => None,
        }
    }

    /// Short lowercase name used for tensor names: `filter`, `conv`, `pool`, `dense`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            LayerSpec::Filter(_) => "filter",
            LayerSpec::Conv(_) => "conv",
            LayerSpec::MaxPool(_) => "pool",
            LayerSpec::Dense(_) => "dense",
        }
    }
}

/// A whole network: its input shape and its layers; the output is the last layer's
/// units (the class logits; softmax is part of the loss).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    /// Input image shape (MNIST: 28×28×1).
    pub input: Shape,
    /// Layers, first to last.
    pub layers: heapless::Vec<LayerSpec, MAX_LAYERS>,
}

/// Hyper-parameters of the named architectures (docs/maths.md, the network).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NamedParams {
    /// Thresholds per input channel of the layer-1 filter (β).
    pub beta: u16,
    /// Filter-regularisation scaling factor.
    pub sf: f32,
    /// σ of normal-distribution composite activations.
    pub sigma: f32,
    /// Number of classes.
    pub classes: u16,
}

impl Default for NamedParams {
    fn default() -> Self {
        NamedParams {
            beta: 4,
            sf: DEFAULT_SF,
            sigma: 1.0,
            classes: 10,
        }
    }
}

/// Names accepted by [`ArchSpec::named`].
pub const NAMED_ARCHITECTURES: [&str; 4] =
    ["standard", "candidate-a", "candidate-b", "candidate-c"];

impl ArchSpec {
    /// The paper's §7.1 network on an `input` image, with an optional layer-1 filter and
    /// the activations of the second conv of each block (filter layers 2 and 3).
    pub fn paper_network(
        input: Shape,
        filter: Option<FilterSpec>,
        l2: Activation,
        l3: Activation,
        classes: u16,
    ) -> Self {
        let conv = |activation| {
            LayerSpec::Conv(ConvSpec {
                filters: 32,
                kernel: 3,
                activation,
            })
        };
        let pool = LayerSpec::MaxPool(PoolSpec { size: 2 });
        let mut layers = heapless::Vec::new();
        let all = filter.map(LayerSpec::Filter).into_iter().chain([
            conv(Activation::Relu),
            conv(l2),
            pool,
            conv(Activation::Relu),
            conv(l3),
            pool,
            LayerSpec::Dense(DenseSpec {
                units: 50,
                activation: Activation::Relu,
            }),
            LayerSpec::Dense(DenseSpec {
                units: classes,
                activation: Activation::Linear,
            }),
        ]);
        for layer in all {
            // At most 9 layers: always fits in MAX_LAYERS.
            let _ = layers.push(layer);
        }
        ArchSpec { input, layers }
    }

    /// One of [`NAMED_ARCHITECTURES`] on 28×28×1 images, or `None` for another name.
    pub fn named(name: &str, p: NamedParams) -> Option<Self> {
        let relu = Activation::Relu;
        let filter = |kind, activation| {
            Some(FilterSpec {
                kind,
                beta: p.beta,
                activation,
                sf: p.sf,
            })
        };
        let input = Shape::new(28, 28, 1);
        let (f, l2, l3) = match name {
            "standard" => (None, relu, relu),
            "candidate-a" => (filter(FilterKind::Offset, Activation::Hsat), relu, relu),
            "candidate-b" => {
                let cos_hsnd = Activation::CosHsnd { sigma: p.sigma };
                (
                    filter(FilterKind::Conv, Activation::Hsnd { sigma: p.sigma }),
                    cos_hsnd,
                    cos_hsnd,
                )
            }
            "candidate-c" => (filter(FilterKind::Conv, Activation::CosHsat), relu, relu),
            _ => return None,
        };
        Some(Self::paper_network(input, f, l2, l3, p.classes))
    }

    /// Checks every layer and returns the shapes: `shapes[0]` is the input,
    /// `shapes[i + 1]` the output of layer `i`.
    pub fn shapes(&self) -> Result<heapless::Vec<Shape, { MAX_LAYERS + 1 }>> {
        if self.input.is_empty() || self.input.len() > MAX_ELEMENTS {
            return Err(Error::InvalidSpec {
                layer: 0,
                reason: "input shape is empty or too large",
            });
        }
        if self.layers.is_empty() {
            return Err(Error::InvalidSpec {
                layer: 0,
                reason: "a network needs at least one layer",
            });
        }
        let mut shapes = heapless::Vec::new();
        let _ = shapes.push(self.input);
        let mut current = self.input;
        let mut flat = false;
        for (i, layer) in self.layers.iter().enumerate() {
            match layer {
                LayerSpec::Filter(_) if i != 0 => {
                    return Err(Error::InvalidSpec {
                        layer: i,
                        reason: "a filtering layer must be the first layer",
                    })
                }
                LayerSpec::Conv(_) | LayerSpec::MaxPool(_) if flat => {
                    return Err(Error::InvalidSpec {
                        layer: i,
                        reason: "conv and pool layers cannot follow a dense layer",
                    })
                }
                LayerSpec::Dense(_) => flat = true,
                _ => {}
            }
            current = layer.output_shape(i, current)?;
            let params = layer.params(shapes[i]);
            if params.iter().any(|p| p.len() > MAX_ELEMENTS) {
                return Err(Error::InvalidSpec {
                    layer: i,
                    reason: "parameter tensor too large",
                });
            }
            let _ = shapes.push(current);
        }
        if !flat || !matches!(self.layers.last(), Some(LayerSpec::Dense(_))) {
            return Err(Error::InvalidSpec {
                layer: self.layers.len() - 1,
                reason: "the last layer must be dense (the class logits)",
            });
        }
        Ok(shapes)
    }

    /// Number of classes (units of the last layer); 0 if the spec is empty.
    pub fn classes(&self) -> usize {
        match self.layers.last() {
            Some(LayerSpec::Dense(d)) => d.units as usize,
            _ => 0,
        }
    }

    /// Total learned scalars, or an error for an invalid spec.
    pub fn parameter_count(&self) -> Result<usize> {
        let shapes = self.shapes()?;
        Ok(self
            .layers
            .iter()
            .zip(shapes.iter())
            .map(|(l, &s)| l.params(s).count())
            .sum())
    }

    /// The layer-1 filter, if the network has one.
    pub fn filter(&self) -> Option<FilterSpec> {
        match self.layers.first() {
            Some(LayerSpec::Filter(f)) => Some(*f),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_network_has_the_papers_shapes_and_parameter_count() {
        let spec = ArchSpec::named("standard", NamedParams::default()).unwrap();
        let shapes = spec.shapes().unwrap();
        let hw: std::vec::Vec<_> = shapes
            .iter()
            .map(|s| (s.height, s.width, s.channels))
            .collect();
        assert_eq!(
            hw,
            [
                (28, 28, 1),
                (26, 26, 32),
                (24, 24, 32),
                (12, 12, 32),
                (10, 10, 32),
                (8, 8, 32),
                (4, 4, 32),
                (1, 1, 50),
                (1, 1, 10)
            ]
        );
        // 320 + 9248 + 9248 + 9248 + 25650 + 510 = 54,224 (the peer benchmark's count).
        assert_eq!(spec.parameter_count().unwrap(), 54_224);
        // Multiply-adds per layer, as the CMSIS-NN peer's README counts them for
        // candidate-c (whose first conv has 4 input channels instead of 1).
        let macs: std::vec::Vec<u64> = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| l.macs(shapes[i], shapes[i + 1]))
            .collect();
        assert_eq!(
            macs,
            [194_688, 5_308_416, 0, 921_600, 589_824, 0, 25_600, 500]
        );
    }

    #[test]
    fn candidates_add_their_filter() {
        let p = NamedParams::default();
        let a = ArchSpec::named("candidate-a", p).unwrap();
        // Offset filter: 28·28·4 biases; the next conv sees 4 channels.
        assert_eq!(
            a.parameter_count().unwrap(),
            54_224 + 28 * 28 * 4 + 3 * 3 * 3 * 32
        );
        let c = ArchSpec::named("candidate-c", p).unwrap();
        assert_eq!(c.parameter_count().unwrap(), 54_224 + 8 + 3 * 3 * 3 * 32);
        let b = ArchSpec::named("candidate-b", p).unwrap();
        assert_eq!(
            b.layers[2].activation(),
            Some(Activation::CosHsnd { sigma: 1.0 })
        );
        assert!(ArchSpec::named("candidate-z", p).is_none());
    }

    #[test]
    fn invalid_specs_are_rejected_with_the_layer_named() {
        let mut spec = ArchSpec::named("candidate-c", NamedParams::default()).unwrap();
        spec.layers.swap(0, 1);
        assert!(matches!(
            spec.shapes(),
            Err(Error::InvalidSpec { layer: 1, .. })
        ));
        let mut spec = ArchSpec::named("standard", NamedParams::default()).unwrap();
        spec.layers.pop();
        spec.layers.pop();
        assert!(spec.shapes().is_err());
        let mut spec = ArchSpec::named("standard", NamedParams::default()).unwrap();
        spec.input = Shape::new(4, 4, 1);
        assert!(spec.shapes().is_err());
    }
}
