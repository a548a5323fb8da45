"""make bench-hosts: the team set-up under load, across hosts of our own (opt-in: root, minutes).

The hosts of tests/system/test_hosts.py — PostgreSQL 15 and ``mlflow server`` (proxied
artifacts) on a tracking host, a Slurm controller on a login host, a one-CPU slurmd on each of
two worker hosts — and one sweep typed on the login host: ``--jobs`` pairs of ``--epochs``
epochs as one Slurm job array into the server. Reported: the sweep's wall time (GNU time, the
whole ``python -m wdexp.train -m`` process), per job, and the peak memory (PSS, sampled every
second) of the server's process tree and of PostgreSQL's; checked: every pair FINISHED once, every
point of every arm once. A figure, not judged: nothing here runs the same work another way.
Usage: python benchmarks/hosts_load.py [--jobs 64] [--epochs 1000] [--output FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the hosts and servers are started as tests/ starts them

from tests.system.hosts import unavailable  # noqa: E402
from tests.system.slurm_nodes import slurm_cluster  # noqa: E402
from tests.system.slurm_nodes import unavailable as no_slurm  # noqa: E402
from tests.system.team_hosts import LOGIN, WORKERS, Cluster, team_cluster  # noqa: E402

ARMS = """
SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid
JOIN experiments e ON e.experiment_id = r.experiment_id
WHERE e.name = :experiment AND t.key = 'wdexp.kind' AND t.value = :kind AND r.status = :status
"""
# Per arm and metric: its points, its distinct steps and the last step.
POINTS = """
SELECT m.run_uuid, m.key, count(*), count(DISTINCT m.step), max(m.step)
FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid
JOIN experiments e ON e.experiment_id = r.experiment_id
JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'wdexp.kind' AND t.value = 'arm'
WHERE e.name = :experiment GROUP BY m.run_uuid, m.key
"""


class PeakPss(threading.Thread):
    """The peak summed PSS of each process tree (a leader and its descendants: PostgreSQL's
    backends each start a session of their own), sampled every second."""

    def __init__(self, leaders: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.leaders, self.peak_mb = leaders, dict.fromkeys(leaders, 0.0)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            for name, pid in self.leaders.items():
                total = 0
                # (one that ended between listing and reading counts nothing)
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    leader = psutil.Process(pid)
                    for process in (leader, *leader.children(recursive=True)):
                        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                            total += process.memory_full_info().pss
                self.peak_mb[name] = max(self.peak_mb[name], total / 2**20)


def check(cluster: Cluster, experiment: str, jobs: int, epochs: int) -> str:
    """Every pair FINISHED once, every point of every arm once; what was found, in words."""
    import sqlalchemy

    os.environ["PGPASSWORD"] = cluster.secret  # this process's only
    engine = sqlalchemy.create_engine(cluster.database)
    with engine.connect() as db:
        count = {kind: db.execute(sqlalchemy.text(ARMS), {"experiment": experiment,
                                                          "kind": kind, "status": "FINISHED"}
                                  ).scalar_one() for kind in ("pair", "arm")}
        points = db.execute(sqlalchemy.text(POINTS), {"experiment": experiment}).all()
    engine.dispose()
    wrong = [row for row in points if not (row[2] == row[3] == epochs + 1 and row[4] == epochs)]
    if count != {"pair": jobs, "arm": 2 * jobs} or wrong or len(points) % (2 * jobs):
        raise SystemExit(f"bench-hosts: the store is not whole: {count} finished, "
                         f"{len(wrong)} arm metrics with a point missing or twice: {wrong[:5]}")
    return f"{jobs} pairs once, {len(points)} arm metrics x {epochs + 1} steps once"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--output", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    if reason := unavailable() or no_slurm():
        print(f"bench-hosts: {reason}", file=sys.stderr)
        return 2
    experiment = "load"
    with tempfile.TemporaryDirectory(prefix="wdexp-bench-hosts-") as scratch:
        folder = Path(scratch)
        (folder / "tracking").mkdir()
        with team_cluster(folder / "tracking") as cluster, \
                slurm_cluster(cluster.net, LOGIN, WORKERS) as slurm:
            sampler = PeakPss(cluster.leaders)
            sampler.start()
            sweep = cluster.net.run(
                LOGIN, ["/usr/bin/time", "-f", "%e", "-o", str(folder / "time.txt"),
                        sys.executable, "-m", "wdexp.train", "-m", "hydra/launcher=slurm",
                        f"tracking.uri={cluster.url}", f"tracking.experiment={experiment}",
                        f"seed=range({args.jobs})", f"epochs={args.epochs}",
                        f"hydra.sweep.dir={folder}/multirun"],
                env=slurm.env, cwd=folder, timeout=4 * 3600)
            sampler.done.set()
            sampler.join()
            if sweep.returncode != 0:
                print(sweep.stderr[-5000:], file=sys.stderr)
                return 1
            wall = float((folder / "time.txt").read_text().split()[-1])
            found = check(cluster, experiment, args.jobs, args.epochs)
    peak = sampler.peak_mb
    header = ["benchmark", "sweep wall", "per job", "server peak", "PostgreSQL peak", "store"]
    row = [f"{args.jobs} jobs x {args.epochs} epochs, Slurm array on 2 one-CPU worker hosts "
           "into the PostgreSQL-backed server", f"{wall:.0f} s", f"{wall / args.jobs:.1f} s",
           f"{peak['server']:.0f} MB", f"{peak['postgres']:.0f} MB", found]
    table = "\n".join("| " + " | ".join(cells) + " |"
                      for cells in (header, ["---"] * len(header), row))
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end\n\n{table}")
    if args.output:
        args.output.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
