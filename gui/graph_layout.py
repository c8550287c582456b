"""A network drawn the way Netron draws it: a layered DAG, top to bottom, computed once per model (no Qt).

Sugiyama-style, in four steps:

1. **Layers** by longest path from the sources (a node sits one layer below its deepest producer), so a chain is a
   straight column and a skip connection spans several layers.
2. **Dummy nodes** cut every edge that spans more than one layer into one-layer pieces, so long edges (ResNet's
   shortcuts, DenseNet's concatenations) are routed around the nodes they pass instead of through them.
3. **Ordering** within each layer by barycenter sweeps (down, then up, a few times), keeping the best ordering
   found by edge-crossing count between neighbouring layers.
4. **Coordinates**: every node is pulled toward the mean x of its neighbours, alternately from above and below,
   then pushed apart to keep its order and spacing (a simple priority placement), so chains come out straight.

The result (``GraphLayout``) is plain numbers: node boxes and edge polylines in scene units, which the Qt graph
view turns into items. ``layout_graph`` takes anything with ``name``, ``op_type``, ``inputs``, ``outputs`` (and
optionally ``parameters``): ``nn_core``'s ``NodeInfo`` or a test's stand-ins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

NODE_WIDTH = 168.0
NODE_HEIGHT = 50.0
DUMMY_WIDTH = 12.0
LAYER_GAP = 46.0  # vertical space between layers (where the edges run)
NODE_GAP = 26.0  # horizontal space between neighbouring nodes of a layer
ORDER_SWEEPS = 6  # barycenter sweeps (each one down and one up)
PLACEMENT_SWEEPS = 8


@dataclass
class LayoutNode:
    """One box: a real node (``index`` into the model's node list) or a dummy on a long edge (``index`` -1)."""

    index: int
    name: str
    op_type: str
    layer: int
    x: float = 0.0  # centre
    y: float = 0.0  # top
    width: float = NODE_WIDTH
    height: float = NODE_HEIGHT
    parameters: int = 0

    @property
    def dummy(self) -> bool:
        return self.index < 0


@dataclass
class LayoutEdge:
    """A drawn edge from real node ``source`` to real node ``target`` (model node indices), through ``points``."""

    source: int
    target: int
    value: str  # the tensor it carries
    points: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class GraphLayout:
    nodes: list[LayoutNode]  # the real nodes, in the model's order (``nodes[i].index == i``)
    edges: list[LayoutEdge]
    width: float
    height: float
    layers: int
    crossings: int = 0  # edge crossings between neighbouring layers, after ordering
    dummies: int = 0

    def node_at(self, x: float, y: float) -> LayoutNode | None:
        for node in self.nodes:
            if abs(x - node.x) <= node.width / 2 and node.y <= y <= node.y + node.height:
                return node
        return None

    def index_of(self) -> dict[str, int]:
        return {node.name: node.index for node in self.nodes}


def graph_edges(nodes: Sequence[Any]) -> list[tuple[int, int, str]]:
    """(producer index, consumer index, value name) for every value one node makes and another reads."""
    producer: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for value in node.outputs:
            if value:
                producer[value] = index
    edges = []
    seen = set()
    for index, node in enumerate(nodes):
        for value in node.inputs:
            source = producer.get(value)
            if source is not None and source != index and (source, index) not in seen:
                seen.add((source, index))
                edges.append((source, index, value))
    return edges


def _topological_order(count: int, edges: Iterable[tuple[int, int, str]]) -> tuple[list[int], set[tuple[int, int]]]:
    """Kahn's order (ties in model order); edges closing a cycle (a malformed graph) are returned to be dropped."""
    successors: list[list[int]] = [[] for _ in range(count)]
    indegree = [0] * count
    for source, target, _ in edges:
        successors[source].append(target)
        indegree[target] += 1
    import heapq

    ready = [i for i in range(count) if indegree[i] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    placed = [False] * count
    while len(order) < count:
        if not ready:  # a cycle: place the earliest unplaced node and ignore its remaining in-edges
            heapq.heappush(ready, next(i for i in range(count) if not placed[i]))
        node = heapq.heappop(ready)
        if placed[node]:
            continue
        placed[node] = True
        order.append(node)
        for successor in successors[node]:
            indegree[successor] -= 1
            if indegree[successor] == 0 and not placed[successor]:
                heapq.heappush(ready, successor)
    position = {node: i for i, node in enumerate(order)}
    backward = {(s, t) for s, t, _ in edges if position[s] >= position[t]}
    return order, backward


def _crossings(upper: list[int], lower: list[int], down: list[list[int]]) -> int:
    """Crossings between two neighbouring layers (``down[v]``: v's neighbours in the lower layer)."""
    position = {v: i for i, v in enumerate(lower)}
    pairs = sorted((i, position[w]) for i, v in enumerate(upper) for w in down[v] if w in position)
    # count inversions of the lower positions (merge sort)
    values = [p for _, p in pairs]

    def count(items: list[int]) -> tuple[list[int], int]:
        if len(items) <= 1:
            return items, 0
        middle = len(items) // 2
        left, a = count(items[:middle])
        right, b = count(items[middle:])
        merged, inversions, i, j = [], a + b, 0, 0
        while i < len(left) and j < len(right):
            if right[j] < left[i]:
                merged.append(right[j])
                inversions += len(left) - i
                j += 1
            else:
                merged.append(left[i])
                i += 1
        merged.extend(left[i:])
        merged.extend(right[j:])
        return merged, inversions

    return count(values)[1]


def layout_graph(nodes: Sequence[Any], node_width: float = NODE_WIDTH, node_height: float = NODE_HEIGHT
                 ) -> GraphLayout:
    """Lay out ``nodes`` (in the model's order) as a top-down layered drawing; see the module docstring."""
    count = len(nodes)
    edges = graph_edges(nodes)
    order, backward = _topological_order(count, edges)
    forward = [(s, t, v) for s, t, v in edges if (s, t) not in backward]

    # 1. longest-path layering
    layer = [0] * count
    predecessors: list[list[int]] = [[] for _ in range(count)]
    for source, target, _ in forward:
        predecessors[target].append(source)
    for node in order:
        if predecessors[node]:
            layer[node] = 1 + max(layer[p] for p in predecessors[node])
    # a node that reads nothing computed (a constant's Unsqueeze, a shape) sits just above its first reader, not at
    # the top with an edge across the whole drawing
    successors: list[list[int]] = [[] for _ in range(count)]
    for source, target, _ in forward:
        successors[source].append(target)
    for node in reversed(order):
        if not predecessors[node] and successors[node]:
            layer[node] = max(0, min(layer[s] for s in successors[node]) - 1)
    layer_count = (max(layer) + 1) if count else 0

    # 2. dummies: vertices 0..count-1 are real, the rest are dummies on long edges
    vertex_layer = list(layer)
    down: list[list[int]] = [[] for _ in range(count)]
    up: list[list[int]] = [[] for _ in range(count)]
    chains: list[tuple[int, int, str, list[int]]] = []  # (source, target, value, vertices from source to target)

    def new_vertex(at_layer: int) -> int:
        vertex_layer.append(at_layer)
        down.append([])
        up.append([])
        return len(vertex_layer) - 1

    for source, target, value in forward:
        chain = [source]
        for at_layer in range(layer[source] + 1, layer[target]):
            chain.append(new_vertex(at_layer))
        chain.append(target)
        for a, b in zip(chain, chain[1:]):
            down[a].append(b)
            up[b].append(a)
        chains.append((source, target, value, chain))
    vertices = len(vertex_layer)

    # 3. ordering: initial order by a depth-first walk from the sources (keeps branches together), then sweeps
    layers: list[list[int]] = [[] for _ in range(layer_count)]
    visited = [False] * vertices
    for root in order:
        if visited[root]:
            continue
        stack = [root]
        while stack:
            vertex = stack.pop()
            if visited[vertex]:
                continue
            visited[vertex] = True
            layers[vertex_layer[vertex]].append(vertex)
            stack.extend(reversed(down[vertex]))
    # a dummy is reached only after its chain's source; layers are filled in discovery order

    def total_crossings(candidate: list[list[int]]) -> int:
        return sum(_crossings(candidate[i], candidate[i + 1], down) for i in range(len(candidate) - 1))

    def sweep(candidate: list[list[int]], downward: bool) -> None:
        span = range(1, layer_count) if downward else range(layer_count - 2, -1, -1)
        for i in span:
            fixed = candidate[i - 1] if downward else candidate[i + 1]
            position = {v: p for p, v in enumerate(fixed)}
            neighbours = up if downward else down
            keyed = []
            for p, v in enumerate(candidate[i]):
                around = [position[w] for w in neighbours[v] if w in position]
                keyed.append((sum(around) / len(around) if around else p, p, v))
            keyed.sort()
            candidate[i] = [v for _, _, v in keyed]

    best = [list(row) for row in layers]
    best_crossings = total_crossings(best) if vertices < 20000 else 0
    current = [list(row) for row in layers]
    for _ in range(ORDER_SWEEPS):
        if best_crossings == 0:
            break
        sweep(current, True)
        sweep(current, False)
        crossings = total_crossings(current)
        if crossings < best_crossings:
            best, best_crossings = [list(row) for row in current], crossings
    layers = best

    # 4. coordinates
    width_of = [node_width if v < count else DUMMY_WIDTH for v in range(vertices)]
    x = [0.0] * vertices
    for row in layers:
        cursor = 0.0
        for v in row:
            x[v] = cursor + width_of[v] / 2
            cursor += width_of[v] + NODE_GAP
        shift = cursor / 2
        for v in row:
            x[v] -= shift

    leaf = [v < count and not predecessors[v] for v in range(vertices)]

    def place(row: list[int], wanted: list[float]) -> None:
        """Positions as close as possible to ``wanted`` (weighted least squares, a constant's side input weighing
        little) keeping the order and the gaps: pool adjacent violators over the order."""
        offsets = []
        offset = 0.0
        for k, v in enumerate(row):
            if k:
                offset += (width_of[row[k - 1]] + width_of[v]) / 2 + NODE_GAP
            offsets.append(offset)
        blocks: list[list[float]] = []  # [weighted sum of (wanted - offset), total weight, members]
        for k, v in enumerate(row):
            w = 0.001 if leaf[v] else 1.0
            blocks.append([w * (wanted[k] - offsets[k]), w, 1])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
                total, weight_sum, members = blocks.pop()
                blocks[-1][0] += total
                blocks[-1][1] += weight_sum
                blocks[-1][2] += members
        k = 0
        for total, weight_sum, members in blocks:
            start = total / weight_sum
            for _ in range(int(members)):
                x[row[k]] = start + offsets[k]
                k += 1

    # how hard an edge pulls its ends into line (dagre's idea): a constant's side input hardly at all, so a chain
    # of Mul/Add with constant operands stays a straight column; pieces of long edges harder, so they run straight
    def weight(a: int, b: int) -> float:
        if leaf[a] or leaf[b]:
            return 0.001
        return 8.0 if a >= count and b >= count else (2.0 if a >= count or b >= count else 1.0)

    for iteration in range(PLACEMENT_SWEEPS):
        downward = iteration % 2 == 0
        span = range(1, layer_count) if downward else range(layer_count - 2, -1, -1)
        for i in span:
            row = layers[i]
            neighbours = up if downward else down
            wanted = []
            for v in row:
                around = neighbours[v]
                if not around:
                    wanted.append(x[v])
                    continue
                weights = [weight(v, w) for w in around]
                wanted.append(sum(x[w] * k for w, k in zip(around, weights)) / sum(weights))
            place(row, wanted)

    left = min((x[v] - width_of[v] / 2 for v in range(vertices)), default=0.0)
    right = max((x[v] + width_of[v] / 2 for v in range(vertices)), default=0.0)
    margin = 20.0
    for v in range(vertices):
        x[v] += margin - left

    def top(at_layer: int) -> float:
        return margin + at_layer * (node_height + LAYER_GAP)

    laid = [LayoutNode(i, node.name or f"node {i + 1}", node.op_type, layer[i], x[i], top(layer[i]), node_width,
                       node_height, int(getattr(node, "parameters", 0) or 0)) for i, node in enumerate(nodes)]
    drawn = []
    for source, target, value, chain in chains:
        points = [(x[source], top(layer[source]) + node_height)]
        for v in chain[1:-1]:
            points.append((x[v], top(vertex_layer[v]) + node_height / 2))
        points.append((x[target], top(layer[target])))
        drawn.append(LayoutEdge(source, target, value, points))
    for source, target, value in edges:  # edges closing a cycle: drawn straight (a malformed graph)
        if (source, target) in backward:
            drawn.append(LayoutEdge(source, target, value, [(x[source], top(layer[source]) + node_height),
                                                            (x[target], top(layer[target]))]))
    return GraphLayout(laid, drawn, right - left + 2 * margin, top(layer_count) - LAYER_GAP + margin
                       if layer_count else 2 * margin, layer_count, best_crossings, vertices - count)
