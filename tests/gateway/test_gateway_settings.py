"""Settings that cannot collide: per-brand paths derive from the brand id, a .env file is read only
when named, and `alliance gateway settings` shows what a gateway would run with, secrets masked."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.settings import GatewaySettings


def test_two_brands_in_one_directory_share_nothing():
    """Before, both defaulted to var/gateway.sqlite and var/keys: one database, one chain account."""
    a, b = GatewaySettings(brand_id="grocery"), GatewaySettings(brand_id="airline")
    assert a.database_url == "sqlite:///var/grocery/gateway.sqlite" and b.database_url == "sqlite:///var/airline/gateway.sqlite"
    assert (a.keys_dir, a.notifications_dir) == (a.keys_dir.parent / "keys", a.keys_dir.parent / "notifications")
    assert a.keys_dir != b.keys_dir and a.notifications_dir != b.notifications_dir
    set_ = GatewaySettings(brand_id="cafe", database_url="sqlite:////srv/cafe.db", keys_dir="/srv/keys")
    assert (set_.database_url, str(set_.keys_dir)) == ("sqlite:////srv/cafe.db", "/srv/keys")  # what is set stays


def test_a_dot_env_file_is_read_only_when_named(tmp_path, monkeypatch):
    """Before, a .env in the working directory configured the gateway silently."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATEWAY_BRAND_NAME", raising=False)
    (tmp_path / ".env").write_text("GATEWAY_BRAND_NAME=From a stray file\n")
    assert GatewaySettings().brand_name == "Brand"
    (tmp_path / "cafe.env").write_text("GATEWAY_BRAND_NAME=Cafe\nGATEWAY_BRAND_ID=cafe\n")
    monkeypatch.setenv("GATEWAY_ENV_FILE", str(tmp_path / "cafe.env"))
    assert (GatewaySettings().brand_name, GatewaySettings().brand_id) == ("Cafe", "cafe")
    monkeypatch.setenv("GATEWAY_BRAND_NAME", "Cafe Downtown")  # the environment wins over the file
    assert GatewaySettings().brand_name == "Cafe Downtown"
    monkeypatch.setenv("GATEWAY_ENV_FILE", str(tmp_path / "missing.env"))
    with pytest.raises(ValueError, match="not a file"):
        GatewaySettings()


def test_the_settings_command_masks_secrets(monkeypatch):
    monkeypatch.delenv("GATEWAY_ENV_FILE", raising=False)
    env = {"GATEWAY_BRAND_ID": "grocery", "GATEWAY_DATABASE_URL": "postgresql+psycopg://gw:db-Secret-9@db.internal/grocery",
           "GATEWAY_SMTP__HOST": "smtp.internal", "GATEWAY_SMTP__SENDER": "points@grocery.example",
           "GATEWAY_SMTP__PASSWORD": "smtp-Secret-7"}
    result = CliRunner().invoke(app, ["settings"], env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert "Secret" not in result.output
    assert shown["database_url"] == "postgresql+psycopg://gw:***@db.internal/grocery"
    assert shown["smtp"]["password"] == "**********" and shown["smtp"]["host"] == "smtp.internal"
    assert shown["keys_dir"] == "var/grocery/keys"


def test_every_setting_is_in_the_readme_table():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = {line for line in readme.splitlines() if line.startswith("| `GATEWAY_")}
    missing = [name for name in GatewaySettings.model_fields if not any(f"`GATEWAY_{name.upper()}`" in row for row in table)]
    assert not missing, f"settings missing from README's table: {missing}"


def test_keys_prints_json_a_script_can_read(tmp_path, monkeypatch):
    monkeypatch.delenv("GATEWAY_ENV_FILE", raising=False)
    env = {"GATEWAY_BRAND_ID": "grocery", "GATEWAY_KEYS_DIR": str(tmp_path / "keys"), "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path}/gw.sqlite"}
    result = CliRunner().invoke(app, ["keys", "--json"], env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["chain_account"].startswith("0x") and len(shown["chain_account"]) == 42 and shown["keys_dir"] == str(tmp_path / "keys")
    assert CliRunner().invoke(app, ["keys", "--json"], env=env).output == result.output  # the same keys, kept
