//! Passes over batches: a range of layers composes with the rest, the gradient with
//! respect to an inner layer's output is right, results do not depend on the number of
//! threads, and one workspace serves several networks.

use ndarray::{Array4, ArrayView1, ArrayView4, ArrayViewMut1};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spartan_core::spec::{ArchSpec, NamedParams, Shape};
use spartan_train::nn::loss::cross_entropy_row;
use spartan_train::nn::{GradMode, Gradients, Network, Pass, Workspace};
use spartan_train::train::loss_and_grads;

fn net(name: &str, seed: u64) -> Network {
    let spec = ArchSpec::named(name, NamedParams::default()).unwrap();
    Network::init(&spec, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap()
}

fn images(rng: &mut ChaCha8Rng, n: usize, s: Shape) -> Array4<f32> {
    let dim = (n, s.height as usize, s.width as usize, s.channels as usize);
    let v = (0..n * s.len())
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    Array4::from_shape_vec(dim, v).unwrap()
}

/// Rows of a layer's output back in its NHWC shape.
fn as_batch(rows: ndarray::ArrayView2<'_, f32>, s: Shape) -> Array4<f32> {
    let dim = (
        rows.dim().0,
        s.height as usize,
        s.width as usize,
        s.channels as usize,
    );
    rows.to_owned().into_shape_with_order(dim).unwrap()
}

fn loss(net: &Network, first: usize, x: ArrayView4<'_, f32>, labels: &[u8]) -> f64 {
    let pass = Pass::training(net).from_layer(first);
    let upstream = |i: usize, row: ArrayView1<'_, f32>, g: ArrayViewMut1<'_, f32>| {
        cross_entropy_row(row, labels[i] as usize, 1.0, g)
    };
    let mut ws = Workspace::new();
    net.backward(x, &pass, upstream, &mut ws, None).totals.loss
}

/// Layers 1.. run on the filter's codes give the logits; the gradient of the loss with
/// respect to layer 1's input (what an attack on the filter's codes needs) matches
/// finite differences. Candidate C after its filter is smooth (ReLU convs); the check
/// runs at real-valued codes, away from the ties and kinks of all-equal binary ones.
#[test]
fn passes_from_an_inner_layer_compose_and_differentiate() {
    let net = net("candidate-c", 3);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = images(&mut rng, 5, net.shapes()[0]);
    let labels = [3u8, 1, 4, 1, 5];
    let mut ws = Workspace::new();
    let logits = net.forward(x.view(), &mut ws).to_owned();
    let codes = as_batch(net.forward_layers(0..1, x.view(), &mut ws), net.shapes()[1]);
    assert!(codes.iter().all(|&v| v == 0.0 || v == 1.0), "binary filter");
    let rest = 1..net.layers().len();
    let again = net.forward_layers(rest, codes.view(), &mut ws).to_owned();
    assert_eq!(
        again, logits,
        "layers 1.. on the filter's output give the logits"
    );

    let pass = Pass::input_gradient(&net, GradMode::Surrogate).from_layer(1);
    let upstream = |i: usize, row: ArrayView1<'_, f32>, g: ArrayViewMut1<'_, f32>| {
        cross_entropy_row(row, labels[i] as usize, 1.0, g)
    };
    let b = net.backward(codes.view(), &pass, upstream, &mut ws, None);
    let (output, _) = b.with_input_grads();
    assert_eq!(output, logits);
    let codes = images(&mut rng, 5, net.shapes()[1]);
    let b = net.backward(codes.view(), &pass, upstream, &mut ws, None);
    let g = b.with_input_grads().1.to_owned();
    assert_eq!(g.dim(), codes.dim());
    let h = 1e-3f32;
    for _ in 0..20 {
        let i = rng.random_range(0..codes.len());
        let mut p = codes.clone();
        p.as_slice_mut().unwrap()[i] += h;
        let plus = loss(&net, 1, p.view(), &labels);
        p.as_slice_mut().unwrap()[i] -= 2.0 * h;
        let minus = loss(&net, 1, p.view(), &labels);
        let numeric = ((plus - minus) / (2.0 * f64::from(h))) as f32;
        let analytic = g.as_slice().unwrap()[i];
        let tol = 2e-2 * analytic.abs().max(numeric.abs()) + 5e-4;
        assert!(
            (analytic - numeric).abs() <= tol,
            "code {i}: analytic {analytic} vs numeric {numeric}"
        );
    }
}

/// Chunks write their own partial gradients, summed in chunk order: the same bits with
/// 1, 2 or 3 worker threads (13 samples, so the last chunk is a single one).
#[test]
fn gradients_are_bit_identical_across_thread_counts() {
    let net = net("candidate-a", 5);
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let x = images(&mut rng, 13, net.shapes()[0]);
    let labels: Vec<u8> = (0..13).map(|i| (i * 7 % 10) as u8).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut grads = Gradients::zeros(&net);
            let mut ws = Workspace::new();
            let totals = loss_and_grads(&net, x.view(), &labels, &mut ws, &mut grads);
            (totals, grads)
        })
    };
    let one = run(1);
    assert!(one.0 .1 > 0.0, "the Offset regulariser is counted");
    assert!(one.1.values().iter().any(|&g| g != 0.0));
    for threads in [2, 3] {
        let other = run(threads);
        assert_eq!(other.0, one.0, "{threads} threads: loss");
        assert_eq!(other.1, one.1, "{threads} threads: gradients");
    }
}

