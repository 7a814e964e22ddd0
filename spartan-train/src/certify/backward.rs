//! Lower bounds on the logit margins `z_label − z_j` by back-substitution (CROWN,
//! DeepPoly): the margin is written as a linear function of each layer's values in
//! turn, down to the first layer's input, relaxing each activation on the way with the
//! line that bounds it from the side the coefficient's sign asks for. Margins rather
//! than separate logits: what the two logits share cancels before any relaxation.
//!
//! Two shortcuts keep it cheap and tight: a neuron the forward pass found constant is
//! concretised where it is met, and a neuron the forward pass knows *exactly* as a
//! linear function of the input variables (every neuron of the first layer, and later
//! ones whose inputs all are) is replaced by that function — no relaxation needed,
//! and the substitution only travels through the cone of the uncertain inputs.
//!
//! These bounds are for the reference network (exact arithmetic); [`noise`] bounds
//! the distance of the `f32` margins from them.

use super::domain::Domain;
use super::forward::{Bounds, Forward, OpBounds, CONST};
use super::net::{Affine, Dims, Net, Op};
use super::relax::{Relu, Slope};
use spartan_core::activation::Activation;

/// Margin bounds for some classes.
pub(crate) struct Margins {
    /// The classes `j`, one per row.
    pub classes: Vec<usize>,
    /// Lower bound of `z_label − z_j` per row (reference network).
    pub lower: Vec<f64>,
    /// Per row: the bound's coefficients on the domain's variables.
    pub coefs: Vec<Vec<f64>>,
}

/// Coefficients `λ` over one tensor, one row per bound, layout
/// `[position][row][channel]`, nonzero only inside a box of positions (the cone of
/// the neurons bounded: a few pixels wide in the early layers).
struct Lambda {
    rows: usize,
    c: usize,
    w: usize,
    v: Vec<f64>,
    /// Rows `y0..y1` and columns `x0..x1` of the box.
    y0: usize,
    y1: usize,
    x0: usize,
    x1: usize,
}

impl Lambda {
    /// Zeros over `dims`, with the box `rows × cols` (position ranges).
    fn zeros(dims: Dims, rows: usize, (y0, y1): (usize, usize), (x0, x1): (usize, usize)) -> Self {
        Lambda {
            rows,
            c: dims.c,
            w: dims.w,
            v: vec![0.0; dims.len() * rows],
            y0,
            y1: y1.min(dims.h),
            x0,
            x1: x1.min(dims.w),
        }
    }

    /// Zeros over `dims`, the box the whole tensor.
    fn full(dims: Dims, rows: usize) -> Self {
        Lambda::zeros(dims, rows, (0, dims.h), (0, dims.w))
    }

    /// One row per class `j`: the margin `z_label − z_j` over the logits.
    fn margins(dims: Dims, label: usize, classes: &[usize]) -> Self {
        let mut lam = Lambda::full(dims, classes.len());
        for (r, &j) in classes.iter().enumerate() {
            lam.v[r * dims.c + label] += 1.0;
            lam.v[r * dims.c + j] -= 1.0;
        }
        lam
    }

    fn at(&self, pos: usize, r: usize, ch: usize) -> usize {
        (pos * self.rows + r) * self.c + ch
    }

    /// Positions inside the box.
    fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        (self.y0..self.y1).flat_map(move |y| (self.x0..self.x1).map(move |x| y * self.w + x))
    }

    /// Neurons (flat indices) inside the box.
    fn neurons(&self) -> impl Iterator<Item = usize> + '_ {
        let c = self.c;
        self.positions().flat_map(move |p| p * c..(p + 1) * c)
    }
}

/// Settles the part of `λ` that sits on constant or exactly known neurons of `post`:
/// constants (and outputs of binary activations, which have no linear relaxation)
/// go to `konst`, exact rows to the input coefficients `acc`.
fn settle(lam: &mut Lambda, post: &Bounds, binary: bool, konst: &mut [f64], acc: &mut [Vec<f64>]) {
    let c = lam.c;
    let neurons: Vec<usize> = lam.neurons().collect();
    for n in neurons {
        let (pos, ch) = (n / c, n % c);
        let row = post.row[n];
        for r in 0..lam.rows {
            let at = lam.at(pos, r, ch);
            let l = lam.v[at];
            if l == 0.0 {
                continue;
            }
            if row == CONST && (binary || post.lo[n] == post.hi[n]) {
                konst[r] += if l > 0.0 {
                    l * post.lo[n]
                } else {
                    l * post.hi[n]
                };
                lam.v[at] = 0.0;
            } else if row != CONST && post.exact[row as usize] {
                konst[r] += l * post.cl[row as usize];
                let (a, _) = post.coefs(row);
                for (x, y) in acc[r].iter_mut().zip(a) {
                    *x += l * y;
                }
                lam.v[at] = 0.0;
            }
        }
    }
}

