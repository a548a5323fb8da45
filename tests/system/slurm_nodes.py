"""A real Slurm cluster on hosts of our own (tests/system/hosts.py): Debian's slurm-wlm 22.05.

The controller (slurmctld) and the accounting daemon (slurmdbd, on a MariaDB of its own) run on
the login host, a slurmd on each worker host; each slurmd finds its node by the host's name.
Accounting is there because submitit reads a job's state with ``sacct``: without it a cancelled
job would look unknown forever. One munged serves every host (its socket is a path on the
shared disk, as one key shared by all hosts would be on a real cluster). Nothing is written
outside the cluster's own folder (removed with it): ``SLURM_CONF`` points every command
(sbatch, sacct, scancel, and the jobs' own srun) at its configuration.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.system.hosts import Network

TOOLS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd",
         "sbatch", "sacct", "sacctmgr", "sinfo", "squeue", "scancel")


_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # the daemons and Slurm's commands, wherever PATH is


def unavailable() -> str | None:
    """Why a Slurm cluster cannot be made here, or None."""
    missing = [tool for tool in TOOLS if shutil.which(tool, path=_PATH) is None]
    if missing:
        return (f"no {', '.join(missing)} here (apt-get install slurmctld slurmd slurm-client "
                "slurmdbd munge mariadb-server)")
    return None


@dataclass(frozen=True)
class SlurmCluster:
    conf: Path  # slurm.conf: SLURM_CONF for every command and job
    folder: Path  # the daemons' state and logs, removed with the cluster

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, net: Network, host: str, *argv: str) -> str:
        """A Slurm command (squeue, scancel, sacct) on ``host``: its output; it must succeed."""
        done = _slurm(net, host, self.env, *argv)
        assert done.returncode == 0, f"{argv}: {done.stderr}"
        return done.stdout

    def logs(self) -> str:
        return _logs(self.folder)


def _slurm_conf(folder: Path, munge: Path, net: Network, login: str,
                workers: Sequence[str]) -> str:
    nodes = "\n".join(f"NodeName={w} NodeAddr={net[w].address} CPUs=1 RealMemory=8000 "
                      "State=UNKNOWN" for w in workers)
    return f"""\
ClusterName=wdexp
SlurmctldHost={login}({net[login].address})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge}/socket
StateSaveLocation={folder}/slurmctld
SlurmdSpoolDir={folder}/slurmd-%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd-%n.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd-%n.log
# No cgroups: the machine's are not ours to change.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost={net[login].address}
# The munged socket for talking to slurmdbd: AuthInfo is not used for that connection.
AccountingStoragePass={munge}/socket
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
MinJobAge=300
{nodes}
PartitionName=workers Nodes={",".join(workers)} Default=YES MaxTime=INFINITE State=UP
"""


def _slurmdbd_conf(folder: Path, munge: Path, net: Network, login: str) -> str:
    return f"""\
