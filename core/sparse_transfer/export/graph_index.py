"""Producers, consumers and constants of an ONNX graph: what the sparse graph's passes read."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


class GraphIndex:
    """Producers, consumers, constants and graph outputs of a graph."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.inits = {i.name: i for i in graph.initializer}
        self.to_array = numpy_helper.to_array
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list] = defaultdict(list)
        for n in graph.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.graph_outputs = {o.name for o in graph.output}
        for n in graph.node:  # Constant nodes count as constants
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.inits.setdefault(n.output[0], n.attribute[0].t)
        for n in graph.node:  # the exporter shares equal weights through Identity nodes
            if n.op_type == "Identity" and n.input[0] in self.inits:
                self.inits.setdefault(n.output[0], self.inits[n.input[0]])

    def const(self, name: str) -> np.ndarray | None:
        return self.to_array(self.inits[name]) if name in self.inits else None

    def has_const(self, name: str) -> bool:
        """Whether `name` is a constant, without converting it (`const` copies it out)."""
        return name in self.inits

    def only_consumer(self, tensor: str):
        """The single node reading `tensor`, or None (several, none, or a graph output)."""
        users = self.consumers.get(tensor, [])
        if len(users) != 1 or tensor in self.graph_outputs:
            return None
        return users[0]


def node_activation(node) -> str:
    """A sparse op's ``activation`` attribute ("none" when absent)."""
    value = next((a.s for a in node.attribute if a.name == "activation"), b"none")
    return value.decode() if isinstance(value, bytes) else str(value)


def node_k(node) -> int:
    """A sparse op's ``K`` attribute (its true input width)."""
    return int(next(a.i for a in node.attribute if a.name == "K"))


def is_u8_scalar_quant(node, idx: GraphIndex) -> bool:
    """A per-tensor uint8 QuantizeLinear with constant scale and zero point."""
    if node is None or node.op_type != "QuantizeLinear" or len(node.input) < 3:
        return False
    scale, zp = idx.const(node.input[1]), idx.const(node.input[2])
    return (
        scale is not None and zp is not None and scale.size == 1 and zp.size == 1
        and zp.dtype == np.uint8 and scale.dtype == np.float32
    )  # fmt: skip


def replace_nodes(graph, at: dict[int, list], gone: set[int]) -> None:
    """Rewrites `graph.node` in order: the nodes `at[id(anchor)]` take their anchor's place
    (its inputs exist there), nodes whose id is in `gone` are dropped, the rest stay."""
    kept = []
    for n in graph.node:
        if id(n) in at:
            kept += at[id(n)]
        elif id(n) not in gone:
            kept.append(n)
    del graph.node[:]
    graph.node.extend(kept)


def replace_matches(graph, found: list[dict], emit) -> int:
    """Each match's op (``emit(match) -> (op, removed nodes)``) takes the place of the match's
    last node (``match["nodes"][-1]``); the removed nodes go. Returns how many."""
    at, gone = {}, set()
    for m in found:
        op, removed = emit(m)
        at[id(m["nodes"][-1])] = [op]
        gone |= {id(n) for n in removed}
    replace_nodes(graph, at, gone)
    return len(found)
