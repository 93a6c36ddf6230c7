"""A real two-node Ray cluster and an MLflow tracking server on this machine (tests/test_cluster.py, the
cluster_scale benchmark).

What it starts, each process in a session of its own so that it can be found and stopped again:

- a Ray head (``ray start --head``, 1 CPU, its own ``--temp-dir`` and free ports, the dashboard on
  127.0.0.1 for Ray Jobs) and a second node (``ray start --address``, 1 CPU, the custom resource
  ``node2``, its own temp dir). Ray turns ``--node-ip-address 127.0.0.1`` into the machine's
  routable address on purpose (ray-project/ray#26293), so the nodes listen there too: token
  authentication (``RAY_AUTH_MODE=token`` and a token file of this cluster's own) is what keeps
  other processes out, and every client of the suite carries the same two variables.
- ``mlflow server`` on 127.0.0.1 with a SQLite backend and artifact proxying to a folder, with
  ``--allowed-hosts`` as docs/cluster.md asks for a server reached by name.

No shared file system: when this machine allows private mount namespaces (``unshare -m``, root in
CI), both Ray nodes run in one each, with an empty tmpfs mounted over ``driver_only``; a worker that
reads or writes the driver's result store there sees (and writes into) its own empty folder, which
the driver never sees.

``ray stop`` is never used: it kills every Ray process of the machine, other users' included. Stopping
is by session: SIGTERM, then SIGKILL for whatever is left, then a check that nothing of this
cluster survived.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
CHECKOUT = Path(__file__).resolve().parents[1]  # the code under test: drivers, nodes and workers import this copy
# A killed raylet is noticed within ~5 s instead of ~15 s: checked every second, dead after 5 refused
# checks in a row. The timeout stays long, so that a busy machine's slow answer is not a death.
FAST_HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "10000",
               "RAY_health_check_failure_threshold": "5"}
ALLOWED_HOSTS = "mlflow.internal:*,127.0.0.1:*,localhost:*"

BLOCKER = """
import os, sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False, namespace="mvp-cluster-suite")
(head,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "node2" not in n["Resources"]]
@ray.remote(num_cpus=1, max_restarts=0)
class Blocker:
    def pid(self):
        return os.getpid()
