"""Shared parts of the TLS and authorization tests (test_tls.py, test_authz.py).

  certs()             the directory of scripts/gen-dev-certs.sh's certificates, made once
                      per process (ca, server, client1, client2, other-ca, other-client,
                      expired-client, revoked-client, crl.pem; see the script)
  path(name)          certs()/name; read(name) its bytes
  issue(name, ...)    a new key and a certificate for it signed by the dev CA, written as
                      certs()/name.pem and name.key (any subject, SAN and validity)
  tls_section(...)    a config's tls: section with the dev certificates
  config_yaml(...)    a prismqd config (JSON, which is YAML) with MODULES
  TlsServer(...)      a prismq_testlib.Server that also listens on tls://127.0.0.1:0 and
                      on a unix socket; tls_channel(), unix_channel(), plain_channel()
  Stubs(channel)      the runner, health and admin stubs of one channel
  ssl_context(...)    a python ssl client context for the dev CA, with ALPN h2 by default
  tls_connect(...)    a handshaken ssl socket to a port
  tls_refusal(...)    the ssl.SSLError a refused client gets, at the handshake or at the
                      first read (TLS 1.3 verifies the client after the client's side of
                      the handshake is done)
  prismq(...)         runs the prismq CLI; cli_tls_args(client)
  IDENTITY_UNIX       the identity of a unix-socket peer of this process ("unix:root")
"""

import json
import os
import pwd
import socket
import ssl
import subprocess

import grpc

from prismq_testlib import BIN_DIR, WAIT, Server, protos, temp_dir

pb = protos()
R = pb.runner_pb2

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GEN_CERTS = os.path.join(_REPO, "scripts", "gen-dev-certs.sh")
PRISMQ = os.path.join(BIN_DIR, "prismq")

SERVING = pb.health_pb2.HealthCheckResponse.SERVING
IDENTITY_UNIX = "unix:" + pwd.getpwuid(os.getuid()).pw_name

# The modules of every server here: echo prints its message; sleep says so, then sleeps
# (so a follower knows it runs); other is a module no rule lets client1 start.
MODULES = [
    {"id": "echo", "argv": ["echo", "{message}"],
     "parameters": [{"name": "message", "default": "hello"}]},
    {"id": "sleep", "argv": ["sh", "-c", "echo sleeping; exec sleep {seconds}", "sleep"],
     "parameters": [{"name": "seconds", "default": "60", "pattern": "[0-9]+"}]},
    {"id": "other", "argv": ["true"]},
]

_certs = None


def certs():
    """The dev certificates' directory (scripts/gen-dev-certs.sh), made on first use."""
    global _certs
    if _certs is None:
        d = temp_dir("prismq-certs-")
        subprocess.run([GEN_CERTS, d], check=True, timeout=60)
        _certs = d
    return _certs


def path(name):
    return os.path.join(certs(), name)


def read(name):
    with open(path(name), "rb") as f:
        return f.read()


