//! Export of a trained network as safetensors, in PyTorch's layouts, so that other tools
//! can load the weights (layout documented in docs/safetensors.md), and the way back:
//! weights trained elsewhere (another recipe, another framework) brought in to be
//! attacked, certified, quantised and deployed here.

use crate::nn::Network;
use ndarray::ArrayViewD;
use rand::SeedableRng;
use spartan_core::filter::FilterKind;
use spartan_core::spec::{ArchSpec, LayerSpec};
use std::collections::HashMap;

/// One exported tensor: name, shape and values (row-major in that shape).
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// E.g. `conv1.weight`.
    pub name: String,
    /// PyTorch shape.
    pub shape: Vec<usize>,
    /// Values.
    pub values: Vec<f32>,
}

/// A tensor's values and dims after permuting its axes: output axis `i` is input axis
/// `perm[i]` (NumPy's `transpose(perm)`), values in the new row-major order.
pub fn permute(t: ArrayViewD<'_, f32>, perm: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let p = t.permuted_axes(perm);
    (p.iter().copied().collect(), p.shape().to_vec())
}

/// The network's tensors with PyTorch names and layouts.
///
/// - filter (Conv-Filtering): `filter.weight [β, C, 1, 1]`, `filter.bias [β]` (a 1×1 `Conv2d`);
/// - filter (Offset-Filtering): `filter.bias [C·β, H, W]` (threshold `τ = -bias`);
/// - `convN.weight [C_out, C_in, k, k]`, `convN.bias [C_out]` (`Conv2d`, valid padding);
/// - `denseN.weight [N_out, N_in]`, `denseN.bias [N_out]` (`Linear`); the first dense
///   layer's inputs are reordered to the (c, h, w) order of `nn.Flatten` on NCHW.
pub fn pytorch_tensors(net: &Network) -> Vec<NamedTensor> {
    let shapes = net.shapes();
    let mut out = Vec::new();
    let (mut convs, mut denses) = (0, 0);
    for (i, layer) in net.spec().layers.iter().enumerate() {
        let input = shapes[i];
        let (h, w, c) = (
            input.height as usize,
            input.width as usize,
            input.channels as usize,
        );
        let params = net.layer_params(i);
        let mut push = |name: String, (values, shape): (Vec<f32>, Vec<usize>)| {
            out.push(NamedTensor {
                name,
                shape,
                values,
            })
        };
        match *layer {
            LayerSpec::Filter(f) => {
                let beta = f.beta as usize;
                match f.kind {
                    FilterKind::Conv => {
                        let (wt, _) = permute(params[0].view(), &[1, 0]);
                        push("filter.weight".into(), (wt, vec![beta, c, 1, 1]));
                        push("filter.bias".into(), permute(params[1].view(), &[0]));
                    }
                    FilterKind::Offset => {
                        push("filter.bias".into(), permute(params[0].view(), &[2, 0, 1]));
                    }
                }
            }
            LayerSpec::Conv(_) => {
                convs += 1;
                let weight = permute(params[0].view(), &[3, 2, 0, 1]);
                push(format!("conv{convs}.weight"), weight);
                push(format!("conv{convs}.bias"), permute(params[1].view(), &[0]));
            }
            LayerSpec::Dense(d) => {
                denses += 1;
                let no = d.units as usize;
                // [h·w·c, out] -> [h, w, c, out] -> [out, c, h, w] -> [out, c·h·w]
                let hwc = params[0]
                    .view()
                    .into_shape_with_order(vec![h, w, c, no])
                    .expect("dense weight is [h·w·c, out]");
                let (wt, _) = permute(hwc, &[3, 2, 0, 1]);
                push(format!("dense{denses}.weight"), (wt, vec![no, h * w * c]));
                push(
                    format!("dense{denses}.bias"),
                    permute(params[1].view(), &[0]),
                );
            }
            LayerSpec::MaxPool(_) => {}
        }
    }
    out
}

