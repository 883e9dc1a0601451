"""A transform on ONNX Runtime kept in its channel-blocked layout across its elementwise steps.

ONNX Runtime runs convolutions in its NCHWc layout (channels in blocks of 8 or 16 floats per
position) and wraps every other operator in a reorder to NCHW and back: in the analysis
transform the reorders and the four elementwise operators of each divisive normalisation + FiLM
(``Abs``, ``Div``, ``Mul``, ``Add``) took a fifth of the time. :func:`build` takes the graph ONNX
Runtime optimised (convolutions already blocked), cuts it at those elementwise steps and runs
the pieces as sessions with ``bbimg._core``'s blocked kernels between them, which do the same
IEEE operations in the same order on the blocked tensors, in one pass: the outputs are the same
bits (checked on a probe input before the graph is used; any mismatch or unknown pattern leaves
the caller on its plain session).

The graph is read and cut at the protobuf wire level (``_wire``) because ``import onnx`` alone
takes ~0.9 s on the reference CPU, more than the whole saving on a 12 MP photo.
"""
from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable

import numpy as np

from . import _core
from .threads import available as available_threads

__all__ = ["BlockedGraph", "build", "channel_block"]

_NCHWC = "com.microsoft.nchwc"
_FLOAT = 1


class _wire:
    """Just enough of the protobuf wire format to list, copy and assemble ONNX messages."""

    @staticmethod
    def varint(buf: bytes, pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7

    @staticmethod
    def fields(buf: bytes) -> list[tuple[int, int | bytes, bytes]]:
        """(field number, value: int or payload bytes, the field's raw bytes) of a message."""
        out, pos = [], 0
        while pos < len(buf):
            start = pos
            tag, pos = _wire.varint(buf, pos)
            kind = tag & 7
            if kind == 0:
                value, pos = _wire.varint(buf, pos)
            elif kind == 2:
                size, pos = _wire.varint(buf, pos)
                value, pos = buf[pos:pos + size], pos + size
            elif kind in (1, 5):
                size = 8 if kind == 1 else 4
                value, pos = buf[pos:pos + size], pos + size
            else:
                raise ValueError(f"unsupported protobuf wire type {kind}")
            out.append((tag >> 3, value, buf[start:pos]))
        return out

    @staticmethod
    def encode_varint(value: int) -> bytes:
        out = bytearray()
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    @staticmethod
    def field(number: int, payload: bytes | str) -> bytes:
        """A length-delimited field."""
        payload = payload.encode() if isinstance(payload, str) else payload
        return _wire.encode_varint(number << 3 | 2) + _wire.encode_varint(len(payload)) + payload

    @staticmethod
    def value_info(name: str, elem_type: int | None = _FLOAT) -> bytes:
        """ValueInfoProto: a tensor of ``elem_type`` and any shape (or no type)."""
        if elem_type is None:
            return _wire.field(1, name)
        tensor = _wire.encode_varint(1 << 3) + _wire.encode_varint(elem_type)
        return _wire.field(1, name) + _wire.field(2, _wire.field(1, tensor))


class _Node:
    """A NodeProto: its tensors, operator and integer attributes, and its raw bytes."""

    def __init__(self, raw_field: bytes, payload: bytes):
        self.raw, self.inputs, self.outputs, self.op, self.domain, self.ints = raw_field, [], [], "", "", {}
        for number, value, _ in _wire.fields(payload):
            if number == 1:
                self.inputs.append(value.decode())
            elif number == 2:
                self.outputs.append(value.decode())
            elif number == 4:
                self.op = value.decode()
            elif number == 7:
                self.domain = value.decode()
            elif number == 5:
                attr = dict((n, v) for n, v, _ in _wire.fields(value) if n in (1, 3))
                if 3 in attr:
                    self.ints[attr[1].decode()] = attr[3]


class _Model:
    """An ONNX model split into what :func:`build` reads and the bytes it copies."""

    def __init__(self, data: bytes):
        self.head, graph = [], None  # every ModelProto field but the graph, raw
        for number, value, raw in _wire.fields(data):
            if number == 7:
                graph = value
            else:
                self.head.append(raw)
        if graph is None:
            raise ValueError("no graph")
        self.nodes, self.initializers, self.inputs, self.outputs = [], {}, {}, {}
        for number, value, raw in _wire.fields(graph):
            if number == 1:
                self.nodes.append(_Node(raw, value))
            elif number == 5:
                name = next((v.decode() for n, v, _ in _wire.fields(value) if n == 8), None)
                self.initializers[name] = raw
            elif number in (11, 12):
                name = next(v.decode() for n, v, _ in _wire.fields(value) if n == 1)
                (self.inputs if number == 11 else self.outputs)[name] = value
            elif number == 15:
                raise ValueError("sparse initializers are not handled")

    def model(self, nodes: list[_Node], inputs: list[bytes], outputs: list[bytes]) -> bytes:
        """The serialized model of ``nodes`` with these ValueInfoProto inputs and outputs."""
        used = {i for n in nodes for i in n.inputs}
        graph = b"".join(n.raw for n in nodes) + _wire.field(2, "part")
        graph += b"".join(raw for name, raw in self.initializers.items() if name in used)
        graph += b"".join(_wire.field(11, v) for v in inputs) + b"".join(_wire.field(12, v) for v in outputs)
        return b"".join(self.head) + _wire.field(7, graph)


def _session(model: bytes, options: Callable):
    import onnxruntime as ort

    opts = options()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # optimised already
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


_block: list[int] = []


def channel_block(options: Callable) -> int:
    """ONNX Runtime's NCHWc channel block on this CPU (4, 8 or 16), found by reordering a probe."""
    if not _block:
        opset = _wire.field(1, _NCHWC) + _wire.encode_varint(2 << 3) + _wire.encode_varint(1)
        node = _wire.field(1, "x") + _wire.field(2, "y") + _wire.field(4, "ReorderInput") + _wire.field(7, _NCHWC)
        graph = _wire.field(1, node) + _wire.field(2, "probe") + _wire.field(11, _wire.value_info("x")) \
            + _wire.field(12, _wire.value_info("y"))
        model = _wire.encode_varint(1 << 3) + _wire.encode_varint(8) + _wire.field(8, opset) + _wire.field(7, graph)
        probe = np.arange(32 * 2, dtype=np.float32).reshape(1, 32, 1, 2)  # value = channel * 2 + position
        out = _session(model, options).run(None, {"x": probe})[0].ravel()
        # Blocked order: [channel block][position][lane]; position 1 of lane 0 (value 1) follows the block.
        _block.append(int(np.flatnonzero(out == 1)[0]))
    return _block[0]


class BlockedGraph:
    """A transform as ONNX Runtime pieces and blocked elementwise kernels: ``run`` takes and
    returns what ``InferenceSession.run(None, feeds)`` does. Not re-entrant (one lock)."""

    def __init__(self, params, steps: list, outputs: list[str], block: int):
        self._params, self._steps, self._outputs, self._block = params, steps, outputs, block
        self._param_cache: tuple[bytes, dict] | None = None
        self._buffers: dict[int, np.ndarray] = {}
        self._slots = _buffer_slots(steps, outputs)
        self._lock = threading.Lock()
        self._threads = available_threads()

    def _param_values(self, feeds: dict) -> dict:
        sess, inputs, outputs = self._params
        key = b"".join(np.ascontiguousarray(feeds[i]).tobytes() for i in inputs)
        if self._param_cache is None or self._param_cache[0] != key:
            self._param_cache = (key, dict(zip(outputs, sess.run(outputs, {i: feeds[i] for i in inputs}))))
        return self._param_cache[1]

    def _buffer(self, name: str, like: np.ndarray) -> np.ndarray:
        """The output array of kernel step ``name``: a view of memory kept between calls and grown
        to the largest call (a fresh 64 MB array per tile costs its page faults each time), shared
        by the kernel outputs whose lifetimes do not overlap (_buffer_slots)."""
        slot = self._slots[name]
        flat = self._buffers.get(slot)
        if flat is None or flat.size < like.size:
            # A quarter more than asked: the tiles of an image differ in size by their halos, and
            # growing (new pages to fault in) cost a tile's worth of time each time.
            flat = self._buffers[slot] = np.empty(like.size + like.size // 4, np.float32)
        return flat[:like.size].reshape(like.shape)

    def release(self) -> None:
        """Free the kernels' output arrays (they are made again on the next call)."""
        with self._lock:
            self._buffers.clear()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            env = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
            env.update(self._param_values(env))
            for step in self._steps:
                kind = step[0]
                if kind == "ort":
                    _, sess, inputs, outputs = step
                    env.update(zip(outputs, sess.run(outputs, {i: env[i] for i in inputs})))
                elif kind == "abs":
                    x = env[step[1]]
                    out = env[step[2]] = self._buffer(step[2], x)
                    _core.blocked_abs(x, out, self._threads)
                else:  # divide, scale, shift
                    x, d, g, b = (env[k] for k in step[1:5])
                    out = env[step[5]] = self._buffer(step[5], x)
                    _core.blocked_divide_scale_shift(x, d, np.ravel(g), np.ravel(b), out, self._block, self._threads)
            return [env[o] for o in self._outputs]


def _step_reads(step: tuple) -> list[str]:
    if step[0] == "ort":
        return list(step[2])
    return list(step[1:2] if step[0] == "abs" else step[1:5])


def _buffer_slots(steps: list, outputs: list[str]) -> dict[str, int]:
    """A buffer for each kernel step's output, shared with earlier kernel outputs no step reads
    any more (a value is dead once its last reader has run: ONNX Runtime does not keep its inputs).
    In the analysis transform one buffer then serves every layer's Abs and divisive normalisation
    instead of one per step: 85 MB instead of 276 MB for a 1088 x 1088 tile, pages the first tile
    no longer faults in."""
    last = {name: len(steps) for name in outputs}  # graph outputs live past the last step
    for i, step in enumerate(steps):
        for name in _step_reads(step):
            last[name] = max(last.get(name, i), i)
    slots: dict[str, int] = {}
    holder: list[str | None] = []  # the value each slot holds
    for i, step in enumerate(steps):
        if step[0] == "ort":
            continue
        out = step[-1]
        free = [k for k, v in enumerate(holder) if v is None or last.get(v, -1) < i]
        slot = free[0] if free else len(holder)
        if slot == len(holder):
            holder.append(None)
        holder[slot] = out
        slots[out] = slot
    return slots


def _plan(model: _Model, image_inputs: set[str], block: int):
    """The pieces of ``model``: (parameter nodes, steps) or None where a step is not understood.
    Steps: ("ort", nodes), ("abs", x, out), ("dss", x, d, g, b, out); kernel outputs take the name
    of the ReorderInput that read them, so no node is rewritten."""
    image = set(image_inputs)
    for n in model.nodes:
        if any(i in image for i in n.inputs):
            image.update(n.outputs)
    params = [n for n in model.nodes if not any(o in image for o in n.outputs)]
    param_names = {o for n in params for o in n.outputs}
    consumers: dict[str, list[_Node]] = {}
    for n in model.nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)
    # NCHW tensor -> the blocked one it was reordered from, where the channels fill whole blocks.
    blocked_source = {n.outputs[0]: n.inputs[0] for n in model.nodes
                      if n.op == "ReorderOutput" and n.domain == _NCHWC and not n.ints.get("channels_last", 0)
                      and n.ints.get("channels", 0) > 0 and n.ints["channels"] % block == 0}

    def reordered(name: str) -> _Node | None:
        """The ReorderInput that blocks ``name`` again, if that is its one use."""
        users = consumers.get(name, [])
        if len(users) == 1 and users[0].op == "ReorderInput" and users[0].domain == _NCHWC \
                and not users[0].ints.get("channels_last", 0):
            return users[0]
        return None

    steps, replaced = [], {id(n) for n in params}  # nodes a kernel step (or the parameter session) stands for
    for n in model.nodes:
        if id(n) in replaced:
            continue
        if n.op == "Abs" and n.inputs[0] in blocked_source and (back := reordered(n.outputs[0])):
            steps.append(("abs", blocked_source[n.inputs[0]], back.outputs[0]))
            replaced.update((id(n), id(back)))
            continue
        if n.op == "Div" and len(n.inputs) == 2 and all(i in blocked_source for i in n.inputs):
            mul = consumers.get(n.outputs[0], [])
            add = consumers.get(mul[0].outputs[0], []) if len(mul) == 1 and mul[0].op == "Mul" else []
            if len(add) == 1 and add[0].op == "Add":
                g = [i for i in mul[0].inputs if i != n.outputs[0]]
                b = [i for i in add[0].inputs if i != mul[0].outputs[0]]
                back = reordered(add[0].outputs[0])
                if len(g) == 1 and len(b) == 1 and g[0] in param_names and b[0] in param_names and back:
                    steps.append(("dss", blocked_source[n.inputs[0]], blocked_source[n.inputs[1]], g[0], b[0],
                                  back.outputs[0]))
                    replaced.update((id(n), id(mul[0]), id(add[0]), id(back)))
                    continue
        steps.append(("node", n))
    # A reorder to NCHW that only kernel steps read is dropped; one read by any other node stays.
    steps = [s for s in steps if not (s[0] == "node" and s[1].op == "ReorderOutput" and s[1].outputs[0] in blocked_source
                                      and all(id(c) in replaced for c in consumers.get(s[1].outputs[0], [None])))]
    if not any(s[0] != "node" for s in steps):
        return None
    return params, steps


def build(path: str | os.PathLike, options: Callable, image_inputs: tuple[str, ...] = ("x",)) -> BlockedGraph | None:
    """The blocked form of the graph at ``path``, or None where it has none (no such steps, a
    graph or ONNX Runtime build this does not understand, or a probe whose outputs differ from the
    plain session's by a bit). ``options``: makes the SessionOptions of every piece."""
    import onnxruntime as ort

    try:
        block = channel_block(options)
        if block not in (4, 8, 16):
            return None
        with tempfile.TemporaryDirectory(prefix="bbimg-ort-") as folder:
            opts = options()
            opts.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
            plain = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            with open(opts.optimized_model_filepath, "rb") as f:
                model = _Model(f.read())
        planned = _plan(model, set(image_inputs), block)
        if planned is None:
            return None
        param_nodes, steps = planned
        # Tensors each piece must hand on: read by a later piece, a kernel or the graph's outputs.
        outputs = list(model.outputs)
        needed, pieces = set(outputs), []
        for s in reversed(_group(steps)):
            if s[0] == "ort":
                nodes = s[1]
                made = {o for n in nodes for o in n.outputs}
                inputs = list(dict.fromkeys(i for n in nodes for i in n.inputs
                                            if i and i not in made and i not in model.initializers))
                outs = [o for o in dict.fromkeys(o for n in nodes for o in n.outputs) if o in needed]
                info_in = [model.inputs.get(i) or _wire.value_info(i) for i in inputs]
                info_out = [model.outputs.get(o) or _wire.value_info(o) for o in outs]
                pieces.append(("ort", _session(model.model(nodes, info_in, info_out), options), inputs, outs))
                needed.update(inputs)
            else:
                pieces.append(s)
                needed.update(s[1:-1])
        pieces.reverse()
        param_outputs = [o for n in param_nodes for o in n.outputs if o in needed]
        param_inputs = list(dict.fromkeys(i for n in param_nodes for i in n.inputs if i in model.inputs))
        params = (_session(model.model(param_nodes, [model.inputs[i] for i in param_inputs],
                                       [_wire.value_info(o) for o in param_outputs]), options),
                  param_inputs, param_outputs)
        graph = BlockedGraph(params, pieces, outputs, block)
        if not _same_bits(graph, plain):
            return None
        graph.release()
        return graph
    except Exception:  # noqa: BLE001  (any surprise: the plain session it is)
        return None


def _group(steps: list) -> list:
    """Consecutive ("node", n) steps as one ("ort", [nodes]) piece."""
    out = []
    for s in steps:
        if s[0] == "node":
            if out and out[-1][0] == "ort":
                out[-1][1].append(s[1])
            else:
                out.append(("ort", [s[1]]))
        else:
            out.append(s)
    return out


def _same_bits(graph: BlockedGraph, plain) -> bool:
    """Whether ``graph`` gives the plain session's outputs bit for bit on a seeded probe."""
    rng = np.random.default_rng(20261207)
    feeds = {}
    for inp in plain.get_inputs():
        shape = [d if isinstance(d, int) else 128 for d in inp.shape]
        feeds[inp.name] = rng.random(shape, dtype=np.float32)
    want = plain.run(None, feeds)
    got = graph.run(feeds)
    return len(want) == len(got) and all(a.dtype == b.dtype and a.shape == b.shape and
                                          np.array_equal(a.view(np.uint8), b.view(np.uint8))
                                          for a, b in zip(want, got))
