"""The ONNX Runtime path: same files as torch, cross-decodable, and a command line free of torch."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

torch = pytest.importorskip("torch")

from bbimg import codec, runtime
from bbimg.evaluate import psnr
from conftest import TINY, install_onnx_tiny, smooth_image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

NAME = "tiny-onnx"


@pytest.fixture
def onnx_model(tmp_path, monkeypatch):
    """A tiny model with its ONNX export, alone on $BBIMG_MODEL_PATH."""
    monkeypatch.setenv("BBIMG_MODEL_PATH", str(tmp_path))
    install_onnx_tiny(tmp_path, NAME)
    return tmp_path


def test_export_is_found_and_matches_torch(onnx_model, monkeypatch):
    assert runtime.load(NAME) is not None
    image = Image.fromarray(smooth_image(np.random.default_rng(5), 80, 112))
    data_ort = codec.encode(image, 60, model=NAME)
    monkeypatch.setenv("BBIMG_BACKEND", "torch")
    assert runtime.load(NAME) is None
    data_torch = codec.encode(image, 60, model=NAME)
    torch_of_ort = np.asarray(codec.decode(data_ort))
    torch_of_torch = np.asarray(codec.decode(data_torch))
    monkeypatch.setenv("BBIMG_BACKEND", "auto")
    ort_of_ort = np.asarray(codec.decode(data_ort))
    ort_of_torch = np.asarray(codec.decode(data_torch))
    # Either engine decodes either file, to within rounding of a few values.
    assert psnr(torch_of_ort, ort_of_ort) > 60
    assert psnr(torch_of_torch, ort_of_torch) > 60
    # The files are the same size (the plan comes from the same KL) and code the same image.
    assert abs(len(data_ort) - len(data_torch)) <= 8
    assert abs(psnr(np.asarray(image), ort_of_ort) - psnr(np.asarray(image), torch_of_torch)) < 0.1


def test_stale_export_is_not_used(onnx_model):
    from bbimg.models import HierarchicalVAE, VAEConfig
    from bbimg.training.trainer import export_weights

    assert runtime.load(NAME) is not None
    torch.manual_seed(2)  # other weights under the same name: the export no longer matches
    model = HierarchicalVAE(VAEConfig(**TINY))
    export_weights({"config": dataclasses.asdict(model.cfg), "model": model.state_dict(), "step": 1},
                   onnx_model / f"{NAME}.pt")
    assert runtime.load(NAME) is None
    image = Image.fromarray(smooth_image(np.random.default_rng(6), 64, 64))
    assert codec.decode(codec.encode(image, 50, model=NAME)).size == (64, 64)  # torch takes over


def test_missing_part_falls_back_to_torch(onnx_model):
    (onnx_model / f"{NAME}.synthesis.onnx").unlink()
    assert runtime.load(NAME) is None


@pytest.mark.slow
def test_command_line_never_imports_torch(tmp_path):
    """The shipped model has its export: encode and decode on the CPU run without torch."""
    src = tmp_path / "in.png"
    Image.fromarray(smooth_image(np.random.default_rng(7), 96, 128)).save(src)
    script = textwrap.dedent(f"""
        import sys
        from bbimg.cli.main import main
        for args in (["encode", "-q", "40", r"{src}", r"{tmp_path / 'a.bbi'}"],
                     ["decode", r"{tmp_path / 'a.bbi'}", r"{tmp_path / 'out.png'}"]):
            try:
                main(args)
            except SystemExit as exc:
                assert exc.code in (0, None), exc.code
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("BBIMG_MODEL_PATH", "BBIMG_BACKEND")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={**env, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert Image.open(tmp_path / "out.png").size == (128, 96)


# -- the synthesis as exported: sub-pixel convolutions, quality given at load ------------------

WIDE = dict(widths=(16, 32, 16), latent_channels=16, hyper_width=8, hyper_channels=4)  # >= 16: split phases


def _random_films(model) -> None:
    """FiLM starts as the identity: give it weights, so folding its gains and biases is tested."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.film.net[-1].parameters():
            p.normal_(0, 0.1)


@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_phase_convolutions_equal_the_transposed_convolution(kernel):
    from bbimg.models.onnx_export import _DepthToSpace, _phase_weights

    torch.manual_seed(kernel)
    layer = torch.nn.ConvTranspose2d(5, 4, kernel, stride=2, padding=kernel // 2, output_padding=1)
    x = torch.randn(1, 5, 7, 6)
    phases = [torch.nn.functional.conv2d(torch.nn.functional.pad(x, (left, right, top, bottom)), w)
              for w, (top, bottom, left, right) in _phase_weights(layer)]
    assert sum(w.shape[2] * w.shape[3] for w, _ in _phase_weights(layer)) == kernel * kernel  # no zero taps
    got = _DepthToSpace.apply(torch.cat(phases, 1)) + layer.bias.view(1, -1, 1, 1)
    assert torch.allclose(got, layer(x), atol=1e-5)


def test_subpixel_synthesis_equals_the_model():
    from bbimg.models import HierarchicalVAE, VAEConfig
    from bbimg.models.onnx_export import SubPixelSynthesis

    torch.manual_seed(4)
    model = HierarchicalVAE(VAEConfig(**WIDE)).eval()
    _random_films(model)
    y = torch.randn(1, 16, 5, 7) * 8
    for t in (0.0, 0.37, 1.0):
        tt = torch.tensor([t])
        with torch.no_grad():
            want = model.decode(y, model.films(tt).synthesis)
            got = SubPixelSynthesis(model)(y, tt)
        assert got.shape == want.shape == (1, 3, 80, 112)
        assert (got - want).abs().max() <= 1e-5 * max(1.0, want.abs().max())  # float summation order


@pytest.fixture
def wide_onnx_model(tmp_path, monkeypatch):
    """A model wide enough for the split sub-pixel layers, FiLM not the identity, exported."""
    from bbimg.models import HierarchicalVAE, VAEConfig
    from bbimg.training.trainer import export_weights

    torch.manual_seed(5)
    model = HierarchicalVAE(VAEConfig(**WIDE))
    _random_films(model)
    export_weights({"config": dataclasses.asdict(model.cfg), "model": model.state_dict(), "step": 0},
                   tmp_path / "wide.pt")
    monkeypatch.setenv("BBIMG_MODEL_PATH", str(tmp_path))
    from bbimg.models.registry import load_model
    return tmp_path, load_model("wide", path=tmp_path / "wide.pt")[1].float().eval()


@pytest.mark.parametrize("at_load", [True, False], ids=["quality-at-load", "quality-input"])
def test_exported_synthesis_matches_torch(wide_onnx_model, monkeypatch, at_load):
    """Today's export (t folded at load) and an export whose synthesis takes t as an input (as
    older exports did; no metadata naming load-time parts) both run and agree with torch."""
    from bbimg.models import onnx_export

    folder, model = wide_onnx_model
    if not at_load:
        monkeypatch.setattr(onnx_export, "QUALITY_AT_LOAD", ())
    onnx_export.export("wide", folder)
    runtime._cache.clear()
    tr = runtime.load("wide")
    assert tr is not None and tr.quality_at_load == (("synthesis",) if at_load else ())
    y = np.random.default_rng(8).standard_normal((1, 16, 6, 5)).astype(np.float32) * 8
    for t in (0.0, 0.61, 1.0):
        with torch.no_grad():
            want = model.decode(torch.from_numpy(y), model.films(torch.tensor([t])).synthesis).numpy()
        assert np.abs(tr.synthesis(y, t) - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def test_sessions_per_quality_are_bounded(wide_onnx_model):
    from bbimg.models import onnx_export

    folder, _ = wide_onnx_model
    onnx_export.export("wide", folder)
    runtime._cache.clear()
    tr = runtime.load("wide")
    y = np.zeros((1, 16, 2, 2), np.float32)
    first = tr.session("synthesis", 0.5)
    assert tr.session("synthesis", 0.5) is first  # reused for the same quality
    for i in range(runtime.SESSIONS_PER_PART + 2):
        tr.synthesis(y, i / 10)
    kept = [k for k in tr._sessions if isinstance(k, tuple) and k[0] == "synthesis"]
    assert len(kept) == runtime.SESSIONS_PER_PART
    assert kept[-1] == ("synthesis", float(np.float32((runtime.SESSIONS_PER_PART + 1) / 10)))


def _phase_graph(channels: int):
    """Concat of four phase inputs, then DepthToSpace(2, DCR): the shape the exporter writes."""
    from onnx import TensorProto, helper

    phases = [helper.make_tensor_value_info(f"p{i}", TensorProto.FLOAT, [1, channels, "h", "w"]) for i in range(4)]
    nodes = [helper.make_node("Concat", [f"p{i}" for i in range(4)], ["cat"], axis=1),
             helper.make_node("DepthToSpace", ["cat"], ["out"], blocksize=2, mode="DCR")]
    graph = helper.make_graph(nodes, "phases", phases, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@given(st.integers(1, 5), st.integers(1, 9), st.integers(1, 9))
@settings(max_examples=15, deadline=None)
def test_interleaved_phases_equal_depth_to_space(channels, height, width):
    import onnxruntime as ort
    from bbimg.models.onnx_export import _interleave_phases

    proto = _phase_graph(channels)
    rng = np.random.default_rng(channels * 100 + height * 10 + width)
    feeds = {f"p{i}": rng.standard_normal((1, channels, height, width)).astype(np.float32) for i in range(4)}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert _interleave_phases(proto) == 1
    assert "DepthToSpace" not in {n.op_type for n in proto.graph.node}
    assert _interleave_phases(proto) == 0  # a rewritten graph is left as it is
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert got.shape == (1, channels, 2 * height, 2 * width)
    assert np.array_equal(got, want)


def _phase_gdn_graph(channels: int, seed: int):
    """Four phases -> Concat -> DepthToSpace -> the inverse GDN x * Conv1x1(|x|), as exported."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    gamma = np.abs(rng.standard_normal((channels, channels, 1, 1))).astype(np.float32)
    beta = (1 + rng.random(channels)).astype(np.float32)
    proto = _phase_graph(channels)
    proto.graph.output[0].name = "gdn"
    proto.graph.node.extend([helper.make_node("Abs", ["out"], ["abs"]),
                             helper.make_node("Conv", ["abs", "gamma", "beta"], ["norm"]),
                             helper.make_node("Mul", ["out", "norm"], ["gdn"])])
    proto.graph.initializer.extend([numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(beta, "beta")])
    return proto


