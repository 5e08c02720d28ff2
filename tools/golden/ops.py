#!/usr/bin/env python3
"""Golden fixtures for the stapes op parity test (`tests/parity_ops.rs`).

Runs every case below with PyTorch on the CPU and writes ONE file,
`tests/golden/ops.safetensors`. See `tools/golden/README.md` for how to regenerate.

File layout, per case `<case>` (case names never contain a '.'):

  <case>.in0, <case>.in1, ...   inputs, in the order the op takes them. Float inputs are
                                 leaves; integer inputs (indices) are int64, masks are uint8.
  <case>.out                     the output (single-output ops), or
  <case>.out0, <case>.out1, ...  the outputs of a multi-output op (split, chunk, batch_norm).
  <case>.gout                    the random upstream gradient: backward is out.backward(gout);
  <case>.gout0, <case>.gout1...  for multi-output ops: backward of sum_i (out_i * gout_i).sum(),
                                 only for the outputs that are differentiable (gout_i present).
  <case>.grad0, <case>.grad1...  d(loss)/d(in_i), numbered like the inputs. A float input with
                                 no grad_i is a constant (e.g. batch_norm's running stats).
                                 A case with no gout is forward-only.

Metadata (`__metadata__`): key = case name, value = a flat JSON object of the case's parameters
(numbers, booleans, strings, null, and arrays of numbers; never nested objects). Every case has
an `"op"` key naming the op family the Rust test dispatches on. Optional keys understood for
every op:
  "transpose_inN": [d0, d1]    the stored input N is transposed (a non-contiguous view) before
                               the op; its gradient is w.r.t. the stored (untransposed) tensor.
One extra key, "_generator", holds the generator's description; keys starting with '_' are not
cases.
"""

import json
import math
import os
import sys
import zlib

import torch
import torch.nn.functional as F
from safetensors import safe_open
from golden_io import write_safetensors  # noqa: E402  (the one reproducible writer)

TORCH_VERSION = "2.11.0"
if not torch.__version__.startswith(TORCH_VERSION):
    sys.exit(f"tools/golden/ops.py needs torch {TORCH_VERSION}, found {torch.__version__}")

torch.set_num_threads(1)  # reduction order is then fixed, so the file is reproducible
torch.use_deterministic_algorithms(True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "golden", "ops.safetensors")
MAX_ELEMS = 2000  # per tensor: keeps the file small

TENSORS = {}
METADATA = {}
F32 = torch.float32
F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# Random inputs. Each case has its own generator, seeded from its name, so adding or removing a
# case never changes the data of another.
# ---------------------------------------------------------------------------------------------

class Rng:
    def __init__(self, name):
        self.g = torch.Generator().manual_seed(zlib.crc32(name.encode()))

    def randn(self, *shape, dtype=F32):
        return torch.randn(shape, generator=self.g, dtype=F64).to(dtype)

    def pos(self, *shape, dtype=F32, lo=0.2, hi=2.0):
        """Uniform in [lo, hi): for log, sqrt, rsqrt, pow bases, divisors."""
        return (torch.rand(shape, generator=self.g, dtype=F64) * (hi - lo) + lo).to(dtype)

    def nonzero(self, *shape, dtype=F32):
        """Random sign, magnitude in [0.5, 2): safe divisors."""
        mag = self.pos(*shape, dtype=F64, lo=0.5, hi=2.0)
        sign = torch.randint(0, 2, shape, generator=self.g).to(F64) * 2 - 1
        return (mag * sign).to(dtype)

    def halves(self, *shape, dtype=F32):
        """Values in {-1, -0.5, 0, 0.5, 1}: many exact ties, for the comparison ops."""
        return (torch.randint(-2, 3, shape, generator=self.g).to(F64) / 2).to(dtype)

    def index(self, high, *shape):
        return torch.randint(0, high, shape, generator=self.g, dtype=torch.int64)

    def mask(self, *shape):
        return torch.randint(0, 2, shape, generator=self.g).to(torch.uint8)


def _store(key, t):
    assert key not in TENSORS, f"duplicate tensor {key}"
    assert t.numel() <= MAX_ELEMS, f"{key}: {t.numel()} elements > {MAX_ELEMS}"
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    TENSORS[key] = t.detach().contiguous().clone()


def case(name, op, inputs, fn, params=None, backward=True, const_inputs=()):
    """Run one case and record it.

    inputs: tensors in the op's order. Float tensors become leaves that require grad (when
        `backward`), except the indices in `const_inputs`.
    fn: called with the (possibly transposed) inputs; returns a tensor or a list/tuple of them.
        Integer inputs and masks are passed as stored, except that uint8 masks become bool.
    """
    assert "." not in name and name not in METADATA, name
    params = dict(params or {})
    params = {"op": op, **params}
    args = []
    leaves = []
    for i, x in enumerate(inputs):
        _store(f"{name}.in{i}", x)
        if x.is_floating_point():
            leaf = x.detach().clone()
            if backward and i not in const_inputs:
                leaf.requires_grad_(True)
            leaves.append((i, leaf))
            arg = leaf
        elif x.dtype == torch.uint8:
            arg = x.to(torch.bool)
        else:
            arg = x.clone()
        t = params.get(f"transpose_in{i}")
        if t is not None:
            arg = arg.transpose(*t)
        args.append(arg)

    out = fn(*args)
    multi = isinstance(out, (list, tuple))
    outs = list(out) if multi else [out]
    for k, o in enumerate(outs):
        _store(f"{name}.out{k}" if multi else f"{name}.out", o)

    if backward:
        g = Rng(name + "/gout")
        loss = None
        for k, o in enumerate(outs):
            if not o.requires_grad:
                continue
            gout = g.randn(*o.shape, dtype=o.dtype)
            _store(f"{name}.gout{k}" if multi else f"{name}.gout", gout)
            term = (o * gout).sum()
            loss = term if loss is None else loss + term
        assert loss is not None, f"{name}: no differentiable output"
        if multi:
            loss.backward()
        else:
            outs[0].backward(TENSORS[f"{name}.gout"])
        for i, leaf in leaves:
            if leaf.requires_grad:
                assert leaf.grad is not None, f"{name}: in{i} got no gradient"
                _store(f"{name}.grad{i}", leaf.grad)

    METADATA[name] = json.dumps(params, separators=(",", ":"), allow_nan=False)


