//! # spartan-core
//!
//! The `no_std`, allocation-free heart of Spartan Networks (Menet et al., 2018):
//!
//! - [`activation`]: composite activations (step forward, synthetic gradient backward);
//! - [`filter`]: the binary filtering layers and their exact bit tables over `u8` pixels;
//! - [`codes`]: which filter outputs an input interval can reach (for attacks and proofs);
//! - [`spec`]: layer and architecture specs, and the named architectures of the paper;
//! - [`format`]: the versioned, checksummed, zero-copy model file;
//! - [`float`]: reference f32 inference into a caller-provided arena;
//! - [`quant`] and [`int8`]: integer-only inference with bit-table filters;
//! - [`protocol`]: the host–device serial protocol (typed messages, postcard, COBS,
//!   CRC-32), shared by the firmware and the host client.
//!
//! Layer semantics live here once; the trainer and the firmware both use them.
//!
//! ```
//! use spartan_core::activation::Activation;
//! // HSAT: a step forward, arctan' backward.
//! assert_eq!(Activation::Hsat.forward(0.3), 1.0);
//! assert_eq!(Activation::Hsat.surrogate_grad(1.0), 0.5);
//! ```
#![cfg_attr(not(test), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;
// Runtime CPU-feature dispatch of the int8 kernels (`multiversion` with its `std`
// feature, which any crate of a host build may switch on) names `std`: hosts always
// have it. Bare-metal targets (`target_os = "none"`) never link it.
#[cfg(all(not(test), not(target_os = "none")))]
extern crate std;

pub mod activation;
pub mod codes;
pub mod error;
pub mod filter;
pub mod float;
pub mod format;
pub mod int8;
pub mod protocol;
pub mod quant;
pub mod spec;
#[cfg(test)]
mod test_rng;

pub use error::{Error, Result};
