#!/usr/bin/env python3
"""Golden fixtures for the layer parity test (`tests/parity_nn_layers.rs`).

Builds each `torch.nn` layer below (seeded), runs it for one or more steps in train or eval mode,
and writes ONE file, `tests/golden/nn_layers.safetensors`. The Rust test builds the same layer
from the case's metadata with stapes' default constructor, loads the saved state dict by name
with `load_state_dict(&state, strict = true)` (which also proves the names and shapes match),
repeats the steps and compares.

File layout, per case `<case>` (case names never contain a '.'):

  <case>.state.<key>       the layer's state_dict before the first step (PyTorch's key names,
                           e.g. `state.0.weight`, `state.1.running_mean`)
  <case>.x<s>              the input of step s (float32; int64 ids for Embedding)
  <case>.out<s>            the output of step s
  <case>.gout<s>           the upstream gradient of step s: backward is (out * gout).sum()
  <case>.grad<s>.x         d/d(input) of step s (not for integer inputs)
  <case>.grad<s>.<param>   d/d(param) of step s, for every parameter (gradients are cleared
                           before each step, so these are per-step, not accumulated)
  <case>.final.<key>       every buffer after the last step (running statistics and
                           num_batches_tracked, for batch norm)

Metadata (`__metadata__`): key = case name, value = a flat JSON object: `"layer"` (the torch.nn
class name), its constructor arguments under PyTorch's names (`null` for None, arrays for
tuples, strings for `padding="same"` etc.), `"mode"` ("train" or "eval") and `"steps"`. A
`Sequential` has `"children": n` and each child's keys prefixed by its index (`"0.layer"`,
`"0.in_channels"`, ...). The layer is built from this metadata alone (`build()` below), so the
metadata describes it completely. `_generator` records script and torch version.

Regenerate with `~/torchenv/bin/python tools/golden/nn_layers.py` (torch 2.11.0, single thread,
deterministic: rerunning gives the same bytes).
"""

import json
import os
import sys
import zlib

import torch
import torch.nn as nn

TORCH_VERSION = "2.11.0"
if not torch.__version__.startswith(TORCH_VERSION):
    sys.exit(f"tools/golden/nn_layers.py needs torch {TORCH_VERSION}, found {torch.__version__}")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ops import check_written, write_safetensors  # noqa: E402  (same writer as ops.py)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "golden", "nn_layers.safetensors")
MAX_ELEMS = 4000

TENSORS = {}
METADATA = {}


def tup(v):
    return tuple(v) if isinstance(v, list) else v


def build(m, p=""):
    """The torch module described by the flat metadata `m` (keys prefixed by `p`)."""
    g = lambda k: m[p + k]  # noqa: E731
    layer = g("layer")
    if layer == "Sequential":
        return nn.Sequential(*[build(m, f"{p}{i}.") for i in range(g("children"))])
    if layer == "Linear":
        return nn.Linear(g("in_features"), g("out_features"), bias=g("bias"))
    if layer in ("Conv1d", "Conv2d"):
        cls = nn.Conv1d if layer == "Conv1d" else nn.Conv2d
        return cls(g("in_channels"), g("out_channels"), tup(g("kernel_size")), stride=tup(g("stride")),
                   padding=tup(g("padding")), dilation=tup(g("dilation")), groups=g("groups"),
                   bias=g("bias"), padding_mode=g("padding_mode"))
    if layer == "MaxPool2d":
        return nn.MaxPool2d(tup(g("kernel_size")), stride=tup(g("stride")), padding=tup(g("padding")),
                            dilation=tup(g("dilation")), ceil_mode=g("ceil_mode"))
    if layer == "AvgPool2d":
        return nn.AvgPool2d(tup(g("kernel_size")), stride=tup(g("stride")), padding=tup(g("padding")),
                            ceil_mode=g("ceil_mode"), count_include_pad=g("count_include_pad"))
    if layer in ("BatchNorm1d", "BatchNorm2d"):
        cls = nn.BatchNorm1d if layer == "BatchNorm1d" else nn.BatchNorm2d
        return cls(g("num_features"), eps=g("eps"), momentum=g("momentum"), affine=g("affine"),
                   track_running_stats=g("track_running_stats"))
    if layer == "LayerNorm":
        return nn.LayerNorm(g("normalized_shape"), eps=g("eps"), elementwise_affine=g("elementwise_affine"),
                            bias=g("bias"))
    if layer == "Embedding":
        return nn.Embedding(g("num_embeddings"), g("embedding_dim"), padding_idx=g("padding_idx"))
    if layer == "GELU":
        return nn.GELU(approximate=g("approximate"))
    if layer == "LeakyReLU":
        return nn.LeakyReLU(g("negative_slope"))
    if layer in ("Softmax", "LogSoftmax"):
        return getattr(nn, layer)(dim=g("dim"))
    if layer == "Flatten":
        return nn.Flatten(g("start_dim"), g("end_dim"))
    if layer == "Dropout":
        return nn.Dropout(g("p"))
    if layer in ("ReLU", "Tanh", "Sigmoid", "SiLU", "Identity"):
        return getattr(nn, layer)()
    raise ValueError(f"unknown layer {layer}")


