"""Check the README's results against the CSV files they come from.

    python tools/check_readme.py [README.md]          # exit 1 and one line per mismatch
    python tools/check_readme.py --fix [README.md]    # rewrite mismatching figures from the CSVs

A results table in the README is preceded by an HTML comment (invisible on GitHub) that names
its CSV and says how each cell is computed from it::

    <!-- table: bench/results/rd_kodak.csv
    row: codec=bbimg
    row: codec=bbimg-ideal
    col: param=1
    col: param=20
    cell: {mean(bpp):.3f} / {mean(psnr):.2f}
    -->
    | bbimg -q | 1 | 20 |
    |---|---|---|
    | bbimg | 0.108 / 26.32 | 0.187 / 28.07 |
    | bbimg-ideal | 0.109 / 26.63 | 0.187 / 28.56 |

* ``row: FILTER`` and ``col: FILTER`` select the CSV rows of a table row and column (``key=value``
  pairs joined by commas, all of which must hold; ``*`` selects every row). A cell uses the CSV
  rows that pass both filters. The first column of the table is its label and is not checked.
* A cell's template is, in order of precedence: the row's (``row: FILTER :: T1 | T2 | ...``, one
  per column), the column's (``col: FILTER :: T``), or the table's ``cell: T``. Without ``col:``
  lines the row templates alone give the columns.
* A template is a Python format string whose fields are expressions over the selected rows:
  ``mean(x)``, ``median(x)``, ``min(x)``, ``max(x)``, ``sum(x)``, ``count``, or a bare column name
  ``x`` when exactly one row is selected (``col("name")`` for a name that is not an identifier);
  arithmetic between them is allowed (``{mean(a) / mean(b):.1f}``). NaN prints as ``n/a``.

A figure in running text is checked the same way, against the text that follows the comment up
to the end of its paragraph::

    <!-- fig: bench/results/cli_check.csv image=kodim05,quality=60 :: {cli_bpp:.4f}, {cli_psnr:.2f} -->
    The CLI gives 0.9314 bpp and 30.21 dB.

Only the numbers are compared (in order, as written: the same rounding, sign included; thousands
separators and the Unicode minus are ignored), so emphasis, units and words around them are free.
Every table in the README's "Results" section must carry a ``table:`` comment.
"""
from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Problem", "check", "check_text", "fix_text", "numbers", "main"]

ROOT = Path(__file__).resolve().parents[1]
_COMMENT = re.compile(r"<!--\s*(table|fig):(.*?)-->", re.S)
#: A number as written: optional sign, thousands separators, decimals; not digits inside a word
#: ("kodim05", "v5", "x86-64").
_NUMBER = re.compile(r"(?<![A-Za-z_\d.])[-+\u2212]?(?<![A-Za-z_\d])\d+(?:,\d{3})*(?:\.\d+)?(?![A-Za-z_])")
_RESULTS_HEADING = re.compile(r"^#{1,6}\s+Results\b", re.I)


@dataclass
class Problem:
    line: int       # 1-based line of the README
    message: str

    def __str__(self) -> str:
        return f"README line {self.line}: {self.message}"


# -- numbers ----------------------------------------------------------------------------------------

def numbers(text: str) -> list[str]:
    """The numbers in ``text`` as written, normalised: Unicode minus -> '-', thousands commas dropped."""
    return [m.group(0).replace("\u2212", "-").replace(",", "") for m in _NUMBER.finditer(text)]


# -- the CSV side ----------------------------------------------------------------------------------

class _Column(list):
    """The values of one CSV column over the selected rows; formats as its single value."""

    def __init__(self, name: str, values: list):
        super().__init__(values)
        self.name = name

    def value(self) -> float:
        if len(self) != 1:
            raise ValueError(f"column {self.name!r}: {len(self)} rows selected where one was expected")
        return self[0]

    def __format__(self, spec: str) -> str:
        return format(self.value(), spec)

    def __float__(self) -> float:
        return float(self.value())

    def _binary(self, other, op):
        other = other.value() if isinstance(other, _Column) else other
        return op(self.value(), other)

    __add__ = lambda self, o: self._binary(o, lambda a, b: a + b)        # noqa: E731
    __sub__ = lambda self, o: self._binary(o, lambda a, b: a - b)        # noqa: E731
    __mul__ = lambda self, o: self._binary(o, lambda a, b: a * b)        # noqa: E731
    __truediv__ = lambda self, o: self._binary(o, lambda a, b: a / b)    # noqa: E731
    __radd__ = lambda self, o: self._binary(o, lambda a, b: b + a)       # noqa: E731
    __rsub__ = lambda self, o: self._binary(o, lambda a, b: b - a)       # noqa: E731
    __rmul__ = lambda self, o: self._binary(o, lambda a, b: b * a)       # noqa: E731
    __rtruediv__ = lambda self, o: self._binary(o, lambda a, b: b / a)   # noqa: E731


