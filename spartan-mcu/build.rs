//! Firmware build (a board feature only): places the board's memory map
//! (`memory/<board>.x`, as `memory.x`) for the linker, embeds
//! the int8 model and the self-test images, and computes on the host — with the same
//! `spartan-core` code — the logits the device must reproduce bit for bit.
//!
//! Environment: `SPARTAN_MODEL` (int8 model file, default
//! `models/candidate-c.int8.spartan`), `SPARTAN_SELFTEST_IMAGES` (default 500, the
//! first MNIST test images from `data/mnist-subset/`).

use std::io::Read;
use std::path::{Path, PathBuf};

fn gunzip(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    out
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=memory");
    println!("cargo:rerun-if-env-changed=SPARTAN_MODEL");
    println!("cargo:rerun-if-env-changed=SPARTAN_SELFTEST_IMAGES");
    if std::env::var_os("CARGO_FEATURE_RUNTIME").is_none() {
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    // The board features of Cargo.toml (src/board/mod.rs rejects more than one).
    let board = if std::env::var_os("CARGO_FEATURE_BLACKPILL_F411").is_some() {
        "blackpill-f411"
    } else {
        "mps2-an386"
    };
    let memory = manifest.join("memory").join(format!("{board}.x"));
    std::fs::copy(&memory, out.join("memory.x"))
        .unwrap_or_else(|e| panic!("{}: {e}", memory.display()));
    println!("cargo:rustc-link-search={}", out.display());

    let model_path = std::env::var_os("SPARTAN_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../models/candidate-c.int8.spartan"));
    println!("cargo:rerun-if-changed={}", model_path.display());
    let model_bytes =
        std::fs::read(&model_path).unwrap_or_else(|e| panic!("{}: {e}", model_path.display()));
    let model = spartan_core::int8::Int8Model::load(&model_bytes)
        .unwrap_or_else(|e| panic!("{}: not a valid int8 model: {e}", model_path.display()));
    std::fs::write(out.join("model.spartan"), &model_bytes).expect("write model");

    let n: usize = std::env::var("SPARTAN_SELFTEST_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let data = manifest.join("../data/mnist-subset");
    let images = gunzip(&data.join("t10k-images-idx3-ubyte.gz"));
    let labels = gunzip(&data.join("t10k-labels-idx1-ubyte.gz"));
    println!("cargo:rerun-if-changed={}", data.display());
    let len = model.input_len();
    let available = (images.len() - 16) / len;
    let n = n.min(available).min(labels.len() - 8);
    let images = &images[16..16 + n * len];
    let labels = &labels[8..8 + n];
    let mut arena = vec![0u8; model.arena_len()];
    let mut logits = vec![0i8; model.classes()];
    let mut expected = Vec::with_capacity(n * model.classes());
    let mut correct = 0;
    for (img, &label) in images.chunks(len).zip(labels) {
        let class = model
            .infer(img, &mut arena, &mut logits)
            .expect("host inference");
        correct += usize::from(class == label as usize);
        expected.extend(logits.iter().map(|&l| l as u8));
    }
    std::fs::write(out.join("images.bin"), images).expect("write images");
    std::fs::write(out.join("labels.bin"), labels).expect("write labels");
    std::fs::write(out.join("expected-logits.bin"), &expected).expect("write logits");
    let config = format!(
        "/// Scratch bytes the embedded model needs.\npub const ARENA_BYTES: usize = {};\n\
         /// Self-test images embedded.\npub const SELFTEST_IMAGES: usize = {n};\n\
         /// Pixels per image.\npub const IMAGE_LEN: usize = {len};\n\
         /// Logits per image.\npub const CLASSES: usize = {};\n\
         /// Images the host's int8 path classifies correctly.\npub const HOST_CORRECT: usize = {correct};\n",
        model.arena_len(),
        model.classes()
    );
    std::fs::write(out.join("config.rs"), config).expect("write config");
}
