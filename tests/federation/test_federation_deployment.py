"""Deployment mode: a real flower-superlink and one flower-supernode per brand on loopback.

Every process is started in its own session by :class:`federation.deployment.LocalDeployment`
and stopped (with its children) when the test ends, pass or fail.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest

from federation.deployment import LocalDeployment, make_app_dir
from federation.releases import load_release, verify_release

pytestmark = pytest.mark.slow


def _pump(proc, lines: queue.Queue) -> threading.Thread:  # type: ignore[no-untyped-def]
    def run() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _wait_run(proc, lines: queue.Queue, timeout: float, on_line=None) -> str:  # type: ignore[no-untyped-def]
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line is None:
            break
        out.append(line)
        if on_line is not None:
            on_line(line)
    else:
        raise TimeoutError("run did not finish:\n" + "".join(out[-80:]))
    proc.wait(timeout=30)
    return "".join(out)


def test_superlink_and_three_supernodes_complete_three_rounds(tmp_path: Path) -> None:
    app = make_app_dir(tmp_path / "app")
    rel = tmp_path / "releases"
    with LocalDeployment(3, tmp_path / "deploy") as dep:
        proc = dep.submit(app, {"num-rounds": 3, "min-brands": 3, "release-dir": str(rel), "seed": 4})
        lines: queue.Queue = queue.Queue()
        _pump(proc, lines)
        try:
            out = _wait_run(proc, lines, timeout=420)
        finally:
            LocalDeployment.kill(proc)
        assert proc.returncode == 0, out[-3000:] + dep.logs()
        records = list(rel.glob("*.release.json"))
        assert len(records) == 1, out[-3000:] + dep.logs()
        rec = load_release(records[0])
        assert verify_release(records[0])
        assert rec["rounds_completed"] == 3
        assert rec["participating_brands"] == ["brand-0", "brand-1", "brand-2"]
        assert rec["final_metrics"]["auc_pooled"] > 0.75
        assert all(p.poll() is None for p in dep.supernodes)
    assert all(p.poll() is not None for p in [*dep.supernodes, dep.superlink])


def test_a_supernode_killed_mid_run_does_not_stop_the_run(tmp_path: Path) -> None:
    app = make_app_dir(tmp_path / "app")
    rel = tmp_path / "releases"
    with LocalDeployment(3, tmp_path / "deploy") as dep:
        proc = dep.submit(
            app,
            {"num-rounds": 3, "min-brands": 2, "wait-brands": 3, "round-timeout": 25.0, "release-dir": str(rel), "seed": 4},
        )
        lines: queue.Queue = queue.Queue()
        _pump(proc, lines)
        killed: list[float] = []

        def on_line(line: str) -> None:
            if not killed and "[ROUND 2/3]" in line:
                LocalDeployment.kill(dep.supernodes[2])
                killed.append(time.monotonic())

        try:
            out = _wait_run(proc, lines, timeout=480, on_line=on_line)
        finally:
            LocalDeployment.kill(proc)
        assert killed, "the run never reached round 2:\n" + out[-3000:]
        assert dep.supernodes[2].poll() is not None
        assert proc.returncode == 0, out[-3000:] + dep.logs()
        records = list(rel.glob("*.release.json"))
        assert len(records) == 1, out[-3000:] + dep.logs()
        rec = load_release(records[0])
        assert rec["rounds_completed"] == 3
        by_round = {r["round"]: r for r in rec["metrics_per_round"]}
        assert sorted(by_round[1]["train_brands"]) == ["brand-0", "brand-1", "brand-2"]
        assert sorted(by_round[3]["train_brands"]) == ["brand-0", "brand-1"]
        assert rec["final_metrics"]["auc_pooled"] > 0.7


def test_flwr_run_against_a_simulation_superlink(tmp_path: Path) -> None:
    """`flwr run` of the app on a local simulation SuperLink (Ray backend), 3 virtual brands."""
    app = make_app_dir(tmp_path / "app")
    rel = tmp_path / "releases"
    with LocalDeployment(3, tmp_path / "deploy", simulation=True) as dep:
        proc = dep.submit(app, {"num-rounds": 2, "release-dir": str(rel), "data-source": "telco", "seed": 4})
        lines: queue.Queue = queue.Queue()
        _pump(proc, lines)
        try:
            out = _wait_run(proc, lines, timeout=300)
        finally:
            LocalDeployment.kill(proc)
        records = list(rel.glob("*.release.json"))
        assert proc.returncode == 0 and len(records) == 1, out[-3000:] + dep.logs()
        rec = load_release(records[0])
        assert rec["rounds_completed"] == 2 and rec["data_source"] == "telco"
        assert rec["participating_brands"] == ["telco-bank-transfer", "telco-electronic-check", "telco-mailed-check"]
        assert rec["final_metrics"]["auc_pooled"] > 0.7
