"""Issue 16 experiment: does certified (IBP) training make candidate-c's shape provable?

The committed candidate-c's filter is kept fixed (its codes per grey level); the rest of
the network (candidate-c's layers after the filter) is trained from scratch with interval
bound propagation over the code domain (Gowal et al. 2018: CE on clean logits mixed with
CE on the worst-case logits of the IBP box, radius ramped up). Certified accuracy is then
the IBP bound on the u8 grid (sound for the code domain: every reachable code lies in the
per-bit box), on the white-box images 150..1149.

    spartan export --model models/candidate-c.f32.spartan --out c.safetensors
    python tools/ibp_train.py c.safetensors RADIUS EPOCHS net.pt
    python tools/ibp_to_safetensors.py c.safetensors net.pt ibp.safetensors
    spartan import --safetensors ibp.safetensors --out ibp-c.spartan

A measurement for issue 16, not part of the product, made before the trainer had
certified training (`spartan train --certify-eps`, docs/training.md); kept as the
independent PyTorch reference the in-product figures were compared with. Needs torch, numpy and safetensors; one JSON line per epoch (clean accuracy and IBP-certified
accuracy at RADIUS on the white-box images).
"""
import gzip, json, sys, time, os
import numpy as np
import torch
from safetensors.numpy import load_file
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(1)
torch.set_num_threads(2)

W = load_file(sys.argv[1])
RADIUS, EPOCHS, SAVE = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fw, fb = W["filter.weight"].reshape(-1), W["filter.bias"]
CODES = np.stack([(np.cos((fw * (np.float32(q) / np.float32(255)) + fb).astype(np.float32)) > 0) for q in range(256)]).astype(np.float32)

def box_tables(r):
    lo, hi = np.zeros((256, 4), np.float32), np.zeros((256, 4), np.float32)
    for p in range(256):
        c = CODES[max(0, p - r):min(255, p + r) + 1]
        lo[p], hi[p] = c.min(0), c.max(0)
    return torch.tensor(lo), torch.tensor(hi)

D = os.environ.get("SPARTAN_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared/data/mnist")) + "/"
def idx(name, off):
    return np.frombuffer(gzip.open(D + name).read()[off:], np.uint8)
xtr = torch.tensor(idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28).astype(np.int64))
ytr = torch.tensor(idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64))
xte = torch.tensor(idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28).astype(np.int64))
yte = torch.tensor(idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
CT = torch.tensor(CODES)

def codes(x):
    return CT[x].permute(0, 3, 1, 2)

net = nn.Sequential(nn.Conv2d(4, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(32, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Flatten(), nn.Linear(512, 50), nn.ReLU(), nn.Linear(50, 10))

def ibp(lo, hi):
    for layer in net:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            mid = layer(mid)
            rad = F.conv2d(rad, layer.weight.abs()) if isinstance(layer, nn.Conv2d) else rad @ layer.weight.abs().T
            lo, hi = mid - rad, mid + rad
        else:
            lo, hi = layer(lo), layer(hi)
    return lo, hi

def worst_logits(lo, hi, y):
    # logits with the true class at its lower bound and the others at their upper bounds
    onehot = F.one_hot(y, 10).bool()
    return torch.where(onehot, lo, hi)

def certified(x, y, r):
    blo, bhi = box_tables(r)
    lo, hi = ibp(blo[x].permute(0, 3, 1, 2), bhi[x].permute(0, 3, 1, 2))
    wl = worst_logits(lo, hi, y)
    return (wl.argmax(1) == y) & ((wl - F.one_hot(y, 10) * 1e9).max(1).values < wl.gather(1, y[:, None])[:, 0])

opt = torch.optim.Adam(net.parameters(), lr=1e-3)
steps_per_epoch = 60000 // 128
total = EPOCHS * steps_per_epoch
t0 = time.time()
step = 0
for epoch in range(EPOCHS):
    perm = torch.randperm(60000)
    for b in range(steps_per_epoch):
        i = perm[b * 128:(b + 1) * 128]
        x, y = xtr[i], ytr[i]
        # radius ramp over the first 40% of the run (after a short clean warm-up), kappa 1 -> 0.5
        frac = min(1.0, max(0.0, (step - 0.05 * total) / (0.4 * total)))
        r = int(round(RADIUS * frac))
        kappa = 1.0 - 0.5 * frac
        logits = net(codes(x))
        loss = kappa * F.cross_entropy(logits, y)
        if r > 0:
            blo, bhi = box_tables(r)
            lo, hi = ibp(blo[x].permute(0, 3, 1, 2), bhi[x].permute(0, 3, 1, 2))
            loss = loss + (1 - kappa) * F.cross_entropy(worst_logits(lo, hi, y), y)
        opt.zero_grad(); loss.backward(); opt.step()
        step += 1
    with torch.no_grad():
        xe, ye = xte[150:1150], yte[150:1150]
        clean = (net(codes(xe)).argmax(1) == ye).float().mean().item()
        cert = certified(xe, ye, RADIUS).float().mean().item()
    print(json.dumps(dict(epoch=epoch + 1, radius=r, clean=clean, ibp_certified=cert, seconds=round(time.time() - t0))), flush=True)

with torch.no_grad():
    full_clean = (net(codes(xte)).argmax(1) == yte).float().mean().item()
    out = {r: certified(xte[150:1150], yte[150:1150], r).float().mean().item() for r in (13, 25, 51)}
print(json.dumps(dict(final_clean_10k=full_clean, ibp_certified_by_radius=out)), flush=True)
torch.save(net.state_dict(), SAVE)
