//! A trainable network built from a core [`ArchSpec`]: initialisation, forward and
//! backward passes, parameters for the optimiser, and conversion to and from the core's
//! model file.
//!
//! Parallelism: a batch is cut into chunks of [`CHUNK`] samples; each chunk runs through
//! every layer (forward, then backward) on one core, in a per-thread workspace small
//! enough to stay in cache. Each chunk writes its own partial gradients, which are then
//! summed in chunk order, so results do not depend on scheduling: seeded runs are
//! reproducible bit for bit.

use super::act::{keeps_preactivation, GradMode};
use super::conv::ConvLayer;
use super::dense::DenseLayer;
use super::filter::FilterLayer;
use super::loss::cross_entropy_row;
use super::pool;
use rand::Rng;
use rayon::prelude::*;
use spartan_core::activation::Activation;
use spartan_core::filter::{initial_step_bias, FilterKind};
use spartan_core::float::F32Model;
use spartan_core::format::{self, DType, ModelBody, ModelKind, TensorRef};
use spartan_core::spec::{ArchSpec, LayerSpec, Shape};
use std::ops::Range;
use std::sync::Mutex;

/// Samples per chunk (measured best on the 2-core dev machine: 1–2).
pub const CHUNK: usize = 2;

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
    pub fn params(&self) -> (&[f32], &[f32]) {
        match self {
            Layer::Filter(l) => (&l.weight, &l.bias),
            Layer::Conv(l) => (&l.weight, &l.bias),
            Layer::Dense(l) => (&l.weight, &l.bias),
            Layer::Pool { .. } => (&[], &[]),
        }
    }

    fn params_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        match self {
            Layer::Filter(l) => (&mut l.weight, &mut l.bias),
            Layer::Conv(l) => (&mut l.weight, &mut l.bias),
            Layer::Dense(l) => (&mut l.weight, &mut l.bias),
            Layer::Pool { .. } => (&mut [], &mut []),
        }
    }
}

/// What a backward pass should produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// Parameter gradients (training).
    pub params: bool,
    /// Input gradients (attacks).
    pub input: bool,
    /// Include the filter regularisers (training).
    pub regularize: bool,
}

/// Totals of a backward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// Sum of what the upstream closure returned (e.g. per-sample loss · scale).
    pub loss: f64,
    /// Value of the filter regularisers for this batch.
    pub regularizer: f32,
}

/// Per-thread buffers for one chunk: activations, pre-activations, patches, gradients.
#[derive(Debug, Default)]
struct Workspace {
    acts: Vec<Vec<f32>>,
    pres: Vec<Vec<f32>>,
    cols: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
}

/// How conv and dense weights start (biases start at 0; filters follow DESIGN.md §1.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// He-uniform, `U(±√(6/fan_in))`, for ReLU and linear layers (made for ReLU
    /// networks; on full MNIST the standard CNN ends higher than with Glorot), and
    /// Glorot for layers with a step activation: their synthetic gradients are only
    /// informative near the step (and `H(cos z)` is periodic), so wider
    /// pre-activations hurt (Candidate B ended 0.2 points lower with He there).
    He,
    /// Glorot-uniform, `U(±√(6/(fan_in+fan_out)))`: the Keras default the paper used.
    #[default]
    Glorot,
}

impl Init {
    /// Weights of a layer with activation `act`.
    fn sample(
        self,
        act: Activation,
        rng: &mut impl Rng,
        n: usize,
        fan_in: usize,
        fan_out: usize,
    ) -> Vec<f32> {
        let limit = match self {
            Init::He if !act.is_binary() => (6.0 / fan_in as f32).sqrt(),
            Init::He => (6.0 / (fan_in + fan_out) as f32).sqrt(),
            Init::Glorot => (6.0 / (fan_in + fan_out) as f32).sqrt(),
        };
        (0..n).map(|_| rng.random_range(-limit..limit)).collect()
    }
}

