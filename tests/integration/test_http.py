"""HTTP/1.1 + JSON beside gRPC on the same port, through the real server: every route with
curl, the proto3 JSON of the answers, errors as {code, message, details} with gRPC's
HTTP mapping (bad JSON, unknown fields, wrong types, huge bodies), authorization by
the same rules as gRPC, and gRPC still served on the same listener."""

import base64
import json
import os
import socket
import subprocess
import unittest

from prismq_testlib import WAIT, Server, protos

pb = protos()
R = pb.runner_pb2

CONFIG = """
listen: ["tcp://127.0.0.1:0"]
limits: {max_message_bytes: 65536}
modules:
  - id: echo
    argv: [sh, -c, 'echo "$*"', echo]
    pass_parameters: flags
    parameters:
      - {name: word, default: "hi"}
  - id: sleep
    argv: [sleep, "30"]
  - id: lines
    argv: [sh, -c, 'for i in 1 2 3 4 5; do echo line$i; sleep 0.05; done']
  - id: emit
    argv: [sh, -c, 'yes abcdefghijklmnopqrstuvwxyz0123456789 | head -c "$0"', "{n}"]
    parameters:
      - {name: n, type: integer, min: 0, max: 100000000, default: "0"}
"""


def sse_events(text):
    """The events of a text/event-stream body: [(event, id or None, JSON data)]."""
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = {"event": "message", "id": None, "data": []}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name == "data":
                fields["data"].append(value)
            else:
                fields[name] = value
        out.append((fields["event"], fields["id"], json.loads("\n".join(fields["data"]))))
    return out


def curl(srv, path, *args, body=None):
    """(HTTP status, parsed JSON or raw text) of one request with curl."""
    cmd = ["curl", "-s", "-S", "--max-time", str(int(WAIT)), "-w", "\n%{http_code}"]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    cmd += list(args) + [f"http://{srv.addr}{path}"]
    r = subprocess.run(cmd, input=body.encode() if isinstance(body, str) else body,
                       capture_output=True, timeout=WAIT + 5, check=True)
    text, _, code = r.stdout.decode().rpartition("\n")
    try:
        return int(code), json.loads(text)
    except ValueError:
        return int(code), text


