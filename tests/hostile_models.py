"""Hand-written hostile ONNX files, one generator per attack class.

Each generator takes an empty folder (the *model folder*), writes its case there and returns
``(model_path, description)``. Beside every model folder, ``prepare(root, case_id)`` puts:

- ``outside/secret.bin``: a file outside the model folder holding ``SECRET_MARK`` (escapes point at it);
- ``cwd/secret.bin``: the same secret in the folder the checking process runs in (relative paths resolved
  against the process's cwd instead of the model's folder reach it);
- ``CANARY``: the path hostile names try to create by getting the engine to execute them (``canary_path``).

The contract every case is held to (``tests/test_hostile_models.py``): ``nn_core.load`` + ``run`` +
``run_traced`` succeed or raise ``nn_core.ModelError``; no other exception, crash, hang or memory blow-up; the
canary never appears; no file under ``outside/`` or ``cwd/`` is opened.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from onnx import AttributeProto, TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from fuzz_models import SECRET_MARK  # noqa: E402

LENET = ROOT / "assets" / "lenet5.onnx"
REAL_MODELS = [LENET, *sorted((ROOT / "tests" / "models").glob("*.onnx"))]

Generator = Callable[[Path], tuple[Path, str]]
CASES: dict[str, Generator] = {}
#: cases whose model path is a pipe or device: the checker gives them a shorter time limit
SLOW_BY_DESIGN = {"fifo_model_path", "dev_zero_model_path"}


def case(func: Generator) -> Generator:
    CASES[func.__name__.removeprefix("case_")] = func
    return func


# ---- the folder layout ---------------------------------------------------------------------------------

def prepare(root: Path, case_id: str) -> Path:
    """Make ``root/case_id/{model,outside,cwd}`` with the secrets; returns the (empty) model folder."""
    base = root / case_id
    for sub in ("model", "outside", "cwd"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    secret = (SECRET_MARK * 64).encode()
    (base / "outside" / "secret.bin").write_bytes(secret)
    (base / "cwd" / "secret.bin").write_bytes(secret)
    return base / "model"


def canary_path(folder: Path) -> Path:
    return folder.parent / "CANARY"


def secret_path(folder: Path) -> Path:
    return folder.parent / "outside" / "secret.bin"


def forbidden_dirs(folder: Path) -> list[str]:
    return [str(folder.parent / "outside"), str(folder.parent / "cwd")]


# ---- builders ------------------------------------------------------------------------------------------

def _info(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits=(), opset=13, sparse=(), ir_version=8, name="hostile"):
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), list(inits),
                              sparse_initializer=list(sparse))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def _save(model, folder: Path, name: str = "model.onnx") -> Path:
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def _w(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _conv_model(conv_attrs: dict, op="Conv", x_shape=(1, 1, 8, 8), opset=13):
    """X[1,1,8,8] -> op(W[2,1,3,3]) -> Y."""
    rng = np.random.default_rng(0)
    if op == "ConvInteger":
        inits = [_w("W", rng.integers(-3, 3, (2, 1, 3, 3)).astype(np.int8))]
        x = _info("X", list(x_shape), TensorProto.UINT8)
        y = _info("Y", None, TensorProto.INT32)
    else:
        inits = [_w("W", rng.standard_normal((2, 1, 3, 3)).astype(np.float32))]
        x, y = _info("X", list(x_shape)), _info("Y", None)
    node = helper.make_node(op, ["X", "W"], ["Y"], name="conv", **conv_attrs)
    return _model([node], [x], [y], inits, opset)


def _pool_model(op, attrs):
    node = helper.make_node(op, ["X"], ["Y"], name="pool", **attrs)
    return _model([node], [_info("X", [1, 1, 8, 8])], [_info("Y", None)])


def _nhwc_conv_model(conv_attrs: dict):
    """The tf2onnx pattern: X[1,8,8,1] -> Transpose -> Conv -> Transpose."""
    w = _w("W", np.random.default_rng(1).standard_normal((2, 1, 3, 3)).astype(np.float32))
    nodes = [helper.make_node("Transpose", ["X"], ["xt"], perm=[0, 3, 1, 2], name="to_nchw"),
             helper.make_node("Conv", ["xt", "W"], ["yc"], name="conv", **conv_attrs),
             helper.make_node("Transpose", ["yc"], ["Y"], perm=[0, 2, 3, 1], name="to_nhwc")]
    return _model(nodes, [_info("X", [1, 8, 8, 1])], [_info("Y", None)], [w])


# ---- names that try to become code ---------------------------------------------------------------------

def _canary_code(folder: Path) -> str:
    return f"open({str(canary_path(folder))!r}, 'w').write('executed')"


def _named_relu_chain(names: list[str], value_names: list[str] | None = None):
    count = len(names)
    values = value_names or [f"v{i}" for i in range(count + 1)]
    nodes = [helper.make_node("Relu", [values[i]], [values[i + 1]], name=names[i]) for i in range(count)]
    return _model(nodes, [_info(values[0], [1, 4])], [_info(values[-1], [1, 4])])


@case
def case_name_newline_code_indented(folder):
    code = _canary_code(folder)
    names = [f"a\n    {code}\n    #", f"b\n    {code}  #", f"c\r    {code}\r    #"]
    return _save(_named_relu_chain(names), folder), \
        "node names holding a newline + indented Python that creates a file"


@case
def case_name_newline_code_module_level(folder):
    code = _canary_code(folder)
    names = [f"x\n{code}\ndef _f():\n    pass  #", f"y\r\n{code}\nimport os\nif True:\n    #"]
    return _save(_named_relu_chain(names), folder), "node names that close the generated function and run code"


@case
def case_value_names_code(folder):
    code = _canary_code(folder)
    values = [f"in\n    {code}\n    #", f"mid'); {code}; ('", f'q"""\n{code}\n"""', f"out\\\n    {code}"]
    model = _named_relu_chain(["r0", "r1", "r2"], values)
    model.graph.name = f"g\n{code}\n"
    model.doc_string = f"\n{code}\n"
    return _save(model, folder), "value, graph and doc names holding newlines, quotes, backslashes and code"


@case
def case_name_nul(folder):
    model = _named_relu_chain(["a\x00b", "\x00"], ["x\x00", "y\x00y", "z"])
    return _save(model, folder), "NUL bytes inside node and value names"


@case
def case_name_quotes_backslashes(folder):
    model = _named_relu_chain(["'", '"', "\\", "\\'", '"""', "'''\\"], ["'", '"', "\\", "\\'", '"""', "'''\\", "o"])
    return _save(model, folder), "names made of quotes and backslashes"


@case
def case_name_unicode_linebreaks(folder):
    """Names with the characters str.splitlines() treats as line breaks but Python source does not, before a
    node that fails while running (so any line-number mapping of a generated plan is exercised)."""
    odd = ["\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u202e", "😀", "Ω"]
    nodes = [helper.make_node("Relu", [f"v{i}", ], [f"v{i + 1}"], name=f"n{i}{ch * 3}") for i, ch in enumerate(odd)]
    nodes.append(helper.make_node("Add", [f"v{len(odd)}", "B"], ["Y"], name="add\u2028fails"))
    model = _model(nodes, [_info("v0", [2, 3]), _info("B", [4, 5])], [_info("Y", None)])
    return _save(model, folder), "unicode line-break characters in names, then a node that fails at run time"


@case
def case_names_duplicate_and_empty(folder):
    nodes = [helper.make_node("Relu", ["X"], ["a"], name="same"), helper.make_node("Relu", ["a"], ["b"], name="same"),
             helper.make_node("Relu", ["b"], ["Y"], name="")]
    return _save(_model(nodes, [_info("X", [1, 4])], [_info("Y", None)]), folder), "duplicate and empty node names"


# ---- strides, dilations, pads ---------------------------------------------------------------------------

def _attr_cases():
    out = {}
    for op in ("Conv", "ConvInteger"):
        for label, attrs in (("stride_negative", {"strides": [-1, -1]}), ("stride_zero", {"strides": [0, 0]}),
                             ("dilation_zero", {"dilations": [0, 0]}), ("dilation_negative", {"dilations": [-2, -1]}),
                             ("pads_huge", {"pads": [2**31, 2**31, 2**31, 2**31]}),
                             ("pads_big", {"pads": [100000, 100000, 100000, 100000]}),
                             ("pads_negative", {"pads": [-20, -20, -20, -20]}),
                             ("group_zero", {"group": 0}), ("kernel_shape_wrong", {"kernel_shape": [0, -3]})):
            out[f"{op.lower()}_{label}"] = (op, attrs)
    return out


def _make_conv_case(key, op, attrs):
    def gen(folder):
        return _save(_conv_model(attrs, op), folder), f"{op} with {attrs}"

    gen.__name__ = f"case_{key}"
    return gen


for _key, (_op, _attrs) in _attr_cases().items():
    case(_make_conv_case(_key, _op, _attrs))


def _make_pool_case(key, op, attrs):
    def gen(folder):
        return _save(_pool_model(op, attrs), folder), f"{op} with {attrs}"

    gen.__name__ = f"case_{key}"
    return gen


for _op in ("MaxPool", "AveragePool"):
    for _label, _attrs in (("stride_negative", {"kernel_shape": [2, 2], "strides": [-1, -1]}),
                           ("stride_zero", {"kernel_shape": [2, 2], "strides": [0, 0]}),
                           ("dilation_zero", {"kernel_shape": [2, 2], "dilations": [0, 0]}),
                           ("dilation_negative", {"kernel_shape": [2, 2], "dilations": [-1, -1]}),
                           ("kernel_zero", {"kernel_shape": [0, 0]}),
                           ("kernel_negative", {"kernel_shape": [-2, -2]}),
                           ("kernel_huge", {"kernel_shape": [2**31, 2**31]}),
                           ("pads_huge", {"kernel_shape": [2, 2], "pads": [10**6] * 4}),
                           ("pads_negative", {"kernel_shape": [2, 2], "pads": [-9, -9, -9, -9]}),
                           ("no_kernel_shape", {})):
        case(_make_pool_case(f"{_op.lower()}_{_label}", _op, _attrs))


@case
def case_nhwc_conv_stride_negative(folder):
    return _save(_nhwc_conv_model({"strides": [-1, -1]}), folder), "NHWC Transpose->Conv(strides -1)->Transpose"


@case
def case_nhwc_conv_stride_zero(folder):
    return _save(_nhwc_conv_model({"strides": [0, 0]}), folder), "NHWC Transpose->Conv(strides 0)->Transpose"


@case
def case_nhwc_conv_dilation_zero(folder):
    return _save(_nhwc_conv_model({"dilations": [0, 0]}), folder), "NHWC Transpose->Conv(dilations 0)->Transpose"


@case
def case_conv_strides_as_floats(folder):
    model = _conv_model({})
    model.graph.node[0].attribute.append(helper.make_attribute("strides", [1.5, 1.5]))
    return _save(model, folder), "Conv strides given as FLOATS [1.5, 1.5]"


@case
def case_conv_maxpool_fused_stride_zero(folder):
    w = _w("W", np.ones((2, 1, 3, 3), np.float32))
    nodes = [helper.make_node("Conv", ["X", "W"], ["c"], name="conv"),
             helper.make_node("MaxPool", ["c"], ["Y"], name="pool", kernel_shape=[2, 2], strides=[0, -1])]
    model = _model(nodes, [_info("X", [1, 1, 8, 8])], [_info("Y", None)], [w])
    return _save(model, folder), "Conv -> MaxPool(strides [0,-1]) (the fused conv+pool path)"


# ---- external data --------------------------------------------------------------------------------------

def _external_model(folder: Path, entries: dict[str, str], dims=(4,), on_constant=False):
    tensor = TensorProto()
    tensor.name = "W"
    tensor.data_type = TensorProto.FLOAT
    tensor.dims.extend(dims)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in entries.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    if on_constant:
        nodes = [helper.make_node("Constant", [], ["W"], value=tensor, name="const"),
                 helper.make_node("Add", ["X", "W"], ["Y"], name="add")]
        return _model(nodes, [_info("X", list(dims))], [_info("Y", None)])
    node = helper.make_node("Add", ["X", "W"], ["Y"], name="add")
    return _model([node], [_info("X", list(dims))], [_info("Y", None)], [tensor])


def _sidecar(folder: Path, size: int = 64) -> None:
    (folder / "weights.bin").write_bytes(np.arange(size // 4, dtype=np.float32).tobytes())


@case
def case_ext_parent_location(folder):
    model = _external_model(folder, {"location": "../outside/secret.bin", "length": "16"})
    return _save(model, folder), "external data location '../outside/secret.bin'"


@case
def case_ext_absolute_location(folder):
    model = _external_model(folder, {"location": str(secret_path(folder)), "length": "16"})
    return _save(model, folder), "external data location = absolute path of a secret outside the folder"


@case
def case_ext_symlink_outside(folder):
    os.symlink(secret_path(folder), folder / "weights.bin")
    model = _external_model(folder, {"location": "weights.bin", "length": "16"})
    return _save(model, folder), "external data file is a symlink to a secret outside the folder"


@case
def case_ext_symlinked_subfolder(folder):
    os.symlink(secret_path(folder).parent, folder / "data")
    model = _external_model(folder, {"location": "data/secret.bin", "length": "16"})
    return _save(model, folder), "external data in a subfolder that is a symlink to outside"


@case
def case_ext_location_in_cwd(folder):
    model = _external_model(folder, {"location": "secret.bin", "length": "16"})
    return _save(model, folder), "external data 'secret.bin': missing beside the model, present in the process's cwd"


@case
def case_ext_nul_location(folder):
    _sidecar(folder)
    model = _external_model(folder, {"location": "weights.bin\x00../outside/secret.bin", "length": "16"})
    return _save(model, folder), "NUL byte inside the external data location"


@case
def case_ext_location_folder_itself(folder):
    model = _external_model(folder, {"location": ".", "length": "16"})
    return _save(model, folder), "external data location '.' (the model folder itself)"


@case
def case_ext_location_empty(folder):
    model = _external_model(folder, {"length": "16"})
    return _save(model, folder), "external data with no location at all"


@case
def case_ext_location_fifo(folder):
    os.mkfifo(folder / "weights.bin")
    model = _external_model(folder, {"location": "weights.bin", "length": "16"})
    return _save(model, folder), "external data location is a FIFO nobody writes to"


@case
def case_ext_offset_non_numeric(folder):
    _sidecar(folder)
    return _save(_external_model(folder, {"location": "weights.bin", "offset": "abc", "length": "16"}), folder), \
        "external data offset 'abc'"


@case
def case_ext_offset_negative(folder):
    _sidecar(folder)
    return _save(_external_model(folder, {"location": "weights.bin", "offset": "-8", "length": "16"}), folder), \
        "external data offset -8"


@case
def case_ext_offset_negative_no_length(folder):
    _sidecar(folder)
    return _save(_external_model(folder, {"location": "weights.bin", "offset": "-8"}), folder), \
        "external data offset -8 and no length"


@case
def case_ext_offset_huge(folder):
    _sidecar(folder)
    return _save(_external_model(folder, {"location": "weights.bin", "offset": str(2**70)}), folder), \
        "external data offset 2**70 (no length)"


@case
def case_ext_length_negative(folder):
    _sidecar(folder)
    return _save(_external_model(folder, {"location": "weights.bin", "length": "-1"}), folder), \
        "external data length -1"


@case
def case_ext_length_non_numeric(folder):
    _sidecar(folder)
    return _save(_external_model(folder, {"location": "weights.bin", "length": "1e3"}), folder), \
        "external data length '1e3'"


@case
def case_ext_length_past_eof(folder):
    _sidecar(folder)
    return _save(_external_model(folder, {"location": "weights.bin", "offset": "32", "length": "64"}), folder), \
        "external data length past the end of the file"


@case
def case_ext_length_mismatch_dims(folder):
    _sidecar(folder)
    return _save(_external_model(folder, {"location": "weights.bin", "length": "12"}), folder), \
        "external data length 12 for dims [4] float32 (16 bytes)"


@case
def case_ext_missing_length_big_sidecar(folder):
    with open(folder / "weights.bin", "wb") as handle:  # a sparse 64 GiB file: no disk used
        handle.truncate(64 << 30)
    model = _external_model(folder, {"location": "weights.bin"})
    return _save(model, folder), "external data with no length on a 64 GiB (sparse) sidecar"


@case
def case_ext_huge_dims_big_sidecar(folder):
    with open(folder / "weights.bin", "wb") as handle:
        handle.truncate(64 << 30)
    model = _external_model(folder, {"location": "weights.bin", "length": str(16 << 30)}, dims=(1 << 32,))
    return _save(model, folder), "external tensor of 2**32 floats read from a 64 GiB sidecar"


@case
def case_ext_constant_attr_outside(folder):
    model = _external_model(folder, {"location": "../outside/secret.bin", "length": "16"}, on_constant=True)
    return _save(model, folder), "Constant node value tensor with external data '../outside/secret.bin'"


@case
def case_ext_constant_attr_cwd(folder):
    model = _external_model(folder, {"location": "secret.bin", "length": "16"}, on_constant=True)
    return _save(model, folder), "Constant node value tensor with external data 'secret.bin' (only in cwd)"


# ---- sparse tensors -------------------------------------------------------------------------------------

def _sparse(values_array, indices_array, dims, values_external: dict | None = None, values_type=None):
    values = numpy_helper.from_array(np.asarray(values_array, np.float32), "S")
    if values_type is not None:
        values.data_type = values_type
    if values_external is not None:
        values.ClearField("raw_data")
        values.data_location = TensorProto.EXTERNAL
        for key, value in values_external.items():
            entry = values.external_data.add()
            entry.key, entry.value = key, value
    indices = numpy_helper.from_array(np.asarray(indices_array, np.int64), "S_indices")
    return helper.make_sparse_tensor(values, indices, list(dims))


def _sparse_init_model(sparse, x_shape=(4,)):
    node = helper.make_node("Add", ["X", "S"], ["Y"], name="add")
    return _model([node], [_info("X", list(x_shape))], [_info("Y", None)], sparse=[sparse])


def _sparse_constant_model(sparse, x_shape=(4,)):
    nodes = [helper.make_node("Constant", [], ["S"], sparse_value=sparse, name="const"),
             helper.make_node("Add", ["X", "S"], ["Y"], name="add")]
    return _model(nodes, [_info("X", list(x_shape))], [_info("Y", None)])


@case
def case_sparse_init_external_outside(folder):
    sparse = _sparse([1, 2, 3, 4], [0, 1, 2, 3], [4], {"location": "../outside/secret.bin", "length": "16"})
    return _save(_sparse_init_model(sparse), folder), "sparse initializer values in external data '../outside/...'"


@case
def case_sparse_init_external_cwd(folder):
    sparse = _sparse([1, 2, 3, 4], [0, 1, 2, 3], [4], {"location": "secret.bin", "length": "16"})
    return _save(_sparse_init_model(sparse), folder), "sparse initializer values in external 'secret.bin' (in cwd)"


@case
def case_sparse_init_external_absolute(folder):
    sparse = _sparse([1, 2, 3, 4], [0, 1, 2, 3], [4], {"location": str(secret_path(folder)), "length": "16"})
    return _save(_sparse_init_model(sparse), folder), "sparse initializer values at an absolute external path"


@case
def case_sparse_indices_external_outside(folder):
    sparse = _sparse([1, 2], [0, 1], [4])
    sparse.indices.ClearField("raw_data")
    sparse.indices.data_location = TensorProto.EXTERNAL
    entry = sparse.indices.external_data.add()
    entry.key, entry.value = "location", "../outside/secret.bin"
    return _save(_sparse_init_model(sparse), folder), "sparse initializer indices in external data outside"


@case
def case_sparse_constant_external_outside(folder):
    sparse = _sparse([1, 2, 3, 4], [0, 1, 2, 3], [4], {"location": "../outside/secret.bin", "length": "16"})
    return _save(_sparse_constant_model(sparse), folder), "Constant(sparse_value) whose values live outside"


@case
def case_sparse_constant_external_cwd(folder):
    sparse = _sparse([1, 2, 3, 4], [0, 1, 2, 3], [4], {"location": "secret.bin", "length": "16"})
    return _save(_sparse_constant_model(sparse), folder), "Constant(sparse_value) with values in 'secret.bin' (cwd)"


@case
def case_sparse_huge_dims(folder):
    sparse = _sparse([1.0], [0], [2**31, 2**31])
    return _save(_sparse_init_model(sparse), folder), "sparse initializer of dims [2**31, 2**31]"


@case
def case_sparse_constant_huge_dims(folder):
    sparse = _sparse([1.0], [0], [100000, 100000])
    return _save(_sparse_constant_model(sparse), folder), "Constant(sparse_value) of dims [100000, 100000]"


@case
def case_sparse_negative_dims(folder):
    sparse = _sparse([1.0], [0], [-4, 2])
    return _save(_sparse_init_model(sparse), folder), "sparse initializer with a negative dim"


@case
def case_sparse_out_of_range_indices(folder):
    sparse = _sparse([1, 2], [3, 2**40], [4])
    return _save(_sparse_init_model(sparse), folder), "sparse indices past the end of dims"


@case
def case_sparse_negative_indices(folder):
    sparse = _sparse([1, 2], [-1, -5], [4])
    return _save(_sparse_init_model(sparse), folder), "negative sparse indices"


@case
def case_sparse_coordinate_indices_bad(folder):
    sparse = _sparse([1, 2], [[0, 9], [1, -3]], [2, 2])
    return _save(_sparse_init_model(sparse, (2, 2)), folder), "2-D (coordinate) sparse indices out of range"


@case
def case_sparse_count_mismatch(folder):
    sparse = _sparse([1, 2, 3], [0], [4])
    return _save(_sparse_init_model(sparse), folder), "3 sparse values, 1 index"


@case
def case_sparse_unknown_dtype(folder):
    sparse = _sparse([1, 2], [0, 1], [4], values_type=99)
    return _save(_sparse_init_model(sparse), folder), "sparse values of element type 99"


@case
def case_sparse_constant_unknown_dtype(folder):
    sparse = _sparse([1, 2], [0, 1], [4], values_type=0)
    return _save(_sparse_constant_model(sparse), folder), "Constant(sparse_value) of element type 0 (UNDEFINED)"


# ---- files that are not (whole) models -----------------------------------------------------------------

@case
def case_fifo_model_path(folder):
    path = folder / "model.onnx"
    os.mkfifo(path)
    return path, "the model path is a FIFO nobody writes to"


@case
def case_dev_zero_model_path(folder):
    path = folder / "model.onnx"
    os.symlink("/dev/zero", path)
    return path, "the model path is a symlink to /dev/zero"


@case
def case_model_path_is_folder(folder):
    (folder / "model.onnx").mkdir()
    return folder / "model.onnx", "the model path is a folder"


@case
def case_model_path_symlink_to_real_model(folder):
    """The model file is a symlink to a real model kept elsewhere: the file the user picked may be read."""
    elsewhere = folder.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "lenet5.onnx").write_bytes(LENET.read_bytes())
    path = folder / "model.onnx"
    os.symlink(elsewhere / "lenet5.onnx", path)
    return path, "the model file is a symlink to a real model in another folder (must load)"


@case
def case_empty_file(folder):
    path = folder / "model.onnx"
    path.write_bytes(b"")
    return path, "a 0-byte file"


@case
def case_random_bytes(folder):
    path = folder / "model.onnx"
    path.write_bytes(random.Random(7).randbytes(4096))
    return path, "4 KiB of random bytes"


@case
def case_random_protobuf_fields(folder):
    rng = random.Random(3)
    data = bytearray()
    for _ in range(200):  # well-formed protobuf wire format with random field numbers and lengths
        field_number = rng.choice([1, 2, 3, 7, 8, 14, 20, 999])
        data += bytes([(field_number << 3 | 2) & 0x7F | 0x80, field_number >> 4]) if field_number > 15 else \
            bytes([field_number << 3 | 2])
        payload = rng.randbytes(rng.randrange(20))
        data += bytes([len(payload)]) + payload
    path = folder / "model.onnx"
    path.write_bytes(bytes(data))
    return path, "valid protobuf wire format, random fields"


def _truncated(fraction: float):
    def gen(folder):
        data = LENET.read_bytes()
        path = folder / "model.onnx"
        path.write_bytes(data[: int(len(data) * fraction)])
        return path, f"lenet5.onnx truncated to {fraction:.0%} of its bytes"

    gen.__name__ = f"case_truncated_lenet_{int(fraction * 100)}"
    return gen


for _fraction in (0.003, 0.05, 0.5, 0.97, 0.9999):
    case(_truncated(_fraction))


@case
def case_lenet_flipped_bytes(folder):
    data = bytearray(LENET.read_bytes())
    rng = random.Random(11)
    for _ in range(40):
        data[rng.randrange(len(data) // 20)] ^= 0xFF  # damage the graph part, not only the weights
    path = folder / "model.onnx"
    path.write_bytes(bytes(data))
    return path, "lenet5.onnx with 40 bytes of its header/graph inverted"


# ---- model-level oddities -------------------------------------------------------------------------------

def _simple():
    return _model([helper.make_node("Relu", ["X"], ["Y"], name="relu")], [_info("X", [1, 4])], [_info("Y", None)])


@case
def case_opset_999(folder):
    model = _simple()
    model.opset_import[0].version = 999
    return _save(model, folder), "default-domain opset 999"


@case
def case_opset_negative(folder):
    model = _simple()
    model.opset_import[0].version = -5
    return _save(model, folder), "default-domain opset -5"


@case
def case_ir_version_99(folder):
    model = _simple()
    model.ir_version = 99
    return _save(model, folder), "ir_version 99"


@case
def case_missing_opset_import(folder):
    model = _simple()
    del model.opset_import[:]
    return _save(model, folder), "no opset_import at all"


@case
def case_duplicate_opset_import(folder):
    model = _simple()
    model.opset_import.append(helper.make_opsetid("", 7))
    model.opset_import.append(helper.make_opsetid("ai.onnx", 999))
    return _save(model, folder), "default domain imported three times (13, 7, 999 as 'ai.onnx')"


@case
def case_duplicate_node_outputs(folder):
    nodes = [helper.make_node("Relu", ["X"], ["h"], name="a"), helper.make_node("Neg", ["X"], ["h"], name="b"),
             helper.make_node("Abs", ["h"], ["Y"], name="c")]
    return _save(_model(nodes, [_info("X", [1, 4])], [_info("Y", None)]), folder), "two nodes write the same value"


@case
def case_node_output_overwrites_input(folder):
    nodes = [helper.make_node("Neg", ["X"], ["X"], name="a"), helper.make_node("Relu", ["X"], ["Y"], name="b")]
    model = _model(nodes, [_info("X", [1, 4])], [_info("Y", None)])
    return _save(model, folder), "a node output named like the graph input (it overwrites it)"


@case
def case_node_output_overwrites_initializer(folder):
    nodes = [helper.make_node("Neg", ["X"], ["W"], name="a"), helper.make_node("Add", ["X", "W"], ["Y"], name="b")]
    model = _model(nodes, [_info("X", [1, 4])], [_info("Y", None)], [_w("W", np.ones(4, np.float32))])
    return _save(model, folder), "a node output named like an initializer"


@case
def case_output_is_input(folder):
    model = _model([], [_info("X", [1, 4])], [_info("X", [1, 4])])
    return _save(model, folder), "no nodes; the graph output is the graph input"


@case
def case_initializer_negative_dims(folder):
    tensor = _w("W", np.ones(4, np.float32))
    del tensor.dims[:]
    tensor.dims.extend([-1, -4])
    node = helper.make_node("Add", ["X", "W"], ["Y"])
    return _save(_model([node], [_info("X", [4])], [_info("Y", None)], [tensor]), folder), \
        "initializer with dims [-1, -4]"


@case
def case_initializer_huge_dims_no_data(folder):
    tensor = TensorProto()
    tensor.name, tensor.data_type = "W", TensorProto.FLOAT
    tensor.dims.extend([2**31, 2**31, 2**31])
    node = helper.make_node("Add", ["X", "W"], ["Y"])
    return _save(_model([node], [_info("X", [4])], [_info("Y", None)], [tensor]), folder), \
        "initializer with dims [2**31]*3 and no data"


@case
def case_initializer_elem_type_99(folder):
    tensor = _w("W", np.ones(4, np.float32))
    tensor.data_type = 99
    node = helper.make_node("Add", ["X", "W"], ["Y"])
    return _save(_model([node], [_info("X", [4])], [_info("Y", None)], [tensor]), folder), \
        "initializer of element type 99"


@case
def case_input_elem_type_99(folder):
    model = _simple()
    model.graph.input[0].type.tensor_type.elem_type = 99
    return _save(model, folder), "graph input of element type 99"


@case
def case_raw_data_shorter_than_dims(folder):
    tensor = _w("W", np.ones(4, np.float32))
    del tensor.dims[:]
    tensor.dims.extend([100, 100])
    node = helper.make_node("MatMul", ["X", "W"], ["Y"])
    return _save(_model([node], [_info("X", [1, 100])], [_info("Y", None)], [tensor]), folder), \
        "initializer raw_data of 16 bytes for dims [100, 100]"


@case
def case_float_data_shorter_than_dims(folder):
    tensor = helper.make_tensor("W", TensorProto.FLOAT, [2], [1.0, 2.0])
    tensor.dims[:] = [10, 10]
    node = helper.make_node("MatMul", ["X", "W"], ["Y"])
    return _save(_model([node], [_info("X", [1, 10])], [_info("Y", None)], [tensor]), folder), \
        "initializer float_data of 2 values for dims [10, 10]"


@case
def case_string_initializer(folder):
    tensor = helper.make_tensor("W", TensorProto.STRING, [2], [b"a", b"\xff\xfe"])
    node = helper.make_node("Add", ["X", "W"], ["Y"])
    return _save(_model([node], [_info("X", [2])], [_info("Y", None)], [tensor]), folder), \
        "string initializer with invalid UTF-8, added to a float input"


# ---- attributes of the wrong type ------------------------------------------------------------------------

def _conv_then(activation_node, inits=()):
    w = _w("W", np.ones((2, 1, 3, 3), np.float32))
    nodes = [helper.make_node("Conv", ["X", "W"], ["c"], name="conv"), activation_node]
    return _model(nodes, [_info("X", [1, 1, 8, 8])], [_info("Y", None)], [w, *inits])


@case
def case_leakyrelu_alpha_string(folder):
    node = helper.make_node("LeakyRelu", ["c"], ["Y"], name="act")
    node.attribute.append(helper.make_attribute("alpha", b"0.1"))
    return _save(_conv_then(node), folder), "Conv -> LeakyRelu whose alpha is a STRING (fusion reads it)"


@case
def case_leakyrelu_alpha_ints(folder):
    node = helper.make_node("LeakyRelu", ["c"], ["Y"], name="act")
    node.attribute.append(helper.make_attribute("alpha", [1, 2], attr_type=AttributeProto.INTS))
    return _save(_conv_then(node), folder), "Conv -> LeakyRelu whose alpha is INTS"


@case
def case_leakyrelu_alpha_string_alone(folder):
    node = helper.make_node("LeakyRelu", ["X"], ["Y"], name="act")
    node.attribute.append(helper.make_attribute("alpha", b"abc"))
    return _save(_model([node], [_info("X", [1, 4])], [_info("Y", None)]), folder), "LeakyRelu alpha 'abc' (no Conv)"


@case
def case_clip_min_string_tensor(folder):
    node = helper.make_node("Clip", ["c", "lo"], ["Y"], name="clip")
    low = helper.make_tensor("lo", TensorProto.STRING, [], [b"zero"])
    return _save(_conv_then(node, [low]), folder), "Conv -> Clip whose min input is a string tensor"


@case
def case_clip_min_vector(folder):
    node = helper.make_node("Clip", ["c", "lo"], ["Y"], name="clip")
    return _save(_conv_then(node, [_w("lo", np.zeros(3, np.float32))]), folder), "Conv -> Clip whose min is [3]"


@case
def case_clip_attr_min_tensor(folder):
    node = helper.make_node("Clip", ["c"], ["Y"], name="clip")
    node.attribute.append(helper.make_attribute("min", helper.make_tensor("t", TensorProto.STRING, [1], [b"x"])))
    model = _conv_then(node)
    model.opset_import[0].version = 6
    return _save(model, folder), "Conv -> Clip-6 whose min attribute is a string TENSOR"


@case
def case_bn_epsilon_ints(folder):
    rng = np.random.default_rng(2)
    params = [_w(n, rng.random(2).astype(np.float32) + 0.5) for n in ("s", "b", "m", "v")]
    node = helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["Y"], name="bn")
    node.attribute.append(helper.make_attribute("epsilon", [1, 2], attr_type=AttributeProto.INTS))
    return _save(_conv_then(node, params), folder), "Conv -> BatchNormalization(epsilon as INTS) (the BN fold)"


@case
def case_bn_epsilon_string_alone(folder):
    params = [_w(n, np.ones(1, np.float32)) for n in ("s", "b", "m", "v")]
    node = helper.make_node("BatchNormalization", ["X", "s", "b", "m", "v"], ["Y"], name="bn")
    node.attribute.append(helper.make_attribute("epsilon", b"tiny"))
    return _save(_model([node], [_info("X", [1, 1, 4, 4])], [_info("Y", None)], params), folder), \
        "BatchNormalization(epsilon 'tiny') without a Conv"


@case
def case_bn_params_length_mismatch(folder):
    params = [_w(n, np.ones(3, np.float32)) for n in ("s", "b", "m", "v")]
    node = helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["Y"], name="bn")
    return _save(_conv_then(node, params), folder), "Conv (2 channels) -> BatchNormalization with 3-long params"


@case
def case_bn_params_mixed_lengths(folder):
    params = [_w("s", np.ones(2, np.float32)), _w("b", np.ones(5, np.float32)), _w("m", np.ones(1, np.float32)),
              _w("v", -np.ones(2, np.float32))]
    node = helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["Y"], name="bn")
    return _save(_conv_then(node, params), folder), "Conv -> BatchNormalization params of lengths 2/5/1/2, var < 0"


@case
def case_bn_params_int(folder):
    params = [_w(n, np.ones(2, np.int64)) for n in ("s", "b", "m", "v")]
    node = helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["Y"], name="bn")
    return _save(_conv_then(node, params), folder), "Conv -> BatchNormalization with int64 params"


@case
def case_identity_no_outputs(folder):
    nodes = [helper.make_node("Identity", ["X"], [], name="id"), helper.make_node("Relu", ["X"], ["Y"], name="r")]
    return _save(_model(nodes, [_info("X", [1, 4])], [_info("Y", None)]), folder), "Identity with no outputs"


@case
def case_dropout_no_outputs(folder):
    nodes = [helper.make_node("Dropout", ["X"], [], name="drop"), helper.make_node("Relu", ["X"], ["Y"], name="r")]
    return _save(_model(nodes, [_info("X", [1, 4])], [_info("Y", None)]), folder), "Dropout with no outputs"


@case
def case_identity_no_inputs(folder):
    nodes = [helper.make_node("Identity", [], ["h"], name="id"), helper.make_node("Relu", ["X"], ["Y"], name="r")]
    return _save(_model(nodes, [_info("X", [1, 4])], [_info("Y", None)]), folder), "Identity with no inputs"


@case
def case_conv_no_outputs(folder):
    model = _conv_model({})
    del model.graph.node[0].output[:]
    model.graph.node.append(helper.make_node("Relu", ["X"], ["Y"], name="r"))
    return _save(model, folder), "Conv with no outputs"


@case
def case_relu_too_many_inputs_outputs(folder):
    nodes = [helper.make_node("Relu", ["X", "X", "X"], ["Y", "Z", "Q"], name="r")]
    return _save(_model(nodes, [_info("X", [1, 4])], [_info("Y", None)]), folder), "Relu with 3 inputs and 3 outputs"


# ---- resource exhaustion --------------------------------------------------------------------------------

@case
def case_declared_input_huge(folder):
    node = helper.make_node("Relu", ["X"], ["Y"])
    model = _model([node], [_info("X", [1, 1, 100000, 100000])], [_info("Y", None)])
    return _save(model, folder), "declared input [1,1,100000,100000] (40 GB of float32)"


@case
def case_expand_then_matmul(folder):
    nodes = [helper.make_node("Expand", ["X", "shape"], ["big"]),
             helper.make_node("MatMul", ["big", "big"], ["Y"])]
    model = _model(nodes, [_info("X", [1, 1])], [_info("Y", None)], [_w("shape", np.array([12000, 12000]))])
    return _save(model, folder), "Expand to 12000x12000 then MatMul with itself (1.7e12 multiply-adds)"


@case
def case_expand_constant_huge(folder):
    nodes = [helper.make_node("Expand", ["one", "shape"], ["big"]), helper.make_node("Add", ["X", "big"], ["Y"])]
    model = _model(nodes, [_info("X", [1])], [_info("Y", None)],
                   [_w("one", np.ones(1, np.float32)), _w("shape", np.array([100000, 100000]))])
    return _save(model, folder), "Expand of a constant to 100000x100000 (folded at load time)"


@case
def case_chain_20000_nodes(folder):
    nodes = [helper.make_node("Relu", [f"v{i}"], [f"v{i + 1}"]) for i in range(20000)]
    model = _model(nodes, [_info("v0", [1, 4])], [_info("v20000", None)])
    return _save(model, folder), "a 20,000-node Relu chain"


@case
def case_constant_of_shape_huge(folder):
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", 1, [1], [1.0])),
             helper.make_node("Add", ["X", "big"], ["Y"])]
    model = _model(nodes, [_info("X", [1])], [_info("Y", None)], [_w("shape", np.array([100000, 100000, 100]))])
    return _save(model, folder), "ConstantOfShape [100000, 100000, 100]"


@case
def case_constant_of_shape_runtime(folder):
    nodes = [helper.make_node("Add", ["X", "shape"], ["s2"]),
             helper.make_node("Mul", ["s2", "k"], ["s3"]),
             helper.make_node("ConstantOfShape", ["s3"], ["Y"])]
    model = _model(nodes, [_info("X", [2], TensorProto.INT64)], [_info("Y", None)],
                   [_w("shape", np.array([1, 1])), _w("k", np.array([100000, 100000]))])
    return _save(model, folder), "ConstantOfShape of a shape computed at run time (>= 100000x100000)"


@case
def case_range_huge(folder):
    nodes = [helper.make_node("Range", ["a", "b", "d"], ["r"]), helper.make_node("Add", ["X", "r"], ["Y"])]
    model = _model(nodes, [_info("X", [1])], [_info("Y", None)],
                   [_w("a", np.array(0.0, np.float32)), _w("b", np.array(1e12, np.float32)),
                    _w("d", np.array(1.0, np.float32))])
    return _save(model, folder), "Range(0, 1e12, 1)"


@case
def case_range_zero_delta(folder):
    nodes = [helper.make_node("Range", ["a", "b", "d"], ["r"]), helper.make_node("Add", ["X", "r"], ["Y"])]
    model = _model(nodes, [_info("X", [1], TensorProto.INT64)], [_info("Y", None)],
                   [_w("a", np.array(0)), _w("b", np.array(10)), _w("d", np.array(0))])
    return _save(model, folder), "Range with delta 0"


@case
def case_tile_huge(folder):
    node = helper.make_node("Tile", ["X", "reps"], ["Y"])
    model = _model([node], [_info("X", [2, 2])], [_info("Y", None)], [_w("reps", np.array([2**30, 2**30]))])
    return _save(model, folder), "Tile by [2**30, 2**30]"


@case
def case_pad_huge(folder):
    node = helper.make_node("Pad", ["X", "pads"], ["Y"])
    model = _model([node], [_info("X", [2, 2])], [_info("Y", None)], [_w("pads", np.array([0, 0, 10**6, 10**6]))])
    return _save(model, folder), "Pad by 10**6 on both axes"


@case
def case_reshape_huge(folder):
    node = helper.make_node("Reshape", ["X", "shape"], ["Y"])
    model = _model([node], [_info("X", [2, 2])], [_info("Y", None)], [_w("shape", np.array([2**62, 2**62]))])
    return _save(model, folder), "Reshape to [2**62, 2**62]"


@case
def case_resize_huge(folder):
    node = helper.make_node("Resize", ["X", "", "scales"], ["Y"], mode="nearest")
    model = _model([node], [_info("X", [1, 1, 4, 4])], [_info("Y", None)],
                   [_w("scales", np.array([1, 1, 1e6, 1e6], np.float32))])
    return _save(model, folder), "Resize with scales 1e6"


@case
def case_onehot_depth_huge(folder):
    node = helper.make_node("OneHot", ["X", "depth", "values"], ["Y"])
    model = _model([node], [_info("X", [4], TensorProto.INT64)], [_info("Y", None)],
                   [_w("depth", np.array(2**40)), _w("values", np.array([0.0, 1.0], np.float32))])
    return _save(model, folder), "OneHot depth 2**40"


@case
def case_topk_k_huge(folder):
    node = helper.make_node("TopK", ["X", "k"], ["Y", "I"])
    model = _model([node], [_info("X", [1, 4])], [_info("Y", None)], [_w("k", np.array([2**40]))])
    return _save(model, folder), "TopK with k 2**40"


@case
def case_einsum_huge(folder):
    node = helper.make_node("Einsum", ["A", "B"], ["Y"], equation="i,j->ij")
    model = _model([node], [_info("A", [1])], [_info("Y", None)],
                   [_w("B", np.ones(1, np.float32))])
    node2 = helper.make_node("Expand", ["A", "s"], ["A2"])
    model.graph.node.insert(0, node2)
    model.graph.node[1].input[0] = "A2"
    model.graph.initializer.append(_w("s", np.array([200000])))
    model.graph.initializer.append(_w("B2", np.ones(200000, np.float32)))
    model.graph.node[1].input[1] = "B2"
    return _save(model, folder), "Einsum outer product 200000 x 200000"


@case
def case_gemm_huge_work(folder):
    nodes = [helper.make_node("Expand", ["X", "shape"], ["big"]),
             helper.make_node("Gemm", ["big", "big"], ["Y"], transB=1)]
    model = _model(nodes, [_info("X", [1, 1])], [_info("Y", None)], [_w("shape", np.array([20000, 5000]))])
    return _save(model, folder), "Gemm of an expanded 20000x5000 with its transpose (2e12 multiply-adds)"


@case
def case_rank_100(folder):
    node = helper.make_node("Reshape", ["X", "shape"], ["Y"])
    model = _model([node], [_info("X", [1])], [_info("Y", None)], [_w("shape", np.ones(100, np.int64))])
    return _save(model, folder), "Reshape to rank 100"


@case
def case_concat_many(folder):
    node = helper.make_node("Concat", ["X"] * 100000, ["Y"], axis=0)
    return _save(_model([node], [_info("X", [1, 4])], [_info("Y", None)]), folder), "Concat of 100,000 inputs"


@case
def case_cyclic_graph(folder):
    nodes = [helper.make_node("Add", ["X", "b"], ["a"], name="n1"), helper.make_node("Relu", ["a"], ["b"], name="n2"),
             helper.make_node("Relu", ["a"], ["Y"], name="n3")]
    return _save(_model(nodes, [_info("X", [1, 4])], [_info("Y", None)]), folder), "a cycle: n1 -> n2 -> n1"


@case
def case_self_loop(folder):
    nodes = [helper.make_node("Add", ["X", "a"], ["a"], name="self"), helper.make_node("Relu", ["a"], ["Y"])]
    return _save(_model(nodes, [_info("X", [1, 4])], [_info("Y", None)]), folder), "a node reading its own output"


def _nested_graph(depth: int):
    inner = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g0", [], [_info("Y", None)])
    for level in range(depth):
        node = helper.make_node("Identity", ["X"], ["Y"], name=f"lvl{level}")
        node.attribute.append(helper.make_attribute("body", inner))
        inner = helper.make_graph([node], f"g{level + 1}", [], [_info("Y", None)])
    return inner


@case
def case_nested_subgraphs_25(folder):
    graph = _nested_graph(25)
    graph.input.append(_info("X", [1, 4]))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return _save(model, folder), "subgraph attributes nested 25 deep"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@case
def case_nested_subgraphs_3000(folder):
    """Written at the wire level: the protobuf library refuses to build a message this deep."""
    graph = _field(1, _field(1, b"X") + _field(2, b"Y") + _field(4, b"Relu"))
    for _ in range(3000):
        attr = _field(1, b"body") + _varint(20 << 3) + _varint(5) + _field(6, graph)
        node = _field(1, b"X") + _field(2, b"Y") + _field(4, b"Identity") + _field(5, attr)
        graph = _field(1, node) + _field(12, _field(1, b"Y"))
    graph += _field(11, _field(1, b"X"))
    model = _varint(1 << 3) + _varint(8) + _field(7, graph) + _field(8, _varint(2 << 3) + _varint(13))
    path = folder / "model.onnx"
    path.write_bytes(model)
    return path, "subgraph attributes nested 3000 deep (past protobuf's recursion limit)"


@case
def case_if_node_unsupported(folder):
    then = helper.make_graph([helper.make_node("Relu", ["X"], ["t"])], "then", [], [_info("t", None)])
    node = helper.make_node("If", ["c"], ["Y"], then_branch=then, else_branch=then)
    model = _model([node], [_info("X", [1, 4]), _info("c", [], TensorProto.BOOL)], [_info("Y", None)])
    return _save(model, folder), "an If node (control flow; unsupported)"


# ---- real models, as they are (must load and run) ---------------------------------------------------------

def _real(path: Path):
    def gen(folder):
        target = folder / path.name
        target.write_bytes(path.read_bytes())
        return target, f"the real model {path.relative_to(ROOT)} as published"

    gen.__name__ = f"case_real_{path.stem}"
    return gen


for _path in REAL_MODELS:
    case(_real(_path))


def build(root: Path, case_id: str) -> tuple[Path, str, Path]:
    """Write one case under ``root``; returns (model path, description, model folder)."""
    folder = prepare(root, case_id)
    path, description = CASES[case_id](folder)
    return path, description, folder


def build_all(root: Path) -> dict[str, tuple[Path, str, Path]]:
    return {case_id: build(root, case_id) for case_id in CASES}


if __name__ == "__main__":  # write the corpus somewhere to look at it: python tests/hostile_models.py DIR
    import tempfile

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="hostile-"))
    for key, (p, d, _) in build_all(target).items():
        print(f"{key:40s} {p}  {d}")


@case
def case_squeeze_pairs_40000(folder):
    # each pair cancels (cancel_squeeze_pairs): rescanning the graph after every rewrite was quadratic (hours here)
    nodes, value = [], "X"
    for index in range(40000):
        nodes.append(helper.make_node("Squeeze", [value, "axes"], [f"s{index}"]))
        nodes.append(helper.make_node("Unsqueeze", [f"s{index}", "axes"], [f"u{index}"]))
        value = f"u{index}"
    nodes.append(helper.make_node("Relu", [value], ["Y"]))
    model = _model(nodes, [_info("X", [1, 4])], [_info("Y", None)], [_w("axes", np.array([0], np.int64))])
    return _save(model, folder), "40,000 Squeeze -> Unsqueeze pairs in a row"
