"""Slither over contracts/src: no High or Medium finding unless suppressed inline with a reason
(needs Node.js and contracts/node_modules, like test_contract_build.py; ~10 s, mostly the compile).

A false positive is suppressed on the line before one of the lines the finding names::

    // slither-disable-next-line DETECTOR: why this is not a bug

Comments change the metadata hash: rebuild the artifacts (`alliance contracts build`) after adding one.
"""

from __future__ import annotations

import textwrap

import pytest
from components import unavailable

from contracts import audit, build

pytestmark = pytest.mark.slow


def _analyse(src_dir=audit.SRC_DIR) -> audit.Report:
    try:
        return audit.analyse(src_dir)
    except build.ToolchainMissing as exc:
        unavailable("toolchain", f"cannot compile the contracts for Slither: {exc}")


def test_no_high_or_medium_finding_in_the_contracts():
    report = _analyse()
    listed = "\n\n".join(str(finding) for finding in report.findings)
    assert not report.findings, (
        f"{len(report.findings)} High/Medium Slither finding(s) in contracts/src. Fix them; suppress only a false "
        f"positive, with `// slither-disable-next-line DETECTOR: why` on the line before the flagged line:\n\n{listed}"
    )
    assert not report.problems, "bad Slither suppressions:\n" + "\n".join(report.problems)


VAULT = """\
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

contract Vault {
    mapping(address => uint256) public balances;

    function deposit() external payable {
        balances[msg.sender] += msg.value;
    }

    function withdraw() external {
        uint256 amount = balances[msg.sender];
        (bool ok,) = msg.sender.call{value: amount}("");
        require(ok, "transfer failed");
        balances[msg.sender] = 0;
    }
}
"""


def test_the_gate_reports_a_vulnerable_contract_and_bad_suppressions(tmp_path):
    """The same analysis on a textbook reentrancy (High): reported with its line; the same code
    suppressed with a reason is not; a suppression without a reason, and one that hides nothing,
    are problems."""
    (tmp_path / "Vault.sol").write_text(VAULT)
    call = '        (bool ok,) = msg.sender.call{value: amount}("");\n'
    suppressed = VAULT.replace("contract Vault", "contract SuppressedVault").replace(
        call, "        // slither-disable-next-line reentrancy-eth: a test of the suppression\n" + call
    )
    (tmp_path / "SuppressedVault.sol").write_text(suppressed)
    sloppy = textwrap.dedent("""\
        // SPDX-License-Identifier: MIT
        pragma solidity ^0.8.24;

        contract Sloppy {
            uint256 public total;

            function add(uint256[] calldata xs) external {
                // slither-disable-next-line uninitialized-local
                uint256 sum;
                for (uint256 i; i < xs.length; ++i) sum += xs[i];
                // slither-disable-next-line arbitrary-send-eth: nothing here sends ether
                total += sum;
            }
        }
        """)
    (tmp_path / "Sloppy.sol").write_text(sloppy)

    report = _analyse(tmp_path)

    assert [(f.check, f.impact, f.file.rsplit("/", 1)[-1], f.line) for f in report.findings] == [
        ("reentrancy-eth", "High", "Vault.sol", 13)
    ], "\n\n".join(map(str, report.findings))
    assert report.findings[0].code == call.strip()
    assert "Reentrancy in Vault.withdraw()" in report.findings[0].description
    assert [p.split(": ", 1)[1] for p in report.problems] == [
        "write suppressions as `// slither-disable-next-line DETECTOR: reason`",
        "the `arbitrary-send-eth` suppression hides no finding: remove it",
    ], report.problems
    assert not report.ok
