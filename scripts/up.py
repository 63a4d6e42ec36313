"""`alliance up | down | status | logs`: a whole alliance as separate processes on loopback, from one
declarative file (`alliance.toml`), kept running by a supervisor.

`up` starts the supervisor as a background process and waits until every process is healthy. The
supervisor starts the chain (anvil, its state kept in a file, unless the file names a JSON-RPC URL),
sets the alliance up once (deployment with a saved governor key, each brand's keys, admission,
collateral and API keys, `settlement.json`), then runs per brand a gateway (uvicorn) and its chain sender,
a Flower SuperLink with a SuperNode per brand and the trainer (federated training on a schedule:
scripts/training.py), and the settlement indexer, and restarts any process that dies. Everything lives under the file's `workdir`; `up` again after `down` resumes
with every ledger, the chain and the keys as they were. `down` stops what the supervisor started and
nothing else.

Layout of the workdir: governor.key, deployment.json, settlement.json, state.json (the supervisor's
processes), chain/state.json, logs/<process>.log, flwr/ (Flower's home: the SuperLink's database, the
app), releases/ and training.jsonl (the federated runs), brands/<id>/{keys/, gateway.sqlite,
api-keys.json, notifications/, releases/ (the models it recorded)}. Key files are readable by their owner only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

ROOT = Path(__file__).resolve().parents[1]
ENCODING = "utf-8"
# Seconds a process may take to answer its health check after `up` starts it. Every gateway starts at
# once (two workers each, importing web3 and the rest), so on a small machine that is busy the
# slowest can need well over a minute.
START_S = 180


class ChainSpec(BaseModel):
    # "anvil": a local anvil node the supervisor runs, its state kept in workdir/chain/state.json;
    # otherwise the JSON-RPC URL of a chain that runs elsewhere (the supervisor does not manage it).
    url: str = Field("anvil", pattern=r"^(anvil|https?://\S+)$")
    port: int = Field(8545, ge=1, le=65535)  # anvil's port


class BrandSpec(BaseModel):
    id: str = Field(pattern=r"^[a-z][a-z0-9-]{1,31}$")
    name: str = Field(min_length=1, max_length=64)
    rate: int = Field(ge=1)  # brand points per alliance point
    credit_limit: int = Field(1_000_000, ge=0)  # alliance points of open net issuance
    collateral: int = Field(10**12, ge=0)  # settlement-token units deposited at admission
    port: int = Field(ge=1, le=65535)
    database_url: str | None = None  # default: SQLite at brands/<id>/gateway.sqlite
    workers: int = Field(1, ge=1, le=32)  # uvicorn workers, one per core
    # Further gateway settings, by their GATEWAY_* names without the prefix (the README's table).
    settings: dict[Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")], str] = {}


class TrainingSpec(BaseModel):
    # Federated training on a schedule (scripts/training.py): every task at each daily time (UTC,
    # HH:MM or HH:MM:SS); no times: only on `alliance train`. run_config: federation.config keys.
    times: list[Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$")]] = ["03:00"]
    tasks: Annotated[list[Literal["churn", "redeem"]], Field(min_length=1)] = ["churn", "redeem"]
    run_config: dict[str, str | bool | int | float] = {}

    @model_validator(mode="after")
    def _known_keys(self) -> "TrainingSpec":
        from federation.config import effective

        effective(self.run_config)  # unknown keys and noise-free counts are refused here, not at 3 am
        return self


class FederationSpec(BaseModel):
    # A Flower SuperLink and one SuperNode per brand (reading its gateway's database), on loopback
    # without TLS: for trying it out. docs/production.md has the TLS and authentication set-up.
    enabled: bool = True
    port: int = Field(9092, ge=1, le=65535)  # the SuperLink's (one HTTP port for all its APIs)
    training: TrainingSpec = TrainingSpec()


class AllianceSpec(BaseModel):
    workdir: Path = Path("var/alliance")
    chain: ChainSpec = ChainSpec()
    federation: FederationSpec = FederationSpec()
    brands: Annotated[list[BrandSpec], Field(min_length=1, max_length=32)]

    @model_validator(mode="after")
    def _distinct(self) -> "AllianceSpec":
        ids = [b.id for b in self.brands]
        ports = [b.port for b in self.brands] + ([self.chain.port] if self.chain.url == "anvil" else [])
        if self.federation.enabled:
            ports.append(self.federation.port)
        if len(set(ids)) != len(ids):
            raise ValueError("brand ids must be distinct")
        if len(set(ports)) != len(ports):
            raise ValueError("every brand (and anvil) needs a port of its own")
        return self

    def brand_dir(self, brand: BrandSpec) -> Path:
        return self.workdir / "brands" / brand.id

    def database_url(self, brand: BrandSpec) -> str:
        return brand.database_url or f"sqlite:///{(self.brand_dir(brand) / 'gateway.sqlite').absolute()}"

    @property
    def chain_url(self) -> str:
        return f"http://127.0.0.1:{self.chain.port}" if self.chain.url == "anvil" else self.chain.url


DEFAULT_SPEC = {"brands": [
    {"id": "grocery", "name": "Grocery", "rate": 100, "port": 8101},
    {"id": "airline", "name": "Airline", "rate": 20, "port": 8102},
    {"id": "cafe", "name": "Cafe", "rate": 50, "port": 8103},
]}


class SpecError(ValueError):
    """The alliance file is missing, unreadable or invalid (the message says where)."""


def load_spec(path: Path | None, workdir: Path | None = None) -> AllianceSpec:
    """The alliance file, or three brands on built-in defaults without one. A relative workdir is
    relative to the file."""
    if path is None:
        raw = dict(DEFAULT_SPEC)
    else:
        try:
            raw = tomllib.loads(path.read_text(encoding=ENCODING))
        except OSError as exc:
            raise SpecError(f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{path}: not TOML: {exc}") from None
    try:
        spec = AllianceSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise SpecError(f"{path or 'the default alliance'}: {problems}") from None
    if workdir is not None:
        spec.workdir = workdir
    elif path is not None and not spec.workdir.is_absolute():
        spec.workdir = path.parent / spec.workdir
    spec.workdir = spec.workdir.absolute()
    return spec


# ---------------------------------------------------------------- files


def _private(path: Path, text: str) -> Path:
    """Write a file only its owner can read (created so: never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding=ENCODING) as f:
        f.write(text)
    return path


