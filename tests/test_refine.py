"""Posterior refinement (bbimg.refine) on a tiny model: it lowers the codec's objective, never ends
worse than it started, keeps shapes and positive scales, and is deterministic for a seed."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from bbimg import refine  # noqa: E402
from bbimg.models import HierarchicalVAE, VAEConfig  # noqa: E402

from conftest import TINY, smooth_image  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the test machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = HierarchicalVAE(VAEConfig(**TINY)).eval()
    with torch.no_grad():
        model.film.net[-1].bias.normal_(0, 0.2)  # FiLM starts at the identity: make quality matter
        model.g_s[-1].bias.fill_(0.5)            # decoded images centred in [0, 1] ...
        model.g_s[-1].weight.mul_(3.0)           # ... with some contrast
    return model  # weights keep requires_grad: refinement must not need (or touch) their gradients


def posteriors(net, pixels: np.ndarray, t: float):
    """The amortised start, as the codec has it: numpy (1, C, h, w), scales not log-scales."""
    x = refine._padded_image(pixels, net.cfg.stride, torch.device("cpu"))
    with torch.no_grad():
        films = net.films(torch.tensor([t]))
        qy = net.encode_y(x, films.analysis)
        qz = net.encode_z(qy.mean, films.hyper_analysis)
    return [a.numpy().copy() for a in (qy.mean, qy.scale, qz.mean, qz.scale)]


def y_prior(net, z: np.ndarray, t: float):
    with torch.no_grad():
        p = net.prior_y(torch.from_numpy(z), net.films(torch.tensor([t])).hyper_synthesis)
    return p.mean.numpy().copy(), p.scale.numpy().copy()


@pytest.fixture(scope="module")
def image(net):
    """An image the tiny decoder can produce (from a latent the analysis does not find), 70 x 90:
    padded to 128 x 128, so the padding is exercised. Untrained, the model is far from its best
    posterior here, as a trained model is on real images, only more so."""
    x = refine._padded_image(smooth_image(np.random.default_rng(1), 70, 90), net.cfg.stride, torch.device("cpu"))
    torch.manual_seed(1)
    with torch.no_grad():
        films = net.films(torch.tensor([0.5]))
        y = net.encode_y(x, films.analysis).mean
        x_hat = net.decode(y + 4.0 * torch.randn_like(y), films.synthesis)[0, :, :70, :90].clamp(0, 1)
    return np.round(x_hat.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


@pytest.mark.parametrize("optimizer,lr", [("newton", 0.5), ("adam", 0.05)])
def test_refinement_lowers_the_objective_and_keeps_shapes(net, image, optimizer, lr):
    t = 0.6
    start = posteriors(net, image, t)
    settings = refine.Settings(optimizer=optimizer)
    before = refine.objective(net, image, t, *start, settings=settings)
    out = refine.refine_posteriors(net, image, t, *start, steps=30, lr=lr, settings=settings)
    after = refine.objective(net, image, t, *out, settings=settings)
    assert after.loss < 0.9 * before.loss, (before, after)
    for a, b in zip(start, out):
        assert b.shape == a.shape and b.dtype == np.float32
    assert (out[1] > 0).all() and (out[3] > 0).all()
    assert all(p.grad is None for p in net.parameters())


def test_more_steps_lower_it_further(net, image):
    t = 0.3
    start = posteriors(net, image, t)
    losses = [refine.objective(net, image, t, *refine.refine_posteriors(net, image, t, *start, steps=s, lr=0.05)).loss
              for s in (0, 5, 40)]
    assert losses[0] > losses[1] > losses[2], losses


def test_refine_y_against_a_fixed_prior(net, image):
    t = 0.8
    ym, ys, zm, _ = posteriors(net, image, t)
    pm, ps = y_prior(net, zm, t)
    before = refine.objective(net, image, t, ym, ys, py_mean=pm, py_scale=ps)
    out = refine.refine_y(net, image, t, ym, ys, pm, ps, steps=30, lr=0.05)
    after = refine.objective(net, image, t, *out, py_mean=pm, py_scale=ps)
    assert after.loss < 0.9 * before.loss and after.bits_z == 0.0
    assert out[0].shape == ym.shape and out[1].shape == ys.shape and (out[1] > 0).all()


def test_deterministic_for_a_seed(net, image):
    start = posteriors(net, image, 0.5)
    a = refine.refine_posteriors(net, image, 0.5, *start, steps=4, lr=0.05, seed=7)
    b = refine.refine_posteriors(net, image, 0.5, *start, steps=4, lr=0.05, seed=7)
    c = refine.refine_posteriors(net, image, 0.5, *start, steps=4, lr=0.05, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_zero_steps_return_the_inputs(net, image):
    start = posteriors(net, image, 0.5)
    out = refine.refine_posteriors(net, image, 0.5, *start, steps=0, lr=0.05)
    assert all(x is y for x, y in zip(start, out))
    pm, ps = y_prior(net, start[2], 0.5)
    out_y = refine.refine_y(net, image, 0.5, start[0], start[1], pm, ps, steps=0, lr=0.05)
    assert out_y[0] is start[0] and out_y[1] is start[1]


def test_progress_and_bad_arguments(net, image):
    start = posteriors(net, image, 0.5)
    seen = []
    refine.refine_posteriors(net, image, 0.5, *start, steps=3, lr=0.05, progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(ValueError):
        refine.refine_posteriors(net, image, 0.5, *start, steps=-1, lr=0.05)
    with pytest.raises(ValueError):
        refine.refine_posteriors(net, image, 0.5, *start, steps=2, lr=0.0)
    with pytest.raises(ValueError):
        refine.refine_posteriors(net, image, 0.5, *start, steps=2, lr=0.1, settings=refine.Settings(optimizer="sgd"))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 80), w=st.integers(1, 80), t=st.floats(0, 1), steps=st.integers(1, 6),
       lr=st.sampled_from([0.01, 0.3, 3.0]), seed=st.integers(0, 2**64 - 1), data_seed=st.integers(0, 1000))
def test_never_ends_worse_than_it_started(net, h, w, t, steps, lr, seed, data_seed):
    """Whatever the size, quality, step count and learning rate (3.0 diverges), the result is at
    least as good as the start on the fixed-draw objective for that seed."""
    pixels = np.random.default_rng(data_seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    start = posteriors(net, pixels, t)
    out = refine.refine_posteriors(net, pixels, t, *start, steps=steps, lr=lr, seed=seed)
    before = refine.objective(net, pixels, t, *start, seed=seed)
    after = refine.objective(net, pixels, t, *out, seed=seed)
    assert after.loss <= before.loss
    assert all(np.isfinite(a).all() for a in out) and (out[1] > 0).all() and (out[3] > 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_refines_deterministically(net, image):
    import copy

    gpu = copy.deepcopy(net).cuda()
    start = posteriors(net, image, 0.5)
    a = refine.refine_posteriors(gpu, image, 0.5, *start, steps=10, lr=0.5, seed=3)
    b = refine.refine_posteriors(gpu, image, 0.5, *start, steps=10, lr=0.5, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(isinstance(x, np.ndarray) and x.shape == s.shape for x, s in zip(a, start))
    assert refine.objective(gpu, image, 0.5, *a).loss < 0.95 * refine.objective(gpu, image, 0.5, *start).loss
