//! Interval bound propagation (IBP) run as an ordinary network, for certified training.
//!
//! A box `[l, u]` through `y = f(x·W + b)` with `f` non-decreasing lands in
//! `[f(l·W⁺ + u·W⁻ + b), f(l·W⁻ + u·W⁺ + b)]`, where `W⁺ = max(W, 0)` and
//! `W⁻ = min(W, 0)`. Stack `l` and `u` along the channels and that is one conv (or
//! dense) layer with twice the input and output channels, weights `[[W⁺, W⁻], [W⁻, W⁺]]`
//! and biases `[b, b]`; max-pooling acts on each channel alone and needs no change. So
//! the bounds of every layer after the filter come from a *lifted* [`Network`] that runs
//! through the trainer's own passes (Winograd, chunks, threads), and its gradients map
//! back to `W` by the chain rule (`∂W⁺/∂W = 1[W > 0]`, `∂W⁻/∂W = 1[W < 0]`).
//!
//! The box at the lifted network's input: after a filter, the lowest and highest output
//! of each unit over the pixels of the `u8` ball around the image's pixel (the codes a
//! device can be shown); without one, the pixel interval `[x − ε, x + ε] ∩ [0, 1]`.
//! Training only needs these bounds to be tight and differentiable; `spartan certify`
//! is what proves anything.

use super::init::Init;
use super::network::Network;
use super::pass::Gradients;
use super::workspace::Workspace;
use crate::certify::u8_ball;
use ndarray::{ArrayView2, ArrayView4};
use rand::SeedableRng;
use spartan_core::codes::{element_units, Unit, MAX_UNITS};
use spartan_core::filter::{FilterKind, FilterSpec};
use spartan_core::spec::{ArchSpec, LayerSpec, Shape};

/// Why a network cannot be trained with interval bounds.
#[derive(Debug, thiserror::Error)]
pub enum IntervalError {
    /// A layer after the filter whose activation is not monotone.
    #[error(
        "layer {layer} ({activation}) is not monotone: interval bounds need non-decreasing \
         activations after the filter"
    )]
    NotMonotone {
        /// The layer's index.
        layer: usize,
        /// Its activation's name.
        activation: String,
    },
    /// A filter that mixes input channels (its codes are not per element).
    #[error(
        "the filter mixes {0} input channels: interval training needs one unit set per element"
    )]
    MixedFilter(u16),
    /// More filter units per element than a code holds.
    #[error("the filter has β = {0} units per pixel: interval training takes at most {MAX_UNITS}")]
    TooManyUnits(u16),
    /// The doubled network does not fit the format's limits.
    #[error("the network is too large to carry intervals: {0}")]
    TooLarge(#[from] spartan_core::Error),
}

/// The lifted network of a base network's layers after its filter (or all of them),
/// with the input box of the last batch [`load`](Self::load)ed.
#[derive(Clone, Debug)]
pub struct IntervalNet {
    /// The first base layer the lifted network covers (1 after a filter, else 0).
    first: usize,
    /// Layer `j` carries base layer `first + j`'s bounds.
    lifted: Network,
    /// The last batch's box, `n ×` the lifted input shape.
    boxes: Vec<f32>,
    /// Images in it.
    n: usize,
    /// The filter's code tables, with the radius and filter parameters they were made
    /// for: kept while neither changes (the filter is frozen in certified training, the
    /// radius constant after its ramp).
    codes: Option<(f32, Vec<f32>, CodeBoxes)>,
}

