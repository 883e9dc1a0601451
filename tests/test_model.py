import math

import pytest

torch = pytest.importorskip("torch")

from bbimg.models import Gaussian, HierarchicalVAE, gaussian_kl_bits, pad_to_multiple


def test_analytic_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    q = Gaussian(torch.randn(6, generator=g), torch.randn(6, generator=g) * 0.5 - 1.0)
    p = Gaussian(torch.randn(6, generator=g) * 0.3, torch.randn(6, generator=g) * 0.3)
    analytic = gaussian_kl_bits(q, p)
    samples = q.mean + q.scale * torch.randn(400_000, 6, generator=g)

    def log_density(x, d):
        return -0.5 * ((x - d.mean) / d.scale) ** 2 - d.log_scale - 0.5 * math.log(2 * math.pi)

    mc = ((log_density(samples, q) - log_density(samples, p)) / math.log(2)).mean(0)
    assert torch.allclose(analytic, mc, rtol=0.02, atol=0.02), (analytic, mc)
    assert (analytic >= 0).all()


def test_kl_is_zero_for_identical_gaussians():
    q = Gaussian(torch.tensor([0.3, -2.0]), torch.tensor([0.1, -1.0]))
    assert torch.allclose(gaussian_kl_bits(q, q), torch.zeros(2), atol=1e-6)


@pytest.mark.parametrize("h,w", [(7, 13), (100, 300), (1, 1), (64, 64)])
def test_odd_sizes_pad_and_crop(tiny_config, h, w):
    model = HierarchicalVAE(tiny_config).eval()
    x = torch.rand(1, 3, h, w)
    xp = pad_to_multiple(x, model.cfg.stride)
    assert xp.shape[-2] % 64 == 0 and xp.shape[-1] % 64 == 0
    assert torch.equal(xp[..., :h, :w], x)
    with torch.no_grad():
        out = model(xp, torch.tensor([0.5]))
    assert out.x_hat.shape == xp.shape
    assert out.x_hat[..., :h, :w].shape == x.shape
    assert out.kl_y.shape == (1,) and out.kl_z.shape == (1,)


def test_quality_changes_rate(tiny_config):
    torch.manual_seed(0)
    model = HierarchicalVAE(tiny_config)
    # The FiLM head starts at the identity; perturb it so quality matters, then check it is wired.
    with torch.no_grad():
        model.film.net[-1].bias.normal_(0, 0.5)
        model.film.net[-1].weight.normal_(0, 0.5)
    x = torch.rand(2, 3, 64, 64)
    torch.manual_seed(1)
    lo = model(x, torch.zeros(2))
    torch.manual_seed(1)
    hi = model(x, torch.ones(2))
    assert not torch.allclose(lo.kl_y, hi.kl_y)
