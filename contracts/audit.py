"""Static analysis of the contract sources with Slither (slither-analyzer, a dev dependency).

The gate: no High or Medium impact finding in the analysed sources, except those suppressed inline
with a reason, on the line before one of the lines the finding names::

    // slither-disable-next-line DETECTOR: why this is not a bug

Compilation is build.py's, through the same solc-js wrapper (tools/solc): crytic-compile's solc-json
platform runs ``<solc> --version`` and then, in its working directory, ``<solc> --standard-json
--allow-paths <dir>`` with the standard JSON on stdin, which are the two calls the wrapper answers.
The input carries the same source names and SETTINGS as build.py (EVM version, optimizer and
remappings are in the JSON, not on a command line); only the output selection differs, because
Slither needs the AST and source maps. The wrapper's path is always passed explicitly: the ``solc``
command that solc-select puts on the venv's PATH would try to download a compiler.

OpenZeppelin's own findings (in node_modules) are not ours to fix and are left out; a finding that
names any line of the analysed sources counts.
"""

from __future__ import annotations

import inspect
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import build
from .artifacts import PACKAGE_DIR, SRC_DIR

#: The impacts that fail the gate (Slither's others: Low, Informational, Optimization).
GATED_IMPACTS = ("High", "Medium")

_SUPPRESSION = re.compile(r"//\s*slither-disable")
# Slither reads the detector list up to the first character outside [A-Za-z0-9_,-]: no spaces in it.
_WELL_FORMED = re.compile(r"^\s*//\s*slither-disable-next-line\s+([A-Za-z0-9_-]+(?:,[A-Za-z0-9_-]+)*)\s*:\s*\S")


@dataclass(frozen=True)
class Finding:
    check: str  # the detector, as named in a suppression comment
    impact: str
    confidence: str
    file: str
    line: int  # the line it flags (a suppression goes on the line before)
    code: str  # that line
    description: str

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def __str__(self) -> str:
        return f"{self.check} ({self.impact} impact, {self.confidence} confidence) at {self.location}: {self.code}\n{self.description.rstrip()}"


@dataclass(frozen=True)
class Report:
    compiler: str
    findings: list[Finding] = field(default_factory=list)  # gated and not suppressed
    problems: list[str] = field(default_factory=list)  # suppressions malformed, misnamed or hiding nothing

    @property
    def ok(self) -> bool:
        return not (self.findings or self.problems)


def _detector_classes() -> list[type]:
    from slither.detectors import all_detectors
    from slither.detectors.abstract_detector import AbstractDetector

    return [d for _, d in inspect.getmembers(all_detectors, inspect.isclass) if issubclass(d, AbstractDetector) and d is not AbstractDetector]


def _source_name(path: Path) -> str:
    """build.py's name for a source under contracts/ (``src/X.sol``); the absolute path elsewhere."""
    try:
        return path.relative_to(PACKAGE_DIR).as_posix()
    except ValueError:
        return path.as_posix()


def _shown(path: Path) -> str:
    try:
        return path.relative_to(PACKAGE_DIR.parent).as_posix()
    except ValueError:
        return path.as_posix()


def analyse(src_dir: Path = SRC_DIR) -> Report:
    """Run Slither's High and Medium detectors over every ``*.sol`` in ``src_dir`` (one compilation,
    as build.py compiles). Raises build.ToolchainMissing without Node.js or contracts/node_modules."""
    from crytic_compile import CryticCompile
    from crytic_compile.platform.solc_standard_json import SolcStandardJson
    from slither import Slither

    compiler = build.compiler_version()  # raises ToolchainMissing
    src_dir = src_dir.resolve()
    paths = sorted(src_dir.glob("*.sol"))
    if not paths:
        raise FileNotFoundError(f"no Solidity sources in {src_dir}")
    standard_json = {
        "language": "Solidity",
        "sources": {_source_name(path): {"content": path.read_text()} for path in paths},
        "settings": {key: value for key, value in build.SETTINGS.items() if key != "outputSelection"},
    }
    detectors = _detector_classes()
    gated = [d for d in detectors if d.IMPACT.name.capitalize() in GATED_IMPACTS]  # HIGH -> High
    with tempfile.TemporaryDirectory(prefix="alliance-slither-") as scratch:
        crytic = CryticCompile(
            SolcStandardJson(standard_json),
            solc=str(build.SOLC_WRAPPER),
            solc_working_dir=str(PACKAGE_DIR),  # where the remapping's node_modules/ resolves
            export_dir=scratch,
        )
        # Slither would otherwise read triage results (slither.db.json, export.sarif) from the
        # current directory and hide whatever they list.
        slither = Slither(crytic, triage_database=str(Path(scratch) / "slither.db.json"))
        slither.sarif_input = str(Path(scratch) / "export.sarif")
        slither.sarif_triage = str(Path(scratch) / "export.sarif.sarifexplorer")
        for detector in gated:
            slither.register_detector(detector)
        results = [result for per_detector in slither.run_detectors() for result in per_detector]
        unused = slither.get_unused_ignore_comments()

    def ours(element: dict[str, Any]) -> bool:
        filename = element.get("source_mapping", {}).get("filename_absolute")
        return bool(filename) and Path(filename).resolve().is_relative_to(src_dir)

    findings = []
    for result in results:
        mine = [e for e in result["elements"] if ours(e) and e["source_mapping"].get("lines")]
        if not mine:
            continue  # OpenZeppelin's code only
        flagged = next((e for e in mine if e.get("type") == "node"), mine[0])
        path = Path(flagged["source_mapping"]["filename_absolute"])
        line = flagged["source_mapping"]["lines"][0]
        code = path.read_text().splitlines()[line - 1].strip()
        findings.append(Finding(result["check"], result["impact"], result["confidence"], _shown(path), line, code, result["description"]))
    findings.sort(key=lambda f: (f.file, f.line, f.check))

    known = {d.ARGUMENT for d in detectors}
    gated_names = {d.ARGUMENT for d in gated}
    problems: set[tuple[str, int, str]] = set()
    for path in paths:
        for number, text in enumerate(path.read_text().splitlines(), 1):
            if not _SUPPRESSION.search(text):
                continue
            match = _WELL_FORMED.match(text)
            if not match:
                problems.add((_shown(path), number, "write suppressions as `// slither-disable-next-line DETECTOR: reason`"))
                continue
            for name in match.group(1).split(","):
                if name not in known:
                    problems.add((_shown(path), number, f"no Slither detector is called `{name}`"))
    for comment in unused:
        path = Path(comment["file"])
        if not path.resolve().is_relative_to(src_dir):
            continue
        for name in comment["unused_detectors"]:
            if name in gated_names:
                problems.add((_shown(path), comment["line"], f"the `{name}` suppression hides no finding: remove it"))
    return Report(compiler, findings, [f"{file}:{line}: {message}" for file, line, message in sorted(problems)])

