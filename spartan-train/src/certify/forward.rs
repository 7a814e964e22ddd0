//! Forward bounds on every neuron: intervals (IBP) and, for neurons that depend on the
//! uncertain inputs, linear lower and upper functions of the domain's variables
//! (DeepPoly's relaxations, propagated forward). The tighter of the two is kept.
//!
//! The bounds are for the *reference* network: exact arithmetic, except that a binary
//! activation outputs the bit the `f32` network computes. Alongside, each neuron
//! carries `err`, a bound on how far the `f32` value can be from the reference one
//! (rounding `ρ` of each pre-activation, see [`super::net::Affine`], grown through
//! the layers); it decides which binary activations and ReLUs are stable for *both*
//! networks, and [`super::backward::noise`] turns the `ρ`s into a tight bound on the margins.
//!
//! Sparsity does the work: a neuron whose receptive field holds no uncertain input is
//! a constant (an interval of rounding width), and only the others carry coefficients.

use super::domain::Domain;
use super::net::{Affine, Net, Op, Pool};
use super::relax::{binary_range, Relu};
use spartan_core::activation::Activation;

/// Row index of a neuron without linear bounds.
pub(crate) const CONST: u32 = u32::MAX;

/// Bounds on every value of one tensor.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bounds {
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
    /// Per neuron: its row of linear bounds, or [`CONST`].
    pub row: Vec<u32>,
    /// Variables per row.
    pub vars: usize,
    /// Per row: constant of the lower and upper function.
    pub cl: Vec<f64>,
    pub cu: Vec<f64>,
    /// Per row: coefficients (`vars` each) of the lower and upper function.
    pub al: Vec<f64>,
    pub au: Vec<f64>,
    /// Per row: the lower and upper function are one (the value is known exactly).
    pub exact: Vec<bool>,
    /// Per neuron: bound on `|f32 value − reference value|`.
    pub err: Vec<f64>,
}

impl Bounds {
    fn new(n: usize, vars: usize) -> Self {
        Bounds {
            lo: vec![0.0; n],
            hi: vec![0.0; n],
            row: vec![CONST; n],
            err: vec![0.0; n],
            vars,
            ..Bounds::default()
        }
    }

    fn push_row(&mut self, cl: f64, cu: f64, al: &[f64], au: &[f64], exact: bool) -> u32 {
        let r = self.cl.len() as u32;
        self.exact.push(exact);
        self.cl.push(cl);
        self.cu.push(cu);
        self.al.extend_from_slice(al);
        self.au.extend_from_slice(au);
        r
    }

    pub fn coefs(&self, r: u32) -> (&[f64], &[f64]) {
        let s = r as usize * self.vars..(r as usize + 1) * self.vars;
        (&self.al[s.clone()], &self.au[s])
    }

    /// The first layer's input: exact, with one row per input that differs between
    /// options of its group.
    pub fn of_domain(dom: &Domain) -> Self {
        let mut b = Bounds::new(dom.base.len(), dom.vars);
        b.lo.copy_from_slice(&dom.base);
        b.hi.copy_from_slice(&dom.base);
        let mut a = vec![0.0; dom.vars];
        for g in &dom.groups {
            for (i, &e) in g.elements.iter().enumerate() {
                for k in 0..dom.width {
                    let (n, at) = (e * dom.width + k, i * dom.width + k);
                    let v0 = g.options[0].values[at];
                    a.fill(0.0);
                    for (j, o) in g.options.iter().enumerate().skip(1) {
                        a[g.var + j - 1] = o.values[at] - v0;
                        b.lo[n] = b.lo[n].min(o.values[at]);
                        b.hi[n] = b.hi[n].max(o.values[at]);
                    }
                    if a.iter().any(|&v| v != 0.0) {
                        b.row[n] = b.push_row(v0, v0, &a, &a, true);
                    }
                }
            }
        }
        b
    }

    /// Drops the coefficients (the backward pass needs intervals and row flags only).
    fn shrink(&mut self) {
        self.al = Vec::new();
        self.au = Vec::new();
    }
}

/// What the forward pass keeps of one layer for the backward pass.
pub(crate) enum OpBounds {
    Affine {
        /// Pre-activation intervals of the reference network.
        pre_lo: Vec<f64>,
        pre_hi: Vec<f64>,
        /// Bound on the `f32` rounding of each pre-activation.
        rho: Vec<f64>,
        /// Bound on `|f32 − reference|` of each pre-activation.
        pre_err: Vec<f64>,
        post: Bounds,
    },
    Pool {
        post: Bounds,
        /// Input (flat index) whose value bounds each output from below.
        pick: Vec<u32>,
        /// Whether the output *is* that input (every other one is dominated).
        exact: Vec<bool>,
    },
}