/// A network, its gradients and its reusable buffers.
#[derive(Debug)]
pub struct Network {
    spec: ArchSpec,
    shapes: Vec<Shape>,
    layers: Vec<Layer>,
    /// Per layer: ranges of its weight and bias in the flat gradient vector.
    ranges: Vec<(Range<usize>, Range<usize>)>,
    /// Summed gradients of the last backward pass, flat.
    grads: Vec<f32>,
    /// One flat partial gradient per chunk.
    partials: Vec<Vec<f32>>,
    workspaces: Vec<Mutex<Workspace>>,
    logits: Vec<f32>,
    input_grads: Vec<f32>,
    /// How steps are differentiated (surrogate for training; BPDA choice for attacks).
    pub grad_mode: GradMode,
}

impl Clone for Network {
    fn clone(&self) -> Self {
        let params = self.layers.iter().map(|l| {
            let (w, b) = l.params();
            (w.to_vec(), b.to_vec())
        });
        let mut net = Self::with_params(&self.spec, &self.shapes, params.collect());
        net.grad_mode = self.grad_mode;
        net
    }
}

impl Network {
    /// A freshly initialised network with the default [`Init`].
    pub fn init(spec: &ArchSpec, rng: &mut impl Rng) -> Result<Self, spartan_core::Error> {
        Self::init_with(spec, Init::default(), rng)
    }

