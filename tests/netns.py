"""Linux network namespaces as machines for a test: `ip netns` + veth pairs, each end with its own 10.x address,
processes started inside a namespace, and a cleanup that removes all of it (tests/test_multihost_netns.py).

Names carry the test process's pid and a random suffix, so two runs at once never collide. Only the link
between the test process and the first namespace has an address in the host's own namespace; its subnet is
picked at random among the 10.x /24s the host does not route yet.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


class NoPrivilege(Exception):
    """This process may not create network namespaces (the reason is the message)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def privilege_problem() -> str:
    """Why namespaces cannot be made here, or "" when they can (tried for real: a capability check is not
    enough inside a container)."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) on PATH"
    if os.geteuid() != 0:
        return f"creating network namespaces needs root (CAP_SYS_ADMIN); running as uid {os.geteuid()}"
    probe = f"plprobe{os.getpid()}{secrets.token_hex(2)}"
    done = ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        text = done.stderr.strip()
        if "not permitted" in text or "Permission denied" in text:
            return f"`ip netns add` is not permitted here: {text}"
        raise RuntimeError(f"ip netns add {probe}: {text}")
    ip("netns", "del", probe, check=False)
    return ""


def _free_subnet() -> ipaddress.IPv4Network:
    used = ip("-4", "route", "show", "table", "all").stdout + ip("-4", "addr").stdout
    for _ in range(200):
        prefix = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}."
        if prefix not in used:
            return ipaddress.IPv4Network(prefix + "0/24")
    raise RuntimeError("no free 10.x.y.0/24 subnet on this host")


@dataclass
class Network:
    """Namespaces and links made by this test; `close()` removes every one of them and the processes in them."""

    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}{secrets.token_hex(2)}")
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)
    _links: int = 0

    def namespace(self, role: str) -> str:
        name = f"pl{self.tag}-{role}"
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def _veth(self) -> tuple[str, str]:
        self._links += 1
        left, right = f"v{self.tag}{self._links}a", f"v{self.tag}{self._links}b"  # <= 15 characters
        ip("link", "add", left, "type", "veth", "peer", "name", right)
        return left, right

    def link(self, a: str, b: str, subnet: str) -> tuple[str, str, str]:
        """A veth pair between namespaces a and b on `subnet` (a /24): (a's address, b's address, b's device)."""
        net = ipaddress.IPv4Network(subnet)
        left, right = self._veth()
        addresses = []
        for ns, dev, host in ((a, left, 1), (b, right, 2)):
            ip("link", "set", dev, "netns", ns)
            address = str(net.network_address + host)
            ip("-n", ns, "addr", "add", f"{address}/{net.prefixlen}", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            addresses.append(address)
        return addresses[0], addresses[1], right

    def link_host(self, ns: str) -> str:
        """A veth pair between this process's namespace and `ns`; the address of ns's end."""
        net = _free_subnet()
        left, right = self._veth()
        self.host_links.append(left)
        ip("addr", "add", f"{net.network_address + 1}/{net.prefixlen}", "dev", left)
        ip("link", "set", left, "up")
        ip("link", "set", right, "netns", ns)
        address = str(net.network_address + 2)
        ip("-n", ns, "addr", "add", f"{address}/{net.prefixlen}", "dev", right)
        ip("-n", ns, "link", "set", right, "up")
        return address

    def cut(self, ns: str, device: str) -> None:
        ip("-n", ns, "link", "set", device, "down")

    def start(
        self, ns: str, command: list[str], env: dict[str, str], log: Path, cwd: Path
    ) -> subprocess.Popen:
        """`command` inside `ns`, in its own process group (so close() stops its children too)."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *command],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:  # each started its own process group: its id is the leader's pid
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # run children left in the group
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        for ns in self.namespaces:
            ip("netns", "del", ns, check=False)  # its veth ends go with it, and so do their peers
        for dev in self.host_links:
            ip("link", "del", dev, check=False)  # gone already with its peer; this is belt and braces