/// Back-substitutes the margins of `label` against `classes` through the network.
pub(crate) fn margins(
    net: &Net,
    fwd: &Forward,
    dom: &Domain,
    label: usize,
    classes: &[usize],
) -> Margins {
    let last = net.ops.len() - 1;
    let lam = Lambda::margins(net.ops[last].output(), label, classes);
    let (lower, coefs) = substitute(net, &fwd.ops[..last], dom, last, lam);
    Margins {
        classes: classes.to_vec(),
        lower,
        coefs,
    }
}

/// Lower and upper bounds of the pre-activations `neurons` of layer `k` (an affine
/// layer) by back-substitution through the layers below it, whose bounds are `below`.
pub(crate) fn preactivation_bounds(
    net: &Net,
    below: &[OpBounds],
    dom: &Domain,
    k: usize,
    neurons: &[usize],
) -> Vec<(f64, f64)> {
    let out = net.ops[k].output();
    let rows = 2 * neurons.len();
    let (ys, xs) = (
        neurons.iter().map(|&n| n / out.c / out.w),
        neurons.iter().map(|&n| n / out.c % out.w),
    );
    let rows_box = (ys.clone().min().unwrap_or(0), ys.max().map_or(0, |y| y + 1));
    let cols_box = (xs.clone().min().unwrap_or(0), xs.max().map_or(0, |x| x + 1));
    let mut lam = Lambda::zeros(out, rows, rows_box, cols_box);
    for (i, &n) in neurons.iter().enumerate() {
        let (pos, ch) = (n / out.c, n % out.c);
        let at = lam.at(pos, 2 * i, ch);
        lam.v[at] = 1.0;
        let at = lam.at(pos, 2 * i + 1, ch);
        lam.v[at] = -1.0;
    }
    let (lower, _) = substitute(net, below, dom, k, lam);
    lower.chunks(2).map(|p| (p[0], -p[1])).collect()
}

/// Lower bounds of `λ·z_k` (λ over the pre-activations of affine layer `k`) over the
/// domain, and each bound's coefficients on the domain's variables.
fn substitute(
    net: &Net,
    below: &[OpBounds],
    dom: &Domain,
    k: usize,
    lam: Lambda,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let rows = lam.rows;
    let mut konst = vec![0.0; rows];
    let mut acc = vec![vec![0.0; dom.vars]; rows];
    let Op::Affine(top) = &net.ops[k] else {
        unreachable!("bounds are asked of affine layers")
    };
    let mut lam = affine_back(top, &lam, &mut konst);
    for (kk, (op, ob)) in net.ops[..k].iter().zip(below).enumerate().rev() {
        let post = ob.post();
        let binary = matches!(op, Op::Affine(a) if a.act.is_binary());
        settle(&mut lam, post, binary, &mut konst, &mut acc);
        // What is left sits on neurons with inexact linear bounds: relax them.
        match (op, ob) {
            (Op::Affine(a), OpBounds::Affine { pre_lo, pre_hi, .. }) => {
                if a.act == Activation::Relu {
                    relax_relu(&mut lam, pre_lo, pre_hi, &mut konst);
                }
                lam = affine_back(a, &lam, &mut konst);
            }
            (Op::Pool(p), OpBounds::Pool { pick, exact, .. }) => {
                // A pool never comes first: its input is a layer's output.
                let inp = below[kk - 1].post();
                lam = pool_back(p, pick, exact, inp, &lam, &mut konst);
            }
            _ => unreachable!("forward bounds follow the layers"),
        }
    }
    // λ over the first layer's input: base values, then the variables.
    let mut coefs = acc;
    for (n, &b) in dom.base.iter().enumerate() {
        let (pos, ch) = (n / lam.c, n % lam.c);
        for (r, k) in konst.iter_mut().enumerate() {
            *k += lam.v[lam.at(pos, r, ch)] * b;
        }
    }
    for g in &dom.groups {
        for (i, &e) in g.elements.iter().enumerate() {
            for k in 0..dom.width {
                let (n, at) = (e * dom.width + k, i * dom.width + k);
                let (pos, ch) = (n / lam.c, n % lam.c);
                let v0 = g.options[0].values[at];
                for (r, co) in coefs.iter_mut().enumerate() {
                    let l = lam.v[lam.at(pos, r, ch)];
                    if l != 0.0 {
                        for (j, o) in g.options.iter().enumerate().skip(1) {
                            co[g.var + j - 1] += l * (o.values[at] - v0);
                        }
                    }
                }
            }
        }
    }
    let lower = konst
        .iter()
        .zip(&coefs)
        .map(|(k, a)| k + dom.min(a))
        .collect();
    (lower, coefs)
}

