"""docs/production.md and its example files, parsed and checked against the code: the genesis names
the validators the recipe lists, Besu serves JSON-RPC only over TLS to one host name, every
GATEWAY_* variable is a real setting, every command and flag exists, every alert watches a metric
the gateway exposes, and every hop that crosses a network is TLS."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import rlp
import yaml
from eth_utils import to_checksum_address
from typer.testing import CliRunner

from gateway.settings import GatewaySettings
from scripts.cli import app as alliance

DOCS = Path(__file__).resolve().parents[1] / "docs"
FILES = DOCS / "production"
RECIPE = (DOCS / "production.md").read_text()
BIN = Path(sys.executable).parent


def settings_names() -> set[str]:
    return {f"GATEWAY_{name.upper()}" for name in GatewaySettings.model_fields} | {"GATEWAY_ENV_FILE"}


def units() -> dict[str, configparser.ConfigParser]:
    out = {}
    for path in sorted((FILES / "systemd").glob("*.service")):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str
        unit.read(path)
        out[path.name] = unit
    return out


def flags_of(program: str) -> set[str]:
    shown = subprocess.run([str(BIN / program), "--help"], capture_output=True, text=True, timeout=60).stdout
    return set(re.findall(r"--[a-z][a-z-]*", shown))


def check_command(argv: list[str]) -> None:
    """`alliance ...` names an existing command and options; a Flower program only flags it has."""
    program = Path(argv[0]).name
    if program == "alliance":
        words = [w for w in argv[1:] if re.fullmatch(r"[a-z][a-z-]*", w)]
        path = []
        for word in words:  # the subcommand path: as long as --help still succeeds
            if CliRunner().invoke(alliance, [*path, word, "--help"]).exit_code != 0:
                break
            path.append(word)
        helptext = CliRunner().invoke(alliance, [*path, "--help"], terminal_width=200).output
        assert len(path) >= 2, f"no such command: {argv}"
        for flag in (a.split("=")[0] for a in argv if a.startswith("--")):
            assert flag in helptext, f"`alliance {' '.join(path)}` has no {flag}"
    else:
        assert program in ("flower-superlink", "flower-supernode"), program
        unknown = {a for a in argv if a.startswith("--")} - flags_of(program)
        assert not unknown, f"{program} has no {unknown}"


def test_the_genesis_names_the_validators_and_the_evm_the_contracts_need():
    genesis = json.loads((FILES / "besu" / "genesis.json").read_text())
    config = genesis["config"]
    assert {"blockperiodseconds", "epochlength", "requesttimeoutseconds"} <= set(config["qbft"])
    assert config["pragueTime"] == 0 and config["zeroBaseFee"] is True  # the contracts are compiled for prague
    assert int(genesis["gasLimit"], 16) >= 30_000_000  # room for a batch of redemptions under its gas bound
    vanity, validators, votes, round_, seals = rlp.decode(bytes.fromhex(genesis["extraData"][2:]))
    assert vanity == b"\0" * 32 and votes == [] and round_ == b"" and seals == []
    listed = re.findall(r"^\| (\w+) \| (0x[0-9a-fA-F]{40}) \|$", RECIPE, re.M)
    assert [to_checksum_address(v) for v in validators] == [address for _, address in listed]
    assert len(listed) == 4 and str(config["chainId"]) in RECIPE


def test_besu_serves_its_gateway_only_over_tls():
    config = tomllib.loads((FILES / "besu" / "config.toml").read_text())
    assert config["genesis-file"].endswith("genesis.json") and config["rpc-http-enabled"] is True
    assert config["rpc-http-tls-enabled"] is True and config["rpc-http-tls-keystore-file"]
    assert "*" not in config["host-allowlist"] and config["rpc-http-cors-origins"] == []
    assert not {"ADMIN", "DEBUG", "PERM"} & set(config["rpc-http-api"]) and "ETH" in config["rpc-http-api"]
    assert config["min-gas-price"] == 0 and config["metrics-host"] == "127.0.0.1"


def test_the_systemd_units_run_real_commands_hardened():
    found = units()
    assert set(found) == {"alliance-gateway.service", "alliance-sender.service", "alliance-supernode.service", "alliance-superlink.service",
                          "alliance-indexer.service"}
    for name, unit in found.items():
        service = unit["Service"]
        for key in ("ExecStartPre", "ExecStart"):
            if key in service:
                check_command(shlex.split(service[key]))
        assert service["User"] == "alliance" and service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict", name
        assert service["UMask"] == "0077" and service["Restart"] == "always", name
        for line in service.get("Environment", "").splitlines():
            variable = line.split("=")[0]
            if variable.startswith("GATEWAY_"):
                assert variable in settings_names(), f"{name}: {variable} is not a setting"
    superlink = shlex.split(found["alliance-superlink.service"]["Service"]["ExecStart"])
    assert "--insecure" not in superlink and "--enable-supernode-auth" in superlink and "--ssl-certfile" in superlink
    supernode = shlex.split(found["alliance-supernode.service"]["Service"]["ExecStart"])
    assert "--insecure" not in supernode and "--root-certificates" in supernode and "--auth-supernode-private-key" in supernode


def test_the_compose_file_publishes_only_the_proxy_and_uses_real_settings():
    compose = yaml.safe_load((FILES / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "gateway", "sender", "proxy", "supernode", "besu"}
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert set(published) == {"proxy", "besu"}
    assert all(p.startswith("10.") or p.startswith("443") for p in published["proxy"])
    for name in ("gateway", "sender", "supernode"):
        env = services[name]["environment"]
        assert {v for v in env if v.startswith("GATEWAY_")} <= settings_names(), name
        assert not any("password" in str(value).lower() for value in env.values()), f"{name}: a secret in the file"
        check_command(services[name]["command"])
    assert services["gateway"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["gateway"]["environment"]["GATEWAY_CHAIN_URL"].startswith("https://")
    assert set(compose["secrets"]) == {"postgres_password", "gateway_env", "alliance_ca", "supernode_key"}
    caddy = (FILES / "Caddyfile").read_text()
    assert "reverse_proxy gateway:8001" in caddy and "respond @metrics 404" in caddy  # metrics never on the public site


def test_every_alert_watches_a_metric_the_gateway_exposes():
    source = (Path(__file__).resolve().parents[1] / "gateway" / "metrics.py").read_text()
    families = set(re.findall(r'(?:Counter|Histogram|GaugeMetricFamily)\(\s*"([a-z_]+)"', source))
    exposed = families | {f"{f}_total" for f in families} | {f"{f}_{s}" for f in families for s in ("bucket", "count", "sum")}
    rules = yaml.safe_load((FILES / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    assert len(rules) >= 5
    for rule in rules:
        used = set(re.findall(r"\bgateway_[a-z_]+", rule["expr"]))
        assert used and used <= exposed, f"{rule['alert']}: {used - exposed}"
    scrape = yaml.safe_load((FILES / "prometheus" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["scheme"] == "https" and scrape["metrics_path"] == "/metrics"
    assert scrape["authorization"]["credentials_file"]  # an operator key: /metrics needs one


@pytest.mark.parametrize("name", ["compose.yaml", "Caddyfile", "besu/genesis.json", "besu/config.toml", "prometheus/prometheus.yml",
                                  "prometheus/alerts.yml", "systemd/alliance-gateway.service"])
def test_the_recipe_names_each_file(name):
    assert f"`{name}`" in RECIPE or f"`{Path(name).name}`" in RECIPE
