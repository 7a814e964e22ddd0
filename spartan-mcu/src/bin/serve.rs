//! The device firmware: serves the framed protocol on UART0 (QEMU's first `-serial`),
//! toggling LED0 per inference. The model is in flash, the arena in `.bss`.
#![no_std]
#![no_main]

use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::hprintln;
use spartan_mcu::board::{self, Delay, Led, Uart};
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
    hprintln!("PANIC: {}", info);
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
    // The delay (frame timeouts) counts SysTick ticks.
    board::start_ticks(cp.SYST);
    let Some(uart) = Uart::take() else {
        board::exit(2)
    };
    match Device::new(uart, Led, Delay, config::MODEL, arena) {
        Ok(mut device) => device.run(),
        Err(e) => {
            hprintln!("cannot start: {:?}", e);
            board::exit(3)
        }
    }
}
