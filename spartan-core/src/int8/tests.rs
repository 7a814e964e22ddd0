//! The row pipeline and both kernel families against a layer-by-layer reference (a
//! direct transcription of docs/format.md's integer semantics), on random models of
//! every layer kind, size and output stage the int8 format allows.

use super::exec::Kernels;
use super::kernels::finish;
use super::record::{le_i32, le_u16};
use super::*;
use crate::activation::Activation;
use crate::filter::{BitTable, FilterKind, FilterSpec};
use crate::quant::Requant;
use crate::spec::{ArchSpec, ConvSpec, DenseSpec, LayerSpec, PoolSpec, Shape};
use crate::test_rng::XorShift as Rng;
use std::vec::Vec;

/// Layer-by-layer evaluation on whole activation maps.
fn reference(m: &Int8Model<'_>, pixels: &[u8]) -> Vec<i8> {
    let mut x: Vec<i32> = pixels.iter().map(|&p| i32::from(p)).collect();
    let last = m.layers().len() - 1;
    for (li, (layer, spec)) in m.layers().iter().zip(&m.spec().layers).enumerate() {
        let (input, output) = (m.shapes()[li], m.shapes()[li + 1]);
        let clamp = |v: i32| {
            if li == last {
                v.clamp(-128, 127)
            } else {
                v.clamp(0, 255)
            }
        };
        let bit = |t: &[u8], unit: usize, p: i32| {
            i32::from((t[unit * 32 + (p >> 3) as usize] >> (p & 7)) & 1)
        };
        x = match (*layer, *spec) {
            (Int8Layer::Filter(tables), LayerSpec::Filter(f)) => {
                let beta = f.beta as usize;
                (0..output.len())
                    .map(|o| match tables {
                        FilterTables::Shared(t) => bit(t, o % beta, x[o / beta]),
                        FilterTables::Thresholds(t) => {
                            i32::from(x[o / beta] >= i32::from(le_u16(t, o)))
                        }
                        FilterTables::PerUnit(t) => bit(t, o, x[o / beta]),
                    })
                    .collect()
            }
            (
                Int8Layer::Conv {
                    weight,
                    bias,
                    zp_in,
                    out,
                    ..
                },
                LayerSpec::Conv(c),
            ) => {
                let (k, ci, iw) = (
                    c.kernel as usize,
                    input.channels as usize,
                    input.width as usize,
                );
                let (ow, co) = (output.width as usize, output.channels as usize);
                (0..output.len())
                    .map(|o| {
                        let (oy, ox, ch) = (o / co / ow, o / co % ow, o % co);
                        let mut acc = le_i32(bias, ch);
                        for ky in 0..k {
                            for kx in 0..k {
                                for i in 0..ci {
                                    let w =
                                        i32::from(weight[((ch * k + ky) * k + kx) * ci + i] as i8);
                                    acc += w * (x[((oy + ky) * iw + ox + kx) * ci + i] - zp_in);
                                }
                            }
                        }
                        clamp(finish(&out, ch, acc))
                    })
                    .collect()
            }
            (Int8Layer::Pool, LayerSpec::MaxPool(p)) => {
                let (s, iw, c) = (
                    p.size as usize,
                    input.width as usize,
                    input.channels as usize,
                );
                let (ow, oc) = (output.width as usize, output.channels as usize);
                (0..output.len())
                    .map(|o| {
                        let (oy, ox, ch) = (o / oc / ow, o / oc % ow, o % oc);
                        (0..s * s)
                            .map(|d| x[((oy * s + d / s) * iw + ox * s + d % s) * c + ch])
                            .max()
                            .unwrap_or(0)
                    })
                    .collect()
            }
            (
                Int8Layer::Dense {
                    weight,
                    bias,
                    zp_in,
                    out,
                    ..
                },
                LayerSpec::Dense(d),
            ) => (0..d.units as usize)
                .map(|n| {
                    let mut acc = le_i32(bias, n);
                    for (i, &v) in x.iter().enumerate() {
                        acc += i32::from(weight[n * x.len() + i] as i8) * (v - zp_in);
                    }
                    clamp(finish(&out, n, acc))
                })
                .collect(),
            other => panic!("layer and spec disagree: {other:?}"),
        };
    }
    x.iter().map(|&v| v as i8).collect()
}