/// `λ·y` over max-pool outputs → over their inputs. Below (`λ > 0`): `y ≥ y_p`, the
/// input with the largest lower bound. Above: `y = y_p + max_i (y_i − y_p)⁺ ≤ y_p +
/// Σ_i s_i·(y_i − y_p − d_i)`, each `(y_i − y_p)⁺` under the chord of its range
/// `[d_i, e_i] = [l_i − u_p, u_i − l_p]`: linear in the window, so what the inputs
/// share still cancels.
fn pool_back(
    p: &super::net::Pool,
    pick: &[u32],
    exact: &[bool],
    inp: &Bounds,
    lam: &Lambda,
    konst: &mut [f64],
) -> Lambda {
    let rows = lam.rows;
    let (ic, oc, iw, ow, s) = (p.input.c, p.output.c, p.input.w, p.output.w, p.size);
    let mut prev = Lambda::zeros(
        p.input,
        rows,
        (lam.y0 * s, lam.y1 * s),
        (lam.x0 * s, lam.x1 * s),
    );
    let mut chords: Vec<(usize, f64, f64)> = Vec::new();
    let neurons: Vec<usize> = lam.neurons().collect();
    for n in neurons {
        let (pos, ch) = (n / oc, n % oc);
        let best = pick[n] as usize;
        let slot = |i: usize| (i / ic, i % ic);
        if !exact[n] {
            let (oy, ox) = (pos / ow, pos % ow);
            chords.clear();
            for dy in 0..s {
                for dx in 0..s {
                    let i = ((oy * s + dy) * iw + ox * s + dx) * ic + ch;
                    let (d, e) = (inp.lo[i] - inp.hi[best], inp.hi[i] - inp.lo[best]);
                    if i != best && e > 0.0 {
                        chords.push((i, e / (e - d), d));
                    }
                }
            }
        }
        for (r, k) in konst.iter_mut().enumerate() {
            let l = lam.v[lam.at(pos, r, ch)];
            if l == 0.0 {
                continue;
            }
            let (bp, bc) = slot(best);
            if exact[n] || l > 0.0 {
                let at = prev.at(bp, r, bc);
                prev.v[at] += l;
                continue;
            }
            let mut own = l;
            for &(i, slope, d) in &chords {
                let (ip, icc) = slot(i);
                let at = prev.at(ip, r, icc);
                prev.v[at] += l * slope;
                own -= l * slope;
                *k -= l * slope * d;
            }
            let at = prev.at(bp, r, bc);
            prev.v[at] += own;
        }
    }
    prev
}

/// `λ·y` over ReLU outputs → over their inputs, with DeepPoly's triangle.
fn relax_relu(lam: &mut Lambda, pre_lo: &[f64], pre_hi: &[f64], konst: &mut [f64]) {
    let c = lam.c;
    let neurons: Vec<usize> = lam.neurons().collect();
    for n in neurons {
        let Relu::Unstable { alpha, slope, icpt } = Relu::new(pre_lo[n], pre_hi[n]) else {
            // Stable: identity, or zero (those are constants, already settled).
            continue;
        };
        let (pos, ch) = (n / c, n % c);
        for (r, k) in konst.iter_mut().enumerate() {
            let at = lam.at(pos, r, ch);
            let l = lam.v[at];
            if l > 0.0 {
                lam.v[at] = l * alpha;
            } else if l < 0.0 {
                lam.v[at] = l * slope;
                *k += l * icpt;
            }
        }
    }
}

