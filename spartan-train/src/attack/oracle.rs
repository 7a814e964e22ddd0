//! Anything that labels images: the target of a black-box attack.

use crate::eval::EVAL_BATCH;
use crate::nn::Network;
use spartan_core::float::argmax;

/// A classifier queried for labels only (the black-box adversary's view).
pub trait Oracle {
    /// Predicted class of each of the `n` images in `x` (HWC, `[0, 1]`).
    fn classify(&mut self, x: &[f32], n: usize) -> Vec<u8>;
}

impl Oracle for Network {
    fn classify(&mut self, x: &[f32], n: usize) -> Vec<u8> {
        let len = self.input_len();
        let classes = self.classes();
        let mut out = Vec::with_capacity(n);
        for chunk in x[..n * len].chunks(EVAL_BATCH * len) {
            let logits = self.forward(chunk, chunk.len() / len);
            out.extend(logits.chunks(classes).map(|r| argmax(r) as u8));
        }
        out
    }
}

/// Fraction of `preds` equal to `labels`.
pub fn accuracy(preds: &[u8], labels: &[u8]) -> f64 {
    let hits = preds.iter().zip(labels).filter(|(a, b)| a == b).count();
    hits as f64 / labels.len().max(1) as f64
}
