"""Hosts of a test's own on one machine: network namespaces on one bridge (the ``hosts``
fixture in tests/system/conftest.py).

Each host is a network namespace with one interface, ``eth0``, cabled to a bridge that lives in
a namespace of its own (the switch), so nothing is added to the machine's own network. Addresses
come from 198.18.0.0/15, the range set aside for benchmarking networks (RFC 2544): no real
network uses them, and they exist only inside these namespaces. Every process a host runs gets
the host's name (a UTS namespace of its own) and, where asked, an empty tmpfs over folders that
only another host may see (the tracking host's disk, for one). The test starts and stops every
process by pid, pulls a host's cable at the switch and plugs it back, and removes it all.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.conftest import child_env
from tests.system.ray_nodes import stop_session

SUBNET = "198.18.0"  # /24 of the benchmarking range 198.18.0.0/15, inside the namespaces only


@dataclass
class Host:
    name: str  # its host name, as its processes see it
    namespace: str
    address: str
    port: str  # its cable's end at the switch
    hidden: list[str] = field(default_factory=list)  # folders its processes see empty


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"),
                          ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            return f"no `{tool}` here (apt-get install {package})"
    probe = f"wdexp-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    try:  # what every host's process does: a name and a disk of its own
        with tempfile.TemporaryDirectory() as folder:
            host = subprocess.run(
                ["ip", "netns", "exec", probe, "unshare", "--uts", "--mount", "--propagation",
                 "private", "sh", "-c", f"hostname probe && mount -t tmpfs probe {folder}"],
                capture_output=True, text=True, timeout=30)
        if host.returncode != 0:
            return f"a host of our own cannot be made here: {host.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "delete", probe], check=True)
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


_WAIT_HTTP = """
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                break
    except OSError as error:
        if time.monotonic() > deadline:
            sys.exit(f"{url}: {error}")
    time.sleep(0.5)
"""


@dataclass
class Network:
    """The hosts, the switch between them, and every process started on them."""

    hosts: dict[str, Host]
    switch: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def hide(self, folder: Path, *hosts: str) -> None:
        """Processes started on ``hosts`` from now on see ``folder`` empty (and what they
        write there stays theirs): another host's disk."""
        for host in hosts:
            self.hosts[host].hidden.append(str(folder))

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` as a process of ``host``: its network, its name, its view of the disk."""
        where = self.hosts[host]
        setup = [f"hostname {shlex.quote(where.name)}",
                 *(f"mount -t tmpfs wdexp-hidden {shlex.quote(d)}" for d in where.hidden),
                 'exec "$@"']
        return ["ip", "netns", "exec", where.namespace,
                "unshare", "--uts", "--mount", "--propagation", "private",
                "sh", "-c", " && ".join(setup), where.name, *argv]

    def start(self, host: str, argv: Sequence[str], log: Path | IO[bytes] | int | None = None,
              env: Mapping[str, str] | None = None, cwd: Path | None = None,
              ) -> subprocess.Popen[bytes]:
        """``argv`` on ``host`` in a session of its own (every process it starts stays in it),
        output to ``log``; stopped by :meth:`stop` or when the network is taken down."""
        with contextlib.ExitStack() as files:
            out = files.enter_context(open(log, "ab")) if isinstance(log, Path) else log
            process = subprocess.Popen(self.command(host, argv), stdout=out,
                                       stderr=subprocess.STDOUT if out is not None else None,
                                       cwd=cwd, env=child_env(env), start_new_session=True)
        self.processes.append(process)
        return process

    def run(self, host: str, argv: Sequence[str], timeout: float = 120,
            env: Mapping[str, str] | None = None, cwd: Path | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """``argv`` on ``host`` to its end: its output."""
        return subprocess.run(self.command(host, argv), capture_output=True, text=True,
                              timeout=timeout, cwd=cwd, env=child_env(env))

    def wait_http(self, host: str, url: str, timeout: float = 120) -> None:
        """Until ``url`` answers 200 to a GET from ``host``."""
        done = self.run(host, [sys.executable, "-c", _WAIT_HTTP, url, str(timeout)],
                        timeout=timeout + 30)
        if done.returncode != 0:
            raise RuntimeError(f"{url} did not answer from {host}: {done.stderr[-2000:]}")

    def cut(self, host: str) -> None:
        """Pull ``host``'s cable at the switch: its packets go nowhere, nothing tells it."""
        _ip("-n", self.switch, "link", "set", self.hosts[host].port, "down")

    def plug(self, host: str) -> None:
        _ip("-n", self.switch, "link", "set", self.hosts[host].port, "up")

    def stop(self, process: subprocess.Popen[bytes], grace: float = 20) -> list[int]:
        """SIGTERM ``process``'s session, SIGKILL what is left after ``grace`` seconds;
        returns what outlived SIGTERM."""
        return stop_session(process, grace)


@contextlib.contextmanager
def network(*names: str) -> Iterator[Network]:
    """Hosts ``names``, ``SUBNET``.1 onwards in that order, on one switch; every process
    started on them is stopped, every namespace removed."""
    tag = f"wdexp{os.getpid()}"  # namespace names are the machine's: one network per process
    switch = f"{tag}-switch"
    made: list[str] = []
    net = Network({}, switch)
    try:
        _ip("netns", "add", switch)
        made.append(switch)
        _ip("-n", switch, "link", "add", "bridge", "type", "bridge")
        _ip("-n", switch, "link", "set", "bridge", "up")
        for number, name in enumerate(names, start=1):
            host = Host(name, f"{tag}-{name}", f"{SUBNET}.{number}", f"port{number}")
            _ip("netns", "add", host.namespace)
            made.append(host.namespace)
            # Both ends made inside the namespaces: the machine's own never sees the cable.
            _ip("-n", switch, "link", "add", host.port, "type", "veth",
                "peer", "name", "eth0", "netns", host.namespace)
            _ip("-n", switch, "link", "set", host.port, "master", "bridge", "up")
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.namespace, "link", "set", "eth0", "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")
            net.hosts[name] = host
        yield net
    finally:
        survivors = [pid for process in reversed(net.processes) for pid in net.stop(process)]
        for namespace in reversed(made):  # the cables go with their namespaces
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
    assert survivors == [], f"processes outlived SIGTERM: {survivors}"