/// A workspace grows to fit whatever it is used with: interleaving two networks gives
/// exactly what fresh workspaces give.
#[test]
fn one_workspace_serves_several_networks() {
    let (a, b) = (net("candidate-b", 1), net("standard", 2));
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = images(&mut rng, 7, a.shapes()[0]);
    let fresh = |n: &Network| n.forward(x.view(), &mut Workspace::new()).to_owned();
    let (want_a, want_b) = (fresh(&a), fresh(&b));
    let mut ws = Workspace::new();
    for _ in 0..2 {
        assert_eq!(a.forward(x.view(), &mut ws), want_a);
        assert_eq!(
            b.forward(x.slice(ndarray::s![..3, .., .., ..]), &mut ws),
            want_b.slice(ndarray::s![..3, ..])
        );
    }
}

/// A batch larger than one wave of chunks (259 samples: 130 chunks, three waves, the
/// last chunk a single sample) gets exactly the gradients of adding its chunks' own
/// gradients in chunk order, with 1 or 3 threads.
#[test]
fn large_batches_sum_their_chunks_in_order() {
    let net = net("standard", 8);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let n = 259;
    let x = images(&mut rng, n, net.shapes()[0]);
    let labels: Vec<u8> = (0..n).map(|i| (i * 3 % 10) as u8).collect();
    let pass = Pass {
        regularize: false,
        ..Pass::training(&net)
    };
    let scale = 1.0 / n as f32;
    let grads_of = |first: usize, x: ArrayView4<'_, f32>| {
        let upstream = |i: usize, row: ArrayView1<'_, f32>, g: ArrayViewMut1<'_, f32>| {
            cross_entropy_row(row, labels[first + i] as usize, scale, g) * scale
        };
        let mut grads = Gradients::zeros(&net);
        net.backward(x, &pass, upstream, &mut Workspace::new(), Some(&mut grads));
        grads
    };
    let mut want = vec![0.0f32; Gradients::zeros(&net).values().len()];
    for first in (0..n).step_by(spartan_train::nn::pass::CHUNK) {
        let end = (first + spartan_train::nn::pass::CHUNK).min(n);
        let part = grads_of(first, x.slice(ndarray::s![first..end, .., .., ..]));
        for (w, p) in want.iter_mut().zip(part.values()) {
            *w += p;
        }
    }
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let got = pool.install(|| grads_of(0, x.view()));
        assert!(
            got.values() == want.as_slice(),
            "{threads} threads: the batch's gradients are not its chunks' in order"
        );
    }
}
