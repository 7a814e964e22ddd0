//! Board support for QEMU's `mps2-an386` (Cortex-M4F): the CMSDK UART0, the FPGAIO
//! LEDs, the clock, and semihosting (console and exit). Memory map:
//! `memory/mps2-an386.x`.
//!
//! `unsafe` here: memory-mapped registers cannot be reached otherwise. Each use says why it is sound.
#![allow(unsafe_code)]

use core::convert::Infallible;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, Ordering};

/// UART0 of the AN386 (QEMU's first `-serial`).
const UART0: usize = 0x4000_4000;
/// FPGAIO LED register (bit 0 = LED0).
const FPGAIO_LED: usize = 0x4002_8000;
/// The core (and SysTick) clock: the board's fixed 25 MHz.
pub const CLOCK_HZ: u32 = 25_000_000;
/// Where flash (QEMU's boot SSRAM) starts.
pub const FLASH_ORIGIN: usize = 0x0000_0000;

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

/// Instructions per tick at `-icount shift=0`: one instruction per virtual ns and a
/// 25 MHz clock make one tick exactly 40 instructions, a deterministic count.
pub const INSTRUCTIONS_PER_TICK: u64 = 40;

/// Ends the QEMU process with `code` as its exit status (needs
/// `-semihosting-config enable=on`).
pub fn exit(code: u32) -> ! {
    crate::cortex::semihosting_exit(code)
}

/// The board's peripherals as the serving firmware uses them.
pub struct Board {
    /// UART0 at 115,200 baud.
    pub uart: Uart,
    /// LED0.
    pub led: Led,
}

/// Takes the peripherals (once). The clock needs no setting up.
pub fn take() -> Option<Board> {
    Some(Board {
        uart: Uart::take()?,
        led: Led,
    })
}

/// Prints to QEMU's console (semihosting, which `-semihosting-config enable=on` gives).
pub fn log(args: core::fmt::Arguments<'_>) {
    cortex_m_semihosting::hprintln!("{}", args);
}
