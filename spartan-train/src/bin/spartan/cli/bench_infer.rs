//! `spartan bench infer`.

use crate::bench::{bench_f32, bench_int8};
use anyhow::Context;
use spartan_train::data;
use spartan_train::int8::Int8Runner;
use spartan_train::quantize::quantize;
use std::path::PathBuf;

/// Arguments of `spartan bench infer`.
#[derive(Debug, clap::Args)]
pub struct BenchInferArgs {
    /// An f32 model file (it is quantised on the fly, calibrated on 2,000 training
    /// images), or an int8 model file (then only the int8 path is measured).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: super::DataArgs,
    /// Repeats (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
}

pub(super) fn bench_infer(a: BenchInferArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.repeats >= 1, "--repeats must be at least 1");
    let splits = data::load(a.data.data.as_deref())?;
    let test = splits.test.take(1000);
    let (f32_net, int8_bytes) = match super::load_any_model(&a.model)? {
        super::AnyModel::F32(net) => {
            let calib = splits.train.take(2000).to_input();
            let q = quantize(&net, calib.images()).context("quantising for the int8 figures")?;
            (Some(*net), q)
        }
        super::AnyModel::Int8(bytes) => (None, bytes),
    };
    let runner = Int8Runner::load(&int8_bytes)?;
    test.check_shape(runner.model.shapes()[0])?;
    eprintln!(
        "spartan bench infer: {} ({}), {} threads for batch 256, 1 thread for batch 1",
        a.model.display(),
        runner.model.spec().layers.len(),
        rayon::current_num_threads()
    );
    if let Some(net) = f32_net {
        let r = bench_f32(&net, &test.to_input(), a.repeats);
        println!("{}", r.b1.line("spartan-f32", "infer_b1"));
        println!("{}", r.b256.line("spartan-f32", "infer_b256"));
        println!(
            "spartan-f32 infer_b1 latency median={:.4} ms",
            1000.0 / r.b1.median.max(1e-12)
        );
    }
    let r = bench_int8(&runner, &test, a.repeats);
    println!("{}", r.b1.line("spartan-int8", "infer_b1"));
    println!("{}", r.b256.line("spartan-int8", "infer_b256"));
    println!(
        "spartan-int8 infer_b1 latency median={:.4} ms",
        1000.0 / r.b1.median.max(1e-12)
    );
    println!(
        "spartan-int8 model flash_bytes={} arena_bytes={}",
        int8_bytes.len(),
        runner.model.arena_len()
    );
    Ok(())
}
