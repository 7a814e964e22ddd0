//! `spartan bench`.

use super::DataArgs;
use crate::bench::bench_train;
use anyhow::Context;
use spartan_train::arch::{resolve, Overrides};
use spartan_train::data::Split;

/// What to measure.
#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// Training throughput at a batch size, plus batch-1 and batch-256 float inference.
    Train(BenchTrainArgs),
    /// f32 and int8 inference at batch 1 and 256, model flash and arena bytes.
    Infer(super::bench_infer::BenchInferArgs),
}

/// Arguments of `spartan bench train`.
#[derive(Debug, clap::Args)]
pub struct BenchTrainArgs {
    /// Architecture (a name or a TOML spec).
    #[arg(long, default_value = "standard")]
    pub arch: String,
    /// Training batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Timed steps per repeat.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Repeats (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// What the network is fed: uniform noise, as the peer script feeds its frameworks,
    /// or the training images of `--data` (a filtered network skips their background).
    #[arg(long, value_enum, default_value = "noise")]
    pub input: BenchInput,
    #[command(flatten)]
    pub data: DataArgs,
}

/// `--input` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchInput {
    /// Uniform random pixels.
    Noise,
    /// The training images of `--data` (the embedded subset by default).
    Mnist,
}

pub(super) fn bench(what: BenchWhat) -> anyhow::Result<()> {
    match what {
        BenchWhat::Infer(a) => super::bench_infer::bench_infer(a),
        BenchWhat::Train(a) => {
            anyhow::ensure!(
                a.batch >= 1 && a.batch <= 65_536,
                "--batch must be between 1 and 65536"
            );
            anyhow::ensure!(
                a.steps >= 1 && a.repeats >= 1,
                "--steps and --repeats must be at least 1"
            );
            if let Some(t) = a.threads {
                anyhow::ensure!(t >= 1, "--threads must be at least 1");
                // Only fails if the pool already exists, in which case it is used as is.
                let _ = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build_global();
            }
            let spec = resolve(&a.arch, Overrides::default(), 10)?;
            let images = match a.input {
                BenchInput::Noise => None,
                BenchInput::Mnist => {
                    let train = a.data.load(Split::Train)?;
                    train
                        .check_shape(spec.input)
                        .context("the images do not fit the architecture")?;
                    Some(train.to_input())
                }
            };
            eprintln!(
                "spartan bench train: {} ({} parameters), {} threads, batch {}, {} repeats of {} steps, on {}",
                a.arch,
                spec.parameter_count()?,
                rayon::current_num_threads(),
                a.batch,
                a.repeats,
                a.steps,
                match a.input {
                    BenchInput::Noise => "uniform noise".to_string(),
                    BenchInput::Mnist => format!("the training images of {}", a.data.describe()),
                }
            );
            let r = bench_train(&spec, a.batch, a.steps, a.repeats, images.as_ref());
            println!(
                "{}",
                r.train.line("spartan", &format!("train_b{}", a.batch))
            );
            println!("{}", r.infer_b1.line("spartan", "infer_b1"));
            println!("{}", r.infer_b256.line("spartan", "infer_b256"));
            println!(
                "spartan infer_b1 latency median={:.3} ms",
                1000.0 / r.infer_b1.median.max(1e-12)
            );
            Ok(())
        }
    }
}