/// A random architecture the int8 format accepts: an optional filter, convs and pools
/// of assorted sizes and activations, one or two dense layers.
fn random_spec(rng: &mut Rng) -> ArchSpec {
    loop {
        let input = Shape::new(
            3 + rng.below(10) as u16,
            3 + rng.below(10) as u16,
            1 + rng.below(3) as u16,
        );
        let mut layers: Vec<LayerSpec> = Vec::new();
        if rng.below(3) > 0 {
            let kind = if input.channels == 1 && rng.below(2) == 0 {
                FilterKind::Conv
            } else {
                FilterKind::Offset
            };
            layers.push(LayerSpec::Filter(FilterSpec {
                kind,
                beta: 1 + rng.below(5) as u16,
                activation: Activation::Hsat,
                sf: 0.0,
            }));
        }
        for _ in 0..rng.below(5) {
            layers.push(match rng.below(3) {
                0 => LayerSpec::MaxPool(PoolSpec {
                    size: [1, 2, 2, 3][rng.below(4)],
                }),
                _ => LayerSpec::Conv(ConvSpec {
                    filters: [1, 3, 4, 8, 13, 16, 32, 40][rng.below(8)],
                    kernel: 1 + rng.below(3) as u8,
                    activation: [
                        Activation::Relu,
                        Activation::Linear,
                        Activation::Hsat,
                        Activation::CosHsat,
                    ][rng.below(4)],
                }),
            });
        }
        if rng.below(2) == 0 {
            layers.push(LayerSpec::Dense(DenseSpec {
                units: 1 + rng.below(60) as u16,
                activation: [Activation::Relu, Activation::Linear, Activation::Hsat][rng.below(3)],
            }));
        }
        layers.push(LayerSpec::Dense(DenseSpec {
            units: 2 + rng.below(11) as u16,
            activation: [Activation::Relu, Activation::Linear][rng.below(2)],
        }));
        let spec = ArchSpec {
            input,
            layers: layers.into_iter().collect(),
        };
        if spec.shapes().is_ok() {
            return spec;
        }
    }
}

fn random_table(rng: &mut Rng) -> BitTable {
    BitTable(core::array::from_fn(|_| rng.next_u64() as u32))
}

/// Quantised numbers for `spec` (through the writer, which validates them).
fn random_model(spec: &ArchSpec, rng: &mut Rng) -> Vec<u8> {
    let shapes = spec.shapes().unwrap();
    let mut w = Int8Writer::new(spec.clone()).unwrap();
    let mut zp = 0;
    let last = spec.layers.len() - 1;
    for (li, layer) in spec.layers.iter().enumerate() {
        let (input, output) = (shapes[li], shapes[li + 1]);
        match *layer {
            LayerSpec::Filter(f) => {
                let units = output.len();
                let record = match f.kind {
                    FilterKind::Conv => {
                        FilterRecord::Shared((0..f.beta).map(|_| random_table(rng)).collect())
                    }
                    FilterKind::Offset if rng.below(2) == 0 => FilterRecord::Thresholds(
                        (0..units).map(|_| rng.below(257) as u16).collect(),
                    ),
                    FilterKind::Offset => {
                        FilterRecord::PerUnit((0..units).map(|_| random_table(rng)).collect())
                    }
                };
                w.filter(&record).unwrap();
                zp = 0;
            }
            LayerSpec::MaxPool(_) => {}
            LayerSpec::Conv(_) | LayerSpec::Dense(_) => {
                let channels = output.channels as usize;
                let fan_in = layer.params(input).weight.unwrap().len() / channels;
                let act = layer.activation().unwrap();
                let weight = (0..fan_in * channels)
                    .map(|_| {
                        if rng.below(50) == 0 {
                            -128
                        } else {
                            (rng.below(255) as i32 - 127) as i8
                        }
                    })
                    .collect();
                let spread = (fan_in * 2000) as u64;
                let bias = (0..channels)
                    .map(|_| (rng.next_u64() % (2 * spread + 1)) as i32 - spread as i32)
                    .collect();
                // Scales that keep outputs off the clamps, sometimes left shifts.
                let base = -((fan_in * 40) as f64).log2().ceil() as i32;
                let (output_record, zp_out) = if act.is_cosine() {
                    let f = (0..channels)
                        .map(|_| (rng.next_u64() >> 16) as i64 >> rng.below(20))
                        .collect();
                    (OutputRecord::Cosine(f), 0)
                } else if act.is_binary() {
                    (OutputRecord::Step, 0)
                } else {
                    let q = (0..channels)
                        .map(|_| Requant {
                            multiplier: if rng.below(20) == 0 {
                                0
                            } else {
                                (1 << 30) | (rng.next_u64() >> 34) as i32
                            },
                            shift: (base + rng.below(6) as i32 - 2).clamp(-31, 30),
                        })
                        .collect();
                    let zp_out = if li == last {
                        rng.below(256) as i32 - 128
                    } else if act == Activation::Relu && rng.below(2) == 0 {
                        0
                    } else {
                        rng.below(256) as i32
                    };
                    (OutputRecord::Requant(q), zp_out)
                };
                w.linear(&LinearRecord {
                    weight,
                    bias,
                    output: output_record,
                    zp_in: zp,
                    zp_out,
                    scale_out: 0.5,
                })
                .unwrap();
                zp = zp_out;
            }
        }
    }
    w.finish().unwrap()
}