@given(st.integers(1, 5), st.integers(1, 9), st.integers(1, 9))
@settings(max_examples=15, deadline=None)
def test_gdn_moved_before_the_interleave_gives_the_same_bits(channels, height, width):
    import onnxruntime as ort
    from bbimg.models.onnx_export import _activation_per_phase, _interleave_phases

    proto = _phase_gdn_graph(channels, seed=channels + 7 * height + 11 * width)
    rng = np.random.default_rng(height * 10 + width)
    feeds = {f"p{i}": rng.standard_normal((1, channels, height, width)).astype(np.float32) for i in range(4)}
    run = lambda: ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    want = run()
    assert _activation_per_phase(proto) == 0  # only after an interleave
    assert _interleave_phases(proto) == 1 and _activation_per_phase(proto) == 1
    assert _activation_per_phase(proto) == 0  # a rewritten graph is left as it is
    made_by = {o: n for n in proto.graph.node for o in n.output}
    assert [n.op_type for n in proto.graph.node].count("Abs") == 4
    assert all(made_by[n.input[0]].op_type == "Mul" for n in proto.graph.node if n.op_type == "Unsqueeze")
    got = run()
    assert got.shape == (1, channels, 2 * height, 2 * width)
    assert np.array_equal(got, want)


def test_export_and_shipped_synthesis_interleave_without_depth_to_space(wide_onnx_model, tmp_path):
    """Only the single-convolution layers (few output channels) keep a DepthToSpace, in a fresh
    export and in the shipped graphs; --upgrade rewrites an older file in place, equal outputs."""
    import onnx
    from bbimg.models import onnx_export

    def depth_to_space_after_concat(path):
        proto = onnx.load(str(path), load_external_data=False)
        made_by = {o: n.op_type for n in proto.graph.node for o in n.output}
        return sum(n.op_type == "DepthToSpace" and made_by.get(n.input[0]) == "Concat" for n in proto.graph.node)

    folder, _ = wide_onnx_model
    onnx_export.export("wide", folder)
    assert depth_to_space_after_concat(folder / "wide.synthesis.onnx") == 0
    shipped = [Path(codec.__file__).parent / "weights" / f"bbimg-hvae-v5.{p}.onnx" for p in ("synthesis", "synthesis-fast")]
    assert [depth_to_space_after_concat(p) for p in shipped] == [0, 0]
    for path in [folder / "wide.synthesis.onnx", *shipped]:  # no Abs reads an interleaved tensor
        proto = onnx.load(str(path), load_external_data=False)
        made_by = {o: n.op_type for n in proto.graph.node for o in n.output}
        assert not any(n.op_type == "Abs" and made_by.get(n.input[0]) == "Reshape" for n in proto.graph.node), path

    old = tmp_path / "old.onnx"
    onnx.save(_phase_graph(3), str(old))
    feeds = {f"p{i}": np.full((1, 3, 2, 3), i, np.float32) for i in range(4)}
    before = runtime._session(old).run(None, feeds)[0]
    assert onnx_export.upgrade(old) == 1 and depth_to_space_after_concat(old) == 0
    assert np.array_equal(runtime._session(old).run(None, feeds)[0], before)


