//! Softmax cross-entropy, the training loss (softmax is part of the loss, not the model).

use ndarray::{Array1, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};

/// Cross-entropy of one row of logits against class `y`; writes `scale · ∂/∂logits`
/// into `grad` (`scale` is `1 / batch` for a mean loss).
pub fn cross_entropy_row(
    row: ArrayView1<'_, f32>,
    y: usize,
    scale: f32,
    mut grad: ArrayViewMut1<'_, f32>,
) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (gi, &z) in grad.iter_mut().zip(row) {
        *gi = (z - max).exp();
        sum += *gi;
    }
    for (k, gi) in grad.iter_mut().enumerate() {
        let p = *gi / sum;
        *gi = (p - if k == y { 1.0 } else { 0.0 }) * scale;
    }
    sum.ln() - (row[y] - max)
}

/// Mean cross-entropy of `logits` (`batch × classes`) against `labels`, and its
/// gradient with respect to the logits, written into `grad`.
pub fn softmax_cross_entropy(
    logits: ArrayView2<'_, f32>,
    labels: &[u8],
    mut grad: ArrayViewMut2<'_, f32>,
) -> f32 {
    let batch = labels.len();
    let mut total = 0.0f64;
    for ((row, g), &y) in logits
        .axis_iter(Axis(0))
        .zip(grad.axis_iter_mut(Axis(0)))
        .zip(labels)
    {
        total += f64::from(cross_entropy_row(row, y as usize, 1.0 / batch as f32, g));
    }
    (total / batch as f64) as f32
}

/// Softmax probabilities of one row of logits.
pub fn softmax(logits: ArrayView1<'_, f32>) -> Array1<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e = logits.mapv(|z| (z - max).exp());
    let s: f32 = e.iter().sum();
    e.mapv(|v| v / s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        use ndarray::{array, Array2};
        let logits = array![[0.3f32, -1.2, 2.0], [0.1, 0.5, -0.7]];
        let labels = [2u8, 0];
        let mut g = Array2::zeros((2, 3));
        let l0 = softmax_cross_entropy(logits.view(), &labels, g.view_mut());
        // Uniform logits give ln(classes).
        let mut tmp = Array2::zeros((2, 3));
        let u = softmax_cross_entropy(array![[1.0f32; 3]].view(), &[1], tmp.view_mut());
        assert!((u - 3f32.ln()).abs() < 1e-6);
        let h = 1e-3;
        for i in 0..2 {
            for j in 0..3 {
                let mut p = logits.clone();
                p[[i, j]] += h;
                let lp = softmax_cross_entropy(p.view(), &labels, tmp.view_mut());
                p[[i, j]] -= 2.0 * h;
                let lm = softmax_cross_entropy(p.view(), &labels, tmp.view_mut());
                let fd = (lp - lm) / (2.0 * h);
                assert!(
                    (fd - g[[i, j]]).abs() < 1e-3,
                    "logit {i},{j}: {fd} vs {}",
                    g[[i, j]]
                );
            }
        }
        assert!(l0 > 0.0);
        let p = softmax(logits.row(0));
        assert!((p.sum() - 1.0).abs() < 1e-6 && p[2] > p[0] && p[0] > p[1]);
    }
}