# ---------------------------------------------------------------------------------------------
# Unary
# ---------------------------------------------------------------------------------------------

def unary_cases():
    simple = {
        "neg": torch.neg,
        "exp": torch.exp,
        "abs": torch.abs,
        "relu": torch.relu,
        "gelu": lambda x: F.gelu(x),
        "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "sin": torch.sin,
        "cos": torch.cos,
    }
    positive = {"log": torch.log, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt}
    for op, fn in simple.items():
        r = Rng(f"{op}_3x4x5")
        x = r.randn(3, 4, 5) * 2
        case(f"{op}_3x4x5", op, [x], fn)
    for op, fn in positive.items():
        r = Rng(f"{op}_3x4x5")
        case(f"{op}_3x4x5", op, [r.pos(3, 4, 5)], fn)

    r = Rng("powf")
    case("powf_2p5_pos_4x5", "powf", [r.pos(4, 5)], lambda x: x.pow(2.5), {"exponent": 2.5})
    case("powf_neg0p5_pos_4x5", "powf", [r.pos(4, 5)], lambda x: x.pow(-0.5), {"exponent": -0.5})
    # Integer exponent on signed inputs: PyTorch computes x*x*x, not exp(3 log x).
    case("powf_3_signed_4x5", "powf", [r.randn(4, 5)], lambda x: x.pow(3.0), {"exponent": 3.0})
    case("powf_2_signed_4x5", "powf", [r.randn(4, 5)], lambda x: x.pow(2.0), {"exponent": 2.0})

    r = Rng("clamp")
    case("clamp_m0p5_0p7_4x5", "clamp", [r.randn(4, 5)], lambda x: x.clamp(-0.5, 0.7),
         {"min": -0.5, "max": 0.7})
    case("clamp_m1_2_3x4x5", "clamp", [r.randn(3, 4, 5) * 2], lambda x: x.clamp(-1.0, 2.0),
         {"min": -1.0, "max": 2.0})

    # Non-contiguous inputs: the stored tensor is [5,3]; the op sees its transpose [3,5].
    r = Rng("unary_transposed")
    for op, fn in [("exp", torch.exp), ("sigmoid", torch.sigmoid), ("gelu", F.gelu),
                   ("neg", torch.neg)]:
        case(f"{op}_transposed_5x3", op, [r.randn(5, 3)], fn, {"transpose_in0": [0, 1]})
    case("log_transposed_2x5x3", "log", [r.pos(2, 5, 3)], torch.log, {"transpose_in0": [1, 2]})

    # f64
    r = Rng("unary_f64")
    case("tanh_f64_4x5", "tanh", [r.randn(4, 5, dtype=F64)], torch.tanh)
    case("exp_f64_4x5", "exp", [r.randn(4, 5, dtype=F64)], torch.exp)
    case("log_f64_4x5", "log", [r.pos(4, 5, dtype=F64)], torch.log)
    case("gelu_f64_4x5", "gelu", [r.randn(4, 5, dtype=F64)], F.gelu)
    case("sigmoid_f64_4x5", "sigmoid", [r.randn(4, 5, dtype=F64)], torch.sigmoid)

    # f16 / bf16, forward only
    r = Rng("unary_half")
    case("exp_f16_4x5", "exp", [r.randn(4, 5, dtype=torch.float16)], torch.exp, backward=False)
    case("relu_f16_4x5", "relu", [r.randn(4, 5, dtype=torch.float16)], torch.relu,
         backward=False)
    case("tanh_bf16_4x5", "tanh", [r.randn(4, 5, dtype=torch.bfloat16)], torch.tanh,
         backward=False)
    case("sqrt_bf16_4x5", "sqrt", [r.pos(4, 5, dtype=torch.bfloat16)], torch.sqrt,
         backward=False)


# ---------------------------------------------------------------------------------------------
# Binary (broadcasting)
# ---------------------------------------------------------------------------------------------

BINARY = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "pow": torch.pow,
}
BINARY_SHAPES = {
    "bcast_4x1x5_3x1": ((4, 1, 5), (3, 1)),
    "bcast_6x5_5": ((6, 5), (5,)),
    "same_4x5": ((4, 5), (4, 5)),
}


def binary_inputs(r, op, sa, sb, dtype=F32):
    if op == "pow":  # positive base, modest exponent
        return r.pos(*sa, dtype=dtype, lo=0.3, hi=2.0), r.randn(*sb, dtype=dtype)
    if op == "div":
        return r.randn(*sa, dtype=dtype), r.nonzero(*sb, dtype=dtype)
    return r.randn(*sa, dtype=dtype), r.randn(*sb, dtype=dtype)


def binary_cases():
    for op, fn in BINARY.items():
        for tag, (sa, sb) in BINARY_SHAPES.items():
            name = f"{op}_{tag}"
            a, b = binary_inputs(Rng(name), op, sa, sb)
            case(name, op, [a, b], fn)
    # Broadcasting on the left operand, and against a 0-d tensor.
    r = Rng("binary_extra")
    case("sub_bcast_5_6x5", "sub", [r.randn(5), r.randn(6, 5)], torch.sub)
    case("div_bcast_3x1_1x4", "div", [r.randn(3, 1), r.nonzero(1, 4)], torch.div)
    case("mul_bcast_scalar0d", "mul", [r.randn(3, 4), r.randn()], torch.mul)
    case("add_bcast_1x1_2x3x4", "add", [r.randn(1, 1), r.randn(2, 3, 4)], torch.add)
    # Non-contiguous operands.
    case("add_transposed_in1_4x5", "add", [r.randn(4, 5), r.randn(5, 4)], torch.add,
         {"transpose_in1": [0, 1]})
    case("mul_transposed_both_bcast", "mul", [r.randn(5, 3), r.randn(2, 5, 3)], torch.mul,
         {"transpose_in0": [0, 1], "transpose_in1": [1, 2]})
    case("div_transposed_in0_5x4", "div", [r.randn(5, 4), r.nonzero(4, 5)], torch.div,
         {"transpose_in0": [0, 1]})
    # f64
    for op in ["add", "mul", "div", "pow"]:
        name = f"{op}_f64_bcast_4x1x5_3x1"
        a, b = binary_inputs(Rng(name), op, (4, 1, 5), (3, 1), dtype=F64)
        case(name, op, [a, b], BINARY[op])
    # f16 / bf16 forward only
    r = Rng("binary_half")
    case("add_f16_bcast_6x5_5", "add",
         [r.randn(6, 5, dtype=torch.float16), r.randn(5, dtype=torch.float16)], torch.add,
         backward=False)
    case("mul_bf16_bcast_4x1x5_3x1", "mul",
         [r.randn(4, 1, 5, dtype=torch.bfloat16), r.randn(3, 1, dtype=torch.bfloat16)],
         torch.mul, backward=False)
    case("div_f16_same_4x5", "div",
         [r.randn(4, 5, dtype=torch.float16), r.nonzero(4, 5, dtype=torch.float16)], torch.div,
         backward=False)


