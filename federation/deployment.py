"""Deployment mode: one ``flower-superlink`` (the alliance operator) and one ``flower-supernode``
per brand, as separate processes, running the same ServerApp / ClientApp as the simulation.

:class:`LocalDeployment` starts them on loopback with ``--insecure`` (used by the tests and for
trying things out); the production setup is described below.

Production setup (TLS + SuperNode authentication)
-------------------------------------------------
Operator host (SuperLink)::

    # 1. TLS: a CA the brands trust, and a server certificate for the SuperLink's DNS name
    openssl req -x509 -newkey rsa:4096 -nodes -days 365 -subj "/CN=alliance-ca" \\
        -keyout ca.key -out ca.crt
    openssl req -newkey rsa:4096 -nodes -subj "/CN=superlink.alliance.example" \\
        -keyout server.key -out server.csr
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \\
        -extfile <(printf "subjectAltName=DNS:superlink.alliance.example") -out server.pem

    # 2. SuperNode authentication: each brand makes an ECDSA key pair on its own host and gives
    #    the operator only the public key (OpenSSH format); the operator registers it.
    #    (brand host)  ssh-keygen -t ecdsa -b 384 -N "" -f brand-grocery
    flwr supernode register brand-grocery.pub <superlink-connection>   # or --auth-list-public-keys

    flower-superlink \\
        --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key \\
        --enable-supernode-auth \\
        --database /var/lib/alliance/superlink.db \\
        --host 0.0.0.0 --port 9092 \\
        --disable-runtime-dependency-installation

Each brand's host (SuperNode, next to the brand's gateway database)::

    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 flower-supernode \\
        --superlink superlink.alliance.example:9092 \\
        --root-certificates ca.crt \\
        --auth-supernode-private-key brand-grocery \\
        --auth-supernode-public-key brand-grocery.pub \\
        --node-config "brand-id='grocery' partition-id=0 num-partitions=5" \\
        --host 127.0.0.1 --port 9094

Submitting a run (operator; the SuperLink connection lives in ``$FLWR_HOME/config.toml``)::

    [superlink.alliance]
    address = "superlink.alliance.example:9092"
    root-certificates = "/etc/alliance/ca.crt"

    flwr run . alliance --run-config "task='churn' num-rounds=20 dp-epsilon=4.0 secagg=true" --stream

Notes: the SuperNode only dials out (no inbound port at the brand); its ``--port`` serves the
local ClientApp runtime API and must not be exposed.  ``release-dir`` should be an absolute path
on the operator host.  Brands that may drop out need ``min-brands`` below the alliance size and
a ``round-timeout`` (the SuperLink marks a SuperNode offline after missed heartbeats).

Releases: a deployed ServerApp runs in its own process under the SuperLink and holds no brand's
gateway, so it writes the release record and model file to ``release-dir``.  The operator ships
both to the participating brands, and each brand records the release itself, in its audit log and
anchored on chain with its own key, and installs it for campaign targeting::

    alliance gateway record-release redeem-logreg-gateway-v3.release.json   # GATEWAY_* of the brand

(:func:`federation.releases.record_release`; it refuses a model file that does not match the
record's SHA-256 or a release the brand took no part in; recording it again changes nothing).
The simulation and the demo hold every gateway and publish through the same function.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from contracts.chain import free_port
from federation.config import FLWR_APP_TOML, run_config_arg

BIN = Path(sys.executable).parent
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def make_app_dir(dest: str | os.PathLike[str], packages: tuple[str, ...] = ("federation", "privacy")) -> Path:
    """A Flower app directory (pyproject with the ``[tool.flwr.app]`` block plus the code)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "loyalty-alliance"\nversion = "0.1.0"\n'
        'description = "federated propensity models"\nlicense = "MIT"\ndependencies = []\n\n' + FLWR_APP_TOML
    )
    for pkg in packages:
        shutil.copytree(
            PROJECT_ROOT / pkg,
            dest / pkg,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    return dest


class LocalDeployment:
    """A SuperLink and N SuperNodes on loopback (``--insecure``), all in their own sessions.

    Use as a context manager; every process started here is stopped on exit.
    """

    def __init__(
        self,
        num_brands: int,
        workdir: str | os.PathLike[str] | None = None,
        node_configs: list[str] | None = None,
        *,
        simulation: bool = False,
        num_cpus: int = 2,
    ):
        """``simulation=True``: a SuperLink in simulation mode (``flower-superlink --simulation``)
        whose ``num_brands`` virtual SuperNodes run on Ray; no SuperNode processes are started.
        This is what ``flwr run`` does with its managed local SuperLink, but on free ports and
        stoppable, instead of the fixed 39091/39093 the CLI's own local SuperLink uses."""
        self.num_brands = num_brands
        self.simulation = simulation
        self.num_cpus = num_cpus
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="alliance-deploy-"))
        self.flwr_home = self.workdir / "flwr-home"
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.node_configs = node_configs or [f"partition-id={k} num-partitions={num_brands}" for k in range(num_brands)]
        self.superlink: subprocess.Popen[bytes] | None = None
        self.supernodes: list[subprocess.Popen[bytes]] = []
        self.env = dict(os.environ)
        self.env.update(
            {
                "FLWR_HOME": str(self.flwr_home),
                "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                "FLWR_DISABLE_UPDATE_CHECK": "1",
                "FLWR_TELEMETRY_ENABLED": "0",
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )

    # -- processes

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / log_name, "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            args, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start(self) -> LocalDeployment:
        args = [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.simulation:
            args.append("--simulation")
        self.superlink = self._spawn(args, "superlink.log")
        wait_port(self.port)
        if not self.simulation:
            for k, node_config in enumerate(self.node_configs):
                self.start_supernode(k, node_config)
        conf = f'[superlink]\ndefault = "alliance"\n\n[superlink.alliance]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        if self.simulation:
            conf += (
                f"options.num-supernodes = {self.num_brands}\n"
                "options.backend.client-resources.num-cpus = 1\n"
                "options.backend.client-resources.num-gpus = 0\n"
                f"options.backend.init-args.num-cpus = {self.num_cpus}\n"
                "options.backend.init-args.num-gpus = 0\n"
            )
        (self.flwr_home / "config.toml").write_text(conf)
        return self

    def start_supernode(self, k: int, node_config: str) -> subprocess.Popen[bytes]:
        proc = self._spawn(
            [
                str(BIN / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{self.port}",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--node-config",
                node_config,
            ],
            f"supernode-{k}.log",
        )
        self.supernodes.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Stop one process we started, with its children (its own session / process group)."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.supernodes:
            self.kill(proc, signal.SIGTERM)
        if self.superlink is not None:
            self.kill(self.superlink, signal.SIGTERM)

    def __enter__(self) -> LocalDeployment:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- runs

    def run_command(self, app_dir: str | os.PathLike[str], run_config: dict[str, Any]) -> list[str]:
        return [str(BIN / "flwr"), "run", str(app_dir), "alliance", "--run-config", run_config_arg(run_config), "--stream"]

    def submit(self, app_dir: str | os.PathLike[str], run_config: dict[str, Any]) -> subprocess.Popen[str]:
        """``flwr run <app> alliance --stream`` as a child process (stdout: the run's log)."""
        return subprocess.Popen(
            self.run_command(app_dir, run_config),
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.workdir.glob("*.log")))
