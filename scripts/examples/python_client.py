#!/usr/bin/python3
"""PrismQ Runner example client in Python, with Debian's grpcio.

The stubs are generated from proto/ when the script starts (protoc and
grpc_python_plugin, into a temporary directory), so nothing generated is kept.

Usage:
  python_client.py [--target HOST:PORT] [--proto-dir DIR] [--timeout S]
                   [--tls-ca FILE] [--tls-cert FILE --tls-key FILE] [--tls-server-name NAME] modules
  python_client.py [...] run MODULE [NAME=VALUE ...] [--label KEY=VALUE ...]
  python_client.py [...] cancel [--seconds N] [--grace-ms MS]

  modules  lists the server's modules and their parameters.
  run      starts a run (printing "started run <id>" on stderr) and follows its
           output live: the run's stdout bytes go to our stdout, its stderr bytes to
           our stderr. Then the final status goes to stderr as one line
           "run <id> <STATUS> exit_code=<n> ...".
  cancel   starts the demo module `sleep`, cancels it and prints the final status
           the same way.

The target comes from --target, else PRISMQ_TARGET, else 127.0.0.1:50051 (a plain
HTTP/2 connection; "unix:///path" also works). --timeout is the deadline of each
unary call; the output stream has none, since a run may last long.

TLS, as with the prismq CLI: a "tls://HOST:PORT" target or any --tls-* option (or
its variable PRISMQ_TLS_CA, PRISMQ_TLS_CERT, PRISMQ_TLS_KEY, PRISMQ_TLS_SERVER_NAME)
connects with TLS. --tls-ca: the CAs (PEM) the server certificate must chain to
(default: grpc's default roots); --tls-cert and --tls-key: a client certificate and
its key, for a server that requires one (its URI SAN, DNS SAN or CN becomes the
runs' owner); --tls-server-name: the name the server certificate must match
(default: the target's host).

Exit status: 0 when the run ends as expected (run: COMPLETED; cancel: CANCELLED),
1 when it ends otherwise, 2 on a gRPC error (printed as "error: CODE: details").
"""

import argparse
import importlib
import os
import subprocess
import sys
import tempfile

import grpc

DEFAULT_TARGET = "127.0.0.1:50051"
RUNNER_PROTO = "prismq/runner/v1/runner.proto"
DEFAULT_PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def env(name):
    """The variable's value; None when it is unset or empty, as for the prismq CLI."""
    return os.environ.get(name) or None


def file_bytes(path):
    """argparse type: the content of the file at path (a usage error if unreadable)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise argparse.ArgumentTypeError("cannot read %s: %s" % (path, e.strerror))


def open_channel(args):
    """A TLS channel for a tls:// target or any --tls-* option, else a plain one."""
    tls = args.tls_ca or args.tls_cert or args.tls_key or args.tls_server_name
    if not (tls or args.target.startswith("tls://")):
        return grpc.insecure_channel(args.target)
    creds = grpc.ssl_channel_credentials(args.tls_ca, args.tls_key, args.tls_cert)
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    return grpc.secure_channel(args.target.removeprefix("tls://"), creds, options=options)


def load_stubs(proto_dir, out_dir):
    """Generates runner_pb2 and runner_pb2_grpc into out_dir and imports them.

    They keep their proto package as Python package (prismq.runner.v1), so the
    generated grpc module's own import of runner_pb2 resolves as protoc wrote it.
    Raises subprocess.CalledProcessError if protoc fails (its message is on stderr).
    """
    subprocess.run(["protoc", "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                    "-I", proto_dir, "--python_out=" + out_dir, "--grpc_python_out=" + out_dir,
                    os.path.join(proto_dir, RUNNER_PROTO)], check=True)
    sys.path.insert(0, out_dir)
    pb = importlib.import_module("prismq.runner.v1.runner_pb2")
    pb_grpc = importlib.import_module("prismq.runner.v1.runner_pb2_grpc")
    return pb, pb_grpc


def key_values(pairs, what):
    """["a=1", "b=2"] -> {"a": "1", "b": "2"}; exits with a usage error otherwise."""
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            sys.exit("python_client.py: %s must be NAME=VALUE, not %r" % (what, p))
        out[key] = value
    return out


def status_line(pb, run):
    """One line for humans: id, status and whatever explains how the run ended."""
    parts = ["run", run.run_id, pb.RunStatus.Name(run.status).replace("RUN_STATUS_", "")]
    parts.append("exit_code=%d" % run.exit_code)
    if run.term_signal:
        parts.append("signal=%d" % run.term_signal)
    if run.error_message:
        parts.append("error=%r" % run.error_message)
    return " ".join(parts)


