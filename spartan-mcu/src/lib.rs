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

pub mod driver;
pub mod protocol;
