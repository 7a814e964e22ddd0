//! # spartan-train
//!
//! The host side of Spartan Networks as a library: IDX data, synthetic-gradient
//! training on CPU, evaluation, attacks, quantisation and export. Functions return
//! values; long work reports through an [`observe::Observer`]. Layer semantics
//! (activations, filters, shapes, the model file) come from `spartan-core`.
//!
//! The `spartan` binary (`src/bin/spartan/`) is the application on top: argument
//! parsing, progress bars, charts, reports, benchmarks and the device client.

pub mod arch;
pub mod attack;
pub mod certify;
pub mod data;
pub mod eval;
pub mod export;
pub mod fsutil;
pub mod int8;
pub mod nn;
pub mod observe;
pub mod quantize;
pub mod train;