# ---------------------------------------------------------------------------------------------
# Comparisons, where, masked_fill
# ---------------------------------------------------------------------------------------------

def compare_cases():
    ops = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt,
           "ge": torch.ge}
    for op, fn in ops.items():
        r = Rng(f"{op}_cmp")
        case(f"{op}_bcast_4x1x5_3x1", op, [r.halves(4, 1, 5), r.halves(3, 1)], fn,
             backward=False)
        case(f"{op}_same_4x5", op, [r.halves(4, 5), r.halves(4, 5)], fn, backward=False)
    r = Rng("cmp_extra")
    case("lt_f64_same_4x5", "lt", [r.halves(4, 5, dtype=F64), r.halves(4, 5, dtype=F64)],
         torch.lt, backward=False)
    case("eq_transposed_in0_5x4", "eq", [r.halves(5, 4), r.halves(4, 5)], torch.eq,
         {"transpose_in0": [0, 1]}, backward=False)

    r = Rng("where")
    case("where_bcast_4x1x5_3x5_4x3x1", "where",
         [r.mask(4, 1, 5), r.randn(3, 5), r.randn(4, 3, 1)],
         lambda c, a, b: torch.where(c, a, b))
    case("where_same_4x5", "where", [r.mask(4, 5), r.randn(4, 5), r.randn(4, 5)],
         lambda c, a, b: torch.where(c, a, b))
    case("where_mask_bcast_5_4x5", "where", [r.mask(5), r.randn(4, 5), r.randn(1, 5)],
         lambda c, a, b: torch.where(c, a, b))

    r = Rng("masked_fill")
    case("masked_fill_same_4x5", "masked_fill", [r.randn(4, 5), r.mask(4, 5)],
         lambda x, m: x.masked_fill(m, -2.5), {"value": -2.5})
    case("masked_fill_bcast_3x4x5_4x1", "masked_fill", [r.randn(3, 4, 5), r.mask(4, 1)],
         lambda x, m: x.masked_fill(m, 0.0), {"value": 0.0})
    case("masked_fill_neg_large_2x3x4", "masked_fill", [r.randn(2, 3, 4), r.mask(2, 1, 4)],
         lambda x, m: x.masked_fill(m, -1e9), {"value": -1e9})


# ---------------------------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------------------------

def dtag(dims):
    return "d" + "".join(str(d).replace("-", "m") for d in dims)


def reduce_cases():
    shape = (3, 4, 5)
    dim_sets = [[1], [0, 2], [-1]]
    for op in ["sum", "mean", "max", "min", "logsumexp"]:
        for dims in dim_sets:
            for keep in [True, False]:
                name = f"{op}_{dtag(dims)}_{'keep' if keep else 'nokeep'}_3x4x5"
                x = Rng(name).randn(*shape)
                if op == "sum":
                    fn = lambda x, d=dims, k=keep: x.sum(d, keepdim=k)
                elif op == "mean":
                    fn = lambda x, d=dims, k=keep: x.mean(d, keepdim=k)
                elif op == "max":
                    fn = lambda x, d=dims, k=keep: torch.amax(x, d, keepdim=k)
                elif op == "min":
                    fn = lambda x, d=dims, k=keep: torch.amin(x, d, keepdim=k)
                else:
                    fn = lambda x, d=dims, k=keep: torch.logsumexp(x, d, keepdim=k)
                case(name, op, [x], fn, {"dims": dims, "keepdim": keep})
    # max/min over one dim, the (values) of torch.max(x, dim): must agree with amax.
    r = Rng("maxmin_dim")
    case("max_dim0_values_keep_4x5", "max", [r.randn(4, 5)],
         lambda x: torch.max(x, 0, keepdim=True).values, {"dims": [0], "keepdim": True})
    case("min_dim1_values_nokeep_4x5", "min", [r.randn(4, 5)],
         lambda x: torch.min(x, 1).values, {"dims": [1], "keepdim": False})
    # Every dim reduced with keepdim=false gives a 0-d tensor.
    case("sum_dall_nokeep_3x4", "sum", [r.randn(3, 4)], lambda x: x.sum([0, 1]),
         {"dims": [0, 1], "keepdim": False})
    case("mean_dall_keep_3x4", "mean", [r.randn(3, 4)], lambda x: x.mean([0, 1], keepdim=True),
         {"dims": [0, 1], "keepdim": True})

    for dim in [0, 1, -1]:
        for keep in [True, False]:
            name = f"argmax_d{str(dim).replace('-', 'm')}_{'keep' if keep else 'nokeep'}_3x4x5"
            case(name, "argmax", [Rng(name).randn(*shape)],
                 lambda x, d=dim, k=keep: torch.argmax(x, d, keepdim=k),
                 {"dim": dim, "keepdim": keep}, backward=False)

    for op in ["var", "std"]:
        for dims in [[1], [0, 2]]:
            for corr in [0, 1]:
                for keep in [True, False]:
                    name = f"{op}_{dtag(dims)}_c{corr}_{'keep' if keep else 'nokeep'}_3x4x5"
                    x = Rng(name).randn(*shape)
                    tfn = torch.var if op == "var" else torch.std
                    case(name, op, [x],
                         lambda x, d=dims, c=corr, k=keep, f=tfn: f(x, d, correction=c,
                                                                   keepdim=k),
                         {"dims": dims, "correction": corr, "keepdim": keep})

    r = Rng("sum_all")
    case("sum_all_3x4x5", "sum_all", [r.randn(3, 4, 5)], lambda x: x.sum())
    case("sum_all_transposed_5x6", "sum_all", [r.randn(5, 6)], lambda x: x.sum(),
         {"transpose_in0": [0, 1]})
    # Reductions over non-contiguous inputs.
    r = Rng("reduce_transposed")
    case("sum_d1_nokeep_transposed_5x4", "sum", [r.randn(5, 4)], lambda x: x.sum(1),
         {"dims": [1], "keepdim": False, "transpose_in0": [0, 1]})
    case("max_d0_keep_transposed_5x4", "max", [r.randn(5, 4)],
         lambda x: torch.amax(x, 0, keepdim=True),
         {"dims": [0], "keepdim": True, "transpose_in0": [0, 1]})
    case("var_d1_c1_keep_transposed_6x3", "var", [r.randn(6, 3)],
         lambda x: x.var(1, correction=1, keepdim=True),
         {"dims": [1], "correction": 1, "keepdim": True, "transpose_in0": [0, 1]})
    # f64 and half
    r = Rng("reduce_dtypes")
    case("sum_f64_d1_nokeep_3x4x5", "sum", [r.randn(3, 4, 5, dtype=F64)], lambda x: x.sum(1),
         {"dims": [1], "keepdim": False})
    case("var_f64_d02_c1_keep_3x4x5", "var", [r.randn(3, 4, 5, dtype=F64)],
         lambda x: x.var([0, 2], correction=1, keepdim=True),
         {"dims": [0, 2], "correction": 1, "keepdim": True})
    case("sum_bf16_d1_nokeep_3x4x5", "sum", [r.randn(3, 4, 5, dtype=torch.bfloat16)],
         lambda x: x.sum(1), {"dims": [1], "keepdim": False}, backward=False)
    case("mean_f16_dm1_keep_3x4x5", "mean", [r.randn(3, 4, 5, dtype=torch.float16)],
         lambda x: x.mean(-1, keepdim=True), {"dims": [-1], "keepdim": True}, backward=False)