def test_prepared_sessions_are_made_once_in_the_background(wide_onnx_model, monkeypatch):
    """prepare() makes the sessions on another thread; session() waits for and returns them, and
    no part is loaded twice however often it is prepared."""
    import threading

    from bbimg.models import onnx_export

    folder, _ = wide_onnx_model
    onnx_export.export("wide", folder)
    runtime._cache.clear()
    tr = runtime.load("wide")
    made, real = [], runtime._session
    monkeypatch.setattr(runtime, "_session", lambda path, q=None: made.append((path.name, threading.get_ident())) or real(path, q))
    tr.prepare(("yprior", "synthesis"), 0.3)
    tr.prepare(("yprior", "synthesis"), 0.3)  # already on its way: nothing more
    sess = tr.session("synthesis", 0.3)
    assert tr.session("yprior", 0.3) is tr.session("yprior", 0.9)  # t is an input of the prior
    assert tr.session("synthesis", 0.3) is sess
    assert sorted(name for name, _ in made) == ["wide.synthesis.onnx", "wide.yprior.onnx"]
    assert all(thread != threading.get_ident() for _, thread in made)
    y = np.zeros((1, 16, 2, 2), np.float32)
    assert np.array_equal(tr.synthesis(y, 0.3), real(folder / "wide.synthesis.onnx", np.array([0.3], np.float32)).run(None, {"y": y})[0])


def test_a_prepared_part_that_fails_raises_where_it_is_used(wide_onnx_model, monkeypatch):
    from bbimg.models import onnx_export

    folder, _ = wide_onnx_model
    onnx_export.export("wide", folder)
    runtime._cache.clear()
    tr = runtime.load("wide")
    (folder / "wide.synthesis.onnx").write_bytes(b"not a graph")
    tr.prepare(("synthesis",), 0.5)
    with pytest.raises(Exception):
        tr.synthesis(np.zeros((1, 16, 2, 2), np.float32), 0.5)
