"""Per-model tables of typical block-plan units: what makes a format 1.3 block plan short.

A channel's plan unit (``channel_plan.plan_units``) follows its KL, and which channels carry much
or little is mostly a property of the model: per channel, the log KL varies across training images
by a common offset (image size, detail), a few patterns (for y) and a little more. So a model can
ship, per level and anchor quality, the typical log KL of every channel, and per level the
patterns; a file then carries an offset and pattern weights per level and small corrections
(``channel_plan.write_units``): on Kodak about half the bytes of the adaptive code without a
table.

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

from .channel_plan import RESIDUAL_SYMBOLS, RESIDUAL_WIDTH, UnitPrediction, log_of_units

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
    """One level: ``log_kl[a][c]`` the typical 64 log2 KL of channel c at anchor a; ``counts[a]``
    the initial counts of the two correction models at anchor a; ``shapes[i][c]`` component i of
    how images differ beyond an offset, in 1/256 quarter octave; ``full_at``: the log KL of one
    full block at the level's nominal block ratio (UnitPrediction)."""

    log_kl: tuple[tuple[int, ...], ...]
    counts: tuple[tuple[int, ...], ...]
    shapes: tuple[tuple[int, ...], ...] = ()
    full_at: int = 0

    def prediction(self, prior_id: int, t: float) -> UnitPrediction:
        x = min(max(_t_fixed(t), _ANCHORS[0]), _ANCHORS[-1])
        j = max(i for i in range(len(_ANCHORS) - 1) if _ANCHORS[i] <= x) if x < _ANCHORS[-1] else len(_ANCHORS) - 2
        lo, hi = np.array(self.log_kl[j], np.int64), np.array(self.log_kl[j + 1], np.int64)
        span = _ANCHORS[j + 1] - _ANCHORS[j]
        values = lo + ((hi - lo) * (x - _ANCHORS[j])) // span
        nearest = j if 2 * (x - _ANCHORS[j]) < span else j + 1
        return UnitPrediction(prior_id, values, self.counts[nearest], self.shapes, self.full_at)


@dataclass(frozen=True)
class PlanPrior:
    model: str
    weights_sha256: str  # hex, the full digest of the weights the table was fitted for
    kappa: int
    levels: dict  # level tag ("Z", "Y") -> LevelTable
    images: int = 0  # training images it was fitted on (informational)

    @property
    def prior_id(self) -> int:
        blob = json.dumps({k: [v.log_kl, v.counts, v.shapes, v.full_at]
                           for k, v in sorted(self.levels.items())}).encode()
        return 1 + zlib.crc32(blob) % 15

    def prediction(self, level: str, t: float) -> UnitPrediction | None:
        table = self.levels.get(level)
        return None if table is None else table.prediction(self.prior_id, t)


def _load() -> list[PlanPrior]:
    from .plan_prior_data import PRIORS

    out = []
    for p in PRIORS:
        levels = {k: LevelTable(tuple(map(tuple, v["log_kl"])), tuple(map(tuple, v["counts"])),
                                tuple(map(tuple, v.get("shapes", ()))), v["full_at"])
                  for k, v in p["levels"].items()}
        out.append(PlanPrior(p["model"], p["weights_sha256"], p["kappa"], levels, p.get("images", 0)))
    return out


_PRIORS: list[PlanPrior] | None = None


def find(weights_hash: bytes) -> PlanPrior | None:
    """The table of the weights whose SHA-256 starts with ``weights_hash`` (a file's 8..32-byte
    prefix or the full digest), or None."""
    global _PRIORS
    if _PRIORS is None:
        _PRIORS = _load()
    key = bytes(weights_hash).hex()
    for p in _PRIORS:
        if len(key) >= 16 and p.weights_sha256.startswith(key):
            return p
    return None


def predictions(weights_hash: bytes, t: float, kappa: int) -> dict:
    """Level tag -> UnitPrediction for a file of these weights, quality and kappa ({} when the
    model has no table or the table was fitted for another kappa)."""
    prior = find(weights_hash)
    if prior is None or prior.kappa != kappa:
        return {}
    return {level: prior.prediction(level, t) for level in prior.levels}


#: Nominal block ratios of the levels (codec defaults: y 1.1, z 1.1 x 1.3 / 1.1): where a table
#: puts the start of full blocks on its log KL scale (an offset absorbs other ratios).
NOMINAL_RATIOS = {"Z": 1.3, "Y": 1.1}