# ---------------------------------------------------------------------------------------------
# Softmax
# ---------------------------------------------------------------------------------------------

def softmax_cases():
    for op, fn in [("softmax", torch.softmax), ("log_softmax", torch.log_softmax)]:
        for dim in [-1, 0, 1]:
            name = f"{op}_d{str(dim).replace('-', 'm')}_3x4x5"
            x = Rng(name).randn(3, 4, 5) * 3
            case(name, op, [x], lambda x, d=dim, f=fn: f(x, d), {"dim": dim})
        r = Rng(f"{op}_extra")
        case(f"{op}_dm1_transposed_6x4", op, [r.randn(6, 4) * 3], lambda x, f=fn: f(x, -1),
             {"dim": -1, "transpose_in0": [0, 1]})
        case(f"{op}_f64_dm1_3x5", op, [r.randn(3, 5, dtype=F64) * 3],
             lambda x, f=fn: f(x, -1), {"dim": -1})
        # Large logits: needs the max-subtraction.
        case(f"{op}_large_dm1_2x6", op, [r.randn(2, 6) * 30 + 80], lambda x, f=fn: f(x, -1),
             {"dim": -1})
    r = Rng("softmax_half")
    case("softmax_bf16_dm1_3x8", "softmax", [r.randn(3, 8, dtype=torch.bfloat16)],
         lambda x: torch.softmax(x, -1), {"dim": -1}, backward=False)


# ---------------------------------------------------------------------------------------------
# Matmul
# ---------------------------------------------------------------------------------------------

def matmul_cases():
    shapes = {
        "2d_4x5_5x3": ((4, 5), (5, 3)),
        "batched_2x3x4x5_5x6": ((2, 3, 4, 5), (5, 6)),
        "bcast_2x1x3x4_5x4x6": ((2, 1, 3, 4), (5, 4, 6)),
        "batched_3x4x5_3x5x2": ((3, 4, 5), (3, 5, 2)),
        "vec_5_5x3": ((5,), (5, 3)),
        "vec_4x5_5": ((4, 5), (5,)),
        "vec_5_5": ((5,), (5,)),
        "vec_5_2x5x3": ((5,), (2, 5, 3)),
        "vec_2x4x5_5": ((2, 4, 5), (5,)),
    }
    for tag, (sa, sb) in shapes.items():
        name = f"matmul_{tag}"
        r = Rng(name)
        case(name, "matmul", [r.randn(*sa), r.randn(*sb)], torch.matmul)
    r = Rng("matmul_extra")
    # Non-contiguous: A^T @ B and A @ B^T, as stored tensors transposed.
    case("matmul_transposed_in0_5x4_5x3", "matmul", [r.randn(5, 4), r.randn(5, 3)],
         torch.matmul, {"transpose_in0": [0, 1]})
    case("matmul_transposed_in1_4x5_3x5", "matmul", [r.randn(4, 5), r.randn(3, 5)],
         torch.matmul, {"transpose_in1": [0, 1]})
    case("matmul_transposed_in1_batched_2x4x5_2x3x5", "matmul",
         [r.randn(2, 4, 5), r.randn(2, 3, 5)], torch.matmul, {"transpose_in1": [1, 2]})
    # Larger K (accumulation order matters more).
    case("matmul_2d_8x64_64x8", "matmul", [r.randn(8, 64), r.randn(64, 8)], torch.matmul)
    case("matmul_f64_2x3x4_4x5", "matmul", [r.randn(2, 3, 4, dtype=F64),
                                             r.randn(4, 5, dtype=F64)], torch.matmul)
    case("matmul_f16_4x16_16x3", "matmul", [r.randn(4, 16, dtype=torch.float16),
                                             r.randn(16, 3, dtype=torch.float16)],
         torch.matmul, backward=False)
    case("matmul_bf16_4x16_16x3", "matmul", [r.randn(4, 16, dtype=torch.bfloat16),
                                              r.randn(16, 3, dtype=torch.bfloat16)],
         torch.matmul, backward=False)


# ---------------------------------------------------------------------------------------------
# Shape and indexing ops
# ---------------------------------------------------------------------------------------------

