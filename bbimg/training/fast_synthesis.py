"""A lighter synthesis transform for a trained model: a faster decoder of the same files.

The light g_s has narrower hidden layers (the 1/2 and 1/4 resolution ones cost most of a decode)
and its own FiLM rows; the model's analysis, hyper transforms and priors are untouched, so files
do not change. :func:`light_from` starts it from the model's g_s (``tools/train_fast_synthesis.py``
trains it; ``bbimg.models.onnx_export.export_fast_synthesis`` ships it).
"""
from __future__ import annotations

import numpy as np
import torch

from ..models import HierarchicalVAE
from ..models.registry import config_from_dict

__all__ = ["light_from", "synthesis_parameters"]

SYNTHESIS_FILMS = (3, 4, 5)   # entries of QualityFiLM's channel list that condition g_s (w3, w2, w1)


def _film_slices(channels: list[int]) -> list[tuple[int, int]]:
    offsets = np.cumsum([0] + channels)
    return [(int(offsets[i]), int(offsets[i + 1])) for i in range(len(channels))]


def light_from(teacher: HierarchicalVAE, widths: tuple[int, int, int]) -> HierarchicalVAE:
    """A model whose g_s has ``widths`` (1/2, 1/4, 1/8), started from the teacher's g_s by keeping
    the hidden channels with the largest outgoing weights (only g_s and its FiLM rows are used)."""
    cfg = config_from_dict({**vars(teacher.cfg), "widths": tuple(widths)})
    student = HierarchicalVAE(cfg)
    t_gs, s_gs = teacher.g_s, student.g_s
    # hidden layers of g_s, in order: outputs of g_s[0] (1/8, w3), g_s[1] (1/4, w2), g_s[2] (1/2, w1)
    keep = []
    for i, width in enumerate((widths[2], widths[1], widths[0])):
        importance = t_gs[i + 1].weight.detach().pow(2).sum((1, 2, 3))   # (Cin,) of the next layer
        keep.append(torch.sort(torch.topk(importance, width).indices).values)
    with torch.no_grad():
        for i in range(4):
            w, b = t_gs[i].weight, t_gs[i].bias          # (Cin, Cout, k, k)
            rows = keep[i - 1] if i > 0 else slice(None)
            cols = keep[i] if i < 3 else slice(None)
            s_gs[i].weight.copy_(w[rows][:, cols])
            s_gs[i].bias.copy_(b[cols])
        for i in range(3):
            s_gs_act, t_act = student.g_s_act[i], teacher.g_s_act[i]
            s_gs_act.beta.copy_(t_act.beta[keep[i]])
            s_gs_act.gamma.copy_(t_act.gamma[keep[i]][:, keep[i]])
        t_film, s_film = teacher.film.net, student.film.net
        s_film[0].load_state_dict(t_film[0].state_dict())
        t_sl, s_sl = _film_slices(teacher.film.channels), _film_slices(student.film.channels)
        t_total, s_total = sum(teacher.film.channels), sum(student.film.channels)
        s_film[2].weight.zero_()
        s_film[2].bias.zero_()
        for entry, idx in zip(SYNTHESIS_FILMS, keep):
            (t0, _), (s0, s1) = t_sl[entry], s_sl[entry]
            for t_off, s_off in ((0, 0), (t_total, s_total)):   # gains, then biases
                src = t0 + t_off + idx
                s_film[2].weight[s0 + s_off:s1 + s_off] = t_film[2].weight[src]
                s_film[2].bias[s0 + s_off:s1 + s_off] = t_film[2].bias[src]
    return student


def synthesis_parameters(m: HierarchicalVAE):
    return [*m.g_s.parameters(), *m.g_s_act.parameters(), *m.film.parameters()]
