//! The inputs a certificate covers, as the network's first layer sees them.
//!
//! After a filter, each input element (pixel) can only show the few codes its ε-interval
//! reaches ([`spartan_core::codes`]), so the first layer's input ranges over a product
//! of small finite sets. Most elements reach one code and are fixed; the others form
//! *groups* whose options are their codes. Without a filter a group is a pixel's
//! interval, with its two ends as options.
//!
//! A linear function of the first layer's input is written over variables `t`: option
//! `j ≥ 1` of group `g` adds `t_{g,j}·(v_j − v_0)` to the input of option 0. Its exact
//! minimum over the domain is `Σ_g min(0, min_j a_{g,j})`: one option per group (a
//! finite group) or one end of the interval (a linear function of one variable).

use super::net::{Front, Net};
use serde::{Deserialize, Serialize};
use spartan_core::codes::{nearest_codes, nearest_pixel_codes};
use spartan_core::filter::pixel_to_unit;

/// Which perturbed inputs a certificate covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grid {
    /// Every `f32` input `x'` with `|x' − x| ≤ ε` (real arithmetic) inside `[0, 1]`.
    Real,
    /// Every raw image a device can receive: pixels `q` with
    /// `|q/255 − x| ≤ ε` (evaluated in `f32`, as the attacks and data code do).
    U8,
}

impl Grid {
    /// `real` or `u8`.
    pub fn name(self) -> &'static str {
        match self {
            Grid::Real => "real",
            Grid::U8 => "u8",
        }
    }
}

/// The `f32` inputs within `eps` of `x` in `[0, 1]`: the smallest float `≥ x − ε` and
/// the largest `≤ x + ε` (both differences are exact in f64 for the floats involved,
/// and rounding to the nearest f64 never crosses a float).
pub fn real_ball(x: f32, eps: f32) -> (f32, f32) {
    let (x64, e64) = (f64::from(x), f64::from(eps));
    let lo = ceil_f32(x64 - e64).max(0.0);
    let hi = floor_f32(x64 + e64).min(1.0);
    (lo.min(x), hi.max(x))
}

/// The raw pixels `q` whose input `pixel_to_unit(q)` lies within `eps` of that of `p`,
/// tested in `f32` exactly as written: `|q/255 − p/255| ≤ ε`. The set is an interval
/// (the test is monotone on each side of `p`).
pub fn u8_ball(p: u8, eps: f32) -> (u8, u8) {
    let x = pixel_to_unit(p);
    let inside = |q: u8| (pixel_to_unit(q) - x).abs() <= eps;
    let lo = (0..=p).find(|&q| inside(q)).unwrap_or(p);
    let hi = (p..=255).rev().find(|&q| inside(q)).unwrap_or(p);
    (lo, hi)
}

fn ceil_f32(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) < v {
        f.next_up()
    } else {
        f
    }
}

fn floor_f32(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) > v {
        f.next_down()
    } else {
        f
    }
}

/// One reachable value of a group: what the first layer sees, and an input producing it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GroupOption {
    /// Per element of the group, its `width` first-layer inputs (code bits, or the
    /// pixel).
    pub values: Vec<f64>,
    /// Per element, an input value in the ball giving them (nearest the clean input).
    pub pixels: Vec<f32>,
}

/// Input elements that can show more than one value, taken together: a pixel, or a
/// cluster of nearby pixels whose options are every combination of theirs. Whatever
/// depends on one group only is known exactly (see the module docs), so clustering
/// pixels whose effects meet early makes their interaction exact.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Group {
    /// Input elements (HWC indices of the image).
    pub elements: Vec<usize>,
    /// Two or more options; option 0 is in the base input.
    pub options: Vec<GroupOption>,
    /// First variable (`t_{g,1}`); the group owns `options.len() − 1`.
    pub var: usize,
}

/// A product of per-element choices: the domain of a certificate or of a branch.
#[derive(Clone, Debug)]
pub(crate) struct Domain {
    /// First-layer inputs per element (β, or 1 without a filter).
    pub width: usize,
    /// The first layer's input with every group at option 0.
    pub base: Vec<f64>,
    /// The network input with every group at option 0: a point of the ball.
    pub pixels: Vec<f32>,
    /// Elements that are not fixed.
    pub groups: Vec<Group>,
    /// Number of variables.
    pub vars: usize,
    /// Raw pixel intervals (`t ∈ [0, 1]`) rather than finite code sets.
    pub continuous: bool,
}

