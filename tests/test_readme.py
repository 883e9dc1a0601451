"""The README's results match the CSVs they name (tools/check_readme.py), and the checker notices
an edited figure."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_readme  # noqa: E402

README = ROOT / "README.md"


def test_readme_figures_match_their_csvs():
    problems = check_readme.check(README)
    assert problems == [], "\n".join(map(str, problems))


def test_readme_has_checked_tables_and_figures():
    specs, problems = check_readme._specs(README.read_text(encoding="utf-8"), ROOT)
    assert problems == []
    assert sum(s.kind == "table" for s in specs) >= 3
    assert sum(s.kind == "fig" for s in specs) >= 1


def _tamper_first_table_figure(text: str) -> str:
    """Change one digit of the first number in the body of the first checked table."""
    start = text.index("<!-- table:")
    lines = text[start:].splitlines(keepends=True)
    body = [i for i, ln in enumerate(lines) if ln.startswith("|")][2]   # header, separator, first body row
    cells = lines[body].split("|")
    cell = cells[2]
    digit = next(i for i, ch in enumerate(cell) if ch.isdigit() and ch not in "0")
    cells[2] = cell[:digit] + str((int(cell[digit]) % 9) + 1 if cell[digit] != "9" else 1) + cell[digit + 1:]
    assert cells[2] != cell
    lines[body] = "|".join(cells)
    return text[:start] + "".join(lines)


def test_tampered_table_figure_fails(tmp_path):
    tampered = tmp_path / "README.md"
    tampered.write_text(_tamper_first_table_figure(README.read_text(encoding="utf-8")), encoding="utf-8")
    problems = check_readme.check(tampered, root=ROOT)
    assert len(problems) == 1 and "column 2" in problems[0].message
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "check_readme.py"), str(tampered), "--root", str(ROOT)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "README line" in run.stderr


def test_tampered_running_text_figure_fails():
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- fig:")
    end = text.index("-->", start) + 3
    following = check_readme.numbers(text[end:end + 200])[0]
    at = text.index(following, end)
    tampered = text[:at] + following[:-1] + str((int(following[-1]) + 1) % 10) + text[at + len(following):]
    problems = check_readme.check_text(tampered, ROOT)
    assert len(problems) == 1 and "figure from" in problems[0].message


def test_fix_restores_a_tampered_copy():
    text = README.read_text(encoding="utf-8")
    fixed, problems = check_readme.fix_text(_tamper_first_table_figure(text), ROOT)
    assert len(problems) == 1
    assert fixed == text


# -- the checker on a README of its own --------------------------------------------------------------

CSV = """codec,param,image,bpp,psnr
a,1,x,0.1004,30.004
a,1,y,0.2008,31.016
a,2,x,0.5,-2.5
b,1,x,1234.5,nan
"""


def _readme(table: str) -> str:
    return f"# t\n\n## Results\n\n{table}\n\nText after.\n"


@pytest.fixture
def root(tmp_path):
    (tmp_path / "r.csv").write_text(CSV)
    return tmp_path


def test_means_and_rounding(root):
    table = """<!-- table: r.csv
row: codec=a
col: param=1
col: param=2
cell: {mean(bpp):.3f} / {mean(psnr):.2f}
-->
| codec | 1 | 2 |
|---|---|---|
| a | **0.151** / 30.51 dB | 0.500 / −2.50 |"""
    assert check_readme.check_text(_readme(table), root) == []
    wrong = table.replace("30.51", "30.50")
    problems = check_readme.check_text(_readme(wrong), root)
    assert [p.line for p in problems] == [13]   # the row of the table


def test_row_templates_single_values_nan_and_separators(root):
    table = """<!-- table: r.csv
row: codec=b :: {bpp:,.1f} | {psnr:.2f} | {count}
row: codec=a,param=1 :: {max(bpp):.4f} | {min(psnr):.3f} | {count}
-->
| | size | psnr | n |
|---|---|---|---|
| b | 1,234.5 | n/a | 1 |
| a | 0.2008 | 30.004 | 2 |"""
    assert check_readme.check_text(_readme(table), root) == []


def test_a_single_value_with_several_rows_selected_is_an_error(root):
    table = """<!-- table: r.csv
row: codec=a :: {bpp:.3f}
-->
| | bpp |
|---|---|
| a | 0.100 |"""
    problems = check_readme.check_text(_readme(table), root)
    assert len(problems) == 1 and "one was expected" in problems[0].message


def test_results_table_without_a_spec_fails(root):
    problems = check_readme.check_text(_readme("| a | b |\n|---|---|\n| 1 | 2 |"), root)
    assert len(problems) == 1 and "without" in problems[0].message
    # tables outside the Results section are not results
    assert check_readme.check_text("# t\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", root) == []


def test_missing_csv_and_wrong_shape_fail(root):
    missing = "<!-- table: nope.csv\nrow: *\ncell: {count}\n-->\n| a | n |\n|---|---|\n| x | 4 |"
    assert "no such CSV" in check_readme.check_text(_readme(missing), root)[0].message
    extra_row = "<!-- table: r.csv\nrow: *  :: {count}\n-->\n| a | n |\n|---|---|\n| x | 4 |\n| y | 4 |"
    assert "rows" in check_readme.check_text(_readme(extra_row), root)[0].message


def test_numbers_ignore_digits_inside_words():
    assert check_readme.numbers("kodim05 at 0.9314 bpp, −6.0%, 2,310 MiB, v5") == ["0.9314", "-6.0", "2310"]
