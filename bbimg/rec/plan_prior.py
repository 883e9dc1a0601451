"""Per-model tables of typical block-plan units: what makes a format 1.3 block plan short.

A channel's plan unit (``channel_plan.plan_units``) follows its KL, and which channels carry much
or little is mostly a property of the model: per channel, the unit varies across training images
by a common offset (image size, detail) plus a few units. So a model can ship, per level and per
anchor quality, the typical unit of every channel; the file then carries one offset per level and
the small corrections (``channel_plan.write_units``): on Kodak about half the bytes of the
adaptive code without a table.

The tables are integers, evaluated with integer arithmetic only (:meth:`PlanPrior.prediction`),
so encoder and decoder predict the same units on every machine. A table is part of its model:
it is looked up by the weights' SHA-256 (the file records its prefix), and files coded with it
need it to decode, so a shipped table never changes (a new one needs new weights). Its id
(1..15, from its contents) is written in every plan that uses it; a decoder holding another
table refuses the file instead of misreading it. Tables are fitted on training images
(:func:`fit`, ``tools/fit_plan_prior.py``), never on the evaluation set.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .channel_plan import RESIDUAL_SYMBOLS, RESIDUAL_WIDTH, UnitPrediction

__all__ = ["ANCHOR_QUALITIES", "LevelTable", "PlanPrior", "find", "predictions", "fit", "to_source"]

#: The qualities (1..100) a table holds units for; others interpolate between the nearest two.
ANCHOR_QUALITIES = (1, 5, 20, 40, 60, 80, 100)
_COUNT_TOTAL = 256  # initial counts of the correction model: about 16 observations' weight


def _t_fixed(t: float) -> int:
    """Quality t as the header stores it (float32), in 1/65536 units, rounded: exact integers."""
    t32 = struct.unpack("<f", struct.pack("<f", float(t)))[0]
    return int(round(t32 * 65536))


_ANCHORS = tuple(_t_fixed((q - 1) / 99) for q in ANCHOR_QUALITIES)


@dataclass(frozen=True)
class LevelTable:
    """One level: ``sixteenths[a][c]`` the typical unit of channel c at anchor a, in 1/16;
    ``counts[a]`` the initial counts of the two correction models at anchor a (UnitPrediction)."""

    sixteenths: tuple[tuple[int, ...], ...]
    counts: tuple[tuple[int, ...], ...]

    def prediction(self, prior_id: int, t: float) -> UnitPrediction:
        x = min(max(_t_fixed(t), _ANCHORS[0]), _ANCHORS[-1])
        j = max(i for i in range(len(_ANCHORS) - 1) if _ANCHORS[i] <= x) if x < _ANCHORS[-1] else len(_ANCHORS) - 2
        lo, hi = np.array(self.sixteenths[j], np.int64), np.array(self.sixteenths[j + 1], np.int64)
        span = _ANCHORS[j + 1] - _ANCHORS[j]
        values = lo + ((hi - lo) * (x - _ANCHORS[j])) // span
        nearest = j if 2 * (x - _ANCHORS[j]) < span else j + 1
        return UnitPrediction(prior_id, values, self.counts[nearest])


@dataclass(frozen=True)
class PlanPrior:
    model: str
    weights_sha256: str  # hex, the full digest of the weights the table was fitted for
    kappa: int
    levels: dict  # level tag ("Z", "Y") -> LevelTable
    images: int = 0  # training images it was fitted on (informational)

    @property
    def prior_id(self) -> int:
        blob = json.dumps({k: [v.sixteenths, v.counts] for k, v in sorted(self.levels.items())}).encode()
        return 1 + zlib.crc32(blob) % 15

    def prediction(self, level: str, t: float) -> UnitPrediction | None:
        table = self.levels.get(level)
        return None if table is None else table.prediction(self.prior_id, t)


def _load() -> list[PlanPrior]:
    from .plan_prior_data import PRIORS

    out = []
    for p in PRIORS:
        levels = {k: LevelTable(tuple(map(tuple, v["sixteenths"])), tuple(map(tuple, v["counts"])))
                  for k, v in p["levels"].items()}
        out.append(PlanPrior(p["model"], p["weights_sha256"], p["kappa"], levels, p.get("images", 0)))
    return out


_PRIORS: list[PlanPrior] | None = None


def find(weights_hash: bytes) -> PlanPrior | None:
    """The table of the weights whose SHA-256 starts with ``weights_hash`` (a file's 16..32-byte
    prefix or the full digest), or None."""
    global _PRIORS
    if _PRIORS is None:
        _PRIORS = _load()
    key = bytes(weights_hash).hex()
    for p in _PRIORS:
        if len(key) >= 32 and p.weights_sha256.startswith(key):
            return p
    return None


def predictions(weights_hash: bytes, t: float, kappa: int) -> dict:
    """Level tag -> UnitPrediction for a file of these weights, quality and kappa ({} when the
    model has no table or the table was fitted for another kappa)."""
    prior = find(weights_hash)
    if prior is None or prior.kappa != kappa:
        return {}
    return {level: prior.prediction(level, t) for level in prior.levels}


def fit(samples: list[dict], model: str, weights_sha256: str, kappa: int, rounds: int = 6) -> PlanPrior:
    """A table from training samples: dicts with ``quality`` (one of ANCHOR_QUALITIES) and, per
    level tag, the plan units of one image (``{"Z": [...], "Y": [...]}`` under ``units``).

    Per anchor and level: typical units T_c and per-image offsets g_i alternate (T = mean of
    u - g, g = median of u - T), then the corrections the coder would send give the counts."""
    levels: dict[str, LevelTable] = {}
    tags = sorted({tag for s in samples for tag in s["units"]})
    for tag in tags:
        sixteenths, counts = [], []
        for q in ANCHOR_QUALITIES:
            rows = [s["units"][tag] for s in samples if s["quality"] == q and tag in s["units"]]
            if not rows:
                raise ValueError(f"no samples of level {tag} at quality {q}")
            u = np.array(rows, np.float64)
            offset = np.zeros((u.shape[0], 1))
            for _ in range(rounds):
                typical = (u - offset).mean(axis=0)
                offset = np.round(np.median(u - typical, axis=1, keepdims=True))
            s16 = np.round(16 * typical).astype(np.int64)
            pred = np.clip((s16 + 16 * offset.astype(np.int64) + 8) // 16, 0, kappa + 96)
            d = np.clip(u.astype(np.int64) - pred, -RESIDUAL_WIDTH - 1, RESIDUAL_WIDTH + 1)
            d = np.where(np.abs(d) > RESIDUAL_WIDTH, RESIDUAL_SYMBOLS - 1, d + RESIDUAL_WIDTH)
            c = []
            for context in (pred <= kappa, pred > kappa):
                hist = np.bincount(d[context], minlength=RESIDUAL_SYMBOLS).astype(np.float64)
                hist = hist / hist.sum() if hist.sum() else np.full(RESIDUAL_SYMBOLS, 1 / RESIDUAL_SYMBOLS)
                c.extend(np.maximum(1, np.round(hist * _COUNT_TOTAL)).astype(int))
            sixteenths.append(tuple(int(v) for v in s16))
            counts.append(tuple(int(v) for v in c))
        levels[tag] = LevelTable(tuple(sixteenths), tuple(counts))
    images = len({s.get("image") for s in samples})
    return PlanPrior(model, weights_sha256, kappa, levels, images)


def to_source(priors: list[PlanPrior]) -> str:
    """``plan_prior_data.py`` holding ``priors`` (tools/fit_plan_prior.py writes it)."""
    lines = ['"""Plan-unit tables of the shipped models (bbimg.rec.plan_prior; written by tools/fit_plan_prior.py).',
             "", "Never edit a shipped table: files coded with it need it unchanged to decode.", '"""', "PRIORS = ["]
    for p in priors:
        lines.append("    {")
        lines.append(f"        \"model\": {json.dumps(p.model)}, \"kappa\": {p.kappa}, \"images\": {p.images},")
        lines.append(f"        \"weights_sha256\": {json.dumps(p.weights_sha256)},")
        lines.append("        \"levels\": {")
        for tag, table in sorted(p.levels.items()):
            lines.append(f"            {json.dumps(tag)}: {{")
            lines.append("                \"sixteenths\": [")
            for row in table.sixteenths:
                lines.append("                    [")
                for i in range(0, len(row), 16):
                    lines.append("                        " + ", ".join(str(v) for v in row[i:i + 16]) + ",")
                lines.append("                    ],")
            lines.append("                ],")
            lines.append("                \"counts\": [")
            for row in table.counts:
                lines.append("                    [")
                for i in range(0, len(row), 22):
                    lines.append("                        " + ", ".join(str(v) for v in row[i:i + 22]) + ",")
                lines.append("                    ],")
            lines.append("                ],")
            lines.append("            },")
        lines.append("        },")
        lines.append("    },")
    lines.append("]")
    return "\n".join(lines) + "\n"