/// Serialises the network as a safetensors file, with the spec in the metadata.
pub fn to_safetensors(net: &Network) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    let tensors = pytorch_tensors(net);
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            Ok((
                t.name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert(
        "spartan.layout".to_string(),
        "pytorch (NCHW; see docs/safetensors.md)".to_string(),
    );
    meta.insert(
        "spartan.spec".to_string(),
        serde_json::to_string(net.spec()).unwrap_or_default(),
    );
    meta.insert(
        "spartan.version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    safetensors::serialize(views, Some(meta)).map(sorted_header)
}

/// The safetensors crate writes the metadata map in `HashMap` order, which changes from
/// run to run; the header is re-encoded with its keys sorted so that one model always
/// exports to the same bytes. (`serde_json`'s map is ordered by key.)
fn sorted_header(file: Vec<u8>) -> Vec<u8> {
    let len = u64::from_le_bytes(file[..8].try_into().expect("an 8-byte header length"));
    let end = 8 + len as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&file[8..end]).expect("safetensors writes a JSON header");
    let mut json = serde_json::to_vec(&header).expect("a JSON value serialises");
    // Padded with spaces to a multiple of 8 bytes, as safetensors itself does.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&file[end..]);
    out
}

/// Why a safetensors file cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not a safetensors file, or a damaged one.
    #[error("not a readable safetensors file")]
    Format(#[from] safetensors::SafeTensorError),
    /// The metadata has no architecture (`spartan.spec`), as `spartan export` writes.
    #[error("the file has no `spartan.spec` metadata: the architecture is unknown")]
    NoSpec,
    /// The architecture in the metadata does not parse or is inconsistent.
    #[error("bad `spartan.spec` metadata: {0}")]
    Spec(String),
    /// A tensor the architecture needs is absent.
    #[error("tensor `{0}` is missing")]
    Missing(String),
    /// A tensor with the wrong shape or type.
    #[error("tensor `{name}` is {got}; the architecture needs F32 {expected:?}")]
    Shape {
        /// Tensor name.
        name: String,
        /// What the file holds.
        got: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
    },
    /// A value that is not a finite number.
    #[error("tensor `{0}` holds a value that is not finite")]
    NotFinite(String),
}

/// The network a safetensors file written by [`to_safetensors`] (or by another tool in
/// the same names and layouts, with the same `spartan.spec` metadata) describes.
///
/// The layout is undone by running the export on a network whose every parameter holds
/// its own index: each exported value then names the parameter it came from, so the
/// import is the export's inverse by construction.
pub fn from_safetensors(bytes: &[u8]) -> Result<Network, ImportError> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)?;
    let spec_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("spartan.spec"))
        .ok_or(ImportError::NoSpec)?;
    let spec: ArchSpec =
        serde_json::from_str(spec_json).map_err(|e| ImportError::Spec(e.to_string()))?;
    let file = safetensors::SafeTensors::deserialize(bytes)?;
    // Any initialisation: every value is overwritten below.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut net = Network::init(&spec, &mut rng).map_err(|e| ImportError::Spec(e.to_string()))?;
    let lens = net.param_lens();
    let starts: Vec<usize> = lens
        .iter()
        .scan(0, |at, &n| {
            *at += n;
            Some(*at - n)
        })
        .collect();
    let total: usize = lens.iter().sum();
    // Indices are exact in f32 up to 2^24 (a spec's parameter count is far below).
    if total > 1 << 24 {
        return Err(ImportError::Spec(format!("{total} parameters: too many")));
    }
    let indices: Vec<Vec<f32>> = starts
        .iter()
        .zip(&lens)
        .map(|(&s, &n)| (s..s + n).map(|i| i as f32).collect())
        .collect();
    let mut labelled = net.clone();
    labelled
        .set_param_values(&indices)
        .map_err(ImportError::Spec)?;
    let mut flat = vec![f32::NAN; total];
    for t in pytorch_tensors(&labelled) {
        let view = file
            .tensor(&t.name)
            .map_err(|_| ImportError::Missing(t.name.clone()))?;
        if view.dtype() != safetensors::Dtype::F32 || view.shape() != t.shape.as_slice() {
            return Err(ImportError::Shape {
                name: t.name,
                got: format!("{:?} {:?}", view.dtype(), view.shape()),
                expected: t.shape,
            });
        }
        for (&index, chunk) in t.values.iter().zip(view.data().chunks_exact(4)) {
            let v = f32::from_le_bytes(chunk.try_into().expect("chunks of four bytes"));
            if !v.is_finite() {
                return Err(ImportError::NotFinite(t.name));
            }
            flat[index as usize] = v;
        }
    }
    if flat.iter().any(|v| v.is_nan()) {
        return Err(ImportError::Spec(
            "the PyTorch layout leaves some parameters out".into(),
        ));
    }
    let values: Vec<Vec<f32>> = starts
        .iter()
        .zip(&lens)
        .map(|(&s, &n)| flat[s..s + n].to_vec())
        .collect();
    net.set_param_values(&values).map_err(ImportError::Spec)?;
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spartan_core::spec::NamedParams;

    #[test]
    fn permute_transposes_and_reorders() {
        let m: Vec<f32> = (0..6).map(|v| v as f32).collect(); // 2×3
        let (t, d) = permute(ArrayViewD::from_shape(vec![2, 3], &m).unwrap(), &[1, 0]);
        assert_eq!(d, [3, 2]);
        assert_eq!(t, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let x: Vec<f32> = (0..24).map(|v| v as f32).collect(); // [2,3,4]
        let (y, d) = permute(
            ArrayViewD::from_shape(vec![2, 3, 4], &x).unwrap(),
            &[2, 0, 1],
        );
        assert_eq!(d, [4, 2, 3]);
        // y[k][i][j] = x[i][j][k]; check k = 1, i = 1, j = 2.
        let (k, i, j) = (1, 1, 2);
        assert_eq!(y[(k * 2 + i) * 3 + j], x[(i * 3 + j) * 4 + k]);
    }

    fn initialised(name: &str, seed: u64) -> Network {
        let spec = ArchSpec::named(name, NamedParams::default()).expect("a named architecture");
        Network::init(&spec, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed)).unwrap()
    }

    #[test]
    fn import_undoes_export_for_every_named_architecture() {
        for (seed, name) in ["standard", "candidate-a", "candidate-b", "candidate-c"]
            .into_iter()
            .enumerate()
        {
            let net = initialised(name, seed as u64);
            let back = from_safetensors(&to_safetensors(&net).unwrap()).unwrap();
            assert_eq!(back.to_model_bytes(), net.to_model_bytes(), "{name}");
        }
    }

    /// A safetensors file of the given tensors, with or without the spec metadata.
    fn file(tensors: &[NamedTensor], spec: Option<&ArchSpec>) -> Vec<u8> {
        let bytes: Vec<Vec<u8>> = tensors
            .iter()
            .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        let views: Vec<_> = tensors
            .iter()
            .zip(&bytes)
            .map(|(t, b)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    t.shape.clone(),
                    b,
                );
                (t.name.clone(), view.unwrap())
            })
            .collect();
        let meta = spec.map(|s| {
            HashMap::from([(
                "spartan.spec".to_string(),
                serde_json::to_string(s).unwrap(),
            )])
        });
        safetensors::serialize(views, meta).unwrap()
    }

    #[test]
    fn imports_name_what_is_wrong() {
        let net = initialised("candidate-c", 9);
        let tensors = pytorch_tensors(&net);
        let spec = Some(net.spec());
        let err = |bytes: &[u8]| from_safetensors(bytes).unwrap_err().to_string();

        assert!(err(b"not a safetensors file").contains("not a readable safetensors"));
        assert!(err(&file(&tensors, None)).contains("no `spartan.spec`"));
        let missing: Vec<_> = tensors
            .iter()
            .filter(|t| t.name != "conv2.bias")
            .cloned()
            .collect();
        assert!(err(&file(&missing, spec)).contains("`conv2.bias` is missing"));
        let mut reshaped = tensors.clone();
        let w = reshaped
            .iter_mut()
            .find(|t| t.name == "dense1.weight")
            .unwrap();
        w.shape = vec![w.shape[1], w.shape[0]];
        assert!(err(&file(&reshaped, spec)).contains("`dense1.weight` is F32 [512, 50]"));
        let mut nan = tensors.clone();
        nan[3].values[7] = f32::NAN;
        let name = nan[3].name.clone();
        assert!(
            err(&file(&nan, spec)).contains(&format!("`{name}` holds a value that is not finite"))
        );
        let mut bad_spec = net.spec().clone();
        bad_spec.layers.clear();
        assert!(err(&file(&tensors, Some(&bad_spec))).contains("bad `spartan.spec`"));
    }

    #[test]
    fn one_model_always_exports_to_the_same_bytes() {
        let net = initialised("candidate-b", 3);
        let first = to_safetensors(&net).unwrap();
        for _ in 0..5 {
            assert!(to_safetensors(&net).unwrap() == first, "exports differ");
        }
        // Still a file safetensors reads, tensors and metadata intact.
        let back = from_safetensors(&first).unwrap();
        assert_eq!(back.to_model_bytes(), net.to_model_bytes());
        let (_, meta) = safetensors::SafeTensors::read_metadata(&first).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
    }
}
