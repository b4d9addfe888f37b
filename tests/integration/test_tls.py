"""TLS on prismqd's listeners, as stock clients see it (grpcio, python's ssl, the prismq
CLI, libprismq through tests/integration/libprismq_probe.c): mutual TLS and the caller
identity it gives, server-only TLS, clients refused at the handshake (no certificate,
another CA's, an expired one, a revoked one, no protocol it speaks in ALPN, TLS
1.1), ALPN choosing gRPC or HTTP/1.1, session
resumption, the wrong protocol on each port, the handshake timeout, certificates
re-read on SIGHUP (and a broken reload that keeps the old ones), and the startup
checks that refuse a bad TLS or listener set-up. Certificates come from
scripts/gen-dev-certs.sh (tls_common.certs()); a few more are issued here."""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
import unittest
import warnings

import grpc
import h2.config
import h2.connection
import h2.events

from prismq_testlib import BIN_DIR, WAIT, Server, ServerTestCase, temp_dir
from tls_common import (IDENTITY_UNIX, R, SERVING, Stubs, TlsServer, cli_tls_args,
                        config_yaml, credentials, issue, path, prismq, ssl_context, tls_connect,
                        tls_refusal, tls_section)

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TESTBIN = os.environ.get("PRISMQ_TESTBIN", os.path.join(_REPO, "build", "tests"))
PROBE = os.path.join(TESTBIN, "libprismq_probe")
PRISMQD = os.path.join(BIN_DIR, "prismqd")

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
CLIENT1 = "spiffe://prismq/client1"
RELOADED = "configuration reloaded"
RELOAD_FAILED = "configuration reload failed, keeping the current one"
# What prismqd says of a key that is not the certificate's (a regex with %s for the key
# path): OpenSSL's SSL_CTX_use_PrivateKey_file already refuses it ("cannot load tls.key
# K: key values mismatch"), before tlsctx's own "tls.key K does not match tls.cert C".
KEY_MISMATCH = r"tls\.key %s does not match tls\.cert "


