"""Dask across simulated hosts: network namespaces on one machine, joined by a bridge.

::

    namespace  address       runs
    net        (bridge br0)  nothing: veth ends of the others, joined by the bridge
    sched      10.213.0.1    dask scheduler --protocol tls (mutual TLS, port 8786)
    host-a     10.213.0.2    dask worker (a nanny and one single-threaded worker process)
    host-b     10.213.0.3    dask worker
    host-c     10.213.0.4    dask worker, started mid-run
    trainer    10.213.0.5    tests/helpers_dask_hosts.py: DataParallelTrainer(backend="dask", tls=...)

The subnet exists only inside these namespaces; nothing is added to the machine's own
namespace. Each host's processes also get a /dev/shm of their own (a tmpfs in a mount
namespace), as separate machines have: the semaphores of a host that is killed outright go
with it instead of staying in the machine's /dev/shm. Every namespace, link and process is
removed on the way out (a namespace's links go with it); leftovers of a run that was killed
are removed first, found by the name prefix. Needs root (or CAP_SYS_ADMIN) and the ``ip``
command; skipped otherwise.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'minigrad[distributed]')")

pytestmark = pytest.mark.slow

PREFIX = "minigrad-hosts-"
SUBNET = "10.213.0"
HOSTS = {"sched": 1, "host-a": 2, "host-b": 3, "host-c": 4, "trainer": 5}
PORT = 8786
STEPS = 16
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_SECONDS = 120


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def namespace_pids(namespace):
    done = ip("netns", "pids", namespace, check=False)
    return [int(p) for p in done.stdout.split()]


def kill_namespace_processes(namespace):
    """SIGKILL every process in ``namespace`` (SIGCONT first, for a stopped one) and wait for them."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = namespace_pids(namespace)
        if not pids:
            return
        for pid in pids:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        time.sleep(0.1)


def remove_namespace(namespace):
    kill_namespace_processes(namespace)
    ip("netns", "del", namespace, check=False)


