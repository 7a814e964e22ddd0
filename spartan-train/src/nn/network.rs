//! A trainable network built from a core [`ArchSpec`]: initialisation, forward and
//! backward passes over a batch, parameters for the optimiser, and conversion to and
//! from the core's model file.

use super::act::{keeps_preactivation, GradMode};
use super::conv::ConvLayer;
use super::dense::DenseLayer;
use super::filter::FilterLayer;
use super::pool;
use rand::Rng;
use spartan_core::filter::{initial_step_bias, FilterKind};
use spartan_core::float::F32Model;
use spartan_core::format::{self, DType, ModelBody, ModelKind, TensorRef};
use spartan_core::spec::{ArchSpec, LayerSpec, Shape};

/// One trainable layer.
#[derive(Clone, Debug)]
pub enum Layer {
    /// Binary filtering layer.
    Filter(FilterLayer),
    /// Convolution.
    Conv(ConvLayer),
    /// Max pooling (no parameters).
    Pool {
        /// Window side.
        size: usize,
        /// Input shape.
        input: Shape,
        /// Output shape.
        output: Shape,
    },
    /// Dense.
    Dense(DenseLayer),
}

impl Layer {
    /// (weight, bias) parameter slices, empty where absent.
    fn params(&self) -> (&[f32], &[f32]) {
        match self {
            Layer::Filter(l) => (&l.weight, &l.bias),
            Layer::Conv(l) => (&l.weight, &l.bias),
            Layer::Dense(l) => (&l.weight, &l.bias),
            Layer::Pool { .. } => (&[], &[]),
        }
    }

    /// Mutable parameters paired with their gradients, weight first.
    fn params_and_grads(&mut self) -> [(&mut [f32], &[f32]); 2] {
        match self {
            Layer::Filter(l) => [(&mut l.weight, &l.grad_weight), (&mut l.bias, &l.grad_bias)],
            Layer::Conv(l) => [(&mut l.weight, &l.grad_weight), (&mut l.bias, &l.grad_bias)],
            Layer::Dense(l) => [(&mut l.weight, &l.grad_weight), (&mut l.bias, &l.grad_bias)],
            Layer::Pool { .. } => [(&mut [], &[]), (&mut [], &[])],
        }
    }
}

/// Glorot-uniform initialisation (the Keras default the paper used), zero biases.
fn glorot(rng: &mut impl Rng, n: usize, fan_in: usize, fan_out: usize) -> Vec<f32> {
    let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
    (0..n).map(|_| rng.random_range(-limit..limit)).collect()
}

/// A network with reusable activation and gradient buffers.
#[derive(Clone, Debug)]
pub struct Network {
    spec: ArchSpec,
    shapes: Vec<Shape>,
    layers: Vec<Layer>,
    /// `acts[i]` is the input of layer `i`; `acts[L]` the logits.
    acts: Vec<Vec<f32>>,
    /// Pre-activations of layers whose backward needs them.
    pres: Vec<Vec<f32>>,
    /// `grads[i]` is the loss gradient of `acts[i]`.
    grads: Vec<Vec<f32>>,
    batch: usize,
    /// How steps are differentiated (surrogate for training; BPDA choice for attacks).
    pub grad_mode: GradMode,
}

impl Network {
    /// A freshly initialised network (DESIGN.md §1.2 init for filters, Glorot otherwise).
    pub fn init(spec: &ArchSpec, rng: &mut impl Rng) -> Result<Self, spartan_core::Error> {
        let shapes = spec.shapes()?;
        let mut params = Vec::new();
        for (i, layer) in spec.layers.iter().enumerate() {
            let (input, output) = (shapes[i], shapes[i + 1]);
            let (w, b) = match *layer {
                LayerSpec::Filter(f) => {
                    let beta = f.beta as usize;
                    let c = input.channels as usize;
                    match f.kind {
                        FilterKind::Conv if f.activation.is_cosine() => (
                            (0..c * beta).map(|_| rng.random_range(1.0..1.5)).collect(),
                            (0..beta).map(|_| rng.random_range(0.05..0.5)).collect(),
                        ),
                        FilterKind::Conv => (
                            vec![1.0; c * beta],
                            (0..beta).map(|k| initial_step_bias(k, beta)).collect(),
                        ),
                        FilterKind::Offset => (
                            Vec::new(),
                            (0..input.len() * beta)
                                .map(|o| initial_step_bias(o % beta, beta))
                                .collect(),
                        ),
                    }
                }
                LayerSpec::Conv(c) => {
                    let k = c.kernel as usize;
                    let (ci, co) = (input.channels as usize, c.filters as usize);
                    (
                        glorot(rng, k * k * ci * co, k * k * ci, k * k * co),
                        vec![0.0; co],
                    )
                }
                LayerSpec::Dense(d) => {
                    let (ni, no) = (input.len(), d.units as usize);
                    (glorot(rng, ni * no, ni, no), vec![0.0; no])
                }
                LayerSpec::MaxPool(_) => (Vec::new(), Vec::new()),
            };
            let _ = output;
            params.push((w, b));
        }
        Ok(Self::with_params(spec, &shapes, params))
    }

