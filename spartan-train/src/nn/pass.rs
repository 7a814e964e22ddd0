//! Passes of a batch through a [`Network`]: forward, and backward for parameter and
//! input gradients, over any range of its layers, in buffers the caller owns
//! ([`Workspace`]).
//!
//! Parallelism: a batch is cut into chunks of [`CHUNK`] samples; each chunk runs through
//! every layer (forward, then backward) on one core, in a per-thread buffer set small
//! enough to stay in cache. Each chunk writes its own partial gradients, which are then
//! added in chunk order, so results do not depend on scheduling: seeded runs are
//! reproducible bit for bit. Chunks run in waves of at most 64, so a pass holds one
//! wave's partial gradients however large the batch.

use super::act::GradMode;
use super::kernels::{add_into, add_scaled_sign, l1_norm};
use super::layer::{Backward, Forward};
use super::network::Network;
use super::workspace::{ChunkBuffers, Workspace};
use ndarray::{ArrayView1, ArrayView2, ArrayView4, ArrayViewD, ArrayViewMut1, ArrayViewMut4};
use rayon::prelude::*;
use spartan_core::spec::Shape;
use std::ops::Range;

/// Samples per chunk (measured best on the 2-core dev machine: 1–2).
pub const CHUNK: usize = 2;

/// Per-sample loss gradient at the output of a pass: `upstream(i, output, grad)` writes
/// the gradient of sample `i`'s loss with respect to its output row and returns its
/// loss contribution.
pub trait Upstream: Fn(usize, ArrayView1<'_, f32>, ArrayViewMut1<'_, f32>) -> f32 + Sync {}

impl<F: Fn(usize, ArrayView1<'_, f32>, ArrayViewMut1<'_, f32>) -> f32 + Sync> Upstream for F {}

/// Which layers a backward pass runs and what it computes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    /// The layers to run; the batch given is the input of the first.
    pub layers: Range<usize>,
    /// How steps are differentiated.
    pub grad: GradMode,
    /// Also the gradient with respect to the batch (attacks).
    pub input_grads: bool,
    /// Add the layers' regularisers (training).
    pub regularize: bool,
}

impl Pass {
    /// The training objective's pass: every layer, synthetic gradients, regularisers.
    pub fn training(net: &Network) -> Self {
        Pass {
            layers: 0..net.layers().len(),
            grad: GradMode::Surrogate,
            input_grads: false,
            regularize: true,
        }
    }

    /// A gradient attack's pass: every layer, input gradients, steps differentiated
    /// as `grad` says.
    pub fn input_gradient(net: &Network, grad: GradMode) -> Self {
        Pass {
            layers: 0..net.layers().len(),
            grad,
            input_grads: true,
            regularize: false,
        }
    }

    /// The same pass from layer `first` on (its batch is that layer's input).
    pub fn from_layer(self, first: usize) -> Self {
        Pass {
            layers: first..self.layers.end,
            ..self
        }
    }
}

/// Totals of a backward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// Sum of what the upstream closure returned (e.g. per-sample loss · scale).
    pub loss: f64,
    /// Value of the layers' regularisers for this batch (when asked).
    pub regularizer: f32,
}

/// What a backward pass leaves in its workspace.
#[derive(Clone, Debug)]
pub struct Backprop<'w> {
    /// Totals.
    pub totals: Totals,
    /// Output of the last layer run, one row per sample (the logits for a whole pass).
    pub output: ArrayView2<'w, f32>,
    /// Gradient with respect to the batch, when asked.
    pub input_grads: Option<ArrayView4<'w, f32>>,
}

impl<'w> Backprop<'w> {
    /// The outputs and the input gradients of a pass that asked for them (attacks).
    ///
    /// # Panics
    /// When the pass did not set [`Pass::input_grads`].
    pub fn with_input_grads(self) -> (ArrayView2<'w, f32>, ArrayView4<'w, f32>) {
        let grads = self.input_grads.expect("the pass asks for input gradients");
        (self.output, grads)
    }
}

/// Parameter gradients of a network, flat, with a view of each tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients {
    values: Vec<f32>,
    dims: Vec<Vec<usize>>,
}

impl Gradients {
    /// Zero gradients for `net`'s parameters.
    pub fn zeros(net: &Network) -> Self {
        let dims: Vec<Vec<usize>> = net.params().iter().map(|p| p.shape().to_vec()).collect();
        Gradients {
            values: vec![0.0; dims.iter().map(|d| d.iter().product::<usize>()).sum()],
            dims,
        }
    }

