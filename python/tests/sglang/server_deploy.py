"""Real SGLang servers on this machine: a plain server, and prefill + decode
with ``--disaggregation-transfer-backend mori|mooncake|nixl`` behind
``sglang-router --pd-disaggregation``.

Used by test_sglang_servers.py, the demo (python/examples/pd_servers_demo.py)
and the TTFT benchmark (bench/ttft.py). Every server runs in its own process
group (``start_new_session``) on a free port, its output goes to a log file,
readiness is polled over HTTP with a deadline (a server that exits early
fails at once with the tail of its log), and ``stop()`` kills the whole
group: SIGTERM, then SIGKILL.

SGLang runs unchanged. What a CPU-only machine needs (README.md here):
``SGLANG_USE_CPU_ENGINE=1``; a pure-torch stand-in for ``sgl_kernel`` (standin/, put on the servers' PYTHONPATH here and
nowhere else: SGLang's CPU kernels are not on PyPI); a small KV pool
(``--mem-fraction-static``/``--max-total-tokens``); prefill with
``--disable-overlap-schedule``; decode with
``--disaggregation-decode-retraction-backup cpu_tensor``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(HERE, "standin")
HOST = "127.0.0.1"


# sglang-router flags that make it notice a dead or restarted worker within
# seconds (defaults: health checks every 60 s, 3 failures to mark a worker
# down, 2 successes to take it back, circuit breaker open for 60 s).
FAST_RECOVERY_ROUTER_ARGS = [
    "--health-check-interval-secs", "1",
    "--health-failure-threshold", "1",
    "--health-success-threshold", "1",
    "--cb-timeout-duration-secs", "5",
]


class ServerError(RuntimeError):
    """A server did not start, died, or answered an HTTP error."""


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of every SGLang server process."""
    env = dict(os.environ)
    env["SGLANG_USE_CPU_ENGINE"] = "1"
    env.setdefault("MORI_GO_LOG_LEVEL", "info")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("NO_COLOR", "1")
    env.update(extra or {})
    # the stand-in first, then what the caller (or the environment) adds
    env["PYTHONPATH"] = os.pathsep.join(p for p in (STANDIN, env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class ServerOptions:
    """Options shared by every server of a deployment."""

    model: str
    max_total_tokens: int = 12288
    chunked_prefill_size: int = 1024
    max_running_requests: int = 8
    # SGLang sizes the KV pool as what is free after loading the weights
    # minus (1 - this) x what was free before: with other processes
    # allocating meanwhile (several servers starting at once), a small value
    # fails ("Loaded weights leave no GPU memory for the KV cache"). The pool
    # is capped by max_total_tokens anyway.
    mem_fraction_static: float = 0.3
    log_level: str = "info"
    extra_args: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)

    def args(self) -> List[str]:
        return [
            "--model-path", self.model,
            "--device", "cpu",
            "--dtype", "float32",
            "--disable-cuda-graph",
            "--attention-backend", "torch_native",
            "--max-total-tokens", str(self.max_total_tokens),
            "--mem-fraction-static", str(self.mem_fraction_static),
            "--max-running-requests", str(self.max_running_requests),
            "--chunked-prefill-size", str(self.chunked_prefill_size),
            "--random-seed", "0",
            # an idle scheduler otherwise polls without pause (about 20 % of
            # a core each here); it sleeps only when it has no request at
            # all, and wakes on the next one
            "--sleep-on-idle",
            "--log-level", self.log_level,
            *self.extra_args,
        ]


class Process:
    """One server process group with its log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Dict[str, str], log_dir: str, url: str) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.url = url
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        self.log_offset = 0  # size of the log when the current run started

    def start(self) -> "Process":
        if self.proc is not None and self.proc.poll() is None:
            raise ServerError(f"{self.name} is already running (pid {self.proc.pid})")
        self.starts += 1
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        log = open(self.log_path, "ab")
        self.log_offset = log.tell()
        log.write(f"\n===== start {self.starts}: {' '.join(self.argv)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def log_text(self, since: int = 0) -> str:
        """The log from byte ``since`` on (the current run's: log_offset)."""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")

    def wait_log(self, needle: str, timeout: float, since: Optional[int] = None) -> None:
        """Until ``needle`` appears in the log (from ``since``, by default
        the current run's start)."""
        since = self.log_offset if since is None else since
        deadline = time.monotonic() + timeout
        while needle not in self.log_text(since):
            if time.monotonic() > deadline:
                raise ServerError(f"{self.name}: no {needle!r} in the log after {timeout:.0f} s:\n{self.log_tail()}")
            if not self.alive():
                raise ServerError(f"{self.name} exited while waiting for {needle!r}:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the server and its scheduler,
        detokenizer... children)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds, reap."""
        if self.proc is None:
            return
        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # children may outlive the leader: always make sure the group is gone
        self.kill(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def wait_ready(self, path: str, timeout: float, ok=None) -> Any:
        """Poll GET ``path`` until it answers 200 (and ``ok(body)`` holds);
        fail at once if the process exits."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerError(
                    f"{self.name} exited with {self.proc.returncode if self.proc else None} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + path, timeout=5) as r:
                    body = r.read()
                    if r.status == 200 and (ok is None or ok(body)):
                        return body
                    last = f"HTTP {r.status}: {body[:200]!r}"
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.5)
        raise ServerError(f"{self.name} not ready after {timeout:.0f} s ({last}); log {self.log_path}:\n{self.log_tail()}")


def _launch_server(name: str, opts: ServerOptions, log_dir: str, role_args: List[str],
                   env: Optional[Dict[str, str]] = None) -> Process:
    port = free_port()
    argv = [sys.executable, "-m", "sglang.launch_server", *opts.args(), "--host", HOST, "--port", str(port),
            *role_args]
    return Process(name, argv, server_env({**opts.env, **(env or {})}), log_dir, f"http://{HOST}:{port}")


def plain_server(opts: ServerOptions, log_dir: str, name: str = "plain") -> Process:
    """A standalone ``launch_server`` (prefill and decode in one)."""
    return _launch_server(name, opts, log_dir, [])


@dataclass
class PD:
    """Prefill, decode and the router of one PD deployment."""

    prefill: Process
    decode: Process
    router: Process
    backend: str
    bootstrap_port: int

    @property
    def url(self) -> str:
        return self.router.url

    def processes(self) -> List[Process]:
        return [self.prefill, self.decode, self.router]


def pd_deployment(opts: ServerOptions, log_dir: str, backend: str = "mori", prefix: str = "pd",
                  mini_lb: bool = False, router_args: Sequence[str] = ()) -> PD:
    """Prefill + decode with ``--disaggregation-transfer-backend backend`` and
    ``sglang_router.launch_router --pd-disaggregation`` in front (not started)."""
    boot = free_port()
    common = ["--disaggregation-transfer-backend", backend]
    prefill = _launch_server(
        f"{prefix}-prefill", opts, log_dir,
        ["--disaggregation-mode", "prefill", *common, "--disaggregation-bootstrap-port", str(boot),
         "--disable-overlap-schedule"],
    )
    decode = _launch_server(
        f"{prefix}-decode", opts, log_dir,
        ["--disaggregation-mode", "decode", *common, "--disaggregation-decode-retraction-backup", "cpu_tensor"],
    )
    rport = free_port()
    argv = [sys.executable, "-m", "sglang_router.launch_router", "--pd-disaggregation",
            "--prefill", prefill.url, str(boot), "--decode", decode.url,
            "--host", HOST, "--port", str(rport),
            # its metrics listener defaults to port 29000: two routers on one
            # machine (two deployments, or tests next to a benchmark) collide
            "--prometheus-host", HOST, "--prometheus-port", str(free_port()), *router_args]
    if mini_lb:
        argv.append("--mini-lb")
    router = Process(f"{prefix}-router", argv, server_env(opts.env), log_dir, f"http://{HOST}:{rport}")
    return PD(prefill, decode, router, backend, boot)


def start_all(procs: Sequence[Process], timeout: float = 300.0) -> None:
    """Start the SGLang servers of ``procs`` together (their start-up is
    mostly imports: they overlap), wait for /health of each, then start and
    wait for the routers."""
    servers = [p for p in procs if "launch_server" in " ".join(p.argv)]
    routers = [p for p in procs if p not in servers]
    for p in servers:
        p.start()
    for p in servers:
        p.wait_ready("/health", timeout)
    for r in routers:
        r.start()
    for r in routers:
        r.wait_ready("/health", timeout)


def wait_router_workers(pd: PD, timeout: float = 120.0) -> None:
    """Until a request goes through the router (its workers registered and
    healthy): one greedy token of a short prompt."""
    deadline = time.monotonic() + timeout
    last: Exception = ServerError("no attempt")
    while time.monotonic() < deadline:
        try:
            generate(pd.url, [1, 2, 3, 4], max_new_tokens=1, timeout=30)
            return
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
            time.sleep(1.0)
    raise ServerError(f"router {pd.url} never served a request: {last}\nrouter log:\n{pd.router.log_tail()}")


def generate(url: str, input_ids: Optional[Sequence[int]], max_new_tokens: int = 16, timeout: float = 120.0,
             text: Optional[str] = None) -> Dict[str, Any]:
    """POST /generate of token ids (or of ``text``), greedy; the JSON
    answer. HTTP errors raise ServerError with the body."""
    body: Dict[str, Any] = {
        "sampling_params": {"temperature": 0, "max_new_tokens": max_new_tokens, "ignore_eos": True},
    }
    if text is not None:
        body["text"] = text
    else:
        body["input_ids"] = list(input_ids or [])
    req = urllib.request.Request(url + "/generate", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise ServerError(f"HTTP {e.code} from {url}/generate: {e.read()[:500]!r}") from e


def output_ids(answer: Dict[str, Any]) -> List[int]:
    """The generated token ids of a /generate answer."""
    ids = answer.get("output_ids")
    if ids is None:
        raise ServerError(f"no output_ids in answer: {str(answer)[:300]}")
    return list(ids)


def stop_all(procs: Sequence[Process]) -> None:
    """Stop routers first, then servers; never raises."""
    for p in sorted(procs, key=lambda p: "router" not in p.name):
        with contextlib.suppress(Exception):
            p.stop()


@contextlib.contextmanager
def running(procs: Sequence[Process], timeout: float = 300.0) -> Iterator[None]:
    """Start ``procs`` (start_all) and stop them all on the way out, also on
    errors and KeyboardInterrupt."""
    try:
        start_all(procs, timeout)
        yield
    finally:
        stop_all(procs)
