"""The committed artifacts are what the sources compile to (needs Node.js and contracts/node_modules).

The compile takes ~10 s, so both tests share one: the module fixture compiles once (in the
background, started by conftest while the chain tests run) and hands the result to ``build.check``
in place of recompiling.
"""

from __future__ import annotations

import json
import shutil

import pytest
from components import unavailable

from contracts import build
from contracts.artifacts import ARTIFACTS_DIR, CONTRACT_NAMES
from contracts_testkit import compiled_artifacts


@pytest.fixture(scope="module")
def compiled():
    try:
        fresh = compiled_artifacts()
    except build.ToolchainMissing as exc:
        unavailable("toolchain", f"cannot recompile the contracts: {exc}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "compile_all", lambda: fresh)
        yield fresh


def test_committed_artifacts_are_fresh(compiled):
    result = build.check()
    assert result.ok, f"stale={result.stale} missing={result.missing} extra={result.extra}: run `alliance contracts build`"
    assert sorted(compiled) == sorted(CONTRACT_NAMES)


def test_a_tampered_artifact_is_reported_stale(compiled, tmp_path):
    for path in ARTIFACTS_DIR.glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    assert build.check(tmp_path).ok
    target = tmp_path / "Settlement.json"
    artifact = json.loads(target.read_text())
    code = artifact["deployedBytecode"]
    artifact["deployedBytecode"] = code[:-2] + ("00" if code[-2:] != "00" else "01")
    target.write_text(json.dumps(artifact, indent=2, sort_keys=True) + "\n")
    (tmp_path / "ConsentAnchor.json").unlink()
    (tmp_path / "Leftover.json").write_text("{}\n")
    result = build.check(tmp_path)
    assert not result.ok
    assert (result.stale, result.missing, result.extra) == (["Settlement"], ["ConsentAnchor"], ["Leftover"])
