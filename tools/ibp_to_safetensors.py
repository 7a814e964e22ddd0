"""Writes a safetensors file in candidate-c's export layout (the names, shapes and
`spartan.spec` metadata of TEMPLATE, from `spartan export`) with the filter of TEMPLATE
and the conv/dense weights of a PyTorch state dict (the nn.Sequential of ibp_train.py),
for `spartan import`.

    python tools/ibp_to_safetensors.py TEMPLATE STATE OUT
"""
import sys
import torch
from safetensors import safe_open
from safetensors.torch import save_file

template, state, out = sys.argv[1:4]
sd = torch.load(state)
# Sequential positions of candidate-c's layers after the filter (see ibp_train.py).
position = {"conv1": "0", "conv2": "2", "conv3": "5", "conv4": "7", "dense1": "11", "dense2": "13"}
tensors = {}
with safe_open(template, "pt") as f:
    metadata = f.metadata()
    for name in f.keys():
        layer, kind = name.split(".")
        t = f.get_tensor(name)
        if layer in position:
            trained = sd[f"{position[layer]}.{kind}"].detach().to(torch.float32)
            assert trained.shape == t.shape, (name, trained.shape, t.shape)
            t = trained
        tensors[name] = t.contiguous()
save_file(tensors, out, metadata=metadata)
print("wrote", out)