def follow(pb, stub, run_id, timeout):
    """Copies the run's output live to our stdout/stderr; returns the terminal run.

    With follow=True the server replays from the start, goes on live and ends the
    stream with a chunk whose `run` is the terminal run. Should the stream end
    without one, WaitRun fetches it.
    """
    req = pb.StreamOutputRequest(run_id=run_id, follow=True)
    for chunk in stub.StreamOutput(req):
        if chunk.HasField("run"):
            return chunk.run
        out = sys.stderr if chunk.stream == pb.OUTPUT_STREAM_STDERR else sys.stdout
        out.buffer.write(chunk.data)
        out.buffer.flush()
    return stub.WaitRun(pb.WaitRunRequest(run_id=run_id), timeout=timeout)


def cmd_modules(pb, stub, args):
    for m in stub.ListModules(pb.ListModulesRequest(), timeout=args.timeout).modules:
        print("%s\t%s" % (m.id, m.description))
        for p in m.parameters:
            how = "required" if p.required else "default %r" % p.default_value
            print("  %s (%s)%s" % (p.name, how, "  " + p.description if p.description else ""))
    return 0


def cmd_run(pb, stub, args):
    req = pb.StartRunRequest(module_id=args.module, parameters=key_values(args.params, "a parameter"),
                             labels=key_values(args.label, "--label"))
    run = stub.StartRun(req, timeout=args.timeout)
    print("started run %s" % run.run_id, file=sys.stderr, flush=True)
    final = follow(pb, stub, run.run_id, args.timeout)
    print(status_line(pb, final), file=sys.stderr)
    return 0 if final.status == pb.RUN_STATUS_COMPLETED else 1


def cmd_cancel(pb, stub, args):
    run = stub.StartRun(pb.StartRunRequest(module_id="sleep", parameters={"seconds": str(args.seconds)}),
                        timeout=args.timeout)
    print("started run %s" % run.run_id, file=sys.stderr, flush=True)
    # CancelRun answers once the run has ended: no process of it is left then.
    final = stub.CancelRun(pb.CancelRunRequest(run_id=run.run_id, grace_ms=args.grace_ms),
                           timeout=args.timeout)
    print(status_line(pb, final), file=sys.stderr)
    return 0 if final.status == pb.RUN_STATUS_CANCELLED else 1


def parse_args(argv):
    ap = argparse.ArgumentParser(description="PrismQ Runner example client (Python, grpcio)")
    ap.add_argument("--target", default=os.environ.get("PRISMQ_TARGET", DEFAULT_TARGET),
                    help="server address, HOST:PORT, tls://HOST:PORT or unix:///path "
                    "(env PRISMQ_TARGET; default %s)" % DEFAULT_TARGET)
    # The --tls-* file options hold the file's bytes once parsed (argparse reads a default
    # taken from the environment the same way).
    ap.add_argument("--tls-ca", type=file_bytes, default=env("PRISMQ_TLS_CA"), metavar="FILE",
                    help="CA certificates (PEM) to verify the server with (env PRISMQ_TLS_CA)")
    ap.add_argument("--tls-cert", type=file_bytes, default=env("PRISMQ_TLS_CERT"), metavar="FILE",
                    help="client certificate (PEM) (env PRISMQ_TLS_CERT)")
    ap.add_argument("--tls-key", type=file_bytes, default=env("PRISMQ_TLS_KEY"), metavar="FILE",
                    help="its private key (PEM) (env PRISMQ_TLS_KEY)")
    ap.add_argument("--tls-server-name", default=env("PRISMQ_TLS_SERVER_NAME"), metavar="NAME",
                    help="name the server certificate must match (env PRISMQ_TLS_SERVER_NAME; "
                    "default: the target's host)")
    ap.add_argument("--proto-dir", default=os.environ.get("PRISMQ_PROTO", DEFAULT_PROTO_DIR),
                    help="the proto/ directory (env PRISMQ_PROTO; default: the repository's)")
    ap.add_argument("--timeout", type=float, default=30.0, help="deadline of each unary call, seconds")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("modules", help="list the modules").set_defaults(fn=cmd_modules)
    run = sub.add_parser("run", help="start a run, follow its output, print its final status")
    run.add_argument("module")
    run.add_argument("params", nargs="*", metavar="NAME=VALUE", help="module parameters")
    run.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    run.set_defaults(fn=cmd_run)
    cancel = sub.add_parser("cancel", help="start `sleep` and cancel it")
    cancel.add_argument("--seconds", type=int, default=60, help="how long the sleep would last")
    cancel.add_argument("--grace-ms", type=int, default=0,
                        help="SIGKILL this long after SIGTERM (0: the server's default)")
    cancel.set_defaults(fn=cmd_cancel)
    args = ap.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        ap.error("--tls-cert and --tls-key go together")  # grpcio would abort
    return args


def main(argv):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="prismq-stubs-") as gen:
        pb, pb_grpc = load_stubs(args.proto_dir, gen)
        with open_channel(args) as channel:
            stub = pb_grpc.RunnerStub(channel)
            try:
                return args.fn(pb, stub, args)
            except grpc.RpcError as e:
                print("error: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
                return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