AuthType=auth/munge
AuthInfo=socket={munge}/socket
DbdHost={login}
DbdAddr={net[login].address}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile={folder}/slurmdbd.pid
LogFile={folder}/slurmdbd.log
"""


@contextlib.contextmanager
def slurm_cluster(net: Network, login: str, workers: Sequence[str]) -> Iterator[SlurmCluster]:
    """munged, MariaDB, slurmdbd and slurmctld on ``login``, a slurmd on each of ``workers``;
    yielded once every node is idle. Each daemon runs in the foreground as a process of its
    host, stopped by pid at the end (the slurmds first), and its folder is removed.

    The folder is a short path of its own under /tmp: slurmstepd's sockets are named after the
    node and job inside it and must fit a socket address (108 bytes), and munged serves its
    socket only from a folder every user may pass through, which a test's temp folder is not."""
    folder = Path(tempfile.mkdtemp(prefix="wdexp-slurm", dir="/tmp"))
    munge = folder / "munge"
    started: list[subprocess.Popen[bytes]] = []
    try:
        env = _configure(folder, munge, net, login, workers)

        def start(host: str, argv: Sequence[str], name: str) -> None:
            started.append(net.start(host, [_tool(argv[0]), *argv[1:]],
                                     log=folder / f"{name}.out", env=env))

        start(login, ["munged", "--foreground", f"--key-file={munge}/key",
                      f"--socket={munge}/socket", f"--pid-file={munge}/pid",
                      f"--seed-file={munge}/seed", f"--log-file={folder}/munged.log",
                      "--num-threads=10", f"--origin={net[login].address}"], "munged")
        db = folder / "mariadb"
        installed = subprocess.run(
            [_tool("mariadb-install-db"), "--no-defaults", f"--datadir={db}", "--user=root",
             "--auth-root-authentication-method=socket", "--skip-test-db"],
            capture_output=True, text=True, timeout=120)
        assert installed.returncode == 0, installed.stdout + installed.stderr
        start(login, ["mariadbd", "--no-defaults", f"--datadir={db}",
                      f"--socket={env['MYSQL_UNIX_PORT']}", f"--pid-file={folder}/mariadb.pid",
                      "--skip-networking", "--user=root", f"--log-error={folder}/mariadb.log",
                      "--innodb-buffer-pool-size=16M"], "mariadbd")
        _wait(lambda: Path(env["MYSQL_UNIX_PORT"]).exists(), "MariaDB's socket", folder)
        start(login, ["slurmdbd", "-D"], "slurmdbd")
        # The controller registers its cluster with slurmdbd as it starts: slurmdbd first.
        _wait(lambda: _slurm(net, login, env, "sacctmgr", "-n", "list", "cluster"
                             ).returncode == 0, "slurmdbd to answer", folder)
        start(login, ["slurmctld", "-D", "-i"], "slurmctld")
        for worker in workers:
            start(worker, ["slurmd", "-D"], f"slurmd-{worker}")
        _wait(lambda: _idle(net, login, env, workers), "every node idle", folder)
        yield SlurmCluster(Path(env["SLURM_CONF"]), folder)
    finally:
        for process in reversed(started):
            net.stop(process)
        shutil.rmtree(folder, ignore_errors=True)


def _configure(folder: Path, munge: Path, net: Network, login: str,
               workers: Sequence[str]) -> dict[str, str]:
    """The key, the configuration files and spool folders; the daemons' environment."""
    folder.chmod(0o755)
    munge.mkdir(mode=0o755)
    key = munge / "key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf, dbd = folder / "slurm.conf", folder / "slurmdbd.conf"
    conf.write_text(_slurm_conf(folder, munge, net, login, workers))
    dbd.write_text(_slurmdbd_conf(folder, munge, net, login))
    dbd.chmod(0o600)  # slurmdbd refuses a configuration others could read
    # slurmd loads a cgroup plugin whatever else is configured, and autodetection finds none
    # in a network namespace (ip netns exec mounts a /sys of its own): named, it is loaded and
    # never used (no cgroup-based tracking or task plugin in slurm.conf).
    (folder / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")
    for worker in workers:
        (folder / f"slurmd-{worker}").mkdir()
    # slurmdbd reaches MariaDB through its socket (the client library's variable): no port.
    return {"SLURM_CONF": str(conf), "MYSQL_UNIX_PORT": str(folder / "mariadb.socket")}


def _logs(folder: Path) -> str:
    """The tail of each daemon's log and output."""
    return "".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                   for path in sorted(folder.glob("*.*")) if path.suffix in (".log", ".out"))


def _tool(name: str) -> str:
    path = shutil.which(name, path=_PATH)
    assert path is not None, name
    return path


def _slurm(net: Network, host: str, env: dict[str, str],
           *argv: str) -> subprocess.CompletedProcess[str]:
    """A Slurm command on ``host``, against the cluster ``env`` names."""
    return net.run(host, [_tool(argv[0]), *argv[1:]], env=env, timeout=60)


def _idle(net: Network, host: str, env: dict[str, str], workers: Sequence[str]) -> bool:
    done = _slurm(net, host, env, "sinfo", "-h", "-N", "-o", "%N %t")
    states = dict(line.split() for line in done.stdout.splitlines() if line.strip())
    return all(states.get(w) == "idle" for w in workers)


def _wait(condition: Callable[[], bool], what: str, folder: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {timeout:.0f} s\n{_logs(folder)}")
        time.sleep(0.5)