def _number(value: str):
    try:
        return float(value)
    except ValueError:
        return value


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _parse_filter(text: str) -> list[tuple[str, str]]:
    text = text.strip()
    if text in ("", "*"):
        return []
    pairs = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"bad filter {part.strip()!r} (want key=value)")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _select(rows: list[dict], *filters: list[tuple[str, str]]) -> list[dict]:
    wanted = [pair for f in filters for pair in f]
    for key, _ in wanted:
        if rows and key not in rows[0]:
            raise ValueError(f"no column {key!r} in the CSV")
    return [r for r in rows if all(r.get(k) == v for k, v in wanted)]


def _aggregate(fn):
    def call(column):
        values = [float(v) for v in column]
        if not values:
            raise ValueError(f"{fn.__name__}: no rows selected")
        return fn(values)
    call.__name__ = fn.__name__
    return call


def _mean(values):
    return math.fsum(values) / len(values)


_FUNCTIONS = {"mean": _aggregate(_mean), "median": _aggregate(statistics.median),
              "min": _aggregate(min), "max": _aggregate(max), "sum": _aggregate(math.fsum),
              "abs": abs, "round": round}


def render(template: str, rows: list[dict]) -> str:
    """``template`` with each field evaluated over ``rows`` (see the module docstring)."""
    names = {key: _Column(key, [_number(r[key]) for r in rows]) for key in (rows[0] if rows else {})}
    scope = dict(_FUNCTIONS, count=len(rows), col=lambda name: names[name], nan=math.nan)
    out = []
    for literal, expr, spec, conversion in string.Formatter().parse(template):
        out.append(literal)
        if expr is None:
            continue
        if not rows:
            raise ValueError(f"{{{expr}}}: no CSV rows selected")
        try:
            value = eval(expr, {"__builtins__": {}}, {**names, **scope})  # noqa: S307 (the README is ours)
        except NameError as exc:
            raise ValueError(f"{{{expr}}}: {exc}") from None
        if isinstance(value, _Column):
            value = value.value()
        if isinstance(value, float) and math.isnan(value):
            out.append("n/a")
        else:
            out.append(format(value, spec or ""))
    return "".join(out)


# -- the README side -------------------------------------------------------------------------------

@dataclass
class _Spec:
    kind: str                      # "table" or "fig"
    csv: Path
    line: int                      # line of the comment's end (the checked text follows it)
    end: int                       # character offset just after the comment
    rows: list = field(default_factory=list)     # (filter, [templates] | None)
    cols: list = field(default_factory=list)     # (filter, template | None)
    cell: str | None = None
    fig_filter: list = field(default_factory=list)
    fig_template: str = ""


def _parse_spec(kind: str, body: str, line: int, end: int, root: Path) -> _Spec:
    body = body.strip()
    if kind == "fig":
        head, sep, template = body.partition("::")
        if not sep:
            raise ValueError("fig: want 'CSV [FILTER] :: TEMPLATE'")
        path, _, filt = head.strip().partition(" ")
        return _Spec("fig", root / path, line, end, fig_filter=_parse_filter(filt), fig_template=template.strip())
    lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("table: no CSV named")
    spec = _Spec("table", root / lines[0], line, end)
    for ln in lines[1:]:
        key, sep, rest = ln.partition(":")
        if not sep or key not in ("row", "col", "cell"):
            raise ValueError(f"table: unknown line {ln!r} (want row:, col: or cell:)")
        if key == "cell":
            spec.cell = rest.strip()
            continue
        filt, sep, templates = rest.partition("::")
        if key == "row":
            spec.rows.append((_parse_filter(filt), [t.strip() for t in templates.split(" | ")] if sep else None))
        else:
            spec.cols.append((_parse_filter(filt), templates.strip() if sep else None))
    if not spec.rows:
        raise ValueError("table: no row: lines")
    return spec


def _split_row(line: str) -> list[str]:
    cells = line.strip()
    if cells.startswith("|"):
        cells = cells[1:]
    if cells.endswith("|"):
        cells = cells[:-1]
    return [c.strip() for c in cells.split("|")]


