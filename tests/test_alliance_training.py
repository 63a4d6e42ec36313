"""Federated training in an alliance started by `alliance up`: the trainer submits the ServerApp to
the alliance's SuperLink at its scheduled time, each brand's SuperNode reads its own gateway
database, a SuperNode killed mid-round does not stop the run (the others complete it and the
release says who took part in which round), and every brand that took part records the release:
audit log, anchored on chain with its own key, installed for its campaigns. `alliance train` runs
one at once, and is refused while another run is under way."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts.chain import free_port
from federation import population
from scripts.training import next_run
from scripts.up import load_spec
from tests.test_alliance_up import alliance, status, wait_for

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

BRANDS = {"grocery": 10, "airline": 20, "cafe": 8}  # the simulated brands' own rates


def populate(spec) -> None:
    """A year and a half of simulated history in each brand's database, written before the first
    `up` (which then admits the brands with the keys made here)."""
    from gateway.runtime import build_gateway
    from gateway.settings import GatewaySettings

    gateways = {}
    for brand in spec.brands:
        home = spec.brand_dir(brand)
        home.mkdir(parents=True, mode=0o700)
        gateways[brand.id] = build_gateway(GatewaySettings(
            brand_id=brand.id, brand_name=brand.name, keys_dir=home / "keys", database_url=spec.database_url(brand), manifest=None,
            outbox_interval_s=0, anchor_interval_s=0))
    population.populate(spec.workdir / "population", size="tiny", brands=list(BRANDS), gateways=gateways)
    for gw in gateways.values():
        gw.engine.dispose()


def test_next_run_is_the_first_daily_time_after_now():
    now = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    assert next_run(["03:00"], now) == datetime(2026, 12, 8, 3, 0, tzinfo=UTC)  # not again within the same minute
    assert next_run(["23:30", "03:01"], now) == datetime(2026, 12, 7, 3, 1, tzinfo=UTC)
    assert next_run(["01:00"], now) == datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
    assert next_run(["03:00:30"], now) == datetime(2026, 12, 7, 3, 0, 30, tzinfo=UTC)


def test_scheduled_training_survives_a_killed_supernode_and_every_brand_records_the_release(tmp_path):
    file, ports = tmp_path / "alliance.toml", [free_port() for _ in range(2 + len(BRANDS))]

    def write(at: datetime) -> None:
        file.write_text(f"""
workdir = "state"
[chain]
port = {ports[0]}
[federation]
port = {ports[1]}
[federation.training]
times = ["{at:%H:%M:%S}"]
tasks = ["churn"]
run_config = {{ num-rounds = 2, round-timeout = 90.0, as-of = "{population.TRAIN_AS_OF.isoformat()}", eval-as-of = "{population.EVAL_AS_OF.isoformat()}" }}
""" + "".join(f"""
[[brands]]
id = "{b}"
name = "{b.title()}"
rate = {rate}
port = {port}
""" for (b, rate), port in zip(BRANDS.items(), ports[2:])))

    write(datetime.now(UTC))
    spec = load_spec(file)
    populate(spec)
    at = datetime.now(UTC) + timedelta(seconds=50)  # time enough for `up` (about 25 s here)
    write(at)
    try:
        started = alliance("up", "-f", str(file))
        assert started.returncode == 0, started.stdout + started.stderr
        assert "trainer" in [p["name"] for p in status(file)["processes"]]
        log = spec.workdir / "logs" / "training.log"
        wait_for(lambda: log.exists() and "[ROUND 2/2]" in log.read_text(), (at - datetime.now(UTC)).total_seconds() + 240,
                 "the scheduled run reached its last round")
        cafe = next(p for p in json.loads((spec.workdir / "state.json").read_text())["processes"] if p["name"] == "supernode-cafe")
        os.killpg(cafe["pid"], signal.SIGKILL)
        # One run at a time: the operator's command does not wait for another, and says so.
        refused = alliance("train", "redeem", "-f", str(file))
        assert refused.returncode == 1 and "already under way" in refused.stderr
        outcome = json.loads(wait_for(lambda: (spec.workdir / "training.jsonl").exists() and (spec.workdir / "training.jsonl").read_text(),
                                      300, "the run finished"))
        record = json.loads(Path(outcome["release"]).read_text())
        by_round = {r["round"]: r for r in record["metrics_per_round"]}
        assert by_round[1]["train_brands"] == ["airline", "cafe", "grocery"]
        assert by_round[2]["train_brands"] == ["airline", "grocery"]  # cafe's node died in round 2: the others completed it
        assert record["rounds_completed"] == 2 and record["data_source"] == "gateway"
        assert next(p for p in status(file)["processes"] if p["name"] == "supernode-cafe")["restarts"] == 1

        # Every brand that took part recorded it itself: audit log, anchor on chain, installed.
        assert sorted(outcome["recorded"]) == record["participating_brands"]
        for brand in record["participating_brands"]:
            assert outcome["recorded"][brand]["tx_hash"].startswith("0x")
            assert (spec.workdir / "brands" / brand / "releases" / Path(outcome["release"]).name).exists()
            with sqlite3.connect(spec.workdir / "brands" / brand / "gateway.sqlite") as db:
                actions = [json.loads(p)["action"] for (p,) in db.execute("SELECT payload FROM audit_log ORDER BY seq")]
                trained = db.execute("SELECT COUNT(*) FROM processings WHERE kind = 'training'").fetchone()[0]
            assert actions.count("model.released") == 1 and "model-releases.anchored" in actions
            assert trained >= 1  # the SuperNode's read of consented members, recorded at the brand

        # The operator's command: a run now, recorded the same way (again by all three).
        now = alliance("train", "redeem", "--rounds", "1", "-f", str(file), timeout=600)
        assert now.returncode == 0, now.stdout + now.stderr
        redeem = json.loads(now.stdout)
        assert redeem["task"] == "redeem" and redeem["rounds_completed"] == 1 and sorted(redeem["recorded"]) == sorted(BRANDS)
    finally:
        alliance("down", "-f", str(file))


def test_the_run_config_reaches_flower_as_written():
    from flwr.common.config import parse_config_args

    from federation.config import run_config_arg
    from scripts.training import run_config

    cfg = run_config(load_spec(None), "redeem", now=datetime(2026, 12, 7, tzinfo=UTC))
    assert cfg["as-of"] == "2026-10-08T00:00:00+00:00" and cfg["eval-as-of"] == "2026-11-07T00:00:00+00:00"  # 2 and 1 label windows back
    assert parse_config_args([run_config_arg(cfg)]) == cfg
