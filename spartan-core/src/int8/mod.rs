//! Int8 inference: raw `u8` pixels in, `i8` logits and the class out, integers only.
//!
//! - Layer 1 (a filtering layer) is a bit table over raw pixels: no arithmetic at all.
//! - Hidden activations are `u8` with a per-tensor zero point (`real = s·(q − zp)`);
//!   binary activations are exactly 0/1; the logits are `i8`.
//! - Weights are per-output-channel symmetric `i8`, biases `i32`; accumulators are
//!   `i32`: `acc = bias + Σ w·(x − zp)`; outputs are rescaled by a fixed-point
//!   multiplier and shift ([`crate::quant::Requant`]).
//!
//! Modules: [`record`] defines what each layer stores (writer and parser), `model`
//! validates a file into an [`Int8Model`], `exec` runs it as a row pipeline in a small
//! arena, and the kernels compute the same integers on each kind of machine:
//! `mcu` (blocks of four pixels; `SMLAD` on Armv7E-M through `dsp`), `host` (rows of
//! accumulators; AVX-512 VNNI through `vnni`), sharing the output stages of `kernels`.
//!
//! The layout of an int8 model file is in docs/format.md.

mod dsp;
mod exec;
#[cfg(not(target_os = "none"))]
mod host;
mod kernels;
mod mcu;
mod model;
pub mod record;
#[cfg(test)]
mod tests;
#[cfg(all(target_arch = "x86_64", not(target_os = "none")))]
mod vnni;

pub use exec::Probe;
pub use model::{FilterTables, Int8Layer, Int8Model, OutputStage, NEVER_ON};
pub use record::LayerMeta;
#[cfg(feature = "alloc")]
pub use record::{FilterRecord, Int8Writer, LinearRecord, OutputRecord, Record};