    /// A network holding the weights of a validated core float model.
    pub fn from_model(model: &F32Model<'_>) -> Self {
        let params = (0..model.spec().layers.len())
            .map(|i| {
                let w = model.layer_weights(i).unwrap_or_default();
                (w.weight.iter().collect(), w.bias.iter().collect())
            })
            .collect();
        Self::with_params(model.spec(), model.shapes(), params)
    }

    /// Loads a model file (f32 kind).
    pub fn load(bytes: &[u8]) -> Result<Self, spartan_core::Error> {
        Ok(Self::from_model(&F32Model::load(bytes)?))
    }

    fn with_params(spec: &ArchSpec, shapes: &[Shape], params: Vec<(Vec<f32>, Vec<f32>)>) -> Self {
        let layers = spec
            .layers
            .iter()
            .zip(params)
            .enumerate()
            .map(|(i, (layer, (w, b)))| {
                let (input, output) = (shapes[i], shapes[i + 1]);
                match *layer {
                    LayerSpec::Filter(f) => Layer::Filter(FilterLayer::new(f, input, output, w, b)),
                    LayerSpec::Conv(c) => Layer::Conv(ConvLayer::new(c, input, output, w, b)),
                    LayerSpec::MaxPool(p) => Layer::Pool {
                        size: p.size as usize,
                        input,
                        output,
                    },
                    LayerSpec::Dense(d) => Layer::Dense(DenseLayer::new(d, input.len(), w, b)),
                }
            })
            .collect();
        let n = spec.layers.len();
        Network {
            spec: spec.clone(),
            shapes: shapes.to_vec(),
            layers,
            acts: vec![Vec::new(); n + 1],
            pres: vec![Vec::new(); n],
            grads: vec![Vec::new(); n + 1],
            batch: 0,
            grad_mode: GradMode::Surrogate,
        }
    }

