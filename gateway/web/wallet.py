"""The member web wallet at /wallet: one page and its committed script (static/wallet.js, built
from src/ with esbuild; tests/gateway/test_gateway_wallet_web.py rebuilds it and checks the two
match). The page may call this gateway and its alliance peers (GATEWAY_ALLIANCE_PEERS), nothing else."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from . import HEADERS, TEMPLATES, environment

router = APIRouter(include_in_schema=False)
env = environment(TEMPLATES)


@router.get("/wallet", response_class=HTMLResponse)
def wallet(request: Request) -> HTMLResponse:
    s = request.app.state.gateway.settings
    csp = HEADERS["Content-Security-Policy"] + "; connect-src 'self' " + " ".join(s.alliance_peers)
    html = env.get_template("wallet.html").render(product=f"{s.brand_name} · alliance wallet")
    return HTMLResponse(html, headers=HEADERS | {"Content-Security-Policy": csp.strip()})