_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
default_ca = dev_ca
[dev_ca]
database = {db}/index.txt
new_certs_dir = {db}
serial = {db}/serial
default_md = sha256
policy = policy
unique_subject = no
copy_extensions = none
[policy]
commonName = supplied
[ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = {usage}
{san}
"""


def issue(name, cn, san=None, usage="clientAuth", days=30, startdate=None, enddate=None,
          out_dir=None):
    """Issues a certificate signed by the dev CA (ca.pem) for a new P-256 key, as
    out_dir/name.pem and out_dir/name.key (out_dir: certs()). cn: the subject CN; san: a
    subjectAltName value ("URI:spiffe://x,DNS:y") or None for no SAN; usage: the
    extendedKeyUsage (clientAuth or serverAuth); validity `days` from now, or
    startdate/enddate in openssl ca's form (20200101000000Z). A random serial. Returns
    the certificate's path; raises AssertionError with openssl's output on failure."""
    out_dir = out_dir or certs()
    work = temp_dir("prismq-issue-")
    with open(os.path.join(work, "index.txt"), "w"):
        pass
    cnf = os.path.join(work, "openssl.cnf")
    with open(cnf, "w") as f:
        f.write(_OPENSSL_CNF.format(db=work, usage=usage,
                                    san="subjectAltName = " + san if san else ""))
    key = os.path.join(out_dir, name + ".key")
    pem = os.path.join(out_dir, name + ".pem")
    csr = os.path.join(work, name + ".csr")
    validity = (["-startdate", startdate] if startdate else []) + \
               (["-enddate", enddate] if enddate else ["-days", str(days)])
    for cmd in (["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-out", key],
                ["openssl", "req", "-config", cnf, "-new", "-key", key, "-subj", "/CN=" + cn,
                 "-out", csr],
                ["openssl", "ca", "-config", cnf, "-batch", "-notext", "-rand_serial",
                 "-cert", path("ca.pem"), "-keyfile", path("ca.key"), "-extensions", "ext",
                 "-in", csr, "-out", pem] + validity):
        r = subprocess.run(cmd, capture_output=True, timeout=WAIT)
        if r.returncode != 0:
            raise AssertionError("%s failed: %s" % (" ".join(cmd), r.stdout + r.stderr))
    return pem


def tls_section(client_ca=True, require_client_cert=False, crl=False, cert=None, key=None,
                **more):
    """A tls: section with the dev server certificate (or `cert`/`key` paths), the dev
    CA as client_ca unless client_ca is false, crl.pem if crl is True (or the path crl);
    `more` keys added."""
    t = {"cert": cert or path("server.pem"), "key": key or path("server.key")}
    if client_ca:
        t["client_ca"] = path("ca.pem")
    if require_client_cert:
        t["require_client_cert"] = True
    if crl:
        t["crl"] = path("crl.pem") if crl is True else crl
    t.update(more)
    return t


def config_yaml(tls=None, authz=None, **more):
    """A prismqd config with MODULES, the given tls: and authz: sections (None: left
    out) and any more top-level keys."""
    cfg = {"modules": MODULES}
    if tls is not None:
        cfg["tls"] = tls
    if authz is not None:
        cfg["authz"] = authz
    cfg.update(more)
    return json.dumps(cfg, indent=1)


def _options():
    # Each channel its own connection (grpcio would share one per target otherwise).
    return [("grpc.use_local_subchannel_pool", 1)]


def credentials(client="client1", ca="ca"):
    """grpc channel credentials: the CA certs()/ca.pem, and the client certificate
    certs()/client.pem with its key (client None: none)."""
    return grpc.ssl_channel_credentials(
        root_certificates=read(ca + ".pem"),
        private_key=read(client + ".key") if client else None,
        certificate_chain=read(client + ".pem") if client else None)


class TlsServer(Server):
    """A prismqd (prismq_testlib.Server: tcp://127.0.0.1:0, its own data dir) that also
    listens on tls://127.0.0.1:0 and on the unix socket self.sock_path. After start:
    tls_port, tls_addr ("127.0.0.1:PORT") besides Server's addr and port."""

    def __init__(self, config_yaml, extra_args=(), **kw):
        self.sock_path = os.path.join(temp_dir("prismq-tls-sock-"), "prismqd.sock")
        super().__init__(config_yaml=config_yaml, extra_args=(
            "--listen", "tls://127.0.0.1:0", "--listen", "unix://" + self.sock_path)
            + tuple(extra_args), **kw)
        self.tls_port = None
        self.tls_addr = None

    def start(self):
        super().start()
        # Every listener is logged before "prismqd ready", which start() waited for.
        self.tls_port = int(self.wait_log(r"listening on tls://127\.0\.0\.1:(\d+)").group(1))
        self.tls_addr = "127.0.0.1:%d" % self.tls_port
        return self

    def tls_channel(self, client="client1", ca="ca"):
        """A grpc secure channel to the TLS port (see credentials)."""
        return grpc.secure_channel(self.tls_addr, credentials(client, ca), options=_options())

    def unix_channel(self):
        return grpc.insecure_channel("unix:" + self.sock_path, options=_options())

    def plain_channel(self):
        return self.channel()


class Stubs:
    """The stubs of one channel (closed by close()) and bounded calls."""

    def __init__(self, channel):
        self.ch = channel
        self.runner = pb.runner_pb2_grpc.RunnerStub(channel)
        self.health = pb.health_pb2_grpc.HealthStub(channel)
        self.admin = pb.admin_pb2_grpc.AdminStub(channel)

    def close(self):
        self.ch.close()

    def check(self):
        return self.health.Check(pb.health_pb2.HealthCheckRequest(), timeout=WAIT).status

    def start(self, module, **params):
        return self.runner.StartRun(R.StartRunRequest(
            module_id=module, parameters={k: str(v) for k, v in params.items()}), timeout=WAIT)

    def get(self, run_id):
        return self.runner.GetRun(R.GetRunRequest(run_id=run_id), timeout=WAIT)

    def wait(self, run_id):
        return self.runner.WaitRun(R.WaitRunRequest(run_id=run_id, timeout_ms=int(WAIT * 1000)),
                                   timeout=WAIT * 2)

    def cancel(self, run_id, grace_ms=100):
        return self.runner.CancelRun(R.CancelRunRequest(run_id=run_id, grace_ms=grace_ms),
                                     timeout=WAIT)

    def list(self, **kw):
        return self.runner.ListRuns(R.ListRunsRequest(page_size=1000, **kw), timeout=WAIT).runs

    def stream(self, run_id, follow=False, timeout=WAIT):
        return self.runner.StreamOutput(R.StreamOutputRequest(run_id=run_id, follow=follow),
                                        timeout=timeout)

    def output(self, run_id):
        """The whole stdout of a finished run and the final chunk's run."""
        chunks = list(self.stream(run_id))
        final = chunks[-1].run if chunks and chunks[-1].HasField("run") else None
        return b"".join(c.data for c in chunks if not c.HasField("run")), final

    def modules(self):
        return [m.id for m in self.runner.ListModules(R.ListModulesRequest(),
                                                      timeout=WAIT).modules]

    def stats(self):
        return self.admin.GetStats(pb.admin_pb2.GetStatsRequest(), timeout=WAIT)


def ssl_context(client=None, alpn=("h2",), version=None, ca="ca"):
    """A python ssl client context trusting certs()/ca.pem (hostname checked), with the
    client certificate `client` (a name in certs(); None: none), ALPN `alpn` (None: no
    ALPN extension at all), pinned to TLS `version` (an ssl.TLSVersion) if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(path(ca + ".pem"))
    if client:
        ctx.load_cert_chain(path(client + ".pem"), path(client + ".key"))
    if alpn is not None:
        ctx.set_alpn_protocols(list(alpn))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def tls_connect(port, ctx, session=None):
    """A TCP connection to 127.0.0.1:port with a completed TLS handshake (server name
    "localhost"), reads bounded by WAIT; the caller closes it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    try:
        return ctx.wrap_socket(sock, server_hostname="localhost", session=session)
    except BaseException:
        sock.close()
        raise


def tls_refusal(port, ctx, session=None):
    """Connects with ctx and returns the ssl.SSLError that ends the connection: raised by
    the handshake (TLS 1.2, and refusals of the ClientHello), or by the first read (TLS
    1.3 sends the client's certificate in its last flight: the client's handshake is
    over before the server judges it). `session`: a session to offer for resumption.
    Fails if the server sends any application data first or just closes the connection."""
    try:
        tls = tls_connect(port, ctx, session)
    except ssl.SSLError as e:
        return e
    with tls:
        try:
            data = tls.recv(4096)
        except ssl.SSLError as e:
            return e
    raise AssertionError("the server did not refuse the TLS client: read %r" % data)


def cli_env(extra=None):
    """Our environment without PRISMQ_TARGET and PRISMQ_TLS_*, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if k != "PRISMQ_TARGET" and not k.startswith("PRISMQ_TLS_")}
    env.update(extra or {})
    return env


def cli_tls_args(client="client1", ca="ca"):
    """prismq's global TLS options for the dev CA and a client certificate (None: none)."""
    args = ["--tls-ca", path(ca + ".pem")]
    if client:
        args += ["--tls-cert", path(client + ".pem"), "--tls-key", path(client + ".key")]
    return args


def prismq(*args, env=None):
    """Runs the prismq CLI with `args`; returns the CompletedProcess (bytes)."""
    return subprocess.run([PRISMQ] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=WAIT * 3, env=cli_env(env))
