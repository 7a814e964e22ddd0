//! Softmax cross-entropy, the training loss (softmax is part of the loss, not the model).

/// Cross-entropy of one row of logits against class `y`; writes `scale · ∂/∂logits`
/// into `grad` (`scale` is `1 / batch` for a mean loss).
pub fn cross_entropy_row(row: &[f32], y: usize, scale: f32, grad: &mut [f32]) -> f32 {
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

/// Mean cross-entropy of `logits` (`batch × classes`, row-major) against `labels`, and
/// its gradient with respect to the logits, written into `grad`.
pub fn softmax_cross_entropy(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    grad: &mut [f32],
) -> f32 {
    let batch = labels.len();
    let mut total = 0.0f64;
    for ((row, g), &y) in logits
        .chunks_exact(classes)
        .zip(grad.chunks_exact_mut(classes))
        .zip(labels)
    {
        total += f64::from(cross_entropy_row(row, y as usize, 1.0 / batch as f32, g));
    }
    (total / batch as f64) as f32
}

/// Softmax probabilities of one row of logits.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|z| (z - max).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let logits = vec![0.3f32, -1.2, 2.0, 0.1, 0.5, -0.7];
        let labels = [2u8, 0];
        let mut g = vec![0.0; 6];
        let l0 = softmax_cross_entropy(&logits, &labels, 3, &mut g);
        // Uniform logits give ln(classes).
        let mut tmp = vec![0.0; 3];
        let u = softmax_cross_entropy(&[1.0; 3], &[1], 3, &mut tmp);
        assert!((u - 3f32.ln()).abs() < 1e-6);
        let h = 1e-3;
        for i in 0..6 {
            let mut p = logits.clone();
            p[i] += h;
            let lp = softmax_cross_entropy(&p, &labels, 3, &mut tmp.repeat(2));
            p[i] -= 2.0 * h;
            let lm = softmax_cross_entropy(&p, &labels, 3, &mut tmp.repeat(2));
            let fd = (lp - lm) / (2.0 * h);
            assert!((fd - g[i]).abs() < 1e-3, "logit {i}: {fd} vs {}", g[i]);
        }
        assert!(l0 > 0.0);
    }
}