/// `λ·z = λ·(W y + b)`: adds `λ·b` to the constants and returns `Wᵀλ`.
fn affine_back(a: &Affine, lam: &Lambda, konst: &mut [f64]) -> Lambda {
    let rows = lam.rows;
    let (iw, ic) = (a.input.w, a.input.c);
    let (ow, oc) = (a.output.w, a.output.c);
    // Output (y, x) reads inputs y..y + kh, x..x + kw.
    let mut prev = Lambda::zeros(
        a.input,
        rows,
        (lam.y0, lam.y1 + a.kh - 1),
        (lam.x0, lam.x1 + a.kw - 1),
    );
    for oy in lam.y0..lam.y1 {
        for ox in lam.x0..lam.x1 {
            let pos = oy * ow + ox;
            for (r, k) in konst.iter_mut().enumerate() {
                let at = lam.at(pos, r, 0);
                let lz = &lam.v[at..at + oc];
                if lz.iter().all(|&l| l == 0.0) {
                    continue;
                }
                *k += dot(lz, &a.bias);
                for ky in 0..a.kh {
                    for kx in 0..a.kw {
                        let ipos = (oy + ky) * iw + ox + kx;
                        let wbase = (ky * a.kw + kx) * ic;
                        let d0 = prev.at(ipos, r, 0);
                        for (ci, d) in prev.v[d0..d0 + ic].iter_mut().enumerate() {
                            *d += dot(&a.weight[(wbase + ci) * oc..(wbase + ci + 1) * oc], lz);
                        }
                    }
                }
            }
        }
    }
    prev
}