/// The spec whose layers carry `[l, u]` of `spec`'s layers `first..` on doubled channels.
fn lift_spec(spec: &ArchSpec, first: usize, input: Shape) -> Result<ArchSpec, IntervalError> {
    let double = |v: u16, layer: usize| {
        v.checked_mul(2).ok_or(spartan_core::Error::InvalidSpec {
            layer,
            reason: "too many channels to double",
        })
    };
    let mut layers = heapless::Vec::new();
    for (i, &layer) in spec.layers.iter().enumerate().skip(first) {
        if let Some(a) = layer.activation().filter(|a| a.is_cosine()) {
            return Err(IntervalError::NotMonotone {
                layer: i,
                activation: a.to_string(),
            });
        }
        let lifted = match layer {
            LayerSpec::Conv(mut c) => {
                c.filters = double(c.filters, i)?;
                LayerSpec::Conv(c)
            }
            LayerSpec::Dense(mut d) => {
                d.units = double(d.units, i)?;
                LayerSpec::Dense(d)
            }
            other => other,
        };
        // Never more layers than the spec it comes from.
        let _ = layers.push(lifted);
    }
    let input = Shape::new(input.height, input.width, double(input.channels, first)?);
    Ok(ArchSpec { input, layers })
}

/// The first layer the bounds start at and the lifted spec of `spec`'s layers from it.
fn lifted(spec: &ArchSpec) -> Result<(usize, ArchSpec), IntervalError> {
    let shapes = spec.shapes()?;
    let first = match spec.filter() {
        Some(f) if f.kind == FilterKind::Conv && shapes[0].channels > 1 => {
            return Err(IntervalError::MixedFilter(shapes[0].channels))
        }
        Some(f) if f.beta as usize > MAX_UNITS => return Err(IntervalError::TooManyUnits(f.beta)),
        Some(_) => 1,
        None => 0,
    };
    let lifted_spec = lift_spec(spec, first, shapes[first])?;
    lifted_spec.shapes()?;
    Ok((first, lifted_spec))
}

/// Base tensor `w` seen as `[groups, c_in, c_out]`, lifted to `[groups, 2c_in, 2c_out]`
/// with blocks `[[W⁺, W⁻], [W⁻, W⁺]]`.
fn lift_weight(w: &[f32], c_in: usize, c_out: usize, out: &mut [f32]) {
    for (g, block) in w.chunks_exact(c_in * c_out).enumerate() {
        let lifted = &mut out[g * 4 * c_in * c_out..(g + 1) * 4 * c_in * c_out];
        for (i, row) in block.chunks_exact(c_out).enumerate() {
            for (o, &v) in row.iter().enumerate() {
                let (pos, neg) = (v.max(0.0), v.min(0.0));
                for a in 0..2 {
                    for b in 0..2 {
                        let at = (a * c_in + i) * 2 * c_out + b * c_out + o;
                        lifted[at] = if a == b { pos } else { neg };
                    }
                }
            }
        }
    }
}

/// Adds to the base gradient `gw` (`[groups, c_in, c_out]`) what the lifted gradient
/// `gl` says, through `W⁺` and `W⁻` of the base weights `w`.
fn fold_weight_grad(w: &[f32], gl: &[f32], c_in: usize, c_out: usize, gw: &mut [f32]) {
    let per = c_in * c_out;
    for (g, (block, gblock)) in w
        .chunks_exact(per)
        .zip(gw.chunks_exact_mut(per))
        .enumerate()
    {
        let lifted = &gl[g * 4 * per..(g + 1) * 4 * per];
        for (k, (&v, gv)) in block.iter().zip(gblock.iter_mut()).enumerate() {
            let (i, o) = (k / c_out, k % c_out);
            let at = |a: usize, b: usize| lifted[(a * c_in + i) * 2 * c_out + b * c_out + o];
            if v > 0.0 {
                *gv += at(0, 0) + at(1, 1);
            } else if v < 0.0 {
                *gv += at(0, 1) + at(1, 0);
            }
        }
    }
}

impl IntervalNet {
    /// The lifted network of `base` (its parameters are set by [`load`](Self::load)).
    pub fn new(base: &Network) -> Result<Self, IntervalError> {
        let (first, lifted_spec) = lifted(base.spec())?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let lifted = Network::init_with(&lifted_spec, Init::default(), &mut rng)?;
        Ok(IntervalNet {
            first,
            lifted,
            boxes: Vec::new(),
            n: 0,
            codes: None,
        })
    }

