"""HTTP/1.1 + JSON beside gRPC on the same port, through the real server: every route with
curl, the proto3 JSON of the answers, errors as {code, message, details} with gRPC's
HTTP mapping (bad JSON, unknown fields, wrong types, huge bodies), authorization by
the same rules as gRPC, gRPC still served on the same listener, and the web page's files
(their headers, If-None-Match, http.ui off; test_ui.py drives the page in a browser)."""

import base64
import http.client
import json
import os
import socket
import subprocess
import time
import unittest

from prismq_testlib import WAIT, Server, ServerTestCase, protos, temp_dir

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


class HttpCase(ServerTestCase):
    """One server for the class, on CONFIG unless server_kwargs says otherwise."""

    server_kwargs = {"config_yaml": CONFIG}

    @property
    def srv(self):
        return self.server


class Http(HttpCase):

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
        # A body over limits.max_message_bytes is refused whole, whether the client
        # waits for "100 Continue" (as curl does for large bodies) or sends it at once:
        # then the server reads and drops the rest (a lingering close), so that its
        # close does not reset the connection under the 413.
        big = json.dumps({"moduleId": "echo", "parameters": {"word": "x" * 100000}})
        code, _ = curl(self.srv, "/v1/runs", "-H", "Expect: 100-continue", body=big)
        self.assertEqual(code, 413)
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", self.srv.port), timeout=WAIT) as s:
                s.sendall(b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                          b"\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big.encode()))
                self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 413 "))
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


class HttpOutput(HttpCase):

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

    def test_identity_is_the_connections_own(self):
        """A connection evhttp has closed (Connection: close) while its answer still
        waits for a client that does not read keeps nothing of its identity for the next
        one: an anonymous client is refused what the first could do."""
        sock = os.path.join(temp_dir(), "p.sock")
        authz = 'authz:\n  - {identity: "unix:*", roles: [read_all]}\n'
        with Server(config_yaml=CONFIG + authz, extra_args=("--listen", "unix://" + sock)) as srv:
            # An answer longer than the sockets hold, for the reader that does not read.
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=WAIT)
            body = json.dumps({"moduleId": "echo",
                               "labels": {"k%d" % j: "v" * 100 for j in range(3)}})
            for _ in range(300):
                conn.request("POST", "/v1/runs", body, {"Content-Type": "application/json"})
                self.assertEqual(conn.getresponse().read()[:1], b"{")
            conn.close()
            with socket.socket(socket.AF_UNIX) as a:
                a.connect(sock)
                a.sendall(b"GET /v1/runs?page_size=1000 HTTP/1.1\r\nHost: x\r\n"
                          b"Connection: close\r\n\r\n")
                for _ in range(5):
                    code, err = curl(srv, "/metrics")
                    self.assertEqual((code, err["code"]), (403, 7), err)


