//! Accuracy and confusion matrix of a network on a data set.

use crate::data::{Batch, Pixel};
use crate::nn::{Network, Workspace};
use ndarray::{ArrayView4, Axis};
use spartan_core::float::argmax;

/// Images per forward pass when evaluating.
pub const EVAL_BATCH: usize = 256;

/// Predicted class of every image of `x` (network input, NHWC), in batches of
/// [`EVAL_BATCH`].
pub fn classify(net: &Network, x: ArrayView4<'_, f32>, ws: &mut Workspace) -> Vec<u8> {
    let mut preds = Vec::with_capacity(x.dim().0);
    for xs in x.axis_chunks_iter(Axis(0), EVAL_BATCH) {
        let logits = net.forward(xs, ws);
        preds.extend(
            logits
                .rows()
                .into_iter()
                .map(|row| argmax(row.as_slice().unwrap_or(&[])) as u8),
        );
    }
    preds
}

/// Predicted class of every image of `data` (converted to network input batch by batch).
pub fn predict(net: &Network, data: &Batch<impl Pixel>) -> Vec<u8> {
    let mut ws = Workspace::new();
    let mut preds = Vec::with_capacity(data.len());
    for (xs, _) in data.chunks(EVAL_BATCH) {
        preds.extend(classify(net, xs.mapv(Pixel::to_unit).view(), &mut ws));
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

/// Evaluates a network on labelled images.
pub fn evaluate(net: &Network, data: &Batch<impl Pixel>) -> Evaluation {
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
