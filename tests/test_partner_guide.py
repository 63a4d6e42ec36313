"""docs/partner-guide.md holds to the code: its EIP-712 test vectors are what the contracts' client
signs and the gateway verifies, every HTTP operation it names is in the gateway's OpenAPI, and
every `alliance ...` command it shows exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from typer.testing import CliRunner

from contracts.client import Redemption
from contracts.defaults import CONTRACTS_VERSION
from gateway.app import create_app
from gateway.settings import GatewaySettings
from scripts.cli import app as alliance

GUIDE = (Path(__file__).resolve().parents[1] / "docs" / "partner-guide.md").read_text()


def test_the_signing_vectors_are_what_the_code_signs_and_checks():
    block = re.search(r"Test vectors.*?```json\n(.*?)```", GUIDE, re.S)
    v = json.loads(block.group(1))
    assert v["domain"]["version"] == CONTRACTS_VERSION
    m = v["message"]
    auth = Redemption(m["owner"], m["brand"], m["amount"], m["nonce"], m["deadline"])
    domain = Redemption.domain(v["domain"]["chainId"], v["domain"]["verifyingContract"])
    assert domain == v["domain"]
    fields = ",".join(f"{f['type']} {f['name']}" for f in Redemption.TYPES["Redeem"])
    assert "0x" + keccak(text=f"Redeem({fields})").hex() == v["type_hash"]
    signable = encode_typed_data(domain, Redemption.TYPES, auth.message())
    assert ("0x" + signable.header.hex(), "0x" + signable.body.hex()) == (v["domain_separator"], v["struct_hash"])
    assert "0x" + keccak(b"\x19\x01" + signable.header + signable.body).hex() == v["digest"]
    wallet = Account.from_key(v["private_key"])
    assert wallet.address == m["owner"]
    signed = auth.signed_by(wallet, v["domain"]["chainId"], v["domain"]["verifyingContract"])
    assert "0x" + signed.signature.hex() == v["signature"]
    assert Account.recover_message(signable, signature=bytes.fromhex(v["signature"][2:])) == m["owner"]


@pytest.fixture(scope="module")
def openapi(tmp_path_factory):
    d = tmp_path_factory.mktemp("guide")
    return create_app(GatewaySettings(database_url=f"sqlite:///{d}/gw.sqlite", keys_dir=d / "keys"), background=False).openapi()


def test_every_operation_the_guide_names_exists(openapi):
    named = set(re.findall(r"`(GET|POST|PUT|DELETE) (/[^`?\s]*)", GUIDE))
    assert len(named) >= 20
    served = {(method.upper(), path) for path, ops in openapi["paths"].items() for method in ops}
    assert not named - served, f"the guide names operations the gateway does not have: {sorted(named - served)}"


def test_every_command_the_guide_shows_exists():
    commands = set()
    shown = re.findall(r"`(alliance [^`]*)`", GUIDE) + [line for block in re.findall(r"```sh\n(.*?)```", GUIDE, re.S)
                                                        for line in block.splitlines() if line.startswith("alliance ")]
    for line in shown:
        words = []
        for word in line.split()[1:]:
            if not re.fullmatch(r"[a-z][a-z-]*", word) or word in ("pos", "operator", "auditor"):
                break
            words.append(word)
        commands.add(tuple(words))
    assert len(commands) >= 15
    runner = CliRunner()
    for words in sorted(commands):
        result = runner.invoke(alliance, [*words, "--help"])
        assert result.exit_code == 0, f"`alliance {' '.join(words)}` does not exist: {result.output[-300:]}"
