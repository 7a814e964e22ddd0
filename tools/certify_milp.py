"""Exact (MILP) robustness check of a filtered Spartan model on the u8 grid — a measurement
for issue 16 of what an off-the-shelf complete method costs, not part of `spartan certify`
(whose proofs also cover f32 rounding; this does not). Written for candidate-c's shape:
a Conv-Filtering layer with Cos-HSAT, then the layer list in LAYERS below.

Every uncertain pixel picks one of the filter codes its ball reaches (one-hot binaries),
every unstable ReLU and undecided max-pool window gets binaries (MIPVerify's encoding),
with big-M constants from bounds tightened by CROWN back-substitution (`BOUNDS=forward`:
forward symbolic bounds only). For every other class j whose back-substituted margin
bound is not already positive, HiGHS minimises z_y - z_j with the objective cut off at 0,
so "infeasible" means "proven for j"; a solution below 0 is checked by inference.

    spartan export --model models/candidate-c.f32.spartan --out c.safetensors
    python tools/certify_milp.py c.safetensors RADIUS FIRST COUNT SECONDS

RADIUS is the ball on the u8 grid (25 for eps 0.1), FIRST/COUNT the MNIST test images
(read from ../shared/data/mnist), SECONDS HiGHS's time limit per image. Needs torch,
numpy, scipy and highspy (`pip install torch numpy scipy highspy`). One JSON line per
image. Switches (environment variables):
  NOPRESOLVE=1  HiGHS presolve off. Use it: on these models HiGHS 1.16's presolve
                reports feasible problems infeasible (DEBUG=1 NOBOUND=1 shows it);
  NOBOUND=1     minimise the margins instead of cutting off at 0;
  DEBUG=1       check every constraint at the clean image, then fix every binary to
                its clean value (FIXALL=1: every variable) — the model must stay feasible;
  SAMPLE=N      no MILP: the lowest margin found by N random starts + greedy descent;
  VERBOSE=1     HiGHS's log.
"""
import gzip, json, sys, time
import numpy as np
import torch
from safetensors.numpy import load_file
import torch.nn.functional as F
import highspy, os
import scipy.sparse as sp

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)

W = load_file(sys.argv[1])
EPS_Q = int(sys.argv[2])          # u8 radius (25 for eps 0.1)
FIRST, COUNT, TLIM = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
assert set(W) == {f"{n}.{p}" for n in ("filter", "conv1", "conv2", "conv3", "conv4", "dense1", "dense2")
                  for p in ("weight", "bias")}, "not candidate-c's layers"
