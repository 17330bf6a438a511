"""mkdocs hook: the CLI reference page is generated from ``twinsim``'s own parser at build time.

The page holds a marker; every command and sub-command's ``--help`` replaces it, so the reference
cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- cli-reference -->"


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # aliases share a parser
                    seen.add(id(sub))
                    out.append((name, sub))
    return out


def _render(parser: argparse.ArgumentParser, words: list[str], depth: int) -> list[str]:
    lines = [f"{'#' * min(depth, 4)} `{' '.join(words)}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in _subcommands(parser):
        lines += _render(sub, [*words, name], depth + 1)
    return lines


def cli_reference_markdown() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; the page must not depend on it
    from twinsim.cli import build_parser

    parser = build_parser()
    return "\n".join(_render(parser, ["twinsim"], 2))


def on_page_markdown(markdown: str, page: object, config: object, files: object) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference_markdown())
