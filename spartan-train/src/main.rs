//! The `spartan` command-line tool.

use clap::Parser;

fn main() {
    let cli = spartan_train::cli::Cli::parse();
    if let Err(e) = spartan_train::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
