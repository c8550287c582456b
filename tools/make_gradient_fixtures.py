"""Torch-referenced fixtures for ``Model.vjp``: small seeded models exported to ONNX, with torch autograd's answers.

For every variant below (a torch module, an exporter, an opset) this writes into tests/models/grad/:

* ``<name>.onnx``: the module exported with the legacy TorchScript exporter (``dynamo=False``,
  ``do_constant_folding=False``, ``training=EVAL`` so BatchNormalization stays a node) or the dynamo exporter;
* ``<name>.npz``: the feed (batch 2), torch's output, a seeded random cotangent for it, and torch autograd's
  gradient of ``sum(output * cotangent)`` with respect to the input and to every parameter and buffer, keyed by
  the ONNX name it became (``grad:<onnx name>``), already in the ONNX layout. ``meta`` is a JSON string: exporter,
  opset, ops, the torch -> ONNX name map with any transform (``transpose`` when an exporter stored a weight
  transposed) and, for anything not mapped, the reason; plus the float initializers that are exporter constants
  (no torch counterpart: their gradients are not checked against torch).

Every parameter and buffer is redrawn at random (seeded) after construction, so BatchNorm statistics are not the
trivial 0/1 and no two tensors share a value (names are matched by value where an exporter renamed them).
BatchNorm running statistics have no autograd gradient in torch; their reference comes from the same module run
with an explicit ``(x - mean) / sqrt(var + eps) * w + b`` whose mean and var are leaf tensors.

Torch is needed only here (``pip install torch==2.13.0 onnxscript``); the tests read the committed files.
Each export is also run once by onnxruntime and compared with torch, so a fixture whose ONNX does not compute
what torch computed is refused rather than written.

    python tools/make_gradient_fixtures.py            # all variants
    python tools/make_gradient_fixtures.py vit_l17    # some, by name
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "models" / "grad"
MAX_BYTES = 300 * 1024
BATCH = 2


# ---- the models ---------------------------------------------------------------------------------------------
class ResidualCNN(nn.Module):
    """conv -> two residual blocks (skip Add, one with a 1x1 projection) -> global average pool -> linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.a1 = nn.Conv2d(6, 6, 3, padding=1)
        self.a2 = nn.Conv2d(6, 6, 3, padding=1)
        self.b1 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.b2 = nn.Conv2d(8, 8, 3, padding=1)
        self.proj = nn.Conv2d(6, 8, 1, stride=2)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.a2(F.relu(self.a1(x))))
        x = F.relu(self.proj(x) + self.b2(F.relu(self.b1(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class DepthwiseSeparable(nn.Module):
    """Depthwise (groups=C) 3x3 + pointwise 1x1 blocks with ReLU6, max pooling, global pooling, linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.dw1 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw1 = nn.Conv2d(8, 12, 1)
        self.dw2 = nn.Conv2d(12, 12, 3, stride=2, padding=1, groups=12)
        self.pw2 = nn.Conv2d(12, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu6(self.stem(x))
        x = F.relu6(self.pw1(F.relu6(self.dw1(x))))
        x = F.max_pool2d(x, 2)
        x = F.relu6(self.pw2(F.relu6(self.dw2(x))))
        x = torch.mean(x, dim=(2, 3))
        return self.fc(x)


class UNet(nn.Module):
    """Two-level U-Net: conv/maxpool down, ConvTranspose up, skip Concat; the output is a 10-channel map."""

    def __init__(self):
        super().__init__()
        self.e1 = nn.Conv2d(1, 4, 3, padding=1)
        self.e2 = nn.Conv2d(4, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.up2 = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.d2 = nn.Conv2d(16, 8, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
        self.d1 = nn.Conv2d(8, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        s1 = F.relu(self.e1(x))                       # 28
        s2 = F.relu(self.e2(F.max_pool2d(s1, 2)))     # 14
        m = F.relu(self.mid(F.max_pool2d(s2, 2)))     # 7
        u2 = F.relu(self.d2(torch.cat([self.up2(m), s2], dim=1)))     # 14
        u1 = F.relu(self.d1(torch.cat([self.up1(u2), s1], dim=1)))    # 28
        return self.head(u1)


class TinyViT(nn.Module):
    """Patch embedding conv (7x7, stride 7: 16 tokens), position embedding, one pre-norm transformer block with
    two-head attention written as MatMul/Softmax, GELU MLP, final LayerNorm, mean pooling over tokens."""

    def __init__(self, dim=24, heads=2):
        super().__init__()
        self.heads = heads
        self.patch = nn.Conv2d(1, dim, 7, stride=7)
        self.pos = nn.Parameter(torch.zeros(1, 16, dim))
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.ln3 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch(x)                             # N, D, 4, 4
        n, d = x.shape[0], x.shape[1]
        x = x.flatten(2).transpose(1, 2) + self.pos   # N, 16, D
        h = self.ln1(x)
        qkv = self.qkv(h).reshape(n, 16, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]              # N, H, 16, D/H
        att = torch.softmax(q @ k.transpose(-2, -1) / float(np.sqrt(d // self.heads)), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(n, 16, d)
        x = x + self.proj(o)
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return self.head(self.ln3(x).mean(dim=1))


class KerasNHWC(nn.Module):
    """Keras layout: input [N,28,28,1]; Transpose to NCHW for the convs, back to NHWC, channels-last Reshape
    (flatten in H,W,C order) into the dense layers, softmax probabilities out."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 5, stride=2)        # 12
        self.c2 = nn.Conv2d(4, 6, 3, stride=2)        # 5
        self.fc1 = nn.Linear(5 * 5 * 6, 24)
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x):
        x = x.permute(0, 3, 1, 2)
        x = F.relu(self.c2(F.relu(self.c1(x))))
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return torch.softmax(self.fc2(F.relu(self.fc1(x))), dim=-1)


class MLPBatchNorm(nn.Module):
    """Flatten -> Linear -> BatchNorm1d -> ReLU -> Linear -> BatchNorm1d -> Tanh -> Linear."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 32)
        self.bn1 = nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, 16)
        self.bn2 = nn.BatchNorm1d(16)
        self.fc3 = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = F.relu(self.bn1(self.fc1(x)))
        x = torch.tanh(self.bn2(self.fc2(x)))
        return self.fc3(x)


class CNNBatchNorm(nn.Module):
    """Conv (no bias) -> BatchNorm2d -> ReLU -> MaxPool, twice, then a linear head; BN stays a node."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.c1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.c2(x))), 2)
        return self.fc(x.flatten(1))


class LeNetAvgPool(nn.Module):
    """LeNet with AvgPool (ceil_mode: 28 -> 24 -> 12... windows that run past the edge), Sigmoid/Tanh,
    Dropout, LogSoftmax output."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 5)                  # 24
        self.p1 = nn.AvgPool2d(3, stride=2, ceil_mode=True)   # 12 (last window 2 wide)
        self.c2 = nn.Conv2d(4, 8, 5)                  # 8
        self.p2 = nn.AvgPool2d(3, stride=2, ceil_mode=True)   # 4 (last window 2 wide)
        self.drop = nn.Dropout(0.3)
        self.fc1 = nn.Linear(8 * 4 * 4, 24)
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x):
        x = self.p1(torch.tanh(self.c1(x)))
        x = self.p2(torch.sigmoid(self.c2(x)))
        x = self.drop(x.flatten(1))
        return F.log_softmax(self.fc2(torch.tanh(self.fc1(x))), dim=1)


class UpsampleNet(nn.Module):
    """Downsample by strided conv, then nn.Upsample nearest (x2) and, unless ``nearest_only``, bilinear (x2,
    align_corners=False), a skip Add at full size, global max pooling, linear."""

    def __init__(self, nearest_only=False):
        super().__init__()
        self.nearest_only = nearest_only
        self.down = nn.Conv2d(1, 4, 3, stride=2, padding=1)     # 14
        self.down2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)    # 7
        self.up_nearest = nn.Upsample(scale_factor=2, mode="nearest")
        self.up_linear = nn.Upsample(scale_factor=2, mode="nearest" if nearest_only else "bilinear",
                                     align_corners=None if nearest_only else False)
        self.mix = nn.Conv2d(4, 4, 3, padding=1)
        self.skip = nn.Conv2d(1, 4, 1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        y = F.relu(self.down2(F.relu(self.down(x))))   # 7
        y = self.up_nearest(y)                          # 14
        y = F.relu(self.mix(y))
        y = self.up_linear(y)                           # 28
        y = y + self.skip(x)
        y = F.adaptive_max_pool2d(y, 1).flatten(1)
        return self.fc(y)


class Activations(nn.Module):
    """One branch per activation: Sigmoid, Tanh, HardSwish, LeakyReLU, ReLU6 (Clip), ELU, Softplus; concatenated
    and fed to a linear layer with a LogSoftmax output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 7, 4, stride=4)      # 7x7
        self.fc = nn.Linear(7 * 7 * 7, 10)

    def forward(self, x):
        y = self.conv(x) * 2.0
        parts = [torch.sigmoid(y[:, 0:1]), torch.tanh(y[:, 1:2]), F.hardswish(y[:, 2:3]),
                 F.leaky_relu(y[:, 3:4], 0.1), F.relu6(y[:, 4:5] * 3.0), F.elu(y[:, 5:6]), F.softplus(y[:, 6:7])]
        y = torch.cat(parts, dim=1).flatten(1)
        return F.log_softmax(self.fc(y), dim=-1)


class ShapeOps(nn.Module):
    """Slice, Gather (an index on the channel axis), Unsqueeze/Squeeze, Pad, Reshape, Transpose, Flatten and
    Concat around two convs and a linear layer. The Squeezes come before the Pad: after a Pad whose sizes the
    legacy exporter computes at run time (opset >= 11) it no longer knows shapes and writes If nodes for them."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3)                  # 26
        self.c2 = nn.Conv2d(2, 4, 3, stride=2)        # on the 2 kept channels of a 24x24 crop padded to 26: 12
        self.fc = nn.Linear(4 * 12 * 12 + 24, 10)

    def forward(self, x):
        y = torch.tanh(self.c1(x))                    # N,3,26,26
        y = y[:, :, 1:25, 1:25]                       # Slice: 24
        first = y[:, 0]                               # Gather: N,24,24
        kept = y[:, 1:] * first.unsqueeze(1)          # N,2,24,24
        row = kept[:, 0:1, 5:6, :].squeeze(2).squeeze(1)   # N,24
        z = torch.sigmoid(self.c2(F.pad(kept, (1, 1, 1, 1))))   # N,4,12,12
        flat = z.reshape(z.shape[0], 4, -1).transpose(1, 2).flatten(1)   # channels-last flatten
        return self.fc(torch.cat([flat, row], dim=1))


# ---- the variants -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    name: str
    build: Callable[[], nn.Module]
    exporter: str                     # "legacy" or "dynamo"
    opset: int
    nhwc: bool = False
    insert_dropout: bool = False      # eval-mode export drops nn.Dropout; put an inference Dropout node back
    optimize: bool = True             # dynamo: False keeps BatchNormalization a node (the optimizer folds it)
    note: str = ""


VARIANTS = [
    Variant("resnet_l13", ResidualCNN, "legacy", 13),
    Variant("resnet_d18", ResidualCNN, "dynamo", 18),
    Variant("dwsep_l11", DepthwiseSeparable, "legacy", 11),
    Variant("dwsep_d20", DepthwiseSeparable, "dynamo", 20),
    Variant("unet_l13", UNet, "legacy", 13),
    Variant("unet_d18", UNet, "dynamo", 18),
    Variant("vit_l13", TinyViT, "legacy", 13, note="LayerNorm and GELU decomposed (no LayerNormalization < 17)"),
    Variant("vit_l17", TinyViT, "legacy", 17),
    Variant("vit_d20", TinyViT, "dynamo", 20),
    Variant("keras_nhwc_l12", KerasNHWC, "legacy", 12, nhwc=True),
    Variant("keras_nhwc_d18", KerasNHWC, "dynamo", 18, nhwc=True),
    Variant("mlp_bn1d_l9", MLPBatchNorm, "legacy", 9),
    Variant("mlp_bn1d_d19", MLPBatchNorm, "dynamo", 19, optimize=False, note="unoptimized dynamo graph"),
    Variant("cnn_bn2d_l15", CNNBatchNorm, "legacy", 15),
    Variant("cnn_bn2d_d18", CNNBatchNorm, "dynamo", 18, optimize=False, note="unoptimized dynamo graph"),
    Variant("lenet_avgpool_l10", LeNetAvgPool, "legacy", 10),
    Variant("lenet_avgpool_dropout_l16", LeNetAvgPool, "legacy", 16, insert_dropout=True),
    Variant("upsample_nearest_l9", lambda: UpsampleNet(nearest_only=True), "legacy", 9,
            note="opset 9 Upsample: nearest only (its linear mode is not torch's half-pixel bilinear)"),
    Variant("upsample_l11", UpsampleNet, "legacy", 11),
    Variant("upsample_l13", UpsampleNet, "legacy", 13),
    Variant("upsample_d18", UpsampleNet, "dynamo", 18),
    Variant("activations_l11", Activations, "legacy", 11),
    Variant("activations_l14", Activations, "legacy", 14),
    Variant("activations_d20", Activations, "dynamo", 20),
    Variant("shape_ops_l10", ShapeOps, "legacy", 10),
    Variant("shape_ops_l13", ShapeOps, "legacy", 13),
    Variant("shape_ops_d18", ShapeOps, "dynamo", 18),
]


# ---- building, exporting, referencing -----------------------------------------------------------------------
def seeded_module(variant: Variant, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    module = variant.build()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif name.endswith("running_mean"):
                tensor.copy_(0.3 * torch.randn(tensor.shape, generator=generator))
            elif name.endswith("weight") and tensor.dim() == 1:       # norm scales: around 1
                tensor.copy_(1.0 + 0.3 * torch.randn(tensor.shape, generator=generator))
            else:
                fan_in = tensor[0].numel() if tensor.dim() > 1 else max(tensor.numel(), 1)
                scale = 1.0 / np.sqrt(fan_in) if tensor.dim() > 1 else 0.2
                tensor.copy_(scale * torch.randn(tensor.shape, generator=generator))
    return module.eval()


def feed_for(variant: Variant, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (BATCH, 28, 28, 1) if variant.nhwc else (BATCH, 1, 28, 28)
    return rng.random(shape, dtype=np.float32)


def export(module: nn.Module, x: torch.Tensor, variant: Variant, path: Path) -> onnx.ModelProto:
    kwargs = dict(input_names=["input"], output_names=["output"], opset_version=variant.opset)
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        if variant.exporter == "legacy":
            torch.onnx.export(module, (x,), str(path), dynamo=False, do_constant_folding=False,
                              training=torch.onnx.TrainingMode.EVAL, **kwargs)
        else:
            torch.onnx.export(module, (x,), str(path), dynamo=True, external_data=False,
                              optimize=variant.optimize, **kwargs)
    logging.disable(logging.NOTSET)
    proto = onnx.load(str(path))
    if variant.insert_dropout:
        proto = with_inference_dropout(proto)
    proto.producer_name = f"{proto.producer_name} (tools/make_gradient_fixtures.py, {variant.exporter})"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return proto


def with_inference_dropout(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Put a Dropout node (inference: identity) on the input of the first Gemm/MatMul, as a training-mode
    export would have it; opset >= 12 gives it a ratio input and no training_mode (defaults to false)."""
    graph = proto.graph
    index = next(i for i, n in enumerate(graph.node) if n.op_type in ("Gemm", "MatMul"))
    node = graph.node[index]
    source = node.input[0]
    ratio = numpy_helper.from_array(np.array(0.3, dtype=np.float32), "dropout_ratio")
    graph.initializer.append(ratio)
    dropout = helper.make_node("Dropout", [source, "dropout_ratio"], ["dropout_out"], name="inserted_dropout")
    node.input[0] = "dropout_out"
    graph.node.insert(index, dropout)
    return proto


class ExplicitBatchNorm:
    """Patch eval-mode BatchNorm modules to an explicit formula whose statistics are leaf tensors, so torch
    gives their gradients too (``native_batch_norm`` refuses them)."""

    def __init__(self, module: nn.Module):
        self.leaves: dict[str, torch.Tensor] = {}
        self.patched = []
        for prefix, sub in module.named_modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                mean = sub.running_mean.detach().clone().requires_grad_()
                var = sub.running_var.detach().clone().requires_grad_()
                self.leaves[f"{prefix}.running_mean"] = mean
                self.leaves[f"{prefix}.running_var"] = var
                self.patched.append((sub, mean, var))

    def __enter__(self):
        for sub, mean, var in self.patched:
            def forward(x, sub=sub, mean=mean, var=var):
                shape = (1, -1) + (1,) * (x.dim() - 2)
                out = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + sub.eps)
                return out * sub.weight.view(shape) + sub.bias.view(shape)
            sub.forward = forward
        return self

    def __exit__(self, *exc):
        for sub, _, _ in self.patched:
            del sub.forward


def torch_reference(module: nn.Module, x: np.ndarray, seed: int):
    """torch's output, the cotangent, and the gradients of sum(output * cotangent): input, parameters, buffers."""
    xt = torch.from_numpy(x).requires_grad_()
    module.zero_grad(set_to_none=True)
    with torch.no_grad():
        plain = module(torch.from_numpy(x)).numpy()
    with ExplicitBatchNorm(module) as bn:
        out = module(xt)
        assert np.allclose(out.detach().numpy(), plain, rtol=1e-5, atol=1e-5), "explicit BatchNorm differs"
        cotangent = np.random.default_rng(seed + 2).standard_normal(out.shape).astype(np.float32)
        (out * torch.from_numpy(cotangent)).sum().backward()
    grads = {name: p.grad.numpy().copy() for name, p in module.named_parameters() if p.grad is not None}
    grads.update({name: leaf.grad.numpy().copy() for name, leaf in bn.leaves.items()})
    values = {name: t.detach().numpy().copy() for name, t in
              list(module.named_parameters()) + list(module.named_buffers()) if t.is_floating_point()}
    return plain, cotangent, xt.grad.numpy().copy(), grads, values


def map_names(proto: onnx.ModelProto, values: dict[str, np.ndarray]):
    """torch name -> (onnx initializer name, transform), by name first, then by value (exact, or transposed)."""
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    floats = {name: a for name, a in inits.items() if a.dtype.kind == "f"}
    mapping, skipped, used = {}, {}, set()
    for torch_name, value in values.items():
        if torch_name in floats and floats[torch_name].shape == value.shape and np.array_equal(
                floats[torch_name], value):
            mapping[torch_name] = (torch_name, "identity")
            used.add(torch_name)
    for torch_name, value in values.items():
        if torch_name in mapping:
            continue
        found = None
        for onnx_name, array in floats.items():
            if onnx_name in used:
                continue
            if array.shape == value.shape and np.array_equal(array, value):
                found = (onnx_name, "identity")
            elif value.ndim == 2 and array.shape == value.T.shape and np.array_equal(array, value.T):
                found = (onnx_name, "transpose")
            elif array.size == value.size and array.shape != value.shape and np.array_equal(
                    array.reshape(-1), value.reshape(-1)):
                found = (onnx_name, "reshape")
            if found:
                break
        if found:
            mapping[torch_name] = found
            used.add(found[0])
        else:
            skipped[torch_name] = ("no float initializer holds this value (folded into another constant, "
                                  "or stored in a Constant node)")
    constants = sorted(set(floats) - used)
    return mapping, skipped, constants


def to_onnx_layout(grad: np.ndarray, transform: str, shape) -> np.ndarray:
    if transform == "transpose":
        return np.ascontiguousarray(grad.T)
    return grad.reshape(shape)


def ort_output(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def make(variant: Variant, index: int) -> dict:
    seed = 1000 + 17 * index
    module = seeded_module(variant, seed)
    x = feed_for(variant, seed)
    path = OUT / f"{variant.name}.onnx"
    proto = export(module, torch.from_numpy(x), variant, path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise RuntimeError(f"{path.name} is {size} bytes (> {MAX_BYTES})")
    output, cotangent, input_grad, grads, values = torch_reference(module, x, seed)

    graph = proto.graph
    init_names = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in init_names]
    outputs = [o.name for o in graph.output]
    if len(inputs) != 1 or len(outputs) != 1:
        raise RuntimeError(f"{variant.name}: expected one input and one output, got {inputs} -> {outputs}")
    ort = ort_output(path, x)
    scale = max(float(np.abs(output).max()), 1e-6)
    ort_error = float(np.abs(ort - output).max()) / scale
    if ort_error > 1e-4:
        raise RuntimeError(f"{variant.name}: onnxruntime differs from torch by {ort_error:.2e} (relative)")

    mapping, skipped, constants = map_names(proto, values)
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    arrays = {f"feed:{inputs[0]}": x, f"output:{outputs[0]}": output, f"cotangent:{outputs[0]}": cotangent,
              f"grad:{inputs[0]}": input_grad}
    params = {}
    for torch_name, (onnx_name, transform) in mapping.items():
        if torch_name not in grads:
            skipped[torch_name] = "torch has no gradient for it (an integer buffer, or unused)"
            continue
        arrays[f"grad:{onnx_name}"] = to_onnx_layout(grads[torch_name], transform, shapes[onnx_name])
        params[torch_name] = {"onnx": onnx_name, "transform": transform}
    ops = sorted(Counter(n.op_type for n in graph.node).items())
    meta = {
        "name": variant.name, "exporter": variant.exporter, "opset": variant.opset, "torch": torch.__version__,
        "input": inputs[0], "output": outputs[0], "seed": seed,
        "ops": {op: count for op, count in ops},
        "params": params, "skipped": skipped, "exporter_constants": constants,
        "dropout_inserted": variant.insert_dropout, "note": variant.note,
        "onnxruntime_forward_error": ort_error,
    }
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    np.savez_compressed(OUT / f"{variant.name}.npz", **arrays)
    return meta | {"bytes": size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="variants to (re)generate; all when none")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    chosen = [(i, v) for i, v in enumerate(VARIANTS) if not args.names or v.name in args.names]
    unknown = set(args.names) - {v.name for v in VARIANTS}
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    torch.set_num_threads(1)
    failures = []
    print(f"{'name':28} {'exporter':8} {'opset':>5} {'KB':>6} {'params':>6} {'skip':>4} {'const':>5}  ops")
    for index, variant in chosen:
        try:
            meta = make(variant, index)
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            failures.append(variant.name)
            print(f"{variant.name:28} {variant.exporter:8} {variant.opset:>5}  FAILED: {type(exc).__name__}: "
                  f"{str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        ops = " ".join(sorted(meta["ops"]))
        print(f"{variant.name:28} {variant.exporter:8} {variant.opset:>5} {meta['bytes'] / 1024:6.1f} "
              f"{len(meta['params']):>6} {len(meta['skipped']):>4} {len(meta['exporter_constants']):>5}  {ops}")
    if failures:
        print(f"\n{len(failures)} variant(s) not generated: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
