//! The `spartan` command-line tool: the application side of `spartan-train`. The
//! library trains, attacks, quantises and exports and returns values; this binary
//! parses arguments, shows progress, draws charts, writes reports and talks to devices.

mod bench;
mod cli;
// The host client keeps a complete API (`Client::info`, `into_inner`, `SerialLink::new`
// for the tests) beyond what the CLI uses.
#[allow(dead_code)]
mod device;
// The host client against a fake device (unit tests: the client is the binary's).
#[cfg(test)]
mod device_link_tests;
mod plot;
mod progress;
mod report;
mod reproduce;

use clap::{CommandFactory, FromArgMatches};

fn main() {
    let matches = cli::Cli::command().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(e) = cli::run(cli, &matches) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