def shape_cases():
    r = Rng("cat")
    case("cat_d1_2x3x4_2x5x4", "cat", [r.randn(2, 3, 4), r.randn(2, 5, 4)],
         lambda a, b: torch.cat([a, b], 1), {"dim": 1})
    case("cat_d0_3_inputs", "cat", [r.randn(1, 4), r.randn(3, 4), r.randn(2, 4)],
         lambda *xs: torch.cat(xs, 0), {"dim": 0})
    case("cat_dm1_2x3x2_2x3x4", "cat", [r.randn(2, 3, 2), r.randn(2, 3, 4)],
         lambda a, b: torch.cat([a, b], -1), {"dim": -1})
    case("cat_d0_transposed_in1", "cat", [r.randn(2, 5), r.randn(5, 3)],
         lambda a, b: torch.cat([a, b], 0), {"dim": 0, "transpose_in1": [0, 1]})

    r = Rng("stack")
    for dim in [0, 1, 2, -1]:
        case(f"stack_d{str(dim).replace('-', 'm')}_3x_3x4", "stack",
             [r.randn(3, 4), r.randn(3, 4), r.randn(3, 4)],
             lambda *xs, d=dim: torch.stack(xs, d), {"dim": dim})

    r = Rng("split")
    case("split_2_3_1_d1_4x6x3", "split", [r.randn(4, 6, 3)],
         lambda x: list(torch.split(x, [2, 3, 1], 1)), {"sizes": [2, 3, 1], "dim": 1})
    case("split_3_4_d0_7x2", "split", [r.randn(7, 2)],
         lambda x: list(torch.split(x, [3, 4], 0)), {"sizes": [3, 4], "dim": 0})
    case("split_2_2_dm1_transposed", "split", [r.randn(4, 3)],
         lambda x: list(torch.split(x, [2, 2], -1)),
         {"sizes": [2, 2], "dim": -1, "transpose_in0": [0, 1]})

    r = Rng("chunk")
    case("chunk_3_d0_7x4", "chunk", [r.randn(7, 4)], lambda x: list(torch.chunk(x, 3, 0)),
         {"chunks": 3, "dim": 0})
    case("chunk_2_d1_3x6", "chunk", [r.randn(3, 6)], lambda x: list(torch.chunk(x, 2, 1)),
         {"chunks": 2, "dim": 1})
    # torch.chunk(6 rows, 4) gives THREE chunks of 2 (chunk size = ceil(6/4)), not four.
    case("chunk_4_d0_6x2_gives_3", "chunk", [r.randn(6, 2)], lambda x: list(torch.chunk(x, 4, 0)),
         {"chunks": 4, "dim": 0})

    r = Rng("pad")
    case("pad_const_1_2_v0p5_2x3x4", "pad", [r.randn(2, 3, 4)],
         lambda x: F.pad(x, (1, 2), "constant", 0.5),
         {"pads": [1, 2], "mode": "constant", "value": 0.5})
    case("pad_const_1_2_0_1_v0_2x3x4", "pad", [r.randn(2, 3, 4)],
         lambda x: F.pad(x, (1, 2, 0, 1), "constant", 0.0),
         {"pads": [1, 2, 0, 1], "mode": "constant", "value": 0.0})
    case("pad_const_4d_1_1_2_0_1_0_vm1_1x2x3x4", "pad", [r.randn(1, 2, 3, 4)],
         lambda x: F.pad(x, (1, 1, 2, 0, 1, 0), "constant", -1.0),
         {"pads": [1, 1, 2, 0, 1, 0], "mode": "constant", "value": -1.0})
    case("pad_reflect_2_1_2x3x5", "pad", [r.randn(2, 3, 5)],
         lambda x: F.pad(x, (2, 1), "reflect"), {"pads": [2, 1], "mode": "reflect", "value": 0.0})
    case("pad_reflect_4d_1_2_2_1_1x2x4x5", "pad", [r.randn(1, 2, 4, 5)],
         lambda x: F.pad(x, (1, 2, 2, 1), "reflect"),
         {"pads": [1, 2, 2, 1], "mode": "reflect", "value": 0.0})
    case("pad_reflect_transposed_2x5x4", "pad", [r.randn(2, 5, 4)],
         lambda x: F.pad(x, (3, 3), "reflect"),
         {"pads": [3, 3], "mode": "reflect", "value": 0.0, "transpose_in0": [1, 2]})

    r = Rng("index_select")
    case("index_select_d0_5x4", "index_select", [r.randn(5, 4), torch.tensor([3, 0, 3, 1])],
         lambda x, i: torch.index_select(x, 0, i), {"dim": 0})
    case("index_select_d1_3x6", "index_select", [r.randn(3, 6), torch.tensor([5, 2, 2, 0, 1])],
         lambda x, i: torch.index_select(x, 1, i), {"dim": 1})
    case("index_select_dm1_2x3x4", "index_select", [r.randn(2, 3, 4), torch.tensor([1, 1, 3])],
         lambda x, i: torch.index_select(x, -1, i), {"dim": -1})

    r = Rng("gather")
    case("gather_d1_3x4_idx3x2", "gather", [r.randn(3, 4), r.index(4, 3, 2)],
         lambda x, i: torch.gather(x, 1, i), {"dim": 1})
    case("gather_d0_4x3_idx6x3", "gather", [r.randn(4, 3), r.index(4, 6, 3)],
         lambda x, i: torch.gather(x, 0, i), {"dim": 0})
    case("gather_d2_2x3x5_idx2x3x4", "gather", [r.randn(2, 3, 5), r.index(5, 2, 3, 4)],
         lambda x, i: torch.gather(x, 2, i), {"dim": 2})

    r = Rng("scatter_add")
    case("scatter_add_d0_3x5_idx4x5", "scatter_add",
         [r.randn(3, 5), r.index(3, 4, 5), r.randn(4, 5)],
         lambda x, i, s: x.scatter_add(0, i, s), {"dim": 0})
    case("scatter_add_d1_3x4_idx3x6", "scatter_add",
         [r.randn(3, 4), r.index(4, 3, 6), r.randn(3, 6)],
         lambda x, i, s: x.scatter_add(1, i, s), {"dim": 1})
    # index smaller than src: only the index's extent of src is used. Forward only: PyTorch
    # 2.11's own backward rejects this shape combination.
    case("scatter_add_d1_idx_smaller_than_src", "scatter_add",
         [r.randn(2, 5), r.index(5, 2, 3), r.randn(2, 4)],
         lambda x, i, s: x.scatter_add(1, i, s), {"dim": 1}, backward=False)

    r = Rng("embedding")
    case("embedding_10x4_ids2x3", "embedding",
         [r.randn(10, 4), torch.tensor([[1, 7, 1], [0, 9, 7]])],
         lambda w, ids: F.embedding(ids, w))
    case("embedding_6x3_ids5", "embedding", [r.randn(6, 3), torch.tensor([5, 5, 2, 0, 5])],
         lambda w, ids: F.embedding(ids, w))

    # Casts, forward only. Values chosen to exercise rounding, overflow to inf, subnormals.
    r = Rng("cast")
    special = torch.tensor([0.0, -0.0, 1.0, -1.0, 65504.0, 65520.0, 1e5, -1e5, 6e-8, 1e-8,
                            3.0e-5, 1.0009765625, 1.00048828125, 1.000732421875, 3.3895e38,
                            1e-40], dtype=F32)
    x = torch.cat([special, r.randn(24) * 10])
    case("cast_f32_f16", "cast", [x], lambda x: x.to(torch.float16), {"dtype": "f16"},
         backward=False)
    case("cast_f32_bf16", "cast", [x], lambda x: x.to(torch.bfloat16), {"dtype": "bf16"},
         backward=False)
    case("cast_f32_f64", "cast", [x], lambda x: x.to(F64), {"dtype": "f64"}, backward=False)
    case("cast_f16_f32", "cast", [r.randn(4, 5, dtype=torch.float16)],
         lambda x: x.to(F32), {"dtype": "f32"}, backward=False)
    case("cast_bf16_f32", "cast", [r.randn(4, 5, dtype=torch.bfloat16)],
         lambda x: x.to(F32), {"dtype": "f32"}, backward=False)
    x64 = torch.cat([torch.tensor([1.0 + 2.0 ** -30, 1e-50, 1e300, -1e300], dtype=F64),
                     r.randn(16, dtype=F64)])
    case("cast_f64_f32", "cast", [x64], lambda x: x.to(F32), {"dtype": "f32"}, backward=False)
    case("cast_f32_f16_transposed_5x3", "cast", [r.randn(5, 3)], lambda x: x.to(torch.float16),
         {"dtype": "f16", "transpose_in0": [0, 1]}, backward=False)


