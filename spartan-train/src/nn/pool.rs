//! Non-overlapping max pooling (window = stride, floor), NHWC.

use spartan_core::spec::Shape;

/// Forward pass over `n` samples.
pub fn forward(x: &[f32], n: usize, input: Shape, output: Shape, size: usize, y: &mut [f32]) {
    let (iw, c) = (input.width as usize, input.channels as usize);
    let (oh, ow) = (output.height as usize, output.width as usize);
    for (xs, ys) in x
        .chunks(input.len())
        .zip(y.chunks_mut(output.len()))
        .take(n)
    {
        for oy in 0..oh {
            for ox in 0..ow {
                let out = &mut ys[(oy * ow + ox) * c..(oy * ow + ox + 1) * c];
                out.fill(f32::NEG_INFINITY);
                for dy in 0..size {
                    for dx in 0..size {
                        let src = ((oy * size + dy) * iw + ox * size + dx) * c;
                        for (o, &v) in out.iter_mut().zip(&xs[src..src + c]) {
                            if v > *o {
                                *o = v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Backward pass: each output gradient goes to the first input that holds the window's
/// maximum (the same tie rule as the forward `>` comparison). Overwrites `gx`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    n: usize,
    input: Shape,
    output: Shape,
    size: usize,
    y: &[f32],
    gy: &[f32],
    gx: &mut [f32],
) {
    let (iw, c) = (input.width as usize, input.channels as usize);
    let (oh, ow) = (output.height as usize, output.width as usize);
    gx.fill(0.0);
    for s in 0..n {
        let xs = &x[s * input.len()..(s + 1) * input.len()];
        let gxs = &mut gx[s * input.len()..(s + 1) * input.len()];
        let ys = &y[s * output.len()..(s + 1) * output.len()];
        let gys = &gy[s * output.len()..(s + 1) * output.len()];
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let o = (oy * ow + ox) * c + ch;
                    'window: for dy in 0..size {
                        for dx in 0..size {
                            let i = ((oy * size + dy) * iw + ox * size + dx) * c + ch;
                            if xs[i] == ys[o] {
                                gxs[i] += gys[o];
                                break 'window;
                            }
                        }
                    }
                }
            }
        }
    }
}
