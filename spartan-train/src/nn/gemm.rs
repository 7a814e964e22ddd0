//! Matrix multiplication for the layers: one safe entry point over row-major slices.
//!
//! Backed by `faer` (runtime-dispatched AVX2/AVX-512 kernels). Measured on the 2-core
//! dev machine for the dominant conv shape (576×288 · 288×32) it reaches ≈110 GFLOP/s
//! per core, against ≈65 for `matrixmultiply` (see docs/performance.md).

use faer::{Accum, MatMut, MatRef, Par};

/// How an operand is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// As stored (row-major `rows × cols`).
    N,
    /// Transposed: the slice holds the `cols × rows` row-major matrix.
    T,
}

/// `c (m×n) = op(a) (m×k) · op(b) (k×n)`, or `c += …` when `accumulate`.
///
/// Always single-threaded: the network runs chunks of samples on different cores,
/// which measured faster than splitting products (faer's own threads spin-wait, and
/// lose badly when the VM steals a core).
///
/// Slices must hold exactly the matrices described (checked; a mismatch is a bug).
pub fn matmul(
    c: &mut [f32],
    a: &[f32],
    op_a: Op,
    b: &[f32],
    op_b: Op,
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
) {
    assert_eq!(c.len(), m * n, "matmul: output size");
    assert_eq!(a.len(), m * k, "matmul: lhs size");
    assert_eq!(b.len(), k * n, "matmul: rhs size");
    let av = match op_a {
        Op::N => MatRef::from_row_major_slice(a, m, k),
        Op::T => MatRef::from_row_major_slice(a, k, m).transpose(),
    };
    let bv = match op_b {
        Op::N => MatRef::from_row_major_slice(b, k, n),
        Op::T => MatRef::from_row_major_slice(b, n, k).transpose(),
    };
    let cv = MatMut::from_row_major_slice_mut(c, m, n);
    let accum = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    faer::linalg::matmul::matmul(cv, accum, av, bv, 1.0f32, Par::Seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
            }
        }
        c
    }

    fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0.0; a.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = a[r * cols + c];
            }
        }
        t
    }

    #[test]
    fn all_operand_orders_match_the_naive_product() {
        let (m, k, n) = (7, 13, 5);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let at = transpose(&a, m, k);
        let bt = transpose(&b, k, n);
        for (aa, oa) in [(&a, Op::N), (&at, Op::T)] {
            for (bb, ob) in [(&b, Op::N), (&bt, Op::T)] {
                let mut c = vec![1.0; m * n];
                matmul(&mut c, aa, oa, bb, ob, (m, k, n), false);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-5);
                }
                matmul(&mut c, aa, oa, bb, ob, (m, k, n), true);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - 2.0 * y).abs() < 1e-5);
                }
            }
        }
    }
}
