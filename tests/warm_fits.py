"""A warm start for the test suite's `python -m lightclf` processes (a zygote, as Android starts apps).

Each such process spends about 6 s of CPU importing torch, Lightning (which imports torchmetrics,
torchvision, torch._dynamo and scipy.signal) and W&B before its first line of work, and the suite
starts over a hundred of them: the test's own fits and the fits a study runner or the tuner starts.
This server imports all that once per test worker; every `python -m lightclf ...` the tests start
then connects to it (tests/sitecustomize.py) and runs as a fresh fork of it:

    client (the process the test or the runner started)  --fds 0-2, argv, cwd, env, affinity-->  server
    server --fork--> monitor --fork--> worker: runs lightclf/__main__.py as `python -m` would

The worker exits the way `python -m lightclf` would (the interpreter's own shutdown: non-daemon
threads joined, atexit, exit status or death by signal), and the client ends with the same status.
Signals sent to the client (SIGTERM from a runner, SIGINT from a test) are forwarded to the worker;
if the client dies (SIGKILL), the monitor kills the worker. What is not the same as a cold start:
modules come imported (and their import-time warnings already shown), and what the interpreter
reads at start-up is applied after the fork: OMP_NUM_THREADS with torch.set_num_threads,
PYTHONUNBUFFERED by making stdout and stderr write through. Tests that are about a cold process (imports,
the packaging check, another interpreter) run cold: the client only attaches for this interpreter
and for `-m lightclf`, and LIGHTCLF_WARM_FITS="" turns it off.

The standard library's multiprocessing forkserver does the server half, but its children are
started by the parent Python that asked, not by an arbitrary `python -m lightclf` command line that a
study runner under test builds; this is the client half it lacks.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys

ADDRESS = "LIGHTCLF_WARM_FITS"  # the server's socket path; empty or unset: cold starts
PYTHON = "LIGHTCLF_WARM_FITS_PYTHON"  # the interpreter the server runs: others start cold
# The modules a fit, a study runner, the tuner or a report imports; the rest load in the worker.
PRELOAD = (
    "torch",
    "torchvision",
    "lightning.pytorch",
    "lightning.pytorch.cli",
    "timm",
    "wandb",
    "jsonargparse",
    "lightclf.cli",
    "lightclf.cli.lightning_cli",
    "lightclf.study.runner",
    "lightclf.study.tuning.cli",
    "scipy.stats",
    "statsmodels.stats.multitest",
    "optuna",
    # What a fit still imported on first use, measured (sys.modules before and after a smoke fit):
    # W&B's run internals, torch's extension loader (the dilated-conv kernel), the digits data set.
    "wandb.wandb_run",
    "wandb.apis.public",
    "wandb.sdk.launch",
    "torch.utils.cpp_extension",
    "sklearn.datasets",
    "lightclf.training.throughput",
)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_HEADER = struct.Struct("!q")
_STATUS = struct.Struct("!ii")  # (0, exit code) or (1, signal number)


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


# What the interpreter or a native library reads once, at start-up or import (in the server), and a
# fork cannot take from the client: a client whose values differ from the server's starts cold. The
# thread counts and PYTHONUNBUFFERED are applied in the worker instead; PYTHONPATH, cwd and the
# rest of the environment are the client's.
_APPLIED = {"PYTHONPATH", "PYTHONUNBUFFERED", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"}
_STARTUP_PREFIXES = (
    "PYTHON",
    "TORCH",
    "LD_",
    "MALLOC_",
    "GLIBC_",
    "OPENBLAS_",
    "MKL_",
    "KMP_",
    "GOMP_",
    "DNNL_",
    "ONEDNN_",
)
STARTUP = "LIGHTCLF_WARM_FITS_STARTUP"  # the server's start-up values, as startup_values() gives them


def startup_values(env: dict[str, str]) -> str:
    """The start-up variables of ``env`` (those a fork would not honour), as one comparable string."""
    chosen = {k: v for k, v in env.items() if k.startswith(_STARTUP_PREFIXES) and k not in _APPLIED}
    return json.dumps(chosen, sort_keys=True)


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


# -- client: runs at the start of a test's `python -m lightclf` (tests/sitecustomize.py) -------------
def attach(args: list[str]) -> None:
    """Hand this command to the warm server and end with the worker's status. Returns (and the
    interpreter starts the command cold) when there is no server for this interpreter, the start-up
    settings differ, or the server hangs up before a worker exists."""
    address = os.environ.get(ADDRESS)
    if (
        not address
        or os.environ.get(PYTHON) != sys.executable
        or "OMP_NUM_THREADS" not in os.environ  # cold, torch would pick the count: no way to match it
        or os.environ.get(STARTUP) != startup_values(dict(os.environ))
    ):
        return
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address)
    except OSError:
        conn.close()
        return
    ignored = [int(s) for s in FORWARDED if signal.getsignal(s) == signal.SIG_IGN]
    payload = json.dumps(
        {"args": args, "cwd": os.getcwd(), "env": dict(os.environ), "affinity": sorted(os.sched_getaffinity(0)),
         "ignored": ignored}
    ).encode()  # fmt: skip
    worker: list[int] = []
    pending: list[int] = []

    def forward(signum, _frame):
        if not worker:
            pending.append(signum)
            return
        try:
            os.kill(worker[0], signum)
        except ProcessLookupError:  # it has just ended: its status is on the way
            pass

    handlers = {s: signal.signal(s, forward) for s in FORWARDED if s not in ignored}
    try:
        socket.send_fds(conn, [_HEADER.pack(len(payload))], [0, 1, 2])
        conn.sendall(payload)
        (pid,) = _HEADER.unpack(_recv_exactly(conn, _HEADER.size))
    except (OSError, EOFError):  # no worker was started (its monitor kills it otherwise): start cold
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        conn.close()
        for signum in pending:
            os.kill(os.getpid(), signum)
        return
    try:
        worker.append(pid)
        for signum in pending:
            forward(signum, None)
        kind, value = _STATUS.unpack(_recv_exactly(conn, _STATUS.size))
    except BaseException as err:  # never fall back to a cold start once a worker ran: it would run twice
        os.write(2, f"warm fit server: lost the worker ({err!r})\n".encode())
        os._exit(1)
    if kind == 1:  # the worker died by a signal: so does this process
        if value not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(value, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [value])
        os.kill(os.getpid(), value)
        os._exit(128 + value)
    os._exit(value)


# -- server -------------------------------------------------------------------------------------
def serve(address: str, parent: int) -> dict:
    """Import once, then fork a monitor per client; returns only in a worker, with its request."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # as lightclf's main sets it before torch loads
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)  # clients queue while the imports below run
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError as err:  # an extra not installed: the worker imports (and fails) as cold
            print(f"warm fit server: not preloaded: {name} ({err})", file=sys.stderr)
    import torch

    threads = len(os.listdir("/proc/self/task"))
    if threads != 1 or torch.cuda.is_initialized():  # a fork would copy a half-held lock: serve nothing
        print(f"warm fit server: {threads} threads or CUDA up after the imports; clients start cold", file=sys.stderr)
        os._exit(1)  # the socket then refuses, and every client starts cold
    print("warm fit server: ready", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    while True:
        ready, _, _ = select.select([listener], [], [], 1.0)
        while True:  # reap finished monitors
            try:
                done, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not done:
                break
        if os.getppid() != parent:  # the test worker is gone
            os._exit(0)
        if not ready:
            continue
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            return _monitor(conn)
        conn.close()


def _monitor(conn: socket.socket) -> dict:
    """Fork the worker, tell the client its pid, and report how it ended; kill it (and its group) if
    the client dies first or anything here fails. Returns only in the worker."""
    pid = None
    try:
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        if not header:
            os._exit(0)  # the client left before asking
        (size,) = _HEADER.unpack(header + _recv_exactly(conn, _HEADER.size - len(header)))
        request = json.loads(_recv_exactly(conn, size))
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            os.setpgid(0, 0)  # its own group, so that a dying client takes whatever it started with it
            conn.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            return request
        try:
            os.setpgid(pid, pid)  # both sides: the group exists before either goes on
        except OSError:  # it has already set it, or already ended
            pass
        for fd in fds:
            os.close(fd)
        conn.sendall(_HEADER.pack(pid))
        print(f"warm fit server: worker {pid}: lightclf {' '.join(request['args'])}", file=sys.stderr, flush=True)
        exited = os.pidfd_open(pid)
        while True:
            ready, _, _ = select.select([conn, exited], [], [])
            if exited in ready:
                # Read the status without reaping: the pid stays this worker's until the client knows.
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                break
            try:
                alive = conn.recv(1)
            except OSError:
                alive = b""
            if not alive:  # the client died (SIGKILL, or killpg of its group): so do the worker's group
                raise ConnectionResetError
        killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
        conn.sendall(_STATUS.pack(int(killed), info.si_status))
        _, _, usage = os.wait4(pid, 0)
        cpu = usage.ru_utime + usage.ru_stime  # with its waited children: what the suite's time goes to
        test = request.get("env", {}).get("PYTEST_CURRENT_TEST", "?").rpartition(" ")[0]
        print(f"warm fit server: worker {pid} ended, cpu {cpu:.2f} s, test {test}", file=sys.stderr, flush=True)
    except BaseException as err:
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not isinstance(err, ConnectionResetError):
            import traceback

            traceback.print_exc()
    os._exit(0)


def _die_with_parent() -> None:
    """SIGKILL this process when its monitor dies (Linux's PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def become(request: dict) -> None:
    """Turn this fork into the client's `python -m lightclf ARGS` and run it."""
    import random
    import runpy

    import numpy
    import torch

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"], *extra, *(p for p in sys.path[1:] if p not in extra)]
    os.sched_setaffinity(0, request["affinity"])
    for signum in FORWARDED:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in request["ignored"]:
        signal.signal(signum, signal.SIG_IGN)
    torch.set_num_threads(int(request["env"]["OMP_NUM_THREADS"]))  # OpenMP read it when torch loaded
    if request["env"].get("PYTHONUNBUFFERED"):  # read at start-up, so by the server: apply it here
        sys.stdout.reconfigure(line_buffering=True, write_through=True)
        sys.stderr.reconfigure(line_buffering=True, write_through=True)
    random.seed()  # as a fresh process: its own entropy (random reseeds on fork; numpy does not)
    numpy.random.seed()
    sys.argv = ["-m", *request["args"]]  # run_module sets argv[0] to the module's file, as -m does
    runpy.run_module("lightclf", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    become(serve(sys.argv[1], os.getppid()))
