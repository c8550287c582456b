"""The graph view's layout, without Qt: layered, ordered, placed, fast enough for big models."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import pytest

from gui.graph_layout import NODE_GAP, graph_edges, layout_graph


@dataclass
class N:
    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str] = field(default_factory=list)
    parameters: int = 0

    def __post_init__(self):
        self.outputs = self.outputs or [self.name + ":0"]


def chain(count: int) -> list[N]:
    nodes = [N("n0", "Conv", ["x"], parameters=150)]
    for i in range(1, count):
        nodes.append(N(f"n{i}", "Relu" if i % 2 else "Conv", [f"n{i - 1}:0"]))
    return nodes


def residual_net(blocks: int) -> list[N]:
    """stem -> blocks of (conv, relu, conv) + shortcut -> add -> relu, like ResNet's basic block."""
    nodes = [N("stem", "Conv", ["x"])]
    last = "stem:0"
    for b in range(blocks):
        nodes += [N(f"b{b}c1", "Conv", [last]), N(f"b{b}r1", "Relu", [f"b{b}c1:0"]),
                  N(f"b{b}c2", "Conv", [f"b{b}r1:0"]), N(f"b{b}add", "Add", [f"b{b}c2:0", last]),
                  N(f"b{b}out", "Relu", [f"b{b}add:0"])]
        last = f"b{b}out:0"
    return nodes + [N("fc", "Gemm", [last])]


def random_dag(count: int, seed: int = 0) -> list[N]:
    rng = random.Random(seed)
    nodes = [N("n0", "Conv", ["x"])]
    for i in range(1, count):
        inputs = [f"n{i - 1}:0"]
        if rng.random() < 0.3:  # skip connections and branches
            inputs.append(f"n{rng.randrange(max(0, i - 12), i)}:0")
        if rng.random() < 0.05:
            inputs.append(f"n{rng.randrange(0, i)}:0")  # a long one
        nodes.append(N(f"n{i}", rng.choice(["Conv", "Relu", "Add", "Concat", "BatchNormalization"]), inputs))
    return nodes


def check_geometry(layout, nodes):
    assert [n.index for n in layout.nodes] == list(range(len(nodes)))
    for source, target, _ in graph_edges(nodes):
        assert layout.nodes[target].layer > layout.nodes[source].layer  # every edge points down
    by_layer: dict[int, list] = {}
    for node in layout.nodes:
        by_layer.setdefault(node.layer, []).append(node)
        assert 0 <= node.x - node.width / 2 and node.x + node.width / 2 <= layout.width + 1e-6
        assert 0 <= node.y and node.y + node.height <= layout.height + 1e-6
    for row in by_layer.values():
        row.sort(key=lambda n: n.x)
        for a, b in zip(row, row[1:]):
            assert b.x - a.x >= (a.width + b.width) / 2 + NODE_GAP - 1e-6  # no overlaps within a layer
    for edge in layout.edges:
        source, target = layout.nodes[edge.source], layout.nodes[edge.target]
        assert edge.points[0] == pytest.approx((source.x, source.y + source.height))
        assert edge.points[-1] == pytest.approx((target.x, target.y))
        assert all(a[1] < b[1] for a, b in zip(edge.points, edge.points[1:]))  # downward all the way


def test_a_chain_is_one_straight_column():
    nodes = chain(12)
    layout = layout_graph(nodes)
    check_geometry(layout, nodes)
    assert [n.layer for n in layout.nodes] == list(range(12))
    assert len({round(n.x, 6) for n in layout.nodes}) == 1
    assert layout.dummies == 0 and layout.crossings == 0
    assert layout.nodes[0].parameters == 150 and layout.nodes[0].op_type == "Conv"


def test_a_residual_block_shows_its_shortcut_beside_the_main_path():
    nodes = residual_net(3)
    layout = layout_graph(nodes)
    check_geometry(layout, nodes)
    index = layout.index_of()
    add = layout.nodes[index["b0add"]]
    assert add.layer == layout.nodes[index["b0c2"]].layer + 1
    shortcut = next(e for e in layout.edges if e.source == index["stem"] and e.target == index["b0add"])
    assert len(shortcut.points) == 5  # through three dummies: conv, relu, conv layers
    main_x = layout.nodes[index["b0r1"]].x
    assert all(abs(x - main_x) >= 10 for x, _ in shortcut.points[1:-1])  # routed beside the nodes, not through
    assert layout.crossings == 0


def test_branches_are_side_by_side_and_merge():
    nodes = [N("in", "Conv", ["x"]), N("a", "Conv", ["in:0"]), N("b", "MaxPool", ["in:0"]),
             N("c", "Conv", ["in:0"]), N("cat", "Concat", ["a:0", "b:0", "c:0"])]
    layout = layout_graph(nodes)
    check_geometry(layout, nodes)
    a, b, c = (layout.nodes[i] for i in (1, 2, 3))
    assert a.layer == b.layer == c.layer == 1 and len({a.x, b.x, c.x}) == 3
    assert layout.nodes[4].x == pytest.approx(layout.nodes[0].x)  # the merge sits under the split


def test_constant_side_inputs_sit_next_to_their_reader_not_at_the_top():
    nodes = chain(20) + [N("scale", "Unsqueeze", ["w"]), N("mul", "Mul", ["n19:0", "scale:0"])]
    layout = layout_graph(nodes)
    check_geometry(layout, nodes)
    assert layout.nodes[20].layer == layout.nodes[21].layer - 1 and layout.dummies == 0
    assert layout.nodes[21].x == pytest.approx(layout.nodes[19].x, abs=1.0)  # the chain stays straight


def test_a_cycle_or_an_empty_graph_does_not_break_it():
    looped = [N("a", "Add", ["x", "b:0"]), N("b", "Relu", ["a:0"])]
    layout = layout_graph(looped)
    assert len(layout.nodes) == 2 and len(layout.edges) == 2
    empty = layout_graph([])
    assert empty.nodes == [] and empty.edges == [] and empty.layers == 0


def test_crossings_are_reduced_by_the_ordering_sweeps():
    # two sources feeding two sinks crosswise: a naive order has a crossing, the sweeps remove it
    nodes = [N("a", "Conv", ["x"]), N("b", "Conv", ["y"]), N("p", "Relu", ["b:0"]), N("q", "Relu", ["a:0"])]
    layout = layout_graph(nodes)
    assert layout.crossings == 0


def test_a_400_node_graph_with_skips_is_laid_out_in_under_a_second():
    nodes = random_dag(400)
    started = time.perf_counter()
    layout = layout_graph(nodes)
    elapsed = time.perf_counter() - started
    check_geometry(layout, nodes)
    assert elapsed < 1.0, f"{elapsed:.2f} s"
    assert layout.layers > 50 and layout.dummies > 0
