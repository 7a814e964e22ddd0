//! On-target self-test (QEMU `mps2-an386`, semihosting): classifies the test images
//! embedded in flash with the int8 model, and checks accuracy, bit-identical logits
//! against the host, and the RAM budget. Prints `N passed, M failed` and exits with
//! status 0 only if nothing failed.
#![no_std]
#![no_main]

use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::hprintln;
use spartan_core::int8::Int8Model;
use spartan_mcu::board::{self, INSTRUCTIONS_PER_TICK};
use spartan_mcu::config::{self, ARENA_BYTES, CLASSES, IMAGE_LEN, SELFTEST_IMAGES};

/// The inference scratch, in `.bss` (no stack copy).
static mut ARENA: [u8; ARENA_BYTES] = [0; ARENA_BYTES];

/// RAM budget of the product (docs/performance.md, targets).
const RAM_BUDGET: usize = 64 * 1024;

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
    let Some(cp) = cortex_m::Peripherals::take() else {
        board::exit(2)
    };
    board::start_ticks(cp.SYST);
    board::paint_stack();
    // The only reference to ARENA ever made.
    #[allow(unsafe_code)]
    // SAFETY: `main` runs once and never returns; no other code touches ARENA.
    let arena: &mut [u8] = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    let model = match Int8Model::load(config::MODEL) {
        Ok(m) => m,
        Err(e) => {
            hprintln!("model rejected: {}", e);
            board::exit(3)
        }
    };
    hprintln!(
        "spartan self-test: int8 model {:#010x} ({} bytes), {} images",
        model.crc(),
        config::MODEL.len(),
        SELFTEST_IMAGES
    );
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut check = |ok: bool| if ok { passed += 1 } else { failed += 1 };
    let mut logits = [0i8; CLASSES];
    let (mut correct, mut differing, mut ticks) = (0usize, 0usize, 0u64);
    for i in 0..SELFTEST_IMAGES {
        let image = &config::IMAGES[i * IMAGE_LEN..(i + 1) * IMAGE_LEN];
        let t0 = board::ticks();
        let class = model.infer(image, arena, &mut logits);
        ticks += board::ticks() - t0;
        let Ok(class) = class else {
            check(false);
            continue;
        };
        correct += usize::from(class == usize::from(config::LABELS[i]));
        let expected = &config::EXPECTED_LOGITS[i * CLASSES..(i + 1) * CLASSES];
        let diff = logits
            .iter()
            .zip(expected)
            .filter(|(&a, &b)| a as u8 != b)
            .count();
        differing += diff;
        check(diff == 0);
    }
    let n = SELFTEST_IMAGES.max(1);
    hprintln!(
        "accuracy {}.{:02}% ({}/{}); host int8 path on the same images {}/{}",
        correct * 100 / n,
        correct * 10_000 / n % 100,
        correct,
        SELFTEST_IMAGES,
        config::HOST_CORRECT,
        SELFTEST_IMAGES
    );
    check(correct == config::HOST_CORRECT);
    hprintln!(
        "logits differing from the host int8 path: {} of {}",
        differing,
        SELFTEST_IMAGES * CLASSES
    );
    let instructions = ticks * INSTRUCTIONS_PER_TICK / n as u64;
    hprintln!(
        "instructions per inference: {} (mean of {}, SysTick at -icount shift=0, ±40)",
        instructions,
        SELFTEST_IMAGES
    );
    let stack = board::stack_high_water();
    let ram = board::static_ram() + stack;
    hprintln!(
        "flash used: {} bytes (model {}, self-test images {}); RAM: statics {} (arena {}) + stack high-water {} = {} bytes of {} (budget {})",
        board::flash_used(),
        config::MODEL.len(),
        config::IMAGES.len(),
        board::static_ram(),
        ARENA_BYTES,
        stack,
        ram,
        board::ram_size(),
        RAM_BUDGET
    );
    check(ram <= RAM_BUDGET);
    hprintln!("{} passed, {} failed", passed, failed);
    board::exit(if failed == 0 { 0 } else { 1 })
}
