//! # spartan-mcu
//!
//! Robust digit classification on a microcontroller with no allocator: the int8 model
//! of `spartan-core` served over a framed serial protocol.
//!
//! - [`protocol`]: frames (sync, command, length, payload, CRC-16) and a resynchronising
//!   decoder;
//! - [`driver`]: a device generic over embedded-hal 1.0 (`StatefulOutputPin`,
//!   `DelayNs`) and embedded-io (`Read`, `Write`, `ReadReady`), unit-tested on the host.
//!
//! The firmware for QEMU's `mps2-an386` (Cortex-M4) is in `src/bin/` (feature
//! `firmware`, target `thumbv7em-none-eabihf`).
#![cfg_attr(not(test), no_std)]

#[cfg(all(feature = "firmware", target_arch = "arm"))]
pub mod board;
pub mod driver;
pub mod protocol;

#[cfg(all(feature = "firmware", target_arch = "arm"))]
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
