//! What every Cortex-M board shares: a SysTick tick counter (and a delay on it), and
//! memory accounting from cortex-m-rt's linker symbols. Board modules supply the clock
//! (`board::CLOCK_HZ`) and re-export these.
//!
//! `unsafe` here reads linker symbols' addresses and paints free stack (nothing else
//! can measure RAM use), and makes the semihosting exit call. Each use says why it is
//! sound.
#![allow(unsafe_code)]

use crate::board::CLOCK_HZ;
use core::ptr::{addr_of, read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;

/// Delay on the SysTick counter (so it follows the board's clock, also under an
/// emulator, where instruction timing is not real time). Needs [`start_ticks`].
pub struct Delay;

impl embedded_hal::delay::DelayNs for Delay {
    fn delay_ns(&mut self, ns: u32) {
        let end = ticks() + u64::from(ns) * u64::from(CLOCK_HZ) / 1_000_000_000;
        while ticks() < end {}
    }
}

/// SysTick wraps (every 2^24 ticks).
static WRAPS: AtomicU32 = AtomicU32::new(0);

/// Starts SysTick on the core clock as a free-running 24-bit counter with a wrap
/// interrupt. Call after the board set its clocks.
pub fn start_ticks(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(0x00FF_FFFF);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Call from the SysTick exception handler.
pub fn on_systick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Core clock ticks since [`start_ticks`].
pub fn ticks() -> u64 {
    cortex_m::interrupt::free(|_| {
        let mut hi = WRAPS.load(Ordering::Relaxed);
        let mut v = SYST::get_current();
        // A wrap not yet handled: count it (and re-read the counter after it).
        if cortex_m::peripheral::SCB::is_pendst_pending() {
            hi += 1;
            v = SYST::get_current();
        }
        (u64::from(hi) << 24) + u64::from((0x0100_0000 - v) & 0x00FF_FFFF)
    })
}

/// Ends the program under a debugger or emulator with `code` as its exit status
/// (semihosting `SYS_EXIT_EXTENDED`: QEMU with `-semihosting-config enable=on`, or
/// `probe-rs run`).
pub fn semihosting_exit(code: u32) -> ! {
    const SYS_EXIT_EXTENDED: usize = 0x20;
    const ADP_STOPPED_APPLICATION_EXIT: usize = 0x20026;
    let block = [ADP_STOPPED_APPLICATION_EXIT, code as usize];
    // SAFETY: a semihosting call with a valid parameter block that outlives it; the
    // callers make sure a debugger or emulator is there to answer it.
    unsafe {
        cortex_m_semihosting::syscall(SYS_EXIT_EXTENDED, &block);
    }
    loop {
        cortex_m::asm::bkpt();
    }
}

extern "C" {
    static __sidata: u32;
    static __sdata: u32;
    static __edata: u32;
    static __ebss: u32;
    static _stack_start: u32;
}

fn symbol(s: *const u32) -> usize {
    s as usize
}

/// Flash bytes used: code, constants (the model, the self-test images) and the
/// initial values of `.data`, counted from the start of the address space (boards whose
/// flash starts elsewhere subtract their origin: see `board::FLASH_ORIGIN`).
pub fn flash_used() -> usize {
    // Only the addresses of linker symbols are taken, never their contents.
    let (sidata, sdata, edata) = (addr_of!(__sidata), addr_of!(__sdata), addr_of!(__edata));
    symbol(sidata) - crate::board::FLASH_ORIGIN + (symbol(edata) - symbol(sdata))
}

/// RAM bytes taken by statics (`.data` and `.bss`).
pub fn static_ram() -> usize {
    let (sdata, ebss) = (addr_of!(__sdata), addr_of!(__ebss));
    symbol(ebss) - symbol(sdata)
}

/// Total RAM (the region `memory.x` gives).
pub fn ram_size() -> usize {
    let (sdata, top) = (addr_of!(__sdata), addr_of!(_stack_start));
    symbol(top) - symbol(sdata)
}

const PAINT: u32 = 0x5A5A_A5A5;

/// Fills the unused stack (between the statics and a margin below the current stack
/// pointer) with a pattern, so [`stack_high_water`] can see how deep it was used.
pub fn paint_stack() {
    let low = symbol(addr_of!(__ebss));
    let sp = cortex_m::register::msp::read() as usize;
    let high = sp.saturating_sub(64) & !3;
    let mut p = low;
    while p < high {
        // SAFETY: [__ebss, sp - 64) is RAM that no static and no live stack frame
        // occupies (the stack grows down from above `sp`), and `p` is 4-aligned.
        unsafe { write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Deepest stack use since [`paint_stack`], in bytes below the top of RAM.
pub fn stack_high_water() -> usize {
    let (low, top) = (symbol(addr_of!(__ebss)), symbol(addr_of!(_stack_start)));
    let mut p = low;
    // SAFETY: reads 4-aligned words of the RAM region painted above.
    while p < top && unsafe { read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top - p
}