impl OpBounds {
    pub fn post(&self) -> &Bounds {
        match self {
            OpBounds::Affine { post, .. } | OpBounds::Pool { post, .. } => post,
        }
    }
}

/// The result of a forward pass.
pub(crate) struct Forward {
    pub input: Bounds,
    pub ops: Vec<OpBounds>,
}

impl Forward {
    /// Intervals of the logits.
    pub fn logits(&self) -> (&[f64], &[f64]) {
        let p = self
            .ops
            .last()
            .map(OpBounds::post)
            .expect("a network has layers");
        (&p.lo, &p.hi)
    }
}

/// Most variables for which linear bounds are carried forward (each neuron's bounds
/// cost that many numbers); beyond it, a network without a filter at a large ε,
/// intermediate bounds are intervals and only the margins are back-substituted.
pub(crate) const SYMBOLIC_VARS: usize = 256;

/// Runs the forward pass; `symbolic = false` is plain interval bound propagation.
pub(crate) fn forward(net: &Net, dom: &Domain, symbolic: bool) -> Forward {
    forward_with(net, dom, symbolic, false)
}

/// [`forward`], optionally tightening unstable pre-activations by back-substitution.
pub(crate) fn forward_with(net: &Net, dom: &Domain, symbolic: bool, refine: bool) -> Forward {
    let mut input = Bounds::of_domain(dom);
    if !symbolic {
        input.row.fill(CONST);
        input.shrink();
    }
    let mut ops: Vec<OpBounds> = Vec::with_capacity(net.ops.len());
    for op in &net.ops {
        let prev = ops.last_mut().map_or(&input, |o| match o {
            OpBounds::Affine { post, .. } | OpBounds::Pool { post, .. } => post,
        });
        let next = match op {
            Op::Affine(a) => {
                let (mut pre, rho, pre_err) = affine_pre(a, prev, dom);
                if refine && !ops.is_empty() && a.act != Activation::Linear {
                    let undecided = |n: usize| match a.act {
                        Activation::Relu => pre.lo[n] < 0.0 && pre.hi[n] > 0.0,
                        act => {
                            let (l, h) =
                                binary_range(act, pre.lo[n] - pre.err[n], pre.hi[n] + pre.err[n]);
                            l < h
                        }
                    };
                    let cand: Vec<usize> = (0..pre.lo.len()).filter(|&n| undecided(n)).collect();
                    for chunk in cand.chunks(32) {
                        let b =
                            super::backward::preactivation_bounds(net, &ops, dom, ops.len(), chunk);
                        for (&n, (l, h)) in chunk.iter().zip(b) {
                            pre.lo[n] = pre.lo[n].max(l);
                            pre.hi[n] = pre.hi[n].min(h);
                        }
                    }
                }
                finish_affine(a, pre, rho, pre_err, dom)
            }
            Op::Pool(p) => pool(p, prev),
        };
        ops.push(next);
    }
    Forward { input, ops }
}

