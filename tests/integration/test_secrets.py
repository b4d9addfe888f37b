"""Secret parameters through the real server: the value reaches the process in its
environment variable, or on the descriptor it names, and nowhere else. Not in its argv (/proc/PID/cmdline read while it
runs), not in any answer (StartRun, GetRun, ListRuns, WaitRun, the follow's last chunk),
not in the server's log, not in the run table's files (the database and its WAL, read
as bytes after the server stopped). A request_id retry is matched by the secret's value
(a keyed digest, not the value); a queued run with a secret cannot outlive its server."""

import glob
import hashlib
import os
import signal
import time
import unittest

import grpc

from prismq_testlib import WAIT, Server, protos

pb = protos()
R = pb.runner_pb2
SECRET = "s3cr3t-Zq8Xw1-never-stored"

CONFIG = """
listen: ["tcp://127.0.0.1:0"]
limits: {max_concurrent: 1}
modules:
  - id: show
    argv: [sh, -c, 'printf "%s" "$API_TOKEN" | wc -c; echo "args=$*"; sleep "$HOLD"', show]
    env: {HOLD: "0"}
    pass_parameters: flags
    parameters:
      - {name: user, default: u}
      - {name: token, type: secret, env_var: API_TOKEN, min_length: 8}
  - id: hold
    argv: [sh, -c, 'echo "len=${{#API_TOKEN}}"; exec sleep 60']
    parameters:
      - {name: token, type: secret, env_var: API_TOKEN}
  - id: onfd
    argv: [sh, -c, 'echo "read=$(sha256sum <&5)"; exec 5<&-; exec sleep 60']
    parameters:
      - {name: token, type: secret, fd: 5}
"""


def files_bytes(data_dir):
    out = b""
    for path in glob.glob(os.path.join(data_dir, "**"), recursive=True):
        if os.path.isfile(path) and not path.endswith("secret.key"):
            with open(path, "rb") as f:
                out += f.read()
    return out