def put(key, t):
    assert "." in key and key.split(".")[0] in METADATA
    assert t.numel() <= MAX_ELEMS, f"{key}: {t.numel()} elements > {MAX_ELEMS}"
    assert key not in TENSORS, key
    TENSORS[key] = t.detach().clone().contiguous()


def case(name, meta, inputs, mode="train", perturb=None):
    """Run the layer described by `meta` on `inputs(gen, step)` for `len(inputs)` steps.

    `inputs` is a list of functions of a generator giving each step's input. `perturb(module,
    gen)` may change the freshly built module's state (random batch-norm statistics, ...) so the
    saved state is not just the default initialisation.
    """
    assert "." not in name and name not in METADATA
    seed = zlib.crc32(name.encode())
    torch.manual_seed(seed)  # the layer's own initialisation
    gen = torch.Generator().manual_seed(seed)
    meta = dict(meta, mode=mode, steps=len(inputs))
    METADATA[name] = json.dumps(meta, separators=(",", ":"), sort_keys=True)
    m = build(meta)
    if perturb is not None:
        with torch.no_grad():
            perturb(m, gen)
    m.train(mode == "train")
    for k, v in m.state_dict().items():
        put(f"{name}.state.{k}", v)
    for s, make in enumerate(inputs):
        x = make(gen)
        float_in = x.is_floating_point()
        if float_in:
            x.requires_grad_(True)
        m.zero_grad(set_to_none=True)
        out = m(x)
        gout = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.dtype)
        (out * gout).sum().backward()
        put(f"{name}.x{s}", x)
        put(f"{name}.out{s}", out)
        put(f"{name}.gout{s}", gout)
        if float_in:
            put(f"{name}.grad{s}.x", x.grad)
        for k, prm in m.named_parameters():
            assert prm.grad is not None, f"{name}: {k} got no gradient"
            put(f"{name}.grad{s}.{k}", prm.grad)
    for k, b in m.named_buffers():
        put(f"{name}.final.{k}", b)


def randn(*shape, scale=1.0, shift=0.0):
    return lambda g: (torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift).float()


def ids(high, *shape, force=None):
    """int64 ids in [0, high); `force` is written into the first positions (e.g. the padding
    index, so it surely occurs)."""
    def make(g):
        t = torch.randint(0, high, shape, generator=g)
        if force is not None:
            t.view(-1)[: len(force)] = torch.tensor(force)
        return t
    return make


