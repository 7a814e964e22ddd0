//! Shared helpers for spartan-core's integration tests: deterministic weights and
//! model files built from a spec.
#![allow(dead_code)]

use spartan_core::format::{write_into, DType, ModelBody, ModelKind, TensorRef};
use spartan_core::spec::ArchSpec;

/// xorshift64*: a tiny seeded generator so tests need no extra dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// Random weights for every tensor of `spec`, scaled like He init so activations stay
/// in a sensible range through the paper's network.
pub fn random_weights(spec: &ArchSpec, rng: &mut Rng) -> Vec<(Vec<u32>, Vec<f32>)> {
    let shapes = spec.shapes().expect("valid spec");
    let mut out = Vec::new();
    for (layer, &input) in spec.layers.iter().zip(shapes.iter()) {
        let p = layer.params(input);
        for (which, shape) in [(0, p.weight), (1, p.bias)] {
            let Some(shape) = shape else { continue };
            let fan_in = if shape.rank > 1 {
                shape.dims()[..shape.rank as usize - 1]
                    .iter()
                    .product::<u32>()
                    .max(1) as f32
            } else {
                1.0
            };
            let scale = if which == 0 {
                (6.0 / fan_in).sqrt()
            } else {
                0.3
            };
            let vals = (0..shape.len())
                .map(|_| rng.uniform(-scale, scale))
                .collect();
            out.push((shape.dims().to_vec(), vals));
        }
    }
    out
}

/// Little-endian bytes of a float vector.
pub fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Encodes an f32 model file for `spec` with the given tensors.
pub fn encode_f32(spec: &ArchSpec, tensors: &[(Vec<u32>, Vec<f32>)]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, v)| le_bytes(v)).collect();
    let mut refs = heapless::Vec::new();
    for ((dims, _), b) in tensors.iter().zip(&bytes) {
        refs.push(TensorRef::new(DType::F32, dims, b))
            .expect("few tensors");
    }
    let body = ModelBody {
        spec: spec.clone(),
        tensors: refs,
    };
    let mut buf = vec![0u8; 16 + bytes.iter().map(|b| b.len() + 32).sum::<usize>() + 4096];
    let n = write_into(ModelKind::F32, &body, &mut buf).expect("fits");
    buf.truncate(n);
    buf
}