class Secrets(unittest.TestCase):
    def setUp(self):
        self.srv = Server(config_yaml=CONFIG).start()
        self.ch = self.srv.channel()
        self.stub = pb.runner_pb2_grpc.RunnerStub(self.ch)

    def tearDown(self):
        self.ch.close()
        if self.srv.returncode is None:
            self.assertEqual(self.srv.stop(), 0)

    def start(self, module, request_id="", **params):
        return self.stub.StartRun(R.StartRunRequest(module_id=module, parameters=params,
                                                    request_id=request_id), timeout=WAIT)

    def wait(self, run_id):
        return self.stub.WaitRun(R.WaitRunRequest(run_id=run_id, timeout_ms=20000), timeout=WAIT)

    def test_secret_reaches_only_the_environment(self):
        answers = []
        run = self.start("hold", token=SECRET)
        answers.append(run.SerializeToString())
        self.assertEqual(dict(run.parameters), {"token": "***"})
        # The process while it runs: its argv has no trace of the value, its environment has it.
        deadline = time.monotonic() + WAIT
        while True:
            got = self.stub.GetRun(R.GetRunRequest(run_id=run.run_id), timeout=WAIT)
            if got.pid and os.path.exists("/proc/%d/cmdline" % got.pid):
                with open("/proc/%d/cmdline" % got.pid, "rb") as f:
                    cmdline = f.read()
                if cmdline.startswith(b"sleep\0"):  # the exec of sleep is done
                    break
            self.assertLess(time.monotonic(), deadline, "the run did not start")
            time.sleep(0.01)
        self.assertNotIn(SECRET.encode(), cmdline)
        with open("/proc/%d/environ" % got.pid, "rb") as f:
            self.assertIn(b"API_TOKEN=" + SECRET.encode() + b"\0", f.read())
        answers.append(got.SerializeToString())
        answers.append(self.stub.ListRuns(R.ListRunsRequest(), timeout=WAIT).SerializeToString())
        self.stub.CancelRun(R.CancelRunRequest(run_id=run.run_id), timeout=WAIT)
        done = self.wait(run.run_id)
        answers.append(done.SerializeToString())
        chunks = list(self.stub.StreamOutput(R.StreamOutputRequest(run_id=run.run_id, follow=True),
                                             timeout=WAIT))
        self.assertEqual(b"".join(c.data for c in chunks), b"len=%d\n" % len(SECRET))
        answers += [c.SerializeToString() for c in chunks]
        for a in answers:
            self.assertNotIn(SECRET.encode(), a)
        self.assertEqual(self.srv.stop(), 0)
        self.assertNotIn(SECRET, self.srv.log_text())
        stored = files_bytes(self.srv.data_dir)
        self.assertIn(run.run_id.encode(), stored)  # the table was read: the run is there
        self.assertNotIn(SECRET.encode(), stored)
        key = os.path.join(self.srv.data_dir, "secret.key")
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        self.assertEqual(os.path.getsize(key), 32)

    def test_a_secret_on_a_descriptor(self):
        run = self.start("onfd", token=SECRET)
        self.assertEqual(dict(run.parameters), {"token": "***"})
        self.assertEqual(len(run.secret_digest), 32)
        # The run read it from descriptor 5: its output says so; its argv and its
        # environment never held it.
        chunks = self.stub.StreamOutput(R.StreamOutputRequest(run_id=run.run_id, follow=True),
                                        timeout=WAIT)
        first = next(iter(chunks))
        digest = hashlib.sha256(SECRET.encode()).hexdigest().encode()
        self.assertEqual(first.data, b"read=%s  -\n" % digest)
        got = self.stub.GetRun(R.GetRunRequest(run_id=run.run_id), timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while True:  # the exec of sleep, which the output line came before
            with open("/proc/%d/cmdline" % got.pid, "rb") as f:
                cmdline = f.read()
            if cmdline.startswith(b"sleep\0"):
                break
            self.assertLess(time.monotonic(), deadline, "the run did not exec sleep")
            time.sleep(0.01)
        with open("/proc/%d/environ" % got.pid, "rb") as f:
            self.assertNotIn(SECRET.encode(), f.read())
        self.assertFalse(os.path.exists("/proc/%d/fd/5" % got.pid))  # closed after reading
        self.stub.CancelRun(R.CancelRunRequest(run_id=run.run_id), timeout=WAIT)
        chunks.cancel()
        self.assertEqual(self.wait(run.run_id).status, R.RUN_STATUS_CANCELLED)
        with self.assertRaises(grpc.RpcError) as cm:
            self.start("onfd", token="x" * 4097)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(self.srv.stop(), 0)
        self.assertNotIn(SECRET, self.srv.log_text())
        self.assertFalse(SECRET.encode() in files_bytes(self.srv.data_dir))

    def test_flags_leave_the_secret_out_and_checks_apply(self):
        run = self.start("show", token=SECRET)
        done = self.wait(run.run_id)
        self.assertEqual(done.status, R.RUN_STATUS_COMPLETED, done.error_message)
        out = b"".join(c.data for c in self.stub.StreamOutput(
            R.StreamOutputRequest(run_id=run.run_id), timeout=WAIT))
        # The flags: every parameter but the secret.
        self.assertEqual(out, b"%d\nargs=--user u\n" % len(SECRET))
        with self.assertRaises(grpc.RpcError) as cm:
            self.start("show", token="short")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(cm.exception.details(),
                         'parameter "token" is 5 bytes long, shorter than the minimum 8')

    def test_request_id_compares_the_secret_by_value(self):
        first = self.start("show", request_id="job-1", token=SECRET)
        self.assertEqual(len(first.secret_digest), 32)
        again = self.start("show", request_id="job-1", token=SECRET)
        self.assertEqual(again.run_id, first.run_id)
        with self.assertRaises(grpc.RpcError) as cm:
            self.start("show", request_id="job-1", token=SECRET + "x")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.ALREADY_EXISTS)
        other = self.start("show", request_id="job-2", token=SECRET)
        self.assertEqual(other.secret_digest, first.secret_digest)  # same key, same value
        self.assertEqual(self.start("show", request_id="job-3").secret_digest, b"")

    def test_a_queued_secret_does_not_outlive_its_server(self):
        busy = self.start("hold", token="t")  # takes the only slot
        queued = self.start("show", token=SECRET)
        self.assertEqual(queued.status, R.RUN_STATUS_QUEUED)
        self.assertEqual(self.srv.stop(signal.SIGKILL), -signal.SIGKILL)
        self.srv = Server(config_yaml=CONFIG, extra_args=("--data-dir", self.srv.data_dir)).start()
        self.ch.close()
        self.ch = self.srv.channel()
        self.stub = pb.runner_pb2_grpc.RunnerStub(self.ch)
        got = self.wait(queued.run_id)
        self.assertEqual(got.status, R.RUN_STATUS_FAILED)
        self.assertIn("secret parameters are kept in memory only", got.error_message)
        self.assertEqual(self.wait(busy.run_id).status, R.RUN_STATUS_LOST)


if __name__ == "__main__":
    unittest.main()
