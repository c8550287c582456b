"""Export the small real models of tests/test_real_models_new.py with torch, and their onnxruntime outputs.

    pip install torch==2.13.0 onnxscript   # the exporter; the tests themselves need neither
    python tools/export_new_models.py      # writes tests/models/new/*.onnx and *.npz

Each model has seeded random weights (what is checked is that nn_core computes what onnxruntime computes on the
same file, not accuracy); each .npz holds the inputs (``in_<name>``) and onnxruntime's outputs
(``out_<name>``) for them.

* ``stroke_lstm``: a two-layer bidirectional LSTM over pen-stroke points (dx, dy, pen-up) of the recorded
  drawings in tests/data/strokes, classifying the digit from the last step — the recurrent digit recognizer.
* ``stn_mnist``: a spatial transformer network on 28x28 digits: a localisation net predicts a 2x3 affine
  matrix (AffineGrid), the image is resampled (GridSample), then classified; opset 20.
* ``tiny_yolo``: a YOLO-style single-scale detector (conv backbone, per-cell box and class scores) followed by
  NonMaxSuppression and a Gather of the kept boxes.
* ``transformer23``: a two-block pre-norm transformer (RMSNorm, scaled dot-product attention with a causal mask,
  SwiGLU-free MLP) over 16 patch tokens of a digit, exported at opset 23 (Attention, RMSNormalization).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "models" / "new"
sys.path.insert(0, str(ROOT / "tools"))


def stroke_sequences(length: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """(length, batch, 3) point features of the recorded drawings, and their labels."""
    from stroke_digits import load_recording

    features, labels = [], []
    for path in sorted((ROOT / "tests" / "data" / "strokes").glob("*.json")):
        label, strokes, size = load_recording(path)
        points = []
        for stroke in strokes:
            for i, (x, y) in enumerate(stroke):
                points.append((x / size[0], y / size[1], 1.0 if i == len(stroke) - 1 else 0.0))
        points = np.asarray(points, np.float64)
        # resample to a fixed number of steps along the recording
        index = np.linspace(0, len(points) - 1, length).round().astype(int)
        chosen = points[index]
        deltas = np.diff(chosen[:, :2], axis=0, prepend=chosen[:1, :2]) * 10
        features.append(np.concatenate([deltas, chosen[:, 2:]], axis=1))
        labels.append(label)
    return np.stack(features, axis=1).astype(np.float32), np.asarray(labels)


def mnist_digits(count: int) -> np.ndarray:
    """The first MNIST samples shipped with nn_core, as (count, 1, 28, 28) float32 in [0, 1]."""
    with np.load(ROOT / "nn_core" / "mnist_samples.npz") as data:
        return (data["images"][:count].astype(np.float32) / 255).reshape(-1, 1, 28, 28)


def onnxruntime_outputs(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def save(name: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    path = OUT / f"{name}.onnx"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    outputs = onnxruntime_outputs(path, feeds)
    arrays = {f"in_{k}": v for k, v in feeds.items()} | {f"out_{k}": v for k, v in outputs.items()}
    np.savez_compressed(OUT / f"{name}.npz", **arrays)
    ops = sorted({n.op_type for n in model.graph.node})
    print(f"{name}: opset {model.opset_import[0].version}, {len(model.graph.node)} nodes, ops {ops}")


def export(module, args, path: Path, names_in, names_out, opset: int, dynamo: bool, dynamic=None) -> onnx.ModelProto:
    import torch

    module.eval()
    kwargs = dict(input_names=names_in, output_names=names_out, opset_version=opset, dynamo=dynamo)
    if dynamic:
        kwargs["dynamic_axes" if not dynamo else "dynamic_shapes"] = dynamic
    torch.onnx.export(module, args, str(path), **kwargs)
    model = onnx.load(str(path), load_external_data=True)
    return model


def main() -> None:
    import torch
    from torch import nn
    from torch.nn import functional as F

    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / "_tmp.onnx"

    # ---- stroke LSTM -----------------------------------------------------------------------------------------
    torch.manual_seed(0)

    class StrokeLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 24, num_layers=2, bidirectional=True)
            self.head = nn.Linear(48, 10)

        def forward(self, points):
            out, _ = self.lstm(points)
            return self.head(out[-1])

    points, _ = stroke_sequences()
    model = export(StrokeLSTM(), (torch.from_numpy(points),), tmp, ["points"], ["logits"], 14, dynamo=False,
                   dynamic={"points": {1: "batch"}})
    save("stroke_lstm", model, {"points": points})

    # ---- spatial transformer ---------------------------------------------------------------------------------
    torch.manual_seed(1)

    class STN(nn.Module):
        def __init__(self):
            super().__init__()
            self.loc = nn.Sequential(nn.Conv2d(1, 8, 7), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(8, 10, 5),
                                     nn.MaxPool2d(2), nn.ReLU())
            self.fc = nn.Sequential(nn.Linear(10 * 3 * 3, 32), nn.ReLU(), nn.Linear(32, 6))
            nn.init.normal_(self.fc[2].weight, std=0.05)
            self.fc[2].bias.data = torch.tensor([1.0, 0.1, 0.05, -0.1, 0.9, 0.0])
            self.features = nn.Sequential(nn.Conv2d(1, 10, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(10, 20, 5),
                                          nn.MaxPool2d(2), nn.ReLU())
            self.classifier = nn.Linear(320, 10)

        def forward(self, x):
            theta = self.fc(self.loc(x).flatten(1)).view(-1, 2, 3)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            return self.classifier(self.features(warped).flatten(1)), warped

    digits = mnist_digits(6)
    model = export(STN(), (torch.from_numpy(digits),), tmp, ["image"], ["logits", "warped"], 20, dynamo=False)
    save("stn_mnist", model, {"image": digits})

    # ---- tiny YOLO + NonMaxSuppression -----------------------------------------------------------------------
    torch.manual_seed(2)
    classes, grid = 3, 8

    class TinyYolo(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
                nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.LeakyReLU(0.1), nn.MaxPool2d(2))
            self.head = nn.Conv2d(32, 5 + classes, 1)

        def forward(self, image):
            p = self.head(self.backbone(image))  # (N, 5 + C, 8, 8)
            n = p.shape[0]
            p = p.flatten(2).transpose(1, 2)  # (N, 64, 5 + C)
            ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
            cells = torch.stack([xs, ys], -1).reshape(1, -1, 2).float()
            centre = (torch.sigmoid(p[..., :2]) + cells) / grid
            size = torch.exp(p[..., 2:4].clamp(max=2)) / grid
            boxes = torch.cat([centre - size / 2, centre + size / 2], -1)[..., [1, 0, 3, 2]]  # y1 x1 y2 x2
            scores = (torch.sigmoid(p[..., 4:5]) * torch.softmax(p[..., 5:], -1)).transpose(1, 2)
            return boxes.reshape(n, -1, 4), scores

    net = TinyYolo()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 3, 64, 64)).astype(np.float32)
    model = export(net, (torch.from_numpy(images),), tmp, ["image"], ["boxes", "scores"], 17, dynamo=False)
    graph = model.graph
    graph.initializer.extend([helper.make_tensor("nms_max", TensorProto.INT64, [1], [5]),
                              helper.make_tensor("nms_iou", TensorProto.FLOAT, [1], [0.45]),
                              helper.make_tensor("nms_score", TensorProto.FLOAT, [1], [0.05]),
                              helper.make_tensor("col_box", TensorProto.INT64, [1], [2]),
                              helper.make_tensor("col_batch", TensorProto.INT64, [1], [0])])
    graph.node.extend([
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "nms_max", "nms_iou", "nms_score"], ["selected"],
                         center_point_box=0),
        helper.make_node("Gather", ["selected", "col_batch"], ["sel_batch"], axis=1),
        helper.make_node("Gather", ["selected", "col_box"], ["sel_box"], axis=1),
        helper.make_node("Concat", ["sel_batch", "sel_box"], ["sel_pairs"], axis=1),
        helper.make_node("GatherND", ["boxes", "sel_pairs"], ["detections"]),
    ])
    graph.output.extend([helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3]),
                         helper.make_tensor_value_info("detections", TensorProto.FLOAT, [None, 4])])
    save("tiny_yolo", model, {"image": images})

    # ---- transformer at opset 23 -----------------------------------------------------------------------------
    torch.manual_seed(3)

    class Block(nn.Module):
        def __init__(self, dim=32, heads=4):
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = nn.RMSNorm(dim, eps=1e-6), nn.RMSNorm(dim, eps=1e-6)
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
            return x + self.mlp(self.norm2(x))

    class DigitTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(49, 32)
            self.pos = nn.Parameter(torch.randn(1, 16, 32) * 0.1)
            self.blocks = nn.Sequential(Block(), Block())
            self.norm = nn.RMSNorm(32, eps=1e-6)
            self.head = nn.Linear(32, 10)

        def forward(self, image):
            patches = image.reshape(-1, 4, 7, 4, 7).permute(0, 1, 3, 2, 4).reshape(-1, 16, 49)
            x = self.blocks(self.embed(patches) + self.pos)
            return self.head(self.norm(x).mean(1))

    digits = mnist_digits(4)
    model = export(DigitTransformer(), (torch.from_numpy(digits),), tmp, ["image"], ["logits"], 23, dynamo=True)
    save("transformer23", model, {"image": digits})
    for leftover in OUT.glob("_tmp.onnx*"):
        leftover.unlink()


if __name__ == "__main__":
    main()
