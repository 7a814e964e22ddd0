//! Int8 model files: corrupt or inconsistent ones are rejected with typed errors and
//! never panic; the committed model round-trips.

mod common;

use common::Rng;
use spartan_core::activation::Activation;
use spartan_core::format::{write_into, DType, ModelBody, ModelFile, ModelKind, TensorRef};
use spartan_core::int8::Int8Model;
use spartan_core::spec::{ArchSpec, DenseSpec, LayerSpec, Shape};
use spartan_core::Error;

fn committed() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/candidate-c.int8.spartan"
    ))
    .unwrap()
}

/// Re-encodes `bytes` after `edit` changed its body (the CRC is recomputed, so only
/// validation can catch the change).
fn reencode(bytes: &[u8], edit: impl FnOnce(&mut ModelBody<'_>, &mut Vec<Vec<u8>>)) -> Vec<u8> {
    let file = ModelFile::parse(bytes).unwrap();
    let mut body = file.body.clone();
    let mut owned: Vec<Vec<u8>> = body.tensors.iter().map(|t| t.data.to_vec()).collect();
    edit(&mut body, &mut owned);
    let mut tensors = heapless::Vec::new();
    for (t, data) in body.tensors.iter().zip(&owned) {
        tensors
            .push(TensorRef::new(t.dtype, &t.dims, data))
            .unwrap();
    }
    let body = ModelBody {
        spec: body.spec.clone(),
        tensors,
    };
    let mut out = vec![0u8; bytes.len() * 2 + 4096];
    let n = write_into(ModelKind::Int8, &body, &mut out).unwrap();
    out.truncate(n);
    out
}

fn err(bytes: &[u8]) -> Error {
    match Int8Model::load(bytes) {
        Ok(_) => panic!("a corrupt int8 model was accepted"),
        Err(e) => e,
    }
}

#[test]
fn committed_model_loads_within_the_paper_budget() {
    let bytes = committed();
    let m = Int8Model::load(&bytes).unwrap();
    // docs/performance.md, targets: weights ≤ 64 KiB of flash, arena ≤ 48 KiB of RAM.
    assert!(bytes.len() <= 64 * 1024, "{} bytes", bytes.len());
    assert!(m.arena_len() <= 48 * 1024, "{} bytes", m.arena_len());
    assert_eq!(reencode(&bytes, |_, _| {}), bytes);
}

#[test]
fn truncations_and_bit_flips_are_rejected() {
    let bytes = committed();
    for n in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
        assert!(matches!(
            err(&bytes[..n]),
            Error::Truncated { .. } | Error::BadMagic
        ));
    }
    let mut rng = Rng(0xf11b);
    for _ in 0..10_000 {
        let mut c = bytes.clone();
        let bit = (rng.next_u64() % (c.len() as u64 * 8)) as usize;
        c[bit / 8] ^= 1 << (bit % 8);
        let _ = err(&c);
    }
}

#[test]
fn inconsistent_quantisation_is_rejected() {
    let bytes = committed();
    // Tensors of candidate-c: [0] filter tables; conv1 = [1] weight [2] bias [3] requant [4] meta.
    let bad_multiplier = reencode(&bytes, |_, t| {
        t[3][0..4].copy_from_slice(&1234i32.to_le_bytes())
    });
    assert!(
        matches!(err(&bad_multiplier), Error::BadValue { tensor: 3, .. }),
        "{}",
        err(&bad_multiplier)
    );
    let bad_shift = reencode(&bytes, |_, t| {
        t[3][4..8].copy_from_slice(&77i32.to_le_bytes())
    });
    assert!(matches!(err(&bad_shift), Error::BadValue { tensor: 3, .. }));
    let bad_zp_in = reencode(&bytes, |_, t| {
        t[4][0..4].copy_from_slice(&3i32.to_le_bytes())
    });
    assert!(err(&bad_zp_in).to_string().contains("zero point"));
    let bad_zp_out = reencode(&bytes, |_, t| {
        t[4][4..8].copy_from_slice(&300i32.to_le_bytes())
    });
    assert!(err(&bad_zp_out).to_string().contains("zero point"));
    let reserved = reencode(&bytes, |_, t| t[4][12] = 1);
    assert!(matches!(err(&reserved), Error::BadValue { tensor: 4, .. }));
    let wrong_dtype = reencode(&bytes, |b, _| b.tensors[2].dtype = DType::F32);
    assert!(matches!(
        err(&wrong_dtype),
        Error::TensorMismatch { tensor: 2, .. }
    ));
    let f32_kind = {
        let mut c = reencode(&bytes, |_, _| {});
        c[6] = 0;
        let n = c.len();
        let crc = spartan_core::format::crc32(&c[..n - 4]);
        c[n - 4..].copy_from_slice(&crc.to_le_bytes());
        c
    };
    assert!(matches!(err(&f32_kind), Error::WrongKind { .. }));
}

/// A dense layer whose accumulator could overflow i32 is refused before any inference.
#[test]
fn layers_that_could_overflow_are_rejected() {
    // 131,072 inputs × 128 × 255 exceeds i32::MAX.
    let n_in = 256u32 * 256 * 2;
    let spec = ArchSpec {
        input: Shape::new(256, 256, 2),
        layers: [LayerSpec::Dense(DenseSpec {
            units: 2,
            activation: Activation::Linear,
        })]
        .into_iter()
        .collect(),
    };
    let w = vec![0u8; (n_in * 2) as usize];
    let bias = vec![0u8; 8];
    let req = [(1i32 << 30).to_le_bytes(), 0i32.to_le_bytes()]
        .concat()
        .repeat(2);
    let meta = [0i32, 0, 0, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>();
    let tensors = [
        TensorRef::new(DType::I8, &[2, n_in], &w),
        TensorRef::new(DType::I32, &[2], &bias),
        TensorRef::new(DType::I32, &[2, 2], &req),
        TensorRef::new(DType::I32, &[4], &meta),
    ];
    let body = ModelBody {
        spec,
        tensors: tensors.into_iter().collect(),
    };
    let mut out = vec![0u8; w.len() + 4096];
    let n = write_into(ModelKind::Int8, &body, &mut out).unwrap();
    let e = err(&out[..n]);
    assert!(e.to_string().contains("overflow"), "{e}");
}

#[test]
fn inference_checks_its_buffers() {
    let bytes = committed();
    let m = Int8Model::load(&bytes).unwrap();
    let img = vec![0u8; m.input_len()];
    let mut logits = vec![0i8; m.classes()];
    let mut small = vec![0u8; m.arena_len() - 1];
    assert!(matches!(
        m.infer(&img, &mut small, &mut logits),
        Err(Error::BufferSize { .. })
    ));
    let mut arena = vec![0u8; m.arena_len()];
    assert!(m.infer(&img[1..], &mut arena, &mut logits).is_err());
    assert!(m.infer(&img, &mut arena, &mut logits[1..]).is_err());
    // Garbage in the arena does not change results.
    let mut dirty = vec![0xA5u8; m.arena_len()];
    let mut l2 = logits.clone();
    m.infer(&img, &mut arena, &mut logits).unwrap();
    m.infer(&img, &mut dirty, &mut l2).unwrap();
    assert_eq!(logits, l2);
}