def random_bn_state(nbt=None):
    """Random affine parameters and running statistics for every batch norm in a module."""
    def perturb(m, g):
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                c = mod.num_features
                if mod.affine:
                    mod.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    mod.bias.copy_(torch.randn(c, generator=g) * 0.5)
                if mod.track_running_stats:
                    mod.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                    mod.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                    if nbt is not None:
                        mod.num_batches_tracked.fill_(nbt)
    return perturb


def conv(layer, cin, cout, k, stride=1, padding=0, dilation=1, groups=1, bias=True, padding_mode="zeros"):
    return {"layer": layer, "in_channels": cin, "out_channels": cout, "kernel_size": k, "stride": stride,
            "padding": padding, "dilation": dilation, "groups": groups, "bias": bias,
            "padding_mode": padding_mode}


def bn(layer, c, eps=1e-5, momentum=0.1, affine=True, track=True):
    return {"layer": layer, "num_features": c, "eps": eps, "momentum": momentum, "affine": affine,
            "track_running_stats": track}


def maxpool(k, stride=None, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    return {"layer": "MaxPool2d", "kernel_size": list(k), "stride": None if stride is None else list(stride),
            "padding": list(padding), "dilation": list(dilation), "ceil_mode": ceil_mode}


def avgpool(k, stride=None, padding=(0, 0), ceil_mode=False, count_include_pad=True):
    return {"layer": "AvgPool2d", "kernel_size": list(k), "stride": None if stride is None else list(stride),
            "padding": list(padding), "ceil_mode": ceil_mode, "count_include_pad": count_include_pad}


def sequential(*children):
    meta = {"layer": "Sequential", "children": len(children)}
    for i, c in enumerate(children):
        for k, v in c.items():
            meta[f"{i}.{k}"] = v
    return meta


def linear_cases():
    case("linear_bias", {"layer": "Linear", "in_features": 7, "out_features": 5, "bias": True}, [randn(4, 7)])
    case("linear_nobias_3d", {"layer": "Linear", "in_features": 6, "out_features": 4, "bias": False},
         [randn(2, 3, 6)])


def conv_cases():
    case("conv1d_basic", conv("Conv1d", 3, 4, 3), [randn(2, 3, 10)])
    case("conv1d_s2_p2_d2_g2", conv("Conv1d", 4, 6, 3, stride=2, padding=2, dilation=2, groups=2),
         [randn(2, 4, 16)])
    case("conv1d_same_k4_nobias", conv("Conv1d", 2, 3, 4, padding="same", bias=False), [randn(2, 2, 9)])
    case("conv1d_valid_reflect_p2", conv("Conv1d", 3, 2, 5, padding=2, padding_mode="reflect"), [randn(2, 3, 8)])
    case("conv1d_unbatched", conv("Conv1d", 3, 2, 3, padding=1), [randn(3, 7)])
    case("conv2d_basic", conv("Conv2d", 3, 4, [3, 3], stride=[1, 1], padding=[0, 0], dilation=[1, 1]),
         [randn(2, 3, 8, 8)])
    case("conv2d_k3x2_s2x1_p1x0", conv("Conv2d", 3, 6, [3, 2], stride=[2, 1], padding=[1, 0], dilation=[1, 1]),
         [randn(2, 3, 9, 7)])
    case("conv2d_d2_g3_nobias", conv("Conv2d", 6, 6, [3, 3], stride=[1, 1], padding=[2, 1], dilation=[2, 2],
                                     groups=3, bias=False), [randn(2, 6, 9, 8)])
    case("conv2d_depthwise_p1", conv("Conv2d", 4, 8, [3, 3], stride=[1, 1], padding=[1, 1], dilation=[1, 1],
                                     groups=4), [randn(2, 4, 6, 6)])
    case("conv2d_same_k4x3_d1x2", conv("Conv2d", 2, 3, [4, 3], stride=[1, 1], padding="same", dilation=[1, 2]),
         [randn(2, 2, 7, 8)])
    case("conv2d_valid_s2", conv("Conv2d", 2, 3, [3, 3], stride=[2, 2], padding="valid", dilation=[1, 1]),
         [randn(1, 2, 9, 8)])
    case("conv2d_reflect_p1x2", conv("Conv2d", 2, 3, [3, 3], stride=[1, 1], padding=[1, 2], dilation=[1, 1],
                                     padding_mode="reflect"), [randn(2, 2, 6, 7)])
    case("conv2d_unbatched", conv("Conv2d", 3, 2, [3, 3], stride=[2, 2], padding=[1, 1], dilation=[1, 1]),
         [randn(3, 6, 6)])


def pool_cases():
    case("maxpool2d_k2", maxpool([2, 2]), [randn(2, 3, 8, 8)])
    case("maxpool2d_k3_s2_p1_ceil", maxpool([3, 3], stride=[2, 2], padding=[1, 1], ceil_mode=True),
         [randn(2, 2, 10, 9)])
    case("maxpool2d_k2x3_s1_d2", maxpool([2, 3], stride=[1, 1], dilation=[2, 2]), [randn(1, 2, 7, 8)])
    case("maxpool2d_unbatched", maxpool([2, 2]), [randn(3, 6, 6)])
    case("avgpool2d_k2", avgpool([2, 2]), [randn(2, 3, 8, 8)])
    case("avgpool2d_k3_s2_p1_ceil_excl", avgpool([3, 3], stride=[2, 2], padding=[1, 1], ceil_mode=True,
                                                 count_include_pad=False), [randn(2, 2, 10, 9)])
    case("avgpool2d_k3x2_s1_p1x1_incl", avgpool([3, 2], stride=[1, 1], padding=[1, 1]), [randn(1, 2, 5, 6)])


def norm_cases():
    two = lambda *shape: [randn(*shape, scale=2.0, shift=1.0), randn(*shape, scale=0.5, shift=-2.0)]  # noqa: E731
    case("batchnorm1d_2d_train", bn("BatchNorm1d", 5), two(8, 5), perturb=random_bn_state())
    case("batchnorm1d_3d_train", bn("BatchNorm1d", 4, momentum=0.3), two(3, 4, 6), perturb=random_bn_state())
    case("batchnorm1d_cma_train", bn("BatchNorm1d", 4, momentum=None), two(3, 4, 5), perturb=random_bn_state(3))
    case("batchnorm1d_3d_eval", bn("BatchNorm1d", 4), [randn(3, 4, 5)], mode="eval", perturb=random_bn_state(7))
    case("batchnorm1d_2d_eval", bn("BatchNorm1d", 5, eps=1e-3), [randn(6, 5)], mode="eval",
         perturb=random_bn_state(7))
    case("batchnorm2d_train", bn("BatchNorm2d", 3), two(2, 3, 5, 5), perturb=random_bn_state())
    case("batchnorm2d_eval", bn("BatchNorm2d", 3), [randn(2, 3, 4, 5)], mode="eval", perturb=random_bn_state(5))
    case("batchnorm2d_noaffine_train", bn("BatchNorm2d", 3, affine=False), two(2, 3, 4, 4),
         perturb=random_bn_state())
    case("batchnorm2d_untracked_train", bn("BatchNorm2d", 3, track=False), two(2, 3, 4, 4),
         perturb=random_bn_state())
    case("batchnorm2d_untracked_eval", bn("BatchNorm2d", 3, track=False), [randn(2, 3, 4, 4)], mode="eval",
         perturb=random_bn_state())
    ln = lambda shape, affine=True, bias=True, eps=1e-5: {  # noqa: E731
        "layer": "LayerNorm", "normalized_shape": shape, "eps": eps, "elementwise_affine": affine, "bias": bias}

    def random_ln(m, g):
        if m.weight is not None:
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        if m.bias is not None:
            m.bias.copy_(torch.randn(m.bias.shape, generator=g))
    case("layernorm_4x5", ln([4, 5]), [randn(3, 4, 5, scale=2.0, shift=1.0)], perturb=random_ln)
    case("layernorm_nobias", ln([6], bias=False, eps=1e-3), [randn(2, 3, 6)], perturb=random_ln)
    case("layernorm_noaffine", ln([6], affine=False), [randn(4, 6)])


def embedding_cases():
    emb = lambda n, d, pad: {"layer": "Embedding", "num_embeddings": n, "embedding_dim": d,  # noqa: E731
                             "padding_idx": pad}
    case("embedding_plain", emb(10, 4, None), [ids(10, 3, 5, force=[7, 7])])
    case("embedding_padding_idx", emb(10, 4, 2), [ids(10, 3, 5, force=[2, 5, 2])])
    case("embedding_negative_padding_idx", emb(8, 3, -1), [ids(8, 12, force=[7, 0, 7])])


def activation_cases():
    x = randn(3, 4, 5)
    case("relu", {"layer": "ReLU"}, [x])
    case("tanh", {"layer": "Tanh"}, [x])
    case("sigmoid", {"layer": "Sigmoid"}, [x])
    case("silu", {"layer": "SiLU"}, [x])
    case("identity", {"layer": "Identity"}, [x])
    case("gelu", {"layer": "GELU", "approximate": "none"}, [x])
    case("gelu_tanh", {"layer": "GELU", "approximate": "tanh"}, [x])
    case("leaky_relu", {"layer": "LeakyReLU", "negative_slope": 0.2}, [x])
    case("softmax_d1", {"layer": "Softmax", "dim": 1}, [x])
    case("log_softmax_dm1", {"layer": "LogSoftmax", "dim": -1}, [x])
    case("flatten_default", {"layer": "Flatten", "start_dim": 1, "end_dim": -1}, [x])
    case("flatten_0_1", {"layer": "Flatten", "start_dim": 0, "end_dim": 1}, [x])
    case("dropout_eval", {"layer": "Dropout", "p": 0.5}, [x], mode="eval")
    case("dropout_p0_train", {"layer": "Dropout", "p": 0.0}, [x])


def sequential_cases():
    net = sequential(conv("Conv2d", 3, 4, [3, 3], stride=[1, 1], padding=[1, 1], dilation=[1, 1]),
                     bn("BatchNorm2d", 4), {"layer": "ReLU"}, maxpool([2, 2]))
    steps = [randn(2, 3, 6, 6), randn(2, 3, 6, 6, scale=0.5, shift=0.5)]
    case("sequential_conv_bn_relu_pool_train", net, steps, perturb=random_bn_state())
    case("sequential_conv_bn_relu_pool_eval", net, steps[:1], mode="eval", perturb=random_bn_state(4))
    mlp = sequential({"layer": "Flatten", "start_dim": 1, "end_dim": -1},
                     {"layer": "Linear", "in_features": 12, "out_features": 8, "bias": True},
                     {"layer": "GELU", "approximate": "tanh"},
                     {"layer": "Dropout", "p": 0.0},
                     {"layer": "Linear", "in_features": 8, "out_features": 3, "bias": False},
                     {"layer": "LogSoftmax", "dim": 1})
    case("sequential_mlp", mlp, [randn(5, 3, 4)])


def main():
    linear_cases()
    conv_cases()
    pool_cases()
    norm_cases()
    embedding_cases()
    activation_cases()
    sequential_cases()

    meta = dict(METADATA)
    meta["_generator"] = json.dumps({"script": "tools/golden/nn_layers.py", "torch": torch.__version__,
                                     "cases": len(METADATA)})
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    write_safetensors(OUT_PATH, TENSORS, meta)
    check_written(OUT_PATH, TENSORS, meta)
    size = os.path.getsize(OUT_PATH)
    assert size < 1 << 20, f"{OUT_PATH} is {size} bytes, over 1 MiB"
    print(f"wrote {OUT_PATH}: {len(METADATA)} cases, {len(TENSORS)} tensors, {size} bytes")


if __name__ == "__main__":
    main()