    /// Each tensor's gradient, in the order of [`Network::params`].
    pub fn tensors(&self) -> Vec<ArrayViewD<'_, f32>> {
        let mut rest = self.values.as_slice();
        self.dims
            .iter()
            .map(|d| {
                let (t, r) = rest.split_at(d.iter().product());
                rest = r;
                ArrayViewD::from_shape(d.as_slice(), t).expect("sizes from the dims")
            })
            .collect()
    }

    /// All gradients, flat, layer by layer ([`Network::grad_ranges`]).
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// All gradients, flat and writable (to add another objective's gradients).
    pub fn values_mut(&mut self) -> &mut [f32] {
        &mut self.values
    }
}

/// One chunk's share of a pass.
struct Job<'a> {
    /// Index of the chunk's first sample in the batch.
    first: usize,
    x: &'a [f32],
    out: &'a mut [f32],
    partial: Option<&'a mut [f32]>,
    gx: Option<&'a mut [f32]>,
}

/// What every chunk of one pass shares.
struct Chunks<'a, U> {
    net: &'a Network,
    layers: Range<usize>,
    mode: GradMode,
    /// Per layer: `weight / batch` of its output's L1 penalty when regularising, else 0.
    l1: Vec<f32>,
    upstream: Option<&'a U>,
    /// Per layer of the pass: what its [`Layer::prepare`](super::Layer::prepare) gave.
    prepared: &'a [Vec<f32>],
}

fn view<'a>(buf: &'a [f32], n: usize, s: Shape) -> ArrayView4<'a, f32> {
    let dim = (n, s.height as usize, s.width as usize, s.channels as usize);
    ArrayView4::from_shape(dim, &buf[..n * s.len()]).expect("chunk buffers fit the shapes")
}

fn view_mut<'a>(buf: &'a mut [f32], n: usize, s: Shape) -> ArrayViewMut4<'a, f32> {
    let dim = (n, s.height as usize, s.width as usize, s.channels as usize);
    ArrayViewMut4::from_shape(dim, &mut buf[..n * s.len()]).expect("chunk buffers fit the shapes")
}

impl<U: Upstream> Chunks<'_, U> {
    /// Forward (and backward) of one chunk; returns the upstream loss sum and, per
    /// layer of the pass, the L1 norm of its output where it is penalised.
    fn run(&self, b: &mut ChunkBuffers, job: Job<'_>) -> (f64, Vec<f64>) {
        let shapes = self.net.shapes();
        let layers = self.net.layers();
        let (start, end) = (self.layers.start, self.layers.end);
        let n = job.x.len() / shapes[start].len();
        b.acts[start][..job.x.len()].copy_from_slice(job.x);
        let mut l1 = vec![0.0f64; end - start];
        for i in self.layers.clone() {
            let (before, after) = b.acts.split_at_mut(i + 1);
            let (x, y) = (&before[i], &mut after[0]);
            let scratch = &mut b.scratch[i][..n * layers[i].scratch_len()];
            let pass = Forward {
                x: view(x, n, shapes[i]),
                y: view_mut(y, n, shapes[i + 1]),
                scratch,
                prepared: &self.prepared[i - start],
            };
            layers[i].forward(self.net.layer_params(i), pass);
            if self.l1[i - start] != 0.0 {
                l1[i - start] = f64::from(l1_norm(&y[..n * shapes[i + 1].len()]));
            }
        }
        job.out.copy_from_slice(&b.acts[end][..job.out.len()]);
        let Some(upstream) = self.upstream else {
            return (0.0, l1);
        };
        let out_len = shapes[end].len();
        let mut loss = 0.0f64;
        for (s, (row, g)) in job
            .out
            .chunks(out_len)
            .zip(b.grads[end].chunks_mut(out_len))
            .enumerate()
        {
            loss += f64::from(upstream(job.first + s, row.into(), g.into()));
        }
        let mut partial = job.partial;
        if let Some(p) = partial.as_deref_mut() {
            p.fill(0.0);
        }
        let mut gx_input = job.gx;
        for i in self.layers.clone().rev() {
            let (gb, ga) = b.grads.split_at_mut(i + 1);
            let (x, y) = (&b.acts[i], &b.acts[i + 1]);
            let gy = &mut ga[0][..n * shapes[i + 1].len()];
            let scale = self.l1[i - start];
            if scale != 0.0 {
                // d(scale · Σ|y|)/dy, before the activation's backward.
                add_scaled_sign(gy, y, scale);
            }
            let gx = if i > start {
                Some(view_mut(&mut gb[i], n, shapes[i]))
            } else {
                gx_input.take().map(|g| view_mut(g, n, shapes[i]))
            };
            let range = self.net.grad_ranges()[i].clone();
            layers[i].backward(
                self.net.layer_params(i),
                Backward {
                    x: view(x, n, shapes[i]),
                    y: view(y, n, shapes[i + 1]),
                    scratch: &mut b.scratch[i][..n * layers[i].scratch_len()],
                    gy: view_mut(gy, n, shapes[i + 1]),
                    gx,
                    grads: partial.as_deref_mut().map(|p| &mut p[range]),
                    mode: self.mode,
                    prepared: &self.prepared[i - start],
                },
            );
        }
        (loss, l1)
    }
}

