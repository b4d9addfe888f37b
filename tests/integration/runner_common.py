"""Shared parts of the Runner black-box tests (tests/integration/test_runner_*.py).

  config_yaml(modules, **limits)  a prismqd config (JSON, which is YAML) with these
                                  modules and limits
  child_module(id, **extra)       a module running runner_child.py ACTION ARG
  Client(server)                  a Runner stub with helpers; cancels what it started
                                  when closed
  Gate()                          a unix socket that `gate` children connect to and
                                  wait on until the test lets them go
  split_final(chunks)             (data chunks, the final chunk's run or None)
  alive, group_alive, zombies_of, thread_count    /proc probes
  poll_until(pred, what)          bounded polling, for states with no event
  mode_env(mode)                  the server environment for a PRISMQ_RUN_MODE
  RunnerMixin                     for a ServerTestCase: self.c (a Client, closed after
                                  each test), own_server(), gate(), assertCode()

The behaviour tests themselves are mixins in runner_behaviour.py and runner_load.py,
made concrete once per run mode by the test_runner_*.py files.
"""

import json
import os
import socket
import sys
import time

import grpc

from prismq_testlib import WAIT, Server, protos, temp_dir

pb = protos()
R = pb.runner_pb2

QUEUED = R.RUN_STATUS_QUEUED
RUNNING = R.RUN_STATUS_RUNNING
COMPLETED = R.RUN_STATUS_COMPLETED
FAILED = R.RUN_STATUS_FAILED
CANCELLED = R.RUN_STATUS_CANCELLED
TIMED_OUT = R.RUN_STATUS_TIMED_OUT
TERMINAL = {COMPLETED, FAILED, CANCELLED, TIMED_OUT, R.RUN_STATUS_LOST}
STDOUT = R.OUTPUT_STREAM_STDOUT
STDERR = R.OUTPUT_STREAM_STDERR

PY = "/usr/bin/python3"
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner_child.py")


def status_name(st):
    return R.RunStatus.Name(st)


def child_module(mid, **extra):
    """Module `mid` running runner_child.py {action} {arg} (arg defaults to "-");
    `extra` keys (timeout_ms, max_concurrent, env, ...) are added to the module."""
    m = {"id": mid, "argv": [PY, CHILD, "{action}", "{arg}"],
         "parameters": [{"name": "action", "required": True, "pattern": "[a-z0-9_]+"},
                        {"name": "arg", "default": "-"}]}
    m.update(extra)
    return m


def config_yaml(modules, sections=None, **limits):
    """A config file text: JSON is a YAML flow document, and saves us quoting rules.
    `sections` adds top-level keys (shutdown, retention, cgroups...)."""
    cfg = {"modules": list(modules)}
    if limits:
        cfg["limits"] = limits
    cfg.update(sections or {})
    return json.dumps(cfg, indent=1)


def mode_env(mode):
    return {"PRISMQ_RUN_MODE": mode}


# -- /proc probes ------------------------------------------------------------------

def _stat(pid):
    """(state, ppid, pgid) of pid, or None if there is no such process."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces
    return rest[0], int(rest[1]), int(rest[2])


def alive(pid):
    """True if pid exists and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def group_alive(pgid):
    """The pids of live (non-zombie) processes in process group pgid."""
    out = []
    for pid in _all_pids():
        st = _stat(pid)
        if st is not None and st[2] == pgid and st[0] not in ("Z", "X"):
            out.append(pid)
    return out


def zombies_of(ppid):
    """The pids of zombie children of ppid."""
    out = []
    for pid in _all_pids():
        st = _stat(pid)
        if st is not None and st[1] == ppid and st[0] == "Z":
            out.append(pid)
    return out