def fit(samples: list[dict], model: str, weights_sha256: str, kappa: int, shapes: dict | None = None,
        rounds: int = 6) -> PlanPrior:
    """A table from training samples: dicts with ``quality`` (one of ANCHOR_QUALITIES) and, per
    level tag, the plan units of one image (``{"Z": [...], "Y": [...]}`` under ``units``).
    ``shapes``: components per level (default 4 for y, none for z: measured on Kodak, y's plan
    costs ~10 bytes less with 4, z's nothing).

    Per anchor and level, on the log KL scale: typical values T_c and per-image offsets g_i
    alternate (T = mean of v - g, g = median of v - T, in quarter octaves). The shapes are the
    leading principal components of the residuals of all anchors together; the counts are those
    of the corrections the coder then sends."""
    shapes = {"Y": 4} if shapes is None else shapes
    levels: dict[str, LevelTable] = {}
    tags = sorted({tag for s in samples for tag in s["units"]})
    for tag in tags:
        full_at = int(round(64 * np.log2(kappa / NOMINAL_RATIOS.get(tag, 1.1))))
        fitted = []
        for q in ANCHOR_QUALITIES:
            rows = [s["units"][tag] for s in samples if s["quality"] == q and tag in s["units"]]
            if not rows:
                raise ValueError(f"no samples of level {tag} at quality {q}")
            u = np.array(rows, np.int64)
            v = log_of_units(u, kappa, full_at) / 16  # quarter octaves
            offset = np.zeros((u.shape[0], 1))
            for _ in range(rounds):
                typical = (v - offset).mean(axis=0)
                offset = np.round(np.median(v - typical, axis=1, keepdims=True))
            fitted.append((u, np.round(16 * typical).astype(np.int64), v - typical - offset))
        k = shapes.get(tag, 0)
        basis = np.zeros((0, fitted[0][0].shape[1]), np.int64)
        if k:
            residuals = np.concatenate([r for _, _, r in fitted])
            basis = np.round(256 * np.linalg.svd(residuals, full_matrices=False)[2][:k]).astype(np.int64)
        log_kl, counts = [], []
        for u, table, _ in fitted:
            pred = UnitPrediction(1, table, [1] * (2 * RESIDUAL_SYMBOLS), basis, full_at)
            hists = np.zeros((2, RESIDUAL_SYMBOLS))
            for row in u:
                offset = pred.centre(row, kappa)
                p = pred.predicted(offset, kappa, pred.shape_weights(row, offset, kappa))
                d = np.clip(row - p, -RESIDUAL_WIDTH - 1, RESIDUAL_WIDTH + 1)
                d = np.where(np.abs(d) > RESIDUAL_WIDTH, RESIDUAL_SYMBOLS - 1, d + RESIDUAL_WIDTH)
                for context in (0, 1):
                    hists[context] += np.bincount(d[(p > kappa) == context], minlength=RESIDUAL_SYMBOLS)
            c = []
            for hist in hists:
                hist = hist / hist.sum() if hist.sum() else np.full(RESIDUAL_SYMBOLS, 1 / RESIDUAL_SYMBOLS)
                c.extend(np.maximum(1, np.round(hist * _COUNT_TOTAL)).astype(int))
            log_kl.append(tuple(int(x) for x in table))
            counts.append(tuple(int(x) for x in c))
        levels[tag] = LevelTable(tuple(log_kl), tuple(counts), tuple(tuple(int(x) for x in b) for b in basis),
                                 full_at)
    images = len({s.get("image") for s in samples})
    return PlanPrior(model, weights_sha256, kappa, levels, images)


def _append_rows(lines: list[str], name: str, rows, per_line: int) -> None:
    """One table of integer rows as source lines, ``per_line`` values to a line."""
    lines.append(f"                {json.dumps(name)}: [")
    for row in rows:
        lines.append("                    [")
        for i in range(0, len(row), per_line):
            lines.append("                        " + ", ".join(str(v) for v in row[i:i + per_line]) + ",")
        lines.append("                    ],")
    lines.append("                ],")


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
            lines.append(f"                \"full_at\": {table.full_at},")
            _append_rows(lines, "log_kl", table.log_kl, 16)
            _append_rows(lines, "counts", table.counts, 22)
            if table.shapes:
                _append_rows(lines, "shapes", table.shapes, 16)
            lines.append("            },")
        lines.append("        },")
        lines.append("    },")
    lines.append("]")
    return "\n".join(lines) + "\n"
