#!/usr/bin/env python3
"""The Debian packages of scripts/package-deb.sh, installed on this machine and used as
an operator would, then purged without a trace.

Run by `scripts/test.sh --package` once package-deb.sh has built the packages (in
$DEB_BUILD_DIR, default build-deb); ctest leaves it out (tests/CMakeLists.txt): it
needs root and changes the machine's package database. It refuses to run, changing
nothing, unless it is root, none of the four packages is installed, and nothing they
would install, /etc/prismq or /var/lib/prismq exists: nothing of a developer's is
replaced or purged.

  1. apt-get installs prismqd, prismq, libprismq0 and libprismq-dev from the .deb files
     (their dependencies from the archive); the user prismq is made (sysusers.d), the
     configuration is a conffile, and `systemd-analyze verify` accepts the installed
     unit.
  2. prismqd is started as the unit would start it, without systemd as PID 1: its
     ExecStart command line, as its User and Group, in its state directory (made as
     systemd makes it), with NOTIFY_SOCKET, plus a listener on a unix socket in its
     runtime directory (the configuration's port 50051 may be a developer's own
     server); READY=1 comes. Where systemd does run, the service the package started
     is stopped first.
  3. The installed prismq runs a module and follows its output; a program built with
     the installed libprismq-dev (client/examples/follow_run.c, pkg-config prismq) does
     the same through libprismq0.
  4. SIGTERM: STOPPING=1, and prismqd exits 0.
  5. dpkg --purge of the four packages: no file of theirs (dpkg -L, before) is left, nor
     a directory only they used, /etc/prismq, /var/lib/prismq, or the state of their
     unit's enablement; the user prismq, made by this test's installation, is removed.

Every step is bounded in time.
"""

import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import unittest

from prismq_testlib import WAIT, temp_dir
from test_sdnotify import Manager, unit_settings

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEB_DIR = os.environ.get("DEB_BUILD_DIR", "build-deb")
if not os.path.isabs(DEB_DIR):
    DEB_DIR = os.path.join(REPO, DEB_DIR)
PACKAGES = ("prismqd", "prismq", "libprismq0", "libprismq-dev")
USER = "prismq"
# The configuration, the state directory and the runtime directory of the unit.
STATE_DIRS = ("/etc/prismq", "/var/lib/prismq", "/run/prismq")
# What deb-systemd-helper keeps of an enabled unit, without systemd running too.
ENABLEMENT = ("/etc/systemd/system/multi-user.target.wants/prismqd.service",
              "/var/lib/systemd/deb-systemd-helper-enabled/prismqd.service.dsh-also",
              "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/prismqd.service")
APT_BOUND = 600  # dependencies may come from the network


