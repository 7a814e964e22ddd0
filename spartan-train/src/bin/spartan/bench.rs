//! Throughput measurements printed in the same form as `../shared/bench/peer_bench.py`,
//! so our figures and the PyTorch/Keras peers' can be read side by side.

use ndarray::{s, Array4, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spartan_core::spec::ArchSpec;
use spartan_train::data::{Batch, Dataset};
use spartan_train::int8::Int8Runner;
use spartan_train::nn::optim::AdamConfig;
use spartan_train::nn::{Network, Workspace};
use spartan_train::train::Trainer;
use std::time::Instant;

/// Median, min and max of a set of rates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// Median samples/s.
    pub median: f64,
    /// Slowest repeat.
    pub min: f64,
    /// Fastest repeat.
    pub max: f64,
}

impl Rates {
    /// Summarises repeats.
    pub fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(|a, b| a.total_cmp(b));
        let median = if v.is_empty() {
            0.0
        } else if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Rates {
            median,
            min: v.first().copied().unwrap_or(0.0),
            max: v.last().copied().unwrap_or(0.0),
        }
    }

    /// `name median=… min=… max=… samples/s`, the peer script's format.
    pub fn line(&self, framework: &str, name: &str) -> String {
        format!(
            "{framework} {name} median={:.1} min={:.1} max={:.1} samples/s",
            self.median, self.min, self.max
        )
    }
}

/// Runs `f` (which processes `per_call` samples) `warmup` times, then `repeats` timed
/// rounds of `steps` calls; returns samples/s of each round.
pub fn throughput(
    mut f: impl FnMut(),
    per_call: usize,
    steps: usize,
    repeats: usize,
    warmup: usize,
) -> Vec<f64> {
    for _ in 0..warmup {
        f();
    }
    (0..repeats)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..steps {
                f();
            }
            (per_call * steps) as f64 / t.elapsed().as_secs_f64().max(1e-12)
        })
        .collect()
}

/// Training and inference figures of one architecture.
#[derive(Clone, Copy, Debug)]
pub struct TrainBench {
    /// Training steps at the given batch.
    pub train: Rates,
    /// Batch-1 float inference.
    pub infer_b1: Rates,
    /// Batch-256 float inference.
    pub infer_b256: Rates,
}

/// Measures training (forward, backward, Adam) at `batch`, and float inference at batch
/// 1 and 256, on `images` (the first ones, cycled) or else on uniform random data of
/// the input's shape, like the peer script. The data matters for a filtered network:
/// the conv after a filter skips the patches where the filter output is all zeros,
/// which real images have and noise has not.
pub fn bench_train(
    spec: &ArchSpec,
    batch: usize,
    steps: usize,
    repeats: usize,
    images: Option<&Batch<f32>>,
) -> TrainBench {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let net = Network::init(spec, &mut rng).expect("valid spec");
    let (s, classes) = (net.shapes()[0], net.classes());
    let mut draw = |n: usize| -> (Array4<f32>, Vec<u8>) {
        if let Some(b) = images {
            let cycled: Vec<usize> = (0..n).map(|i| i % b.len().max(1)).collect();
            let y = cycled.iter().map(|&i| b.labels[i]).collect();
            return (b.images().select(Axis(0), &cycled), y);
        }
        let dim = (n, s.height as usize, s.width as usize, s.channels as usize);
        let values = (0..n * s.len())
            .map(|_| rng.random_range(0.0..1.0))
            .collect();
        let x = Array4::from_shape_vec(dim, values).expect("sizes from the shape");
        let y = (0..n).map(|_| rng.random_range(0..classes as u8)).collect();
        (x, y)
    };
    let (x, y) = draw(batch);
    let cfg = AdamConfig::default();
    let mut trainer = Trainer::new(net);
    let train = throughput(
        || {
            trainer.step(&cfg, x.view(), &y);
        },
        batch,
        steps,
        repeats,
        5,
    );
    let (net, ws) = trainer.parts();
    let x1 = x.slice(s![..1, .., .., ..]);
    let infer_b1 = throughput(
        || {
            std::hint::black_box(net.forward(x1, ws));
        },
        1,
        300,
        repeats,
        20,
    );
    let (x256, _) = draw(256);
    let infer_b256 = throughput(
        || {
            std::hint::black_box(net.forward(x256.view(), ws));
        },
        256,
        10,
        repeats,
        2,
    );
    TrainBench {
        train: Rates::of(train),
        infer_b1: Rates::of(infer_b1),
        infer_b256: Rates::of(infer_b256),
    }
}

/// Inference figures of one model file (f32 via the trainer's layers, int8 via the
/// core's integer path, one image per call, single thread for batch 1).
#[derive(Clone, Copy, Debug)]
pub struct InferBench {
    /// Batch-1 throughput (1 / latency), single thread.
    pub b1: Rates,
    /// Batch-256 throughput, all threads.
    pub b256: Rates,
}

impl InferBench {
    /// Times `one` (a single image, `b1_steps` calls a round, a tenth of that to warm
    /// up) and `batch` (256 images, 10 calls a round) the same way for every path.
    fn measure(one: impl FnMut(), b1_steps: usize, batch: impl FnMut(), repeats: usize) -> Self {
        Self {
            b1: Rates::of(throughput(one, 1, b1_steps, repeats, b1_steps / 10)),
            b256: Rates::of(throughput(batch, 256, 10, repeats, 2)),
        }
    }
}

/// Measures the core's int8 path on `images` (raw pixels, cycled).
pub fn bench_int8(runner: &Int8Runner<'_>, images: &Dataset, repeats: usize) -> InferBench {
    let m = &runner.model;
    let n_img = images.len();
    let mut arena = vec![0u8; m.arena_len()];
    let mut logits = vec![0i8; m.classes()];
    let mut i = 0usize;
    let one = || {
        let img = images.image(i % n_img);
        i += 1;
        std::hint::black_box(m.infer(img, &mut arena, &mut logits).unwrap_or(0));
    };
    let batch: Vec<u8> = (0..256)
        .flat_map(|i| images.image(i % n_img))
        .copied()
        .collect();
    InferBench::measure(
        one,
        500,
        || {
            std::hint::black_box(runner.run(&batch, 256));
        },
        repeats,
    )
}

/// Measures the trainer's f32 forward pass on `images` (cycled), in one workspace.
pub fn bench_f32(net: &Network, images: &Batch<f32>, repeats: usize) -> InferBench {
    let n_img = images.len();
    let all = images.images();
    let mut i = 0usize;
    let cycled: Vec<usize> = (0..256).map(|i| i % n_img).collect();
    let batch = all.select(Axis(0), &cycled);
    // Both closures use the one workspace, so they take turns borrowing it.
    let ws = std::cell::RefCell::new(Workspace::new());
    InferBench::measure(
        || {
            let k = i % n_img;
            i += 1;
            let x = all.slice(s![k..k + 1, .., .., ..]);
            std::hint::black_box(net.forward(x, &mut ws.borrow_mut()));
        },
        300,
        || {
            std::hint::black_box(net.forward(batch.view(), &mut ws.borrow_mut()));
        },
        repeats,
    )
}
