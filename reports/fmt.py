"""Number and text formatting shared by the HTML and SVG writers.

Every formatter accepts whatever result.json holds (a number, null, or something a
broken writer put there) and returns plain text; escaping is the caller's job, done once
at the point where text enters markup.
"""
from __future__ import annotations

import math
from typing import Any

DASH = "—"


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def pct(value: Any, digits: int = 1) -> str:
    v = number(value)
    return DASH if v is None else f"{v * 100:.{digits}f}%"


def seconds(value: Any) -> str:
    v = number(value)
    if v is None:
        return DASH
    if abs(v) < 10:
        return f"{v:.2f} s"
    if abs(v) < 120:
        return f"{v:.1f} s"
    m, s = divmod(int(round(v)), 60)
    return f"{m} min {s:02d} s"


def clock(t: float) -> str:
    """Axis label for an offset in seconds: 45s, 2m, 2m30s."""
    t = round(t)
    if t < 60:
        return f"{t}s"
    m, s = divmod(t, 60)
    return f"{m}m" if s == 0 else f"{m}m{s:02d}s"


def si(value: Any, digits: int = 3) -> str:
    """1234567 -> 1.23M (token counts)."""
    v = number(value)
    if v is None:
        return DASH
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.{digits}g}{suffix}"
    return f"{v:.{digits}g}"


def nbytes(value: Any) -> str:
    v = number(value)
    if v is None:
        return DASH
    for div, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(v) >= div:
            return f"{v / div:.3g} {suffix}"
    return f"{v:.0f} B"


def plain(value: Any, limit: int = 200) -> str:
    """Any JSON value as short text (for expected/actual cells)."""
    if value is None:
        return DASH
    return truncate(_short(value), limit)


def _short(value: Any) -> str:
    """Floats to 4 significant digits, also inside lists and objects (a measured
    1.9900000095367432 s reads as 1.99)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def truncate(text: str, limit: int) -> str:
    """Shortens *before* escaping, so an entity is never cut in half."""
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"
