//! `spartan inspect` and `spartan spec`.

use super::read_model_file;
use anyhow::Context;
use spartan_core::filter::{BitTable, FilterKind};
use spartan_core::float::F32Model;
use spartan_core::format::ModelFile;
use spartan_core::int8::{FilterTables, Int8Layer, Int8Model, OutputStage, NEVER_ON};
use spartan_core::spec::LayerSpec;
use spartan_train::arch::{resolve, to_toml, Overrides};
use std::path::PathBuf;

/// Arguments of `spartan inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Model file.
    pub model: PathBuf,
}

/// Arguments of `spartan spec`.
#[derive(Debug, clap::Args)]
pub struct SpecArgs {
    /// A named architecture.
    #[arg(long, default_value = "candidate-c")]
    pub arch: String,
}

pub(super) fn spec(a: SpecArgs) -> anyhow::Result<()> {
    print!("{}", to_toml(&resolve(&a.arch, Overrides::default(), 10)?));
    Ok(())
}

pub(super) fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let bytes = read_model_file(&a.model)?;
    let file = ModelFile::parse(&bytes).with_context(|| format!("{}", a.model.display()))?;
    if file.kind == spartan_core::format::ModelKind::Int8 {
        let model =
            Int8Model::from_file(&file).with_context(|| format!("{}", a.model.display()))?;
        return inspect_int8(&a.model, &bytes, &model);
    }
    let model = F32Model::from_file(&file).with_context(|| format!("{}", a.model.display()))?;
    println!(
        "{}: Spartan model, format v{}, kind {}, {} bytes, CRC-32 {:#010x}",
        a.model.display(),
        file.version,
        file.kind.name(),
        bytes.len(),
        file.crc
    );
    let spec = model.spec();
    let shapes = model.shapes();
    println!(
        "input {}×{}×{}",
        shapes[0].height, shapes[0].width, shapes[0].channels
    );
    let mut total = 0;
    for (i, layer) in spec.layers.iter().enumerate() {
        let count = layer.params(shapes[i]).count();
        total += count;
        let out = shapes[i + 1];
        let what = match layer {
            LayerSpec::Filter(f) => format!(
                "filter {:?} β={} {} sf={}",
                f.kind, f.beta, f.activation, f.sf
            ),
            LayerSpec::Conv(c) => format!(
                "conv {} {}×{} {}",
                c.filters, c.kernel, c.kernel, c.activation
            ),
            LayerSpec::MaxPool(p) => format!("maxpool {}×{}", p.size, p.size),
            LayerSpec::Dense(d) => format!("dense {} {}", d.units, d.activation),
        };
        println!(
            "  {i:>2} {what:<44} -> {:>3}×{:<3}×{:<4} {count:>7} parameters",
            out.height, out.width, out.channels
        );
    }
    println!(
        "total {total} parameters, f32 arena {} values",
        model.arena_len()
    );
    if let Some(f) = spec.filter() {
        let w = model.layer_weights(0).unwrap_or_default();
        println!("filter thresholds (pixel values 0–255 that switch each unit on):");
        match f.kind {
            FilterKind::Conv if shapes[0].channels == 1 => {
                for k in 0..f.beta as usize {
                    let t = BitTable::compile(f.activation, w.weight.get(k), w.bias.get(k));
                    println!(
                        "  unit {k}: w={:+.4} b={:+.4}  on for {}",
                        w.weight.get(k),
                        w.bias.get(k),
                        describe_table(&t)
                    );
                }
            }
            FilterKind::Conv => println!("  (multi-channel conv filter: no per-pixel table)"),
            FilterKind::Offset => {
                let beta = f.beta as usize;
                for k in 0..beta {
                    let taus: Vec<f32> = (0..w.bias.len())
                        .filter(|o| o % beta == k)
                        .map(|o| -w.bias.get(o) * 255.0)
                        .collect();
                    let mean = taus.iter().sum::<f32>() / taus.len().max(1) as f32;
                    let lo = taus.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = taus.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let edge = taus
                        .iter()
                        .filter(|&&t| !(1.0..=254.0).contains(&t))
                        .count();
                    println!(
                        "  threshold {k}: τ mean {mean:.1}, min {lo:.1}, max {hi:.1} (pixel units); {edge} of {} at an edge (data-starved)",
                        taus.len()
                    );
                }
            }
        }
    }
    Ok(())
}

