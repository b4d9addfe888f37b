"""A child process for the Runner tests: prismqd runs it as a module's command.

    runner_child.py ACTION [ARG]

Actions (ARG is a string; numbers are decimal):
  ok                 prints "ok" on stdout, exits 0
  exit CODE          writes 100 numbered lines "stderr line I" (I = 0..99) on stderr,
                     then exits CODE
  exit_raw CODE      writes on stderr a line of all 256 byte values, then one line of
                     400 "\u00e9" (2 bytes each in UTF-8), then exits CODE
  trap               prints "trapping" on stdout, then sleeps; on SIGTERM prints
                     "got SIGTERM" on stdout and exits 3
  signal NAME        prints "signalling" on stdout, then kills itself with signal NAME
                     (e.g. KILL, SEGV, TERM)
  sleep SECS         prints "sleeping PID" on stdout, then sleeps SECS seconds, exits 0
  bytes N            writes N bytes of pattern(N) (see below) on stdout
  bytes_err N        the same on stderr
  all256 N           writes N times all 256 byte values (0..255) on stdout, then the same
                     on stderr
  interleave N       lines "out I" on stdout and "err I" on stderr, alternately,
                     each flushed, I = 0..N-1
  argv               prints its arguments after the action (sys.argv[2:]) as JSON
  gate PATH          prints "waiting" on stdout, connects to the unix socket PATH,
                     sends its pid and a newline, waits for the other side to close,
                     then prints "released" and exits 0
  fds                prints the descriptors open in this process as JSON {fd: target}
  env                prints {"env": environ, "cwd": getcwd()} as JSON
  tree MODE          starts a grandchild in this process group that ignores SIGTERM and
                     sleeps 60 s; prints "grandchild PID" on stdout, then sleeps 60 s itself
                     (SIGTERM ends it). MODE "pipes": the grandchild keeps stdout and
                     stderr; "detached": it has them on /dev/null.
  daemon MODE        starts a daemon the classic way: fork, setsid, fork again (the
                     middle process exits at once and is reaped), so the daemon is in a
                     session and process group of its own, outside this one's; it ignores
                     SIGTERM, has stdin, stdout and stderr on /dev/null (it holds none of
                     the run's pipes) and sleeps 120 s. Once it is set up, this process
                     prints "daemon PID" on stdout (PID: the daemon's). MODE "exit": this
                     process then exits 0 at once; "stay": it sleeps 60 s (SIGTERM ends it).

pattern(N): the bytes i*7 % 251 for i = 0..N-1 (251 is prime, so the period is not
a power of two and a shifted or dropped block changes the hash). Tests compute it with
pattern_bytes() and pattern_sha256().
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

_PERIOD = bytes((i * 7) % 251 for i in range(251))


def pattern_bytes(n):
    """The first n bytes of the pattern (as described above)."""
    return (_PERIOD * (n // 251 + 1))[:n]


def pattern_sha256(n):
    """A hashlib sha256 object fed pattern_bytes(n), a block at a time."""
    h = hashlib.sha256()
    block = _PERIOD * 4096
    for _ in range(n // len(block)):
        h.update(block)
    h.update(block[:n % len(block)])
    return h


def write_pattern(fd, n):
    block = _PERIOD * 4096  # whole periods: blocks join seamlessly
    left = n
    while left > 0:
        part = block[:min(left, len(block))]
        view = memoryview(part)
        while view:
            w = os.write(fd, view)
            view = view[w:]
        left -= len(part)


def start_daemon(out):
    """The `daemon` action's double fork; prints "daemon PID" once the daemon ignores
    SIGTERM and has left the run's pipes."""
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:  # the middle process: a new session, then the daemon, then gone
        try:
            os.close(r)
            os.setsid()
            if os.fork() == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.close(null)
                os.write(w, b"%d\n" % os.getpid())
                os.close(w)
                time.sleep(120)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(middle, 0)
    with os.fdopen(r, "rb") as f:
        pid = int(f.readline())
    out.write(b"daemon %d\n" % pid)
    out.flush()


def main(argv):
    action = argv[1]
    arg = argv[2] if len(argv) > 2 else ""
    out = sys.stdout.buffer
    if action == "ok":
        out.write(b"ok\n")
    elif action == "exit":
        for i in range(100):
            sys.stderr.write("stderr line %d\n" % i)
        sys.stderr.flush()
        out.flush()
        os._exit(int(arg))
    elif action == "exit_raw":
        sys.stderr.buffer.write(bytes(range(256)) + b"\n" + "\u00e9".encode() * 400 + b"\n")
        sys.stderr.flush()
        os._exit(int(arg))
    elif action == "trap":
        def on_term(signum, frame):
            os.write(1, b"got SIGTERM\n")  # raw writes: no buffer to re-enter
            os._exit(3)
        signal.signal(signal.SIGTERM, on_term)
        os.write(1, b"trapping\n")
        time.sleep(60)
    elif action == "signal":
        out.write(b"signalling\n")
        out.flush()
        os.kill(os.getpid(), getattr(signal, "SIG" + arg))
        time.sleep(60)
    elif action == "sleep":
        out.write(b"sleeping %d\n" % os.getpid())
        out.flush()
        time.sleep(float(arg))
    elif action == "bytes":
        out.flush()
        write_pattern(1, int(arg))
    elif action == "bytes_err":
        write_pattern(2, int(arg))
    elif action == "all256":
        data = bytes(range(256)) * int(arg)
        out.write(data)
        out.flush()
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()
    elif action == "interleave":
        for i in range(int(arg)):
            out.write(b"out %d\n" % i)
            out.flush()
            sys.stderr.buffer.write(b"err %d\n" % i)
            sys.stderr.buffer.flush()
    elif action == "argv":
        out.write(json.dumps(argv[2:]).encode() + b"\n")
    elif action == "gate":
        out.write(b"waiting\n")
        out.flush()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(arg)
            s.sendall(b"%d\n" % os.getpid())
            while s.recv(64):
                pass
        out.write(b"released\n")
    elif action == "fds":
        fds = {}
        for name in os.listdir("/proc/self/fd"):
            try:  # the directory's own descriptor is closed by now
                fds[name] = os.readlink("/proc/self/fd/" + name)
            except FileNotFoundError:
                pass
        out.write(json.dumps(fds, sort_keys=True).encode() + b"\n")
    elif action == "env":
        out.write(json.dumps({"env": dict(os.environ), "cwd": os.getcwd()},
                             sort_keys=True).encode() + b"\n")
    elif action == "tree":
        code = ("import os, signal, sys, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "os.write(int(sys.argv[1]), b'x')\n"
                "time.sleep(60)\n")
        r, w = os.pipe()
        kw = {"pass_fds": (w,)}
        if arg == "detached":
            kw.update(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        gc = subprocess.Popen([sys.executable, "-c", code, str(w)], **kw)
        os.close(w)
        os.read(r, 1)  # the grandchild ignores SIGTERM from now on
        out.write(b"grandchild %d\n" % gc.pid)
        out.flush()
        time.sleep(60)
    elif action == "daemon":
        out.flush()
        start_daemon(out)
        if arg == "stay":
            time.sleep(60)
    else:
        sys.stderr.write("runner_child: unknown action %r\n" % action)
        return 64
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