class Http(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server(config_yaml=CONFIG).start()

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.stop() == 0

    def start(self, module="echo", **params):
        code, run = curl(self.srv, "/v1/runs",
                         body=json.dumps({"moduleId": module, "parameters": params}))
        self.assertEqual(code, 200, run)
        return run

    def test_healthz(self):
        code, body = curl(self.srv, "/healthz")
        self.assertEqual((code, body["status"]), (200, "SERVING"))

    def test_modules(self):
        code, body = curl(self.srv, "/v1/modules")
        self.assertEqual(code, 200)
        self.assertEqual({m["id"] for m in body["modules"]}, {"echo", "sleep", "lines", "emit"})

    def test_start_get_wait_list(self):
        run = self.start(word="json")
        self.assertEqual(run["moduleId"], "echo")
        self.assertEqual(run["parameters"], {"word": "json"})
        code, done = curl(self.srv, f"/v1/runs/{run['runId']}:wait?timeout_ms=20000")
        self.assertEqual((code, done["status"]), (200, "RUN_STATUS_COMPLETED"))
        self.assertIsInstance(done["createdAtMs"], str)  # 64-bit integers are strings
        code, got = curl(self.srv, f"/v1/runs/{run['runId']}")
        self.assertEqual((code, got["runId"]), (200, run["runId"]))
        code, page = curl(self.srv, "/v1/runs?status=RUN_STATUS_COMPLETED&module_id=echo")
        self.assertEqual(code, 200)
        self.assertIn(run["runId"], [r["runId"] for r in page["runs"]])
        code, page = curl(self.srv, "/v1/runs?status=RUN_STATUS_RUNNING&module_id=echo")
        self.assertNotIn(run["runId"], [r["runId"] for r in page["runs"]])

    def test_cancel(self):
        run = self.start("sleep")
        code, got = curl(self.srv, f"/v1/runs/{run['runId']}:cancel", "-X", "POST")
        self.assertEqual(code, 200, got)
        code, done = curl(self.srv, f"/v1/runs/{run['runId']}:wait?timeout_ms=20000")
        self.assertEqual(done["status"], "RUN_STATUS_CANCELLED")

    def test_presets(self):
        body = json.dumps({"module_id": "echo", "name": "p1", "parameters": {"word": "w"}})
        code, saved = curl(self.srv, "/v1/presets", body=body)
        self.assertEqual((code, saved["name"]), (200, "p1"), saved)
        code, page = curl(self.srv, "/v1/presets?module_id=echo")
        self.assertIn("p1", [p["name"] for p in page["presets"]])
        code, _ = curl(self.srv, "/v1/presets/echo/p1", "-X", "DELETE")
        self.assertEqual(code, 200)
        code, page = curl(self.srv, "/v1/presets?module_id=echo")
        self.assertNotIn("p1", [p["name"] for p in page.get("presets", [])])

    def test_errors(self):
        cases = [
            ("{", "string expected"),
            ('{"moduleId": "echo",}', "string expected"),
            ('{"moduleId": "echo", "nope": 1}', "unknown field nope"),
            ('{"moduleId": 5}', "a string expected"),
            ('{"moduleId": "echo", "timeoutMs": -1}', "out of range"),
            ('{"moduleId": "echo", "timeoutMs": 1.5}', "an integer expected"),
            ('{"moduleId": "e\\ud800"}', "surrogate"),
            ('{"moduleId": "echo"} x', "text after"),
            ("[" * 100, "'{' expected"),
            ('{"parameters": {"a": {"b": 1}}}', "a string expected"),
        ]
        for body, why in cases:
            code, err = curl(self.srv, "/v1/runs", body=body)
            self.assertEqual(code, 400, body)
            self.assertEqual(err["code"], 3, body)
            self.assertIn(why, err["message"], body)
        code, err = curl(self.srv, "/v1/runs", body=b'{"moduleId": "\xff"}')
        self.assertEqual((code, err["code"]), (400, 3))
        code, err = curl(self.srv, "/v1/runs", body=json.dumps({"moduleId": "nosuch"}))
        self.assertEqual((code, err["code"]), (404, 5), err)
        code, err = curl(self.srv, "/v1/runs/nosuch")
        self.assertEqual((code, err["code"], err["details"]), (404, 5, []))
        code, err = curl(self.srv, "/nothing")
        self.assertEqual(code, 404)
        code, err = curl(self.srv, "/v1/runs?page_size=x")
        self.assertEqual((code, err["code"]), (400, 3))
        # A body over limits.max_message_bytes is refused whole. The client waits for
        # "100 Continue" (as curl does for large bodies): one that sends the body at once
        # may lose the 413 to the reset of the server's close (no lingering close yet).
        big = json.dumps({"moduleId": "echo", "parameters": {"word": "x" * 100000}})
        code, _ = curl(self.srv, "/v1/runs", "-H", "Expect: 100-continue", body=big)
        self.assertEqual(code, 413)
        self.assertEqual(curl(self.srv, "/healthz")[0], 200)  # still serving

    def test_keep_alive_and_grpc_on_the_same_port(self):
        # Several requests on one connection.
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects} ",
                            f"http://{self.srv.addr}/healthz", f"http://{self.srv.addr}/healthz"],
                           capture_output=True, timeout=WAIT, check=True)
        self.assertEqual(r.stdout.split(), [b"1", b"0"])
        ch = self.srv.channel()
        stub = pb.runner_pb2_grpc.RunnerStub(ch)
        mods = stub.ListModules(R.ListModulesRequest(), timeout=WAIT)
        self.assertEqual(len(mods.modules), 4)
        ch.close()

    def test_client_gone_during_wait(self):
        # A client that leaves while its WaitRun waits: the call is dropped, the server
        # goes on serving (ASan/valgrind builds check that nothing leaks).
        run = self.start("sleep")
        s = socket.create_connection((self.srv.addr.split(":")[0], self.srv.port), timeout=WAIT)
        s.sendall(f"GET /v1/runs/{run['runId']}:wait?timeout_ms=20000 HTTP/1.1\r\n"
                  "Host: x\r\n\r\n".encode())
        self.srv.wait_stats(lambda st: st.live_calls >= 2)  # and GetStats
        s.close()
        self.srv.wait_stats(lambda st: st.live_calls == 1)
        curl(self.srv, f"/v1/runs/{run['runId']}:cancel", "-X", "POST")
        self.assertEqual(curl(self.srv, "/healthz")[0], 200)