    /// Whether networks of `spec` can carry interval bounds (before any work starts).
    pub fn check(spec: &ArchSpec) -> Result<(), IntervalError> {
        lifted(spec).map(|_| ())
    }

    /// The lifted network (as last [`load`](Self::load)ed).
    pub fn lifted(&self) -> &Network {
        &self.lifted
    }

    /// `[c_in, c_out]` of base layer `i`'s weights as `[groups, c_in, c_out]`.
    fn weight_channels(base: &Network, i: usize) -> (usize, usize) {
        let (input, output) = (base.shapes()[i], base.shapes()[i + 1]);
        (input.channels as usize, output.channels as usize)
    }

    /// Sets the lifted parameters from `base`'s and the input box of images `x` at
    /// radius `eps`: what [`lifted`](Self::lifted) then runs on ([`input`](Self::input)).
    pub fn load(&mut self, base: &Network, x: ArrayView4<'_, f32>, eps: f32) {
        self.sync(base);
        self.fill_box(base, x, eps);
    }

    /// The input box of the last [`load`](Self::load), `n × h × w × 2c` (`[l, u]` along
    /// the channels).
    pub fn input(&self) -> ArrayView4<'_, f32> {
        let s = self.lifted.shapes()[0];
        let dim = (
            self.n,
            s.height as usize,
            s.width as usize,
            s.channels as usize,
        );
        ArrayView4::from_shape(dim, &self.boxes[..self.n * s.len()]).expect("box sized")
    }

    /// The bounds `[lower…, upper…]` of `base`'s outputs for images `x` at radius `eps`,
    /// one row per image, in `ws`.
    pub fn bounds<'w>(
        &mut self,
        base: &Network,
        x: ArrayView4<'_, f32>,
        eps: f32,
        ws: &'w mut Workspace,
    ) -> ArrayView2<'w, f32> {
        self.load(base, x, eps);
        self.lifted.forward(self.input(), ws)
    }

    /// Sets the lifted parameters from `base`'s.
    fn sync(&mut self, base: &Network) {
        let first = self.first;
        let mut lifted = self.lifted.params_mut().into_iter();
        for i in first..base.layers().len() {
            let (c_in, c_out) = Self::weight_channels(base, i);
            let p = base.layer_params(i);
            if let [w, b] = p {
                let mut lw = lifted.next().expect("lifted weights");
                let lw = lw.as_slice_mut().expect("standard layout");
                lift_weight(w.as_slice().expect("standard layout"), c_in, c_out, lw);
                let mut lb = lifted.next().expect("lifted biases");
                let lb = lb.as_slice_mut().expect("standard layout");
                let b = b.as_slice().expect("standard layout");
                lb[..c_out].copy_from_slice(b);
                lb[c_out..].copy_from_slice(b);
            }
        }
    }

    /// Adds the lifted network's parameter gradients `lifted` to `grads` of `base`.
    pub fn fold_grads(&self, base: &Network, lifted: &Gradients, grads: &mut Gradients) {
        let ranges = (base.grad_ranges(), self.lifted.grad_ranges());
        for i in self.first..base.layers().len() {
            let [w, _] = base.layer_params(i) else {
                continue;
            };
            let (c_in, c_out) = Self::weight_channels(base, i);
            let gl = &lifted.values()[ranges.1[i - self.first].clone()];
            let g = &mut grads.values_mut()[ranges.0[i].clone()];
            let (gw, gb) = g.split_at_mut(w.len());
            let (glw, glb) = gl.split_at(4 * w.len());
            fold_weight_grad(w.as_slice().expect("standard layout"), glw, c_in, c_out, gw);
            for (o, v) in gb.iter_mut().enumerate() {
                *v += glb[o] + glb[c_out + o];
            }
        }
    }

    /// Fills the box every input element's first lifted layer sees for images `x` at
    /// radius `eps`.
    fn fill_box(&mut self, base: &Network, x: ArrayView4<'_, f32>, eps: f32) {
        let shape = self.lifted.shapes()[0];
        let c = shape.channels as usize / 2;
        self.n = x.dim().0;
        let out = &mut self.boxes;
        out.clear();
        out.resize(self.n * shape.len(), 0.0);
        let x = x.as_standard_layout();
        let x = x.as_slice().unwrap_or(&[]);
        let Some(spec) = base.spec().filter() else {
            for (px, bx) in x.chunks_exact(c).zip(out.chunks_exact_mut(2 * c)) {
                for (k, &v) in px.iter().enumerate() {
                    bx[k] = (v - eps).max(0.0);
                    bx[c + k] = (v + eps).min(1.0);
                }
            }
            return;
        };
        let filter: Vec<f32> = base.layer_params(0).iter().flatten().copied().collect();
        let fresh = |(e, f, _): &(f32, Vec<f32>, CodeBoxes)| *e == eps && *f == filter;
        let boxes = match self.codes.take() {
            Some(cached) if fresh(&cached) => cached,
            _ => (eps, filter.clone(), CodeBoxes::new(base, spec, eps)),
        };
        let ch = base.shapes()[0].channels as usize;
        let beta = spec.beta as usize;
        let elements = base.shapes()[0].len();
        for (e_all, &v) in x.iter().enumerate() {
            let p = (v * 255.0).round().clamp(0.0, 255.0) as u8;
            let (lo, hi) = boxes.2.get(e_all % elements, p);
            let (pixel, channel) = (e_all / ch, e_all % ch);
            let bx = &mut out[pixel * 2 * c..(pixel + 1) * 2 * c];
            for k in 0..beta {
                bx[channel * beta + k] = f32::from(u8::from(lo >> k & 1 == 1));
                bx[c + channel * beta + k] = f32::from(u8::from(hi >> k & 1 == 1));
            }
        }
        self.codes = Some(boxes);
    }
}

