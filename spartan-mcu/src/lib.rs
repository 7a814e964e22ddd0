//! # spartan-mcu
//!
//! Robust digit classification on a microcontroller with no allocator: the int8 model
//! of `spartan-core` served over a framed serial protocol.
//!
//! - [`driver`]: a device generic over embedded-hal 1.0 (`StatefulOutputPin`,
//!   `DelayNs`) and embedded-io (`Read`, `Write`, `ReadReady`), unit-tested on the host. It speaks `spartan_core::protocol`, the
//!   protocol the host client uses too.
//!
//! The firmware is in `src/bin/` (target `thumbv7em-none-eabihf`): `spartan-fw` serves
//! the protocol, `spartan-selftest` checks the model on QEMU. The board is a feature:
//! `firmware` (or `mps2-an386`) for QEMU's `mps2-an386`, `blackpill-f411` for the
//! STM32F411 "Black Pill"; see `board` (built for firmware only).
#![cfg_attr(not(test), no_std)]

#[cfg(all(feature = "runtime", target_arch = "arm"))]
pub mod board;
#[cfg(all(feature = "runtime", target_arch = "arm"))]
pub mod cortex;
pub mod driver;

#[cfg(all(feature = "runtime", target_arch = "arm"))]
/// Build-time facts about the embedded model and self-test set (see `build.rs`).
pub mod config {
    include!(concat!(env!("OUT_DIR"), "/config.rs"));

    /// The int8 model, in flash.
    pub static MODEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/model.spartan"));
    /// Self-test images (`SELFTEST_IMAGES × IMAGE_LEN` raw pixels).
    pub static IMAGES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/images.bin"));
    /// Their labels.
    pub static LABELS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/labels.bin"));
    /// The host int8 path's logits for them.
    pub static EXPECTED_LOGITS: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/expected-logits.bin"));
}
