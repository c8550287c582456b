"""String kernels; RegexFullMatch agrees with Python's re and cannot be made to hang by a pattern."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from onnx import helper

from nn_core.errors import ModelError
from nn_core.ops.testing import run_node


def _strings(*values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _match(pattern: str, texts) -> list[bool]:
    node = helper.make_node("RegexFullMatch", ["x"], ["y"], pattern=pattern)
    return run_node(node, [_strings(*texts)], 20)[0].tolist()


TEXTS = ["", "a", "ab", "abc", "aaa", "abab", "www.x.com", "a_b c", "x9", "Hello", "hello world", "a\nb", "é1"]


@pytest.mark.parametrize("pattern", [
    "a*", "a+b?", "(ab)*", "a|ab|abc", "[a-c]+", "[^a]*", r"\w+", r"\W*\d", r"\s", ".*", "a{2,3}", "(a|b){0,4}",
    r"www\.[\w.-]+\.\bcom\b", r"\bhello\b.*", "^a.*$", "(?i)HELLO", "x?y?z?", "(a*)*", "(?:ab|a)(?:b|)",
    "[a-zA-Z0-9_]+", r"\D\d", r"a\Sb", "((a|b)c?)+",
])
def test_regex_agrees_with_python_re(pattern):
    assert _match(pattern, TEXTS) == [re.fullmatch(pattern, t) is not None for t in TEXTS]


@pytest.mark.parametrize("pattern", [r"(a|aa)*b", r"(x+x+)+y", r"(a*)*b", r"(\w+\s?)*$!"])
def test_catastrophic_patterns_run_in_linear_time(pattern):
    text = "a" * 3000 if "a" in pattern else ("x" * 3000 if "x" in pattern else "word " * 600)
    start = time.perf_counter()
    assert _match(pattern, [text]) == [False]
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("pattern", [r"(a)\1", r"a(?=b)", r"(?<=a)b", r"(?P<x>a)(?P=x)", r"(?(1)a|b)", "[",
                                     r"a{1000}{1000}{1000}"])
def test_patterns_outside_re2_or_too_large_are_refused_at_load(pattern):
    with pytest.raises(ModelError):
        _match(pattern, ["a"])


def test_a_run_over_the_work_budget_is_refused():
    from nn_core.limits import Limits
    from nn_core.ops import load_all_kernels
    from nn_core.ops.registry import NodeSpec, resolve

    load_all_kernels()
    spec = NodeSpec("RegexFullMatch", inputs=["x"], outputs=["y"], attrs={"pattern": "a{500}"}, opset=20,
                    limits=Limits(max_node_work=1e6))
    kernel = resolve("RegexFullMatch", 20)(spec)
    with pytest.raises(ModelError, match="max_node_work"):
        kernel.run(_strings("a" * 500))


def test_string_split_and_concat():
    node = helper.make_node("StringSplit", ["x"], ["y", "n"], delimiter="-", maxsplit=1)
    parts, counts = run_node(node, [_strings("a-b-c", "d")], 20)
    assert parts.tolist() == [["a", "b-c"], ["d", ""]] and counts.tolist() == [2, 1]
    concat = helper.make_node("StringConcat", ["x", "y"], ["z"])
    assert run_node(concat, [_strings("a", "b"), _strings("!")], 20)[0].tolist() == ["a!", "b!"]
    with pytest.raises(ModelError, match="string tensor"):
        run_node(concat, [np.zeros(2), _strings("!")], 20)


def test_string_normalizer_case_insensitive_stopwords():
    node = helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="LOWER", stopwords=["THE"])
    assert run_node(node, [_strings("The", "Cat", "the")], 10)[0].tolist() == ["cat"]
    assert run_node(node, [_strings("the")], 10)[0].tolist() == [""]
