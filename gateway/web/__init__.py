"""The browser side of the alliance, one small design system for its three faces: the member wallet
and the operator console (served by each gateway) and the auditor console (settlement/console.py).

Server-rendered Jinja2 pages on one layout (templates/layout.html) and one stylesheet
(static/alliance.css); the only JavaScript is the wallet's, bundled at development time into a
committed asset. The same response headers everywhere: no framing, no caching, a strict CSP.
"""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"

HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'; "
                                      "form-action 'self'; base-uri 'none'"}


def environment(*template_dirs: Path) -> Environment:
    """A Jinja environment with the given template folders first, then the shared layout."""
    env = Environment(loader=ChoiceLoader([FileSystemLoader([*template_dirs, TEMPLATES])]), autoescape=select_autoescape(["html"]))
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, default=str)
    env.filters["num"] = lambda v: "" if v is None else f"{v:,}"
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"
    env.filters["when"] = lambda v: "" if v is None else v.strftime("%Y-%m-%d %H:%M UTC")
    return env


def bars(series: list[tuple[str, int]], label: str, width: int = 640, height: int = 160) -> dict:
    """A bar chart's geometry (rendered as inline SVG by templates/_bars.html): one bar per point."""
    top = max((v for _, v in series), default=0) or 1
    step = width / max(1, len(series))
    return {"label": label, "width": width, "height": height, "total": sum(v for _, v in series),
            "bars": [{"x": round(i * step, 1), "w": round(max(1.0, step - 2), 1), "h": round(height * v / top, 1),
                      "y": round(height - height * v / top, 1), "key": k, "value": v} for i, (k, v) in enumerate(series)]}