/// The forward-only upstream (never called).
type NoUpstream = fn(usize, ArrayView1<'_, f32>, ArrayViewMut1<'_, f32>) -> f32;

/// The inputs of one pass.
struct Run<'a, U> {
    x: ArrayView4<'a, f32>,
    layers: Range<usize>,
    mode: GradMode,
    regularize: bool,
    input_grads: bool,
    upstream: Option<&'a U>,
}

/// Bytes of chunk partial gradients a pass holds at most (unless a wave of one chunk
/// per thread needs more).
const PARTIALS_BUDGET: usize = 64 << 20;

/// Most chunks of a wave: 64 chunks (128 samples, the default batch, one wave).
const WAVE_CHUNKS: usize = 64;

/// Chunks per wave for a network of `params` parameters on `threads` threads. A batch
/// runs in waves: each chunk of a wave writes its own partial gradients, which are then
/// added to the total in chunk order, so memory holds one wave's partials however large
/// the batch. The additions are the same, in the same order, whatever the wave size:
/// results depend neither on it nor on the thread count.
fn wave_chunks(params: usize, threads: usize) -> usize {
    let fit = PARTIALS_BUDGET / (4 * params.max(1));
    fit.clamp(threads, WAVE_CHUNKS.max(threads))
}

/// `total += partials[0] + partials[1] + …`, element by element in chunk order
/// (starting from zero when `fresh`), in parallel over slices of the vector. The adds
/// are vectorised ([`add_into`]): scalar, they were a third of the black-box
/// substitute's training (an MLP of 199k parameters: 64 partials per batch).
fn add_in_order(total: &mut [f32], partials: &[Vec<f32>], fresh: bool) {
    const SLICE: usize = 4096;
    total.par_chunks_mut(SLICE).enumerate().for_each(|(j, t)| {
        let (start, len) = (j * SLICE, t.len());
        if fresh {
            t.fill(0.0);
        }
        for p in partials {
            add_into(t, &p[start..start + len]);
        }
    });
}

