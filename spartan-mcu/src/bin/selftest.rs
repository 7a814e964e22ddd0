//! On-target self-test (QEMU `mps2-an386`, semihosting): classifies the test images
//! embedded in flash with the int8 model, and checks accuracy, bit-identical logits
//! against the host, and the RAM budget; reports instructions per inference in total
//! and per pipeline stage (layer). Prints `N passed, M failed` and exits with status 0
//! only if nothing failed.
#![no_std]
#![no_main]

use cortex_m::peripheral::SYST;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::hprintln;
use spartan_core::int8::{Int8Model, Probe};
use spartan_core::spec::{LayerSpec, MAX_LAYERS};
use spartan_mcu::board::{self, INSTRUCTIONS_PER_TICK};
use spartan_mcu::config::{self, ARENA_BYTES, CLASSES, IMAGE_LEN, SELFTEST_IMAGES};

/// The inference scratch, in `.bss` (no stack copy).
static mut ARENA: [u8; ARENA_BYTES] = [0; ARENA_BYTES];

/// RAM budget: many Cortex-M4 parts have 32 KiB (statics and stack together).
const RAM_BUDGET: usize = 32 * 1024;
/// Stack budget (the high-water mark, model loading included).
const STACK_BUDGET: usize = 4 * 1024;

#[exception]
fn SysTick() {
    board::on_systick();
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    hprintln!("PANIC");
    board::exit(101)
}

/// SysTick ticks spent in each pipeline stage (the last slot: the row loop between
/// stages). Reads the counter register only: a few instructions per call.
struct StageTicks {
    current: usize,
    last: u32,
    ticks: [u64; MAX_LAYERS + 1],
}

impl Probe for StageTicks {
    fn stage(&mut self, stage: Option<usize>) {
        let now = SYST::get_current();
        // SysTick counts down through 24 bits; no stage runs for 2^24 ticks.
        self.ticks[self.current] += u64::from(self.last.wrapping_sub(now) & 0x00FF_FFFF);
        self.last = now;
        self.current = stage.unwrap_or(MAX_LAYERS);
    }
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
    // The model lives in a static too, built in place: it is the largest value the
    // firmware holds.
    let Some(slot) = cortex_m::singleton!(: Option<Int8Model<'static>> = None) else {
        board::exit(2)
    };
    let model = match Int8Model::load_into(slot, config::MODEL) {
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
    per_stage(model, arena, &mut logits);
    let stack = board::stack_high_water();
    let ram = board::static_ram() + stack;
    let data = config::IMAGES.len() + config::LABELS.len() + config::EXPECTED_LOGITS.len();
    hprintln!(
        "flash used: {} bytes (model {}, self-test images {}); without the images {}, without any self-test data {}",
        board::flash_used(),
        config::MODEL.len(),
        config::IMAGES.len(),
        board::flash_used() - config::IMAGES.len(),
        board::flash_used() - data
    );
    hprintln!(
        "RAM: statics {} (arena {}) + stack high-water {} (budget {}) = {} bytes (budget {}; region {})",
        board::static_ram(),
        ARENA_BYTES,
        stack,
        STACK_BUDGET,
        ram,
        RAM_BUDGET,
        board::ram_size()
    );
    check(stack <= STACK_BUDGET);
    check(ram <= RAM_BUDGET);
    hprintln!("{} passed, {} failed", passed, failed);
    board::exit(if failed == 0 { 0 } else { 1 })
}

/// Runs every image again with a probe, and prints instructions per stage (layer),
/// multiply-adds and instructions per multiply-add.
fn per_stage(model: &Int8Model<'_>, arena: &mut [u8], logits: &mut [i8]) {
    let mut probe = StageTicks {
        current: MAX_LAYERS,
        last: SYST::get_current(),
        ticks: [0; MAX_LAYERS + 1],
    };
    for image in config::IMAGES.chunks_exact(IMAGE_LEN) {
        probe.stage(None);
        let _ = model.infer_probed(image, arena, logits, &mut probe);
        probe.stage(Some(MAX_LAYERS));
    }
    let n = SELFTEST_IMAGES.max(1) as u64;
    let per_image = |t: u64| t * INSTRUCTIONS_PER_TICK / n;
    hprintln!("per stage (mean per inference; instructions, multiply-adds, instructions/MAC):");
    let (spec, shapes) = (model.spec(), model.shapes());
    let mut total = 0;
    for (s, layers) in model.stage_layers().enumerate() {
        let instructions = per_image(probe.ticks[s]);
        total += instructions;
        let macs: u64 = layers
            .clone()
            .map(|i| spec.layers[i].macs(shapes[i], shapes[i + 1]))
            .sum();
        let out = shapes[layers.end];
        hprintln!(
            "  layers {}-{} {}{} -> {}x{}x{}: {} instructions, {} MACs{}",
            layers.start,
            layers.end - 1,
            name(&spec.layers[layers.start]),
            if layers.len() > 1 { " + maxpool" } else { "" },
            out.height,
            out.width,
            out.channels,
            instructions,
            macs,
            PerMac(instructions, macs)
        );
    }
    let rows = per_image(probe.ticks[MAX_LAYERS]);
    hprintln!(
        "  row loop and calls: {} instructions; stages + loop: {}",
        rows,
        total + rows
    );
}

/// `, x.yy instr/MAC` (nothing without multiply-adds).
struct PerMac(u64, u64);

impl core::fmt::Display for PerMac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.1 == 0 {
            return Ok(());
        }
        let ratio = self.0 * 100 / self.1;
        write!(f, ", {}.{:02} instr/MAC", ratio / 100, ratio % 100)
    }
}

/// A layer's kind, briefly.
fn name(layer: &LayerSpec) -> &'static str {
    match layer {
        LayerSpec::Filter(_) => "filter",
        LayerSpec::Conv(_) => "conv",
        LayerSpec::MaxPool(_) => "maxpool",
        LayerSpec::Dense(_) => "dense",
    }
}
