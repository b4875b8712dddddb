"""What every `python -m vapt` command's --help shares: the option formatter and the closing documentation line."""

from __future__ import annotations

import argparse

# the line every command's --help ends with
DOCS_HELP = "Documentation: docs/method.md (the method and its options), docs/protocol.md (the paper's protocol)."


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every command's --help: the description as written, and each option's default unless its help names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.option_strings and action.nargs != 0 and action.default not in (None, [], (), argparse.SUPPRESS)
        if not shown or "default" in text.lower():
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"