impl Domain {
    /// The ε-ball around `image` (raw pixels) on `grid`, uncertain pixels clustered
    /// into groups of at most `cluster` combined options (1: one group per pixel).
    /// `None` if a filter element reaches more codes than
    /// [`spartan_core::codes::MAX_CODES`].
    pub fn ball(net: &Net, image: &[u8], eps: f32, grid: Grid, cluster: usize) -> Option<Domain> {
        let width = net.width();
        let mut dom = Domain {
            width,
            base: vec![0.0; image.len() * width],
            pixels: image.iter().map(|&p| pixel_to_unit(p)).collect(),
            groups: Vec::new(),
            vars: 0,
            continuous: matches!(net.front, Front::Raw),
        };
        let mut uncertain = Vec::new();
        for (e, &p) in image.iter().enumerate() {
            let options = element_options(net, e, p, eps, grid)?;
            dom.base[e * width..(e + 1) * width].copy_from_slice(&options[0].values);
            dom.pixels[e] = options[0].pixels[0];
            if options.len() > 1 {
                uncertain.push(Group {
                    elements: vec![e],
                    options,
                    var: 0,
                });
            }
        }
        // Raw intervals are continuous: their combinations are not a product of
        // finitely many points, so they stay apart.
        let cluster = if dom.continuous { 1 } else { cluster };
        dom.groups = clusters(uncertain, net.input_width(), cluster);
        dom.renumber();
        Some(dom)
    }

    /// Gives each group its first variable, in order.
    fn renumber(&mut self) {
        let mut var = 0;
        for g in &mut self.groups {
            g.var = var;
            var += g.options.len() - 1;
        }
        self.vars = var;
    }

    /// Uncertain input elements (pixels).
    pub fn uncertain(&self) -> usize {
        self.groups.iter().map(|g| g.elements.len()).sum()
    }

    /// The same domain with group `g` fixed to its option `j`.
    pub fn fix(&self, g: usize, j: usize) -> Domain {
        let mut d = self.clone();
        let group = d.groups.remove(g);
        let w = d.width;
        for (i, &e) in group.elements.iter().enumerate() {
            d.base[e * w..(e + 1) * w]
                .copy_from_slice(&group.options[j].values[i * w..(i + 1) * w]);
            d.pixels[e] = group.options[j].pixels[i];
        }
        d.renumber();
        d
    }

    /// `Σ_g pick(0, a_{g,1}, a_{g,2}, …)`: a group's option 0 adds nothing.
    fn per_group(&self, a: &[f64], pick: fn(f64, f64) -> f64) -> f64 {
        self.groups
            .iter()
            .map(|g| {
                a[g.var..g.var + g.options.len() - 1]
                    .iter()
                    .fold(0.0, |m, &v| pick(m, v))
            })
            .sum()
    }

    /// Exact minimum of `a·t` over the domain.
    pub fn min(&self, a: &[f64]) -> f64 {
        self.per_group(a, f64::min)
    }

    /// Exact maximum of `a·t` over the domain.
    pub fn max(&self, a: &[f64]) -> f64 {
        self.per_group(a, f64::max)
    }

    /// The option of group `g` that minimises `a·t` (0 on ties).
    pub fn argmin_option(&self, g: usize, a: &[f64]) -> usize {
        let gr = &self.groups[g];
        let (mut best, mut val) = (0, 0.0f64);
        for (j, &v) in a[gr.var..gr.var + gr.options.len() - 1].iter().enumerate() {
            if v < val {
                (best, val) = (j + 1, v);
            }
        }
        best
    }

    /// The network input that minimises `a·t`: each group at its minimising option.
    pub fn argmin_input(&self, a: &[f64]) -> Vec<f32> {
        let mut x = self.pixels.clone();
        for (g, gr) in self.groups.iter().enumerate() {
            let o = &gr.options[self.argmin_option(g, a)];
            for (&e, &v) in gr.elements.iter().zip(&o.pixels) {
                x[e] = v;
            }
        }
        x
    }

