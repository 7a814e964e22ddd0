//! Float inference equals a naive reference written here from the paper's description
//! (nested arrays, no shared code with the library's forward pass).

mod common;

use common::{encode_f32, random_weights, Rng};
use spartan_core::filter::FilterKind;
use spartan_core::float::F32Model;
use spartan_core::spec::{ArchSpec, LayerSpec, NamedParams, NAMED_ARCHITECTURES};

/// A [y][x][c] image.
type Image = Vec<Vec<Vec<f32>>>;

fn reference_forward(spec: &ArchSpec, tensors: &[(Vec<u32>, Vec<f32>)], input: &[f32]) -> Vec<f32> {
    let (h, w, c) = (
        spec.input.height as usize,
        spec.input.width as usize,
        spec.input.channels as usize,
    );
    let mut img: Image = (0..h)
        .map(|y| {
            (0..w)
                .map(|x| (0..c).map(|ch| input[(y * w + x) * c + ch]).collect())
                .collect()
        })
        .collect();
    let mut flat: Option<Vec<f32>> = None;
    let mut t = tensors.iter();
    for layer in &spec.layers {
        match layer {
            LayerSpec::Filter(f) => {
                let beta = f.beta as usize;
                let (h, w, c) = (img.len(), img[0].len(), img[0][0].len());
                let mut out = vec![vec![Vec::new(); w]; h];
                match f.kind {
                    FilterKind::Conv => {
                        let wt = &t.next().unwrap().1; // [c][beta]
                        let b = &t.next().unwrap().1;
                        for y in 0..h {
                            for x in 0..w {
                                for k in 0..beta {
                                    let mut z = b[k];
                                    for ch in 0..c {
                                        z += wt[ch * beta + k] * img[y][x][ch];
                                    }
                                    out[y][x].push(f.activation.forward(z));
                                }
                            }
                        }
                    }
                    FilterKind::Offset => {
                        let b = &t.next().unwrap().1; // [h][w][c*beta]
                        for y in 0..h {
                            for x in 0..w {
                                for ch in 0..c {
                                    for k in 0..beta {
                                        let bias = b[(y * w + x) * c * beta + ch * beta + k];
                                        out[y][x].push(f.activation.forward(img[y][x][ch] + bias));
                                    }
                                }
                            }
                        }
                    }
                }
                img = out;
            }
            LayerSpec::Conv(cv) => {
                let wt = &t.next().unwrap().1; // [ky][kx][ci][co]
                let b = &t.next().unwrap().1;
                let k = cv.kernel as usize;
                let (h, w, ci) = (img.len(), img[0].len(), img[0][0].len());
                let co = cv.filters as usize;
                let mut out = vec![vec![vec![0.0; co]; w - k + 1]; h - k + 1];
                for (oy, row) in out.iter_mut().enumerate() {
                    for (ox, px) in row.iter_mut().enumerate() {
                        for (o, v) in px.iter_mut().enumerate() {
                            let mut z = b[o];
                            for ky in 0..k {
                                for kx in 0..k {
                                    for i in 0..ci {
                                        z += img[oy + ky][ox + kx][i]
                                            * wt[((ky * k + kx) * ci + i) * co + o];
                                    }
                                }
                            }
                            *v = cv.activation.forward(z);
                        }
                    }
                }
                img = out;
            }
            LayerSpec::MaxPool(p) => {
                let s = p.size as usize;
                let (h, w) = (img.len() / s, img[0].len() / s);
                img = (0..h)
                    .map(|y| {
                        (0..w)
                            .map(|x| {
                                (0..img[0][0].len())
                                    .map(|ch| {
                                        let mut m = f32::MIN;
                                        for dy in 0..s {
                                            for dx in 0..s {
                                                m = m.max(img[y * s + dy][x * s + dx][ch]);
                                            }
                                        }
                                        m
                                    })
                                    .collect()
                            })
                            .collect()
                    })
                    .collect();
            }
            LayerSpec::Dense(d) => {
                let v = flat
                    .take()
                    .unwrap_or_else(|| img.iter().flatten().flatten().copied().collect());
                let wt = &t.next().unwrap().1; // [in][out]
                let b = &t.next().unwrap().1;
                let n = d.units as usize;
                let out = (0..n)
                    .map(|j| {
                        let z = b[j]
                            + v.iter()
                                .enumerate()
                                .map(|(i, x)| x * wt[i * n + j])
                                .sum::<f32>();
                        d.activation.forward(z)
                    })
                    .collect();
                flat = Some(out);
            }
        }
    }
    flat.unwrap()
}

