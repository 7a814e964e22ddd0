//! The model file: golden bytes, round trips, and corrupt inputs that must never panic.

mod common;

use common::{encode_f32, random_weights, Rng};
use spartan_core::activation::Activation;
use spartan_core::filter::{FilterKind, FilterSpec};
use spartan_core::float::F32Model;
use spartan_core::format::{ModelFile, ModelKind, HEADER_LEN, MAGIC};
use spartan_core::spec::{ArchSpec, DenseSpec, LayerSpec, NamedParams, Shape, NAMED_ARCHITECTURES};
use spartan_core::Error;

/// A 2×2 image, a Conv-Filtering layer (β = 2, HSAT), and a dense layer to 2 logits.
fn tiny_spec() -> ArchSpec {
    let mut layers = heapless::Vec::new();
    layers
        .push(LayerSpec::Filter(FilterSpec {
            kind: FilterKind::Conv,
            beta: 2,
            activation: Activation::Hsat,
            sf: 1e-5,
        }))
        .unwrap();
    layers
        .push(LayerSpec::Dense(DenseSpec {
            units: 2,
            activation: Activation::Linear,
        }))
        .unwrap();
    ArchSpec {
        input: Shape::new(2, 2, 1),
        layers,
    }
}

fn tiny_tensors() -> Vec<(Vec<u32>, Vec<f32>)> {
    vec![
        (vec![1, 2], vec![1.0, 1.0]),
        (vec![2], vec![-0.25, -0.75]),
        (vec![8, 2], (0..16).map(|i| i as f32 * 0.5 - 4.0).collect()),
        (vec![2], vec![0.5, -0.5]),
    ]
}

/// Produced by this code when the format was frozen (version 1; version 2 changed only
/// the version field, int8 weights being the change), then decoded by hand:
/// `53505254` "SPRT" · `0200` version 2 · `00` kind f32 · `00` reserved · `7a000000`
/// body length 122. Body (postcard): `020201` input 2×2×1 · `02` two layers ·
/// `00` Filter `00` conv `02` β `03` HSAT `acc52737` sf = 1e-5 · `03` Dense `02` units
/// `01` linear · `04` four tensors, each `00` (F32), dims count + dims, byte count, then
/// LE f32 bytes (`0000803f` = 1.0, `000080be` = -0.25, …). The CRC-32 trailer (last 4
/// bytes) is checked separately against an independent computation.
const TINY_GOLDEN: &str = "\
53505254020000007a0000000202010200000203acc527370302010400020102080000803f0000803f\
00010208000080be000040bf0002080240000080c0000060c0000040c0000020c0000000c00000c0bf\
000080bf000000bf000000000000003f0000803f0000c03f00000040000020400000404000006040\
000102080000003f000000bf";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn tiny_model_matches_golden_bytes() {
    let bytes = encode_f32(&tiny_spec(), &tiny_tensors());
    let got = hex(&bytes);
    let crc_hex = &got[got.len() - 8..];
    assert_eq!(
        &got[..got.len() - 8],
        TINY_GOLDEN,
        "format changed: bump FORMAT_VERSION and update docs/format.md"
    );
    // The CRC trailer is recomputed independently of the writer.
    let crc = spartan_core::format::crc32(&bytes[..bytes.len() - 4]);
    assert_eq!(crc_hex, hex(&crc.to_le_bytes()));
    let model = F32Model::load(&bytes).unwrap();
    // Pixel 0.5 crosses the first threshold (0.25) only: bits [1,0] at each pixel.
    let mut arena = vec![0.0; model.arena_len()];
    let mut logits = [0.0; 2];
    model.infer(&[0.5; 4], &mut arena, &mut logits).unwrap();
    // logit_j = b_j + Σ_{p} w[2p][j] (bit 0 set at each of the 4 pixels).
    let w = &tiny_tensors()[2].1;
    let want0 = 0.5 + (0..4).map(|p| w[4 * p]).sum::<f32>();
    let want1 = -0.5 + (0..4).map(|p| w[4 * p + 1]).sum::<f32>();
    assert_eq!(logits, [want0, want1]);
}

#[test]
fn every_named_architecture_round_trips() {
    for (seed, name) in NAMED_ARCHITECTURES.iter().enumerate() {
        let spec = ArchSpec::named(name, NamedParams::default()).unwrap();
        let tensors = random_weights(&spec, &mut Rng(seed as u64 + 11));
        let bytes = encode_f32(&spec, &tensors);
        let file = ModelFile::parse(&bytes).unwrap();
        assert_eq!(file.kind, ModelKind::F32);
        assert_eq!(file.body.spec, spec, "{name}");
        let model = F32Model::from_file(&file).unwrap();
        for (i, layer) in spec.layers.iter().enumerate() {
            let w = model.layer_weights(i).unwrap();
            let p = layer.params(model.shapes()[i]);
            assert_eq!(w.weight.len(), p.weight.map_or(0, |s| s.len()));
            assert_eq!(w.bias.len(), p.bias.map_or(0, |s| s.len()));
        }
        let all: Vec<f32> = (0..spec.layers.len())
            .flat_map(|i| {
                let w = model.layer_weights(i).unwrap();
                w.weight.iter().chain(w.bias.iter()).collect::<Vec<_>>()
            })
            .collect();
        let want: Vec<f32> = tensors.iter().flat_map(|(_, v)| v.clone()).collect();
        assert_eq!(
            all, want,
            "{name}: weights survive the round trip bit for bit"
        );
        // Re-encoding the parsed body gives the same bytes.
        assert_eq!(encode_f32(&spec, &tensors), bytes);
    }
}

