//! On-target self-test (QEMU `mps2-an386`, semihosting): classifies the test images
//! embedded in flash with the int8 model, and checks accuracy, bit-identical logits
//! against the host, and the RAM budget; reports instructions per inference in total
//! and per pipeline stage (layer). Prints `N passed, M failed` and exits with status 0
//! only if nothing failed.
#![no_std]
#![no_main]

use cortex_m::peripheral::SYST;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::hio::{self, HostStream};
use spartan_core::int8::{Int8Model, Probe};
use spartan_core::spec::{LayerSpec, MAX_LAYERS};
use spartan_mcu::board::{self, INSTRUCTIONS_PER_TICK};
use spartan_mcu::config::{self, ARENA_BYTES, CLASSES, IMAGE_LEN, SELFTEST_IMAGES};

/// The inference scratch, in `.bss` (no stack copy).
static mut ARENA: [u8; ARENA_BYTES] = [0; ARENA_BYTES];

/// RAM budget: many Cortex-M4 parts have 32 KiB (statics and stack together).
const RAM_BUDGET: u32 = 32 * 1024;
/// Stack budget (the high-water mark, model loading included).
const STACK_BUDGET: u32 = 4 * 1024;

#[exception]
fn SysTick() {
    board::on_systick();
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    Line::new().text("PANIC").end();
    board::exit(101)
}

/// One line of output on the semihosting console, written piece by piece: numbers are
/// formatted here rather than by `core::fmt`, which would take a tenth of the flash.
struct Line(Option<HostStream>);

impl Line {
    fn new() -> Self {
        Line(hio::hstdout().ok())
    }

    #[inline(never)]
    fn text(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    #[inline(never)]
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        if let Some(out) = self.0.as_mut() {
            let _ = out.write_all(b);
        }
        self
    }

    #[inline(never)]
    fn num(&mut self, n: u32) -> &mut Self {
        if n >= 10 {
            self.num(n / 10);
        }
        self.bytes(&[b'0' + (n % 10) as u8])
    }

    #[inline(never)]
    fn hex(&mut self, n: u32) -> &mut Self {
        self.text("0x");
        for shift in (0..8).rev() {
            let d = ((n >> (4 * shift)) & 0xF) as u8;
            self.bytes(&[if d < 10 { b'0' + d } else { b'a' + d - 10 }]);
        }
        self
    }

    /// `whole.hundredths` of `num / den` (`den > 0`).
    #[inline(never)]
    fn ratio(&mut self, num: u32, den: u32) -> &mut Self {
        let den = den.max(1);
        let (whole, rest) = (num / den, num % den);
        // rest < den ≤ 2^24 here (MACs, image counts), so rest · 100 fits.
        let cents = rest.saturating_mul(100) / den;
        self.num(whole)
            .text(if cents < 10 { ".0" } else { "." })
            .num(cents)
    }

    fn end(&mut self) {
        self.text("\n");
    }
}

/// The mean per image of a sum of SysTick ticks, in instructions.
fn per_image(ticks: u32) -> u32 {
    let n = SELFTEST_IMAGES.max(1) as u32;
    ticks / n * INSTRUCTIONS_PER_TICK as u32 + ticks % n * INSTRUCTIONS_PER_TICK as u32 / n
}

/// SysTick ticks spent in each pipeline stage (the last slot: the row loop between
/// stages). Reads the counter register only: a few instructions per call.
struct StageTicks {
    current: usize,
    last: u32,
    ticks: [u32; MAX_LAYERS + 1],
}

