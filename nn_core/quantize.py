"""Post-training quantization by our own engine: calibration, int8 weights per output channel, QDQ or QOperator.

    from nn_core.quantize import quantize
    proto = quantize("model.onnx", "model.int8.onnx")                  # static, calibrated on shipped digits
    proto = quantize("mlp.onnx", "mlp.int8.onnx", dynamic=True)         # weights only, activations at run time

Static mode runs the float model on calibration digits (the MNIST training digits shipped with nn_core, or a
user's folder of images / a ``.npy`` array), records the range of every activation that feeds or leaves a
Conv / Gemm / MatMul, and writes a standard ONNX model: activations uint8 (asymmetric, ranges by ``percentile``,
``entropy`` or ``minmax``), weights int8 symmetric per output channel, biases int32 at ``x_scale * w_scale``.
The QDQ format keeps the float graph with QuantizeLinear/DequantizeLinear pairs; the QOperator format has the
pairs fused into QLinearConv / QLinearMatMul / QGemm (what onnxruntime's own quantizer writes). Both run in
onnxruntime and in nn_core with the same integers. Metadata is kept, with a ``quantization`` entry added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ModelError

METHODS = ("percentile", "entropy", "minmax")
FORMATS = ("qdq", "qoperator")
META_QUANTIZATION = "quantization"
_COMPUTE = ("Conv", "Gemm", "MatMul")
# ops whose output is quantized with the scale of their input (their integer form is exact)
_PASS_THROUGH = ("MaxPool", "Flatten", "Reshape")
DEFAULT_CALIBRATION = 500


# ---------------------------------------------------------------- calibration data


def _shipped_digits(count: int) -> np.ndarray:
    source = resources.files(__package__).joinpath("replay_digits.npz")
    with resources.as_file(source) as path, np.load(path) as data:
        images = data["images"][:count]
    return images.astype(np.float32) / np.float32(255)


def load_calibration(source: str | Path | np.ndarray | None = None, count: int = DEFAULT_CALIBRATION) -> np.ndarray:
    """Calibration digits as float32 [N, 28, 28] with ink 1.0 on 0.0.

    ``None``: the MNIST training digits shipped with nn_core. A ``.npy`` file or array: [N, 28, 28] (or [N, 784])
    images, uint8 0..255 or floats 0..1 with ink bright. A folder: every image file in it, read as the app reads
    a digit (``digit_from_image_file``)."""
    if source is None:
        return _shipped_digits(count)
    if isinstance(source, np.ndarray):
        images = source
    else:
        path = Path(source)
        if path.is_dir():
            from .interface import digit_from_image_file

            files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp",
                                                                              ".gif", ".tif", ".tiff", ".webp"))
            if not files:
                raise ModelError(f"{path}: no image files to calibrate on")
            return np.stack([digit_from_image_file(str(p)) for p in files[:count]]).astype(np.float32)
        if path.suffix.lower() != ".npy":
            raise ModelError(f"{path}: calibration data must be a folder of images or a .npy array")
        images = np.load(path, allow_pickle=False)
    images = np.asarray(images)
    if images.ndim == 2 and images.shape[1] == 784:
        images = images.reshape(-1, 28, 28)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or not len(images):
        raise ModelError(f"calibration array of shape {images.shape}: expected [N, 28, 28] digits")
    images = images[:count].astype(np.float32)
    if images.max(initial=0) > 1.0:
        images /= np.float32(255)
    return images


# ---------------------------------------------------------------- ranges


def _entropy_threshold(values: np.ndarray, bins: int = 2048, levels: int = 128) -> float:
    """The clipping threshold of |values| minimizing the KL divergence between the clipped distribution and
    its quantization into ``levels`` levels (TensorRT's calibration)."""
    magnitudes = np.abs(values.ravel())
    top = float(magnitudes.max(initial=0.0))
    if top == 0.0:
        return 0.0
    hist, edges = np.histogram(magnitudes, bins=bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    best, best_divergence = top, np.inf
    for stop in range(levels, bins + 1, 16):
        reference = hist[:stop].copy()
        reference[stop - 1] += hist[stop:].sum()
        if reference.sum() == 0:
            continue
        chunks = np.array_split(reference, levels)
        expanded = []
        for chunk in chunks:
            nonzero = chunk > 0
            mean = chunk.sum() / max(int(nonzero.sum()), 1)
            expanded.append(np.where(nonzero, mean, 0.0))
        candidate = np.concatenate(expanded)
        p = reference / reference.sum()
        q = candidate / max(candidate.sum(), 1e-12)
        mask = p > 0
        divergence = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if divergence < best_divergence:
            best, best_divergence = float(edges[stop]), divergence
    return best


def activation_range(values: np.ndarray, method: str) -> tuple[float, float]:
    """(low, high) to map onto 0..255 for one activation's calibration values."""
    values = np.asarray(values, np.float32).ravel()
    if not values.size:
        return 0.0, 0.0
    low, high = float(values.min()), float(values.max())
    if method == "minmax":
        return low, high
    if method == "percentile":
        # 99.99th percentile of each side (the rare outlier is clipped, the bulk gets the resolution)
        return (float(np.percentile(values, 0.01)) if low < 0 else low,
                float(np.percentile(values, 99.99)) if high > 0 else high)
    if method == "entropy":
        # KL-optimal clipping, never below the 99.9th percentile of |x|: on sparse activations (a digit's ink)
        # the KL optimum alone clips the signal itself
        levels = 255 if low >= 0 else 128
        threshold = max(_entropy_threshold(values, levels=levels), float(np.percentile(np.abs(values), 99.9)))
        return (max(low, -threshold), min(high, threshold))
    raise ModelError(f"unknown calibration method {method!r} (one of {', '.join(METHODS)})")


def uint8_params(low: float, high: float) -> tuple[np.float32, np.uint8]:
    """Scale and zero point mapping [min(low, 0), max(high, 0)] onto 0..255, zero exactly representable."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = np.float32((high - low) / 255.0) if high > low else np.float32(1.0)
    zero_point = np.uint8(np.clip(np.rint(-low / float(scale)), 0, 255))
    return scale, zero_point


def quantize_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (along ``axis``): values in -127..127, scale = max|w| / 127."""
    moved = np.moveaxis(w.astype(np.float32), axis, 0)
    peak = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.where(peak > 0, peak / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(moved / scale.reshape((-1,) + (1,) * (moved.ndim - 1))), -127, 127).astype(np.int8)
    return np.ascontiguousarray(np.moveaxis(q, 0, axis)), scale


# ---------------------------------------------------------------- the model


@dataclass
class QuantizeReport:
    method: str
    format: str
    dynamic: bool
    calibration_images: int = 0
    quantized_nodes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # node -> why it stays float
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)


def _weight_axis(node: onnx.NodeProto) -> int | None:
    """The output-channel axis of a compute node's weight, or None when it cannot be per-channel quantized."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0):
            return None
        return 0 if attrs.get("transB", 0) else 1
    return 1  # MatMul with a 2-D weight


def _plan_nodes(proto: onnx.ModelProto, report: QuantizeReport) -> list[onnx.NodeProto]:
    """The compute nodes that can be quantized: constant float weight (and bias), a float activation input."""
    inits = {t.name: t for t in proto.graph.initializer}
    chosen = []
    for node in proto.graph.node:
        if node.op_type not in _COMPUTE or node.domain not in ("", "ai.onnx"):
            continue
        name = node.name or node.output[0]
        if len(node.input) < 2 or node.input[1] not in inits or node.input[0] in inits:
            report.skipped[name] = "its weight is not a constant initializer"
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if weight.dtype != np.float32:
            report.skipped[name] = f"its weight is {weight.dtype}, not float32"
            continue
        if node.op_type in ("Gemm", "MatMul") and weight.ndim != 2:
            report.skipped[name] = f"its weight has rank {weight.ndim}"
            continue
        if _weight_axis(node) is None:
            report.skipped[name] = "transA=1"
            continue
        if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
            report.skipped[name] = "its bias is not a constant initializer"
            continue
        if node.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if float(attrs.get("alpha", 1.0)) != 1.0 or float(attrs.get("beta", 1.0)) != 1.0:
                report.skipped[name] = "alpha or beta is not 1"
                continue
            if len(node.input) > 2 and node.input[2] and numpy_helper.to_array(inits[node.input[2]]).ndim > 1:
                report.skipped[name] = "its bias is not a vector"
                continue
        chosen.append(node)
    return chosen


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    table: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                table.setdefault(name, []).append(node)
    return table


def _calibration_feeds(model, images: np.ndarray, batch: int = 100):
    from .interface import ModelAdapter

    adapter = ModelAdapter(model)
    if adapter.layout.dynamic_batch:
        for start in range(0, len(images), batch):
            yield adapter.make_batch_feeds(images[start:start + batch], adapter.scaling)
    else:
        for image in images:
            yield adapter.make_feeds(image)


def _collect(model, wanted: set[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """Every value of the ``wanted`` tensors over the calibration digits, from traced runs of our engine."""
    seen: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    for feeds in _calibration_feeds(model, images):
        for name, value in feeds.items():
            if name in seen:
                seen[name].append(np.asarray(value, np.float32).ravel())
        _, records = model.run_traced(feeds)
        for record in records:
            for name, value in record.outputs.items():
                if name in seen:
                    seen[name].append(np.asarray(value, np.float32).ravel())
    missing = [name for name, parts in seen.items() if not parts]
    if missing:
        raise ModelError(f"calibration saw no value for {', '.join(missing[:5])}")
    return {name: np.concatenate(parts) for name, parts in seen.items()}


def quantize(model_path: str | Path | onnx.ModelProto, out_path: str | Path | None = None, *,
             calibration: str | Path | np.ndarray | None = None, method: str = "percentile",
             fmt: str = "qdq", dynamic: bool = False, count: int = DEFAULT_CALIBRATION,
             report: QuantizeReport | None = None) -> onnx.ModelProto:
    """Quantize a float model; returns the new ModelProto (and saves it to ``out_path`` when given).

    Raises ModelError for a model it cannot quantize (no Conv/Gemm/MatMul with constant float weights, a
    non-float input, a graph our engine cannot run for calibration)."""
    from .model import Model

    if method not in METHODS:
        raise ModelError(f"unknown calibration method {method!r} (one of {', '.join(METHODS)})")
    if fmt not in FORMATS:
        raise ModelError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if isinstance(model_path, onnx.ModelProto):
        proto, label = onnx.ModelProto.FromString(model_path.SerializeToString()), model_path.graph.name or "model"
    else:
        label = Path(model_path).name
        try:
            proto = onnx.load(str(model_path))
        except Exception as exc:  # noqa: BLE001 - a file that is not ONNX
            raise ModelError(f"{label}: cannot read as ONNX: {exc}") from None
    report = report or QuantizeReport(method, fmt, dynamic)
    report.method, report.format, report.dynamic = method, fmt, dynamic
    model = Model(proto, name=label)  # validates the file as any load does
    proto = _at_opset_13(proto)
    for spec in model.inputs:
        if spec.dtype is not None and spec.dtype != np.float32:
            raise ModelError(f"{label}: input '{spec.name}' is {spec.dtype}; only float32 models can be quantized")
    nodes = _plan_nodes(proto, report)
    if not nodes:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(report.skipped.items())[:4])
        raise ModelError(f"{label}: nothing to quantize — no Conv, Gemm or MatMul with a constant float32 weight"
                         + (f" ({reasons})" if reasons else ""))
    if dynamic:
        _dynamic(proto, nodes, report)
    else:
        _static(proto, model, nodes, load_calibration(calibration, count), method, report)
        if fmt == "qoperator":
            to_integer_ops(proto)
    _finish(proto, report)
    if out_path is not None:
        onnx.save(proto, str(out_path))
    return proto


def _static(proto: onnx.ModelProto, model, nodes: list[onnx.NodeProto], images: np.ndarray, method: str,
            report: QuantizeReport) -> None:
    graph = proto.graph
    readers = _readers(graph)
    producers = {out: node for node in graph.node for out in node.output}
    graph_outputs = {o.name for o in graph.output}
    inits = {t.name: t for t in graph.initializer}

    def source_of(name: str) -> str:
        """The tensor whose scale ``name`` shares: through MaxPool/Flatten/Reshape to what they read."""
        node = producers.get(name)
        while node is not None and node.op_type in _PASS_THROUGH and node.input:
            name = node.input[0]
            node = producers.get(name)
        return name

    # which tensors get Q/DQ: each compute node's input, and its output (after a Relu reading only it)
    inputs = {node.input[0] for node in nodes}
    outputs: dict[str, str] = {}  # compute node output -> the tensor quantized after it
    for node in nodes:
        out = node.output[0]
        users = readers.get(out, [])
        if out in graph_outputs:
            continue  # the model's own output stays float (the scores keep full resolution)
        if len(users) == 1 and users[0].op_type == "Relu" and users[0].output[0] not in graph_outputs:
            outputs[out] = users[0].output[0]
        else:
            outputs[out] = out
    quantized = set(inputs) | set(outputs.values())
    # a pass-through op's output shares its source's range; calibrate the sources
    sources = {name: source_of(name) for name in quantized}
    values = _collect(model, set(sources.values()), images)
    report.calibration_images = len(images)
    params: dict[str, tuple[str, str]] = {}  # source tensor -> (scale, zero point) initializer names
    new_inits: list[onnx.TensorProto] = []
    for source in sorted(set(sources.values())):
        low, high = activation_range(values[source], method)
        report.ranges[source] = (low, high)
        scale, zero_point = uint8_params(low, high)
        base = _safe(source)
        params[source] = (f"{base}_scale", f"{base}_zero_point")
        new_inits += [numpy_helper.from_array(np.array(scale, np.float32), params[source][0]),
                      numpy_helper.from_array(np.array(zero_point, np.uint8), params[source][1])]
    # weights and biases
    replace_input: dict[tuple[int, int], str] = {}
    new_nodes_before: dict[int, list[onnx.NodeProto]] = {}
    for node in nodes:
        weight = numpy_helper.to_array(inits[node.input[1]])
        axis = _weight_axis(node)
        q, w_scale = quantize_weight(weight, axis)
        wname = _safe(node.input[1])
        new_inits += [numpy_helper.from_array(q, f"{wname}_quantized"),
                      numpy_helper.from_array(w_scale, f"{wname}_scale"),
                      numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), f"{wname}_zero_point")]
        extra = [helper.make_node("DequantizeLinear", [f"{wname}_quantized", f"{wname}_scale", f"{wname}_zero_point"],
                                  [f"{wname}_dequantized"], name=f"{wname}_DequantizeLinear", axis=axis)]
        replace_input[(id(node), 1)] = f"{wname}_dequantized"
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64).reshape(-1)
            x_scale = numpy_helper.to_array(_find(new_inits, params[sources[node.input[0]]][0]))
            b_scale = (np.float32(x_scale) * w_scale).astype(np.float32)
            b_q = np.clip(np.rint(bias / b_scale.astype(np.float64)), -2**31, 2**31 - 1).astype(np.int32)
            bname = _safe(node.input[2])
            new_inits += [numpy_helper.from_array(b_q, f"{bname}_quantized"),
                          numpy_helper.from_array(b_scale, f"{bname}_scale"),
                          numpy_helper.from_array(np.zeros(b_scale.shape, np.int32), f"{bname}_zero_point")]
            extra.append(helper.make_node("DequantizeLinear", [f"{bname}_quantized", f"{bname}_scale",
                                                               f"{bname}_zero_point"],
                                          [f"{bname}_dequantized"], name=f"{bname}_DequantizeLinear", axis=0))
            replace_input[(id(node), 2)] = f"{bname}_dequantized"
        new_nodes_before[id(node)] = extra
        report.quantized_nodes.append(node.name or node.output[0])
    # Q/DQ pairs on activations: every reader of a quantized tensor reads its DQ output instead
    qdq_for: dict[str, list[onnx.NodeProto]] = {}
    renamed: dict[str, str] = {}
    for name in sorted(quantized):
        scale, zp = params[sources[name]]
        base = _safe(name)
        qdq_for[name] = [helper.make_node("QuantizeLinear", [name, scale, zp], [f"{base}_q"],
                                          name=f"{base}_Quantize"),
                         helper.make_node("DequantizeLinear", [f"{base}_q", scale, zp], [f"{base}_dq"],
                                          name=f"{base}_Dequantize")]
        renamed[name] = f"{base}_dq"
    # pass-through ops between a quantized tensor and a quantized input: Q/DQ after them too, with the same
    # scale (so the integer form runs them on int8 values)
    for name in list(quantized):
        source = sources[name]
        while name != source:
            node = producers[name]
            upstream = node.input[0]
            if upstream not in qdq_for:
                scale, zp = params[source]
                base = _safe(upstream)
                qdq_for[upstream] = [
                    helper.make_node("QuantizeLinear", [upstream, scale, zp], [f"{base}_q"], name=f"{base}_Quantize"),
                    helper.make_node("DequantizeLinear", [f"{base}_q", scale, zp], [f"{base}_dq"],
                                     name=f"{base}_Dequantize")]
                renamed[upstream] = f"{base}_dq"
            name = upstream
    result: list[onnx.NodeProto] = []
    for name in [i.name for i in graph.input]:
        result += qdq_for.get(name, [])
    for node in graph.node:
        result += new_nodes_before.get(id(node), [])
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for index, name in enumerate(node.input):
            if (id(node), index) in replace_input:
                new.input[index] = replace_input[(id(node), index)]
            elif name in renamed and not (node.op_type == "QuantizeLinear"):
                new.input[index] = renamed[name]
        result.append(new)
        for out in node.output:
            result += qdq_for.get(out, [])
    del graph.node[:]
    graph.node.extend(result)
    used = {n for node in graph.node for n in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + [t for t in new_inits if t.name in used])
    _drop_initializer_inputs(graph)


def _find(tensors: list[onnx.TensorProto], name: str) -> onnx.TensorProto:
    return next(t for t in tensors if t.name == name)


def _safe(name: str) -> str:
    return name.replace(":", "_").replace("/", "_") or "tensor"


def _drop_initializer_inputs(graph: onnx.GraphProto) -> None:
    names = {t.name for t in graph.initializer}
    kept = [i for i in graph.input if i.name not in names]
    del graph.input[:]
    graph.input.extend(kept)


def _dynamic(proto: onnx.ModelProto, nodes: list[onnx.NodeProto], report: QuantizeReport) -> None:
    """Gemm / MatMul weights int8 per output column; activations quantized at run time (DynamicQuantizeLinear,
    MatMulInteger, then back to float): standard ONNX ops only. Convolutions stay float."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    plan = {id(n): n for n in nodes if n.op_type in ("Gemm", "MatMul")}
    for node in nodes:
        if node.op_type == "Conv":
            report.skipped[node.name or node.output[0]] = "dynamic mode quantizes only Gemm and MatMul"
    if not plan:
        raise ModelError("nothing to quantize dynamically: no Gemm or MatMul with a constant float32 weight "
                         "(dynamic mode is for MLP-style models; use static quantization for convolutions)")
    new_inits: list[onnx.TensorProto] = []
    result: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) not in plan:
            result.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if node.op_type == "Gemm" and _weight_axis(node) == 0:
            weight = weight.T
        q, w_scale = quantize_weight(weight, 1)
        base = _safe(node.name or node.output[0])
        x = node.input[0]
        new_inits += [numpy_helper.from_array(q, f"{base}_W_quantized"),
                      numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), f"{base}_W_zero_point"),
                      numpy_helper.from_array(w_scale, f"{base}_W_scale")]
        result += [
            helper.make_node("DynamicQuantizeLinear", [x], [f"{base}_xq", f"{base}_xs", f"{base}_xzp"],
                             name=f"{base}_DynamicQuantize"),
            helper.make_node("MatMulInteger", [f"{base}_xq", f"{base}_W_quantized", f"{base}_xzp",
                                               f"{base}_W_zero_point"], [f"{base}_acc"],
                             name=f"{base}_MatMulInteger"),
            helper.make_node("Cast", [f"{base}_acc"], [f"{base}_acc_f"], to=onnx.TensorProto.FLOAT,
                             name=f"{base}_Cast"),
            helper.make_node("Mul", [f"{base}_xs", f"{base}_W_scale"], [f"{base}_scale"], name=f"{base}_Scale"),
        ]
        has_bias = len(node.input) > 2 and bool(node.input[2])
        scaled = node.output[0] if not has_bias else f"{base}_scaled"
        result.append(helper.make_node("Mul", [f"{base}_acc_f", f"{base}_scale"], [scaled], name=f"{base}_Mul"))
        if has_bias:
            result.append(helper.make_node("Add", [scaled, node.input[2]], [node.output[0]], name=f"{base}_Bias"))
        report.quantized_nodes.append(node.name or node.output[0])
    del graph.node[:]
    graph.node.extend(result)
    used = {n for node in graph.node for n in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    _drop_initializer_inputs(graph)


def _at_opset_13(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The output needs opset 13 (per-axis DequantizeLinear, int8 MaxPool); an older model is converted first so
    the ops whose signature changed at 13 (Unsqueeze, Squeeze, Split, ReduceSum take their axes as inputs) stay
    valid. Left as is when the converter cannot (then only the opset number is raised, as before)."""
    default = next((o for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if default is None or default.version >= 13:
        return proto
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, 13)
    except Exception:  # noqa: BLE001 - the converter's own limits: keep the model as read
        return proto


def _finish(proto: onnx.ModelProto, report: QuantizeReport) -> None:
    opsets = {o.domain: o for o in proto.opset_import}
    default = opsets.get("") or opsets.get("ai.onnx")
    if default is None or default.version < 13:  # per-axis DequantizeLinear, int8 MaxPool
        if default is None:
            proto.opset_import.append(helper.make_opsetid("", 13))
        else:
            default.version = 13
    if any(n.domain == "com.microsoft" for n in proto.graph.node) and "com.microsoft" not in opsets:
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if proto.ir_version < 7:
        proto.ir_version = 7
    summary: dict[str, Any] = {"format": "dynamic" if report.dynamic else report.format,
                               "weights": "int8 symmetric per output channel",
                               "nodes": report.quantized_nodes}
    if not report.dynamic:
        summary.update(activations="uint8 asymmetric", method=report.method,
                       calibration_images=report.calibration_images)
    if report.skipped:
        summary["float"] = report.skipped
    entries = {p.key: p.value for p in proto.metadata_props}
    entries[META_QUANTIZATION] = json.dumps(summary)
    helper.set_model_props(proto, entries)
    proto.producer_name, proto.producer_version = "nn_core quantize", "1"


# ---------------------------------------------------------------- QDQ -> QOperator


@dataclass
class _Node:
    name: str
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]


def to_integer_ops(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite a QDQ model's Conv/Gemm/MatMul groups as QLinearConv / QLinearMatMul / QGemm in place (the
    QOperator form; nn_core.ops.quantized.fuse_qdq) and drop what no longer has readers."""
    from .ops.quantized import fuse_qdq

    graph = proto.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = [_Node(n.name, n.op_type, n.domain, list(n.input), list(n.output),
                   {a.name: helper.get_attribute_value(a) for a in n.attribute}) for n in graph.node]
    before = set(constants)

    def make(template, name, op_type, domain, inputs, outputs, attrs):
        return _Node(name, op_type, domain, inputs, outputs, attrs)

    outputs = {o.name for o in graph.output}
    fused = fuse_qdq(nodes, constants, outputs, make, private=False)  # standard (and com.microsoft) ops only
    # drop nodes whose outputs nobody reads (the weights' DequantizeLinear), until none is left
    while True:
        read = {n for node in fused for n in node.inputs} | outputs
        alive = [node for node in fused if any(o in read for o in node.outputs if o)]
        if len(alive) == len(fused):
            break
        fused = alive
    del graph.node[:]
    for node in fused:
        graph.node.append(helper.make_node(node.op_type, node.inputs, node.outputs, name=node.name,
                                           domain=node.domain or None, **node.attrs))
    read = {n for node in fused for n in node.inputs}
    kept = [t for t in graph.initializer if t.name in read]
    kept += [numpy_helper.from_array(constants[n], n) for n in set(constants) - before if n in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if any(n.domain == "com.microsoft" for n in fused) and all(o.domain != "com.microsoft"
                                                               for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return proto