/// Pixel ranges where a bit table is on, e.g. `103–255` or `0–40, 200–255`.
fn describe_table(t: &BitTable) -> String {
    let mut parts = Vec::new();
    let mut start: Option<u16> = None;
    for p in 0..=256u16 {
        let on = p < 256 && t.get(p as u8);
        match (on, start) {
            (true, None) => start = Some(p),
            (false, Some(s)) => {
                parts.push(if s == p - 1 {
                    format!("{s}")
                } else {
                    format!("{s}–{}", p - 1)
                });
                start = None;
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        "no pixel value".into()
    } else {
        format!("pixels {}", parts.join(", "))
    }
}

fn layer_name(layer: &LayerSpec) -> String {
    match layer {
        LayerSpec::Filter(f) => format!("filter {:?} β={} {}", f.kind, f.beta, f.activation),
        LayerSpec::Conv(c) => format!(
            "conv {} {}×{} {}",
            c.filters, c.kernel, c.kernel, c.activation
        ),
        LayerSpec::MaxPool(p) => format!("maxpool {}×{}", p.size, p.size),
        LayerSpec::Dense(d) => format!("dense {} {}", d.units, d.activation),
    }
}

/// Describes an int8 model: flash and RAM budget, per-layer quantisation.
fn inspect_int8(path: &std::path::Path, bytes: &[u8], model: &Int8Model<'_>) -> anyhow::Result<()> {
    let kib = |n: usize| n as f64 / 1024.0;
    println!(
        "{}: Spartan model, format v{}, kind int8, CRC-32 {:#010x}",
        path.display(),
        spartan_core::format::FORMAT_VERSION,
        model.crc()
    );
    println!(
        "flash (model file): {} bytes ({:.1} KiB; budget 64 KiB: {})",
        bytes.len(),
        kib(bytes.len()),
        if bytes.len() <= 64 * 1024 {
            "fits"
        } else {
            "OVER"
        }
    );
    println!(
        "arena (RAM): {} bytes ({:.1} KiB; budget 48 KiB: {})",
        model.arena_len(),
        kib(model.arena_len()),
        if model.arena_len() <= 48 * 1024 {
            "fits"
        } else {
            "OVER"
        }
    );
    let shapes = model.shapes();
    println!(
        "input {}×{}×{} raw u8 pixels",
        shapes[0].height, shapes[0].width, shapes[0].channels
    );
    for (i, (layer, q)) in model.spec().layers.iter().zip(model.layers()).enumerate() {
        let out = shapes[i + 1];
        let detail = match q {
            Int8Layer::Filter(FilterTables::Shared(t)) => {
                format!("{} bit tables over raw pixels", t.len() / 32)
            }
            Int8Layer::Filter(FilterTables::Thresholds(t)) => {
                let v: Vec<u16> = t
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let never = v.iter().filter(|&&x| x == NEVER_ON).count();
                let always = v.iter().filter(|&&x| x == 0).count();
                format!(
                    "{} pixel thresholds ({} never on, {} always on)",
                    v.len(),
                    never,
                    always
                )
            }
            Int8Layer::Filter(FilterTables::PerUnit(t)) => {
                format!("{} per-unit bit tables", t.len() / 32)
            }
            Int8Layer::Conv { zp_in, out, .. } | Int8Layer::Dense { zp_in, out, .. } => match out {
                OutputStage::Requant {
                    zero_point, relu, ..
                } => {
                    format!(
                        "zp in {zp_in}, out zp {zero_point}{}",
                        if *relu { ", ReLU clamp" } else { "" }
                    )
                }
                OutputStage::Step => format!("zp in {zp_in}, binary out (acc > 0)"),
                OutputStage::Cosine(_) => format!("zp in {zp_in}, binary out (integer cos sign)"),
            },
            Int8Layer::Pool => "max of u8".into(),
        };
        println!(
            "  {i:>2} {:<34} -> {:>3}×{:<3}×{:<4} {detail}",
            layer_name(layer),
            out.height,
            out.width,
            out.channels
        );
    }
    let (scale, zp) = model.logit_quantization();
    println!("logits: i8, real ≈ {scale:.5} × (q − {zp})");
    Ok(())
}