impl Probe for StageTicks {
    fn stage(&mut self, stage: Option<usize>) {
        let now = SYST::get_current();
        // SysTick counts down through 24 bits; no stage runs for 2^24 ticks.
        self.ticks[self.current] += self.last.wrapping_sub(now) & 0x00FF_FFFF;
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
    let Ok(model) = Int8Model::load_into(slot, config::MODEL) else {
        // The build script validated the same bytes: flash is corrupt.
        Line::new().text("model rejected").end();
        board::exit(3)
    };
    Line::new()
        .text("spartan self-test: int8 model ")
        .hex(model.crc())
        .text(" (")
        .num(config::MODEL.len() as u32)
        .text(" bytes), ")
        .num(SELFTEST_IMAGES as u32)
        .text(" images")
        .end();
    let (mut passed, mut failed) = (0u32, 0u32);
    let mut check = |ok: bool| if ok { passed += 1 } else { failed += 1 };
    let mut logits = [0i8; CLASSES];
    let (mut correct, mut differing, mut ticks) = (0u32, 0u32, 0u32);
    for i in 0..SELFTEST_IMAGES {
        let image = &config::IMAGES[i * IMAGE_LEN..(i + 1) * IMAGE_LEN];
        let t0 = board::ticks();
        let class = model.infer(image, arena, &mut logits);
        ticks += (board::ticks() - t0) as u32;
        let Ok(class) = class else {
            check(false);
            continue;
        };
        correct += u32::from(class == usize::from(config::LABELS[i]));
        let expected = &config::EXPECTED_LOGITS[i * CLASSES..(i + 1) * CLASSES];
        let diff = logits
            .iter()
            .zip(expected)
            .filter(|(&a, &b)| a as u8 != b)
            .count() as u32;
        differing += diff;
        check(diff == 0);
    }
    let n = SELFTEST_IMAGES as u32;
    Line::new()
        .text("accuracy ")
        .ratio(correct * 100, n)
        .text("% (")
        .num(correct)
        .text("/")
        .num(n)
        .text("); host int8 path on the same images ")
        .num(config::HOST_CORRECT as u32)
        .text("/")
        .num(n)
        .end();
    check(correct == config::HOST_CORRECT as u32);
    Line::new()
        .text("logits differing from the host int8 path: ")
        .num(differing)
        .text(" of ")
        .num(n * CLASSES as u32)
        .end();
    Line::new()
        .text("instructions per inference: ")
        .num(per_image(ticks))
        .text(" (mean of ")
        .num(n)
        .text(", SysTick at -icount shift=0, +-40)")
        .end();
    per_stage(model, arena, &mut logits);
    let stack = board::stack_high_water() as u32;
    let statics = board::static_ram() as u32;
    let flash = board::flash_used() as u32;
    let images = config::IMAGES.len() as u32;
    let data = images + (config::LABELS.len() + config::EXPECTED_LOGITS.len()) as u32;
    Line::new()
        .text("flash used: ")
        .num(flash)
        .text(" bytes (model ")
        .num(config::MODEL.len() as u32)
        .text(", self-test images ")
        .num(images)
        .text("); without the images ")
        .num(flash - images)
        .text(", without any self-test data ")
        .num(flash - data)
        .end();
    Line::new()
        .text("RAM: statics ")
        .num(statics)
        .text(" (arena ")
        .num(ARENA_BYTES as u32)
        .text(") + stack high-water ")
        .num(stack)
        .text(" (budget ")
        .num(STACK_BUDGET)
        .text(") = ")
        .num(statics + stack)
        .text(" bytes (budget ")
        .num(RAM_BUDGET)
        .text("; region ")
        .num(board::ram_size() as u32)
        .text(")")
        .end();
    check(stack <= STACK_BUDGET);
    check(statics + stack <= RAM_BUDGET);
    Line::new()
        .num(passed)
        .text(" passed, ")
        .num(failed)
        .text(" failed")
        .end();
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
    Line::new()
        .text("per stage (mean per inference; instructions, multiply-adds, instructions/MAC):")
        .end();
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
        let mut line = Line::new();
        line.text("  layers ")
            .num(layers.start as u32)
            .text("-")
            .num(layers.end as u32 - 1)
            .text(" ")
            .text(name(&spec.layers[layers.start]))
            .text(if layers.len() > 1 { " + maxpool" } else { "" })
            .text(" -> ")
            .num(out.height.into())
            .text("x")
            .num(out.width.into())
            .text("x")
            .num(out.channels.into())
            .text(": ")
            .num(instructions)
            .text(" instructions, ")
            .num(macs as u32)
            .text(" MACs");
        if macs > 0 {
            line.text(", ")
                .ratio(instructions, macs as u32)
                .text(" instr/MAC");
        }
        line.end();
    }
    let rows = per_image(probe.ticks[MAX_LAYERS]);
    Line::new()
        .text("  row loop and calls: ")
        .num(rows)
        .text(" instructions; stages + loop: ")
        .num(total + rows)
        .end();
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
