//! Gradient checks: every analytic backward against central finite differences.
//!
//! Smooth layers (conv, pool, dense, ReLU, softmax-CE) are checked on the true loss.
//! Step layers have no useful derivative, so they are checked *through the surrogate*:
//! with upstream gradient `u`, the analytic gradient must equal the finite difference
//! of `Σ u · S(z(θ))`, where `S` is the activation's smooth stand-in (`S' = g`).

// Finite differences perturb parameter i and compare with gradient i: index loops read best.
#![allow(clippy::needless_range_loop)]

use ndarray::{Array4, ArrayD, ArrayView4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spartan_core::activation::Activation;
use spartan_core::filter::{conv_filter_preactivation, unit_preactivation, FilterKind, FilterSpec};
use spartan_core::spec::{ArchSpec, ConvSpec, DenseSpec, LayerSpec, PoolSpec, Shape};
use spartan_train::nn::layer::tensor;
use spartan_train::nn::layers::build;
use spartan_train::nn::loss::{cross_entropy_row, softmax_cross_entropy};
use spartan_train::nn::{Backward, Forward, GradMode, Gradients, Layer, Network, Pass, Workspace};

fn assert_close(analytic: f32, numeric: f32, what: &str) {
    let tol = 2e-2 * analytic.abs().max(numeric.abs()) + 5e-4;
    assert!(
        (analytic - numeric).abs() <= tol,
        "{what}: analytic {analytic} vs numeric {numeric}"
    );
}

fn spec(input: Shape, layers: &[LayerSpec]) -> ArchSpec {
    ArchSpec {
        input,
        layers: layers.iter().copied().collect(),
    }
}

/// `n` random samples of `shape` in `[lo, hi)`.
fn random(rng: &mut ChaCha8Rng, n: usize, s: Shape, (lo, hi): (f32, f32)) -> Array4<f32> {
    let dim = (n, s.height as usize, s.width as usize, s.channels as usize);
    let values = (0..n * s.len()).map(|_| rng.random_range(lo..hi)).collect();
    Array4::from_shape_vec(dim, values).unwrap()
}

fn loss_of(net: &Network, x: ArrayView4<'_, f32>, labels: &[u8]) -> f32 {
    let logits = net.forward(x, &mut Workspace::new()).to_owned();
    let mut g = logits.clone();
    softmax_cross_entropy(logits.view(), labels, g.view_mut())
}

/// Checks d loss / d θ for a sample of parameters of every tensor, and d loss / d x.
fn check_network(arch: ArchSpec, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut net = Network::init(&arch, &mut rng).unwrap();
    // Non-zero biases so ReLUs sit away from their kinks in a less special way.
    let mut values = net.param_values();
    for v in &mut values {
        for p in v.iter_mut() {
            *p += rng.random_range(-0.1..0.1);
        }
    }
    net.set_param_values(&values).unwrap();
    let n = 3;
    let x = random(&mut rng, n, net.shapes()[0], (0.0, 1.0));
    let labels: Vec<u8> = (0..n).map(|i| (i % net.classes()) as u8).collect();
    let pass = Pass {
        input_grads: true,
        regularize: false,
        ..Pass::training(&net)
    };
    // Mean cross-entropy over the batch: exactly what `loss_of` computes.
    let mut grads = Gradients::zeros(&net);
    let mut ws = Workspace::new();
    let b = net.backward(
        x.view(),
        &pass,
        |i, row, g| cross_entropy_row(row, labels[i] as usize, 1.0 / n as f32, g),
        &mut ws,
        Some(&mut grads),
    );
    let gx = b.input_grads.unwrap().to_owned();
    let grads: Vec<Vec<f32>> = grads
        .tensors()
        .iter()
        .map(|g| g.iter().copied().collect())
        .collect();
    let h = 2e-4;
    for (t, g) in grads.iter().enumerate() {
        for _ in 0..g.len().min(12) {
            let i = rng.random_range(0..g.len());
            let mut plus = values.clone();
            plus[t][i] += h;
            net.set_param_values(&plus).unwrap();
            let lp = loss_of(&net, x.view(), &labels);
            let mut minus = values.clone();
            minus[t][i] -= h;
            net.set_param_values(&minus).unwrap();
            let lm = loss_of(&net, x.view(), &labels);
            assert_close(
                g[i],
                (lp - lm) / (2.0 * h),
                &format!("tensor {t} element {i}"),
            );
        }
    }
    net.set_param_values(&values).unwrap();
    for _ in 0..12 {
        let i = rng.random_range(0..x.len());
        let mut xp = x.clone();
        xp.as_slice_mut().unwrap()[i] += h;
        let lp = loss_of(&net, xp.view(), &labels);
        xp.as_slice_mut().unwrap()[i] -= 2.0 * h;
        let lm = loss_of(&net, xp.view(), &labels);
        let analytic = gx.as_slice().unwrap()[i];
        assert_close(analytic, (lp - lm) / (2.0 * h), &format!("input {i}"));
    }
}

#[test]
fn conv_relu_pool_dense_softmax_gradients_match_finite_differences() {
    let relu = Activation::Relu;
    let arch = spec(
        Shape::new(8, 8, 2),
        &[
            LayerSpec::Conv(ConvSpec {
                filters: 3,
                kernel: 3,
                activation: relu,
            }),
            LayerSpec::MaxPool(PoolSpec { size: 2 }),
            LayerSpec::Conv(ConvSpec {
                filters: 4,
                kernel: 2,
                activation: relu,
            }),
            LayerSpec::Dense(DenseSpec {
                units: 5,
                activation: relu,
            }),
            LayerSpec::Dense(DenseSpec {
                units: 3,
                activation: Activation::Linear,
            }),
        ],
    );
    for seed in 0..8 {
        check_network(arch.clone(), seed);
    }
}

/// A layer's parameters from flat values, shaped as its spec says.
fn shaped(spec: LayerSpec, input: Shape, values: &[Vec<f32>]) -> Vec<ArrayD<f32>> {
    let shapes = spec.params(input);
    let dims = shapes
        .iter()
        .map(|s| s.dims().iter().map(|&d| d as usize).collect::<Vec<_>>());
    dims.zip(values)
        .map(|(d, v)| tensor(&d, v.clone()))
        .collect()
}

/// One layer's forward then backward on `x` with upstream gradient `u`: the output,
/// the input gradient and the parameter gradients (concatenated).
fn forward_backward(
    layer: &dyn Layer,
    p: &[ArrayD<f32>],
    x: &Array4<f32>,
    u: &Array4<f32>,
) -> (Array4<f32>, Array4<f32>, Vec<f32>) {
    let n = x.dim().0;
    let mut y = u.clone();
    let mut scratch = vec![0.0; n * layer.scratch_len()];
    let mut prepared = Vec::new();
    layer.prepare(p, true, &mut prepared);
    let pass = Forward {
        x: x.view(),
        y: y.view_mut(),
        scratch: &mut scratch,
        prepared: &prepared,
    };
    layer.forward(p, pass);
    let mut gy = u.clone();
    let mut gx = x.clone();
    let mut grads = vec![0.0; p.iter().map(|t| t.len()).sum()];
    let pass = Backward {
        x: x.view(),
        y: y.view(),
        scratch: &mut scratch,
        gy: gy.view_mut(),
        gx: Some(gx.view_mut()),
        grads: Some(&mut grads),
        mode: GradMode::Surrogate,
        prepared: &prepared,
    };
    layer.backward(p, pass);
    (y, gx, grads)
}

/// A filter's pre-activations, computed from its parameters with the core's functions
/// (an independent reference for the layer's own forward).
fn filter_preactivations(f: FilterSpec, params: &[Vec<f32>], x: &Array4<f32>) -> Vec<f32> {
    let beta = f.beta as usize;
    let c = x.dim().3;
    let xs = x.as_slice().unwrap();
    match f.kind {
        FilterKind::Conv => xs
            .chunks_exact(c)
            .flat_map(|px| {
                (0..beta).map(move |k| {
                    conv_filter_preactivation(|ch| params[0][ch * beta + k], params[1][k], px)
                })
            })
            .collect(),
        FilterKind::Offset => {
            let per_sample = params[0].len();
            (0..x.len() * beta)
                .map(|o| unit_preactivation(1.0, xs[o / beta], params[0][o % per_sample]))
                .collect()
        }
    }
}

fn check_filter(
    kind: FilterKind,
    activation: Activation,
    channels: u16,
    regularize: bool,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let input = Shape::new(3, 4, channels);
    let fspec = FilterSpec {
        kind,
        beta: 3,
        activation,
        sf: 0.05,
    };
    let lspec = LayerSpec::Filter(fspec);
    let output = lspec.output_shape(0, input).unwrap();
    let c = channels as usize;
    let params: Vec<Vec<f32>> = match kind {
        FilterKind::Conv => vec![
            (0..c * 3).map(|_| rng.random_range(0.5..1.5)).collect(),
            (0..3).map(|_| rng.random_range(-0.8..0.0)).collect(),
        ],
        FilterKind::Offset => vec![(0..output.len())
            .map(|_| rng.random_range(-0.9..-0.1))
            .collect()],
    };
    let layer = build(lspec, input, output);
    let n = 2;
    let x = random(&mut rng, n, input, (0.0, 1.0));
    let u = random(&mut rng, n, output, (-1.0, 1.0));
    let p = shaped(lspec, input, &params);
    let (y, _, _) = forward_backward(&*layer, &p, &x, &u);
    // The L1 regulariser adds sf/n · sign(y) to the upstream gradient (Conv only), as
    // the network does before a layer's backward.
    let mask = y.mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
    let reg_scale = if regularize && kind == FilterKind::Conv {
        fspec.sf / n as f32
    } else {
        0.0
    };
    let upstream = &u + &(&mask * reg_scale);
    let (_, gx, mut grads) = forward_backward(&*layer, &p, &x, &upstream);
    if regularize {
        layer.add_param_penalty_grad(&p, &mut grads);
    }
    let s = |v: f32| activation.stand_in(v);
    // `Σ (u + reg) · S(z)`, plus the Offset penalty.
    let objective = |p: &[Vec<f32>], x: &Array4<f32>| {
        let z = filter_preactivations(fspec, p, x);
        let mut v: f32 = z
            .iter()
            .zip(upstream.iter())
            .map(|(&zi, &ui)| ui * s(zi))
            .sum();
        if regularize && kind == FilterKind::Offset {
            v += layer.param_penalty(&shaped(lspec, input, p));
        }
        v
    };
    let h = 1e-3;
    let mut at = 0;
    for (t, tensor) in params.iter().enumerate() {
        for i in 0..tensor.len() {
            let mut p = params.clone();
            p[t][i] += h;
            let plus = objective(&p, &x);
            p[t][i] -= 2.0 * h;
            let minus = objective(&p, &x);
            let what = format!("{activation} {kind:?} tensor {t} element {i}");
            assert_close(grads[at], (plus - minus) / (2.0 * h), &what);
            at += 1;
        }
    }
    for i in 0..x.len() {
        let mut xp = x.clone();
        xp.as_slice_mut().unwrap()[i] += h;
        let plus = objective(&params, &xp);
        xp.as_slice_mut().unwrap()[i] -= 2.0 * h;
        let minus = objective(&params, &xp);
        let what = format!("{activation} {kind:?} input {i}");
        assert_close(gx.as_slice().unwrap()[i], (plus - minus) / (2.0 * h), &what);
    }
}

#[test]
fn filter_layers_backprop_through_the_surrogate() {
    let acts = [
        Activation::Hsid,
        Activation::Hsat,
        Activation::CosHsat,
        Activation::CosHsnd { sigma: 1.0 },
        Activation::Hsnd { sigma: 0.5 },
    ];
    for (s, act) in acts.into_iter().enumerate() {
        for kind in [FilterKind::Conv, FilterKind::Offset] {
            for channels in [1, 2] {
                check_filter(kind, act, channels, false, s as u64);
            }
        }
    }
}

#[test]
fn filter_regularisers_backprop_through_the_surrogate() {
    for (s, act) in [
        Activation::Hsat,
        Activation::CosHsat,
        Activation::Hsnd { sigma: 1.0 },
    ]
    .into_iter()
    .enumerate()
    {
        for kind in [FilterKind::Conv, FilterKind::Offset] {
            check_filter(kind, act, 1, true, 10 + s as u64);
        }
    }
}

/// A conv with a composite activation (the paper's filter layers 2 and 3).
#[test]
fn composite_conv_backprops_through_the_surrogate() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let act = Activation::CosHsnd { sigma: 1.0 };
    let input = Shape::new(5, 5, 2);
    let cs = ConvSpec {
        filters: 3,
        kernel: 3,
        activation: act,
    };
    let output = LayerSpec::Conv(cs).output_shape(0, input).unwrap();
    let params = vec![
        (0..3 * 3 * 2 * 3)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect::<Vec<f32>>(),
        (0..3).map(|_| rng.random_range(-0.5..0.5)).collect(),
    ];
    let spec = |activation| LayerSpec::Conv(ConvSpec { activation, ..cs });
    let (conv, linear) = (
        build(spec(act), input, output),
        build(spec(Activation::Linear), input, output),
    );
    let n = 2;
    let x = random(&mut rng, n, input, (0.0, 1.0));
    let u = random(&mut rng, n, output, (-1.0, 1.0));
    let (_, gx, grads) = forward_backward(&*conv, &shaped(spec(act), input, &params), &x, &u);
    // The same conv with a linear activation gives the pre-activations z.
    let objective = |p: &[Vec<f32>], x: &Array4<f32>| {
        let p = shaped(spec(act), input, p);
        let (z, _, _) = forward_backward(&*linear, &p, x, &u);
        z.iter()
            .zip(u.iter())
            .map(|(&zi, &ui)| ui * act.stand_in(zi))
            .sum::<f32>()
    };
    let h = 1e-3;
    for i in 0..params[0].len() {
        let mut p = params.clone();
        p[0][i] += h;
        let plus = objective(&p, &x);
        p[0][i] -= 2.0 * h;
        let minus = objective(&p, &x);
        assert_close(grads[i], (plus - minus) / (2.0 * h), &format!("weight {i}"));
    }
    for i in 0..x.len() {
        let mut xp = x.clone();
        xp.as_slice_mut().unwrap()[i] += h;
        let plus = objective(&params, &xp);
        xp.as_slice_mut().unwrap()[i] -= 2.0 * h;
        let minus = objective(&params, &xp);
        let analytic = gx.as_slice().unwrap()[i];
        assert_close(analytic, (plus - minus) / (2.0 * h), &format!("input {i}"));
    }
}
