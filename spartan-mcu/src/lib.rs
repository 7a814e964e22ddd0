//! Firmware library for Spartan Networks on Cortex-M (see the firmware issue).
#![cfg_attr(not(test), no_std)]
