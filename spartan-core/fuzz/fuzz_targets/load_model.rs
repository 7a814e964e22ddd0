//! Arbitrary bytes as a model file, of either kind: loading must return `Err` or a
//! model that then runs inference without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spartan_core::float::F32Model;
use spartan_core::int8::Int8Model;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = F32Model::load(data) {
        // Keep the run cheap: only exercise inference for small networks.
        if model.arena_len() <= 1 << 16 && model.input_len() <= 1 << 12 {
            let input = vec![0.5; model.input_len()];
            let mut arena = vec![0.0; model.arena_len()];
            let mut logits = vec![0.0; model.classes()];
            let _ = model.infer(&input, &mut arena, &mut logits);
        }
    }
    if let Ok(model) = Int8Model::load(data) {
        if model.arena_len() <= 1 << 16 && model.input_len() <= 1 << 12 {
            let pixels: Vec<u8> = (0..model.input_len()).map(|i| (i * 37) as u8).collect();
            let mut arena = vec![0u8; model.arena_len()];
            let mut logits = vec![0i8; model.classes()];
            let _ = model.infer(&pixels, &mut arena, &mut logits);
        }
    }
});
