"""Federated training in a running alliance (`alliance up`).

The ServerApp is submitted to the alliance's SuperLink at set times by the supervised `trainer`
process, or at once by `alliance train`; one run at a time (a lock file). The brands' SuperNodes
read their own gateway databases: only members whose `federated_training` consent is granted at
that moment, and each brand records the read as a processing. Every brand that took part then
records the release itself, as a brand does in a deployment (`alliance gateway record-release`, run
with that brand's settings): in its audit log, anchored on chain with its own key, and installed
for its campaign targeting. The outcome of each run is appended to workdir/training.jsonl.

Training reads the freshest rows whose labels are known: features as of now − 2 × the task's label
window (90 days for churn, 30 for redeem), held-out rows as of now − 1 × (both overridable in the
alliance file, with any other run-config key of `federation.config`).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scripts.up import ENCODING, ROOT, AllianceSpec, _gateway_env, alive, read_state, tail


class TrainingError(RuntimeError):
    """A run did not produce a release, or a brand could not record it (the message says which)."""


def release_dir(spec: AllianceSpec) -> Path:
    return spec.workdir / "releases"


def run_config(spec: AllianceSpec, task: str, now: datetime | None = None) -> dict[str, Any]:
    """The run config of one scheduled run: the brands' own data, every brand awaited (a brand that
    is down is given up after the round timeout: the others complete the run), then the file's keys."""
    from federation.config import effective
    from federation.features import LABEL_DAYS, parse_as_of

    now = now or datetime.now(UTC)
    window = timedelta(days=LABEL_DAYS[task])
    brands = len(spec.brands)
    cfg = effective({
        "task": task, "data-source": "gateway", "num-rounds": 5, "min-brands": min(2, brands), "wait-brands": brands,
        "round-timeout": 120.0, "dp-epsilon": 8.0, "personal-dp-epsilon": 10.0, "secagg-num-shares": brands if brands % 2 else brands - 1,
        "secagg-threshold": max(2, brands // 2 + 1), "release-dir": str(release_dir(spec)),
        "as-of": (now - 2 * window).isoformat(), "eval-as-of": (now - window).isoformat(),
    } | spec.federation.training.run_config | {"task": task})
    for key in ("as-of", "eval-as-of"):
        try:
            parse_as_of(cfg[key])
        except (TypeError, ValueError):
            raise TrainingError(f"{key} is not an ISO 8601 time: {cfg[key]!r}") from None
    return cfg


@contextmanager
def _one_run(workdir: Path) -> Iterator[None]:
    with open(workdir / "training.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError("a training run is already under way in this alliance") from None
        yield


def flwr_env(spec: AllianceSpec) -> dict[str, str]:
    """Flower's programs on PATH, the alliance's SuperLink as the federation `alliance`."""
    bin_dir = Path(sys.executable).parent
    return {"FLWR_HOME": str(spec.workdir / "flwr"), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_TELEMETRY_ENABLED": "0",
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def train(spec: AllianceSpec, task: str, *, now: datetime | None = None, timeout_s: float = 1800) -> dict[str, Any]:
    """One federated run of `task` on the alliance's SuperLink, then the release recorded by every
    brand that took part. Returns the outcome (also appended to workdir/training.jsonl)."""
    from federation.config import run_config_arg
    from federation.deployment import make_app_dir
    from federation.releases import load_release, verify_release

    if not spec.federation.enabled:
        raise TrainingError("this alliance runs no federation ([federation] enabled = false)")
    if not alive(read_state(spec.workdir).get("supervisor"), "scripts.up"):
        raise TrainingError(f"the alliance in {spec.workdir} is not up (`alliance up` first)")
    with _one_run(spec.workdir):
        cfg = run_config(spec, task, now)
        releases = release_dir(spec)
        releases.mkdir(exist_ok=True)
        before = set(releases.glob("*.release.json"))
        app = make_app_dir(spec.workdir / "flwr" / "app")
        started = time.monotonic()
        argv = [str(Path(sys.executable).parent / "flwr"), "run", str(app), "alliance", "--stream",
                "--run-config", run_config_arg(cfg)]
        log_file = spec.workdir / "logs" / "training.log"
        with open(log_file, "ab") as log:
            try:
                subprocess.run(argv, cwd=spec.workdir, env=os.environ | flwr_env(spec), stdin=subprocess.DEVNULL,
                               stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, start_new_session=True)
            except subprocess.TimeoutExpired:
                raise TrainingError(f"the {task} run took more than {timeout_s:.0f} s: see {log_file}") from None
        made = sorted(set(releases.glob("*.release.json")) - before)
        if not made:
            raise TrainingError(f"the {task} run wrote no release:\n{tail(log_file, 12)}")
        path = made[-1]
        if not verify_release(path):
            raise TrainingError(f"{path}: the model file does not match the record")
        record = load_release(path)
        recorded = {}
        for brand in (b for b in spec.brands if b.id in record["participating_brands"]):
            # As the brand itself records it: with its own settings, keys and chain account.
            done = subprocess.run([sys.executable, "-m", "scripts.cli", "gateway", "record-release", str(path)], cwd=ROOT,
                                  env=os.environ | _gateway_env(spec, brand), capture_output=True, text=True, timeout=300)
            if done.returncode:
                raise TrainingError(f"{brand.id} could not record {record['model_version']}: {done.stderr.strip()[-500:]}")
            recorded[brand.id] = json.loads(done.stdout.strip().splitlines()[-1])
        outcome = {"task": task, "model_version": record["model_version"], "release": str(path),
                   "participating_brands": record["participating_brands"], "rounds_completed": record["rounds_completed"],
                   "final_metrics": record["final_metrics"], "recorded": recorded, "as_of": cfg["as-of"],
                   "wall_s": round(time.monotonic() - started, 1)}
        with open(spec.workdir / "training.jsonl", "a", encoding=ENCODING) as f:
            f.write(json.dumps(outcome) + "\n")
        return outcome


def next_run(times: list[str], now: datetime) -> datetime:
    """The first of the daily times (HH:MM or HH:MM:SS, UTC) after `now`."""
    candidates = []
    for hhmm in times:
        hour, minute, second = (list(map(int, hhmm.split(":"))) + [0])[:3]
        at = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
        candidates.append(at if at > now else at + timedelta(days=1))
    return min(candidates)


def follow(spec: AllianceSpec) -> None:
    """The `trainer` process: every task at each scheduled time, until stopped. A failed run is
    logged and tried again at the next time."""
    schedule = spec.federation.training
    while True:
        at = next_run(schedule.times, datetime.now(UTC))
        print(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S} next training at {at.isoformat()}", flush=True)
        while (wait := (at - datetime.now(UTC)).total_seconds()) > 0:
            time.sleep(min(wait, 60))
        for task in schedule.tasks:
            try:
                outcome = train(spec, task)
                print(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S} {task}: {outcome['model_version']} recorded by "
                      f"{', '.join(outcome['recorded'])}", flush=True)
            except TrainingError as exc:
                print(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S} {task}: {exc}", flush=True)


if __name__ == "__main__":  # the trainer: python -m scripts.training <workdir>/alliance.json
    follow(AllianceSpec.model_validate_json(Path(sys.argv[1]).read_text(encoding=ENCODING)))