# ---------------------------------------------------------------------------------------------
# Convolution, pooling, normalisation
# ---------------------------------------------------------------------------------------------

def conv_cases():
    # conv1d: (name, x shape, w shape, bias, stride, padding, dilation, groups)
    c1 = [
        ("conv1d_basic_bias", (2, 3, 10), (4, 3, 3), True, 1, 0, 1, 1),
        ("conv1d_s2_p1_nobias", (2, 3, 11), (5, 3, 3), False, 2, 1, 1, 1),
        ("conv1d_s1_p2_d2_g2_bias", (2, 4, 10), (6, 2, 3), True, 1, 2, 2, 2),
        ("conv1d_s3_p0_d1_k1_bias", (1, 3, 10), (2, 3, 1), True, 3, 0, 1, 1),
        ("conv1d_depthwise_p1_bias", (2, 4, 8), (4, 1, 3), True, 1, 1, 1, 4),
    ]
    for name, xs, ws, bias, s, p, d, g in c1:
        r = Rng(name)
        ins = [r.randn(*xs), r.randn(*ws)] + ([r.randn(ws[0])] if bias else [])
        case(name, "conv1d", ins,
             lambda x, w, b=None, s=s, p=p, d=d, g=g: F.conv1d(x, w, b, s, p, d, g),
             {"bias": bias, "stride": s, "padding": p, "dilation": d, "groups": g})
    # conv2d
    c2 = [
        ("conv2d_basic_bias", (2, 3, 7, 7), (4, 3, 3, 3), True, [1, 1], [0, 0], [1, 1], 1),
        ("conv2d_s2_p1_nobias", (2, 3, 8, 8), (4, 3, 3, 3), False, [2, 2], [1, 1], [1, 1], 1),
        ("conv2d_s2_p1_d2_g2", (2, 4, 9, 9), (6, 2, 3, 3), True, [2, 2], [1, 1], [2, 2], 2),
        ("conv2d_asym_k3x2_s1x2_p2x1_d1x2", (1, 3, 7, 8), (4, 3, 3, 2), True, [1, 2], [2, 1],
         [1, 2], 1),
        ("conv2d_depthwise_p1", (1, 4, 6, 6), (4, 1, 3, 3), False, [1, 1], [1, 1], [1, 1], 4),
        ("conv2d_1x1_bias", (2, 5, 4, 4), (3, 5, 1, 1), True, [1, 1], [0, 0], [1, 1], 1),
        ("conv2d_s3_p0_g3_nobias", (1, 6, 10, 9), (3, 2, 2, 3), False, [3, 3], [0, 0], [1, 1],
         3),
    ]
    for name, xs, ws, bias, s, p, d, g in c2:
        r = Rng(name)
        ins = [r.randn(*xs), r.randn(*ws)] + ([r.randn(ws[0])] if bias else [])
        case(name, "conv2d", ins,
             lambda x, w, b=None, s=s, p=p, d=d, g=g: F.conv2d(x, w, b, s, p, d, g),
             {"bias": bias, "stride": s, "padding": p, "dilation": d, "groups": g})
    r = Rng("conv_extra")
    case("conv2d_f64_s1_p1_bias", "conv2d",
         [r.randn(1, 2, 5, 5, dtype=F64), r.randn(3, 2, 3, 3, dtype=F64), r.randn(3, dtype=F64)],
         lambda x, w, b: F.conv2d(x, w, b, 1, 1),
         {"bias": True, "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1})
    # Non-contiguous input: stored [N, W, C], conv sees [N, C, W].
    case("conv1d_transposed_in0", "conv1d", [r.randn(2, 9, 3), r.randn(4, 3, 3)],
         lambda x, w: F.conv1d(x, w, None, 1, 1),
         {"bias": False, "stride": 1, "padding": 1, "dilation": 1, "groups": 1,
          "transpose_in0": [1, 2]})


def pool_cases():
    mp = [
        # (name, x shape, kernel, stride, padding, dilation, ceil)
        ("max_pool2d_k2_s2", (2, 3, 8, 8), [2, 2], [2, 2], [0, 0], [1, 1], False),
        ("max_pool2d_k3_s2_p1", (2, 2, 7, 7), [3, 3], [2, 2], [1, 1], [1, 1], False),
        ("max_pool2d_k3_s2_p1_ceil", (1, 2, 8, 8), [3, 3], [2, 2], [1, 1], [1, 1], True),
        ("max_pool2d_k2_s1_d2", (1, 2, 7, 6), [2, 2], [1, 1], [0, 0], [2, 2], False),
        ("max_pool2d_k3x2_s2x1_p1x0_d1x2_ceil", (2, 2, 9, 8), [3, 2], [2, 1], [1, 0], [1, 2],
         True),
        ("max_pool2d_k2_s3_ceil", (1, 1, 8, 10), [2, 2], [3, 3], [0, 0], [1, 1], True),
    ]
    for name, xs, k, s, p, d, ceil in mp:
        case(name, "max_pool2d", [Rng(name).randn(*xs)],
             lambda x, k=k, s=s, p=p, d=d, c=ceil: F.max_pool2d(x, k, s, p, d, ceil_mode=c),
             {"kernel": k, "stride": s, "padding": p, "dilation": d, "ceil_mode": ceil})
    ap = [
        # (name, x shape, kernel, stride, padding, ceil, count_include_pad)
        ("avg_pool2d_k2_s2", (2, 3, 6, 6), [2, 2], [2, 2], [0, 0], False, True),
        ("avg_pool2d_k3_s2_p1_incpad", (2, 2, 7, 7), [3, 3], [2, 2], [1, 1], False, True),
        ("avg_pool2d_k3_s2_p1_excpad", (2, 2, 7, 7), [3, 3], [2, 2], [1, 1], False, False),
        ("avg_pool2d_k3_s2_p1_ceil_incpad", (1, 2, 8, 8), [3, 3], [2, 2], [1, 1], True, True),
        ("avg_pool2d_k3_s2_p1_ceil_excpad", (1, 2, 8, 8), [3, 3], [2, 2], [1, 1], True, False),
        ("avg_pool2d_k2x3_s2x2_p1x1_ceil_incpad", (1, 2, 7, 8), [2, 3], [2, 2], [1, 1], True,
         True),
        ("avg_pool2d_k2_s3_ceil_excpad", (1, 1, 8, 10), [2, 2], [3, 3], [0, 0], True, False),
    ]
    for name, xs, k, s, p, ceil, cip in ap:
        case(name, "avg_pool2d", [Rng(name).randn(*xs)],
             lambda x, k=k, s=s, p=p, c=ceil, i=cip: F.avg_pool2d(x, k, s, p, ceil_mode=c,
                                                                  count_include_pad=i),
             {"kernel": k, "stride": s, "padding": p, "ceil_mode": ceil,
              "count_include_pad": cip})
    r = Rng("pool_extra")
    case("max_pool2d_k2_s2_transposed", "max_pool2d", [r.randn(1, 2, 6, 4)],
         lambda x: F.max_pool2d(x, 2, 2),
         {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0], "dilation": [1, 1],
          "ceil_mode": False, "transpose_in0": [2, 3]})


def norm_cases():
    eps = 1e-5
    ln = [
        ("layer_norm_last1_affine_3x4x5", (3, 4, 5), [5], True),
        ("layer_norm_last2_affine_3x4x5", (3, 4, 5), [4, 5], True),
        ("layer_norm_last1_noaffine_3x4x5", (3, 4, 5), [5], False),
        ("layer_norm_last2_noaffine_2x3x4", (2, 3, 4), [3, 4], False),
    ]
    for name, xs, ns, affine in ln:
        r = Rng(name)
        ins = [r.randn(*xs) * 2 + 1]
        if affine:
            ins += [r.randn(*ns) + 1, r.randn(*ns)]
        case(name, "layer_norm", ins,
             lambda x, w=None, b=None, ns=ns: F.layer_norm(x, ns, w, b, eps),
             {"normalized_shape": ns, "affine": affine, "eps": eps})
    r = Rng("layer_norm_extra")
    case("layer_norm_last1_affine_f64_3x6", "layer_norm",
         [r.randn(3, 6, dtype=F64), r.randn(6, dtype=F64), r.randn(6, dtype=F64)],
         lambda x, w, b: F.layer_norm(x, [6], w, b, eps),
         {"normalized_shape": [6], "affine": True, "eps": eps})
    case("layer_norm_last1_affine_transposed_6x3", "layer_norm",
         [r.randn(6, 3), r.randn(6), r.randn(6)],
         lambda x, w, b: F.layer_norm(x, [6], w, b, eps),
         {"normalized_shape": [6], "affine": True, "eps": eps, "transpose_in0": [0, 1]})

    # batch_norm: inputs [x, (weight, bias if affine), (running_mean, running_var if stats)].
    # Training with running stats: out0 = y, out1 = updated running_mean, out2 = updated
    # running_var (PyTorch updates it with the UNBIASED batch variance).
    bn = [
        ("batch_norm_train_stats_affine_4x3x5", (4, 3, 5), True, True, True),
        ("batch_norm_train_stats_affine_2x3x3x3", (2, 3, 3, 3), True, True, True),
        ("batch_norm_train_nostats_noaffine_4x3x5", (4, 3, 5), True, False, False),
        ("batch_norm_train_stats_affine_8x3", (8, 3), True, True, True),
        ("batch_norm_eval_affine_4x3x5", (4, 3, 5), False, True, True),
        ("batch_norm_eval_noaffine_2x3x3x3", (2, 3, 3, 3), False, False, True),
    ]
    momentum = 0.1
    for name, xs, training, affine, stats in bn:
        r = Rng(name)
        c = xs[1]
        ins = [r.randn(*xs) * 2 + 0.5]
        if affine:
            ins += [r.randn(c) + 1, r.randn(c)]
        if stats:
            ins += [r.randn(c) * 0.3, r.pos(c, lo=0.5, hi=1.5)]
        const = (len(ins) - 2, len(ins) - 1) if stats else ()

        def fn(*args, training=training, affine=affine, stats=stats):
            x = args[0]
            w, b = (args[1], args[2]) if affine else (None, None)
            rm, rv = (args[-2], args[-1]) if stats else (None, None)
            y = F.batch_norm(x, rm, rv, w, b, training, momentum, eps)
            if training and stats:
                return [y, rm, rv]  # rm, rv updated in place
            return y

        case(name, "batch_norm", ins, fn,
             {"training": training, "affine": affine, "running_stats": stats,
              "momentum": momentum, "eps": eps}, const_inputs=const)


# ---------------------------------------------------------------------------------------------
# Views, each followed by a mul / reduction so the gradient flows through the view
# ---------------------------------------------------------------------------------------------

def view_cases():
    """op = the view; "then" = what follows it: "mul" (times in1, broadcasting), "sum" (over
    "then_dims", keepdim false), or absent (the view itself is the output)."""
    r = Rng("views")

    def then(v, rest, p):
        if p.get("then") == "mul":
            return v * rest[0]
        if p.get("then") == "sum":
            return v.sum(p["then_dims"])
        return v

    def view_case(name, op, ins, view_fn, p):
        case(name, op, ins, lambda x, *rest: then(view_fn(x), rest, p), p)

    view_case("reshape_3x4_to_2x6", "reshape", [r.randn(3, 4)], lambda x: x.reshape(2, 6),
              {"shape": [2, 6]})
    view_case("reshape_2x3x4_to_4x6_then_mul", "reshape", [r.randn(2, 3, 4), r.randn(4, 6)],
              lambda x: x.reshape(4, 6), {"shape": [4, 6], "then": "mul"})
    view_case("reshape_transposed_4x6_to_24_then_mul", "reshape", [r.randn(4, 6), r.randn(24)],
              lambda x: x.reshape(24),
              {"shape": [24], "then": "mul", "transpose_in0": [0, 1]})
    view_case("transpose_01_then_mul_3x4", "transpose", [r.randn(3, 4), r.randn(4, 3)],
              lambda x: x.transpose(0, 1), {"dims": [0, 1], "then": "mul"})
    view_case("permute_021_then_mul_2x3x4", "permute", [r.randn(2, 3, 4), r.randn(2, 4, 3)],
              lambda x: x.permute(0, 2, 1), {"dims": [0, 2, 1], "then": "mul"})
    view_case("permute_201_then_sum_d0_2x3x4", "permute", [r.randn(2, 3, 4)],
              lambda x: x.permute(2, 0, 1), {"dims": [2, 0, 1], "then": "sum", "then_dims": [0]})
    view_case("narrow_d1_1_3_then_mul_2x5x3", "narrow", [r.randn(2, 5, 3), r.randn(3, 3)],
              lambda x: x.narrow(1, 1, 3), {"dim": 1, "start": 1, "len": 3, "then": "mul"})
    view_case("narrow_d0_2_2_then_sum_d1_5x4", "narrow", [r.randn(5, 4)],
              lambda x: x.narrow(0, 2, 2),
              {"dim": 0, "start": 2, "len": 2, "then": "sum", "then_dims": [1]})
    view_case("squeeze_d1_then_mul_3x1x4", "squeeze", [r.randn(3, 1, 4), r.randn(3, 4)],
              lambda x: x.squeeze(1), {"dim": 1, "then": "mul"})
    view_case("unsqueeze_d1_then_mul_bcast_3x4", "unsqueeze", [r.randn(3, 4), r.randn(3, 5, 4)],
              lambda x: x.unsqueeze(1), {"dim": 1, "then": "mul"})
    view_case("unsqueeze_dm1_3x4", "unsqueeze", [r.randn(3, 4)], lambda x: x.unsqueeze(-1),
              {"dim": -1})
    view_case("expand_3x1_to_3x4_then_mul", "expand", [r.randn(3, 1), r.randn(3, 4)],
              lambda x: x.expand(3, 4), {"shape": [3, 4], "then": "mul"})
    view_case("expand_4_to_2x3x4_then_sum_d1", "expand", [r.randn(4)],
              lambda x: x.expand(2, 3, 4), {"shape": [2, 3, 4], "then": "sum", "then_dims": [1]})
    view_case("expand_1x3x1_to_2x3x5_then_mul", "expand", [r.randn(1, 3, 1), r.randn(2, 3, 5)],
              lambda x: x.expand(2, 3, 5), {"shape": [2, 3, 5], "then": "mul"})


ST_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
             torch.bfloat16: "BF16", torch.int64: "I64", torch.uint8: "U8"}


