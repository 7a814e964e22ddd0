//! Anything that labels images: the target of a black-box attack.

use crate::nn::{Network, Workspace};
use ndarray::ArrayView4;

/// A classifier queried for labels only (the black-box adversary's view).
pub trait Oracle {
    /// Predicted class of each image of `x` (NHWC, `[0, 1]`).
    fn classify(&mut self, x: ArrayView4<'_, f32>) -> Vec<u8>;
}

/// A float network as an oracle (its buffers are allocated per query).
impl Oracle for Network {
    fn classify(&mut self, x: ArrayView4<'_, f32>) -> Vec<u8> {
        crate::eval::classify(self, x, &mut Workspace::new())
    }
}

/// Fraction of `preds` equal to `labels`.
pub fn accuracy(preds: &[u8], labels: &[u8]) -> f64 {
    let hits = preds.iter().zip(labels).filter(|(a, b)| a == b).count();
    hits as f64 / labels.len().max(1) as f64
}