def get(srv, path, headers=None, method="GET"):
    """(HTTP status, headers with lowercase names, body bytes) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=WAIT)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


class HttpUi(HttpCase):
    """The web page's files at / and /NAME (http.ui, on by default)."""

    FILES = (("/", "text/html; charset=utf-8"), ("/index.html", "text/html; charset=utf-8"),
             ("/app.js", "text/javascript; charset=utf-8"),
             ("/style.css", "text/css; charset=utf-8"),
             ("/favicon.svg", "image/svg+xml; charset=utf-8"))


    def test_files_and_headers(self):
        tags = {}
        for path, ctype in self.FILES:
            code, hdr, body = get(self.srv, path)
            self.assertEqual((code, hdr["content-type"]), (200, ctype), path)
            self.assertEqual(int(hdr["content-length"]), len(body))
            self.assertGreater(len(body), 0)
            self.assertEqual(hdr["cache-control"], "no-cache")
            self.assertEqual(hdr["x-content-type-options"], "nosniff")
            self.assertRegex(hdr["etag"], r'^"[0-9a-f]{32}"$')
            # Only this origin; no inline script or style.
            csp = [d.strip() for d in hdr["content-security-policy"].split(";")]
            self.assertIn("default-src 'self'", csp)
            self.assertNotIn("unsafe", hdr["content-security-policy"])
            tags[path] = (hdr["etag"], body)
        self.assertEqual(tags["/"], tags["/index.html"])
        self.assertTrue(tags["/"][1].startswith(b"<!doctype html>"))
        self.assertEqual(len({t for t, _ in tags.values()}), len(self.FILES) - 1)
        # The query does not matter (the page's routes are in its fragment).
        self.assertEqual(get(self.srv, "/?x=1")[2], tags["/"][1])

    def test_not_modified(self):
        code, hdr, body = get(self.srv, "/app.js")
        tag = hdr["etag"]
        for inm in (tag, "W/" + tag, '"other", ' + tag, "*"):
            code, hdr2, body2 = get(self.srv, "/app.js", {"If-None-Match": inm})
            self.assertEqual((code, body2, hdr2["etag"]), (304, b"", tag), inm)
        code, hdr2, body2 = get(self.srv, "/app.js", {"If-None-Match": '"other"'})
        self.assertEqual((code, body2, hdr2["etag"]), (200, body, tag))

    def test_other_paths_and_methods(self):
        for path, method in (("/nope.js", "GET"), ("/", "POST"), ("/ui/app.js", "GET")):
            code, hdr, body = get(self.srv, path, method=method)
            self.assertEqual((code, hdr["content-type"]), (404, "application/json"), path)
            self.assertEqual(json.loads(body)["code"], 5)

    def test_off(self):
        with Server(config_yaml=CONFIG + "http: {ui: false}\n") as srv:
            for path, _ in self.FILES:
                code, hdr, body = get(srv, path)
                self.assertEqual((code, hdr["content-type"]), (404, "application/json"), path)
                self.assertEqual(json.loads(body), {"code": 5, "message": "no such route",
                                                    "details": []})
            self.assertEqual(curl(srv, "/healthz")[0], 200)


class HttpSlow(HttpCase):
    """A request not whole within http.request_timeout_ms is answered 408 and its
    connection closed; an idle keep-alive connection is closed without a word; the
    server serves on and holds no connection afterwards."""

    server_kwargs = {"config_yaml": CONFIG + "http: {request_timeout_ms: 1000}\n"}

    def answer_to(self, head):
        """Sends `head` on a new connection, then nothing; returns (all that came back
        until the server closed, seconds it took)."""
        with socket.create_connection(("127.0.0.1", self.srv.port), timeout=WAIT) as s:
            s.sendall(head)
            t0 = time.monotonic()
            got = b""
            while chunk := s.recv(65536):
                got += chunk
            return got, time.monotonic() - t0

    def test_slow_body_and_headers(self):
        for head in (b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"moduleId\"",
                     b"GET /healthz HTTP/1.1\r\nHost: x\r\nAcc"):
            with self.subTest(head=head[:20]):
                got, took = self.answer_to(head)
                status, _, rest = got.partition(b"\r\n")
                self.assertEqual(status, b"HTTP/1.1 408 Request Timeout")
                body = json.loads(rest.partition(b"\r\n\r\n")[2])
                self.assertEqual(body["code"], 4)
                self.assertIn("not received whole within 1000 ms", body["message"])
                self.assertGreaterEqual(took, 0.9)
        self.assertEqual(curl(self.srv, "/healthz")[0], 200)
        self.srv.wait_stats(lambda st: st.live_connections == 1)  # GetStats' own

    def test_idle_keep_alive_closed(self):
        got, took = self.answer_to(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(got.startswith(b"HTTP/1.1 200 "), got)
        self.assertNotIn(b"408", got)
        self.assertGreaterEqual(took, 0.9)


if __name__ == "__main__":
    unittest.main()