    /// The architecture.
    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    /// `shapes()[0]` is the input shape, `shapes()[i + 1]` layer `i`'s output.
    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }

    /// The layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.spec.classes()
    }

    /// Elements per input image.
    pub fn input_len(&self) -> usize {
        self.shapes[0].len()
    }

    fn layer_keeps_pre(layer: &LayerSpec) -> bool {
        match layer {
            LayerSpec::Filter(_) => true,
            other => other.activation().is_some_and(keeps_preactivation),
        }
    }

    fn ensure_buffers(&mut self, n: usize, with_grads: bool) {
        if self.batch != n {
            self.batch = n;
            for (i, a) in self.acts.iter_mut().enumerate() {
                a.resize(n * self.shapes[i].len(), 0.0);
            }
            for (i, p) in self.pres.iter_mut().enumerate() {
                let keep = Self::layer_keeps_pre(&self.spec.layers[i]);
                p.resize(
                    if keep {
                        n * self.shapes[i + 1].len()
                    } else {
                        0
                    },
                    0.0,
                );
            }
            for g in &mut self.grads {
                g.clear();
            }
        }
        if with_grads && self.grads[0].len() != n * self.shapes[0].len() {
            for (i, g) in self.grads.iter_mut().enumerate() {
                g.resize(n * self.shapes[i].len(), 0.0);
            }
        }
    }

    /// Runs `n` images (HWC, `[0, 1]`) through the network; returns the logits
    /// (`n × classes`) and the filter regulariser's value for this batch.
    pub fn forward(&mut self, x: &[f32], n: usize) -> (&[f32], f32) {
        assert_eq!(x.len(), n * self.input_len(), "forward: input size");
        self.ensure_buffers(n, false);
        self.acts[0].copy_from_slice(x);
        let mut reg = 0.0;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let (before, after) = self.acts.split_at_mut(i + 1);
            let (xin, yout) = (&before[i], &mut after[0]);
            let pre = &mut self.pres[i];
            let pre_opt = (!pre.is_empty()).then_some(pre.as_mut_slice());
            match layer {
                Layer::Filter(f) => reg += f.forward(xin, n, yout, pre),
                Layer::Conv(c) => c.forward(xin, n, yout, pre_opt),
                Layer::Pool {
                    size,
                    input,
                    output,
                } => pool::forward(xin, n, *input, *output, *size, yout),
                Layer::Dense(d) => d.forward(xin, n, yout, pre_opt),
            }
        }
        (self.acts.last().map(Vec::as_slice).unwrap_or_default(), reg)
    }

    /// Back-propagates `dlogits` (for the batch of the last `forward`), setting every
    /// parameter gradient; returns the input gradient when `input_grad` is set.
    pub fn backward(
        &mut self,
        dlogits: &[f32],
        input_grad: bool,
        regularize: bool,
    ) -> Option<&[f32]> {
        let n = self.batch;
        self.ensure_buffers(n, true);
        let last = self.layers.len();
        self.grads[last].copy_from_slice(dlogits);
        let mode = self.grad_mode;
        for (i, layer) in self.layers.iter_mut().enumerate().rev() {
            let (gb, ga) = self.grads.split_at_mut(i + 1);
            let gy = &mut ga[0];
            let gx = (i > 0 || input_grad).then_some(gb[i].as_mut_slice());
            let (xin, yout, pre) = (&self.acts[i], &self.acts[i + 1], &self.pres[i]);
            match layer {
                Layer::Filter(f) => f.backward(xin, n, pre, yout, gy, gx, mode, regularize),
                Layer::Conv(c) => c.backward(xin, n, pre, yout, gy, gx, mode),
                Layer::Pool {
                    size,
                    input,
                    output,
                } => {
                    if let Some(gx) = gx {
                        pool::backward(xin, n, *input, *output, *size, yout, gy, gx);
                    }
                }
                Layer::Dense(d) => d.backward(xin, n, pre, yout, gy, gx, mode),
            }
        }
        input_grad.then(|| self.grads[0].as_slice())
    }

    /// Lengths of every parameter tensor, in optimiser order (weight, bias per layer).
    pub fn param_lens(&self) -> Vec<usize> {
        self.layers
            .iter()
            .flat_map(|l| {
                let (w, b) = l.params();
                [w.len(), b.len()]
            })
            .collect()
    }

    /// Parameters paired with their gradients, in the order of [`param_lens`](Self::param_lens).
    pub fn params_and_grads(&mut self) -> Vec<(&mut [f32], &[f32])> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.params_and_grads())
            .collect()
    }

    /// Copies of all parameters (for checkpoints), in optimiser order.
    pub fn param_values(&self) -> Vec<Vec<f32>> {
        self.layers
            .iter()
            .flat_map(|l| {
                let (w, b) = l.params();
                [w.to_vec(), b.to_vec()]
            })
            .collect()
    }

    /// Restores parameters saved by [`param_values`](Self::param_values).
    pub fn set_param_values(&mut self, values: &[Vec<f32>]) -> Result<(), String> {
        let lens = self.param_lens();
        if values.len() != lens.len() || values.iter().zip(&lens).any(|(v, &n)| v.len() != n) {
            return Err("parameter shapes differ from the architecture".into());
        }
        for ((p, _), v) in self.params_and_grads().into_iter().zip(values) {
            p.copy_from_slice(v);
        }
        Ok(())
    }

    /// Projections that follow every optimiser step (Offset threshold clipping).
    pub fn after_update(&mut self) {
        for l in &mut self.layers {
            if let Layer::Filter(f) = l {
                f.clip_thresholds();
            }
        }
    }

    /// The network as a core model file (f32 kind).
    pub fn to_model_bytes(&self) -> Vec<u8> {
        let mut owned: Vec<(Vec<u32>, Vec<u8>)> = Vec::new();
        for (i, layer) in self.spec.layers.iter().enumerate() {
            let shapes = layer.params(self.shapes[i]);
            let (w, b) = self.layers[i].params();
            for (shape, values) in [(shapes.weight, w), (shapes.bias, b)] {
                if let Some(s) = shape {
                    owned.push((
                        s.dims().to_vec(),
                        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    ));
                }
            }
        }
        let mut tensors = heapless::Vec::new();
        for (dims, bytes) in &owned {
            // The spec bounds the tensor count well under MAX_TENSORS.
            let _ = tensors.push(TensorRef::new(DType::F32, dims, bytes));
        }
        let body = ModelBody {
            spec: self.spec.clone(),
            tensors,
        };
        format::to_vec(ModelKind::F32, &body)
    }
}
