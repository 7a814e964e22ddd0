#!/usr/bin/env bash
# The firmware on QEMU's mps2-an386 (Cortex-M4), end to end:
#  1. the on-target self-test (semihosting): accuracy, logits bit-identical to the host
#     int8 path, RAM budget, instructions per inference; ends "N passed, M failed";
#  2. the serving firmware on UART0, driven from the host by `spartan device --qemu`
#     over the framed protocol, compared logit for logit with the host.
# Exits non-zero if anything fails. Environment: SPARTAN_MODEL (int8 model to embed,
# default models/candidate-c.int8.spartan), SPARTAN_SELFTEST_IMAGES (default 500).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${SPARTAN_MODEL:-models/candidate-c.int8.spartan}
export SPARTAN_MODEL=$PWD/$model
[ -f "$SPARTAN_MODEL" ] || SPARTAN_MODEL=$model
target=thumbv7em-none-eabihf
cargo build -p spartan-mcu --profile firmware --target $target --features firmware --bins
cargo build -p spartan-train --release
bin=target/$target/firmware
echo "== self-test ($bin/spartan-selftest)"
# -icount shift=0: one instruction per virtual ns, so SysTick counts instructions.
timeout 1800 qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none \
  -serial null -semihosting-config enable=on,target=native -icount shift=0 \
  -kernel "$bin/spartan-selftest"
echo "== serving over UART0 ($bin/spartan-fw), driven by spartan device"
timeout 600 target/release/spartan --quiet device --qemu "$bin/spartan-fw" --images 100 --model "$SPARTAN_MODEL"
