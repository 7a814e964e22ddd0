//! The device firmware: serves the protocol (`spartan_core::protocol`) on the board's
//! UART, toggling its LED per inference. The model is in flash, the arena in `.bss`.
//! Board-independent: the board module (chosen by feature) supplies the peripherals.
#![no_std]
#![no_main]

use cortex_m_rt::{entry, exception};
use spartan_mcu::board::{self, Delay};
use spartan_mcu::config::{self, ARENA_BYTES};
use spartan_mcu::driver::Device;

/// The inference scratch, in `.bss` (no stack copy).
static mut ARENA: [u8; ARENA_BYTES] = [0; ARENA_BYTES];

#[exception]
fn SysTick() {
    board::on_systick();
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    board::log(format_args!("PANIC: {}", info));
    board::exit(101)
}

#[entry]
fn main() -> ! {
    #[allow(unsafe_code)]
    // SAFETY: `main` runs once and never returns; no other code touches ARENA.
    let arena: &'static mut [u8] = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    let Some(cp) = cortex_m::Peripherals::take() else {
        board::exit(2)
    };
    // The board sets its clocks first: SysTick (the delay of frame timeouts) counts them.
    let Some(board::Board { uart, led }) = board::take() else {
        board::exit(2)
    };
    board::start_ticks(cp.SYST);
    match Device::new(uart, led, Delay, config::MODEL, arena) {
        Ok(mut device) => device.run(),
        Err(e) => {
            board::log(format_args!("cannot start: {:?}", e));
            board::exit(3)
        }
    }
}
