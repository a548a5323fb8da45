"""make bench: wdexp against the scripts a user would write instead, as whole processes.

Each case runs A (wdexp) and B (its reference) alternately, A B A B ..., after one untimed
warm-up of each, and times every process with GNU time (wall seconds, max RSS). The table shows
medians, the ratio A/B and its target. A missed target is a result, not an error: the exit status
is non-zero only when a command fails.
Usage: python benchmarks/run.py [--repeat 5] [--only SUBSTRING ...] [--smoke] [--output FILE]
       [--members-figure PNG]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
PY = sys.executable
GNU_TIME = "/usr/bin/time"
WEIGHT_DECAYS = "0,0.0001,0.0003,0.001,0.003,0.01,0.03,0.1,0.3,1"
MULTIRUN_ROUNDS = 3  # the multirun case takes minutes per round
LONG_ROUNDS = 3  # so does the 20 000-epoch pair
sys.path.insert(0, str(HERE.parent))  # the team-server row starts its servers as tests/ does
KEPT = Path(tempfile.gettempdir()) / f"wdexp-bench-kept-{os.getpid()}"  # made by main()
TEAM_DECAYS = "0,0.0001,0.001,0.003,0.01,0.03,0.1,1"  # the PostgreSQL test's sweep: 8 jobs
SERVER: dict[str, str] = {}  # "url" of the team server, while one runs

from tests.processes import tracking_processes  # noqa: E402 - found through the path above


@dataclass(frozen=True)
class Command:
    # "{tmp}" stands for the process's own fresh temp dir, "{kept}" for one dir the whole bench
    # shares (a store the first run creates and later runs reuse, as ./mlflow.db is used).
    argv: tuple[str, ...]
    tree: bool = False  # also sample the memory of its whole process tree (costs some CPU)

    def filled(self, tmp: str, server: str) -> list[str]:
        """The command line to run: its stand-ins replaced by these folders and server URL."""
        return [a.replace("{tmp}", tmp).replace("{kept}", str(KEPT)).replace("{server}", server)
                for a in self.argv]

    def label(self) -> str:
        return " ".join(a.replace(f"{HERE}/", "benchmarks/") for a in self.argv[1:]
                        if "{tmp}" not in a and "{kept}" not in a)


# A tracked process gets a fresh sqlite store in its own temp dir, so each run pays store
# creation (the schema migrations) as a first-time user's does; wdexp and the tutorial alike.
# ``kept=True``: the store that exists after a first run, as the default ./mlflow.db does.
def wdexp(*args: str, tree: bool = False, kept: bool = False, server: bool = False) -> Command:
    """``server=True``: into the PostgreSQL-backed team server the bench starts ("{server}")."""
    store = "{server}" if server else f"sqlite:///{'{kept}' if kept else '{tmp}'}/mlflow.db"
    return Command((PY, "-m", "wdexp.train", *args, f"tracking.uri={store}",
                    "hydra.run.dir={tmp}/run", "hydra.sweep.dir={tmp}/sweep"), tree)


def tutorial(*args: str, tree: bool = False) -> Command:
    return Command((PY, str(HERE / "tutorial" / "train.py"), *args,
                    "tracking_uri=sqlite:///{tmp}/mlflow.db", "hydra.run.dir={tmp}/run",
                    "hydra.sweep.dir={tmp}/sweep"), tree)


def notebook(epochs: int) -> Command:
    return Command((PY, str(HERE / "notebook.py"), str(epochs)))


@dataclass(frozen=True)
class Case:
    name: str
    a: Command
    b: Command | None  # None: A reports both sides itself (the ingestion probe)
    target: float | None  # None: a figure, not judged
    measure: str = "wall"  # wall | rss | tree | ingest
    rounds: int | None = None  # a cap on --repeat
    higher_is_better: bool = False
    members: int = 0  # > 0: A's wall per member (a stacked sweep) against B's whole wall


def cases(smoke: bool) -> list[Case]:
    # A smoke run shares its processes between rows where it can: the long pair is the seed
    # run, and the seed run's memory is sampled as it runs (the memory rows' own commands).
    seed, long, sweep, steps = (3, 3, 5, 333) if smoke else (30, 20_000, 1000, 10_000)
    bn_epochs = 3 if smoke else 60
    decays = "0.01" if smoke else WEIGHT_DECAYS
    n = len(decays.split(","))
    team = "0" if smoke else TEAM_DECAYS  # smoke: one job, on a worker as in the full row
    # smoke: 2 jobs of 1 epoch, one joblib worker (a process less; nothing is judged)
    help_decays, help_seeds, help_epochs, help_workers = (1, 2, 1, 1) if smoke else (3, 10, 30, 2)
    members_epochs = 1 if smoke else 100
    digits = ("model=mlp", "model.hidden=[32]", "data.batch_size=128", "optimizer=adamw",
              "optimizer.weight_decay=0.01", f"epochs={members_epochs}")
    stacked_sweep = wdexp("-m", "hydra/launcher=stacked", f"epochs={sweep}",
                          f"optimizer.weight_decay={decays}")
    new_store_run = wdexp(f"epochs={seed}", tree=smoke)

    def members(jobs: int) -> Case:
        # smoke: the rows above's commands (no process more; nothing is judged)
        return Case(f"{2 * jobs} members (seed=range({jobs})), digits MLP {members_epochs} "
                    "epochs, stacked, per member / one pair alone",
                    stacked_sweep if smoke else wdexp("-m", "hydra/launcher=stacked", *digits,
                                                      f"seed=range({jobs})"),
                    new_store_run if smoke else wdexp(*digits), 0.2 if jobs == 32 else None,
                    rounds=1, members=2 * jobs)

    does_decay_help = ("-m", "+experiment=does_decay_help", f"epochs={help_epochs}",
                       f"seed=range({help_seeds})",
                       *(("optimizer.weight_decay=0.1",) if smoke else ()))
    team_sweep = ("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"epochs={sweep}",
                  f"optimizer.weight_decay={team}")
    return [
        Case(f"seed run ({seed} epochs), existing store / bare loop",
             wdexp(f"epochs={seed}", kept=True), notebook(seed), 1.25),
        Case(f"seed run ({seed} epochs), new store / bare loop", new_store_run, notebook(seed),
             1.25),
        Case(f"{long}-epoch pair, every epoch logged / bare loop",
             wdexp(f"epochs={long}", tree=smoke), notebook(long), 3.0, rounds=LONG_ROUNDS),
        Case(f"{n} values x {sweep} epochs multirun / tutorial multirun",
             wdexp("-m", f"epochs={sweep}", f"optimizer.weight_decay={decays}"),
             tutorial("-m", f"epochs={sweep}", f"weight_decay={decays}"), 0.15,
             rounds=MULTIRUN_ROUNDS),
        # The same sweep as one stacked model in one process (wdexp/stack.py).
        Case(f"{n} values x {sweep} epochs, hydra/launcher=stacked / tutorial multirun",
             stacked_sweep, tutorial("-m", f"epochs={sweep}", f"weight_decay={decays}"), 0.1,
             rounds=MULTIRUN_ROUNDS),
        # does_decay_help's shape, stacked against two joblib workers (the experiment's own).
        Case(f"{help_decays} x {help_seeds} seeds x {help_epochs}-epoch MNIST-1D MLP, "
             f"hydra/launcher=stacked / joblib n_jobs={help_workers}",
             wdexp(*does_decay_help, "hydra/launcher=stacked"),
             wdexp(*does_decay_help, "hydra/launcher=joblib",
                   f"hydra.launcher.n_jobs={help_workers}"), 0.2, rounds=1),
        # What a member costs as a stack grows: a seed sweep of digits MLP pairs (2 members per
        # job), stacked, per member against one pair run alone; judged at 64 members.
        *(members(jobs) for jobs in (1, 4, 32, 128)),
        # The per-layer step geometry (wdexp/geometry.py) against the same pair without it.
        # (smoke: one command for both, a process less; nothing is judged)
        Case(f"bn_mlp pair ({bn_epochs} epochs), geometry logged / not logged",
             wdexp("model=bn_mlp", f"epochs={bn_epochs}"),
             wdexp("model=bn_mlp", f"epochs={bn_epochs}",
                   *(() if smoke else ("geometry.steps_per_epoch=0",))), 1.15),
        # The team set-up (README): an mlflow server on PostgreSQL, jobs in parallel processes.
        Case(f"{len(team.split(','))} jobs x {sweep} epochs joblib sweep, "
             "PostgreSQL-backed server / local sqlite",
             wdexp(*team_sweep, server=True), wdexp(*team_sweep), 2.0, rounds=MULTIRUN_ROUNDS),
        # In-process repetitions, alternated inside the probe: one process is all it takes.
        Case(f"metric ingestion ({6 * steps} points) / log_batch direct",
             Command((PY, str(HERE / "ingestion_probe.py"), "--keys", "6", "--steps", str(steps),
                      "--repeat", "1" if smoke else "3")),
             None, 4.0, measure="ingest", rounds=1, higher_is_better=True),
        # GNU time's max RSS is that of the largest single process, not of the process tree:
        # wdexp's tracking process beside the job is not added in. The second row is the
        # whole tree's peak proportional set size (shared pages counted once), sampled.
        Case("peak memory (largest process), seed run / tutorial", wdexp(f"epochs={seed}",
             tree=True), tutorial(f"epochs={seed}", tree=True), 1.0, measure="rss"),
        Case("peak memory (process tree, PSS), seed run / tutorial", wdexp(f"epochs={seed}",
             tree=True), tutorial(f"epochs={seed}", tree=True), 1.0, measure="tree"),
    ]


@dataclass(frozen=True)
class Sample:
    wall: float
    rss_mb: float
    stdout: str
    tree_mb: float = 0.0


def tree_peak_mb(process: subprocess.Popen[bytes], cwd: str) -> float:
    """The peak summed PSS of ``process``'s descendants (GNU time's child and its own) and of
    the job's detached tracking process, polled every 20 ms until it exits."""
    peak = 0
    root = psutil.Process(process.pid)
    detached: list[psutil.Process] = []
    polls = 0
    while process.poll() is None:
        if polls % 10 == 0:  # the tracking process appears once, early; look for it now and then
            detached = tracking_processes(cwd) or detached
        polls += 1
        total = 0
        try:
            for child in {*root.children(recursive=True), *detached}:
                total += child.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass  # a process ended between listing and reading: the next poll counts again
        peak = max(peak, total)
        time.sleep(0.02)
    return peak / 2**20


