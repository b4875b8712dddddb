"""The MoE-lens SMOKE numbers quoted in README.md and docs/lens.md are what `python -m vapt lens --smoke` prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vapt.report.lens_command import SMOKE_BEGIN, SMOKE_END, main, smoke_summary

REPO = Path(__file__).parents[2]
NUMBER = re.compile(r"-?\d+(?:\.(\d+))?(?:e([+-]?\d+))?")


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


def test_the_comparison_catches_a_changed_number() -> None:
    text = "| VAPT | 1 | 0.082 | 0.4104 | 1.7e-09 |"
    assert_same_numbers(text, text.replace("0.082", "0.083"))
    with pytest.raises(AssertionError):
        assert_same_numbers(text, text.replace("0.082", "0.085"))
    with pytest.raises(AssertionError):
        assert_same_numbers(text, text.replace("1.7e-09", "1.7e-08"))
    with pytest.raises(AssertionError):
        assert_same_numbers(text, text.replace("VAPT", "VPT-Deep"))


def test_readme_and_lens_doc_quote_the_same_block() -> None:
    assert quoted_block(REPO / "README.md") == quoted_block(REPO / "docs" / "lens.md")


@pytest.mark.slow
def test_quoted_smoke_lens_numbers_are_what_the_command_prints(smoke_cache: Path, capsys) -> None:
    fresh = smoke_summary(smoke_cache)
    for doc in (REPO / "README.md", REPO / "docs" / "lens.md"):
        assert_same_numbers(quoted_block(doc), fresh)
    assert main(["--smoke", "--cache", str(smoke_cache)]) == 0  # the command prints the block with its markers
    printed = capsys.readouterr().out
    assert printed.endswith(f"{SMOKE_BEGIN}\n{fresh}\n{SMOKE_END}\n")
