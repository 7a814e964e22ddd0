//! Board support for QEMU's `mps2-an386` (Cortex-M4F): the CMSDK UART0, the FPGAIO
//! LEDs, a SysTick tick counter, semihosting exit, and memory accounting.
//!
//! The only module with `unsafe`: memory-mapped registers, linker symbols and the
//! semihosting call cannot be reached otherwise. Each use says why it is sound.
#![allow(unsafe_code)]

use core::convert::Infallible;
use core::ptr::{addr_of, read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;

/// UART0 of the AN386 (QEMU's first `-serial`).
const UART0: usize = 0x4000_4000;
/// FPGAIO LED register (bit 0 = LED0).
const FPGAIO_LED: usize = 0x4002_8000;
/// SysTick is clocked at the board's 25 MHz.
pub const CLOCK_HZ: u32 = 25_000_000;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;
const TX_FULL: u32 = 1;
const RX_FULL: u32 = 2;

fn reg_read(addr: usize) -> u32 {
    // SAFETY: `addr` is one of this board's peripheral registers (constants above),
    // always mapped, and a volatile 32-bit read has no side effect beyond the device's.
    unsafe { read_volatile(addr as *const u32) }
}

fn reg_write(addr: usize, v: u32) {
    // SAFETY: as in `reg_read`; the register accepts any 32-bit value.
    unsafe { write_volatile(addr as *mut u32, v) }
}

static UART_TAKEN: AtomicBool = AtomicBool::new(false);

/// The CMSDK APB UART0, polled (QEMU gives it no FIFO: one byte each way).
pub struct Uart(());

impl Uart {
    /// Takes UART0 (once) and enables it at 115,200 baud.
    pub fn take() -> Option<Self> {
        if UART_TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        reg_write(UART0 + BAUDDIV, CLOCK_HZ / 115_200);
        reg_write(UART0 + CTRL, 0b11); // TX and RX enable
        Some(Uart(()))
    }

    fn can_write() -> bool {
        reg_read(UART0 + STATE) & TX_FULL == 0
    }

    fn can_read() -> bool {
        reg_read(UART0 + STATE) & RX_FULL != 0
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = Infallible;
}

impl embedded_io::Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let mut n = 0;
        while n < buf.len() {
            if Self::can_read() {
                buf[n] = reg_read(UART0 + DATA) as u8;
                n += 1;
            } else if n > 0 {
                break;
            }
        }
        Ok(n)
    }
}

impl embedded_io::ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(Self::can_read())
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            while !Self::can_write() {}
            reg_write(UART0 + DATA, u32::from(b));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        while !Self::can_write() {}
        Ok(())
    }
}

/// LED0 of the FPGAIO block.
pub struct Led;

impl embedded_hal::digital::ErrorType for Led {
    type Error = Infallible;
}

impl embedded_hal::digital::OutputPin for Led {
    fn set_low(&mut self) -> Result<(), Infallible> {
        reg_write(FPGAIO_LED, reg_read(FPGAIO_LED) & !1);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        reg_write(FPGAIO_LED, reg_read(FPGAIO_LED) | 1);
        Ok(())
    }
}

impl embedded_hal::digital::StatefulOutputPin for Led {
    fn is_set_high(&mut self) -> Result<bool, Infallible> {
        Ok(reg_read(FPGAIO_LED) & 1 == 1)
    }

    fn is_set_low(&mut self) -> Result<bool, Infallible> {
        Ok(reg_read(FPGAIO_LED) & 1 == 0)
    }
}

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

/// Starts SysTick as a free-running 24-bit counter with a wrap interrupt.
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

/// Ticks since [`start_ticks`]. Under QEMU with `-icount shift=0` one tick is exactly
/// 40 instructions (1 ns per instruction, 25 MHz clock): a deterministic count.
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

/// Instructions per tick at `-icount shift=0`.
pub const INSTRUCTIONS_PER_TICK: u64 = 40;

/// Ends the QEMU process with `code` as its exit status (semihosting
/// `SYS_EXIT_EXTENDED`; needs `-semihosting-config enable=on`).
pub fn exit(code: u32) -> ! {
    const SYS_EXIT_EXTENDED: usize = 0x20;
    const ADP_STOPPED_APPLICATION_EXIT: usize = 0x20026;
    let block = [ADP_STOPPED_APPLICATION_EXIT, code as usize];
    // SAFETY: a semihosting call with a valid parameter block that outlives it; under
    // QEMU with semihosting enabled it terminates the emulator.
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
/// initial values of `.data`.
pub fn flash_used() -> usize {
    // Only the addresses of linker symbols are taken, never their contents.
    let (sidata, sdata, edata) = (addr_of!(__sidata), addr_of!(__sdata), addr_of!(__edata));
    symbol(sidata) + (symbol(edata) - symbol(sdata))
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
