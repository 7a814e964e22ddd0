//! Gradient checks: every analytic backward against central finite differences.
//!
//! Smooth layers (conv, pool, dense, ReLU, softmax-CE) are checked on the true loss.
//! Step layers have no useful derivative, so they are checked *through the surrogate*:
//! with upstream gradient `u`, the analytic gradient must equal the finite difference
//! of `Σ u · S(z(θ))`, where `S` is the activation's smooth stand-in (`S' = g`).

// Finite differences perturb parameter i and compare with gradient i: index loops read best.
#![allow(clippy::needless_range_loop)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spartan_core::activation::Activation;
use spartan_core::filter::{FilterKind, FilterSpec};
use spartan_core::spec::{ArchSpec, ConvSpec, DenseSpec, LayerSpec, PoolSpec, Shape};
use spartan_train::nn::act::GradMode;
use spartan_train::nn::conv::ConvLayer;
use spartan_train::nn::filter::FilterLayer;
use spartan_train::nn::loss::{cross_entropy_row, softmax_cross_entropy};
use spartan_train::nn::network::Want;
use spartan_train::nn::Network;

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

fn loss_of(net: &mut Network, x: &[f32], labels: &[u8]) -> f32 {
    let classes = net.classes();
    let logits = net.forward(x, labels.len()).to_vec();
    let mut g = vec![0.0; logits.len()];
    softmax_cross_entropy(&logits, labels, classes, &mut g)
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
    let x: Vec<f32> = (0..n * net.input_len())
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % net.classes()) as u8).collect();
    let want = Want {
        params: true,
        input: true,
        regularize: false,
    };
    // Mean cross-entropy over the batch: exactly what `loss_of` computes.
    net.backprop(&x, n, want, |i, row, g| {
        cross_entropy_row(row, labels[i] as usize, 1.0 / n as f32, g)
    });
    let gx = net.input_grads().to_vec();
    let grads: Vec<Vec<f32>> = net
        .params_and_grads()
        .into_iter()
        .map(|(_, g)| g.to_vec())
        .collect();
    let h = 2e-4;
    for (t, g) in grads.iter().enumerate() {
        for _ in 0..g.len().min(12) {
            let i = rng.random_range(0..g.len());
            let mut plus = values.clone();
            plus[t][i] += h;
            net.set_param_values(&plus).unwrap();
            let lp = loss_of(&mut net, &x, &labels);
            let mut minus = values.clone();
            minus[t][i] -= h;
            net.set_param_values(&minus).unwrap();
            let lm = loss_of(&mut net, &x, &labels);
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
        xp[i] += h;
        let lp = loss_of(&mut net, &xp, &labels);
        xp[i] -= 2.0 * h;
        let lm = loss_of(&mut net, &xp, &labels);
        assert_close(gx[i], (lp - lm) / (2.0 * h), &format!("input {i}"));
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

/// `Σ u · S(z)` for a filter layer whose pre-activations come from `forward`.
fn filter_surrogate_objective(
    layer: &FilterLayer,
    x: &[f32],
    n: usize,
    u: &[f32],
    mask: &[f32],
    sf_scale: f32,
) -> f32 {
    let mut y = vec![0.0; n * layer.output.len()];
    let mut z = vec![0.0; y.len()];
    layer.forward(x, n, &mut y, &mut z);
    let s = |v: f32| layer.spec.activation.stand_in(v);
    z.iter()
        .zip(u)
        .zip(mask)
        .map(|((&zi, &ui), &m)| (ui + sf_scale * m) * s(zi))
        .sum()
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
    let output = LayerSpec::Filter(fspec).output_shape(0, input).unwrap();
    let c = channels as usize;
    let (w, b) = match kind {
        FilterKind::Conv => (
            (0..c * 3).map(|_| rng.random_range(0.5..1.5)).collect(),
            (0..3).map(|_| rng.random_range(-0.8..0.0)).collect(),
        ),
        FilterKind::Offset => (
            Vec::new(),
            (0..output.len())
                .map(|_| rng.random_range(-0.9..-0.1))
                .collect(),
        ),
    };
    let layer = FilterLayer::new(fspec, input, output, w, b);
    let n = 2;
    let x: Vec<f32> = (0..n * input.len())
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let u: Vec<f32> = (0..n * output.len())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut y = vec![0.0; u.len()];
    let mut z = vec![0.0; u.len()];
    layer.forward(&x, n, &mut y, &mut z);
    // The L1 regulariser adds sf/n · sign(y) to the upstream gradient (Conv only).
    let mask: Vec<f32> = y.iter().map(|&v| if v > 0.0 { 1.0 } else { 0.0 }).collect();
    let reg_scale = if regularize && kind == FilterKind::Conv {
        fspec.sf / n as f32
    } else {
        0.0
    };
    let mut gy = u.clone();
    let mut gx = vec![0.0; x.len()];
    let (mut gw, mut gb) = (vec![0.0; layer.weight.len()], vec![0.0; layer.bias.len()]);
    layer.backward(
        &x,
        n,
        &z,
        &y,
        &mut gy,
        Some(&mut gx),
        GradMode::Surrogate,
        reg_scale,
        Some((&mut gw, &mut gb)),
    );
    if regularize {
        layer.add_offset_regularizer_grad(&mut gb);
    }
    let h = 1e-3;
    let objective = |l: &FilterLayer, x: &[f32]| {
        let mut v = filter_surrogate_objective(l, x, n, &u, &mask, reg_scale);
        if regularize && kind == FilterKind::Offset {
            v += l.offset_regularizer();
        }
        v
    };
    for i in 0..layer.weight.len() {
        let mut l = layer.clone();
        l.weight[i] += h;
        let p = objective(&l, &x);
        l.weight[i] -= 2.0 * h;
        let m = objective(&l, &x);
        assert_close(
            gw[i],
            (p - m) / (2.0 * h),
            &format!("{activation} weight {i}"),
        );
    }
    for i in 0..layer.bias.len() {
        let mut l = layer.clone();
        l.bias[i] += h;
        let p = objective(&l, &x);
        l.bias[i] -= 2.0 * h;
        let m = objective(&l, &x);
        assert_close(
            gb[i],
            (p - m) / (2.0 * h),
            &format!("{activation} {kind:?} bias {i}"),
        );
    }
    for i in 0..x.len() {
        let mut xp = x.clone();
        xp[i] += h;
        let p = objective(&layer, &xp);
        xp[i] -= 2.0 * h;
        let m = objective(&layer, &xp);
        assert_close(
            gx[i],
            (p - m) / (2.0 * h),
            &format!("{activation} input {i}"),
        );
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
    let (input, cs) = (
        Shape::new(5, 5, 2),
        ConvSpec {
            filters: 3,
            kernel: 3,
            activation: act,
        },
    );
    let output = LayerSpec::Conv(cs).output_shape(0, input).unwrap();
    let w: Vec<f32> = (0..3 * 3 * 2 * 3)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let b: Vec<f32> = (0..3).map(|_| rng.random_range(-0.5..0.5)).collect();
    let layer = ConvLayer::new(cs, input, output, w, b);
    let n = 2;
    let x: Vec<f32> = (0..n * input.len())
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let u: Vec<f32> = (0..n * output.len())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut y = vec![0.0; u.len()];
    let mut z = vec![0.0; u.len()];
    let mut cols = vec![0.0; n * layer.cols_len()];
    layer.forward(&x, n, &mut y, Some(&mut z), &mut cols);
    let mut gy = u.clone();
    let mut gx = vec![0.0; x.len()];
    let (mut gw, mut gb) = (vec![0.0; layer.weight.len()], vec![0.0; layer.bias.len()]);
    layer.backward(
        n,
        &z,
        &y,
        &mut gy,
        Some(&mut gx),
        GradMode::Surrogate,
        Some((&mut gw, &mut gb)),
        &mut cols,
    );
    let objective = |l: &mut ConvLayer, x: &[f32]| {
        let mut y = vec![0.0; u.len()];
        let mut z = vec![0.0; u.len()];
        let mut cols = vec![0.0; n * l.cols_len()];
        l.forward(x, n, &mut y, Some(&mut z), &mut cols);
        z.iter()
            .zip(&u)
            .map(|(&zi, &ui)| ui * act.stand_in(zi))
            .sum::<f32>()
    };
    let h = 1e-3;
    for i in 0..layer.weight.len() {
        let mut l = layer.clone();
        l.weight[i] += h;
        let p = objective(&mut l, &x);
        l.weight[i] -= 2.0 * h;
        let m = objective(&mut l, &x);
        assert_close(gw[i], (p - m) / (2.0 * h), &format!("weight {i}"));
    }
    for i in 0..x.len() {
        let mut xp = x.clone();
        xp[i] += h;
        let p = objective(&mut layer.clone(), &xp);
        xp[i] -= 2.0 * h;
        let m = objective(&mut layer.clone(), &xp);
        assert_close(gx[i], (p - m) / (2.0 * h), &format!("input {i}"));
    }
}