def state_path(workdir: Path) -> Path:
    return workdir / "state.json"


def read_state(workdir: Path) -> dict:
    try:
        return json.loads(state_path(workdir).read_text(encoding=ENCODING))
    except (OSError, ValueError):
        return {}


def _write_state(workdir: Path, state: dict) -> None:
    tmp = state_path(workdir).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2), encoding=ENCODING)
    tmp.replace(state_path(workdir))


def alive(pid: int | None, marker: str | None = None) -> bool:
    """Whether process `pid` runs (and, with `marker`, whether its command line names it: a pid the
    system gave to another program since is not ours)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return marker is None
    if marker is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True  # no /proc: trust the pid
    return marker in cmdline


# ---------------------------------------------------------------- set-up (in the supervisor)


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _gateway_env(spec: AllianceSpec, brand: BrandSpec) -> dict[str, str]:
    d = spec.brand_dir(brand)
    return {"GATEWAY_BRAND_ID": brand.id, "GATEWAY_BRAND_NAME": brand.name, "GATEWAY_DATABASE_URL": spec.database_url(brand),
            "GATEWAY_KEYS_DIR": str(d / "keys"), "GATEWAY_MANIFEST": str(spec.workdir / "deployment.json"),
            "GATEWAY_CHAIN_URL": spec.chain_url, "GATEWAY_NOTIFIER": "dev", "GATEWAY_NOTIFICATIONS_DIR": str(d / "notifications"),
            "GATEWAY_RELEASES_DIR": str(d / "releases"),
            "GATEWAY_ALLIANCE_PEERS": json.dumps([f"http://127.0.0.1:{b.port}" for b in spec.brands if b.id != brand.id])
            } | {f"GATEWAY_{name}": value for name, value in brand.settings.items()}


def set_up(spec: AllianceSpec, log) -> dict[str, dict]:
    """Deploy (once), then make each brand's keys and database, admit it with its collateral and
    issue its API keys (each once); write settlement.json. Returns each brand's address and URL.
    Safe to run again: what exists is kept (a chain that lost the deployment is an error)."""
    from eth_account import Account

    from contracts.chain import connect
    from contracts.client import Alliance, BrandStatus
    from contracts.deploy import BrandTerms, deploy_alliance, onboard_brand
    from contracts.manifest import Manifest
    from gateway.auth import create_api_key
    from gateway.db import transaction
    from gateway.runtime import build_gateway
    from gateway.settings import GatewaySettings

    chain = connect(spec.chain_url)
    governor_file, manifest_file = spec.workdir / "governor.key", spec.workdir / "deployment.json"
    if governor_file.exists():
        governor = Account.from_key(governor_file.read_text(encoding=ENCODING).strip())
    else:
        governor = Account.create()
        _private(governor_file, governor.key.hex() + "\n")
        log(f"governor key made: {governor.address}, saved in {governor_file}")
    if manifest_file.exists():
        alliance = Alliance(chain, Manifest.load(manifest_file))
        if not chain.w3.eth.get_code(alliance.registry.address):
            raise RuntimeError(f"the chain at {spec.chain_url} has no alliance at {alliance.registry.address} (its state was lost); "
                               f"move {manifest_file} away to deploy a new one")
    else:
        chain.fund(governor.address)
        alliance = deploy_alliance(chain, governor)
        alliance.manifest.save(manifest_file)
        log(f"alliance deployed: registry {alliance.registry.address}")
    brands: dict[str, dict] = {}
    for brand in spec.brands:
        spec.brand_dir(brand).mkdir(parents=True, exist_ok=True, mode=0o700)  # its database and keys: the brand's alone
        env = _gateway_env(spec, brand)
        with _environment(env | {"GATEWAY_OUTBOX_INTERVAL_S": "0", "GATEWAY_ANCHOR_INTERVAL_S": "0"}):
            gw = build_gateway(GatewaySettings())  # read as the gateway process will read them
        try:
            address = gw.brand_address
            if alliance.registry.status(address) == BrandStatus.NONE:
                chain.fund(address)
                onboard_brand(alliance, governor, gw.chain_account,
                              BrandTerms(brand.name, brand.rate, brand.credit_limit, brand.collateral))
                log(f"{brand.id}: admitted as {address}, collateral {brand.collateral} deposited")
            keys_file = spec.brand_dir(brand) / "api-keys.json"
            if not keys_file.exists():
                with transaction(gw.sessions) as session:
                    keys = {role: create_api_key(session, role, f"{role} (alliance up)", gw.now())[1] for role in ("operator", "pos", "auditor")}
                _private(keys_file, json.dumps(keys, indent=2) + "\n")
                log(f"{brand.id}: API keys issued, in {keys_file}")
            brands[brand.id] = {"address": address, "url": f"http://127.0.0.1:{brand.port}", "keys": str(keys_file)}
        finally:
            gw.engine.dispose()
    gateways = [{"brand_id": b.id, "address": brands[b.id]["address"], "url": brands[b.id]["url"],
                 "auditor_key": json.loads(Path(brands[b.id]["keys"]).read_text(encoding=ENCODING))["auditor"],
                 "public_key_pem_file": str(spec.brand_dir(b) / "keys" / "signing.pub"), "database_url": spec.database_url(b)}
                for b in spec.brands]
    _private(spec.workdir / "settlement.json", json.dumps({
        "chain_url": spec.chain_url, "manifest": str(manifest_file),
        "store": f"sqlite:///{spec.workdir / 'settlement' / 'index.sqlite'}", "gateways": gateways}, indent=2) + "\n")
    (spec.workdir / "settlement").mkdir(exist_ok=True)
    return brands


# ---------------------------------------------------------------- the supervisor


class Child:
    """One supervised process: its command, its log, its restarts."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path, health: str | None = None):
        self.name, self.cmd, self.env, self.health = name, cmd, env, health
        self.log_file = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.started_at = 0.0
        self.next_start = 0.0

    def start(self) -> None:
        # A session of its own: stopping it stops what it started too (uvicorn's workers, Flower's apps).
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(self.cmd, cwd=ROOT, env=os.environ | self.env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started_at = time.monotonic()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def describe(self) -> dict:
        return {"name": self.name, "pid": self.process.pid if self.process else None, "cmd": self.cmd[:2], "log": str(self.log_file),
                "health": self.health, "restarts": self.restarts}


@cache
def _prober():
    """One client for every health check: a new one builds a TLS context (tens of ms of CPU) each
    time, taken from the processes that are starting. No kept-alive connections to a process that dies."""
    import httpx

    return httpx.Client(timeout=1.0, limits=httpx.Limits(max_keepalive_connections=0))


def _healthy(url: str) -> bool:
    import httpx

    try:
        if url.endswith("/healthz"):
            return _prober().get(url).status_code == 200
        r = _prober().post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
        return r.status_code == 200 and "result" in r.json()
    except (httpx.HTTPError, ValueError):
        return False


def _wait_healthy(child: Child, seconds: float) -> None:
    """Until `child` answers its health check (one without: until it has run for a second)."""
    deadline = time.monotonic() + seconds
    while not (_healthy(child.health) if child.health else time.monotonic() - child.started_at > 1):
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited with status {child.process.returncode}: see {child.log_file}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} was not healthy within {seconds:.0f} s: see {child.log_file}")
        time.sleep(0.2)