def run(args, timeout=WAIT * 3, check=True, **kw):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError("%s exited %d:\n%s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
    return r


def deb_paths():
    with open(os.path.join(REPO, "CMakeLists.txt"), encoding="utf-8") as f:
        version = re.search(r"^project\(prismq VERSION ([0-9.]+)", f.read(), re.M).group(1)
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    return [os.path.join(DEB_DIR, "%s_%s_%s.deb" % (p, version, arch)) for p in PACKAGES]


def installed(pkg):
    r = run(["dpkg-query", "-W", "-f=${db:Status-Status}", pkg], check=False)
    return r.returncode == 0 and r.stdout not in ("", "not-installed")


def refusal():
    """Why this machine must not be used, or None."""
    if os.geteuid() != 0:
        return "needs root: it installs and purges Debian packages on this machine"
    debs = deb_paths()
    missing = [d for d in debs if not os.path.exists(d)]
    if missing:
        return "no package %s: run scripts/package-deb.sh first" % ", ".join(missing)
    there = [p for p in PACKAGES if installed(p)]
    if there:
        return "%s already installed: this test would replace and purge them" % ", ".join(there)
    for deb in debs:
        for line in run(["dpkg-deb", "-c", deb]).stdout.splitlines():
            path = line.split(None, 5)[5].split(" -> ")[0].lstrip(".")
            if not line.startswith("d") and os.path.lexists(path):
                return "%s exists: installing %s would replace it" % (path, os.path.basename(deb))
    there = [d for d in STATE_DIRS if os.path.lexists(d)]
    if there:
        return "%s exists: this test would delete it" % ", ".join(there)
    return None


def owned_by_others(path):
    """Whether a package still installed lists `path` (a directory shared with it)."""
    return run(["dpkg-query", "-S", path], check=False).returncode == 0


class Package(unittest.TestCase):

    def setUp(self):
        self.tmp = temp_dir()
        self.user_was_there = self.user_exists()
        self.group_was_there = self.group_exists()
        self.server = None
        self.files = {}
        self.addCleanup(self.clean_machine)

    @staticmethod
    def user_exists():
        try:
            return pwd.getpwnam(USER) is not None
        except KeyError:
            return False

    @staticmethod
    def group_exists():
        try:
            return grp.getgrnam(USER) is not None
        except KeyError:
            return False

    def remove_user(self, check):
        """Removes the user and group prismq where this test's installation made them."""
        if not self.user_was_there and self.user_exists():
            run(["userdel", USER], check=check)
        if not self.group_was_there and self.group_exists():
            run(["groupdel", USER], check=check)

    def clean_machine(self):
        """Whatever the test got to, the machine ends as it was (also after a failure)."""
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait(WAIT)
        run(["dpkg", "--purge"] + list(PACKAGES), timeout=APT_BOUND, check=False)
        shutil.rmtree("/run/prismq", ignore_errors=True)
        self.remove_user(check=False)

    def test_install_run_purge(self):
        self.install()
        unit = self.unit()
        mgr = Manager(self.tmp, abstract=True)
        self.addCleanup(mgr.close)
        sock = self.start(unit, mgr)
        self.assertEqual(mgr.recv().get("READY"), "1", self.log())
        self.use(sock)
        self.server.send_signal(signal.SIGTERM)
        self.assertEqual(mgr.recv().get("STOPPING"), "1", self.log())
        self.assertEqual(self.server.wait(WAIT), 0, self.log())
        # systemd removes the runtime directory when the service stops.
        shutil.rmtree(os.path.dirname(sock))
        self.purge()

    # -- the steps -------------------------------------------------------------

    def install(self):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "install", "-y", "--no-install-recommends"] + deb_paths(), timeout=APT_BOUND, env=env)
        for p in PACKAGES:
            self.files[p] = run(["dpkg", "-L", p]).stdout.split("\n")
        self.assertTrue(self.user_exists(), "the package did not make the user %s" % USER)
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "prismqd"]).stdout
        self.assertIn("/etc/prismq/prismqd.yaml", conffiles)
        for path, pkg in (("/usr/share/man/man8/prismqd.8.gz", "prismqd"),
                          ("/usr/share/man/man1/prismq.1.gz", "prismq"),
                          ("/usr/share/bash-completion/completions/prismq", "prismq"),
                          ("/usr/include/prismq/client.h", "libprismq-dev")):
            self.assertIn(path, self.files[pkg])
        if os.path.isdir("/run/systemd/system"):
            run(["systemctl", "stop", "prismqd.service"])

    def unit(self):
        path = next(f for f in self.files["prismqd"] if f.endswith("/prismqd.service"))
        # With the man page installed, Documentation=man:prismqd(8) is checked too.
        man = "yes" if shutil.which("man") else "no"
        r = run(["systemd-analyze", "verify", "--man=" + man, path])
        self.assertEqual(r.stderr.strip(), "", "systemd-analyze verify warns")
        return unit_settings(path)

    def start(self, unit, mgr):
        """prismqd as the unit starts it; returns the unix socket it listens on."""
        user = pwd.getpwnam(unit["User"][0])
        gid = grp.getgrnam(unit["Group"][0]).gr_gid
        state = "/var/lib/" + unit["StateDirectory"][0]
        runtime = "/run/" + unit["RuntimeDirectory"][0]
        for d, mode in ((state, unit.get("StateDirectoryMode", ["0755"])[0]), (runtime, "0755")):
            os.makedirs(d)
            os.chown(d, user.pw_uid, gid)
            os.chmod(d, int(mode, 8))
        sock = os.path.join(runtime, "prismq.sock")
        argv = unit["ExecStart"][0].split() + ["--listen", "unix://" + sock]
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name,
               "NOTIFY_SOCKET": mgr.env, "STATE_DIRECTORY": state, "RUNTIME_DIRECTORY": runtime}

        def become_user():
            os.initgroups(user.pw_name, gid)
            os.setgid(gid)
            os.setuid(user.pw_uid)

        self.logfile = os.path.join(self.tmp, "prismqd.log")
        with open(self.logfile, "wb") as log:
            self.server = subprocess.Popen(argv, cwd="/", env=env, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, preexec_fn=become_user)
        return sock

    def log(self):
        with open(self.logfile, encoding="utf-8", errors="replace") as f:
            return "--- prismqd log ---\n" + f.read()

    def use(self, sock):
        target = "unix://" + sock
        modules = run(["prismq", "--target", target, "modules"]).stdout
        for m in ("echo", "emit", "sleep", "count", "fail"):
            self.assertRegex(modules, r"(?m)^%s\b" % m)
        r = run(["prismq", "--target", target, "run", "count", "-p", "n=5", "-f"])
        self.assertEqual(r.stdout, "1\n2\n3\n4\n5\n", self.log())
        # A program of the operator's, built against the installed development package.
        prog = os.path.join(self.tmp, "follow_run")
        flags = run(["pkg-config", "--cflags", "--libs", "prismq"]).stdout.split()
        run(["cc", os.path.join(REPO, "client", "examples", "follow_run.c"), "-o", prog] + flags)
        r = run([prog, "-t", "unix:" + sock, "echo", "message=from libprismq"])
        self.assertEqual(r.stdout, "from libprismq\n", self.log())

    def purge(self):
        run(["dpkg", "--purge"] + list(PACKAGES), timeout=APT_BOUND)
        left = []
        for pkg, paths in self.files.items():
            for p in paths:
                if p and p != "/." and os.path.lexists(p) and not (os.path.isdir(p) and owned_by_others(p)):
                    left.append("%s (%s)" % (p, pkg))
        left += [p for p in STATE_DIRS + ENABLEMENT if os.path.lexists(p)]
        self.assertEqual(left, [], "left after dpkg --purge")
        self.remove_user(check=True)
        self.assertEqual((self.user_exists(), self.group_exists()),
                         (self.user_was_there, self.group_was_there))


if __name__ == "__main__":
    why = refusal()
    if why:
        sys.exit("test_package: refusing to run: " + why)
    unittest.main()
