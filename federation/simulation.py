"""Simulation mode: the same ServerApp and ClientApp under Flower's Ray-backed simulation engine.

``simulate(overrides, num_brands)`` runs ``flwr.simulation.run_simulation`` with small Ray
resources (the machine has 2 cores) and returns the release record the ServerApp wrote; given the
brands' gateways it also publishes the release to them (audit logs, anchor on chain).
``flwr run`` against a simulation SuperLink runs the same apps from ``pyproject.toml``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from federation.client_app import build_client_app
from federation.releases import latest_release, load_release
from federation.server_app import build_server_app


def backend_config(num_cpus: int = 2, client_cpus: float = 1.0) -> dict[str, Any]:
    return {
        "client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": num_cpus, "num_gpus": 0, "include_dashboard": False, "log_to_driver": False},
    }


def simulate(
    overrides: dict[str, Any],
    num_brands: int,
    *,
    release_dir: str | os.PathLike[str] | None = None,
    num_cpus: int = 2,
    client_cpus: float = 1.0,
    verbose: bool = False,
    gateways: dict[str, Any] | None = None,
    wire_tap: Any = None,
) -> dict[str, Any]:
    """Run one federated training in simulation; returns the release record (plus ``_path``, and
    ``_published``, the per-brand audit entry and anchor, when ``gateways`` are given). ``wire_tap``
    sees every reply the operator receives (``server_app.build_server_app``)."""
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPUs here; silences Ray's warning about it
    rdir = Path(release_dir) if release_dir is not None else Path(tempfile.mkdtemp(prefix="alliance-release-"))
    ov = dict(overrides)
    ov["release-dir"] = str(rdir)
    from flwr.simulation import run_simulation

    before = {p.name for p in rdir.glob("*.release.json")} if rdir.exists() else set()
    t0 = time.monotonic()
    run_simulation(
        server_app=build_server_app(ov, gateways=gateways, wire_tap=wire_tap),
        client_app=build_client_app(ov),
        num_supernodes=num_brands,
        backend_config=backend_config(num_cpus, client_cpus),  # type: ignore[arg-type]
        verbose_logging=verbose,
    )
    wall = time.monotonic() - t0
    new = [p for p in rdir.glob("*.release.json") if p.name not in before]
    if not new:
        raise RuntimeError("the simulation wrote no release record (the ServerApp failed; see the log)")
    path = max(new, key=lambda p: p.stat().st_mtime)
    rec = load_release(path)
    rec["_path"] = str(path)
    rec["_sim_wall_s"] = wall
    published = path.with_name(f"{rec['model_version']}.published.json")
    if gateways:
        if not published.exists():
            raise RuntimeError("the release was written but not published to the gateways (see the log)")
        rec["_published"] = json.loads(published.read_text())
    return rec


__all__ = ["backend_config", "latest_release", "simulate"]
