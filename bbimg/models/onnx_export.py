"""Export a shipped model's transforms to ONNX, so that encoding and decoding run without torch.

``import torch`` alone takes 3-4 s on the reference 2-core machine: more than the whole decode
budget of a command-line run. ONNX Runtime imports in ~0.6 s and runs these convolutions as fast.
The graphs take the quality ``t`` as an input (the FiLM network is inside them) and keep fp16
weights behind Cast nodes (folded to fp32 when a session loads), so the files are as small as
the .pt weights. Each file records the sha256 of the .pt it came from: a stale export is never
used (``bbimg.runtime``).

The synthesis, 80-90% of a decode, is exported for speed with the same arithmetic (equal to the
torch model up to float summation order):

* Each transposed convolution becomes sub-pixel convolutions: one stride-1 convolution per output
  phase (no zero taps), their outputs concatenated, then DepthToSpace (:func:`_phase_weights`).
  ONNX Runtime's CPU ConvTranspose is a GEMM plus a single-threaded col2im; its Conv runs in the
  blocked NCHWc layout on all cores.
* In the file, each Concat + DepthToSpace of four phases is two Concats that interleave them
  (:func:`_interleave_phases`): the same values, moved 3x faster than ONNX Runtime's DepthToSpace
  (a single-threaded 6-D transpose, a fifth of a Kodak synthesis).
* The inverse GDN after each of them is applied to the four phases before they are interleaved
  (:func:`_activation_per_phase`): per pixel, so the same values, but computed in ONNX Runtime's
  NCHWc layout next to the phase convolutions.
* ``t`` is not an input but an initializer given when the session loads
  (:data:`QUALITY_AT_LOAD`, ``bbimg.runtime``): the FiLM network is then constant-folded and its
  gains and biases, and the 1/latent_gain input scale, are folded into the convolutions' weights.
  A session is made for one quality, which is how a file is decoded.

    python -m bbimg.models.onnx_export bbimg-hvae-v5      # writes bbimg/weights/<name>.<part>.onnx

Needs torch and the ``onnx`` package (developers only; users need ``onnxruntime``).
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..runtime import FAST_SYNTHESIS, PARTS, QUALITY_AT_LOAD, QUALITY_NAME
from .registry import load_model
from .vae import HierarchicalVAE

__all__ = ["PARTS", "export", "export_fast_synthesis", "SubPixelSynthesis"]

#: Output channels from which a transposed convolution is split into one convolution per phase:
#: below it (the 3-channel image layer) the phases share one convolution, zero taps included: so
#: few channels would not fill ONNX Runtime's NCHWc blocks (16 channels on AVX-512, 8 on AVX2), so
#: the phases could not be concatenated in that layout, and the layer costs little.
SPLIT_MIN_CHANNELS = 16


class _Part(nn.Module):
    """One transform as a graph: ``fn(model, films, *inputs)`` with the quality ``t`` as last input."""

    def __init__(self, m: HierarchicalVAE, fn):
        super().__init__()
        self.m, self.fn = m, fn

    def forward(self, *inputs):
        *args, t = inputs
        return self.fn(self.m, self.m.films(t), *args)


class _DepthToSpace(torch.autograd.Function):
    """(N, 4C, H, W) -> (N, C, 2H, 2W) taking channel (2 * row phase + column phase) * C + c to
    pixel (2h + row phase, 2w + column phase) of channel c: ONNX DepthToSpace in DCR mode."""

    @staticmethod
    def forward(ctx, x):
        n, c4, h, w = x.shape
        c = c4 // 4
        return x.reshape(n, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, 2 * h, 2 * w)

    @staticmethod
    def symbolic(g, x):
        return g.op("DepthToSpace", x, blocksize_i=2, mode_s="DCR")


class _PaddedConv(torch.autograd.Function):
    """A stride-1 convolution with its own (top, bottom, left, right) zero padding, exported as one
    Conv node (torch's conv2d pads symmetrically; a separate Pad would cost a pass over the input)."""

    @staticmethod
    def forward(ctx, x, w, b, top: int, bottom: int, left: int, right: int):
        return F.conv2d(F.pad(x, (left, right, top, bottom)), w, b)

    @staticmethod
    def symbolic(g, x, w, b, top, bottom, left, right):
        return g.op("Conv", x, w, b, pads_i=[top, left, bottom, right], strides_i=[1, 1])


def _phase_taps(kernel: int, padding: int, phase: int) -> range:
    """Input offsets d that output phase ``phase`` of a stride-2 transposed convolution reads.

    Output o = 2m + r gets W[k] x[i] for every k = o + padding - 2i, i.e. k = r + padding - 2d
    with d = i - m, for each d keeping k in [0, kernel)."""
    lo = -((kernel - 1 - phase - padding) // 2)   # ceil((r + p - kernel + 1) / 2)
    return range(lo, (phase + padding) // 2 + 1)


def _phase_weights(layer: nn.ConvTranspose2d) -> list[tuple[torch.Tensor, tuple[int, int, int, int]]]:
    """A stride-2 ConvTranspose2d (output_padding 1) as four stride-1 convolutions, one per output
    phase (row phase, column phase) in DCR order: [(weight (Cout, Cin, kh, kw), (top, bottom, left,
    right) padding)]. Phase (r, c) of the output is the convolution of the input with
    W[:, :, r + p - 2d, c + p - 2e] over the offsets d, e of :func:`_phase_taps` (zero-padded at the
    border, as the transposed convolution's sum simply has no term there).

    For the 5x5 kernels of g_s (padding 2): phase 0 reads offsets -1, 0, 1 (kernel taps 4, 2, 0),
    phase 1 offsets 0, 1 (taps 3, 1): kernels 3x3, 3x2, 2x3 and 2x2, 25 taps in all, as many
    multiply-adds as the transposed convolution and none on its inserted zeros."""
    k, p = layer.kernel_size[0], layer.padding[0]
    if layer.kernel_size != (k, k) or layer.stride != (2, 2) or layer.padding != (p, p) or \
            layer.output_padding != (1, 1) or layer.dilation != (1, 1) or layer.groups != 1 or 2 * p + 1 != k:
        raise ValueError(f"sub-pixel form needs a stride-2, 'same' transposed convolution, got {layer}")
    weight = layer.weight.detach()  # (Cin, Cout, k, k)
    out = []
    for r in (0, 1):
        for c in (0, 1):
            rows, cols = _phase_taps(k, p, r), _phase_taps(k, p, c)
            w = weight[:, :, [r + p - 2 * d for d in rows]][:, :, :, [c + p - 2 * e for e in cols]]
            out.append((w.permute(1, 0, 2, 3).contiguous(), (-rows[0], rows[-1], -cols[0], cols[-1])))
    return out


def _subpixel(layer: nn.ConvTranspose2d, x: torch.Tensor, in_scale: float = 1.0, gain=None, bias=None):
    """``layer(x * in_scale) * gain + bias`` (gain, bias: per output channel, or None) as
    sub-pixel convolutions with the scale, gain and bias folded into the weights."""
    b = layer.bias.detach()
    if gain is not None:
        gain, bias = gain.reshape(-1), bias.reshape(-1)
        b = b * gain + bias
        gain = gain * in_scale  # computed in the graph: the stored weights stay the fp16 values
    elif in_scale != 1.0:
        gain = torch.full_like(b, in_scale)
    phases = []
    for w, pads in _phase_weights(layer):
        phases.append((w if gain is None else w * gain.view(-1, 1, 1, 1), pads))
    if layer.out_channels >= SPLIT_MIN_CHANNELS:
        y = torch.cat([_PaddedConv.apply(x, w, b, *pads) for w, pads in phases], 1)
    else:  # one k x k convolution (3x3 for g_s) for all four phases, each phase's kernel placed by its offsets
        k = max(w.shape[2] for w, _ in phases)
        half = k // 2
        full = x.new_zeros(4, layer.out_channels, layer.in_channels, k, k)
        for i, (w, (top, _, left, _)) in enumerate(phases):
            full[i, :, :, half - top:half - top + w.shape[2], half - left:half - left + w.shape[3]] = w
        y = F.conv2d(x, full.reshape(4 * layer.out_channels, layer.in_channels, k, k), b.repeat(4), padding=half)
    return _DepthToSpace.apply(y)


class SubPixelSynthesis(nn.Module):
    """g_s (``HierarchicalVAE.decode`` with the FiLM of quality ``t``) as exported: sub-pixel
    convolutions with the input scale and the FiLM gains and biases folded in. Equal to
    ``m.decode(y, m.films(t).synthesis)`` up to float summation order."""

    def __init__(self, m: HierarchicalVAE):
        super().__init__()
        self.m = m

    def forward(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = self.m
        films = m.films(t).synthesis
        h = y
        for i, layer in enumerate(m.g_s):
            film = films[i] if i < len(films) else (None, None)
            h = _subpixel(layer, h, 1.0 / m.cfg.latent_gain if i == 0 else 1.0, *film)
            if i < len(films):
                h = m.g_s_act[i](h)
        return h


def _graphs(m: HierarchicalVAE):
    """(part, module, example inputs, input names, output names, dynamic axes), in PARTS order."""
    c, k = m.cfg.latent_channels, m.cfg.hyper_channels
    t = torch.tensor([0.5])
    hw = {2: "h", 3: "w"}
    gauss = ["mean", "log_scale"]
    spatial = {"mean": hw, "log_scale": hw}
    yield "analysis", _Part(m, lambda m, f, x: _pair(m.encode_y(x, f.analysis))), \
        (torch.rand(1, 3, 128, 192), t), ["x", "t"], gauss, {"x": hw, **spatial}
    yield "hyper", _Part(m, lambda m, f, y: _pair(m.encode_z(y, f.hyper_analysis))), \
        (torch.randn(1, c, 8, 12), t), ["y_mean", "t"], gauss, {"y_mean": hw, **spatial}
    yield "zprior", _Part(m, lambda m, f: _pair(m.prior_z(f.z_prior, (1, k, 1, 1)))), (t,), ["t"], gauss, {}
    yield "yprior", _Part(m, lambda m, f, z: _pair(m.prior_y(z, f.hyper_synthesis))), \
        (torch.randn(1, k, 2, 3), t), ["z", "t"], gauss, {"z": hw, **spatial}
    yield "synthesis", SubPixelSynthesis(m), \
        (torch.randn(1, c, 8, 12), t), ["y", "t"], ["x_hat"], {"y": hw, "x_hat": hw}


def _pair(g):
    return g.mean, g.log_scale


def _fp16_weights(model) -> None:
    """Store float32 initializers as float16 behind a Cast (ONNX Runtime folds it at load)."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    casts = []
    for init in list(graph.initializer):
        arr = numpy_helper.to_array(init)
        if arr.dtype != np.float32 or arr.size < 16:
            continue
        if not np.array_equal(arr.astype(np.float16).astype(np.float32), arr):
            continue  # not an fp16 weight of the checkpoint (a product folded by the exporter)
        half_name = init.name + "__fp16"
        graph.initializer.remove(init)
        graph.initializer.append(numpy_helper.from_array(arr.astype(np.float16), half_name))
        casts.append(helper.make_node("Cast", [half_name], [init.name], to=1))  # 1 = FLOAT
    for node in reversed(casts):
        graph.node.insert(0, node)


def _quality_at_load(model) -> None:
    """Turn the graph input ``t`` into an initializer whose value the session supplies when it
    loads (external data that ``bbimg.runtime`` provides with ``add_external_initializers``), so
    that ONNX Runtime constant-folds everything computed from the quality."""
    from onnx import TensorProto

    graph = model.graph
    (inp,) = [i for i in graph.input if i.name == QUALITY_NAME]
    graph.input.remove(inp)
    init = TensorProto(name=QUALITY_NAME, data_type=TensorProto.FLOAT, dims=[1],
                       data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "bbimg-quality-given-at-load"), ("offset", "0"), ("length", "4")):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    graph.initializer.append(init)


def _producers_and_users(graph) -> tuple[dict, dict]:
    """For each tensor name of ``graph``: the node that makes it, and the nodes that read it."""
    producer = {out: node for node in graph.node for out in node.output}
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return producer, users


def _interleave_phases(model) -> int:
    """Rewrite each ``DepthToSpace(Concat(p00, p01, p10, p11, axis=1), 2, DCR)`` as columns then
    rows interleaved by Concat: ``p_r0, p_r1`` unsqueezed on a last axis, concatenated there and
    reshaped to (N, C, H, 2W) make row phase r; the two rows concatenated along W, (N, C, H, 4W),
    reshaped to (N, C, 2H, 2W) put row h of phase r at row 2h + r. Equal values (data movement
    only); returns how many were rewritten. Files already rewritten are left as they are."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producer, users = _producers_and_users(graph)
    count = 0
    for node in list(graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        cat = producer.get(node.input[0]) if node.op_type == "DepthToSpace" else None
        if cat is None or attrs.get("blocksize") != 2 or attrs.get("mode", b"DCR") != b"DCR" or \
                cat.op_type != "Concat" or len(cat.input) != 4 or len(users[cat.output[0]]) != 1 or \
                helper.get_attribute_value(cat.attribute[0]) != 1:
            continue
        p, pre = list(cat.input), f"{node.output[0]}/interleave"
        new = []
        for r in (0, 1):
            for c in (0, 1):
                new.append(helper.make_node("Unsqueeze", [p[2 * r + c], "bbimg_last_axis"], [f"{pre}/{r}{c}"]))
            new.append(helper.make_node("Concat", [f"{pre}/{r}0", f"{pre}/{r}1"], [f"{pre}/cols{r}"], axis=4))
            new.append(helper.make_node("Reshape", [f"{pre}/cols{r}", "bbimg_merge_last"], [f"{pre}/row{r}"]))
        new += [helper.make_node("Concat", [f"{pre}/row0", f"{pre}/row1"], [f"{pre}/rows"], axis=3),
                helper.make_node("Shape", [p[0]], [f"{pre}/shape"]),
                helper.make_node("Mul", [f"{pre}/shape", "bbimg_double_hw"], [f"{pre}/out_shape"]),
                helper.make_node("Reshape", [f"{pre}/rows", f"{pre}/out_shape"], [node.output[0]])]
        at = list(graph.node).index(node)
        for k, n in enumerate(new):
            graph.node.insert(at + k, n)
        graph.node.remove(node)
        graph.node.remove(cat)
        count += 1
    if count and not any(i.name == "bbimg_last_axis" for i in graph.initializer):
        graph.initializer.extend([numpy_helper.from_array(torch.tensor([4]).numpy(), "bbimg_last_axis"),
                                  numpy_helper.from_array(torch.tensor([0, 0, 0, -1]).numpy(), "bbimg_merge_last"),
                                  numpy_helper.from_array(torch.tensor([1, 1, 2, 2]).numpy(), "bbimg_double_hw")])
    return count


def _activation_per_phase(model) -> int:
    """Move each ``X * Conv(|X|)`` (the inverse GDN) that follows an interleave of four phases
    (:func:`_interleave_phases`) in front of it: applied to each phase, then interleaved. The GDN
    is per pixel, so the values are the same to the bit, but ONNX Runtime then runs it in its
    blocked NCHWc layout, beside the phase convolutions, instead of reordering the whole
    interleaved tensor to NCHW and back (Kodak-size synthesis ~4% faster). Returns how many
    were moved; a graph already rewritten is left as it is."""
    from onnx import helper

    graph = model.graph
    producer, users = _producers_and_users(graph)
    count = 0
    for mul in list(graph.node):
        if mul.op_type != "Mul" or len(mul.input) != 2:
            continue
        x, norm = mul.input
        pre = f"{x}/interleave"
        conv = producer.get(norm)
        absx = producer.get(conv.input[0]) if conv is not None and conv.op_type == "Conv" else None
        unsqueezes = [producer.get(f"{pre}/{r}{c}") for r in (0, 1) for c in (0, 1)]
        if absx is None or absx.op_type != "Abs" or absx.input[0] != x or \
                getattr(producer.get(x), "op_type", None) != "Reshape" or \
                any(u is None or u.op_type != "Unsqueeze" for u in unsqueezes) or \
                sorted(id(n) for n in users[x]) != sorted((id(absx), id(mul))) or \
                len(users[conv.input[0]]) != 1 or len(users[norm]) != 1:
            continue
        for u, rc in zip(unsqueezes, ("00", "01", "10", "11")):
            phase, at = u.input[0], f"{pre}/gdn{rc}"
            graph.node.extend([
                helper.make_node("Abs", [phase], [f"{at}/abs"]),
                helper.make_node("Conv", [f"{at}/abs", *conv.input[1:]], [f"{at}/norm"], name=f"{at}/conv"),
                helper.make_node("Mul", [phase, f"{at}/norm"], [f"{at}/out"])])
            graph.node[-2].attribute.extend(conv.attribute)
            u.input[0] = f"{at}/out"
        producer[x].output[0] = mul.output[0]  # the interleave now yields the GDN's output
        for node in (absx, conv, mul):
            graph.node.remove(node)
        count += 1
    if count:
        _sort_nodes(graph)
    return count


def _sort_nodes(graph) -> None:
    """Put ``graph``'s nodes in an order where each follows the producers of its inputs (ONNX
    requires it), keeping the present order where it already does."""
    made = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in made for i in n.input)]
        if not ready:
            raise ValueError("the graph has a cycle or an input nothing produces")
        for node in ready:
            made.update(node.output)
        ordered += ready
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def _write_graph(path: Path, module, args, inputs, outputs, axes, props: dict, quality_at_load: bool) -> Path:
    """Export one graph with fp16 weights (and the quality as a load-time initializer), its
    metadata ``props``; written to a temporary name, then renamed."""
    import onnx

    tmp = path.with_suffix(".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(module, args, str(tmp), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    proto = onnx.load(str(tmp))
    _fp16_weights(proto)
    _interleave_phases(proto)
    _activation_per_phase(proto)
    if quality_at_load:
        _quality_at_load(proto)
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return path


def export(name: str, out_dir: Path | None = None) -> list[Path]:
    info, model = load_model(name)
    out_dir = Path(out_dir) if out_dir else info.path.parent
    written = []
    graphs = list(_graphs(model.float().eval()))
    assert tuple(g[0] for g in graphs) == PARTS, "the export must write every part bbimg.runtime loads"
    for part, *graph in graphs:
        props = {"bbimg_model": name, "bbimg_weights_sha256": info.sha256.hex()}
        if part == "zprior":  # the file bbimg.runtime opens first reads for the whole export
            props["bbimg_quality_at_load"] = ",".join(QUALITY_AT_LOAD)
        written.append(_write_graph(out_dir / f"{name}.{part}.onnx", *graph, props, part in QUALITY_AT_LOAD))
    return written


def export_fast_synthesis(name: str, light: HierarchicalVAE, facts: dict | None = None,
                          out_dir: Path | None = None) -> Path:
    """Write ``light``'s g_s (``bbimg.training.fast_synthesis``) as model ``name``'s optional
    ``synthesis-fast`` part, with fp16 weights like the model's own graphs, recording ``name``'s
    weights hash (``bbimg.runtime`` uses the part only with those weights) and ``facts``."""
    info, _ = load_model(name)
    out_dir = Path(out_dir) if out_dir else info.path.parent
    half = HierarchicalVAE(light.cfg)
    half.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in light.state_dict().items()})
    graph = next(g[1:] for g in _graphs(half.eval()) if g[0] == "synthesis")
    props = {"bbimg_model": name, "bbimg_weights_sha256": info.sha256.hex(),
             **{f"bbimg_fast_synthesis_{k}": str(v) for k, v in (facts or {}).items()}}
    return _write_graph(out_dir / f"{name}.{FAST_SYNTHESIS}.onnx", *graph, props, True)


def upgrade(path: Path) -> int:
    """Apply the file-level rewrites of :func:`_write_graph` to an exported graph in place (a part
    whose training state is not at hand, such as a fast synthesis); returns how many were made."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)  # the load-time quality stays external
    count = _interleave_phases(proto) + _activation_per_phase(proto)
    if count:
        tmp = path.with_suffix(".tmp")
        onnx.save(proto, str(tmp))
        tmp.replace(path)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="model to export (every part)")
    parser.add_argument("--out-dir", type=Path)
    parser.add_argument("--upgrade", type=Path, nargs="+", metavar="ONNX",
                        help="rewrite these exported files in place with the current graph rewrites instead")
    args = parser.parse_args()
    if args.upgrade:
        for path in args.upgrade:
            print(f"{path}: {upgrade(path)} rewrites")
        return
    if not args.name:
        parser.error("name a model, or give --upgrade FILES")
    for path in export(args.name, args.out_dir):
        print(f"{path}: {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