/// `a·b` in eight independent partial sums, which vectorise (one running sum cannot:
/// float addition does not reassociate); it was most of the branching's time.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len(), "dot of unequal lengths");
    const LANES: usize = 8;
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0.0f64; LANES];
    for (x, y) in ca.zip(cb) {
        for ((s, &xv), &yv) in acc.iter_mut().zip(x).zip(y) {
            *s += xv * yv;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Bound on `|f32 margin − reference margin|` for each class, over every input of
/// the domain the forward pass covered.
///
/// With `d_k = ẑ_k − z_k` (f32 minus reference pre-activations) and `δ_k` the
/// rounding of layer `k` (`|δ_k| ≤ ρ_k`), `d_k = W_k D_{k−1} d_{k−1} + δ_k`, where `D`
/// is diagonal: 1 for a ReLU active in both networks, 0 for one off in both or for a
/// binary activation (the reference copies the f32 bit), somewhere in `[0, 1]` for the
/// others (ReLU and max are monotone and 1-Lipschitz). So the margin's error is
/// `Σ_k μ_k·δ_k` with `μ_k = e·W_L D … W_{k+1} D_k`; `μ` is enclosed in intervals
/// layer by layer and the bound is `Σ_k |μ_k|·ρ_k` — signs cancel as in the network
/// itself, unlike interval growth of the errors.
pub(crate) fn noise(net: &Net, fwd: &Forward, label: usize, classes: &[usize]) -> Vec<f64> {
    let rows = classes.len();
    let out = net.ops.last().expect("a network has layers").output();
    let mut lo = Lambda::margins(out, label, classes);
    let mut hi = Lambda::margins(out, label, classes);
    let mut total = vec![0.0; rows];
    for (k, (op, ob)) in net.ops.iter().zip(&fwd.ops).enumerate().rev() {
        match (op, ob) {
            (
                Op::Affine(a),
                OpBounds::Affine {
                    pre_lo,
                    pre_hi,
                    rho,
                    pre_err,
                    ..
                },
            ) => {
                let c = lo.c;
                for n in 0..pre_lo.len() {
                    let d = match a.act {
                        Activation::Linear => Slope::One,
                        Activation::Relu => {
                            let (l, h) = (pre_lo[n] - pre_err[n], pre_hi[n] + pre_err[n]);
                            if h <= 0.0 {
                                Slope::Zero
                            } else if l >= 0.0 {
                                Slope::One
                            } else {
                                Slope::Unit
                            }
                        }
                        _ => Slope::Zero,
                    };
                    let (pos, ch) = (n / c, n % c);
                    for (r, t) in total.iter_mut().enumerate() {
                        let at = lo.at(pos, r, ch);
                        d.apply(&mut lo.v[at], &mut hi.v[at]);
                        *t += lo.v[at].abs().max(hi.v[at].abs()) * rho[n];
                    }
                }
                (lo, hi) = interval_back(a, &lo, &hi);
            }
            (Op::Pool(p), OpBounds::Pool { pick, .. }) => {
                let inp = fwd_input_of(fwd, k);
                let (ic, oc) = (p.input.c, p.output.c);
                let mut plo = Lambda::full(p.input, rows);
                let mut phi = Lambda::full(p.input, rows);
                let (iw, ow, s) = (p.input.w, p.output.w, p.size);
                for (n, &best) in pick.iter().enumerate() {
                    let (pos, ch) = (n / oc, n % oc);
                    let (oy, ox) = (pos / ow, pos % ow);
                    let best = best as usize;
                    let floor = inp.lo[best] - inp.err[best];
                    let window = (0..s).flat_map(|dy| {
                        (0..s).map(move |dx| ((oy * s + dy) * iw + ox * s + dx) * ic + ch)
                    });
                    let alone = window
                        .clone()
                        .all(|i| i == best || inp.hi[i] + inp.err[i] <= floor);
                    for r in 0..rows {
                        let (l, h) = (lo.v[lo.at(pos, r, ch)], hi.v[hi.at(pos, r, ch)]);
                        for i in window.clone() {
                            let d = if alone {
                                if i == best {
                                    Slope::One
                                } else {
                                    continue;
                                }
                            } else if i == best || inp.hi[i] + inp.err[i] > floor {
                                Slope::Unit
                            } else {
                                continue;
                            };
                            let (mut a, mut b) = (l, h);
                            d.apply(&mut a, &mut b);
                            let at = plo.at(i / ic, r, i % ic);
                            plo.v[at] += a;
                            phi.v[at] += b;
                        }
                    }
                }
                (lo, hi) = (plo, phi);
            }
            _ => unreachable!("forward bounds follow the layers"),
        }
    }
    total
}

/// The bounds a layer reads: the previous layer's output (a pool never comes first:
/// the first layer reads the filter's output, which is exact).
fn fwd_input_of(fwd: &Forward, op: usize) -> &Bounds {
    if op == 0 {
        &fwd.input
    } else {
        fwd.ops[op - 1].post()
    }
}

/// Interval enclosure of `Wᵀμ` for `μ ∈ [lo, hi]`.
fn interval_back(a: &Affine, lo: &Lambda, hi: &Lambda) -> (Lambda, Lambda) {
    let rows = lo.rows;
    let (iw, ic) = (a.input.w, a.input.c);
    let (ow, oc) = (a.output.w, a.output.c);
    let mut plo = Lambda::full(a.input, rows);
    let mut phi = Lambda::full(a.input, rows);
    let (mut mid, mut rad) = (vec![0.0; oc], vec![0.0; oc]);
    for oy in 0..a.output.h {
        for ox in 0..ow {
            let pos = oy * ow + ox;
            for r in 0..rows {
                let at = lo.at(pos, r, 0);
                let (ml, mh) = (&lo.v[at..at + oc], &hi.v[at..at + oc]);
                if ml.iter().chain(mh).all(|&x| x == 0.0) {
                    continue;
                }
                // Midpoint and radius: Wᵀ[c − ρ, c + ρ] = [Wᵀc − |W|ᵀρ, Wᵀc + |W|ᵀρ].
                for co in 0..oc {
                    mid[co] = 0.5 * (ml[co] + mh[co]);
                    rad[co] = 0.5 * (mh[co] - ml[co]);
                }
                for ky in 0..a.kh {
                    for kx in 0..a.kw {
                        let ipos = (oy + ky) * iw + ox + kx;
                        let wbase = (ky * a.kw + kx) * ic;
                        let d0 = plo.at(ipos, r, 0);
                        for ci in 0..ic {
                            let span = (wbase + ci) * oc..(wbase + ci + 1) * oc;
                            let c = dot(&a.weight[span.clone()], &mid);
                            let e = dot(&a.abs_weight[span], &rad);
                            plo.v[d0 + ci] += c - e;
                            phi.v[d0 + ci] += c + e;
                        }
                    }
                }
            }
        }
    }
    (plo, phi)
}