    /// A freshly initialised network: DESIGN.md §1.2 for filters, `init` for the rest.
    pub fn init_with(
        spec: &ArchSpec,
        init: Init,
        rng: &mut impl Rng,
    ) -> Result<Self, spartan_core::Error> {
        let shapes = spec.shapes()?;
        let mut params = Vec::new();
        for (i, layer) in spec.layers.iter().enumerate() {
            let input = shapes[i];
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
                        init.sample(c.activation, rng, k * k * ci * co, k * k * ci, k * k * co),
                        vec![0.0; co],
                    )
                }
                LayerSpec::Dense(d) => {
                    let (ni, no) = (input.len(), d.units as usize);
                    (
                        init.sample(d.activation, rng, ni * no, ni, no),
                        vec![0.0; no],
                    )
                }
                LayerSpec::MaxPool(_) => (Vec::new(), Vec::new()),
            };
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
        let mut layers = Vec::new();
        let mut ranges = Vec::new();
        let mut offset = 0;
        for (i, (layer, (w, b))) in spec.layers.iter().zip(params).enumerate() {
            let (input, output) = (shapes[i], shapes[i + 1]);
            let wr = offset..offset + w.len();
            let br = wr.end..wr.end + b.len();
            offset = br.end;
            ranges.push((wr, br));
            layers.push(match *layer {
                LayerSpec::Filter(f) => Layer::Filter(FilterLayer::new(f, input, output, w, b)),
                LayerSpec::Conv(c) => Layer::Conv(ConvLayer::new(c, input, output, w, b)),
                LayerSpec::MaxPool(p) => Layer::Pool {
                    size: p.size as usize,
                    input,
                    output,
                },
                LayerSpec::Dense(d) => Layer::Dense(DenseLayer::new(d, input.len(), w, b)),
            });
        }
        Network {
            spec: spec.clone(),
            shapes: shapes.to_vec(),
            layers,
            ranges,
            grads: vec![0.0; offset],
            partials: Vec::new(),
            workspaces: Vec::new(),
            logits: Vec::new(),
            input_grads: Vec::new(),
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

    /// Logits of the last forward or backward pass (`n × classes`).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Input gradients of the last backward pass that asked for them.
    pub fn input_grads(&self) -> &[f32] {
        &self.input_grads
    }

    fn ensure_workspaces(&mut self) {
        let threads = rayon::current_num_threads().max(1);
        while self.workspaces.len() < threads {
            let ws = new_workspace(&self.layers, &self.shapes);
            self.workspaces.push(Mutex::new(ws));
        }
    }

    /// Runs `n` images (HWC, `[0, 1]`) through the network; returns the logits.
    pub fn forward(&mut self, x: &[f32], n: usize) -> &[f32] {
        let none = Want {
            params: false,
            input: false,
            regularize: false,
        };
        self.run(x, n, none, |_, _, _| 0.0);
        &self.logits
    }

    /// Forward and backward over `n` images. For sample `i`, `upstream(i, logits, dlogits)`
    /// writes the loss gradient of its logits and returns its loss contribution.
    /// Parameter gradients (see [`params_and_grads`](Self::params_and_grads)) and input
    /// gradients ([`input_grads`](Self::input_grads)) are produced as `want` asks.
    pub fn backprop(
        &mut self,
        x: &[f32],
        n: usize,
        want: Want,
        upstream: impl Fn(usize, &[f32], &mut [f32]) -> f32 + Sync,
    ) -> Totals {
        let mut totals = self.run(x, n, want, upstream);
        if want.params {
            // Sum chunk partials in chunk order (deterministic), in parallel over slices.
            let chunks = n.div_ceil(CHUNK);
            let partials = &self.partials[..chunks];
            self.grads
                .par_chunks_mut(4096)
                .enumerate()
                .for_each(|(j, g)| {
                    let start = j * 4096;
                    g.fill(0.0);
                    let len = g.len();
                    for p in partials {
                        for (a, b) in g.iter_mut().zip(&p[start..start + len]) {
                            *a += b;
                        }
                    }
                });
        }
        if want.regularize {
            for (layer, (_, br)) in self.layers.iter().zip(&self.ranges) {
                if let Layer::Filter(f) = layer {
                    totals.regularizer += f.offset_regularizer();
                    if want.params {
                        f.add_offset_regularizer_grad(&mut self.grads[br.clone()]);
                    }
                }
            }
        }
        totals
    }

    /// The training objective on a labelled batch: mean cross-entropy plus the filter
    /// regularisers, with all parameter gradients. Returns (cross-entropy, regulariser).
    pub fn loss_and_grads(&mut self, x: &[f32], labels: &[u8]) -> (f32, f32) {
        let scale = 1.0 / labels.len().max(1) as f32;
        let want = Want {
            params: true,
            input: false,
            regularize: true,
        };
        let t = self.backprop(x, labels.len(), want, |i, row, g| {
            cross_entropy_row(row, labels[i] as usize, scale, g) * scale
        });
        (t.loss as f32, t.regularizer)
    }

    fn run(
        &mut self,
        x: &[f32],
        n: usize,
        want: Want,
        upstream: impl Fn(usize, &[f32], &mut [f32]) -> f32 + Sync,
    ) -> Totals {
        let in_len = self.input_len();
        let classes = self.classes();
        assert_eq!(x.len(), n * in_len, "network input size");
        self.ensure_workspaces();
        self.logits.resize(n * classes, 0.0);
        let chunks = n.div_ceil(CHUNK);
        let backward = want.params || want.input;
        if want.params {
            let total = self.grads.len();
            if self.partials.len() < chunks {
                self.partials.resize_with(chunks, || vec![0.0; total]);
            }
        }
        if want.input {
            self.input_grads.resize(n * in_len, 0.0);
        }
        let sf_l1 = match self.spec.filter() {
            Some(f) if want.regularize && f.kind == FilterKind::Conv => f.sf / n as f32,
            _ => 0.0,
        };
        let mut partials: Vec<Option<&mut Vec<f32>>> = if want.params {
            self.partials.iter_mut().take(chunks).map(Some).collect()
        } else {
            (0..chunks).map(|_| None).collect()
        };
        let mut gxs: Vec<Option<&mut [f32]>> = if want.input {
            self.input_grads
                .chunks_mut(CHUNK * in_len)
                .map(Some)
                .collect()
        } else {
            (0..chunks).map(|_| None).collect()
        };
        let jobs: Vec<_> = x
            .chunks(CHUNK * in_len)
            .zip(self.logits.chunks_mut(CHUNK * classes))
            .zip(partials.drain(..))
            .zip(gxs.drain(..))
            .enumerate()
            .collect();
        let ctx = ChunkContext {
            layers: &self.layers,
            shapes: &self.shapes,
            ranges: &self.ranges,
            mode: self.grad_mode,
            sf_l1,
            backward,
        };
        let workspaces = &self.workspaces;
        let sums: Vec<(f64, f64)> = jobs
            .into_par_iter()
            .map(|(c, (((xc, lc), partial), gx))| {
                let slot = rayon::current_thread_index().unwrap_or(0) % workspaces.len();
                let partial = partial.map(|p| p.as_mut_slice());
                match workspaces[slot].try_lock() {
                    Ok(mut ws) => ctx.run_chunk(&mut ws, xc, c * CHUNK, lc, partial, gx, &upstream),
                    // Only when called from an unexpected thread pool: a private workspace.
                    Err(_) => {
                        let mut ws = new_workspace(ctx.layers, ctx.shapes);
                        ctx.run_chunk(&mut ws, xc, c * CHUNK, lc, partial, gx, &upstream)
                    }
                }
            })
            .collect();
        let (loss, l1): (f64, f64) = sums
            .iter()
            .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d));
        Totals {
            loss,
            regularizer: (f64::from(sf_l1) * l1) as f32,
        }
    }

    /// Smallest and largest value of every layer's output over `n` images (calibration
    /// of the int8 quantiser).
    pub fn activation_ranges(&mut self, x: &[f32], n: usize) -> Vec<(f32, f32)> {
        let in_len = self.input_len();
        assert_eq!(x.len(), n * in_len, "network input size");
        let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); self.layers.len()];
        let mut ws = new_workspace(&self.layers, &self.shapes);
        let ctx = ChunkContext {
            layers: &self.layers,
            shapes: &self.shapes,
            ranges: &self.ranges,
            mode: self.grad_mode,
            sf_l1: 0.0,
            backward: false,
        };
        let mut logits = vec![0.0; CHUNK * self.spec.classes()];
        for xc in x.chunks(CHUNK * in_len) {
            let m = xc.len() / in_len;
            let lc = &mut logits[..m * self.spec.classes()];
            ctx.run_chunk(
                &mut ws,
                xc,
                0,
                lc,
                None,
                None,
                &|_: usize, _: &[f32], _: &mut [f32]| 0.0,
            );
            for (i, r) in ranges.iter_mut().enumerate() {
                for &v in &ws.acts[i + 1][..m * self.shapes[i + 1].len()] {
                    r.0 = r.0.min(v);
                    r.1 = r.1.max(v);
                }
            }
        }
        ranges
    }

    /// Lengths of every parameter tensor, in optimiser order (weight, bias per layer).
    pub fn param_lens(&self) -> Vec<usize> {
        self.ranges
            .iter()
            .flat_map(|(w, b)| [w.len(), b.len()])
            .collect()
    }

    /// Parameters paired with the gradients of the last backward pass, in the order of
    /// [`param_lens`](Self::param_lens).
    pub fn params_and_grads(&mut self) -> Vec<(&mut [f32], &[f32])> {
        let mut out = Vec::new();
        let mut rest: &[f32] = &self.grads;
        for layer in self.layers.iter_mut() {
            let (w, b) = layer.params_mut();
            let (gw, r) = rest.split_at(w.len());
            let (gb, r) = r.split_at(b.len());
            rest = r;
            out.push((w, gw));
            out.push((b, gb));
        }
        out
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

/// Buffers for one chunk of [`CHUNK`] samples.
fn new_workspace(layers: &[Layer], shapes: &[Shape]) -> Workspace {
    let n = CHUNK;
    let mut ws = Workspace::default();
    for (i, layer) in layers.iter().enumerate() {
        let (input, output) = (shapes[i], shapes[i + 1]);
        ws.acts.push(vec![0.0; n * input.len()]);
        ws.grads.push(vec![0.0; n * input.len()]);
        let keep = match layer {
            Layer::Filter(_) => true,
            Layer::Conv(c) => keeps_preactivation(c.spec.activation),
            Layer::Dense(d) => keeps_preactivation(d.spec.activation),
            Layer::Pool { .. } => false,
        };
        ws.pres
            .push(vec![0.0; if keep { n * output.len() } else { 0 }]);
        ws.cols.push(match layer {
            Layer::Conv(c) => vec![0.0; n * c.cols_len()],
            _ => Vec::new(),
        });
    }
    let last = shapes[layers.len()].len();
    ws.acts.push(vec![0.0; n * last]);
    ws.grads.push(vec![0.0; n * last]);
    ws
}

/// What every chunk of one pass shares.
struct ChunkContext<'a> {
    layers: &'a [Layer],
    shapes: &'a [Shape],
    ranges: &'a [(Range<usize>, Range<usize>)],
    mode: GradMode,
    sf_l1: f32,
    backward: bool,
}