impl Network {
    /// Logits of a batch (`n × classes`), in `ws`.
    ///
    /// # Panics
    /// When `x` does not hold images of the network's input shape.
    pub fn forward<'w>(
        &self,
        x: ArrayView4<'_, f32>,
        ws: &'w mut Workspace,
    ) -> ArrayView2<'w, f32> {
        self.forward_layers(0..self.layers().len(), x, ws)
    }

    /// Output of layers `layers` (one row per sample) for a batch of inputs to the
    /// first of them, in `ws`.
    ///
    /// # Panics
    /// When the range is not within the network or `x` does not hold inputs of its
    /// first layer.
    pub fn forward_layers<'w>(
        &self,
        layers: Range<usize>,
        x: ArrayView4<'_, f32>,
        ws: &'w mut Workspace,
    ) -> ArrayView2<'w, f32> {
        let run = Run::<NoUpstream> {
            x,
            layers,
            mode: GradMode::Surrogate,
            regularize: false,
            input_grads: false,
            upstream: None,
        };
        let (_, n, out_len) = self.run(run, ws, None);
        ArrayView2::from_shape((n, out_len), &ws.output[..n * out_len]).expect("output size")
    }

    /// Forward and backward of a batch through `pass.layers`. For sample `i`,
    /// `upstream(i, output, grad)` writes the loss gradient of its output row and returns
    /// its loss contribution. Parameter gradients go to `grads` when given (all
    /// overwritten: zero for layers outside the pass), input gradients to the returned
    /// [`Backprop`] when `pass.input_grads`.
    ///
    /// # Panics
    /// When the range is not within the network, `x` does not hold inputs of its first
    /// layer, or `grads` are another network's.
    pub fn backward<'w>(
        &self,
        x: ArrayView4<'_, f32>,
        pass: &Pass,
        upstream: impl Upstream,
        ws: &'w mut Workspace,
        grads: Option<&mut Gradients>,
    ) -> Backprop<'w> {
        let run = Run {
            x,
            layers: pass.layers.clone(),
            mode: pass.grad,
            regularize: pass.regularize,
            input_grads: pass.input_grads,
            upstream: Some(&upstream),
        };
        let (totals, n, out_len) = self.run(run, ws, grads);
        let ws: &'w Workspace = ws;
        let input = self.shapes()[pass.layers.start];
        Backprop {
            totals,
            output: ArrayView2::from_shape((n, out_len), &ws.output[..n * out_len])
                .expect("output size"),
            input_grads: pass.input_grads.then(|| view(&ws.input_grads, n, input)),
        }
    }

    /// Runs a pass; returns its totals, the batch size and the output length.
    fn run<U: Upstream>(
        &self,
        run: Run<'_, U>,
        ws: &mut Workspace,
        mut grads: Option<&mut Gradients>,
    ) -> (Totals, usize, usize) {
        let layers = run.layers.clone();
        assert!(
            layers.start < layers.end && layers.end <= self.layers().len(),
            "layer range {layers:?} of a {}-layer network",
            self.layers().len()
        );
        let (input, output) = (self.shapes()[layers.start], self.shapes()[layers.end]);
        let x = run.x.as_standard_layout();
        let (n, h, w, c) = x.dim();
        assert_eq!(
            (h, w, c),
            (
                input.height as usize,
                input.width as usize,
                input.channels as usize
            ),
            "network input shape"
        );
        let x = x.as_slice().unwrap_or(&[]);
        let (in_len, out_len) = (input.len(), output.len());
        let threads = rayon::current_num_threads().max(1);
        let Workspace {
            threads: slots,
            partials,
            output: out_buf,
            input_grads,
            prepared,
        } = ws;
        slots.resize_with(threads.max(slots.len()), Default::default);
        out_buf.resize(n * out_len, 0.0);
        let chunks = n.div_ceil(CHUNK);
        let backward = run.upstream.is_some();
        let wave = match grads.as_deref() {
            Some(g) => {
                let total = g.values.len();
                let want = self.grad_ranges().last().map_or(0, |r| r.end);
                assert_eq!(total, want, "gradients of another network");
                let wave = wave_chunks(total, threads).min(chunks.max(1));
                if partials.len() < wave {
                    partials.resize_with(wave, Vec::new);
                }
                for p in &mut partials[..wave] {
                    p.resize(total, 0.0);
                }
                wave
            }
            None => chunks.max(1),
        };
        if run.input_grads {
            input_grads.resize(n * in_len, 0.0);
        }
        let l1: Vec<f32> = self.layers()[layers.clone()]
            .iter()
            .map(|l| match l.activity_l1() {
                w if run.regularize && w != 0.0 => w / n as f32,
                _ => 0.0,
            })
            .collect();
        prepared.resize_with(layers.len(), Vec::new);
        for (i, out) in layers.clone().zip(prepared.iter_mut()) {
            let input_grad = backward && (i > layers.start || run.input_grads);
            self.layers()[i].prepare(self.layer_params(i), input_grad, out);
        }
        let ctx = Chunks {
            net: self,
            layers: layers.clone(),
            mode: run.mode,
            l1,
            upstream: run.upstream,
            prepared,
        };
        let mut xs = x.chunks(CHUNK * in_len);
        let mut outs = out_buf.chunks_mut(CHUNK * out_len);
        let mut gxs = run
            .input_grads
            .then(|| input_grads.chunks_mut(CHUNK * in_len));
        let slots = &*slots;
        let mut totals = Totals::default();
        let mut l1_sums = vec![0.0f64; layers.len()];
        if let (0, Some(g)) = (chunks, grads.as_deref_mut()) {
            g.values.fill(0.0);
        }
        for first in (0..chunks).step_by(wave) {
            let count = wave.min(chunks - first);
            let mut wave_partials = partials.iter_mut();
            let jobs: Vec<Job<'_>> = (first..first + count)
                .map(|c| Job {
                    first: c * CHUNK,
                    x: xs.next().expect("one input slice per chunk"),
                    out: outs.next().expect("one output slice per chunk"),
                    partial: grads
                        .is_some()
                        .then(|| wave_partials.next().map(Vec::as_mut_slice))
                        .flatten(),
                    gx: gxs.as_mut().and_then(Iterator::next),
                })
                .collect();
            let sums: Vec<(f64, Vec<f64>)> = jobs
                .into_par_iter()
                .map(|job| {
                    let slot = rayon::current_thread_index().unwrap_or(0) % slots.len();
                    match slots[slot].try_lock() {
                        Ok(mut b) => {
                            b.fit(self, &layers, backward);
                            ctx.run(&mut b, job)
                        }
                        // Only when called from an unexpected thread pool: private buffers.
                        Err(_) => {
                            let mut b = ChunkBuffers::default();
                            b.fit(self, &layers, backward);
                            ctx.run(&mut b, job)
                        }
                    }
                })
                .collect();
            for (loss, l1) in &sums {
                totals.loss += loss;
                for (t, v) in l1_sums.iter_mut().zip(l1) {
                    *t += v;
                }
            }
            if let Some(g) = grads.as_deref_mut() {
                add_in_order(&mut g.values, &partials[..count], first == 0);
            }
        }
        totals.regularizer = ctx
            .l1
            .iter()
            .zip(&l1_sums)
            .map(|(&s, &v)| f64::from(s) * v)
            .sum::<f64>() as f32;
        if run.regularize {
            for i in layers {
                let (layer, p) = (&self.layers()[i], self.layer_params(i));
                totals.regularizer += layer.param_penalty(p);
                if let Some(g) = grads.as_deref_mut() {
                    let range = self.grad_ranges()[i].clone();
                    layer.add_param_penalty_grad(p, &mut g.values[range]);
                }
            }
        }
        (totals, n, out_len)
    }

    /// Smallest and largest value of every layer's output over a batch (calibration of
    /// the int8 quantiser).
    pub fn activation_ranges(&self, x: ArrayView4<'_, f32>) -> Vec<(f32, f32)> {
        let all = 0..self.layers().len();
        let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); all.len()];
        let mut b = ChunkBuffers::default();
        b.fit(self, &all, false);
        let mut prepared = vec![Vec::new(); all.len()];
        for (i, out) in all.clone().zip(prepared.iter_mut()) {
            self.layers()[i].prepare(self.layer_params(i), false, out);
        }
        let ctx = Chunks::<NoUpstream> {
            net: self,
            layers: all,
            mode: GradMode::Surrogate,
            l1: vec![0.0; ranges.len()],
            upstream: None,
            prepared: &prepared,
        };
        let mut logits = vec![0.0; CHUNK * self.classes()];
        let x = x.as_standard_layout();
        let in_len = self.input_len();
        for xc in x.as_slice().unwrap_or(&[]).chunks(CHUNK * in_len) {
            let m = xc.len() / in_len;
            let out = &mut logits[..m * self.classes()];
            ctx.run(
                &mut b,
                Job {
                    first: 0,
                    x: xc,
                    out,
                    partial: None,
                    gx: None,
                },
            );
            for (i, r) in ranges.iter_mut().enumerate() {
                for &v in &b.acts[i + 1][..m * self.shapes()[i + 1].len()] {
                    r.0 = r.0.min(v);
                    r.1 = r.1.max(v);
                }
            }
        }
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::loss_and_grads;
    use ndarray::Array4;
    use rand::SeedableRng;
    use spartan_core::spec::{ArchSpec, NamedParams};

    /// Memory for gradients does not grow with the batch: a batch of 300 samples (150
    /// chunks) holds at most one wave of partial gradients.
    #[test]
    fn partial_gradients_are_bounded_whatever_the_batch() {
        let spec = ArchSpec::named("standard", NamedParams::default()).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let net = Network::init(&spec, &mut rng).unwrap();
        let n = 300;
        let x = Array4::from_shape_fn((n, 28, 28, 1), |(i, y, x, _)| {
            ((i + y * x) % 7) as f32 / 7.0
        });
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let mut ws = Workspace::new();
        let mut grads = Gradients::zeros(&net);
        loss_and_grads(&net, x.view(), &labels, &mut ws, &mut grads);
        assert!(grads.values().iter().any(|&g| g != 0.0));
        assert!(
            ws.partials.len() <= WAVE_CHUNKS,
            "{} partial gradient buffers for {n} samples",
            ws.partials.len()
        );
    }
}