def der(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def peer_der(port, client="client1"):
    """The certificate (DER) the server presents to a new connection."""
    with tls_connect(port, ssl_context(client)) as tls:
        return tls.getpeercert(binary_form=True)


def start_run_h2(tls, module):
    """A StartRun over `tls` (a handshaken ssl socket, nothing sent yet) with hyper-h2:
    the one way to make a call on a connection whose TLS session python controls.
    Returns the Run; fails unless grpc-status is 0."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    body = R.StartRunRequest(module_id=module).SerializeToString()
    conn.send_headers(1, [(":method", "POST"), (":scheme", "https"),
                          (":path", "/prismq.runner.v1.Runner/StartRun"),
                          (":authority", "localhost"), ("content-type", "application/grpc"),
                          ("te", "trailers")])
    conn.send_data(1, struct.pack(">BI", 0, len(body)) + body, end_stream=True)
    tls.sendall(conn.data_to_send())
    data, trailers = b"", {}
    while True:
        raw = tls.recv(65536)
        if not raw:
            raise AssertionError("connection closed before the StartRun ended")
        for ev in conn.receive_data(raw):
            if isinstance(ev, h2.events.DataReceived):
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, 1)
            elif isinstance(ev, (h2.events.TrailersReceived, h2.events.ResponseReceived)):
                trailers.update(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded):
                if trailers.get("grpc-status") != "0":
                    raise AssertionError("StartRun failed: %s" % trailers)
                return R.Run.FromString(data[5:])
            elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                raise AssertionError("StartRun: %r" % ev)
        tls.sendall(conn.data_to_send())


def stdout_of(chunks):
    return b"".join(c.data for c in chunks if not c.HasField("run"))


class TlsCase(ServerTestCase):
    """A TlsServer per class, from server_kwargs; helpers for channels and checks."""

    @classmethod
    def setUpClass(cls):
        cls.server = TlsServer(**cls.server_kwargs).start()

    def stubs(self, channel):
        s = Stubs(channel)
        self.addCleanup(s.close)
        return s

    def tls(self, client="client1", ca="ca"):
        return self.stubs(self.server.tls_channel(client, ca))

    def assertGrpcRefused(self, client, ca="ca"):
        """A grpc client with this certificate gets no call through."""
        s = self.tls(client, ca)
        with self.assertRaises(grpc.RpcError) as cm:
            s.check()
        self.assertEqual(cm.exception.code(), UNAVAILABLE, cm.exception.details())

    def assertSslRefused(self, ctx, reason):
        """A python ssl client with ctx is refused, with an error naming `reason` (an
        alert); returns the error."""
        e = tls_refusal(self.server.tls_port, ctx)
        self.assertIn(reason, str(e))
        return e

    def assertServing(self):
        """The server still serves TLS and plain clients."""
        self.assertEqual(self.tls().check(), SERVING)
        self.assertEqual(self.stubs(self.server.plain_channel()).check(), SERVING)

    def cli(self, *args, client="client1", code=0, env=None):
        """prismq --target tls://127.0.0.1:PORT with the dev CA and a client certificate;
        must exit `code`; returns the CompletedProcess."""
        p = prismq("--target", "tls://" + self.server.tls_addr, *cli_tls_args(client), *args,
                   env=env)
        self.assertEqual(p.returncode, code, "prismq %s: exit %d\nstdout: %r\nstderr: %r"
                         % (" ".join(map(str, args)), p.returncode, p.stdout, p.stderr))
        return p

    def probe(self, *args, client="client1", ca="ca"):
        env = dict(os.environ, PRISMQ_TLS_CA=path(ca + ".pem"),
                   PRISMQ_TLS_CERT=path(client + ".pem") if client else "",
                   PRISMQ_TLS_KEY=path(client + ".key") if client else "")
        return subprocess.run([PROBE, "tls://" + self.server.tls_addr] + list(args),
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT,
                              env=env)


class MutualTls(TlsCase):
    """client_ca and a CRL: certificates are verified when sent, not required."""

    server_kwargs = {"config_yaml": config_yaml(tls_section(crl=True))}

    def test_call_flow_with_a_client_certificate(self):
        s = self.tls("client1")
        self.assertEqual(s.check(), SERVING)
        run = s.start("echo", message="over tls")
        self.assertEqual(run.owner, CLIENT1)
        chunks = list(s.stream(run.run_id, follow=True))
        self.assertEqual(stdout_of(chunks), b"over tls\n")
        self.assertTrue(chunks[-1].HasField("run"))
        self.assertEqual(chunks[-1].run.status, R.RUN_STATUS_COMPLETED)
        self.assertEqual(chunks[-1].run.owner, CLIENT1)
        # The owner is stored with the run: a plain local client sees it too.
        plain = self.stubs(self.server.plain_channel())
        self.assertEqual(plain.get(run.run_id).owner, CLIENT1)
        self.server.wait_log(r"run queued run_id=%s .*owner=%s" % (run.run_id, CLIENT1))

    def test_client_without_certificate_is_anonymous(self):
        s = self.tls(None)
        self.assertEqual(s.check(), SERVING)
        run = s.start("echo", message="anon")
        self.assertEqual(run.owner, "")
        self.assertEqual(s.wait(run.run_id).status, R.RUN_STATUS_COMPLETED)
        self.assertEqual(s.output(run.run_id)[0], b"anon\n")

    def test_identity_from_certificate_names(self):
        # First URI SAN, else DNS SAN, else the subject CN.
        cases = [("id-dns", "dns-cn", "DNS:worker.prismq.test", "worker.prismq.test"),
                 ("id-cn", "cn-only-client", None, "cn-only-client"),
                 ("id-uri-after-dns", "both-cn",
                  "DNS:first.prismq.test,URI:spiffe://prismq/uri-wins,URI:spiffe://prismq/2nd",
                  "spiffe://prismq/uri-wins")]
        for name, cn, san, want in cases:
            with self.subTest(cert=name):
                issue(name, cn, san)
                self.assertEqual(self.tls(name).start("echo").owner, want)

    def test_refused_client_certificates(self):
        for client, alert in (("other-client", "ALERT_UNKNOWN_CA"),
                              ("expired-client", "ALERT_CERTIFICATE_EXPIRED"),
                              ("revoked-client", "ALERT_CERTIFICATE_REVOKED")):
            with self.subTest(client=client):
                self.assertGrpcRefused(client)
                for version in (TLS12, TLS13):
                    self.assertSslRefused(ssl_context(client, version=version), alert)
        self.assertServing()

    def test_alpn_selects_the_protocol(self):
        """h2 when offered is gRPC; http/1.1, or no ALPN at all, is the HTTP/1.1 side, with
        the client certificate's identity as the caller; neither is refused."""
        for version in (TLS12, TLS13):
            with self.subTest(version=version):
                e = self.assertSslRefused(ssl_context("client1", alpn=["grpc-exp"], version=version),
                                          "alert no application protocol")
                self.assertNotIn("application data", str(e))
        with tls_connect(self.server.tls_port,
                         ssl_context("client1", alpn=["http/1.1", "h2"])) as tls:
            self.assertEqual(tls.selected_alpn_protocol(), "h2")
        for alpn in (["http/1.1"], None):
            with self.subTest(alpn=alpn), \
                    tls_connect(self.server.tls_port, ssl_context("client1", alpn=alpn)) as tls:
                self.assertEqual(tls.selected_alpn_protocol(), alpn[0] if alpn else None)
                body = json.dumps({"moduleId": "echo"}).encode()
                tls.sendall(b"POST /v1/runs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                            % (len(body), body))
                answer = b""
                while chunk := tls.recv(65536):
                    answer += chunk
                head, _, text = answer.partition(b"\r\n\r\n")
                self.assertTrue(head.startswith(b"HTTP/1.1 200 "), answer)
                self.assertEqual(json.loads(text)["owner"], CLIENT1)
        self.assertServing()

    def test_tls_below_1_2_refused(self):
        ctx = ssl_context("client1")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            except (ValueError, ssl.SSLError) as e:
                self.skipTest("this OpenSSL cannot offer TLS 1.1: %s" % e)
        e = tls_refusal(self.server.tls_port, ctx)
        if "NO_PROTOCOLS_AVAILABLE" in str(e):
            self.skipTest("this OpenSSL cannot offer TLS 1.1: %s" % e)
        self.assertIn("ALERT_PROTOCOL_VERSION", str(e))

    def test_sessions_resume(self):
        for version in (TLS12, TLS13):
            with self.subTest(version=version):
                ctx = ssl_context("client1", version=version)
                with tls_connect(self.server.tls_port, ctx) as tls:
                    self.assertFalse(tls.session_reused)
                    # The server's SETTINGS frame; a TLS 1.3 ticket arrives before it.
                    self.assertTrue(tls.recv(9))
                    session = tls.session
                with tls_connect(self.server.tls_port, ctx, session=session) as tls:
                    self.assertTrue(tls.session_reused)
                    self.assertEqual(tls.version(), {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}[version])
                    self.assertTrue(tls.recv(9))

    def test_resumed_session_keeps_the_identity(self):
        # The certificate was verified on the first connection only: the resumed one
        # must still be the certificate's (and an anonymous one's stays anonymous).
        for client, owner in (("client1", CLIENT1), ("client2", "spiffe://prismq/client2"),
                              (None, "")):
            for version in (TLS12, TLS13):
                with self.subTest(client=client, version=version):
                    ctx = ssl_context(client, version=version)
                    with tls_connect(self.server.tls_port, ctx) as tls:
                        self.assertEqual(start_run_h2(tls, "echo").owner, owner)
                        session = tls.session
                    with tls_connect(self.server.tls_port, ctx, session=session) as tls:
                        self.assertTrue(tls.session_reused)
                        self.assertEqual(start_run_h2(tls, "echo").owner, owner)

    def live_connections(self):
        return self.server.stats().live_connections

    def test_plaintext_client_on_the_tls_port(self):
        before = self.live_connections()  # includes the stats channel
        with grpc.insecure_channel(self.server.tls_addr,
                                   options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            with self.assertRaises(grpc.RpcError) as cm:
                Stubs(ch).check()
            self.assertEqual(cm.exception.code(), UNAVAILABLE)
        # An h2c client preface: the server closes the connection without a byte of
        # HTTP/2 (a TLS alert at most).
        with socket.create_connection(("127.0.0.1", self.server.tls_port), timeout=WAIT) as s:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            data = b""
            try:
                while True:
                    part = s.recv(4096)
                    if not part:
                        break
                    data += part
            except ConnectionResetError:
                pass
            self.assertTrue(data == b"" or data[0] == 0x15, data)  # 0x15: a TLS alert
        self.server.wait_stats(lambda st: st.live_connections <= before)
        self.assertServing()

    def test_tls_client_on_the_plain_port(self):
        before = self.live_connections()
        with grpc.secure_channel(self.server.addr, credentials("client1"),
                                 options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            with self.assertRaises(grpc.RpcError) as cm:
                Stubs(ch).check()
            self.assertEqual(cm.exception.code(), UNAVAILABLE)
        sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=WAIT)
        # The server's SETTINGS frame is no TLS record (or the connection is reset).
        with self.assertRaises((ssl.SSLError, ConnectionResetError)):
            ssl_context("client1").wrap_socket(sock, server_hostname="localhost")
        sock.close()
        self.server.wait_stats(lambda st: st.live_connections <= before)
        self.assertServing()

    def test_cli_over_tls(self):
        self.assertEqual(self.cli("health").stdout, b"SERVING\n")
        self.assertEqual(self.cli("run", "echo", "-p", "message=from the cli", "-f").stdout,
                         b"from the cli\n")
        run_id = self.cli("run", "echo", "-p", "message=listed").stdout.decode().strip()
        self.cli("wait", run_id)
        runs = {r["runId"]: r for r in json.loads(self.cli("ls", "--json").stdout)["runs"]}
        self.assertEqual(runs[run_id]["owner"], CLIENT1)
        self.assertEqual(runs[run_id]["status"], "RUN_STATUS_COMPLETED")
        self.assertEqual(json.loads(self.cli("status", run_id, "--json").stdout)["owner"],
                         CLIENT1)
        # The same from the environment.
        env = {"PRISMQ_TARGET": "tls://" + self.server.tls_addr,
               "PRISMQ_TLS_CA": path("ca.pem"), "PRISMQ_TLS_CERT": path("client1.pem"),
               "PRISMQ_TLS_KEY": path("client1.key")}
        p = prismq("health", env=env)
        self.assertEqual((p.returncode, p.stdout), (0, b"SERVING\n"), p.stderr)

    def test_cli_checks_the_server_certificate(self):
        p = prismq("--target", "tls://" + self.server.tls_addr,
                   *cli_tls_args("client1", "other-ca"), "health")
        self.assertEqual(p.returncode, 1, p.stderr)
        # (With client_ca set, OpenSSL sends the CA after the server's certificate, as it
        # completes the chain from its verify store: the complaint is about that CA.)
        self.assertRegex(p.stderr, rb"^prismq: UNAVAILABLE: TLS handshake with tls://127\.0\.0\.1:"
                         rb"\d+ failed: (certificate verify failed|self-signed certificate in "
                         rb"certificate chain|unable to get local issuer certificate)\n$")
        self.assertServing()

    def test_cli_over_unix_socket(self):
        self.assertEqual(os.stat(self.server.sock_path).st_mode & 0o777, 0o600)
        target = ["--target", "unix:" + self.server.sock_path]
        p = prismq(*target, "run", "echo", "-p", "message=local")
        self.assertEqual(p.returncode, 0, p.stderr)
        run_id = p.stdout.decode().strip()
        self.assertEqual(prismq(*target, "wait", run_id).returncode, 0)
        p = prismq(*target, "ls", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        runs = {r["runId"]: r for r in json.loads(p.stdout)["runs"]}
        self.assertEqual(runs[run_id]["owner"], IDENTITY_UNIX)
        self.assertEqual(self.tls().get(run_id).owner, IDENTITY_UNIX)
        p = prismq(*target, "logs", run_id)
        self.assertEqual((p.returncode, p.stdout), (0, b"local\n"), p.stderr)

    def test_libprismq_over_tls(self):
        r = self.probe("health")
        self.assertEqual((r.returncode, r.stdout), (0, b"SERVING\n"), r.stderr)
        r = self.probe("start", "echo", "message=from libprismq")
        self.assertEqual(r.returncode, 0, r.stderr)
        run_id = r.stdout.decode().split()[0]
        r = self.probe("wait", run_id)
        self.assertEqual((r.returncode, r.stdout), (0, b"RUN_STATUS_COMPLETED 0\n"), r.stderr)
        r = self.probe("stream", run_id)
        self.assertEqual((r.returncode, r.stdout), (0, b"from libprismq\n"), r.stderr)
        self.assertEqual(self.tls().get(run_id).owner, CLIENT1)
        r = self.probe("async", "echo", "message=async")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("wait RUN_STATUS_COMPLETED 0", r.stdout.decode().splitlines())
        # The library checks the server too.
        r = self.probe("health", ca="other-ca")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertRegex(r.stderr, rb"^UNAVAILABLE: TLS handshake with tls://127\.0\.0\.1:\d+ "
                         rb"failed: .*certificate")


class RequiredClientCert(TlsCase):
    server_kwargs = {"config_yaml": config_yaml(tls_section(require_client_cert=True))}

    def test_no_certificate_refused(self):
        self.assertGrpcRefused(None)
        # TLS 1.2 fails the handshake; TLS 1.3 says "certificate required" after it.
        self.assertSslRefused(ssl_context(None, version=TLS12), "ALERT_HANDSHAKE_FAILURE")
        self.assertSslRefused(ssl_context(None, version=TLS13), "ALERT_CERTIFICATE_REQUIRED")
        p = prismq("--target", "tls://" + self.server.tls_addr, *cli_tls_args(None), "health")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertTrue(p.stderr.startswith(b"prismq: UNAVAILABLE: "), p.stderr)
        r = self.probe("health", client=None)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertTrue(r.stderr.startswith(b"UNAVAILABLE: "), r.stderr)
        self.assertServing()

    def test_refused_certificates_still_refused(self):
        for client in ("other-client", "expired-client"):
            with self.subTest(client=client):
                self.assertGrpcRefused(client)

    def test_certificate_accepted(self):
        s = self.tls("client1")
        self.assertEqual(s.check(), SERVING)
        self.assertEqual(s.start("echo").owner, CLIENT1)
        self.assertEqual(self.cli("health").stdout, b"SERVING\n")
        r = self.probe("health")
        self.assertEqual((r.returncode, r.stdout), (0, b"SERVING\n"), r.stderr)


class ServerAuthOnly(TlsCase):
    """No client_ca: the server asks for no certificate; every TLS caller is anonymous."""

    server_kwargs = {"config_yaml": config_yaml(tls_section(client_ca=False))}

    def test_anonymous_tls(self):
        s = self.tls(None)
        self.assertEqual(s.check(), SERVING)
        run = s.start("echo", message="server auth only")
        self.assertEqual(run.owner, "")
        s.wait(run.run_id)
        self.assertEqual(s.output(run.run_id)[0], b"server auth only\n")
        p = self.cli("run", "echo", "-p", "message=cli", "-f", client=None)
        self.assertEqual(p.stdout, b"cli\n")

    def test_a_certificate_is_not_asked_for(self):
        # A client that has one sends none: nothing is verified, nobody is named.
        self.assertEqual(self.tls("client1").start("echo").owner, "")
        self.assertEqual(self.tls("other-client").start("echo").owner, "")


class HandshakeTimeout(TlsCase):
    server_kwargs = {"config_yaml": config_yaml(tls_section(handshake_timeout_ms=300))}

    def closed_after(self, send):
        """Connects to the TLS port, sends `send`, and returns the seconds until the
        server closes the connection."""
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.server.tls_port), timeout=WAIT) as s:
            if send:
                s.sendall(send)
            try:
                data = s.recv(4096)
            except socket.timeout:
                self.fail("the connection was not closed within %.0f s" % WAIT)
            except ConnectionResetError:
                data = b""
        self.assertEqual(data, b"")
        return time.monotonic() - t0

    def test_silent_client_closed(self):
        for send in (b"", b"\x16\x03\x01\x02\x00"):  # nothing; a record header only
            with self.subTest(send=send):
                elapsed = self.closed_after(send)
                self.assertGreaterEqual(elapsed, 0.3 - 0.005)
                self.assertLess(elapsed, WAIT)
        self.assertServing()

    def test_the_timeout_ends_with_the_handshake(self):
        # A call that lasts past the handshake timeout on a connection whose handshake
        # is over: a WaitRun the server ends after 600 ms.
        s = self.tls()
        self.assertEqual(s.check(), SERVING)
        run = s.start("sleep")
        self.addCleanup(s.cancel, run.run_id)
        t0 = time.monotonic()
        got = s.runner.WaitRun(R.WaitRunRequest(run_id=run.run_id, timeout_ms=600), timeout=WAIT)
        self.assertGreaterEqual(time.monotonic() - t0, 0.6)
        self.assertIn(got.status, (R.RUN_STATUS_QUEUED, R.RUN_STATUS_RUNNING))


class Reload(unittest.TestCase):
    """SIGHUP re-reads the certificate, key, client CAs and CRL. Each test has its own
    server, whose files live in its own directory."""

    def setUp(self):
        self.dir = temp_dir("prismq-reload-")
        for name in ("server.pem", "server.key", "crl.pem"):
            shutil.copy(path(name), os.path.join(self.dir, name))
        self.cert = os.path.join(self.dir, "server.pem")
        self.key = os.path.join(self.dir, "server.key")
        self.crl = os.path.join(self.dir, "crl.pem")
        self.server = TlsServer(config_yaml(tls_section(cert=self.cert, key=self.key,
                                                        crl=self.crl))).start()
        self.addCleanup(self.stop)

    def stop(self):
        code = self.server.stop()
        if code != 0:
            print("--- prismqd log ---\n%s--- end ---" % self.server.log_text())
        self.assertEqual(code, 0)

    def stubs(self, client="client1"):
        s = Stubs(self.server.tls_channel(client))
        self.addCleanup(s.close)
        return s

    def sighup(self, pattern):
        """SIGHUP, then waits for a log line matching `pattern`; returns the match."""
        start = self.server.log_len()
        os.kill(self.server.pid, signal.SIGHUP)
        return self.server.wait_log(pattern, start=start)

    def install(self, src_dir, name):
        """Replaces the server's certificate and key by src_dir/name.pem and .key (each
        file atomically)."""
        os.replace(os.path.join(src_dir, name + ".pem"), self.cert)
        os.replace(os.path.join(src_dir, name + ".key"), self.key)

    def test_new_certificate_for_new_connections_only(self):
        old = der(self.cert)
        self.assertEqual(peer_der(self.server.tls_port), old)
        # A stream open across the reload, on a connection made before it.
        s = self.stubs()
        run = s.start("sleep")
        follow = s.stream(run.run_id, follow=True, timeout=WAIT * 2)
        self.assertEqual(next(follow).data, b"sleeping\n")

        fresh = temp_dir("prismq-fresh-")
        issue("server", "localhost-reloaded", "DNS:localhost,IP:127.0.0.1",
              usage="serverAuth", out_dir=fresh)
        new = der(os.path.join(fresh, "server.pem"))
        self.install(fresh, "server")
        self.sighup(RELOADED)

        self.assertEqual(peer_der(self.server.tls_port), new)
        with tls_connect(self.server.tls_port, ssl_context("client1")) as tls:
            self.assertIn((("commonName", "localhost-reloaded"),), tls.getpeercert()["subject"])
        self.assertEqual(self.stubs().check(), SERVING)  # a new grpc connection
        # The old connection carries on: its stream ends with the run it watched.
        self.assertEqual(s.check(), SERVING)
        self.assertEqual(s.cancel(run.run_id).status, R.RUN_STATUS_CANCELLED)
        rest = list(follow)
        self.assertEqual(rest[-1].run.status, R.RUN_STATUS_CANCELLED)

    def test_broken_files_keep_the_old_certificate(self):
        old = der(self.cert)
        s = self.stubs()
        self.assertEqual(s.check(), SERVING)
        keep = temp_dir("prismq-keep-")
        shutil.copy(self.cert, os.path.join(keep, "server.pem"))
        shutil.copy(self.key, os.path.join(keep, "server.key"))
        bad = temp_dir("prismq-bad-")
        issue("expired", "localhost", "DNS:localhost,IP:127.0.0.1", usage="serverAuth",
              startdate="20200101000000Z", enddate="20200102000000Z", out_dir=bad)
        with open(os.path.join(bad, "garbage.pem"), "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        shutil.copy(self.key, os.path.join(bad, "garbage.key"))
        shutil.copy(os.path.join(keep, "server.pem"), os.path.join(bad, "mismatch.pem"))
        shutil.copy(path("client1.key"), os.path.join(bad, "mismatch.key"))
        cases = (("garbage", "cannot load tls.cert " + self.cert),
                 ("mismatch", KEY_MISMATCH % re.escape(self.key)),
                 ("expired", "tls.cert %s has expired" % self.cert))
        for name, why in cases:
            with self.subTest(broken=name):
                self.install(bad, name)
                m = self.sighup(RELOAD_FAILED + ": (.*)")
                self.assertRegex(m.group(1), why if name == "mismatch" else re.escape(why))
                self.assertEqual(peer_der(self.server.tls_port), old)
                self.assertEqual(self.stubs().check(), SERVING)
                self.assertEqual(s.check(), SERVING)
        os.unlink(self.key)
        m = self.sighup(RELOAD_FAILED + ": (.*)")
        self.assertIn(self.key, m.group(1))
        self.assertEqual(peer_der(self.server.tls_port), old)
        # Good files again: reloaded.
        self.install(keep, "server")
        self.sighup(RELOADED)
        self.assertEqual(peer_der(self.server.tls_port), old)
        self.assertEqual(s.check(), SERVING)

    def test_new_crl_refuses_new_connections(self):
        s = self.stubs("client2")
        self.assertEqual(s.check(), SERVING)
        # Sessions of client2 from before the new CRL, to try to resume after it.
        ctxs = {v: ssl_context("client2", version=v) for v in (TLS12, TLS13)}
        sessions = {}
        for version, ctx in ctxs.items():
            with tls_connect(self.server.tls_port, ctx) as tls:
                self.assertTrue(tls.recv(9))  # SETTINGS, after a TLS 1.3 ticket
                sessions[version] = tls.session
        make_crl(self.crl, revoke=("client2", "revoked-client"))
        self.sighup(RELOADED)
        s2 = self.stubs("client2")
        with self.assertRaises(grpc.RpcError) as cm:
            s2.check()
        self.assertEqual(cm.exception.code(), UNAVAILABLE)
        for version, ctx in ctxs.items():
            with self.subTest(version=version):
                e = tls_refusal(self.server.tls_port, ctx)
                self.assertIn("ALERT_CERTIFICATE_REVOKED", str(e))
                # Resuming a session from before the reload is no way around the CRL.
                e = tls_refusal(self.server.tls_port, ctx, session=sessions[version])
                self.assertIn("ALERT_CERTIFICATE_REVOKED", str(e))
        self.assertEqual(s.check(), SERVING)  # the connection made before the new CRL
        self.assertEqual(self.stubs("client1").check(), SERVING)


def make_crl(out, revoke):
    """Writes to `out` a CRL of the dev CA revoking the certificates certs()/NAME.pem for
    each NAME in `revoke` (openssl ca adds a certificate it does not know to its database
    when revoking it)."""
    work = temp_dir("prismq-crl-")
    with open(os.path.join(work, "index.txt"), "w"):
        pass
    with open(os.path.join(work, "crlnumber"), "w") as f:
        f.write("1000\n")
    cnf = os.path.join(work, "openssl.cnf")
    with open(cnf, "w") as f:
        f.write("[ca]\ndefault_ca = dev_ca\n[dev_ca]\ndatabase = %s/index.txt\n"
                "crlnumber = %s/crlnumber\ndefault_md = sha256\n" % (work, work))
    base = ["openssl", "ca", "-config", cnf, "-batch", "-cert", path("ca.pem"),
            "-keyfile", path("ca.key")]
    cmds = [base + ["-revoke", path(n + ".pem"), "-crl_reason", "keyCompromise"] for n in revoke]
    cmds.append(base + ["-gencrl", "-crldays", "30", "-out", out + ".new"])
    for cmd in cmds:
        r = subprocess.run(cmd, capture_output=True, timeout=WAIT)
        if r.returncode != 0:
            raise AssertionError("%s failed: %s" % (" ".join(cmd), r.stdout + r.stderr))
    os.replace(out + ".new", out)


class StartupChecks(unittest.TestCase):
    """prismqd refuses to start (exit 2, the reason on stderr) with a listener or TLS
    set-up it cannot serve safely."""

    def prismqd(self, cfg, *listen):
        """Runs prismqd with config text `cfg` and `listen` URLs; returns (exit code,
        stderr text). prismqd must exit by itself (a started one is stopped: exit -15)."""
        d = temp_dir("prismq-startup-")
        cfg_path = os.path.join(d, "prismq.yaml")
        with open(cfg_path, "w") as f:
            f.write(cfg)
        args = [PRISMQD, "--config", cfg_path, "--data-dir", os.path.join(d, "var")]
        for url in listen:
            args += ["--listen", url]
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            out, _ = p.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        return p.returncode, out.decode("utf-8", "replace")

    def refused(self, cfg, *listen, says=()):
        code, out = self.prismqd(cfg, *listen)
        self.assertEqual(code, 2, out)
        self.assertNotIn("prismqd ready", out)
        for s in says:
            self.assertIn(s, out)
        return out

    def test_tls_listener_without_tls_section(self):
        self.refused(config_yaml(), "tcp://127.0.0.1:0", "tls://127.0.0.1:0",
                     says=("tls://127.0.0.1:", "needs a tls: section with cert and key"))

    def test_plain_tcp_beyond_loopback(self):
        self.refused(config_yaml(), "tcp://0.0.0.0:0",
                     says=("refusing to listen on tcp://0.0.0.0:", "allow_insecure_remote"))
        # TLS on the same address, or plain TCP with the operator's explicit consent, do.
        for cfg, url in ((config_yaml(tls_section()), "tls://0.0.0.0:0"),
                         (config_yaml(allow_insecure_remote=True), "tcp://0.0.0.0:0")):
            with self.subTest(url=url):
                with Server(config_yaml=cfg, extra_args=("--listen", url)) as srv:
                    srv.wait_log(r"listening on %s://0\.0\.0\.0:[1-9]" % url.split(":")[0])

    def test_expired_server_certificate(self):
        d = temp_dir("prismq-expired-")
        cert = issue("server", "localhost", "DNS:localhost,IP:127.0.0.1", usage="serverAuth",
                     startdate="20200101000000Z", enddate="20200102000000Z", out_dir=d)
        key = os.path.join(d, "server.key")
        self.refused(config_yaml(tls_section(cert=cert, key=key)), "tls://127.0.0.1:0",
                     says=("tls.cert %s has expired" % cert,))

    def test_key_that_does_not_match(self):
        out = self.refused(config_yaml(tls_section(key=path("client1.key"))), "tls://127.0.0.1:0")
        self.assertRegex(out, KEY_MISMATCH % re.escape(path("client1.key")))

    def test_missing_files_are_named(self):
        missing = os.path.join(temp_dir("prismq-missing-"), "nothing-here.pem")
        for field in ("cert", "key", "client_ca", "crl"):
            with self.subTest(field=field):
                tls = tls_section(crl=True)
                tls[field] = missing
                self.refused(config_yaml(tls), "tls://127.0.0.1:0",
                             says=("tls.%s %s" % (field, missing),))

    def test_require_client_cert_needs_client_ca(self):
        self.refused(config_yaml(tls_section(client_ca=False, require_client_cert=True)),
                     "tls://127.0.0.1:0", says=("require_client_cert", "client_ca"))


if __name__ == "__main__":
    unittest.main()
