"""The MoE-lens SMOKE numbers quoted in README.md and docs/lens.md are what `python -m vapt lens --smoke` prints.

The quote names the platform it was measured on. There every number must agree to its last printed digits. On
another CPU float32 sums round in another order and eight epochs of SGD carry that far (top-1 moves by points,
distinct-prompt counts of static prompts by up to about one), so there the words must agree and the structure the
docs state must hold in both the quote and the fresh run: VPT-Deep's prompt experts are constants, no method's
prompts depend on the input before the first block, VAPT keeps one distinct prompt per adaptive block, and VAPT's
adaptive prompts depend on the input more than VPT-Shallow's do in the same block.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vapt.report.lens_command import SMOKE_BEGIN, SMOKE_END, main, smoke_summary

REPO = Path(__file__).parents[2]
NUMBER = re.compile(r"-?\d+(?:\.(\d+))?(?:e([+-]?\d+))?")
PLATFORM = re.compile(r"^Measured on (.+?), one thread\.", re.MULTILINE)
SCORES = re.compile(r"test top-1 [^.]*\d\.\d, [^.]*\d\.\d, [^.]*\d\.\d\.")


def quoted_block(path: Path) -> str:
    """The text between the smoke-lens markers of a document (exactly one such block)."""
    text = path.read_text(encoding="utf-8")
    assert text.count(SMOKE_BEGIN) == 1 and text.count(SMOKE_END) == 1, path
    return text.split(SMOKE_BEGIN, 1)[1].split(SMOKE_END, 1)[0].strip()


def _tokens(text: str) -> tuple[list[str], list[re.Match]]:
    return NUMBER.split(text)[::3], list(NUMBER.finditer(text))


def assert_same_numbers(quoted: str, fresh: str) -> None:
    """Same words; each number within 2 units of its last printed digit.

    The runs train 8 epochs on a CPU; another CPU's vector units round sums in another order, and SGD carries
    such differences into the last printed digits, so two units of the last digit are allowed, no more.
    """
    quoted_words, quoted_numbers = _tokens(quoted)
    fresh_words, fresh_numbers = _tokens(fresh)
    assert quoted_words == fresh_words
    assert len(quoted_numbers) == len(fresh_numbers)
    for old, new in zip(quoted_numbers, fresh_numbers, strict=True):
        decimals, exponent = len(old.group(1) or ""), int(old.group(2) or 0)
        unit = 10.0 ** (exponent - decimals)
        assert abs(float(old.group(0)) - float(new.group(0))) <= 2 * unit + 1e-12, (old.group(0), new.group(0))


def platform_of(block: str) -> str:
    """The platform line's CPU description."""
    found = PLATFORM.findall(block)
    assert len(found) == 1, "the block names the platform it was measured on once"
    return found[0]


def table_rows(block: str) -> dict[tuple[str, int], list[float]]:
    """(method, layer) -> prompt mass, dependence, value dependence, distinct prompts, prompt spread."""
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[1].isdigit():
            rows[(cells[0], int(cells[1]))] = [float(c) for c in cells[2:]]
    return rows


def assert_structure(block: str) -> None:
    """What the docs say of the smoke lens, true of `block` (platform-independent)."""
    rows = table_rows(block)
    assert {method for method, _ in rows} == {"VPT-Shallow", "VPT-Deep", "VAPT"}
    for (method, layer), (_, dependence, value_dependence, distinct, spread) in rows.items():
        if method == "VPT-Deep" or layer == 0:
            assert dependence == value_dependence == 0.0, (method, layer)
        if method == "VAPT" and layer > 0:
            assert distinct == 1.0 and spread < 1e-6, (method, layer)
            assert dependence > rows[("VPT-Shallow", layer)][1], layer


def assert_same_words_and_structure(quoted: str, fresh: str) -> None:
    """Another platform: same words and counts outside the trained numbers, and the docs' structure in both."""
    def fixed_part(block: str) -> str:
        block = block.replace(platform_of(block), "PLATFORM")
        block = SCORES.sub("test top-1 SCORES.", block)
        return block.split("\n|---", 1)[0]  # the heading line and the table header; the rows are checked below

    assert fixed_part(quoted) == fixed_part(fresh)
    assert table_rows(quoted).keys() == table_rows(fresh).keys()
    assert_structure(quoted)
    assert_structure(fresh)


def test_the_comparison_catches_a_changed_number() -> None:
    text = "| VAPT | 1 | 0.082 | 0.4104 | 1.7e-09 |"
    assert_same_numbers(text, text.replace("0.082", "0.083"))
    with pytest.raises(AssertionError):
        assert_same_numbers(text, text.replace("0.082", "0.085"))
    with pytest.raises(AssertionError):
        assert_same_numbers(text, text.replace("1.7e-09", "1.7e-08"))
    with pytest.raises(AssertionError):
        assert_same_numbers(text, text.replace("VAPT", "VPT-Deep"))


def test_the_structure_check_catches_what_the_docs_would_get_wrong() -> None:
    quoted = quoted_block(REPO / "README.md")
    assert_same_words_and_structure(quoted, quoted.replace(platform_of(quoted), "torch 0.0, NONE, another CPU"))
    deep = next(line for line in quoted.splitlines() if line.startswith("| VPT-Deep | 2 |"))
    cells = deep.split(" | ")
    for broken in (quoted.replace(deep, " | ".join(cells[:3] + ["0.0100"] + cells[4:])),  # input-dependent VPT-Deep
                   quoted.replace("adapted to digits 6-9", "adapted to digits 5-9"),
                   quoted.replace("| VAPT | 2 |", "| VAPT | 7 |")):
        with pytest.raises(AssertionError):
            assert_same_words_and_structure(quoted, broken)


def test_readme_and_lens_doc_quote_the_same_block() -> None:
    assert quoted_block(REPO / "README.md") == quoted_block(REPO / "docs" / "lens.md")


@pytest.mark.slow
def test_quoted_smoke_lens_numbers_are_what_the_command_prints(smoke_cache: Path, capsys) -> None:
    fresh = smoke_summary(smoke_cache)
    for doc in (REPO / "README.md", REPO / "docs" / "lens.md"):
        quoted = quoted_block(doc)
        if platform_of(quoted) == platform_of(fresh):
            assert_same_numbers(quoted, fresh)
        else:
            assert_same_words_and_structure(quoted, fresh)
    assert main(["--smoke", "--cache", str(smoke_cache)]) == 0  # the command prints the block with its markers
    printed = capsys.readouterr().out
    assert printed.endswith(f"{SMOKE_BEGIN}\n{fresh}\n{SMOKE_END}\n")