/// MNIST-like input: a bright blob on a dark background, with some mid-grey pixels so
/// every filter threshold is exercised.
fn digit_like(rng: &mut Rng) -> Vec<f32> {
    let (cy, cx) = (rng.uniform(8.0, 20.0), rng.uniform(8.0, 20.0));
    (0..28 * 28)
        .map(|i| {
            let (y, x) = ((i / 28) as f32, (i % 28) as f32);
            let d = ((y - cy).powi(2) + (x - cx).powi(2)).sqrt();
            let v = (1.0 - d / 9.0).clamp(0.0, 1.0);
            (v + rng.uniform(0.0, 0.05)).min(1.0)
        })
        .collect()
}

fn check_arch(name: &str, seed: u64, images: usize) {
    let spec = ArchSpec::named(name, NamedParams::default()).unwrap();
    let mut rng = Rng(seed);
    let tensors = random_weights(&spec, &mut rng);
    let bytes = encode_f32(&spec, &tensors);
    let model = F32Model::load(&bytes).unwrap();
    let mut arena = vec![0.0; model.arena_len()];
    let mut logits = vec![0.0; 10];
    for _ in 0..images {
        let x = digit_like(&mut rng);
        let class = model.infer(&x, &mut arena, &mut logits).unwrap();
        let want = reference_forward(&spec, &tensors, &x);
        for (a, b) in logits.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{name}: {a} vs {b}"
            );
        }
        let best = want
            .iter()
            .enumerate()
            .fold(0, |m, (i, v)| if *v > want[m] { i } else { m });
        assert_eq!(class, best);
    }
}

#[test]
fn standard_network_equals_naive_reference() {
    check_arch("standard", 1, 4);
}

#[test]
fn candidates_equal_naive_reference() {
    for (i, name) in NAMED_ARCHITECTURES.iter().enumerate().skip(1) {
        check_arch(name, 100 + i as u64, 2);
    }
}

#[test]
fn arena_is_exact_and_buffers_are_checked() {
    let spec = ArchSpec::named("standard", NamedParams::default()).unwrap();
    let tensors = random_weights(&spec, &mut Rng(9));
    let bytes = encode_f32(&spec, &tensors);
    let model = F32Model::load(&bytes).unwrap();
    // The two largest neighbouring intermediates: 26·26·32 + 24·24·32.
    assert_eq!(model.arena_len(), 26 * 26 * 32 + 24 * 24 * 32);
    let x = vec![0.5; 784];
    let mut logits = [0.0; 10];
    let mut arena = vec![0.0; model.arena_len() - 1];
    assert!(model.infer(&x, &mut arena, &mut logits).is_err());
    let mut arena = vec![0.0; model.arena_len()];
    assert!(model.infer(&x[..783], &mut arena, &mut logits).is_err());
    assert!(model.infer(&x, &mut arena, &mut logits[..9]).is_err());
    // Garbage in the arena does not change the result.
    let mut a1 = vec![f32::NAN; model.arena_len()];
    let mut l1 = [0.0; 10];
    model.infer(&x, &mut arena, &mut logits).unwrap();
    model.infer(&x, &mut a1, &mut l1).unwrap();
    assert_eq!(logits, l1);
}
