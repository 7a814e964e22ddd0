#!/usr/bin/env bash
# Builds the firmware self-test for QEMU's mps2-an386 (Cortex-M4) and runs it.
# Prints the device's report, ending with "N passed, M failed"; exits non-zero if any
# check failed. Environment: SPARTAN_MODEL (int8 model to embed),
# SPARTAN_SELFTEST_IMAGES (default 500).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p spartan-mcu --release --target thumbv7em-none-eabihf --features firmware --bin spartan-selftest
elf=target/thumbv7em-none-eabihf/release/spartan-selftest
echo "firmware: $elf ($(stat -c %s "$elf") bytes ELF)"
# -icount shift=0: one instruction per virtual ns, so SysTick counts instructions.
timeout 1800 qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none \
  -serial null -semihosting-config enable=on,target=native -icount shift=0 -kernel "$elf"