fn random_pixels(rng: &mut Rng, n: usize) -> Vec<u8> {
    let sparse = rng.below(2) == 0;
    (0..n)
        .map(|_| {
            if sparse && rng.below(3) > 0 {
                0
            } else {
                rng.next_u64() as u8
            }
        })
        .collect()
}

fn run(m: &Int8Model<'_>, pixels: &[u8], kernels: Kernels, garbage: u8) -> Vec<i8> {
    // An odd start: the pipeline aligns its scratch itself.
    let mut arena = std::vec![garbage; m.arena_len() + 1];
    let mut logits = std::vec![0i8; m.classes()];
    let class = m
        .run(pixels, &mut arena[1..], &mut logits, &mut (), kernels)
        .unwrap();
    assert_eq!(class, crate::float::argmax(&logits));
    logits
}

#[test]
fn both_kernel_families_equal_the_layer_by_layer_reference() {
    let mut rng = Rng(0x0DDB_1A5E_5BAD_5EED);
    let mut fused = 0;
    for round in 0..1000 {
        let spec = random_spec(&mut rng);
        let bytes = random_model(&spec, &mut rng);
        let m = Int8Model::load(&bytes).unwrap();
        fused += m.stage_layers().filter(|r| r.len() == 2).count();
        for image in 0..3 {
            let pixels = random_pixels(&mut rng, m.input_len());
            let want = reference(&m, &pixels);
            for kernels in [Kernels::Mcu, Kernels::Host] {
                let got = run(&m, &pixels, kernels, (round + image) as u8);
                assert_eq!(got, want, "round {round}, {kernels:?}, {:?}", spec.layers);
            }
        }
    }
    assert!(
        fused > 20,
        "only {fused} fused conv + pool stages were tested"
    );
}

#[test]
fn the_arena_is_exactly_what_the_plan_needs() {
    let mut rng = Rng(0xA3E7A);
    for _ in 0..50 {
        let spec = random_spec(&mut rng);
        let bytes = random_model(&spec, &mut rng);
        let m = Int8Model::load(&bytes).unwrap();
        let pixels = random_pixels(&mut rng, m.input_len());
        let mut logits = std::vec![0i8; m.classes()];
        let mut short = std::vec![0u8; m.arena_len() - 1];
        assert!(matches!(
            m.infer(&pixels, &mut short, &mut logits),
            Err(crate::Error::BufferSize {
                buffer: "arena",
                ..
            })
        ));
        // Any alignment of an arena of exactly `arena_len()` bytes works.
        let mut big = std::vec![0u8; m.arena_len() + 3];
        for skip in 0..4 {
            let len = m.arena_len();
            m.infer(&pixels, &mut big[skip..skip + len], &mut logits)
                .unwrap();
        }
    }
}

/// The committed reference network on synthetic digits: both kernel families and the
/// reference agree, and the arena is a few rows per layer.
#[test]
fn committed_candidate_c_runs_in_a_small_arena() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/candidate-c.int8.spartan"
    ))
    .unwrap();
    let m = Int8Model::load(&bytes).unwrap();
    assert!(m.arena_len() < 12 * 1024, "{} bytes", m.arena_len());
    let stages: Vec<_> = m.stage_layers().collect();
    assert_eq!(stages, [0..1, 1..2, 2..4, 4..5, 5..7, 7..8, 8..9]);
    let mut rng = Rng(0xC0FFEE);
    for _ in 0..20 {
        let pixels = random_pixels(&mut rng, 784);
        let want = reference(&m, &pixels);
        assert_eq!(run(&m, &pixels, Kernels::Mcu, 0x5A), want);
        assert_eq!(run(&m, &pixels, Kernels::Host, 0xA5), want);
    }
}

/// The writer and the parser agree: what a file is read back as, written again, is
/// the same file, byte for byte, for every layer kind.
#[test]
fn records_read_back_rewrite_the_same_file() {
    let mut rng = Rng(0x05EC_04D5);
    for _ in 0..200 {
        let spec = random_spec(&mut rng);
        let bytes = random_model(&spec, &mut rng);
        let m = Int8Model::load(&bytes).unwrap();
        let mut w = Int8Writer::new(spec).unwrap();
        for r in m.records() {
            w.record(&r).unwrap();
        }
        assert_eq!(w.finish().unwrap(), bytes);
    }
}