class HttpOutput(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server(config_yaml=CONFIG).start()

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.stop() == 0

    def test_sse_follow_and_resume(self):
        code, run = curl(self.srv, "/v1/runs", body=json.dumps({"moduleId": "lines"}))
        self.assertEqual(code, 200, run)
        code, text = curl(self.srv, f"/v1/runs/{run['runId']}/output?follow=true")
        self.assertEqual(code, 200)
        events = sse_events(text)
        out = [e for e in events if e[0] == "output"]
        data = b"".join(base64.b64decode(e[2]["data"]) for e in out)
        self.assertEqual(data, b"".join(b"line%d\n" % i for i in range(1, 6)))
        self.assertEqual(events[-1][0], "end")
        self.assertEqual(events[-1][2]["run"]["status"], "RUN_STATUS_COMPLETED")
        # An EventSource that reconnects sends the id of the last event it had.
        first_id = out[0][1]
        code, text = curl(self.srv, f"/v1/runs/{run['runId']}/output?follow=true",
                          "-H", f"Last-Event-ID: {first_id}")
        again = [e for e in sse_events(text) if e[0] == "output"]
        self.assertEqual([e[1] for e in again], [e[1] for e in out[1:]])
        code, text = curl(self.srv, f"/v1/runs/{run['runId']}/output?start_seq={int(first_id) + 1}")
        self.assertEqual([e[1] for e in sse_events(text) if e[0] == "output"], [e[1] for e in out[1:]])
        code, err = curl(self.srv, f"/v1/runs/{run['runId']}/output", "-H", "Last-Event-ID: x")
        self.assertEqual(code, 400)
        code, err = curl(self.srv, "/v1/runs/nosuch/output")
        self.assertEqual((code, err["code"]), (404, 5))

    def test_octet_stream_64mib(self):
        n = 64 << 20
        code, run = curl(self.srv, "/v1/runs",
                         body=json.dumps({"moduleId": "emit", "parameters": {"n": str(n)}}))
        self.assertEqual(code, 200, run)
        r = subprocess.run(["curl", "-s", "-S", "--max-time", "60", "-H",
                            "Accept: application/octet-stream",
                            f"http://{self.srv.addr}/v1/runs/{run['runId']}/output?follow=1"],
                           capture_output=True, timeout=90, check=True)
        line = b"abcdefghijklmnopqrstuvwxyz0123456789\n"
        want = (line * (n // len(line) + 1))[:n]
        self.assertEqual(len(r.stdout), n)
        self.assertTrue(r.stdout == want)


class HttpAuthz(unittest.TestCase):
    """The authz section applies to HTTP as to gRPC (an empty rule list refuses all)."""

    def test_refused(self):
        with Server(config_yaml=CONFIG + "authz: []\n") as srv:
            code, err = curl(srv, "/v1/runs")
            self.assertEqual((code, err["code"]), (403, 7), err)
            self.assertIn("permission denied", err["message"])
            self.assertEqual(curl(srv, "/healthz")[0], 200)


if __name__ == "__main__":
    unittest.main()
