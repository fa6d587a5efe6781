"""The page shell shared by the run report and the comparison report.

Assembled with ``html.escape`` rather than a template engine: the pages are a handful of
sections built by small functions, Jinja2 is not one of the project's declared
dependencies (it only arrives with torch), and escaping at the one place where text
enters markup (``esc``) is easy to check. Every page is one file: the stylesheet is
inlined, there is no script at all, and a Content-Security-Policy forbids the browser to
fetch anything, so a report opens the same offline, as a CI artefact or in a mail.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Iterable, Sequence

from reports.svg import esc

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


STYLE_FILE = Path(__file__).with_name("style.css")  # shipped as package data (pyproject.toml)


def stylesheet() -> str:
    # By path, not importlib.resources: an editable install can present `reports` as a
    # namespace package outside the repository, where resources.files() fails.
    return STYLE_FILE.read_text(encoding="utf-8")


def document(title: str, body: Iterable[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<meta name=\"generator\" content=\"chaosloco\"><title>{esc(title)}</title>"
        f"<style>{stylesheet()}</style></head>\n<body><main>\n" + "\n".join(body) +
        f"\n<footer>rendered by chaosloco at {esc(_now())} · one self-contained file, no network</footer>"
        "\n</main></body></html>\n")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def section(section_id: str, title: str, explain: str | None, *content: str) -> str:
    head = f'<h2>{esc(title)}</h2>' + (f'<p class="explain">{esc(explain)}</p>' if explain else "")
    return f'<section id="{esc(section_id)}">{head}' + "".join(content) + "</section>"


def chart_title(text: str) -> str:
    return f'<h3 class="chart-title">{esc(text)}</h3>'


def table(headers: Sequence[tuple[str, str]], rows: Iterable[str], *, cls: str) -> str:
    """headers: (text, css class); rows: ready-made <tr> markup."""
    head = "".join(f'<th class="{c}">{esc(h)}</th>' for h, c in headers)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>' + "".join(rows) + "</tbody></table>"


def cell(text: str, cls: str = "") -> str:
    return f'<td class="{cls}">{esc(text)}</td>' if cls else f"<td>{esc(text)}</td>"


def pill(verdict: str) -> str:
    return f'<span class="pill {verdict}">{esc(verdict.upper())}</span>'


def write_atomically(path: Path, text: str) -> Path:
    """Readers (a CI artefact upload, a browser refresh) never see half a report."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