def _table_after(text: str, offset: int) -> tuple[int, list[int]]:
    """(number of the table's first line, the 0-based line numbers of its body rows) after ``offset``."""
    lines = text.splitlines()
    i = text.count("\n", 0, offset) + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i + 1 >= len(lines) or not lines[i].lstrip().startswith("|") or not re.match(r"^\s*\|?\s*:?-", lines[i + 1]):
        raise ValueError("no markdown table right after the comment")
    body = []
    j = i + 2
    while j < len(lines) and lines[j].lstrip().startswith("|"):
        body.append(j)
        j += 1
    return i, body


def _expected_cells(spec: _Spec, rows: list[dict]) -> list[list[str]]:
    table = []
    for row_filter, row_templates in spec.rows:
        if spec.cols:
            cells = []
            for j, (col_filter, col_template) in enumerate(spec.cols):
                template = (row_templates[j] if row_templates and j < len(row_templates)
                            else col_template or spec.cell)
                if template is None:
                    raise ValueError(f"column {j + 2}: no template (give cell: or col: FILTER :: T)")
                cells.append(render(template, _select(rows, row_filter, col_filter)))
        else:
            templates = row_templates or ([spec.cell] if spec.cell else None)
            if templates is None:
                raise ValueError("row without templates and no cell:")
            selected = _select(rows, row_filter)
            cells = [render(t, selected) for t in templates]
        table.append(cells)
    return table


def _specs(text: str, root: Path) -> tuple[list[_Spec], list[Problem]]:
    specs, problems = [], []
    for m in _COMMENT.finditer(text):
        line = text.count("\n", 0, m.end()) + 1
        try:
            specs.append(_parse_spec(m.group(1), m.group(2), line, m.end(), root))
        except ValueError as exc:
            problems.append(Problem(line, str(exc)))
    return specs, problems


def _results_tables_without_spec(text: str, specs: list[_Spec]) -> list[Problem]:
    """Tables in the Results section that no table: comment precedes."""
    lines = text.splitlines()
    covered = set()
    for spec in specs:
        if spec.kind == "table":
            try:
                covered.add(_table_after(text, spec.end)[0])
            except ValueError:
                pass
    problems, in_results, i = [], False, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            if _RESULTS_HEADING.match(line):
                in_results, results_level = True, level
            elif in_results and level <= results_level:
                in_results = False
        if (in_results and line.lstrip().startswith("|") and i + 1 < len(lines)
                and re.match(r"^\s*\|?\s*:?-", lines[i + 1])):
            if i not in covered:
                problems.append(Problem(i + 1, "results table without a '<!-- table: CSV ... -->' comment"))
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                i += 1
            continue
        i += 1
    return problems


def _walk(text: str, root: Path, fix: bool) -> tuple[list[Problem], str]:
    """Check (and with ``fix`` rewrite) every spec'd table and figure; returns (problems, new text)."""
    specs, problems = _specs(text, root)
    lines = text.splitlines(keepends=True)
    csvs: dict[Path, list[dict]] = {}
    for spec in specs:
        try:
            if spec.csv not in csvs:
                if not spec.csv.is_file():
                    raise ValueError(f"{spec.csv.relative_to(root) if spec.csv.is_relative_to(root) else spec.csv}: no such CSV")
                csvs[spec.csv] = _read_csv(spec.csv)
            rows = csvs[spec.csv]
            if spec.kind == "table":
                problems += _check_table(spec, rows, text, lines, fix)
            else:
                problems += _check_fig(spec, rows, text, lines, fix)
        except (ValueError, KeyError, ZeroDivisionError, TypeError, SyntaxError) as exc:
            problems.append(Problem(spec.line, f"{spec.csv.name}: {exc}"))
    problems += _results_tables_without_spec(text, specs)
    return sorted(problems, key=lambda p: p.line), "".join(lines)


def _styled(old: str, new: str) -> str:
    """``new`` written in the style of ``old``: its minus sign and thousands separators."""
    if old.startswith("\u2212") and new.startswith("-"):
        new = "\u2212" + new[1:]
    if "," in old and "," not in new:
        sign = new[0] if new[0] in "+-\u2212" else ""
        whole, dot, frac = new[len(sign):].partition(".")
        new = sign + f"{int(whole):,}" + dot + frac
    return new


def _replace_numbers(cell: str, wanted: list[str]) -> str:
    it = iter(wanted)
    return _NUMBER.sub(lambda m: _styled(m.group(0), next(it, m.group(0))), cell)


def _replace_numbers_first(text: str, wanted: list[str]) -> str:
    """Replace the first ``len(wanted)`` numbers of ``text``."""
    return _NUMBER.sub(lambda m, it=iter(wanted): _styled(m.group(0), next(it)), text, count=len(wanted))