def check_written(path, tensors, metadata):
    """Read the file back with the safetensors library and compare everything."""
    with safe_open(path, "pt") as f:
        assert f.metadata() == metadata, "metadata round trip"
        assert set(f.keys()) == set(tensors), "tensor names round trip"
        for name, t in tensors.items():
            u = f.get_tensor(name)
            assert u.dtype == t.dtype and u.shape == t.shape, name
            assert torch.equal(u.view(-1).view(torch.uint8), t.view(-1).view(torch.uint8)), name


def main():
    unary_cases()
    binary_cases()
    compare_cases()
    reduce_cases()
    softmax_cases()
    matmul_cases()
    shape_cases()
    conv_cases()
    pool_cases()
    norm_cases()
    view_cases()

    meta = dict(METADATA)
    meta["_generator"] = json.dumps({"script": "tools/golden/ops.py", "torch": torch.__version__,
                                     "cases": len(METADATA)})
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    write_safetensors(OUT_PATH, TENSORS, meta)
    check_written(OUT_PATH, TENSORS, meta)
    size = os.path.getsize(OUT_PATH)
    assert size < 1 << 20, f"{OUT_PATH} is {size} bytes, over 1 MiB"
    print(f"wrote {OUT_PATH}: {len(METADATA)} cases, {len(TENSORS)} tensors, {size} bytes")


if __name__ == "__main__":
    main()
