//! Accuracy and confusion matrix of a network on a data set.

use crate::data::Dataset;
use crate::nn::Network;
use spartan_core::filter::pixel_to_unit;
use spartan_core::float::argmax;

/// Images per forward pass when evaluating.
pub const EVAL_BATCH: usize = 256;

/// Converts images `range` of `data` into network input (`u8 / 255`, shared with core).
pub fn batch_input(data: &Dataset, range: std::ops::Range<usize>, out: &mut Vec<f32>) {
    let n = data.image_len();
    out.clear();
    out.extend(
        data.images[range.start * n..range.end * n]
            .iter()
            .map(|&p| pixel_to_unit(p)),
    );
}

/// Predicted class of every image.
pub fn predict(net: &mut Network, data: &Dataset) -> Vec<u8> {
    let mut preds = Vec::with_capacity(data.len());
    let mut x = Vec::new();
    let classes = net.classes();
    for start in (0..data.len()).step_by(EVAL_BATCH) {
        let end = (start + EVAL_BATCH).min(data.len());
        batch_input(data, start..end, &mut x);
        let logits = net.forward(&x, end - start);
        preds.extend(logits.chunks(classes).map(|row| argmax(row) as u8));
    }
    preds
}

/// Accuracy and confusion counts.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Fraction of correct predictions in `[0, 1]`.
    pub accuracy: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Number of examples.
    pub n: usize,
}

/// Scores predictions against labels.
pub fn score(preds: &[u8], labels: &[u8], classes: usize) -> Evaluation {
    let mut confusion = vec![vec![0; classes]; classes];
    let mut correct = 0;
    for (&p, &y) in preds.iter().zip(labels) {
        if (y as usize) < classes && (p as usize) < classes {
            confusion[y as usize][p as usize] += 1;
        }
        correct += usize::from(p == y);
    }
    Evaluation {
        accuracy: correct as f64 / labels.len().max(1) as f64,
        confusion,
        n: labels.len(),
    }
}

/// Evaluates a network on a data set.
pub fn evaluate(net: &mut Network, data: &Dataset) -> Evaluation {
    score(&predict(net, data), &data.labels, net.classes())
}

impl Evaluation {
    /// The confusion matrix as aligned text.
    pub fn confusion_table(&self) -> String {
        let mut s = String::from("true\\pred");
        for c in 0..self.confusion.len() {
            s += &format!("{c:>6}");
        }
        s.push('\n');
        for (t, row) in self.confusion.iter().enumerate() {
            s += &format!("{t:>9}");
            for v in row {
                s += &format!("{v:>6}");
            }
            s.push('\n');
        }
        s
    }
}