def _check_table(spec: _Spec, rows: list[dict], text: str, lines: list[str], fix: bool) -> list[Problem]:
    expected = _expected_cells(spec, rows)
    _, body = _table_after(text, spec.end)
    name = spec.csv.name
    if len(body) != len(expected):
        return [Problem(spec.line + 1, f"table has {len(body)} rows, {name} spec has {len(expected)}")]
    problems = []
    for line_no, want_cells in zip(body, expected):
        cells = _split_row(lines[line_no])
        if len(cells) - 1 != len(want_cells):
            problems.append(Problem(line_no + 1, f"{len(cells) - 1} value columns, spec has {len(want_cells)}"))
            continue
        changed = False
        for j, (have, want) in enumerate(zip(cells[1:], want_cells)):
            if numbers(have) != numbers(want):
                problems.append(Problem(line_no + 1, f"{cells[0]!r}, column {j + 2}: README has {have!r}, "
                                                     f"{name} gives {want!r}"))
                if fix and len(_NUMBER.findall(have)) == len(numbers(want)):
                    cells[j + 1] = _replace_numbers(have, _NUMBER.findall(want))
                    changed = True
        if changed:
            newline = "\n" if lines[line_no].endswith("\n") else ""
            lines[line_no] = "| " + " | ".join(cells) + " |" + newline
    return problems


def _check_fig(spec: _Spec, rows: list[dict], text: str, lines: list[str], fix: bool) -> list[Problem]:
    want_text = render(spec.fig_template, _select(rows, spec.fig_filter))
    want = numbers(want_text)
    rest = text[spec.end:]
    stop = re.search(r"\n\s*\n|<!--", rest)
    following = rest[:stop.start()] if stop else rest
    have = numbers(following)[:len(want)]
    if have == want:
        return []
    problem = Problem(spec.line, f"figure from {spec.csv.name}: README has {' '.join(have) or 'nothing'}, "
                                 f"{spec.csv.name} gives {' '.join(want)} ({want_text!r})")
    if fix and len(have) == len(want):
        # rewrite the first len(want) numbers after the comment, wherever they sit in the paragraph
        start_line = text.count("\n", 0, spec.end)
        offset_in_line = spec.end - (text.rfind("\n", 0, spec.end) + 1)
        remaining = list(_NUMBER.findall(want_text))
        k = start_line
        while remaining and k < len(lines):
            head, tail = (lines[k][:offset_in_line], lines[k][offset_in_line:]) if k == start_line else ("", lines[k])
            count = min(len(remaining), len(_NUMBER.findall(tail)))
            tail = _replace_numbers_first(tail, remaining[:count])
            lines[k] = head + tail
            remaining = remaining[count:]
            k += 1
    return [problem]


# -- entry points ----------------------------------------------------------------------------------

def check_text(text: str, root: Path = ROOT) -> list[Problem]:
    """Problems of README ``text`` whose CSV paths are relative to ``root`` (empty: all figures match)."""
    return _walk(text, root, fix=False)[0]


def fix_text(text: str, root: Path = ROOT) -> tuple[str, list[Problem]]:
    """``text`` with every mismatching figure rewritten from its CSV (where the count of numbers
    agrees), and the problems found before the rewrite."""
    problems, new = _walk(text, root, fix=True)
    return new, problems


def check(readme: Path | str = ROOT / "README.md", root: Path | None = None) -> list[Problem]:
    """Problems of the README file ``readme`` (CSV paths relative to ``root``, default its folder)."""
    readme = Path(readme)
    return check_text(readme.read_text(encoding="utf-8"), root or readme.resolve().parent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("readme", nargs="?", type=Path, default=ROOT / "README.md")
    parser.add_argument("--root", type=Path, default=None, help="folder the CSV paths are relative to "
                                                                 "(default: the README's)")
    parser.add_argument("--fix", action="store_true", help="rewrite mismatching figures from the CSVs")
    args = parser.parse_args(argv)
    root = args.root or args.readme.resolve().parent
    text = args.readme.read_text(encoding="utf-8")
    if args.fix:
        new, problems = fix_text(text, root)
        if new != text:
            args.readme.write_text(new, encoding="utf-8")
        remaining = check_text(new, root)
        for p in problems:
            print(f"{'fixed' if not any(r.line == p.line for r in remaining) else 'left'}: {p}")
        return 1 if remaining else 0
    problems = check_text(text, root)
    for p in problems:
        print(p, file=sys.stderr)
    specs, _ = _specs(text, root)
    if not problems:
        print(f"{args.readme}: {sum(s.kind == 'table' for s in specs)} tables and "
              f"{sum(s.kind == 'fig' for s in specs)} figures match their CSVs")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