impl ChunkContext<'_> {
    /// Forward (and backward) of one chunk; returns (upstream loss sum, Σ|filter out|).
    #[allow(clippy::too_many_arguments)]
    fn run_chunk(
        &self,
        ws: &mut Workspace,
        x: &[f32],
        first: usize,
        logits: &mut [f32],
        mut partial: Option<&mut [f32]>,
        mut gx: Option<&mut [f32]>,
        upstream: &(impl Fn(usize, &[f32], &mut [f32]) -> f32 + Sync),
    ) -> (f64, f64) {
        let in_len = self.shapes[0].len();
        let n = x.len() / in_len;
        ws.acts[0][..x.len()].copy_from_slice(x);
        let mut l1 = 0.0f64;
        for (i, layer) in self.layers.iter().enumerate() {
            let (before, after) = ws.acts.split_at_mut(i + 1);
            let (xin, yout) = (&before[i], &mut after[0]);
            let pre = &mut ws.pres[i];
            let pre_opt = (!pre.is_empty()).then_some(pre.as_mut_slice());
            match layer {
                Layer::Filter(f) => l1 += f64::from(f.forward(xin, n, yout, pre)),
                Layer::Conv(c) => c.forward(xin, n, yout, pre_opt, &mut ws.cols[i]),
                Layer::Pool {
                    size,
                    input,
                    output,
                } => pool::forward(xin, n, *input, *output, *size, yout),
                Layer::Dense(d) => d.forward(xin, n, yout, pre_opt),
            }
        }
        let last = self.layers.len();
        let classes = logits.len() / n;
        logits.copy_from_slice(&ws.acts[last][..logits.len()]);
        if !self.backward {
            return (0.0, l1);
        }
        let mut loss = 0.0f64;
        for (s, (row, g)) in logits
            .chunks(classes)
            .zip(ws.grads[last].chunks_mut(classes))
            .enumerate()
        {
            loss += f64::from(upstream(first + s, row, g));
        }
        if let Some(p) = partial.as_deref_mut() {
            p.fill(0.0);
        }
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let (gb, ga) = ws.grads.split_at_mut(i + 1);
            let gy = &mut ga[0];
            let want_gx = i > 0 || gx.is_some();
            let gxi: Option<&mut [f32]> = if !want_gx {
                None
            } else if i == 0 {
                gx.as_deref_mut()
            } else {
                Some(gb[i].as_mut_slice())
            };
            let (xin, yout, pre) = (&ws.acts[i], &ws.acts[i + 1], &ws.pres[i]);
            let (wr, br) = &self.ranges[i];
            let grads: Option<(&mut [f32], &mut [f32])> = partial.as_deref_mut().map(|p| {
                let (head, tail) = p.split_at_mut(br.start);
                (&mut head[wr.clone()], &mut tail[..br.len()])
            });
            match layer {
                Layer::Filter(f) => {
                    f.backward(xin, n, pre, yout, gy, gxi, self.mode, self.sf_l1, grads)
                }
                Layer::Conv(c) => {
                    c.backward(n, pre, yout, gy, gxi, self.mode, grads, &mut ws.cols[i])
                }
                Layer::Pool {
                    size,
                    input,
                    output,
                } => {
                    if let Some(g) = gxi {
                        pool::backward(xin, n, *input, *output, *size, yout, gy, g);
                    }
                }
                Layer::Dense(d) => d.backward(xin, n, pre, yout, gy, gxi, self.mode, grads),
            }
        }
        (loss, l1)
    }
}