def remove_leftovers():
    """Namespaces of earlier runs whose test process is gone (the name ends with its pid)."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            pid = name[len(PREFIX):].split("-")[0]
            if not (pid.isdigit() and os.path.exists(f"/proc/{pid}")) or int(pid) == os.getpid():
                remove_namespace(name)


def skip_unless_permitted():
    if sys.platform != "linux" or shutil.which("ip") is None:
        pytest.skip("needs Linux and the ip command (iproute2)")
    if os.geteuid() != 0:
        pytest.skip("needs root to make network namespaces (ip netns add)")
    probe = f"{PREFIX}{os.getpid()}-probe"
    done = ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        pytest.skip(f"network namespaces are not permitted here: {done.stderr.strip()}")
    ip("netns", "del", probe, check=False)


class Hosts:
    """The namespaces, the bridge and the processes of one test; ``close`` removes them all."""

    def __init__(self, folder):
        self.folder = folder
        self.tag = f"{PREFIX}{os.getpid()}"
        self.namespaces = []
        self.processes = []
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
                        DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED="False")

    def name(self, host):
        return f"{self.tag}-{host}"

    def build(self):
        net = self.name("net")
        self._add_namespace(net)
        ip("-n", net, "link", "add", "br0", "type", "bridge")
        ip("-n", net, "link", "set", "br0", "up")
        for host, last in HOSTS.items():
            namespace = self.name(host)
            self._add_namespace(namespace)
            ip("-n", net, "link", "add", f"v{last}", "type", "veth", "peer", "name", "eth0", "netns", namespace)
            ip("-n", net, "link", "set", f"v{last}", "master", "br0", "up")
            ip("-n", namespace, "addr", "add", f"{SUBNET}.{last}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")

    def _add_namespace(self, namespace):
        ip("netns", "add", namespace)
        self.namespaces.append(namespace)
        ip("-n", namespace, "link", "set", "lo", "up")

    def command(self, host, *command):
        """``command`` run as on ``host``: in its network namespace, with a /dev/shm of its own."""
        own_shm = 'mount -t tmpfs -o size=1g,mode=1777 shm /dev/shm && exec "$@"'
        return ["ip", "netns", "exec", self.name(host), "unshare", "--mount", "--propagation", "private",
                "sh", "-c", own_shm, "sh", *command]

    def start(self, host, *command, log_name=None):
        """``command`` on ``host``, its output in FOLDER/<host>.log (or a pipe)."""
        argv = self.command(host, *command)
        if log_name is None:
            process = subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, start_new_session=True, cwd=ROOT)
        else:
            with open(self.folder / log_name, "w") as log:
                process = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True, cwd=ROOT)
        self.processes.append(process)
        return process

    def wait_for_log(self, log_name, text, process):
        deadline = time.monotonic() + START_SECONDS
        path = self.folder / log_name
        while text not in path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{log_name} never said {text!r}:\n{path.read_text()[-3000:]}")
            time.sleep(0.2)

    def kill_host(self, host):
        kill_namespace_processes(self.name(host))

    def close(self):
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for namespace in reversed(self.namespaces):
            remove_namespace(namespace)
        for process in self.processes:
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture
def hosts(tmp_path):
    skip_unless_permitted()
    remove_leftovers()
    made = Hosts(tmp_path)
    try:
        made.build()
        yield made
    finally:
        made.close()
    assert not [n for n in ip("netns", "list").stdout.split() if n.startswith(made.tag)]


def dask_worker(hosts, host, tls):
    ca, cert, key = tls
    worker = hosts.start(host, sys.executable, "-m", "dask", "worker", f"tls://{SUBNET}.1:{PORT}",
                         "--host", f"{SUBNET}.{HOSTS[host]}", "--nworkers", "1", "--nthreads", "1",
                         "--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key, "--no-dashboard",
                         log_name=f"{host}.log")
    hosts.wait_for_log(f"{host}.log", "Registered to:", worker)
    return worker


def start_cluster(hosts, folder):
    """The scheduler and the workers of host-a and host-b, over mutual TLS; the TLS files."""
    from helpers_tls import make_certificates
    ca, cert, key = tls = make_certificates(folder)
    scheduler = hosts.start("sched", sys.executable, "-m", "dask", "scheduler", "--host", f"{SUBNET}.1",
                            "--port", str(PORT), "--protocol", "tls", "--tls-ca-file", ca, "--tls-cert", cert,
                            "--tls-key", key, "--no-dashboard", log_name="sched.log")
    hosts.wait_for_log("sched.log", "Scheduler at:", scheduler)
    for host in ("host-a", "host-b"):
        dask_worker(hosts, host, tls)
    return tls


def test_a_scheduler_two_worker_hosts_and_a_trainer_on_four_hosts(hosts, tmp_path):
    """Same bits as the process pool; host-a killed mid-run; host-c joins mid-run and takes work."""
    from helpers_dask_hosts import PAUSE_AT, reference_sha256

    expected = reference_sha256(STEPS)
    tls = ca, cert, key = start_cluster(hosts, tmp_path)

    trainer = hosts.start("trainer", sys.executable, os.path.join(ROOT, "tests", "helpers_dask_hosts.py"),
                          f"tls://{SUBNET}.1:{PORT}", ca, cert, key, str(tmp_path), str(STEPS))
    steps, final = [], None
    for line in trainer.stdout:
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        if "sha256" in row:
            final = row["sha256"]
            continue
        steps.append(row)
        if row["step"] == 3:
            hosts.kill_host("host-a")  # the host vanishes while step 4 runs
        if row["step"] == PAUSE_AT - 1:
            dask_worker(hosts, "host-c", tls)
            (tmp_path / "resume").write_text("")
    assert trainer.wait(timeout=60) == 0
    log = "\n".join(json.dumps(row) for row in steps)
    assert final == expected, log
    a, b, c = (f"tls://{SUBNET}.{HOSTS[h]}:" for h in ("host-a", "host-b", "host-c"))
    assert any(x.startswith(a) for x in steps[0]["actors"]) and any(x.startswith(b) for x in steps[0]["actors"])
    after_kill = [row for row in steps if row["step"] >= 5]
    assert after_kill and not any(x.startswith(a) for row in after_kill for x in row["actors"]), log
    joined = [row for row in steps if any(x.startswith(c) for x in row["actors"])]
    assert joined and joined[0]["step"] >= PAUSE_AT, log  # the new host holds a replica: a chunk each step


def test_the_training_script_on_the_simulated_hosts(hosts, tmp_path):
    """train_parallel.py --backend dask --scheduler tls://... with the TLS flags: the pool's bits."""
    script = os.path.join(ROOT, "scripts", "train_parallel.py")
    usage = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120,
                           env=hosts.env).stdout
    if "--tls-ca-file" not in usage:
        pytest.skip("train_parallel.py has no --tls-ca-file option yet")
    args = ["--batch-size", "4", "--max-steps", "6", "--quiet"]
    ca, cert, key = start_cluster(hosts, tmp_path)
    runs = {}
    for name, extra, host in (("dask", ["--backend", "dask", "--scheduler", f"tls://{SUBNET}.1:{PORT}",
                                        "--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key], "trainer"),
                              ("pool", ["--workers", "2"], None)):
        command = [sys.executable, script, *args, *extra, "--out", str(tmp_path / name)]
        if host is not None:
            command = hosts.command(host, *command)
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=hosts.env, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        runs[name] = [line for line in done.stdout.splitlines() if line.startswith("parameters sha256")]
    assert runs["dask"] == runs["pool"] and runs["dask"]
