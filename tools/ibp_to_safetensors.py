"""Writes a safetensors file in candidate-c's export layout (names, shapes, spec metadata of
TEMPLATE, from `spartan export`) with the filter of TEMPLATE and the conv/dense weights of
a PyTorch state dict (the nn.Sequential of ibp_train.py), for `spartan import`.

    python tools/ibp_to_safetensors.py TEMPLATE STATE OUT
"""
import json, struct, sys
import torch

template, state, out = sys.argv[1:4]
raw = open(template, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
data = raw[8 + n:]
sd = torch.load(state)
names = {"conv1": "0", "conv2": "2", "conv3": "5", "conv4": "7", "dense1": "11", "dense2": "13"}
blobs, offset, new_hdr = [], 0, {"__metadata__": hdr["__metadata__"]}
for k, v in sorted(((k, v) for k, v in hdr.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]):
    layer, kind = k.split(".")
    if layer in names:
        t = sd[f"{names[layer]}.{kind}"].detach().numpy().astype("<f4")
        assert list(t.shape) == v["shape"], (k, t.shape, v["shape"])
        b = t.tobytes()
    else:
        b = data[v["data_offsets"][0]:v["data_offsets"][1]]
    new_hdr[k] = {"dtype": "F32", "shape": v["shape"], "data_offsets": [offset, offset + len(b)]}
    blobs.append(b); offset += len(b)
h = json.dumps(new_hdr, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
open(out, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
print("wrote", out)
