//! Export of a trained network as safetensors, in PyTorch's layouts, so that other tools
//! can load the weights (layout documented in docs/safetensors.md).

use crate::nn::Network;
use ndarray::ArrayViewD;
use spartan_core::filter::FilterKind;
use spartan_core::spec::LayerSpec;
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
    safetensors::serialize(views, Some(meta))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