/// Per filter element, the AND (lowest) and OR (highest) of the codes of every pixel of
/// each pixel's `u8` ball, as bit sets: `lo[e·256 + p]`, `hi[e·256 + p]`.
#[derive(Clone, Debug)]
struct CodeBoxes {
    /// One table for all elements when the units are shared (Conv-Filtering).
    shared: bool,
    lo: Vec<u32>,
    hi: Vec<u32>,
}

impl CodeBoxes {
    fn new(base: &Network, spec: FilterSpec, eps: f32) -> Self {
        let p = base.layer_params(0);
        let (w, b) = match p {
            [w, b] => (w.as_slice().unwrap_or(&[]), b.as_slice().unwrap_or(&[])),
            [b] => (&[][..], b.as_slice().unwrap_or(&[])),
            _ => (&[][..], &[][..]),
        };
        let channels = base.shapes()[0].channels as usize;
        let shared = spec.kind == FilterKind::Conv;
        let elements = if shared { 1 } else { base.shapes()[0].len() };
        let balls: Vec<(u8, u8)> = (0..=255u8).map(|p| u8_ball(p, eps)).collect();
        let (mut lo, mut hi) = (vec![0; elements * 256], vec![0; elements * 256]);
        let mut counts = vec![0u16; 257];
        for e in 0..elements {
            let units = element_units(&spec, w, b, channels, e).unwrap_or_default();
            let codes: Vec<u32> = (0..=255u8).map(|q| code_on_pixel(&units, q)).collect();
            for k in 0..units.len() {
                for (q, &code) in codes.iter().enumerate() {
                    counts[q + 1] = counts[q] + u16::from(code >> k & 1 == 1);
                }
                for (p, &(a, z)) in balls.iter().enumerate() {
                    let on = counts[z as usize + 1] - counts[a as usize];
                    let len = u16::from(z) - u16::from(a) + 1;
                    lo[e * 256 + p] |= u32::from(on == len) << k;
                    hi[e * 256 + p] |= u32::from(on > 0) << k;
                }
            }
        }
        CodeBoxes { shared, lo, hi }
    }

