"""A real single-node Slurm cluster for tests and benchmarks (Debian's Slurm 22.05).

    with SlurmCluster() as cluster:          # or cluster.start() ... cluster.stop()
        job = cluster.sbatch(["--output", cluster.spool_dir + "/%j.out"], "echo hi")
        info = cluster.wait_state(job, {"COMPLETED"}, 30)

start() installs what is missing (`bash scripts/deps.sh slurmctld slurmd slurm-client
munge`, only when one of their programs is not on this machine), then, in a new
temporary directory (prismq_testlib.temp_dir), runs as processes of its own:
  munged     with its own key (1 KiB from os.urandom, mode 0400), socket, pid and seed
             files, in the foreground (-F: it logs to munged.out then) and forced (-f:
             as root);
  slurmctld  -D -f CONF and slurmd -D -f CONF -N NODE, from a generated slurm.conf (see
             _CONF below and docs/slurm.md, "Slurm test cluster");
and returns once `sinfo -h -o %T` says `idle` (bounded by `wait`, default 30 s; it takes
0.2 to 1.5 s here once the packages are installed; start_seconds says how long). The
daemons get PR_SET_PDEATHSIG(SIGTERM), so they end with the process that started them
even if it is killed; stop() (also called at exit) cancels every job, waits for the node
to empty (bounded), sends SIGTERM to slurmd, slurmctld and munged, SIGKILL after 10 s,
and then kills whatever is left of this instance: every
process that carries its marker variable (PRISMQ_SLURM_CLUSTER=<its temp dir>, set for
the daemons and for the commands this module runs), every slurmstepd whose SLURM_CONF is
its slurm.conf, every job process (SLURM_CLUSTER_NAME=<its cluster name>, whoever
submitted the job: prismqd say) and all their descendants. That includes what a job left
behind: with proctrack/linuxproc, a child that outlives its batch script escapes Slurm.
A process killed with SIGKILL cannot run stop(): its daemons end (PDEATHSIG), but the
jobs' processes left running finish on their own.

Several clusters may run at once on one machine (ctest runs two integration tests at a
time): each has its own ports (picked by binding port 0), temp dir, munged, ClusterName
(prismq<pid>x<n>) and NodeName (pq<pid>n<n>, NodeHostname=localhost NodeAddr=127.0.0.1,
slurmd -N); test_slurm_cluster.py checks that two run jobs side by side.

If Slurm cannot be installed (or run: not root), start() raises SlurmUnavailable,
whose message says why: a test skips with it. Daemons that are installed but do not
come up are a failure (RuntimeError, with the tail of their logs), never a skip. Running
the daemons takes root (SlurmUser=root and slurmd starts jobs as their users).

Attributes after start(): conf_path, spool_dir (a directory for the jobs' output that
the jobs and the server share, mode 1777), cpus, node, cluster_name, tmp (the daemons'
logs: slurmctld.log, slurmd.log, *.out), start_seconds.
Methods: start_or_skip() (start() for a test class: SkipTest where Slurm is unavailable),
env() (variables to add to the environment of a child that runs Slurm commands,
such as prismqd: SLURM_CONF), run(args) (a Slurm command with that environment), sbatch,
job_state, wait_state, squeue_json, active_jobs, cancel_all, stop.

Every wait is bounded; states are polled (every 50 ms) with a deadline, never waited for
with a fixed sleep.
"""

import atexit
import ctypes
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import unittest
import time

from prismq_testlib import temp_dir

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
_PROGRAMS = ("slurmctld", "slurmd", "slurmstepd", "sbatch", "squeue", "scontrol", "scancel",
             "sinfo", "munged")
_MARKER = "PRISMQ_SLURM_CLUSTER"
_POLL = 0.05
_CMD_TIMEOUT = 30.0  # one Slurm command (MessageTimeout is 10 s)
_INSTALL_TIMEOUT = 240.0
_instances = itertools.count()