T = {k: torch.tensor(v.astype(np.float64)) for k, v in W.items()}
fw = W["filter.weight"].reshape(-1)
fb = W["filter.bias"]
D = os.environ.get("SPARTAN_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared/data/mnist")) + "/"
imgs = np.frombuffer(gzip.open(D + "t10k-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 28, 28)
labels = np.frombuffer(gzip.open(D + "t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8)

def code(q):
    x = np.float32(q) / np.float32(255)
    z = (fw * x + fb).astype(np.float32)
    return (np.cos(z) > 0).astype(np.float64)

CODES = np.stack([code(q) for q in range(256)])  # 256 x 4

LAYERS = [("conv", "conv1"), ("relu",), ("conv", "conv2"), ("relu",), ("pool",),
          ("conv", "conv3"), ("relu",), ("conv", "conv4"), ("relu",), ("pool",),
          ("flat",), ("dense", "dense1"), ("relu",), ("dense", "dense2")]

def forward(f):
    x = f
    for L in LAYERS:
        if L[0] == "conv":
            x = F.conv2d(x, T[L[1] + ".weight"], T[L[1] + ".bias"])
        elif L[0] == "relu":
            x = F.relu(x)
        elif L[0] == "pool":
            x = F.max_pool2d(x, 2)
        elif L[0] == "flat":
            x = x.reshape(x.shape[0], -1)
        else:
            x = x @ T[L[1] + ".weight"].T + T[L[1] + ".bias"]
    return x

def concretize(S, groups):
    """S: (nv+1, ...) symbolic; lower/upper with one-hot groups."""
    c = S[-1]
    lo = c.clone(); hi = c.clone()
    for g in groups:
        a = S[g]
        lo = lo + a.min(0).values
        hi = hi + a.max(0).values
    return lo, hi

def domain(img):
    """Per uncertain pixel its reachable codes (each with the grey level nearest the clean
    one), the one-hot groups of their variables, and the filter output with the
    uncertain pixels zeroed (`base0`)."""
    p = img.astype(int)
    opts = []
    for i in range(28):
        for j in range(28):
            qs = range(max(0, p[i, j] - EPS_Q), min(255, p[i, j] + EPS_Q) + 1)
            cs = {}
            for q in qs:
                cs.setdefault(tuple(CODES[q]), q)
            if len(cs) > 1:
                opts.append((i, j, list(cs.items())))
    nv = sum(len(o[2]) for o in opts)
    groups, var_pix, k = [], [], 0
    base0 = torch.tensor(CODES[p].transpose(2, 0, 1))  # 4 x 28 x 28
    for (i, j, cs) in opts:
        base0[:, i, j] = 0.0
        groups.append(list(range(k, k + len(cs))))
        var_pix += [(i, j, q) for (_, q) in cs]
        k += len(cs)
    return opts, groups, var_pix, nv, base0

def bounds_of(opts, groups, nv, base0):
    """Bounds of every layer's output: forward symbolic, then (BOUNDS=crown, the default)
    tightened by back-substitution."""
    Fs = torch.zeros(nv + 1, 4, 28, 28)
    Fs[-1] = base0
    k = 0
    for (i, j, cs) in opts:
        for (cd, _) in cs:
            Fs[k, :, i, j] = torch.tensor(cd)
            k += 1
    # symbolic forward bounds, recording pre-activation bounds of every layer
    Ls, Us = Fs.clone(), Fs.clone()
    bounds = []  # per layer: (lo, hi) of its output (concrete)
    for L in LAYERS:
        if L[0] == "conv":
            w = T[L[1] + ".weight"]; b = T[L[1] + ".bias"]
            wp, wn = w.clamp(min=0), w.clamp(max=0)
            nL = F.conv2d(Ls, wp) + F.conv2d(Us, wn)
            nU = F.conv2d(Us, wp) + F.conv2d(Ls, wn)
            nL[-1] += b[:, None, None]; nU[-1] += b[:, None, None]
            Ls, Us = nL, nU
        elif L[0] == "dense":
            w = T[L[1] + ".weight"]; b = T[L[1] + ".bias"]
            wp, wn = w.clamp(min=0), w.clamp(max=0)
            nL = Ls @ wp.T + Us @ wn.T
            nU = Us @ wp.T + Ls @ wn.T
            nL[-1] += b; nU[-1] += b
            Ls, Us = nL, nU
        elif L[0] == "relu":
            lo, _ = concretize(Ls, groups); _, hi = concretize(Us, groups)
            lam = torch.where(hi > lo, hi / (hi - lo).clamp(min=1e-12), torch.ones_like(hi))
            unst = (lo < 0) & (hi > 0)
            dead = hi <= 0
            alpha = torch.where(unst, (hi > -lo).double(), torch.ones_like(hi))
            nU = torch.where(unst, lam * Us, Us)
            nU[-1] = torch.where(unst, lam * (Us[-1] - lo), Us[-1])
            nL = alpha * Ls
            nU = torch.where(dead, torch.zeros_like(nU), nU)
            nL = torch.where(dead, torch.zeros_like(nL), nL)
            Ls, Us = nL, nU
        elif L[0] == "pool":
            lo, _ = concretize(Ls, groups); _, hi = concretize(Us, groups)
            C, H, Wd = lo.shape
            lo4 = lo.reshape(C, H // 2, 2, Wd // 2, 2).permute(0, 1, 3, 2, 4).reshape(C, H // 2, Wd // 2, 4)
            hi4 = hi.reshape(C, H // 2, 2, Wd // 2, 2).permute(0, 1, 3, 2, 4).reshape(C, H // 2, Wd // 2, 4)
            def win(S):
                n = S.shape[0]
                return S.reshape(n, C, H // 2, 2, Wd // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, C, H // 2, Wd // 2, 4)
            Lw, Uw = win(Ls), win(Us)
            best = lo4.argmax(-1)
            nL = torch.gather(Lw, 4, best[None, ..., None].expand(Lw.shape[0], -1, -1, -1, 1))[..., 0]
            maxhi = hi4.max(-1).values
            # dominated: best lower >= every other's upper
            others = hi4.clone(); others.scatter_(3, best[..., None], -1e30)
            dom = lo4.gather(3, best[..., None])[..., 0] >= others.max(-1).values
            Ub = torch.gather(Uw, 4, best[None, ..., None].expand(Uw.shape[0], -1, -1, -1, 1))[..., 0]
            nU = torch.zeros_like(nL); nU[-1] = maxhi
            nU = torch.where(dom, Ub, nU)
            Ls, Us = nL, nU
        elif L[0] == "flat":
            Ls = Ls.reshape(Ls.shape[0], -1); Us = Us.reshape(Us.shape[0], -1)
        lo, _ = concretize(Ls, groups); _, hi = concretize(Us, groups)
        bounds.append((lo, hi))
    if os.environ.get("BOUNDS", "crown") == "crown":
        bounds = crown(opts, bounds, base0)
    return bounds

def dl(v):
    return 1e-5 * (1 + abs(v))


def backsub(k, lam, bounds, opts, base0):
    """Lower bounds of `lam · (output of layer k)` (one row per target) by CROWN back-
    substitution to the filter output, through the relaxations the `bounds` allow."""
    n = lam.shape[0]
    const = torch.zeros(n)
    for li in range(k, -1, -1):
        L = LAYERS[li]
        if L[0] == "conv":
            w = T[L[1] + ".weight"]; b = T[L[1] + ".bias"]
            const = const + (lam.sum((2, 3)) * b).sum(1)
            lam = F.conv_transpose2d(lam, w)
        elif L[0] == "dense":
            w = T[L[1] + ".weight"]; b = T[L[1] + ".bias"]
            const = const + lam @ b
            lam = lam @ w
        elif L[0] == "flat":
            lam = lam.reshape(n, *bounds[li - 1][0].shape)
        elif L[0] == "relu":
            l, u = bounds[li - 1]
            unst = (l < 0) & (u > 0)
            act = (l >= 0).double()
            slope = torch.where(unst, u / (u - l).clamp(min=1e-12), torch.zeros_like(u))
            alpha = torch.where(unst, (u > -l).double(), torch.zeros_like(u))
            pos, neg = lam.clamp(min=0), lam.clamp(max=0)
            const = const + (neg * torch.where(unst, -slope * l, torch.zeros_like(l))).reshape(n, -1).sum(1)
            lam = pos * (act + alpha) + neg * (act + slope)
        elif L[0] == "pool":
            l, u = bounds[li - 1]
            C, H, W_ = l.shape
            def win(t):
                return t.reshape(*t.shape[:-3], C, H // 2, 2, W_ // 2, 2).transpose(-3, -2).reshape(*t.shape[:-3], C, H // 2, W_ // 2, 4)
            lw, uw = win(l), win(u)
            best = lw.argmax(-1)
            others = uw.clone(); others.scatter_(-1, best[..., None], -1e30)
            dom = lw.gather(-1, best[..., None])[..., 0] >= others.max(-1).values
            umax = uw.max(-1).values
            pos, neg = lam.clamp(min=0), lam.clamp(max=0)
            to_best = pos + torch.where(dom, neg, torch.zeros_like(neg))
            const = const + torch.where(dom, torch.zeros_like(neg), neg * umax).reshape(n, -1).sum(1)
            out = torch.zeros(n, C, H // 2, W_ // 2, 4)
            out.scatter_(-1, best[None, ..., None].expand(n, -1, -1, -1, 1), to_best[..., None])
            lam = out.reshape(n, C, H // 2, W_ // 2, 2, 2).transpose(-3, -2).reshape(n, C, H, W_)
    const = const + (lam * base0).reshape(n, -1).sum(1)
    for (i, j, cs) in opts:
        codes = torch.tensor(np.array([c for (c, _) in cs]))  # options x 4
        const = const + (lam[:, :, i, j] @ codes.T).min(1).values
    return const

def crown(opts, bounds, base0):
    """Every conv/dense output's bounds tightened by back-substitution, layer by layer."""
    bounds = list(bounds)
    for k, L in enumerate(LAYERS):
        if L[0] in ("conv", "dense"):
            lo, hi = bounds[k]
            idx = ((hi - lo) > 1e-9).reshape(-1).nonzero()[:, 0]
            lo, hi = lo.clone().reshape(-1), hi.clone().reshape(-1)
            for c0 in range(0, len(idx), 128):
                part = idx[c0:c0 + 128]
                lam = torch.zeros(2 * len(part), lo.numel())
                r = torch.arange(len(part))
                lam[r, part] = 1.0
                lam[len(part) + r, part] = -1.0
                b = backsub(k, lam.reshape(2 * len(part), *bounds[k][0].shape), bounds, opts, base0)
                lo[part] = torch.maximum(lo[part], b[:len(part)])
                hi[part] = torch.minimum(hi[part], -b[len(part):])
            bounds[k] = (lo.reshape(bounds[k][0].shape), hi.reshape(bounds[k][0].shape))
        elif L[0] == "relu":
            l, u = bounds[k - 1]
            bounds[k] = (l.clamp(min=0), u.clamp(min=0))
        elif L[0] == "pool":
            l, u = bounds[k - 1]
            bounds[k] = (F.max_pool2d(l[None], 2)[0], F.max_pool2d(u[None], 2)[0])
        elif L[0] == "flat":
            l, u = bounds[k - 1]
            bounds[k] = (l.reshape(-1), u.reshape(-1))
    return bounds

class Model:
    def __init__(self):
        self.lb, self.ub, self.integ = [], [], []
        self.rows, self.cols, self.vals, self.rl, self.ru = [], [], [], [], []
        self.nrow = 0
        self.tags = []
    def var(self, lo, hi, integer=False, tag=None):
        self.tags.append(tag)
        self.lb.append(float(lo)); self.ub.append(float(hi)); self.integ.append(integer)
        return len(self.lb) - 1
    def row(self, terms, lo, hi):
        r = self.nrow; self.nrow += 1
        for (c, v) in terms:
            self.rows.append(r); self.cols.append(c); self.vals.append(float(v))
        self.rl.append(float(lo)); self.ru.append(float(hi))

INF = highspy.kHighsInf

def debug(m, img, label, var_pix, opts, groups):
    q = img.astype(int)
    x = torch.tensor(CODES[q].transpose(2, 0, 1))[None]
    outs = []
    for L in LAYERS:
        if L[0] == "conv": x = F.conv2d(x, T[L[1]+".weight"], T[L[1]+".bias"])
        elif L[0] == "relu": x = F.relu(x)
        elif L[0] == "pool": x = F.max_pool2d(x, 2)
        elif L[0] == "flat": x = x.reshape(1, -1)
        else: x = x @ T[L[1]+".weight"].T + T[L[1]+".bias"]
        outs.append(x[0])
    val = np.zeros(len(m.lb))
    for k, tg in enumerate(m.tags):
        if tg is None: val[k] = np.nan; continue
        if tg[0] == 'S':
            i, j, qq = var_pix[tg[1]]
            val[k] = 1.0 if CODES[qq].tolist() == CODES[q[i, j]].tolist() else 0.0
        elif tg[0] == 'L': val[k] = outs[tg[1]][tg[2]].item()
        elif tg[0] == 'A': val[k] = 1.0 if outs[tg[1]][tg[2]].item() > 0 else 0.0
        elif tg[0] == 'D':
            ch, oi, oj = tg[2]
            win = outs[tg[1]][ch, 2*oi:2*oi+2, 2*oj:2*oj+2].reshape(-1)
            val[k] = 1.0 if int(win.argmax()) == tg[3] else 0.0
    for k in range(len(m.lb)):
        if not np.isnan(val[k]) and (val[k] < m.lb[k] - 1e-9 or val[k] > m.ub[k] + 1e-9):
            print("bound viol", k, m.tags[k], val[k], m.lb[k], m.ub[k])
    A = sp.csr_matrix((m.vals, (m.rows, m.cols)), shape=(m.nrow, len(m.lb)))
    known = ~np.isnan(val)
    v0 = np.where(known, val, 0)
    r = A @ v0
    unk = (abs(A) @ (~known).astype(float)) > 0
    nbad = 0
    for i in range(m.nrow):
        if unk[i]: continue
        if r[i] < m.rl[i] - 1e-6 or r[i] > m.ru[i] + 1e-6:
            nbad += 1
            if nbad < 8:
                cols = A.indices[A.indptr[i]:A.indptr[i+1]]
                print("row viol", i, r[i], m.rl[i], m.ru[i], [m.tags[c] for c in cols][:6])
    print("violations", nbad)
    return val

def build_and_solve(img, label):
    t0 = time.time()
    opts, groups, var_pix, nv, base0 = domain(img)
    bounds = bounds_of(opts, groups, nv, base0)
    t_bounds = time.time() - t0
    m = Model()
    s = [m.var(0, 1, True, ('S', k)) for k in range(nv)]
    for g in groups:
        m.row([(s[i], 1) for i in g], 1, 1)
    # current layer: dict flat-index -> ("c", const) or ("v", col)  over tensor shape
    # filter output expressions: per (ch,i,j) either const or linear in s
    expr = {}
    for gi, (i, j, cs) in enumerate(opts):
        for ch in range(4):
            expr[(ch, i, j)] = [(s[groups[gi][t]], cs[t][0][ch]) for t in range(len(cs))]
    cur_shape = (4, 28, 28)
    cur_const = base0.clone()  # tensor of constant values where not in expr
    cur_vars = expr   # dict key->list of (col,coef) linear expr (no constant)
    n_bin = 0
    li = 0
    for L in LAYERS:
        lo, hi = bounds[li]; li += 1
        if L[0] == "conv":
            w = T[L[1] + ".weight"].numpy()
            Cc, Hh, Ww = cur_shape
            Co = w.shape[0]; Ho, Wo = Hh - 2, Ww - 2
            const_out = F.conv2d(cur_const[None], T[L[1] + ".weight"], T[L[1] + ".bias"])[0]
            # affected outputs
            aff = set()
            for (ch, i, j) in cur_vars:
                for di in range(3):
                    for dj in range(3):
                        oi, oj = i - di, j - dj
                        if 0 <= oi < Ho and 0 <= oj < Wo:
                            aff.add((oi, oj))
            new = {}
            for (oi, oj) in aff:
                ins = []
                for di in range(3):
                    for dj in range(3):
                        for ch in range(Cc):
                            key = (ch, oi + di, oj + dj)
                            if key in cur_vars:
                                ins.append((ch, di, dj, cur_vars[key]))
                for co in range(Co):
                    l_, h_ = lo[co, oi, oj].item(), hi[co, oi, oj].item()
                    # constant part: const_out uses cur_const which is 0 at var positions
                    z = m.var(l_ - dl(l_), h_ + dl(h_), tag=('L', li - 1, (co, oi, oj)))
                    terms = [(z, -1.0)]
                    for (ch, di, dj, e) in ins:
                        wv = w[co, ch, di, dj]
                        if wv != 0:
                            for (c, v) in e:
                                terms.append((c, wv * v))
                    k0 = const_out[co, oi, oj].item()
                    m.row(terms, -k0, -k0)
                    new[(co, oi, oj)] = [(z, 1.0)]
            cur_const = const_out.clone()
            for key in new:
                cur_const[key] = 0.0
            cur_vars, cur_shape = new, (Co, Ho, Wo)
        elif L[0] == "dense":
            w = T[L[1] + ".weight"].numpy()
            const_out = T[L[1] + ".weight"] @ cur_const + T[L[1] + ".bias"]
            new = {}
            for o in range(w.shape[0]):
                z = m.var(lo[o].item() - dl(lo[o].item()), hi[o].item() + dl(hi[o].item()), tag=('L', li - 1, (o,)))
                terms = [(z, -1.0)]
                for key, e in cur_vars.items():
                    wv = w[o, key[0]]
                    for (c, v) in e:
                        terms.append((c, wv * v))
                m.row(terms, -const_out[o].item(), -const_out[o].item())
                new[(o,)] = [(z, 1.0)]
            cur_const = torch.zeros_like(const_out)
            cur_vars, cur_shape = new, (w.shape[0],)
        elif L[0] == "relu":
            # lo/hi here are post-relu bounds; need pre-activation: the previous bounds
            plo, phi = bounds[li - 2]
            cur_const = cur_const.clamp(min=0)
            new = {}
            for key, e in cur_vars.items():
                l_, h_ = plo[key].item(), phi[key].item()
                (zc, _), = e
                if l_ >= 0:
                    new[key] = e
                elif h_ <= 0:
                    pass  # const 0
                else:
                    l_, h_ = l_ - dl(l_), h_ + dl(h_)
                    y = m.var(0, h_, tag=('L', li - 1, key))
                    a = m.var(0, 1, True, ('A', li - 2, key)); n_bin += 1
                    m.row([(y, 1), (zc, -1)], 0, INF)              # y >= z
                    m.row([(y, 1), (zc, -1), (a, -l_)], -INF, -l_)  # y <= z - l(1-a)
                    m.row([(y, 1), (a, -h_)], -INF, 0)             # y <= h a
                    new[key] = [(y, 1.0)]
            cur_vars = new
        elif L[0] == "pool":
            plo, phi = bounds[li - 2]
            Cc, Hh, Ww = cur_shape
            cc = cur_const
            new_const = F.max_pool2d(cc[None], 2)[0]
            new = {}
            keys = set((ch, i // 2, j // 2) for (ch, i, j) in cur_vars)
            for (ch, oi, oj) in keys:
                ins = []
                for di in range(2):
                    for dj in range(2):
                        k2 = (ch, 2 * oi + di, 2 * oj + dj)
                        if k2 in cur_vars:
                            ins.append((cur_vars[k2][0][0], plo[k2].item(), phi[k2].item(), 2 * di + dj))
                        else:
                            v = cc[k2].item()
                            ins.append((None, v, v, 2 * di + dj))
                mlo = max(i[1] for i in ins)
                cand = [i for i in ins if i[2] >= mlo]
                U = max(i[2] for i in cand)
                if len(cand) > 1:
                    mlo = mlo - dl(mlo); U = U + dl(U)
                    cand = [(c, (l_ - dl(l_) if c is not None else l_), h_, pos) for (c, l_, h_, pos) in cand]
                if len(cand) == 1:
                    c0 = cand[0]
                    if c0[0] is None:
                        new_const[ch, oi, oj] = c0[1]; continue
                    new[(ch, oi, oj)] = [(c0[0], 1.0)]
                else:
                    y = m.var(mlo, U, tag=('L', li - 1, (ch, oi, oj)))
                    ds = []
                    for (c, l_, h_, pos) in cand:
                        d = m.var(0, 1, True, ('D', li - 2, (ch, oi, oj), pos)); n_bin += 1; ds.append(d)
                        if c is None:
                            m.row([(y, 1)], l_, INF)
                            m.row([(y, 1), (d, U - l_)], -INF, U)  # y <= l + (U-l)(1-d)
                        else:
                            m.row([(y, 1), (c, -1)], 0, INF)
                            m.row([(y, 1), (c, -1), (d, U - l_)], -INF, U - l_)
                    m.row([(d, 1) for d in ds], 1, 1)
                    new[(ch, oi, oj)] = [(y, 1.0)]
                new_const[ch, oi, oj] = 0.0
            cur_const, cur_vars, cur_shape = new_const, new, (Cc, Hh // 2, Ww // 2)
        elif L[0] == "flat":
            Cc, Hh, Ww = cur_shape
            cur_const = cur_const.reshape(-1)
            cur_vars = {(ch * Hh * Ww + i * Ww + j,): e for (ch, i, j), e in cur_vars.items()}
            cur_shape = (Cc * Hh * Ww,)
    # logits: cur_vars over (o,), const cur_const
    lo, hi = bounds[-1]
    def logit(o):
        return cur_vars.get((o,), []), cur_const[o].item()
    ty, cy = logit(label)
    n = len(m.lb)
    if os.environ.get("DEBUG"):
        val = debug(m, img, label, var_pix, opts, groups)
        for k in range(n):
            if (m.integ[k] or os.environ.get("FIXALL")) and m.tags[k] is not None:
                m.lb[k] = m.ub[k] = val[k]
    A = sp.csc_matrix((m.vals, (m.rows, m.cols)), shape=(m.nrow, n))
    A.sort_indices()
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, m.nrow
    lp.col_lower_ = np.array(m.lb); lp.col_upper_ = np.array(m.ub)
    lp.row_lower_ = np.array(m.rl); lp.row_upper_ = np.array(m.ru)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr; lp.a_matrix_.index_ = A.indices; lp.a_matrix_.value_ = A.data
    lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in m.integ]
    # One MILP per other class j: minimise z_y - z_j, cut off at 0 ("infeasible" = proven
    # for j). Classes whose back-substituted margin bound is already positive are skipped.
    lam = torch.zeros(9, 10)
    others = [j for j in range(10) if j != label]
    for r, j in enumerate(others):
        lam[r, label], lam[r, j] = 1.0, -1.0
    mlo = backsub(len(LAYERS) - 1, lam, bounds, opts, base0)
    todo = [j for r, j in sorted(enumerate(others), key=lambda rj: mlo[rj[0]].item()) if mlo[r].item() <= 0]
    t1 = time.time()
    verdict, dual, statuses, cx_margin = "proven", None, [], None
    for j in todo:
        left = TLIM - (time.time() - t1)
        if left <= 0:
            verdict = "unknown"; break
        tj, cj = logit(j)
        cost = np.zeros(n)
        for a_, v in ty:
            cost[a_] += v
        for a_, v in tj:
            cost[a_] -= v
        lp.col_cost_ = cost
        lp.offset_ = cy - cj
        h = highspy.Highs()
        h.setOptionValue("output_flag", bool(os.environ.get("VERBOSE")))
        h.setOptionValue("time_limit", left)
        h.setOptionValue("threads", 1)
        if os.environ.get("NOPRESOLVE"):
            h.setOptionValue("presolve", "off")
        if not os.environ.get("NOBOUND"):
            h.setOptionValue("objective_bound", 0.0)
        h.passModel(lp)
        h.run()
        st = h.getModelStatus()
        info = h.getInfo()
        statuses.append(str(st).split(".")[-1])
        if st == highspy.HighsModelStatus.kInfeasible:
            continue
        if st == highspy.HighsModelStatus.kOptimal and info.objective_function_value >= 0:
            continue
        if info.primal_solution_status == 2 and info.objective_function_value < 0:
            sol = np.array(h.getSolution().col_value)
            q = img.astype(int).copy()
            for kk, (i, jj, qq) in enumerate(var_pix):
                if sol[s[kk]] > 0.5:
                    q[i, jj] = qq
            f = torch.tensor(CODES[q].transpose(2, 0, 1))[None]
            z = forward(f)[0]
            zz = z.clone(); zz[label] = -1e30
            cx_margin = (z[label] - zz.max()).item()
            verdict = "counterexample" if cx_margin <= 0 else "spurious"
            break
        verdict, dual = "unknown", info.mip_dual_bound
        break
    return dict(uncertain=len(opts), vars=n, rows=m.nrow, bins=n_bin + nv, bounds_s=round(t_bounds, 2),
                solve_s=round(time.time() - t1, 2), statuses=statuses, margin_bounds_below_0=len(todo), dual=dual,
                verdict=verdict, cx_margin=cx_margin)

for idx in range(FIRST, FIRST + COUNT):
    img, lab = imgs[idx], int(labels[idx])
    f = torch.tensor(CODES[img.astype(int)].transpose(2, 0, 1))[None]
    z = forward(f)[0]
    pred = int(z.argmax())
    if pred != lab:
        print(json.dumps(dict(image=idx, verdict="misclassified")), flush=True)
        continue
    zz = z.clone(); zz[lab] = -1e30

    if os.environ.get("SAMPLE"):
        opts = domain(img)[0]
        rng = np.random.default_rng(0)
        best = 1e9
        q0 = img.astype(int)
        def marg(q):
            z = forward(torch.tensor(CODES[q].transpose(2, 0, 1))[None])[0]
            zz = z.clone(); zz[lab] = -1e30
            return (z[lab] - zz.max()).item()
        for _ in range(int(os.environ["SAMPLE"])):
            q = q0.copy()
            for (i, j, cs) in opts:
                q[i, j] = cs[rng.integers(len(cs))][1]
            # greedy descent
            cur = marg(q)
            for sweep in range(2):
                for (i, j, cs) in opts:
                    for (_, qq) in cs:
                        old = q[i, j]; q[i, j] = qq
                        m2 = marg(q)
                        if m2 < cur: cur = m2
                        else: q[i, j] = old
            best = min(best, cur)
        print(json.dumps(dict(image=idx, sampled_min=best)), flush=True)
        continue
    r = build_and_solve(img, lab)
    r = dict(image=idx, clean_margin=round((z[lab] - zz.max()).item(), 3), **r)
    print(json.dumps(r), flush=True)
