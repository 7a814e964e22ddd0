//! # spartan-train
//!
//! The host side of Spartan Networks: IDX data, synthetic-gradient training on CPU,
//! evaluation, attacks, export and reports. Layer semantics (activations, filters,
//! shapes, the model file) come from `spartan-core`.

pub mod arch;
pub mod attack;
pub mod bench;
pub mod cli;
pub mod data;
pub mod device;
pub mod eval;
pub mod export;
pub mod fsutil;
pub mod int8;
pub mod nn;
pub mod plot;
pub mod progress;
pub mod quantize;
pub mod report;
pub mod reproduce;
pub mod train;
