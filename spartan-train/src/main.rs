//! The `spartan` command-line tool.
use clap::Parser;

/// Spartan Networks: train, evaluate, attack and export robust classifiers.
#[derive(Parser)]
#[command(name = "spartan", version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
