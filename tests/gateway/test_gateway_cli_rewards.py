"""`alliance gateway reward ...` and `alliance gateway cause ...` on the database a gateway serves: what
the CLI defines members order through the API, what they order the CLI lists and fulfils; a bad value
or a refused move is a message and exit status 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import enrol, start_local_brand

ROOT = Path(__file__).resolve().parents[2]
SINCE = "2020-01-01T00:00:00Z"  # the tests' clock is not the CLI's: its default, now, would be in the future


@pytest.fixture
def shop(database_url, tmp_path, clock):
    b = start_local_brand(tmp_path, "shop", database_url, clock=clock, member_token_days=1000)
    s = b.gw.settings
    env = {"GATEWAY_BRAND_ID": s.brand_id, "GATEWAY_BRAND_NAME": s.brand_name, "GATEWAY_DATABASE_URL": s.database_url,
           "GATEWAY_KEYS_DIR": str(s.keys_dir), "GATEWAY_NOTIFICATIONS_DIR": str(s.notifications_dir)}
    yield b, env
    b.close()


def cli(env: dict, *args: str, status: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "scripts.cli", "gateway", *args], cwd=ROOT, env=os.environ | env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == status, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_the_catalogue_from_the_cli(shop):
    brand, env = shop
    defined = json.loads(cli(env, "reward", "define", "coffee-coupon", "--kind", "coupon", "--name", "Coffee", "--points-price", "40",
                             "--coupon-value-minor", "300", "--coupon-min-spend-minor", "1000", "--stock", "5", "--available-from", SINCE).stdout)
    assert (defined["version"], defined["coupon_valid_days"], defined["stock"]) == (1, 7, 5)
    again = json.loads(cli(env, "reward", "define", "coffee-coupon", "--kind", "coupon", "--name", "Coffee", "--points-price", "35",
                           "--coupon-value-minor", "300", "--stock", "5", "--available-from", SINCE).stdout)
    assert (again["version"], again["points_price"]) == (2, 35)
    assert [r["code"] for r in json.loads(cli(env, "reward", "list").stdout)] == ["coffee-coupon"]

    m = enrol(brand, "+8613800000401")
    offered = brand.client.get("/v1/rewards", headers=m["auth"]).json()
    assert [(r["code"], r["points_price"], r["orderable"]) for r in offered] == [("coffee-coupon", 35, True)]
    order = brand.client.post("/v1/me/reward-orders", json={"reward": "coffee-coupon"}, headers=m["auth"] | {"Idempotency-Key": "k"}).json()
    listed = json.loads(cli(env, "reward", "orders", "--status", "issued").stdout)
    assert [(o["order_ref"], o["coupon"]) for o in listed] == [(order["order_ref"], None)]  # the code stays the member's
    assert "is cancelled" in cli(env, "reward", "fulfil", order["order_ref"], "cancelled").stdout
    assert brand.client.get("/v1/me/balance", headers=m["auth"]).json()["points"] == 100  # points back

    # Refusals: a message, exit 2.
    assert "points_price" in cli(env, "reward", "define", "x-1", "--kind", "good", "--name", "X", "--points-price", "0", status=2).stderr
    assert "a reward keeps its kind" in cli(env, "reward", "define", "coffee-coupon", "--kind", "good", "--name", "X",
                                            "--points-price", "5", status=2).stderr
    assert "pattern" in cli(env, "reward", "define", "Bad Code", "--kind", "good", "--name", "X", "--points-price", "5", status=2).stderr
    assert "cannot become" in cli(env, "reward", "fulfil", order["order_ref"], "shipped", status=2).stderr
    assert "no such order" in cli(env, "reward", "fulfil", "00000000-0000-0000-0000-000000000000", "shipped", status=2).stderr
    assert "shipped, delivered or cancelled" in cli(env, "reward", "fulfil", order["order_ref"], "stolen", status=2).stderr


def test_causes_from_the_cli(shop):
    brand, env = shop
    cause = json.loads(cli(env, "cause", "define", "trees", "--name", "Plant trees", "--description", "10 points, one sapling").stdout)
    assert (cause["code"], cause["version"], cause["active"]) == ("trees", 1, True)
    assert [c["code"] for c in brand.client.get("/v1/causes", headers=brand.as_("auditor")).json()] == ["trees"]
    cli(env, "cause", "define", "trees", "--name", "Plant trees", "--inactive")
    assert [(c["code"], c["active"], c["version"]) for c in json.loads(cli(env, "cause", "list").stdout)] == [("trees", False, 2)]
    assert "name" in cli(env, "cause", "define", "trees", "--name", "", status=2).stderr