def has_postgres() -> bool:
    from tests.postgres import find_bindir

    return find_bindir() is not None


@contextlib.contextmanager
def team_server() -> Iterator[str]:
    """The README's team set-up, as tests/system/test_team_server.py starts it: a throwaway
    PostgreSQL cluster and an ``mlflow server`` on it (the password only in its PGPASSWORD)."""
    from tests.conftest import free_port
    from tests.postgres import running_postgres
    from tests.servers import start_mlflow_server

    with running_postgres() as postgres, tempfile.TemporaryDirectory() as folder:
        server = start_mlflow_server(Path(folder), free_port(), backend_store_uri=postgres.uri,
                                     env={"PGPASSWORD": postgres.password})
        try:
            yield server.url
        finally:
            server.kill()


class CommandFailed(Exception):
    pass


def sample(command: Command) -> Sample:
    with tempfile.TemporaryDirectory(prefix="wdexp-bench-") as tmp:
        argv = command.filled(tmp, SERVER.get("url", ""))
        timing, out, err = (Path(tmp) / name for name in ("time.txt", "out.txt", "err.txt"))
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen([GNU_TIME, "-f", "%e %M", "-o", str(timing), *argv],
                                    cwd=tmp, stdout=stdout, stderr=stderr)
            tree_mb = tree_peak_mb(proc, tmp) if command.tree else 0.0
            returncode = proc.wait()
        if returncode != 0:
            tail = "\n".join(err.read_text().splitlines()[-25:])
            raise CommandFailed(f"exit {returncode}: {' '.join(argv)}\n{tail}")
        wall, rss_kb = timing.read_text().split()[-2:]
        result = Sample(float(wall), int(rss_kb) / 1024, out.read_text(), tree_mb)
    tree = f" (tree {result.tree_mb:.0f} MB)" if command.tree else ""
    print(f"  {result.wall:7.2f} s {result.rss_mb:5.0f} MB{tree}  {command.label()}",
          file=sys.stderr)
    return result