fn load_err(bytes: &[u8]) -> Error {
    F32Model::load(bytes).expect_err("corrupt file must be rejected")
}

#[test]
fn every_truncation_is_rejected() {
    let spec = ArchSpec::named("candidate-c", NamedParams::default()).unwrap();
    let bytes = encode_f32(&spec, &random_weights(&spec, &mut Rng(3)));
    for n in 0..bytes.len() {
        let e = load_err(&bytes[..n]);
        assert!(
            matches!(e, Error::Truncated { .. } | Error::BadMagic),
            "length {n}: {e}"
        );
    }
    assert!(matches!(
        load_err(&[bytes.as_slice(), &[0]].concat()),
        Error::TrailingBytes { extra: 1 }
    ));
}

#[test]
fn random_bit_flips_are_rejected() {
    let spec = ArchSpec::named("candidate-b", NamedParams::default()).unwrap();
    let bytes = encode_f32(&spec, &random_weights(&spec, &mut Rng(5)));
    let mut rng = Rng(0xb17f_1195);
    for _ in 0..10_000 {
        let mut corrupt = bytes.clone();
        let bit = (rng.next_u64() % (bytes.len() as u64 * 8)) as usize;
        corrupt[bit / 8] ^= 1 << (bit % 8);
        // Every single-bit change is caught: by the magic, version, kind, length or the
        // CRC (which detects all single-bit errors).
        let _ = load_err(&corrupt);
    }
}

/// Version 2 changed only how int8 weights are laid out: f32 files of version 1 still
/// load, int8 files of version 1 are refused rather than misread.
#[test]
fn version_1_f32_files_load_and_version_1_int8_files_are_refused() {
    let resign = |mut b: Vec<u8>, version: u8, kind: u8| {
        b[4] = version;
        b[6] = kind;
        let n = b.len();
        let crc = spartan_core::format::crc32(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    };
    let bytes = encode_f32(&tiny_spec(), &tiny_tensors());
    let v1 = resign(bytes.clone(), 1, 0);
    assert_eq!(ModelFile::parse(&v1).unwrap().version, 1);
    assert!(F32Model::load(&v1).is_ok());
    assert_eq!(load_err(&resign(bytes, 1, 1)), Error::UnsupportedVersion(1));
}

#[test]
fn wrong_magic_and_version_are_named() {
    let spec = tiny_spec();
    let mut bytes = encode_f32(&spec, &tiny_tensors());
    bytes[4] = 9;
    assert_eq!(load_err(&bytes), Error::UnsupportedVersion(9));
    bytes[..4].copy_from_slice(b"PK\x03\x04");
    assert_eq!(load_err(&bytes), Error::BadMagic);
    assert_eq!(MAGIC, *b"SPRT");
    assert_eq!(HEADER_LEN, 12);
}

/// Files with a valid CRC but inconsistent content (a writer bug or a crafted file)
/// are caught by validation, with the tensor named.
#[test]
fn consistent_checksum_but_bad_content_is_rejected() {
    let spec = tiny_spec();
    // Wrong dims for the dense weight.
    let mut t = tiny_tensors();
    t[2].0 = vec![2, 8];
    assert!(matches!(
        load_err(&encode_f32(&spec, &t)),
        Error::TensorMismatch { tensor: 2, .. }
    ));
    // A missing tensor.
    let mut t = tiny_tensors();
    t.pop();
    assert!(matches!(
        load_err(&encode_f32(&spec, &t)),
        Error::TensorCount { .. }
    ));
    // An extra tensor.
    let mut t = tiny_tensors();
    t.push((vec![1], vec![0.0]));
    assert!(matches!(
        load_err(&encode_f32(&spec, &t)),
        Error::TensorCount { .. }
    ));
    // A NaN weight.
    let mut t = tiny_tensors();
    t[0].1[1] = f32::NAN;
    assert!(matches!(
        load_err(&encode_f32(&spec, &t)),
        Error::BadValue { tensor: 0, .. }
    ));
    // An invalid spec: a filter with a ReLU activation.
    let mut s = tiny_spec();
    if let LayerSpec::Filter(f) = &mut s.layers[0] {
        f.activation = Activation::Relu;
    }
    assert!(matches!(
        load_err(&encode_f32(&s, &tiny_tensors())),
        Error::InvalidSpec { layer: 0, .. }
    ));
    // σ = 0 is rejected.
    let mut s = tiny_spec();
    if let LayerSpec::Filter(f) = &mut s.layers[0] {
        f.activation = Activation::Hsnd { sigma: 0.0 };
    }
    assert!(load_err(&encode_f32(&s, &tiny_tensors()))
        .to_string()
        .contains("sigma"));
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = Rng(77);
    for len in 0..2000usize {
        let mut v: Vec<u8> = (0..len % 300).map(|_| rng.next_u64() as u8).collect();
        if len % 2 == 0 && v.len() >= 16 {
            // Valid magic and version so decoding goes deeper; the CRC is made valid too.
            v[..4].copy_from_slice(b"SPRT");
            v[4] = 1;
            v[5] = 0;
            v[6] = 0;
            v[7] = 0;
            let body = (v.len() - 16) as u32;
            v[8..12].copy_from_slice(&body.to_le_bytes());
            let n = v.len();
            let crc = spartan_core::format::crc32(&v[..n - 4]);
            v[n - 4..].copy_from_slice(&crc.to_le_bytes());
        }
        let _ = F32Model::load(&v);
    }
}