def thread_count(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line for pid %d" % pid)


def poll_until(pred, what, timeout=WAIT):
    """Polls pred() (every 20 ms) until true, for states with no event to wait on
    (a process reaped by someone else); raises AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            raise AssertionError("not within %.1f s: %s" % (timeout, what))
        time.sleep(0.02)


# -- client ------------------------------------------------------------------------

class Client:
    """A Runner stub on its own channel, with helpers that bound every call.

    Runs started through start() are cancelled by close() if still active, so a failed
    test leaves nothing running for the next one."""

    def __init__(self, server):
        self.server = server
        self.ch = server.channel()
        self.stub = pb.runner_pb2_grpc.RunnerStub(self.ch)
        self.started = []

    def close(self):
        for run_id in self.started:
            try:
                if self.get(run_id).status not in TERMINAL:
                    self.stub.CancelRun(R.CancelRunRequest(run_id=run_id, grace_ms=100),
                                        timeout=WAIT)
            except grpc.RpcError:
                pass
        self.ch.close()

    def start(self, module="child", action=None, arg=None, params=None, labels=None,
              request_id="", timeout_ms=0, timeout=WAIT):
        p = dict(params or {})
        if action is not None:
            p["action"] = action
        if arg is not None:
            p["arg"] = str(arg)
        run = self.stub.StartRun(R.StartRunRequest(
            module_id=module, parameters=p, labels=labels or {}, request_id=request_id,
            timeout_ms=timeout_ms), timeout=timeout)
        self.started.append(run.run_id)
        return run

    def get(self, run_id):
        return self.stub.GetRun(R.GetRunRequest(run_id=run_id), timeout=WAIT)

    def wait(self, run_id, timeout=WAIT):
        """WaitRun bounded by `timeout` seconds; fails unless the run is then terminal."""
        run = self.stub.WaitRun(R.WaitRunRequest(run_id=run_id, timeout_ms=int(timeout * 1000)),
                                timeout=timeout + WAIT)
        if run.status not in TERMINAL:
            raise AssertionError("run %s still %s after %.1f s"
                                 % (run_id, status_name(run.status), timeout))
        return run

    def cancel(self, run_id, grace_ms=0, timeout=WAIT):
        return self.stub.CancelRun(R.CancelRunRequest(run_id=run_id, grace_ms=grace_ms),
                                   timeout=timeout)

    def stream(self, run_id, follow=False, stream=0, start_seq=0, timeout=WAIT):
        """The StreamOutput call (an iterator of chunks)."""
        return self.stub.StreamOutput(R.StreamOutputRequest(
            run_id=run_id, follow=follow, stream=stream, start_seq=start_seq), timeout=timeout)

    def chunks(self, run_id, follow=False, stream=0, start_seq=0, timeout=WAIT):
        """Reads a whole StreamOutput: (data chunks, the final chunk's run or None).

        Fails if a chunk with `run` set is not the last one."""
        return split_final(list(self.stream(run_id, follow, stream, start_seq, timeout)))

    def output(self, run_id, timeout=WAIT):
        """Replays a run's output: (stdout bytes, stderr bytes)."""
        data, _ = self.chunks(run_id, timeout=timeout)
        out = b"".join(c.data for c in data if c.stream == STDOUT)
        err = b"".join(c.data for c in data if c.stream == STDERR)
        return out, err

    def read_until(self, it, needle):
        """Reads chunks from a follow iterator until the stdout seen so far contains
        `needle`; returns (chunks read, that stdout)."""
        got, out = [], b""
        for c in it:
            got.append(c)
            out += c.data if c.stream == STDOUT else b""
            if needle in out:
                return got, out
        raise AssertionError("stream ended before %r; stdout %r" % (needle, out))

    def list(self, **kw):
        return self.stub.ListRuns(R.ListRunsRequest(**kw), timeout=WAIT)


def split_final(chunks):
    if chunks and chunks[-1].HasField("run"):
        data, final = chunks[:-1], chunks[-1].run
    else:
        data, final = chunks, None
    for c in data:
        if c.HasField("run"):
            raise AssertionError("chunk seq %d carries a run but is not the last" % c.seq)
    return data, final


class Gate:
    """A listening unix socket. Each `gate PATH` child connects and sends its pid, then
    waits until its connection is closed: so the test knows when a child is running,
    and decides when it ends, with no timing."""

    def __init__(self):
        self.path = os.path.join(temp_dir("prismq-gate-"), "g.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(64)
        self.sock.settimeout(WAIT)
        self.conns = []

    def accept(self):
        """Waits (at most WAIT s) for the next child; returns (connection, its pid)."""
        try:
            conn, _ = self.sock.accept()
        except socket.timeout:
            raise AssertionError("no gate child connected within %.0f s" % WAIT) from None
        conn.settimeout(WAIT)
        self.conns.append(conn)
        buf = b""
        while not buf.endswith(b"\n"):
            part = conn.recv(64)
            if not part:
                raise AssertionError("gate child closed before sending its pid")
            buf += part
        return conn, int(buf)

    def release(self, conn):
        conn.close()

    def close(self):
        for conn in self.conns:
            conn.close()
        self.sock.close()


# -- test case support -------------------------------------------------------------

class RunnerMixin:
    """For a ServerTestCase subclass: self.c is a Client of the class's server; each
    test's leftover runs are cancelled. MODE is the PRISMQ_RUN_MODE of own_server()."""

    MODE = "async"

    def setUp(self):
        super().setUp()
        self.c = self.client(self.server)

    def client(self, server):
        c = Client(server)
        self.addCleanup(c.close)
        return c

    def own_server(self, yaml, extra_args=(), check_exit=True):
        """A second server for this test, with config `yaml`, `extra_args` and this
        class's MODE. Unless the test stops it itself, it is stopped at the end of the test
        and checked for exit code 0 (not if check_exit is false)."""
        srv = Server(config_yaml=yaml, extra_args=extra_args, env=mode_env(self.MODE)).start()

        def stop():
            if srv.returncode is not None:
                return  # the test stopped it, and judged the exit itself
            code = srv.stop()
            if check_exit and code != 0:
                sys.stderr.write("--- own prismqd log ---\n%s--- end ---\n" % srv.log_text())
                self.assertEqual(code, 0, "own prismqd exited with %s" % code)
        self.addCleanup(stop)
        return srv

    def gate(self):
        g = Gate()
        self.addCleanup(g.close)
        return g

    def assertCode(self, code, fn, *args, mentions=(), **kw):
        """fn(*args, **kw) must fail with gRPC status `code`, its details naming each
        string in `mentions`; returns the RpcError."""
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kw)
        e = cm.exception
        self.assertEqual(e.code(), code, e.details())
        for m in mentions:
            self.assertIn(m, e.details() or "")
        return e

    def assertStatus(self, run, status):
        self.assertEqual(status_name(run.status), status_name(status), str(run))
