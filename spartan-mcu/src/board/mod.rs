//! Board support: one module per board, chosen by a cargo feature, each with its memory
//! map in `memory/<board>.x` (build.rs hands the chosen one to the linker).
//!
//! | feature           | board                                   | module             |
//! |-------------------|-----------------------------------------|--------------------|
//! | `firmware`        | QEMU's `mps2-an386`                     | [`mps2_an386`]     |
//! | `blackpill-f411`  | WeAct STM32F411CEU6 "Black Pill"        | [`blackpill_f411`] |
//!
//! Every board module gives the same items, which is all the binaries use:
//! `CLOCK_HZ` and `FLASH_ORIGIN`; `Board { uart, led }` from `take()`, where the UART
//! implements `embedded_io::{Read, Write, ReadReady}` and the LED embedded-hal's
//! `StatefulOutputPin`; `log(format_args!(…))` (a debugger's console, when there is
//! one); and `exit(code)`. The SysTick counter, the delay and memory accounting are
//! the same on every Cortex-M and re-exported from [`crate::cortex`]. Adding a board is
//! one module, one memory map and one feature.

#[cfg(all(feature = "firmware", feature = "blackpill-f411"))]
compile_error!("choose one board feature: `firmware` (QEMU) or `blackpill-f411`");
#[cfg(not(any(feature = "firmware", feature = "blackpill-f411")))]
compile_error!("choose a board feature: `firmware` (QEMU) or `blackpill-f411`");

pub use crate::cortex::{
    flash_used, on_systick, paint_stack, ram_size, stack_high_water, start_ticks, static_ram,
    ticks, Delay,
};

#[cfg(feature = "blackpill-f411")]
pub mod blackpill_f411;
#[cfg(feature = "blackpill-f411")]
pub use blackpill_f411::*;

#[cfg(feature = "firmware")]
pub mod mps2_an386;
#[cfg(feature = "firmware")]
pub use mps2_an386::*;
