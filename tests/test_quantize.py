"""nn_core.quantize and `python -m nn_core quantize`: the bundled model quantized by our engine runs in onnxruntime
with the same classes, QOperator files (ours and onnxruntime's own) run bit-exactly, refusals are clear."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import nn_core
from nn_core.__main__ import main
from nn_core.errors import ModelError
from nn_core.interface import load_samples
from nn_core.quantize import activation_range, load_calibration, quantize, uint8_params

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "assets" / "lenet5.onnx"


def ort_session(model):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def digits() -> np.ndarray:
    images, _ = load_samples()
    return images[:, None, :, :].astype(np.float32)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    out = {}
    for fmt in ("qdq", "qoperator"):
        path = tmp_path_factory.mktemp("q") / f"lenet5.{fmt}.onnx"
        quantize(BUNDLED, path, fmt=fmt, count=200)
        out[fmt] = path
    return out


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_quantized_bundled_model_agrees_with_onnxruntime(quantized, fmt):
    x = digits()
    ours = nn_core.load(quantized[fmt]).run({"input": x})["logits"]
    theirs = ort_session(quantized[fmt]).run(None, {"input": x})[0]
    assert (ours.argmax(1) == theirs.argmax(1)).all()
    if fmt == "qoperator":
        np.testing.assert_array_equal(ours, theirs)  # the same integers, the same float32 rescaling
    _, labels = load_samples()
    float_model = nn_core.load(BUNDLED)
    float_right = (float_model.run({"input": x})["logits"].argmax(1) == labels).sum()
    assert (ours.argmax(1) == labels).sum() >= float_right - 1


def test_quantized_file_is_small_and_keeps_metadata(quantized):
    size = quantized["qdq"].stat().st_size
    assert size <= 0.30 * BUNDLED.stat().st_size
    model = nn_core.load(quantized["qdq"])
    original = nn_core.load(BUNDLED).metadata
    for key, value in original.items():
        assert model.metadata[key] == value
    info = json.loads(model.metadata["quantization"])
    assert info["format"] == "qdq" and info["nodes"] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    weights = [t for t in onnx.load(quantized["qdq"]).graph.initializer if t.name.endswith("weight_quantized")]
    assert {t.data_type for t in weights} == {onnx.TensorProto.INT8}


def test_qoperator_form_uses_integer_kernels(quantized):
    ops = nn_core.load(quantized["qoperator"]).plan_ops
    # (the two convolutions and the three dense layers each run as one step, nn_core/ops/qconv_pair.py and
    # nn_core/ops/qgemm_chain.py)
    assert ops.count("QLinearConv+MaxPool+QLinearConv+MaxPool") == 1 and ops.count("QGemm+QGemm+QGemm") == 1
    assert "Conv" not in ops and "Gemm" not in ops


def test_onnxruntime_quantize_static_qoperator_runs_and_matches(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    x = digits()

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": x[i:i + 10]} for i in range(0, len(x), 10)])

        def get_next(self):
            return next(self.batches, None)

    path = tmp_path / "ort.qop.onnx"
    quantize_static(str(BUNDLED), str(path), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    model = nn_core.load(path)
    assert any(op.startswith("QGemm") for op in model.plan_ops)
    np.testing.assert_array_equal(model.run({"input": x})["logits"], ort_session(path).run(None, {"input": x})[0])


def test_dynamic_mode_runs_in_both_engines(tmp_path):
    path = tmp_path / "dyn.onnx"
    proto = quantize(BUNDLED, path, dynamic=True)
    assert any(n.op_type == "MatMulInteger" for n in proto.graph.node)
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)  # standard ONNX only
    x = digits()
    ours = nn_core.load(path).run({"input": x})["logits"]
    theirs = ort_session(path).run(None, {"input": x})[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_calibration_sources(tmp_path):
    images, _ = load_samples()
    np.save(tmp_path / "d.npy", (images * 255).astype(np.uint8))
    loaded = load_calibration(tmp_path / "d.npy")
    assert loaded.shape == images.shape and loaded.max() <= 1.0
    np.testing.assert_allclose(loaded, images, atol=1e-6)
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((255 - images[i] * 255).astype(np.uint8)).save(folder / f"{i}.png")
    assert load_calibration(folder).shape == (3, 28, 28)
    with pytest.raises(ModelError, match="28, 28"):
        load_calibration(np.zeros((4, 5)))


def test_ranges_and_parameters():
    values = np.concatenate([np.linspace(0, 1, 100_000), [50.0]]).astype(np.float32)
    assert activation_range(values, "minmax") == (0.0, 50.0)
    assert activation_range(values, "percentile")[1] < 1.01
    assert activation_range(values, "entropy")[1] < 50.0
    scale, zero_point = uint8_params(-1.0, 3.0)
    assert zero_point == 64 and np.isclose(scale, 4 / 255)
    assert uint8_params(0.0, 0.0) == (np.float32(1.0), np.uint8(0))


def test_cli_quantize_and_refusal(tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(BUNDLED), "--out", str(out), "--format", "qoperator", "--method", "minmax",
                 "--count", "50"]) == 0
    assert "wrote" in capsys.readouterr().out and out.exists()
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 784])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 784])])
    plain = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), plain)
    assert main(["quantize", str(plain), "--out", str(tmp_path / "no.onnx")]) == 2
    assert "nothing to quantize" in capsys.readouterr().err


def test_qdq_groups_fused_into_integer_ops_match_onnxruntime(quantized):
    # fuse_qdq (through to_integer_ops) on a QDQ file gives onnxruntime's own integers for that QDQ file
    from nn_core.quantize import to_integer_ops

    proto = onnx.load(quantized["qdq"])
    x = digits()
    want = ort_session(proto).run(None, {"input": x})[0]
    fused = nn_core.Model(to_integer_ops(proto))
    assert fused.plan_ops.count("QLinearConv+MaxPool+QLinearConv+MaxPool") == 1  # (nn_core/ops/qconv_pair.py)
    np.testing.assert_array_equal(fused.run({"input": x})["logits"], want)