# Samples by command: a command two cases share (the wdexp seed run) is measured once.
samples: dict[Command, list[Sample]] = {}


def measure(case: Case, rounds: int) -> None:
    for i in range(rounds):
        for command in (case.a, case.b):
            if command is not None and len(taken := samples.setdefault(command, [])) <= i:
                taken.append(sample(command))


def medians(taken: list[Sample]) -> tuple[float, float]:
    return statistics.median(s.wall for s in taken), statistics.median(s.rss_mb for s in taken)


def row(case: Case, smoke: bool) -> list[str]:
    if case.measure == "ingest":
        result = json.loads(samples[case.a][0].stdout.splitlines()[-1])
        a, b = result["wdexp_points_per_s"], result["direct_points_per_s"]
        cells, ratio = (f"{a} pts/s", f"{b} pts/s"), a / b
    else:
        (wall, rss), (b_wall, b_rss) = (medians(samples[c]) for c in (case.a, case.b))
        if case.measure == "rss":
            cells, ratio = (f"{rss:.0f} MB", f"{b_rss:.0f} MB"), rss / b_rss
        elif case.measure == "tree":
            tree, b_tree = (statistics.median(s.tree_mb for s in samples[c])
                            for c in (case.a, case.b))
            cells, ratio = (f"{tree:.0f} MB", f"{b_tree:.0f} MB"), tree / b_tree
        elif case.members:
            cells = (f"{wall / case.members:.2f} s per member ({wall:.1f} s, {rss:.0f} MB)",
                     f"{b_wall:.2f} s, {b_rss:.0f} MB")
            ratio = wall / case.members / b_wall
        else:
            cells = f"{wall:.2f} s, {rss:.0f} MB", f"{b_wall:.2f} s, {b_rss:.0f} MB"
            ratio = wall / b_wall
    if case.target is None:
        return [case.name, *cells, f"{ratio:.2f}", "figure", "smoke" if smoke else "—"]
    met = ratio >= case.target if case.higher_is_better else ratio <= case.target
    status = "smoke" if smoke else "PASS" if met else "MISS"
    target = f"{'≥' if case.higher_is_better else '≤'} {case.target}"
    return [case.name, *cells, f"{ratio:.2f}", target, status]


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    meminfo = Path("/proc/meminfo").read_text().split()
    ram_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20
    # Other work on the machine skews every timing: the load at the start says how much.
    return (f"machine: {cpu}, {os.cpu_count()} cores, {ram_gib:.1f} GiB RAM, "
            f"load {os.getloadavg()[0]:.1f} at start; "
            f"Python {platform.python_version()}, torch {version('torch')}, "
            f"mlflow {version('mlflow')}, hydra-core {version('hydra-core')}")


