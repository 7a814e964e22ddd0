//! Board support for the WeAct STM32F411CEU6 "Black Pill" (Cortex-M4F at 100 MHz from
//! its 25 MHz crystal; 512 KiB flash, 128 KiB RAM): USART1 on PA9 (TX) and PA10 (RX)
//! at 115,200 baud 8N1 for a 3.3 V USB-serial adapter, and the blue LED on PC13.
//! Memory map: `memory/blackpill-f411.x`. Flash and debug it over SWD with probe-rs.

use stm32f4xx_hal::gpio::{Output, PushPull, PC13};
use stm32f4xx_hal::prelude::_embedded_hal_serial_nb_Write as NbWrite;
use stm32f4xx_hal::serial::{Error, Serial};
use stm32f4xx_hal::{nb, pac, prelude::*, rcc::Config};

/// The core (and SysTick) clock.
pub const CLOCK_HZ: u32 = 100_000_000;
/// Where the STM32's flash starts.
pub const FLASH_ORIGIN: usize = 0x0800_0000;
/// The crystal on the board.
const HSE_HZ: u32 = 25_000_000;
/// The link's speed (the host's `spartan device --baud` default).
const BAUD: u32 = 115_200;

/// USART1 as `embedded_io`'s blocking byte stream (the HAL's `Serial` gives non-blocking
/// `embedded-hal-nb` byte access; the driver wants `Read + ReadReady + Write`).
pub struct Uart(Serial<pac::USART1>);

impl embedded_io::ErrorType for Uart {
    type Error = Error;
}

impl embedded_io::Read for Uart {
    /// Waits for one byte, then takes what else is already there. A line error after
    /// the first byte ends the read early: the lost byte breaks its frame, which the
    /// protocol's CRC reports.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let Some(first) = buf.first_mut() else {
            return Ok(0);
        };
        *first = nb::block!(self.0.read())?;
        let mut n = 1;
        while let Some(slot) = buf.get_mut(n) {
            match self.0.read() {
                Ok(b) => *slot = b,
                Err(_) => break,
            }
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Error> {
        Ok(self.0.is_rx_not_empty())
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        for &b in buf {
            nb::block!(NbWrite::write(&mut self.0, b))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Error> {
        nb::block!(NbWrite::flush(&mut self.0))
    }
}

/// The blue LED (PC13, lit when low: toggling is all the driver does).
pub type Led = PC13<Output<PushPull>>;

/// The board's peripherals as the serving firmware uses them.
pub struct Board {
    /// USART1 (PA9 TX, PA10 RX) at 115,200 baud.
    pub uart: Uart,
    /// The blue LED.
    pub led: Led,
}

/// Takes the peripherals (once), runs the core at [`CLOCK_HZ`] from the crystal, and
/// sets up the UART and the LED.
pub fn take() -> Option<Board> {
    let dp = pac::Peripherals::take()?;
    let mut rcc = dp
        .RCC
        .freeze(Config::hse(HSE_HZ.Hz()).sysclk(CLOCK_HZ.Hz()));
    let gpioa = dp.GPIOA.split(&mut rcc);
    let gpioc = dp.GPIOC.split(&mut rcc);
    let serial = dp
        .USART1
        .serial((gpioa.pa9, gpioa.pa10), BAUD.bps(), &mut rcc)
        .ok()?;
    Some(Board {
        uart: Uart(serial),
        led: gpioc.pc13.into_push_pull_output(),
    })
}

/// Prints to the debugger's console (semihosting) when one is attached (`probe-rs
/// run`); without one a semihosting call would stop the core, so nothing is printed.
pub fn log(args: core::fmt::Arguments<'_>) {
    if cortex_m::peripheral::DCB::is_debugger_attached() {
        cortex_m_semihosting::hprintln!("{}", args);
    }
}

/// Ends the program: under a debugger, with `code` as its exit status; standalone, by
/// sleeping for ever (there is nobody to report to).
pub fn exit(code: u32) -> ! {
    if cortex_m::peripheral::DCB::is_debugger_attached() {
        crate::cortex::semihosting_exit(code)
    }
    loop {
        cortex_m::asm::wfi();
    }
}