    /// The one finite group every nonzero of `a` and `b` belongs to, if there is one.
    pub fn single_group(&self, a: &[f64], b: &[f64]) -> Option<usize> {
        if self.continuous {
            return None;
        }
        let first = a.iter().zip(b).position(|(x, y)| *x != 0.0 || *y != 0.0)?;
        // Groups are in variable order: find the one owning `first`.
        let g = self
            .groups
            .partition_point(|g| g.var + g.options.len() - 1 <= first);
        let end = self.groups[g].var + self.groups[g].options.len() - 1;
        a[end..]
            .iter()
            .chain(&b[end..])
            .all(|&x| x == 0.0)
            .then_some(g)
    }

    /// How much group `g` can lower `a·t` (its share of the minimum).
    pub fn drop_of(&self, g: usize, a: &[f64]) -> f64 {
        let gr = &self.groups[g];
        -a[gr.var..gr.var + gr.options.len() - 1]
            .iter()
            .fold(0.0f64, |m, &v| m.min(v))
    }
}

/// The values element `e` (raw pixel `p`) can take within `eps` on `grid`, the clean
/// one first: codes after a filter, the two ends of its interval without one.
fn element_options(net: &Net, e: usize, p: u8, eps: f32, grid: Grid) -> Option<Vec<GroupOption>> {
    let x = pixel_to_unit(p);
    let mut options = Vec::new();
    match &net.front {
        Front::Raw => {
            let (lo, hi) = match grid {
                Grid::Real => real_ball(x, eps),
                Grid::U8 => {
                    let (a, b) = u8_ball(p, eps);
                    (pixel_to_unit(a), pixel_to_unit(b))
                }
            };
            for v in [lo, hi] {
                if options.is_empty() || v > lo {
                    options.push(GroupOption {
                        values: vec![f64::from(v)],
                        pixels: vec![v],
                    });
                }
            }
        }
        Front::Filter { beta, units } => {
            let mut add = |code: u32, pixel: f32| {
                options.push(GroupOption {
                    values: (0..*beta).map(|k| f64::from((code >> k) & 1)).collect(),
                    pixels: vec![pixel],
                })
            };
            match grid {
                Grid::Real => {
                    let (lo, hi) = real_ball(x, eps);
                    if !nearest_codes(&units[e], x, lo, hi, add) {
                        return None;
                    }
                }
                Grid::U8 => {
                    let (a, b) = u8_ball(p, eps);
                    nearest_pixel_codes(&units[e], p, a, b, |c, q| add(c, pixel_to_unit(q)));
                }
            }
        }
    }
    Some(options)
}

/// Merges single-element groups (in raster order) into clusters of nearby pixels —
/// within two rows and columns of a member, so inside one 3×3 convolution window of
/// each other's — while the product of their option counts stays at most `cap`.
fn clusters(singles: Vec<Group>, image_width: usize, cap: usize) -> Vec<Group> {
    let at = |e: usize| (e / image_width, e % image_width);
    let mut out: Vec<Group> = Vec::new();
    for g in singles {
        let (r, c) = at(g.elements[0]);
        let near = |h: &Group| {
            h.elements.iter().any(|&f| {
                let (fr, fc) = at(f);
                fr.abs_diff(r) <= 2 && fc.abs_diff(c) <= 2
            })
        };
        match out
            .iter_mut()
            .rev()
            .find(|h| h.options.len() * g.options.len() <= cap && near(h))
        {
            Some(h) => *h = combine(h, &g),
            None => out.push(g),
        }
    }
    out
}

/// The group of every combination of `a`'s and `b`'s options (option 0 with 0 first).
fn combine(a: &Group, b: &Group) -> Group {
    let mut options = Vec::with_capacity(a.options.len() * b.options.len());
    for ob in &b.options {
        for oa in &a.options {
            options.push(GroupOption {
                values: oa.values.iter().chain(&ob.values).copied().collect(),
                pixels: oa.pixels.iter().chain(&ob.pixels).copied().collect(),
            });
        }
    }
    Group {
        elements: a.elements.iter().chain(&b.elements).copied().collect(),
        options,
        var: 0,
    }
}