def _federation(spec: AllianceSpec, logs: Path) -> list[Child]:
    """The SuperLink, and a SuperNode per brand reading its gateway's database; `flwr run` finds the
    SuperLink as the federation `alliance` with FLWR_HOME=<workdir>/flwr."""
    from contracts.chain import free_port

    bin_dir, port = Path(sys.executable).parent, spec.federation.port
    home = spec.workdir / "flwr"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "alliance"\n\n[superlink.alliance]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n', encoding=ENCODING)
    env = {"FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}  # they start Flower's other programs by name
    superlink = Child("superlink", [str(bin_dir / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
                                    "--database", str(home / "superlink.db")], env, logs)
    nodes = [Child(f"supernode-{b.id}", [str(bin_dir / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                                          "--host", "127.0.0.1", "--port", str(free_port()),
                                          "--node-config", f"brand-id='{b.id}' brand-db-url='{spec.database_url(b)}'"], env, logs)
             for b in spec.brands]
    return [superlink, *nodes]


def supervise(spec: AllianceSpec) -> int:
    """The supervisor's life: start, set up, keep running until SIGTERM/SIGINT, stop everything."""
    from contracts.chain import anvil_command

    workdir, logs = spec.workdir, spec.workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stopping = []

    def log(message: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", flush=True)

    def on_signal(signum, _frame) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    state = {"supervisor": os.getpid(), "workdir": str(workdir), "ready": False, "processes": [], "brands": {}}
    _write_state(workdir, state)
    children: list[Child] = []

    def publish() -> None:
        state["processes"] = [c.describe() for c in children]
        _write_state(workdir, state)

    try:
        if spec.chain.url == "anvil":
            (workdir / "chain").mkdir(exist_ok=True)
            chain = Child("anvil", anvil_command(spec.chain.port, state=workdir / "chain" / "state.json"), {}, logs, spec.chain_url)
            children.append(chain)
            chain.start()
            publish()
            _wait_healthy(chain, 30)
        brands = set_up(spec, log)
        state["brands"] = brands
        for brand in spec.brands:
            env = _gateway_env(spec, brand)
            if brand.workers > 1:  # prometheus-client sums the workers' counts from files here, emptied at each start
                metrics_dir = spec.brand_dir(brand) / "metrics"
                shutil.rmtree(metrics_dir, ignore_errors=True)
                metrics_dir.mkdir()
                env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
            cmd = [sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory", "--host", "127.0.0.1",
                   "--port", str(brand.port), "--workers", str(brand.workers), "--no-access-log"]
            children.append(Child(f"gateway-{brand.id}", cmd, env, logs, brands[brand.id]["url"] + "/healthz"))
            # The brand's one chain sender, for all its workers: they only wait for their rows.
            children.append(Child(f"sender-{brand.id}", [sys.executable, "-m", "scripts.cli", "gateway", "sender"], env, logs))
            for child in children[-2:]:
                child.start()
        if spec.federation.enabled:
            for child in _federation(spec, logs):
                children.append(child)
                child.start()
            if spec.federation.training.times:
                children.append(Child("trainer", [sys.executable, "-m", "scripts.training", str(workdir / "alliance.json")], {}, logs))
                children[-1].start()
        # The settlement store follows the chain's events (epochs, positions) for `alliance settle`.
        children.append(Child("indexer", [sys.executable, "-m", "scripts.cli", "settle", "index", "--follow",
                                          "-c", str(workdir / "settlement.json")], {}, logs))
        children[-1].start()
        publish()
        for child in children:
            _wait_healthy(child, START_S)
        state["ready"] = True
        publish()
        log("alliance up: " + ", ".join(c.name for c in children))
        while not stopping:
            for child in children:
                code = child.process.poll()
                if code is None:
                    continue
                now = time.monotonic()
                if child.next_start == 0:
                    # Restarted at once, then after 1, 2, 4 ... 30 s while it keeps dying within a minute.
                    quick = now - child.started_at < 60
                    delay = min(30.0, 2.0 ** (child.restarts - 1)) if quick and child.restarts else 0.0
                    child.next_start = now + delay
                    log(f"{child.name} exited with status {code}; restarting in {delay:.0f} s")
                if now >= child.next_start:
                    with suppress(ProcessLookupError):  # what it started and left behind (uvicorn's workers after a kill -9)
                        os.killpg(child.process.pid, signal.SIGKILL)
                    child.restarts += 1
                    child.next_start = 0
                    child.start()
                    publish()
            time.sleep(0.2)
        return 0
    except Exception as exc:  # the set-up failed: say why in the log, which `up` shows
        log(f"alliance up failed: {exc}")
        return 1
    finally:
        log("stopping")
        for child in reversed(children):  # the gateways first, the chain last (it keeps its state on exit)
            child.stop(signal.SIGINT if child.name == "anvil" else signal.SIGTERM)
        state.update(ready=False, supervisor=None)
        publish()
        log("stopped")


# ---------------------------------------------------------------- the commands


def up(spec: AllianceSpec, timeout_s: float = START_S + 120) -> dict:
    """Start the supervisor in the background; return the state once every process is healthy.
    Raises RuntimeError (with the supervisor log's end) if it fails or takes too long."""
    workdir = spec.workdir
    current = read_state(workdir)
    if alive(current.get("supervisor"), "scripts.up"):
        raise RuntimeError(f"the alliance in {workdir} is already up (supervisor pid {current['supervisor']}); `alliance down` first")
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (workdir / "logs").mkdir(exist_ok=True)
    spec_file = _private(workdir / "alliance.json", spec.model_dump_json(indent=2))
    with open(workdir / "logs" / "supervisor.log", "ab") as log:
        supervisor = subprocess.Popen([sys.executable, "-m", "scripts.up", str(spec_file)], cwd=ROOT, stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state(workdir)
        if state.get("supervisor") == supervisor.pid and state.get("ready"):
            return state
        if supervisor.poll() is not None:
            raise RuntimeError("the alliance did not come up:\n" + tail(workdir / "logs" / "supervisor.log", 15))
        time.sleep(0.2)
    os.kill(supervisor.pid, signal.SIGTERM)
    raise RuntimeError(f"the alliance was not up within {timeout_s:.0f} s:\n" + tail(workdir / "logs" / "supervisor.log", 15))


def down(workdir: Path, timeout_s: float = 60) -> list[str]:
    """Stop the supervisor, which stops its processes. If the supervisor is gone, stop the processes
    it recorded, each only if it is still the program it started. Returns what was stopped."""
    state = read_state(workdir)
    stopped = []
    pid = state.get("supervisor")
    if alive(pid, "scripts.up"):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while alive(pid, "scripts.up") and time.monotonic() < deadline:
            time.sleep(0.1)
        stopped.append(f"supervisor (pid {pid})")
    for proc in state.get("processes", []):
        if alive(proc.get("pid"), _marker(proc["name"])):
            with suppress(ProcessLookupError):  # the process and what it started (its own session)
                os.killpg(proc["pid"], signal.SIGINT if proc["name"] == "anvil" else signal.SIGTERM)
            stopped.append(f"{proc['name']} (pid {proc['pid']})")
    return stopped


# What each process's command line names, by its name or name prefix (a pid reused by another program is not ours).
_MARKERS = {"anvil": "anvil", "indexer": "settle", "trainer": "scripts.training", "superlink": "flower-superlink", "supernode-": "flower-supernode",
            "sender-": "gateway sender", "gateway-": "uvicorn"}


def _marker(name: str) -> str:
    return next(marker for key, marker in _MARKERS.items() if name == key or key.endswith("-") and name.startswith(key))


def status(workdir: Path) -> dict:
    """Each process: alive, healthy; each brand's chain account."""
    state = read_state(workdir)
    processes = []
    for proc in state.get("processes", []):
        running = alive(proc.get("pid"), _marker(proc["name"]))
        processes.append(proc | {"running": running, "healthy": running and (not proc["health"] or _healthy(proc["health"]))})
    return {"workdir": str(workdir), "supervisor": state.get("supervisor") if alive(state.get("supervisor"), "scripts.up") else None,
            "ready": bool(state.get("ready")), "processes": processes, "brands": state.get("brands", {})}


def tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(encoding=ENCODING, errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not found)"


if __name__ == "__main__":  # the supervisor: python -m scripts.up <workdir>/alliance.json
    sys.exit(supervise(AllianceSpec.model_validate_json(Path(sys.argv[1]).read_text(encoding=ENCODING))))