blocker = Blocker.options(name="blocker", lifetime="detached",
                          scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
print(ray.get(blocker.pid.remote()))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of one session."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True, check=True).stdout
    return [int(pid) for pid, s, stat in (line.split() for line in out.splitlines())
            if int(s) == sid and not stat.startswith("Z")]


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (this cluster's root folder)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        pid, stat, args = line.strip().split(None, 2) if len(line.split()) >= 3 else (*line.split(), "")
        if text in args and not stat.startswith("Z") and int(pid) != os.getpid():
            found.append(int(pid))
    return found


def stop_session(sid: int, grace: float = 5.0, timeout: float = 20.0) -> None:
    """SIGTERM a session's processes, SIGKILL what is left after ``grace`` s; raises if any survive."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, timeout)):
        deadline = time.monotonic() + wait
        while pids := session_pids(sid):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if not session_pids(sid):
            return
    raise RuntimeError(f"processes of session {sid} survived SIGKILL: {session_pids(sid)}")


def can_hide_folders() -> bool:
    """Whether this machine lets us give a process a private mount namespace (root or CAP_SYS_ADMIN)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@dataclass
class Service:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen | None = None

    @property
    def sid(self) -> int:
        assert self.popen is not None
        return self.popen.pid  # started with start_new_session: its pid is its session id


@dataclass
class LocalCluster:
    """Head + second node + MLflow server under one short root folder (Unix socket paths must stay short)."""

    root: Path
    hide: bool = True  # run the Ray nodes with driver_only hidden (when the machine allows it)
    address: str = ""
    dashboard: str = ""
    tracking_uri: str = ""
    services: dict[str, Service] = field(default_factory=dict)
    sessions: list[int] = field(default_factory=list)  # every session started, for the final sweep

    @classmethod
    def create(cls, hide: bool = True) -> LocalCluster:
        root = Path(tempfile.mkdtemp(prefix="mvpc-", dir="/tmp"))
        cluster = cls(root, hide and can_hide_folders())
        cluster.driver_only.mkdir()
        cluster.token.write_text(secrets.token_hex(32))
        return cluster

    # -- paths and environment ----------------------------------------------------------------

    @property
    def token(self) -> Path:
        return self.root / "token"

    @property
    def driver_only(self) -> Path:
        """Where drivers keep their result stores; hidden from both Ray nodes when ``hide``."""
        return self.root / "driver"

    def env(self, **extra: str | None) -> dict[str, str]:
        """The environment of every process of the suite: token authentication on, one thread each.

        ``extra``: more variables; None removes one.
        """
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token), RAY_USAGE_STATS_ENABLED="0",
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                   PYTHONPATH=os.pathsep.join([str(CHECKOUT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        env.update({k: v for k, v in extra.items() if v is not None})
        return {k: v for k, v in env.items() if extra.get(k, "") is not None}

    # -- starting ------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], hidden: bool = False) -> Service:
        if hidden and self.hide:  # a private mount namespace with an empty tmpfs over driver_only
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    'mount -t tmpfs -o size=64m mvp-no-shared-fs "$1" && shift && exec "$@"', "sh",
                    str(self.driver_only), *argv]
        log = self.root / f"{name}.log"
        service = Service(name, argv, log)
        with log.open("ab") as out:
            service.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True, cwd=self.root)
        self.services[name] = service
        self.sessions.append(service.sid)
        return service

    def _ray_start(self, name: str, args: list[str], timeout: float = 180, attempts: int = 4) -> None:
        """``ray start`` for one node; up to ``attempts`` tries when one times out.

        ``ray start`` gives the raylet a fixed 30 s to register with the GCS, which a machine with a
        load of 20 on 2 cores can miss; the failed attempt's processes are stopped first.
        """
        for attempt in range(1, attempts + 1):
            ports = ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port",
                     str(free_port()), "--runtime-env-agent-port", str(free_port()), "--metrics-export-port",
                     str(free_port())]
            argv = [str(BIN / "ray"), "start", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                    "--temp-dir", str(self.root / name), "--object-store-memory", str(100 * 2**20),
                    "--disable-usage-stats", *ports, *args]
            service = self._spawn(name, argv, self.env(**FAST_HEALTH), hidden=True)
            assert service.popen is not None
            try:
                code = service.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
            if code == 0:
                return
            stop_session(service.sid)
            if attempt == attempts:
                raise RuntimeError(f"{name}: `ray start` exited {code}:\n{service.log.read_text()[-3000:]}")

    def start_head(self) -> None:
        port, dash = free_port(), free_port()
        self._ray_start("head", ["--head", "--port", str(port), "--include-dashboard", "true",
                                 "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                                 "--ray-client-server-port", str(free_port())])
        self.address, self.dashboard = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"

    def start_node2(self) -> None:
        self._ray_start("node2", ["--address", self.address, "--resources", json.dumps({"node2": 1})])

    def start_mlflow(self, port: int | None = None, wait: bool = True) -> None:
        """Starts (or restarts, on the same port and store) the tracking server; ``wait``: until it answers."""
        port = port or free_port()
        store = self.root / "mlflow"
        store.mkdir(exist_ok=True)
        argv = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                "--artifacts-destination", str(store / "artifacts"), "--serve-artifacts",
                "--allowed-hosts", ALLOWED_HOSTS]
        # mvp uses none of MLflow's server-side jobs; their runner would start ~8 more processes.
        self._spawn("mlflow", argv, self.env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
        self.tracking_uri = f"http://127.0.0.1:{port}"
        if wait:
            self.wait_http(f"{self.tracking_uri}/health", "mlflow")

    def wait_http(self, url: str, name: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except (urllib.error.URLError, OSError) as err:
                service = self.services[name]
                if service.popen is not None and service.popen.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited {service.popen.returncode}:\n{service.log.read_text()[-3000:]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not answer {url} within {timeout} s") from err
                time.sleep(0.3)

    def start(self) -> LocalCluster:
        """MLflow and the head at once (MLflow does not need Ray), then the second node."""
        self.start_mlflow(wait=False)
        self.start_head()
        self.start_node2()
        self.wait_http(f"{self.tracking_uri}/health", "mlflow")
        return self

    # -- faults --------------------------------------------------------------------------------

    def stop_mlflow(self) -> int:
        """SIGTERM the tracking server (and its uvicorn worker); returns its port for the restart."""
        service = self.services["mlflow"]
        stop_session(service.sid)
        assert service.popen is not None
        service.popen.wait()
        return int(self.tracking_uri.rsplit(":", 1)[1])

    def node_pids(self, name: str, needle: str) -> list[int]:
        """Processes of a node's session whose command line contains ``needle`` (e.g. ``raylet``)."""
        out = subprocess.run(["ps", "-ww", "-eo", "pid=,sid=,args="], capture_output=True, text=True, check=True).stdout
        sid = self.services[name].sid
        return [int(line.split(None, 2)[0]) for line in out.splitlines()
                if int(line.split()[1]) == sid and needle in line.split(None, 2)[2]]

    def kill_raylet(self, name: str = "node2") -> int:
        """SIGKILL a node's raylet (as a lost machine); its workers die with it. Returns the raylet's pid.

        Found by its socket path, which names the node's own temp dir.
        """
        out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
        mark = f"--raylet_socket_name={self.root / name}/"
        (pid,) = [int(line.split(None, 1)[0]) for line in out.splitlines() if mark in line]
        os.kill(pid, signal.SIGKILL)
        return pid

    def occupy_head_cpu(self) -> int:
        """A detached actor holding the head's only CPU, so the next model worker must start on node2.

        Returns its pid: SIGKILL it (it is never restarted) to free the CPU again.
        """
        out = self.run([sys.executable, "-c", BLOCKER, self.address], timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"could not place the blocker on the head:\n{out.stdout[-3000:]}")
        return int(out.stdout.strip().splitlines()[-1])

    # -- drivers -------------------------------------------------------------------------------

    def run(self, argv: list[str], timeout: float = 300, cwd: Path | None = None,
            **env: str | None) -> subprocess.CompletedProcess:
        """A command (``mvp submit``, ``ray job submit``) with the suite's environment, in a session of its own."""
        popen = self.popen(argv, cwd=cwd, **env)
        try:
            out, _ = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_session(popen.pid)
            out, _ = popen.communicate()
            raise AssertionError(f"{argv[:4]} ran over {timeout} s:\n{out[-4000:]}") from None
        return subprocess.CompletedProcess(argv, popen.returncode, out, "")

    def popen(self, argv: list[str], cwd: Path | None = None, log: Path | None = None,
              **env: str | None) -> subprocess.Popen:
        stdout = log.open("w") if log is not None else subprocess.PIPE
        popen = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.STDOUT, text=True, env=self.env(**env),
                                 cwd=cwd or self.root, start_new_session=True)
        self.sessions.append(popen.pid)
        return popen

    def mvp(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mvplatform.cli", *args]

    # -- stopping ------------------------------------------------------------------------------

    def stop(self) -> list[int]:
        """Stops every session this cluster started; returns pids still mentioning its root (should be none)."""
        errors = []
        for sid in reversed(self.sessions):  # drivers first, then the second node, the head, MLflow
            try:
                stop_session(sid)
            except RuntimeError as exc:
                errors.append(str(exc))
        for service in self.services.values():
            if service.popen is not None and service.popen.poll() is None:
                service.popen.kill()
                service.popen.wait()
        deadline = time.monotonic() + 10
        while (left := pids_mentioning(str(self.root))) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.3)
        if errors:
            raise RuntimeError("; ".join(errors))
        return pids_mentioning(str(self.root))

    def logs(self, tail: int = 2000) -> str:
        """The services' own output (for a failing test's message)."""
        return "\n".join(f"== {s.name}\n{s.log.read_text(errors='replace')[-tail:]}" for s in self.services.values()
                         if s.log.exists())
