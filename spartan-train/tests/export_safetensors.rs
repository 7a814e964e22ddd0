//! The safetensors export, read back and run by a PyTorch-style NCHW forward pass
//! written here, reproduces the trainer's logits: the documented layout is right.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::SafeTensors;
use spartan_core::filter::FilterKind;
use spartan_core::spec::{LayerSpec, NamedParams, NAMED_ARCHITECTURES};
use spartan_train::export::to_safetensors;
use spartan_train::nn::{Network, Workspace};

fn tensor(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("missing {name}"));
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), v)
}

/// NCHW forward as PyTorch would run it: `x` is [C][H][W].
fn torch_like_forward(net: &Network, st: &SafeTensors<'_>, img: &[f32]) -> Vec<f32> {
    let (mut c, mut h, mut w) = (1usize, 28usize, 28usize);
    let mut x = img.to_vec(); // C=1, so HWC == CHW
    let (mut convs, mut denses) = (0, 0);
    for layer in &net.spec().layers {
        match layer {
            LayerSpec::Filter(f) => {
                let beta = f.beta as usize;
                let (_, b) = tensor(st, "filter.bias");
                let mut y = Vec::new();
                match f.kind {
                    FilterKind::Conv => {
                        let (ws, wt) = tensor(st, "filter.weight");
                        assert_eq!(ws, [beta, c, 1, 1]);
                        for k in 0..beta {
                            for p in 0..h * w {
                                let z: f32 = (0..c)
                                    .map(|ci| wt[k * c + ci] * x[ci * h * w + p])
                                    .sum::<f32>()
                                    + b[k];
                                y.push(f.activation.forward(z));
                            }
                        }
                        c = beta;
                    }
                    FilterKind::Offset => {
                        for o in 0..c * beta {
                            let ci = o / beta;
                            for p in 0..h * w {
                                y.push(f.activation.forward(x[ci * h * w + p] + b[o * h * w + p]));
                            }
                        }
                        c *= beta;
                    }
                }
                x = y;
            }
            LayerSpec::Conv(cs) => {
                convs += 1;
                let (ws, wt) = tensor(st, &format!("conv{convs}.weight"));
                let (_, b) = tensor(st, &format!("conv{convs}.bias"));
                let (co, k) = (cs.filters as usize, cs.kernel as usize);
                assert_eq!(ws, [co, c, k, k]);
                let (oh, ow) = (h - k + 1, w - k + 1);
                let mut y = vec![0.0; co * oh * ow];
                for o in 0..co {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut z = b[o];
                            for ci in 0..c {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        z += wt[((o * c + ci) * k + ky) * k + kx]
                                            * x[(ci * h + oy + ky) * w + ox + kx];
                                    }
                                }
                            }
                            y[(o * oh + oy) * ow + ox] = cs.activation.forward(z);
                        }
                    }
                }
                (c, h, w, x) = (co, oh, ow, y);
            }
            LayerSpec::MaxPool(p) => {
                let s = p.size as usize;
                let (oh, ow) = (h / s, w / s);
                let mut y = vec![f32::MIN; c * oh * ow];
                for ci in 0..c {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            for d in 0..s * s {
                                let v = x[(ci * h + oy * s + d / s) * w + ox * s + d % s];
                                let t = &mut y[(ci * oh + oy) * ow + ox];
                                *t = t.max(v);
                            }
                        }
                    }
                }
                (h, w, x) = (oh, ow, y);
            }
            LayerSpec::Dense(d) => {
                denses += 1;
                let (ws, wt) = tensor(st, &format!("dense{denses}.weight"));
                let (_, b) = tensor(st, &format!("dense{denses}.bias"));
                let (no, ni) = (d.units as usize, x.len());
                assert_eq!(ws, [no, ni]);
                x = (0..no)
                    .map(|o| {
                        d.activation
                            .forward(b[o] + (0..ni).map(|i| wt[o * ni + i] * x[i]).sum::<f32>())
                    })
                    .collect();
                (c, h, w) = (no, 1, 1);
            }
        }
    }
    x
}

#[test]
fn exported_tensors_run_in_pytorch_layout() {
    for (s, name) in NAMED_ARCHITECTURES.iter().enumerate() {
        let spec = spartan_core::spec::ArchSpec::named(name, NamedParams::default()).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(s as u64);
        let mut net = Network::init(&spec, &mut rng).unwrap();
        let mut values = net.param_values();
        for v in &mut values {
            for p in v.iter_mut() {
                *p += rng.random_range(-0.05..0.05);
            }
        }
        net.set_param_values(&values).unwrap();
        let bytes = to_safetensors(&net).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let img: Vec<f32> = (0..784).map(|_| rng.random_range(0.0..1.0)).collect();
        let x = ndarray::ArrayView4::from_shape((1, 28, 28, 1), &img).unwrap();
        let want = net.forward(x, &mut Workspace::new()).row(0).to_vec();
        let got = torch_like_forward(&net, &st, &img);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{name}: {got:?} vs {want:?}");
        }
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let spec_json = &meta.metadata().as_ref().unwrap()["spartan.spec"];
        assert_eq!(
            &serde_json::from_str::<spartan_core::spec::ArchSpec>(spec_json).unwrap(),
            net.spec()
        );
    }
}