/// An affine layer's pre-activation bounds, rounding bounds and error bounds.
fn affine_pre(a: &Affine, inp: &Bounds, dom: &Domain) -> (Bounds, Vec<f64>, Vec<f64>) {
    let (iw, ic) = (a.input.w, a.input.c);
    let (oh, ow, oc) = (a.output.h, a.output.w, a.output.c);
    let v = inp.vars;
    let n_out = a.output.len();
    let mut pre = Bounds::new(n_out, v);
    let mut rho = vec![0.0; n_out];
    // Per output channel, in midpoint-radius form (`[c − r, c + r]`, so the sums
    // vectorise): the interval of the whole sum, that of its constant inputs (the
    // constant part of the linear bounds), the magnitude bounding the rounding, and the
    // growth of the f32 error.
    let (mut mid, mut rad) = (vec![0.0; oc], vec![0.0; oc]);
    let (mut cmid, mut crad) = (vec![0.0; oc], vec![0.0; oc]);
    let (mut mag, mut grow) = (vec![0.0; oc], vec![0.0; oc]);
    let mut pre_err = vec![0.0; n_out];
    let (mut sl, mut su) = (vec![0.0; oc], vec![0.0; oc]);
    let (mut al, mut au) = (vec![0.0; oc * v], vec![0.0; oc * v]);
    let mut deps: Vec<(usize, usize)> = Vec::new();
    for oy in 0..oh {
        for ox in 0..ow {
            mid.copy_from_slice(&a.bias);
            cmid.copy_from_slice(&a.bias);
            rad.fill(0.0);
            crad.fill(0.0);
            for (m, b) in mag.iter_mut().zip(&a.bias) {
                *m = b.abs();
            }
            grow.fill(0.0);
            deps.clear();
            let mut exact = true;
            for ky in 0..a.kh {
                for kx in 0..a.kw {
                    let pix = ((oy + ky) * iw + ox + kx) * ic;
                    let wbase = (ky * a.kw + kx) * ic;
                    for ci in 0..ic {
                        let i = pix + ci;
                        let span = (wbase + ci) * oc..(wbase + ci + 1) * oc;
                        let (w, aw) = (&a.weight[span.clone()], &a.abs_weight[span]);
                        let (l, h, e) = (inp.lo[i], inp.hi[i], inp.err[i]);
                        let (c, r, m) = (0.5 * (l + h), 0.5 * (h - l), l.abs().max(h.abs()) + e);
                        let dep = inp.row[i] != CONST;
                        if dep {
                            deps.push((i, (wbase + ci) * oc));
                            exact &= inp.exact[inp.row[i] as usize];
                        } else {
                            exact &= l == h;
                            axpy(&mut cmid, c, w);
                            axpy(&mut crad, r, aw);
                        }
                        axpy(&mut mid, c, w);
                        axpy(&mut rad, r, aw);
                        axpy(&mut mag, m, aw);
                        if e != 0.0 {
                            axpy(&mut grow, e, aw);
                        }
                    }
                }
            }
            let out0 = (oy * ow + ox) * oc;
            for co in 0..oc {
                let r = a.gamma * mag[co] + a.tiny;
                rho[out0 + co] = r;
                pre_err[out0 + co] = r + grow[co];
                pre.lo[out0 + co] = mid[co] - rad[co];
                pre.hi[out0 + co] = mid[co] + rad[co];
                sl[co] = cmid[co] - crad[co];
                su[co] = cmid[co] + crad[co];
            }
            if deps.is_empty() {
                continue;
            }
            al.fill(0.0);
            au.fill(0.0);
            for &(i, wi) in &deps {
                let r = inp.row[i];
                let (cl, cu) = (inp.cl[r as usize], inp.cu[r as usize]);
                let (ail, aiu) = inp.coefs(r);
                for co in 0..oc {
                    let wv = a.weight[wi + co];
                    let (ol, ou) = (&mut al[co * v..(co + 1) * v], &mut au[co * v..(co + 1) * v]);
                    if wv > 0.0 {
                        sl[co] += wv * cl;
                        su[co] += wv * cu;
                        axpy(ol, wv, ail);
                        axpy(ou, wv, aiu);
                    } else if wv < 0.0 {
                        sl[co] += wv * cu;
                        su[co] += wv * cl;
                        axpy(ol, wv, aiu);
                        axpy(ou, wv, ail);
                    }
                }
            }
            for co in 0..oc {
                let n = out0 + co;
                let (ol, ou) = (&al[co * v..(co + 1) * v], &au[co * v..(co + 1) * v]);
                let (cl, cu) = (sl[co], su[co]);
                pre.lo[n] = pre.lo[n].max(cl + dom.min(ol));
                pre.hi[n] = pre.hi[n].min(cu + dom.max(ou));
                if ol.iter().chain(ou).any(|&x| x != 0.0) {
                    pre.row[n] = pre.push_row(cl, cu, ol, ou, exact);
                }
            }
        }
    }
    pre.err.copy_from_slice(&pre_err);
    (pre, rho, pre_err)
}

/// The activation of an affine layer, keeping what the backward passes need.
fn finish_affine(
    a: &Affine,
    pre: Bounds,
    rho: Vec<f64>,
    pre_err: Vec<f64>,
    dom: &Domain,
) -> OpBounds {
    let (pre_lo, pre_hi) = (pre.lo.clone(), pre.hi.clone());
    let post = activate(a.act, pre, dom);
    OpBounds::Affine {
        pre_lo,
        pre_hi,
        rho,
        pre_err,
        post,
    }
}

fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// The activation of an affine layer, applied to its pre-activation bounds in place.
fn activate(act: Activation, mut b: Bounds, dom: &Domain) -> Bounds {
    let v = b.vars;
    let mut f = Vec::new();
    for n in 0..b.lo.len() {
        let (l, h, e) = (b.lo[n], b.hi[n], b.err[n]);
        let r = b.row[n];
        match act {
            Activation::Linear => {}
            Activation::Relu => {
                // Both networks are off when even the f32 value cannot be positive.
                if h + e <= 0.0 {
                    b.err[n] = 0.0;
                }
                match Relu::new(l, h) {
                    Relu::Zero => {
                        (b.lo[n], b.hi[n], b.row[n]) = (0.0, 0.0, CONST);
                    }
                    Relu::Identity => {}
                    Relu::Unstable { alpha, slope, icpt } => {
                        (b.lo[n], b.hi[n]) = (0.0, h);
                        if r == CONST {
                            continue;
                        }
                        let ru = r as usize;
                        let span = v * ru..v * (ru + 1);
                        if let Some(g) = dom.single_group(&b.al[span.clone()], &b.au[span.clone()])
                        {
                            // A function of one finite group is linear in its
                            // one-hot variables: relu(L) ≤ y ≤ relu(U) exactly so.
                            let gr = &dom.groups[g];
                            let vars = gr.var..gr.var + gr.options.len() - 1;
                            for (c, a) in [
                                (&mut b.cl[ru], &mut b.al[span.clone()]),
                                (&mut b.cu[ru], &mut b.au[span.clone()]),
                            ] {
                                let base = c.max(0.0);
                                f.clear();
                                f.extend(a[vars.clone()].iter().map(|&x| (*c + x).max(0.0) - base));
                                a[vars.clone()].copy_from_slice(&f);
                                *c = base;
                            }
                        } else {
                            b.exact[ru] = false;
                            b.cl[ru] *= alpha;
                            b.cu[ru] = slope * b.cu[ru] + icpt;
                            for x in &mut b.al[span.clone()] {
                                *x *= alpha;
                            }
                            for x in &mut b.au[span] {
                                *x *= slope;
                            }
                        }
                    }
                }
            }
            act => {
                // The reference takes the f32 network's bit: decided only when the
                // f32 value's range decides it.
                let (lo, hi) = binary_range(act, l - e, h + e);
                (b.lo[n], b.hi[n], b.row[n], b.err[n]) = (lo, hi, CONST, 0.0);
            }
        }
    }
    b
}

/// Max pooling: exact where one input dominates the window, else `y ≥ y_pick` below
/// and the largest upper bound above.
fn pool(p: &Pool, inp: &Bounds) -> OpBounds {
    let (iw, c) = (p.input.w, p.input.c);
    let (oh, ow) = (p.output.h, p.output.w);
    let n_out = p.output.len();
    let v = inp.vars;
    let mut post = Bounds::new(n_out, v);
    let mut pick = vec![0u32; n_out];
    let mut exact = vec![false; n_out];
    let zeros = vec![0.0; v];
    for oy in 0..oh {
        for ox in 0..ow {
            for ch in 0..c {
                let window = (0..p.size).flat_map(|dy| {
                    (0..p.size).map(move |dx| ((oy * p.size + dy) * iw + ox * p.size + dx) * c + ch)
                });
                let best = window
                    .clone()
                    .max_by(|&i, &j| inp.lo[i].total_cmp(&inp.lo[j]).then(j.cmp(&i)))
                    .expect("a pool window is not empty");
                let floor = inp.lo[best];
                let mut top = inp.hi[best];
                let mut err = inp.err[best];
                let mut alone = true;
                for i in window {
                    if i != best && inp.hi[i] > floor {
                        alone = false;
                        top = top.max(inp.hi[i]);
                    }
                    // The f32 maximum is within the largest error of the reference's.
                    if i != best && inp.hi[i] + inp.err[i] > floor - inp.err[best] {
                        err = err.max(inp.err[i]);
                    }
                }
                let n = (oy * ow + ox) * c + ch;
                post.err[n] = err;
                (post.lo[n], post.hi[n]) = (floor, top);
                pick[n] = best as u32;
                exact[n] = alone;
                let r = inp.row[best];
                if r != CONST {
                    let ru = r as usize;
                    let (l_a, u_a) = inp.coefs(r);
                    post.row[n] = if alone {
                        post.push_row(inp.cl[ru], inp.cu[ru], l_a, u_a, inp.exact[ru])
                    } else {
                        post.push_row(inp.cl[ru], top, l_a, &zeros, false)
                    };
                }
            }
        }
    }
    OpBounds::Pool { post, pick, exact }
}