def table(rows: list[list[str]]) -> str:
    header = ["benchmark", "A: wdexp", "B: reference", "A/B", "target", "status"]
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="alternating rounds per case")
    parser.add_argument("--only", action="append", metavar="SUBSTRING",
                        help="run the cases whose name contains this (repeat it for more)")
    parser.add_argument("--smoke", action="store_true",
                        help="1 round, no warm-up, tiny sizes; targets not judged")
    parser.add_argument("--output", type=Path, help="also write the table here (markdown)")
    parser.add_argument("--members-figure", type=Path,
                        help="draw the per-member rows here (PNG; docs/img/stacked_members.png)")
    args = parser.parse_args()
    chosen = [(case, small) for case, small in zip(cases(args.smoke), cases(True), strict=True)
              if not args.only or any(o.lower() in case.name.lower() for o in args.only)]
    if not chosen:
        parser.error(f"no benchmark matches --only {' '.join(args.only)!r}")
    started, host = time.monotonic(), machine()
    KEPT.mkdir()
    team = contextlib.ExitStack()
    if any("{server}" in a for case, _ in chosen for a in case.a.argv) and not has_postgres():
        print("bench: no PostgreSQL server binaries (apt-get install postgresql-15): the "
              "team-server row is left out", file=sys.stderr)
        chosen = [(case, small) for case, small in chosen
                  if not any("{server}" in a for a in case.a.argv)]
    try:
        if any("{server}" in a for case, _ in chosen for a in case.a.argv):
            SERVER["url"] = team.enter_context(team_server())
        if args.smoke:
            # Nothing is judged in a smoke run, so its commands run side by side, one per core.
            commands = list(dict.fromkeys(c for case, _ in chosen for c in (case.a, case.b) if c))
            with ThreadPoolExecutor(os.cpu_count()) as pool:
                for command, result in zip(commands, pool.map(sample, commands), strict=True):
                    samples[command] = [result]
        else:
            # The warm-up is only there to fill the page cache (torch, mlflow, conf/): the same
            # files are read at any size, so it runs each command at its smoke size.
            warm = dict.fromkeys(c for _, small in chosen for c in (small.a, small.b)
                                 if c and small.measure != "ingest")
            for command in warm:
                sample(command)
            for case, _ in chosen:
                print(f"{case.name}:", file=sys.stderr)
                measure(case, min(args.repeat, case.rounds or args.repeat))
    except CommandFailed as error:
        print(f"bench: a command failed, {error}", file=sys.stderr)
        return 1
    finally:
        team.close()
        shutil.rmtree(KEPT, ignore_errors=True)
    multirun_rounds = min(args.repeat, MULTIRUN_ROUNDS)
    rounds = ("1 (smoke)" if args.smoke
              else f"{args.repeat} (multirun and 20 000-epoch pair {multirun_rounds})")
    report = "\n".join([host, f"rounds: {rounds}; medians; a fresh sqlite store per process",
                        "", table([row(case, args.smoke) for case, _ in chosen])])
    print(report)
    print(f"bench: {time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.output:
        args.output.write_text(report + "\n")
    if args.members_figure:
        members_figure([case for case, _ in chosen if case.members], args.members_figure, host)
    return 0


def members_figure(rows: list[Case], path: Path, host: str) -> None:
    """Wall seconds per member of a stacked sweep against its size, and one pair run alone."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), dpi=100, layout="constrained")
    ax = figure.add_subplot()
    sizes = [case.members for case in rows]
    ax.plot(sizes, [medians(samples[case.a])[0] / case.members for case in rows], "o-",
            label="stacked, wall per member")
    alone = medians(samples[rows[0].b])[0]
    ax.axhline(alone, color="grey", ls="--", label=f"one pair run alone ({alone:.1f} s)")
    ax.axhline(alone / 2, color="grey", ls=":", label="its cost per arm")
    ax.set(xscale="log", yscale="log", xticks=sizes, xticklabels=[str(n) for n in sizes],
           xlabel="members (2 per job)", ylabel="seconds",
           title=f"a stacked seed sweep, {rows[0].name.split(', ')[1]}")
    ax.legend(fontsize="small")
    figure.text(0.01, 0.005, host.split(";")[0], fontsize=6, color="grey")
    figure.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