    fn get(&self, element: usize, p: u8) -> (u32, u32) {
        let at = if self.shared { 0 } else { element * 256 } + p as usize;
        (self.lo[at], self.hi[at])
    }
}

/// The code of raw pixel `q`: bit `k` is unit `k`.
fn code_on_pixel(units: &[Unit], q: u8) -> u32 {
    units
        .iter()
        .enumerate()
        .fold(0, |c, (k, u)| c | (u32::from(u.fires_on_pixel(q)) << k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data;
    use crate::nn::{Pass, Workspace};
    use crate::train::certified::worst_case_row;
    use ndarray::{Array4, ArrayView1, ArrayViewMut1};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use spartan_core::activation::Activation;
    use spartan_core::spec::{ConvSpec, DenseSpec, NamedParams, PoolSpec};

    /// The first `n` embedded test images, as network input.
    fn images(n: usize) -> Batch {
        data::load(None).unwrap().test.take(n).to_input()
    }
    type Batch = crate::data::Batch<f32>;

    /// `[lower…, upper…]` of every image of `x` at radius `eps`.
    fn bounds(net: &Network, x: ArrayView4<'_, f32>, eps: f32) -> Vec<Vec<f32>> {
        let mut ws = Workspace::new();
        let out = IntervalNet::new(net).unwrap().bounds(net, x, eps, &mut ws);
        out.rows().into_iter().map(|r| r.to_vec()).collect()
    }

    fn random_net(name: &str, seed: u64) -> Network {
        let spec = ArchSpec::named(name, NamedParams::default()).unwrap();
        Network::init(&spec, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap()
    }

    /// With a radius of 0 the box is a point: the filter's own output on both sides,
    /// and both bounds are the network's logits (up to the rounding of other sums).
    #[test]
    fn a_zero_radius_gives_the_logits() {
        for name in ["standard", "candidate-a", "candidate-c"] {
            let net = random_net(name, 3);
            let x = images(6);
            let mut ws = Workspace::new();
            if net.spec().filter().is_some() {
                let codes = net.forward_layers(0..1, x.images(), &mut ws).to_owned();
                let mut interval = IntervalNet::new(&net).unwrap();
                interval.load(&net, x.images(), 0.0);
                let boxes = interval.input().to_owned();
                let boxes = boxes.as_slice().unwrap();
                let c = net.shapes()[1].channels as usize;
                let codes = codes.as_slice().unwrap();
                for (px, bx) in codes.chunks(c).zip(boxes.chunks(2 * c)) {
                    assert_eq!((px, px), (&bx[..c], &bx[c..]), "{name}: box of a pixel");
                }
            }
            let logits = net.forward(x.images(), &mut ws).to_owned();
            for (row, b) in logits.rows().into_iter().zip(bounds(&net, x.images(), 0.0)) {
                let c = row.len();
                let tol = 1e-3 * (1.0 + row.iter().fold(0.0f32, |m, z| m.max(z.abs())));
                for (k, &z) in row.iter().enumerate() {
                    assert!(
                        (b[k] - z).abs() <= tol,
                        "{name}: lower {} vs logit {z}",
                        b[k]
                    );
                    assert!(
                        (b[c + k] - z).abs() <= tol,
                        "{name}: upper {} vs {z}",
                        b[c + k]
                    );
                }
            }
        }
    }

    /// Every image of the `u8` ball (for a filter) or the pixel interval (without one)
    /// has its logits inside the bounds.
    #[test]
    fn random_inputs_of_the_ball_stay_inside_the_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for name in ["standard", "candidate-a", "candidate-c"] {
            let net = random_net(name, 5);
            let x = images(4);
            let eps = 0.1;
            let b = bounds(&net, x.images(), eps);
            let mut ws = Workspace::new();
            for _ in 0..20 {
                let moved = x.images().mapv(|v| {
                    let p = (v * 255.0).round() as u8;
                    let (lo, hi) = u8_ball(p, eps);
                    f32::from(rng.random_range(lo..=hi)) / 255.0
                });
                let logits = net.forward(moved.view(), &mut ws);
                for (row, b) in logits.rows().into_iter().zip(&b) {
                    let c = row.len();
                    for (k, &z) in row.iter().enumerate() {
                        let tol = 1e-4 * (1.0 + z.abs());
                        assert!(
                            b[k] - tol <= z && z <= b[c + k] + tol,
                            "{name}: {z} outside"
                        );
                    }
                }
            }
        }
    }

    /// A small filterless network: conv, pool, dense, dense.
    fn tiny() -> Network {
        let mut layers = heapless::Vec::new();
        let relu = Activation::Relu;
        for l in [
            LayerSpec::Conv(ConvSpec {
                filters: 3,
                kernel: 3,
                activation: relu,
            }),
            LayerSpec::MaxPool(PoolSpec { size: 2 }),
            LayerSpec::Dense(DenseSpec {
                units: 5,
                activation: relu,
            }),
            LayerSpec::Dense(DenseSpec {
                units: 3,
                activation: Activation::Linear,
            }),
        ] {
            layers.push(l).unwrap();
        }
        let spec = ArchSpec {
            input: Shape::new(6, 6, 2),
            layers,
        };
        Network::init(&spec, &mut ChaCha8Rng::seed_from_u64(11)).unwrap()
    }

    /// Mean worst-case cross-entropy of `x` at `eps`, and its gradient folded back onto
    /// the base network.
    fn worst_loss(
        net: &Network,
        x: ArrayView4<'_, f32>,
        labels: &[u8],
        eps: f32,
    ) -> (f32, Gradients) {
        let mut interval = IntervalNet::new(net).unwrap();
        interval.load(net, x, eps);
        let view = interval.input();
        let scale = 1.0 / labels.len() as f32;
        let upstream = |i: usize, row: ArrayView1<'_, f32>, g: ArrayViewMut1<'_, f32>| {
            worst_case_row(row, labels[i] as usize, scale, g) * scale
        };
        let lifted = interval.lifted();
        let mut lg = Gradients::zeros(lifted);
        let mut ws = Workspace::new();
        let b = lifted.backward(
            view,
            &Pass::training(lifted),
            upstream,
            &mut ws,
            Some(&mut lg),
        );
        let mut g = Gradients::zeros(net);
        interval.fold_grads(net, &lg, &mut g);
        (b.totals.loss as f32, g)
    }

    /// The folded gradient is the derivative of the worst-case loss: central
    /// differences over every parameter of a small network agree with it.
    #[test]
    fn folded_gradients_match_finite_differences() {
        let mut net = tiny();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let x = Array4::from_shape_fn((3, 6, 6, 2), |_| rng.random_range(0.0f32..1.0));
        let labels = [0u8, 1, 2];
        let (_, g) = worst_loss(&net, x.view(), &labels, 0.05);
        let mut values = net.param_values();
        let flat: Vec<(usize, usize)> = values
            .iter()
            .enumerate()
            .flat_map(|(t, v)| (0..v.len()).map(move |k| (t, k)))
            .collect();
        for (at, &(t, k)) in flat.iter().enumerate() {
            // Small enough not to cross a ReLU or max-pool switch (1e-2 does).
            let h = 1e-3;
            let orig = values[t][k];
            values[t][k] = orig + h;
            net.set_param_values(&values).unwrap();
            let up = worst_loss(&net, x.view(), &labels, 0.05).0;
            values[t][k] = orig - h;
            net.set_param_values(&values).unwrap();
            let down = worst_loss(&net, x.view(), &labels, 0.05).0;
            values[t][k] = orig;
            let numeric = (up - down) / (2.0 * h);
            let analytic = g.values()[at];
            let err = (numeric - analytic).abs() / (1e-2 + numeric.abs().max(analytic.abs()));
            assert!(
                err < 0.05,
                "parameter {t}[{k}]: finite difference {numeric}, folded {analytic}"
            );
        }
        assert_eq!(flat.len(), g.values().len(), "every parameter checked");
    }
}