# KillWait=5: the grace between SIGTERM and SIGKILL when Slurm ends a job itself (scancel,
# scancel -s KILL, time limit); slurmd waits at least 5 s whatever it says (MAX(kill_wait,
# 5) in its terminate RPC), so 5 is the shortest there is. OverTimeLimit=0: kill at the
# limit. MinJobAge=300: an ended job stays visible to scontrol/squeue for 5 minutes
# (there is no accounting). MailProg=/bin/true: there is no mail program to complain of.
# ReturnToService=2: the node, DOWN until slurmd registers, becomes usable at once.
# select/cons_tres with CR_Core: cores are the consumable, so 1-CPU jobs share the node
# and memory is not consumed. SchedulerParameters: no delay before launching a batch job
# (batch_sched_delay, default 3 s) and a main scheduler pass every 2 s instead of 60.
_CONF = """\
ClusterName={cluster}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/slurmd
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/slurmctld.log
SlurmdLogFile={tmp}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MinJobAge=300
KillWait=5
OverTimeLimit=0
MessageTimeout=10
InactiveLimit=0
NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmUnavailable(Exception):
    """Slurm cannot be installed or started here; str() says why."""


def _free_ports(n):
    """n distinct TCP ports free on every address (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _mem_mb():
    """RealMemory for slurm.conf: MemTotal less 5 % (slurmd drains a node that has less
    than its configured memory)."""
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(int(line.split()[1]) / 1024 * 0.95)
    raise SlurmUnavailable("no MemTotal in /proc/meminfo")


def _die_with_parent():
    """preexec_fn of the daemons: SIGTERM when the process that started them ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _tail(path, n=20):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()[-n:]
    except OSError:
        return ""
    return "--- %s ---\n%s" % (os.path.basename(path), "".join(lines))


def parse_kv(text):
    """{key: value} of `scontrol show ... -o` output: Key=value pairs separated by spaces,
    where keys may hold ':' and '/' (NtasksPerN:B:S:C, Socks/Node) and values spaces."""
    keys = list(re.finditer(r"(?:^|\s)([A-Za-z][\w:/]*)=", text))
    out = {}
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(text)
        out[m.group(1)] = text[m.end():end].strip()
    return out


class SlurmCluster:
    """One single-node Slurm cluster: slurmctld, slurmd and munged of its own.

    SlurmCluster(wait=30.0, install=True, cpus=None)
      wait     bound (seconds) of start() once the packages are there.
      install  run scripts/deps.sh when a Slurm or munge program is missing.
      cpus     CPUs of the node (default: this machine's, os.cpu_count()). More than the
               machine has is allowed (SlurmdParameters=config_overrides): that many
               1-CPU jobs then run at once, e.g. to measure Slurm without queueing.
    """

    def __init__(self, wait=30.0, install=True, cpus=None):
        self.wait = wait
        self.install = install
        n = next(_instances)
        self.cluster_name = "prismq%dx%d" % (os.getpid(), n)
        self.node = "pq%dn%d" % (os.getpid(), n)
        self.tmp = None
        self.conf_path = None
        self.spool_dir = None
        self.cpus = cpus or os.cpu_count() or 1
        self.start_seconds = None
        self._procs = {}
        self._cmd_env = None
        self._stopped = False

    # -- life cycle ------------------------------------------------------------

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        return False

    def start_or_skip(self):
        """start() for a test class: unittest.SkipTest, with the reason, where Slurm is
        unavailable (SlurmUnavailable). Returns self."""
        try:
            return self.start()
        except SlurmUnavailable as e:
            raise unittest.SkipTest("no Slurm test cluster here: %s" % e) from None

    def start(self):
        """Installs, configures and starts the cluster; returns self once the node is
        idle. Raises SlurmUnavailable, or RuntimeError for daemons that do not come up
        (after stopping whatever it started)."""
        t0 = time.monotonic()
        if os.geteuid() != 0:
            raise SlurmUnavailable("the Slurm test cluster runs its daemons as root "
                                   "(SlurmUser=root); this is uid %d" % os.geteuid())
        self._install()
        self.tmp = temp_dir("prismq-slurm-")
        os.chmod(self.tmp, 0o755)  # job users other than root reach spool/ through it
        self.spool_dir = os.path.join(self.tmp, "spool")
        for d in ("state", "slurmd"):
            os.mkdir(os.path.join(self.tmp, d), 0o700)
        # munged wants its socket's directory searchable by all (any job user may run
        # Slurm commands); the key in it is 0400.
        os.mkdir(os.path.join(self.tmp, "munge"), 0o755)
        os.mkdir(self.spool_dir, 0o1777)
        os.chmod(self.spool_dir, 0o1777)
        self._cmd_env = self._make_env()
        atexit.register(self.stop)
        try:
            munge_socket = self._start_munged()
            ctld_port, slurmd_port = _free_ports(2)
            self.conf_path = os.path.join(self.tmp, "slurm.conf")
            with open(self.conf_path, "w", encoding="ascii") as f:
                f.write(_CONF.format(cluster=self.cluster_name,
                                     host=socket.gethostname().split(".")[0],
                                     ctld_port=ctld_port, slurmd_port=slurmd_port,
                                     munge_socket=munge_socket, tmp=self.tmp, node=self.node,
                                     cpus=self.cpus, mem=_mem_mb()))
                if self.cpus > (os.cpu_count() or 1):
                    f.write("SlurmdParameters=config_overrides\n")
            self._cmd_env["SLURM_CONF"] = self.conf_path
            self._spawn("slurmctld", ["slurmctld", "-D", "-f", self.conf_path])
            self._spawn("slurmd", ["slurmd", "-D", "-f", self.conf_path, "-N", self.node])
            self._wait_idle(t0 + self.wait)
        except (SlurmUnavailable, RuntimeError):
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self):
        """Cancels every job, stops the daemons (SIGTERM, SIGKILL after 10 s) and kills
        any process of this cluster left. Idempotent."""
        if self._stopped or self.tmp is None:
            return
        self._stopped = True
        if self._alive("slurmctld"):
            try:
                self.cancel_all()
                self._wait(lambda: not self.active_jobs(), 15, lambda: "jobs to end")
            except (AssertionError, subprocess.SubprocessError, OSError):
                pass  # the kill below ends them
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.get(name)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._kill_leftovers()
        atexit.unregister(self.stop)

    # -- Slurm commands --------------------------------------------------------

    def env(self):
        """Variables to add to the environment of a child that runs Slurm commands
        (sbatch, squeue, scancel...) on this cluster, e.g. prismqd. The munge socket is
        named in slurm.conf (AuthInfo), so SLURM_CONF is all it takes."""
        return {"SLURM_CONF": self.conf_path}

    def run(self, args, input=None, check=True, timeout=_CMD_TIMEOUT):
        """Runs a Slurm command (args[0] found on PATH) against this cluster; returns the
        subprocess.CompletedProcess (text). check: raise AssertionError with its stderr
        when it exits non-zero."""
        res = subprocess.run(args, input=input, capture_output=True, text=True,
                             env=self._cmd_env, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError("%s exited %d: %s%s" % (" ".join(args), res.returncode,
                                                        res.stderr, res.stdout))
        return res

    def sbatch(self, args, script_text):
        """Submits `script_text` (a "#!/bin/sh" line is added when it has no "#!" line)
        with `sbatch --parsable ARGS`; returns the job id (a string)."""
        if not script_text.startswith("#!"):
            script_text = "#!/bin/sh\n" + script_text
        out = self.run(["sbatch", "--parsable"] + list(args), input=script_text).stdout
        return out.strip().split(";")[0]

    def job_state(self, job_id):
        """`scontrol show job -o ID` as a dict (JobState, ExitCode, Reason, NodeList,
        StdOut, RunTime...), or None once Slurm no longer knows the job (MinJobAge
        after its end)."""
        res = self.run(["scontrol", "show", "job", "-o", str(job_id)], check=False)
        if res.returncode != 0:
            if "Invalid job id" in res.stderr:
                return None
            raise AssertionError("scontrol show job %s: %s" % (job_id, res.stderr))
        return parse_kv(res.stdout.strip())

    def wait_state(self, job_id, states, timeout=30.0, reason=None):
        """Polls job_state until its JobState is one of `states` (and its Reason equals
        `reason` when given); returns that dict. AssertionError with the last state on
        timeout."""
        states = {states} if isinstance(states, str) else set(states)
        last = {}

        def ready():
            nonlocal last
            last = self.job_state(job_id) or {}
            return last.get("JobState") in states and (reason is None or
                                                       last.get("Reason") == reason)

        self._wait(ready, timeout, lambda: "job %s in %s%s (last: %s)" % (
            job_id, sorted(states), "" if reason is None else " reason " + reason,
            {k: last.get(k) for k in ("JobState", "Reason", "ExitCode")}))
        return last

    def squeue_json(self):
        """`squeue --json` parsed: {"meta": ..., "errors": [...], "jobs": [{"job_id": int,
        "job_state": "RUNNING", ...}]}. Lists the jobs Slurm still knows (ended ones too,
        for MinJobAge)."""
        return json.loads(self.run(["squeue", "--json"]).stdout)

    def active_jobs(self):
        """Ids (strings) of the jobs pending, running, completing or suspended."""
        out = self.run(["squeue", "-h", "-o", "%i", "-t", "PD,R,CG,S,CF"]).stdout
        return out.split()

    def cancel_all(self):
        """scancel every job of the partition (default signal: SIGTERM, then SIGKILL
        after KillWait)."""
        self.run(["scancel", "--partition=debug"])

    # -- internals -------------------------------------------------------------

    def _install(self):
        if all(shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
               for p in _PROGRAMS):
            return
        if not self.install:
            raise SlurmUnavailable("Slurm is not installed (packages %s)" % " ".join(_PACKAGES))
        try:
            res = subprocess.run(["bash", os.path.join(_REPO, "scripts", "deps.sh")] +
                                 list(_PACKAGES), capture_output=True, text=True,
                                 timeout=_INSTALL_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SlurmUnavailable("cannot install %s: %s" % (" ".join(_PACKAGES), e)) from None
        if res.returncode != 0:
            raise SlurmUnavailable("scripts/deps.sh %s failed (exit %d):\n%s" % (
                " ".join(_PACKAGES), res.returncode, (res.stderr + res.stdout)[-2000:]))

    def _make_env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLURM_", "SBATCH_", "SQUEUE_", "SINFO_", "SCANCEL_"))}
        if "/usr/sbin" not in env.get("PATH", "").split(":"):
            env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        env[_MARKER] = self.tmp
        return env

    def _spawn(self, name, args):
        log = open(os.path.join(self.tmp, name + ".out"), "wb")
        try:
            self._procs[name] = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self._cmd_env, cwd=self.tmp, start_new_session=True,
                preexec_fn=_die_with_parent)
        except OSError as e:
            raise SlurmUnavailable("cannot run %s: %s" % (args[0], e)) from None
        finally:
            log.close()  # the daemon has its own copy

    def _alive(self, name):
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _logs(self):
        return "\n".join(t for t in (_tail(os.path.join(self.tmp, f)) for f in (
            "munged.log", "munged.out", "slurmctld.log", "slurmctld.out", "slurmd.log",
            "slurmd.out")) if t)

    def _start_munged(self):
        mdir = os.path.join(self.tmp, "munge")
        key = os.path.join(mdir, "munge.key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(1024))
        sock = os.path.join(mdir, "munge.socket")
        self._spawn("munged", ["munged", "-F", "-f", "--key-file=" + key, "--socket=" + sock,
                               "--pid-file=" + os.path.join(mdir, "munged.pid"),
                               "--log-file=" + os.path.join(self.tmp, "munged.log"),
                               "--seed-file=" + os.path.join(mdir, "munged.seed")])
        deadline = time.monotonic() + self.wait
        while not os.path.exists(sock):
            if not self._alive("munged"):
                raise RuntimeError("munged exited with %s\n%s" % (
                    self._procs["munged"].returncode, self._logs()))
            if time.monotonic() >= deadline:
                raise RuntimeError("munged made no socket within %.0f s\n%s" % (
                    self.wait, self._logs()))
            time.sleep(_POLL)
        return sock

    def _wait_idle(self, deadline):
        state = ""
        while True:
            for name in ("munged", "slurmctld", "slurmd"):
                if not self._alive(name):
                    raise RuntimeError("%s exited with %s\n%s" % (
                        name, self._procs[name].returncode, self._logs()))
            try:
                res = self.run(["sinfo", "-h", "-o", "%T"], check=False, timeout=5)
                state = (res.stdout + res.stderr).strip()
            except subprocess.TimeoutExpired:
                state = "sinfo timed out"
            if state == "idle":
                return
            if time.monotonic() >= deadline:
                raise RuntimeError("the Slurm node is not idle within %.0f s (sinfo: %r)\n%s"
                                       % (self.wait, state, self._logs()))
            time.sleep(_POLL)

    def _wait(self, pred, timeout, what):
        """Polls pred() until true; AssertionError after `timeout` seconds naming
        what() (a function, called then)."""
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what()))
            time.sleep(_POLL)

    def _kill_leftovers(self):
        """SIGKILL to every process of this cluster and to their descendants, all found
        before any is killed: the processes carrying its marker (daemons, the commands
        run by this module), its slurmstepds (slurmd gives them an environment of their
        own, with its SLURM_CONF but without the marker; they leave slurmd's session and
        are reparented to init) and its jobs' processes, whoever submitted them: each
        has SLURM_CLUSTER_NAME, even with --export=NONE. Those matter because
        proctrack/linuxproc follows processes through their parents: a child a batch
        script leaves behind is reparented to init and escapes Slurm, which neither
        kills it at the job's end nor on scancel."""
        marker = ("%s=%s" % (_MARKER, self.tmp)).encode()
        conf = ("SLURM_CONF=%s" % self.conf_path).encode()
        job = ("SLURM_CLUSTER_NAME=%s" % self.cluster_name).encode()
        children = {}
        marked = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open("/proc/%s/stat" % entry, "rb") as f:
                    head, tail = f.read().rsplit(b")", 1)
                ppid = int(tail.split()[1])
                with open("/proc/%s/environ" % entry, "rb") as f:
                    env = f.read().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
            comm = head.split(b"(", 1)[-1]
            if marker in env or job in env or (comm == b"slurmstepd" and conf in env):
                marked.append(int(entry))
        victims = set()
        todo = list(marked)
        while todo:
            pid = todo.pop()
            if pid not in victims:
                victims.add(pid)
                todo.extend(children.get(pid, ()))
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
