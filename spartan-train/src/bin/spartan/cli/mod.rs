//! The `spartan` CLI: argument definitions and dispatch. Each subcommand lives in its
//! own module; `anyhow` is used only at this edge.

mod attack;
mod bench;
mod bench_infer;
mod certify;
mod device;
mod export;
mod inspect;
mod quantize;
mod reproduce;
mod train;

use clap::parser::ValueSource;
use clap::{CommandFactory, Parser, Subcommand};
use spartan_train::data::{self, DataError, Dataset, Split};
use spartan_train::fsutil::read_capped;
use std::path::PathBuf;

/// Spartan Networks: train, evaluate, attack, quantize and export robust classifiers.
#[derive(Debug, Parser)]
#[command(name = "spartan", version, about, long_about = None)]
pub struct Cli {
    /// Hide progress bars.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Data source options shared by subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Directory with MNIST-format IDX files (raw or .gz); default: the embedded subset.
    #[arg(long, env = "SPARTAN_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
}

impl DataArgs {
    /// One part of the data (commands read only the files they use).
    pub fn load(&self, split: Split) -> Result<Dataset, DataError> {
        data::load_split(self.data.as_deref(), split)
    }

    /// Where the data comes from, for messages.
    pub fn describe(&self) -> String {
        match &self.data {
            Some(d) => d.display().to_string(),
            None => "the embedded MNIST subset".to_string(),
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a network with synthetic-gradient backprop.
    Train(train::TrainArgs),
    /// Accuracy and confusion matrix of a model on the test set.
    Eval(train::EvalArgs),
    /// Layers, parameter counts and filter thresholds of a model file.
    Inspect(inspect::InspectArgs),
    /// Print a named architecture as a TOML spec (a template for custom candidates).
    Spec(inspect::SpecArgs),
    /// Post-training int8 quantisation (bit-table filter, per-channel weights).
    Quantize(quantize::QuantizeArgs),
    /// Export weights for other tools (safetensors in PyTorch layout).
    Export(export::ExportArgs),
    /// Import weights trained elsewhere (a safetensors file in the layout `export` writes)
    /// as a model file.
    Import(export::ImportArgs),
    /// The paper's experiment end to end: train the four networks, attack them, write REPORT.md.
    Reproduce(reproduce::ReproduceArgs),
    /// Adversarial attacks: white-box FGSM/PGD (BPDA) and the surrogate black-box attack.
    Attack(attack::AttackArgs),
    /// Prove robustness: certified accuracy (a lower bound) with checked counterexamples.
    Certify(certify::CertifyArgs),
    /// Stream test images to a device (a board on a serial port, or the firmware under
    /// QEMU) and report its accuracy and agreement with the host; --list the ports.
    Device(device::DeviceArgs),
    /// Measure throughput (printed like the peer benchmark script).
    #[command(subcommand)]
    Bench(bench::BenchWhat),
}

/// Runs a parsed command line; `matches` say which arguments it gave.
pub fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let progress = crate::progress::Progress::new(cli.quiet);
    let given = |name: &str| {
        let command = Cli::command();
        match (
            command.find_subcommand(name),
            matches.subcommand_matches(name),
        ) {
            (Some(c), Some(m)) => given_flags(c, m),
            _ => Vec::new(),
        }
    };
    match cli.command {
        Command::Train(a) => train::train(a, &given("train"), progress),
        Command::Eval(a) => train::eval(a, progress),
        Command::Inspect(a) => inspect::inspect(a),
        Command::Spec(a) => inspect::spec(a),
        Command::Export(a) => export::export(a),
        Command::Import(a) => export::import(a),
        Command::Quantize(a) => quantize::quantize(a),
        Command::Bench(w) => bench::bench(w),
        Command::Attack(a) => attack::attack(a, progress),
        Command::Certify(a) => certify::certify(a, progress),
        Command::Reproduce(a) => reproduce::reproduce(a, progress),
        Command::Device(a) => device::device(a, progress),
    }
}

/// The options (`--name`) of `command` given on the command line `m`: not defaults,
/// not environment variables.
fn given_flags(command: &clap::Command, m: &clap::ArgMatches) -> Vec<String> {
    command
        .get_arguments()
        .filter(|a| m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect()
}

/// Largest model file read: 256 MiB, far above any network trained here (the paper's
/// is 220 kB), so that a wrong path (`/dev/zero`) fails at once instead of filling memory.
const MAX_MODEL_BYTES: u64 = 256 << 20;

/// Reads a model file with a clear error.
pub(crate) fn read_model_file(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let magic = spartan_core::format::MAGIC;
    Ok(read_capped(
        path,
        MAX_MODEL_BYTES,
        "Spartan model file",
        &magic,
    )?)
}

/// A model file of either kind.
pub(crate) enum AnyModel {
    /// A float network.
    F32(Box<spartan_train::nn::Network>),
    /// An int8 model's bytes (validated on load).
    Int8(Vec<u8>),
}

/// Loads a model file of either kind, naming the file in any error.
pub(crate) fn load_any_model(path: &std::path::Path) -> anyhow::Result<AnyModel> {
    use anyhow::Context;
    let bytes = read_model_file(path)?;
    let file = spartan_core::format::ModelFile::parse(&bytes)
        .with_context(|| format!("{}", path.display()))?;
    match file.kind {
        spartan_core::format::ModelKind::F32 => {
            let model = spartan_core::float::F32Model::from_file(&file)
                .with_context(|| format!("{}", path.display()))?;
            Ok(AnyModel::F32(Box::new(
                spartan_train::nn::Network::from_model(&model),
            )))
        }
        spartan_core::format::ModelKind::Int8 => {
            spartan_core::int8::Int8Model::from_file(&file)
                .with_context(|| format!("{}", path.display()))?;
            drop(file);
            Ok(AnyModel::Int8(bytes))
        }
    }
}
