"""Where the parties of the federation run: one machine, or one host each.

DESIGN §2.7: parties share only the network, and no party reads another's files. On
one machine (loopback) that cannot be seen to hold: every party has every address
and every file. `SeparateHosts` makes it checkable: each party gets a Linux network
namespace of its own on a private bridge (its own address; the bridge's address is
the operator's, so the harness in the root namespace reaches every host), the
SuperLink's Control API lives on a point-to-point link between the portal and the
SuperLink only (hospitals have no route to it), and every command a party runs
sees the other parties' state folders as empty read-only mounts, so a party that
reads another's files fails instead of passing unnoticed.

This is a test harness, not a sandbox: parties still share the user, the PID
namespace and /proc. `Loopback` is the same interface for one machine, so the demo
has one code path for both.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, Self

from tre.core.locks import file_lock

LOOPBACK = "127.0.0.1"
#: Our own private range: the bridge takes 10.213.X.0/24, the control link
#: 10.213.(128+X).0/30, for the first X whose networks no route or address uses.
NET_PREFIX = "10.213"
#: Serialises picking a subnet and creating the bridge, so two instances never
#: pick the same one.
LOCK_PATH = Path("/run/lock/tre-hosts.lock")
#: Names of everything we create start with this (namespaces, bridge, veths).
NAME_PREFIX = "tre"


class HostsError(RuntimeError):
    """Separate hosts cannot be set up here; the message says why and what to do."""


class Hosts(Protocol):
    """Where each party runs: its address, its folder, how to run a command as it."""

    separate: bool

    def address(self, party: str) -> str:
        """The party's address that the other parties (and the harness) dial."""
        ...

    def control_address(self) -> str:
        """The SuperLink's address for its Control API: the portal alone reaches it."""
        ...

    def state_dir(self, party: str) -> Path:
        """The party's own folder (created)."""
        ...

    def prefix(self, party: str) -> list[str]:
        """An argv prefix that runs a command as the party (empty on one machine)."""
        ...

    def port(self, party: str, default: int) -> int:
        """A port the party can listen on: `default` on a host of its own, a free one
        where parties share an address."""
        ...

    def close(self) -> None:
        """Remove what was set up (idempotent)."""
        ...


class Loopback:
    """Every party on this machine, on 127.0.0.1: told apart by port and folder only."""

    separate = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._ports: set[int] = set()

    def address(self, party: str) -> str:
        return LOOPBACK

    def control_address(self) -> str:
        return LOOPBACK

    def state_dir(self, party: str) -> Path:
        path = self.root / party
        path.mkdir(parents=True, exist_ok=True)
        return path

    def prefix(self, party: str) -> list[str]:
        return []

    def port(self, party: str, default: int) -> int:
        """A port the OS just gave out on loopback, never one handed out here before
        (all parties share the address, so no fixed port is safe)."""
        while True:
            with socket.socket() as s:
                s.bind((LOOPBACK, 0))
                port = int(s.getsockname()[1])
            if port not in self._ports:
                self._ports.add(port)
                return port

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_PROBE = ("import socket, sys\n"
          "with socket.create_connection((sys.argv[1], int(sys.argv[2])), 3): pass")


def probe(via: list[str], host: str, port: int) -> subprocess.CompletedProcess:
    """A TCP connect to host:port from a party's host (`via`: its argv prefix); exit 0
    when it connected, else stderr says why not."""
    return subprocess.run([*via, sys.executable, "-c", _PROBE, host, str(port)],
                          capture_output=True, text=True, timeout=30)


def connects(host: str, port: int, via: list[str] | None = None) -> bool:
    """Whether a TCP connection to host:port opens from here, or, with `via` (a party's
    argv prefix), from that party's host."""
    if not via:
        with socket.socket() as s:
            s.settimeout(3)
            return s.connect_ex((host, port)) == 0
    return probe(via, host, port).returncode == 0


def _run(args: list[str]) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise HostsError(f"`{shlex.join(args)}` failed: {proc.stderr.strip() or proc.stdout}")
    return proc.stdout


def _used_networks(ip: str) -> list[ipaddress.IPv4Network]:
    """Every IPv4 network a route (any table) or an address of this host covers, except
    the default route: what our subnets must not overlap."""
    nets = []
    for line in _run([ip, "-4", "route", "show", "table", "all"]).splitlines():
        words = line.split()
        if not words:
            continue
        dest = words[1] if words[0] in ("broadcast", "local", "unicast", "multicast") else words[0]
        if dest == "default":
            continue
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.ip_network(dest, strict=False))
    for line in _run([ip, "-4", "-o", "addr", "show"]).splitlines():
        words = line.split()
        if "inet" in words:
            nets.append(ipaddress.ip_interface(words[words.index("inet") + 1]).network)
    return nets


def namespaces(ip: str = "ip") -> set[str]:
    """Names of the network namespaces that exist now."""
    return {line.split()[0] for line in _run([ip, "netns", "list"]).splitlines() if line.strip()}


def links(ip: str = "ip") -> set[str]:
    """Names of the root namespace's network interfaces."""
    out = set()
    for line in _run([ip, "-o", "link", "show"]).splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        out.add(name)
    return out


#: What names of ours look like: NAME_PREFIX, a 4-hex tag, then what the name is for.
OUR_NAME = re.compile(rf"^{NAME_PREFIX}[0-9a-f]{{4}}(-.+|br|[hpc][0-9]+)$")


def leftovers(ip: str = "ip") -> list[str]:
    """Namespaces and root-namespace interfaces that some `SeparateHosts` made and that
    exist now: CI checks none is left after the demo."""
    return ([f"namespace {n}" for n in sorted(namespaces(ip)) if OUR_NAME.match(n)]
            + [f"link {n}" for n in sorted(links(ip)) if OUR_NAME.match(n)])


class SeparateHosts:
    """One network namespace per party on a private bridge, a control link between the
    portal and the SuperLink, and per-party views of the state folders.

    Everything is created in the constructor and removed by `close()` (idempotent,
    also called when the constructor fails half-way, and on leaving a `with` block,
    whether or not the body raised). Names carry a random tag, so instances never
    collide; nothing that is not ours is touched."""

    separate = True

    def __init__(self, parties: Sequence[str], root: Path, *,
                 control_link: tuple[str, str] = ("portal", "superlink"),
                 hidden: Sequence[Path] = ()) -> None:
        """`parties`: one host each. `root`: their state folders are `root/<party>`.
        `control_link`: the two parties joined by the private control link (skipped
        when either is missing). `hidden`: further folders no party may see (the
        operator's own: its CA key, the harness's logs)."""
        if (not parties or len(set(parties)) != len(parties) or len(parties) > 200
                or not all(re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", p) for p in parties)):
            raise HostsError("party names must be 1 to 200 distinct names of lowercase "
                             f"letters, digits and dashes: {list(parties)}")
        if os.geteuid() != 0:
            raise HostsError("separate hosts need root (network namespaces, veth pairs, a "
                             "bridge, mounts): run as root, or without --netns")
        self._ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
        self._unshare = shutil.which("unshare") or shutil.which("unshare", path="/usr/bin")
        if self._ip is None:
            raise HostsError("the `ip` command (iproute2) is missing: apt-get install iproute2")
        if self._unshare is None:
            raise HostsError("the `unshare` command (util-linux) is missing: "
                             "apt-get install util-linux")
        self.parties = list(parties)
        self.root = Path(root).resolve()
        self.hidden = [Path(p).resolve() for p in hidden]
        self.tag = NAME_PREFIX + secrets.token_hex(2)
        self.bridge = f"{self.tag}br"
        self._namespaces: dict[str, str] = {}  # party -> namespace (created)
        self._veths: list[str] = []  # root-side ends (created)
        self._bridge_made = False
        self._closed = False
        self._addresses: dict[str, str] = {}
        self._control: tuple[str, str] | None = None  # (party, address) on the link
        self._control_pair = control_link if set(control_link) <= set(parties) else None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- set-up ---------------------------------------------------------------------
    def _ipcmd(self, *args: str) -> str:
        assert self._ip is not None
        return _run([self._ip, *args])

    def _pick_subnet(self) -> int:
        taken = _used_networks(self._ip or "ip")
        for x in range(128):
            nets = [ipaddress.ip_network(f"{NET_PREFIX}.{x}.0/24"),
                    ipaddress.ip_network(f"{NET_PREFIX}.{128 + x}.0/30")]
            if not any(n.overlaps(t) for n in nets for t in taken):
                return x
        raise HostsError(f"no free /24 in {NET_PREFIX}.0.0/16 for separate hosts "
                         "(every one overlaps a route or address of this machine)")

    def _setup(self) -> None:
        ip = self._ip or "ip"
        if any(n.startswith(self.tag) for n in namespaces(ip) | links(ip)):
            raise HostsError(f"names with the tag {self.tag} exist already; try again")
        with file_lock(LOCK_PATH):
            x = self._pick_subnet()
            self.subnet = ipaddress.ip_network(f"{NET_PREFIX}.{x}.0/24")
            self._ipcmd("link", "add", "name", self.bridge, "type", "bridge")
            self._bridge_made = True
            self.bridge_address = f"{NET_PREFIX}.{x}.1"
            self._ipcmd("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
            self._ipcmd("link", "set", self.bridge, "up")
        for i, party in enumerate(self.parties):
            ns = f"{self.tag}-{party}"
            self._ipcmd("netns", "add", ns)
            self._namespaces[party] = ns
            self._ipcmd("-n", ns, "link", "set", "lo", "up")
            outside, inside = f"{self.tag}h{i}", f"{self.tag}p{i}"
            self._ipcmd("link", "add", outside, "type", "veth", "peer", "name", inside,
                        "netns", ns)
            self._veths.append(outside)
            self._ipcmd("link", "set", outside, "master", self.bridge, "up")
            address = f"{NET_PREFIX}.{x}.{10 + i}"
            self._ipcmd("-n", ns, "addr", "add", f"{address}/24", "dev", inside)
            self._ipcmd("-n", ns, "link", "set", inside, "up")
            self._addresses[party] = address
        if self._control_pair is not None:
            near, far = self._control_pair
            a, b = f"{self.tag}c0", f"{self.tag}c1"
            self._ipcmd("link", "add", a, "netns", self._namespaces[near], "type", "veth",
                        "peer", "name", b, "netns", self._namespaces[far])
            net = f"{NET_PREFIX}.{128 + x}"
            self._ipcmd("-n", self._namespaces[near], "addr", "add", f"{net}.1/30", "dev", a)
            self._ipcmd("-n", self._namespaces[far], "addr", "add", f"{net}.2/30", "dev", b)
            self._ipcmd("-n", self._namespaces[near], "link", "set", a, "up")
            self._ipcmd("-n", self._namespaces[far], "link", "set", b, "up")
            self._control = (far, f"{net}.2")
        for party in self.parties:
            self.state_dir(party)

    # -- facts ----------------------------------------------------------------------
    def _known(self, party: str) -> str:
        if party not in self._namespaces:
            raise KeyError(f"no host for party {party!r} (parties: {self.parties})")
        return self._namespaces[party]

    def namespace(self, party: str) -> str:
        """The party's network namespace (`ip netns exec <it> …`)."""
        return self._known(party)

    def address(self, party: str) -> str:
        """The party's address on the bridge: what other parties and the harness dial."""
        self._known(party)
        return self._addresses[party]

    def control_address(self) -> str:
        """The far end of the control link (the SuperLink's Control API): reachable from
        the portal's host only."""
        if self._control is None:
            raise HostsError("no control link: it needs both parties of control_link")
        return self._control[1]

    def state_dir(self, party: str) -> Path:
        """`root/<party>`, created: the one state folder the party sees."""
        self._known(party)
        path = self.root / party
        path.mkdir(parents=True, exist_ok=True)
        return path

    def port(self, party: str, default: int) -> int:
        """`default`: the party has its addresses (and its loopback) to itself."""
        self._known(party)
        return default

    def prefix(self, party: str) -> list[str]:
        """Argv prefix running a command as `party`: in its network namespace, in a
        private mount namespace where every other party's state folder (and each
        `hidden` one) is an empty read-only tmpfs. `ip netns exec`, `unshare` and `sh`
        each exec the next, so a Popen's pid is the command's own."""
        ns = self._known(party)
        others = [self.root / p for p in self.parties if p != party] + self.hidden
        mounts = "".join(
            f"mkdir -p {shlex.quote(str(d))} && mount -t tmpfs -o "
            f"ro,nosuid,nodev,noexec,size=4k,mode=0555 tre-hidden {shlex.quote(str(d))} && "
            for d in others)
        assert self._unshare is not None and self._ip is not None
        return [self._ip, "netns", "exec", ns, self._unshare, "--mount", "--propagation",
                "private", "sh", "-c", f'{mounts}exec "$@"', "sh"]

    # -- tear-down ------------------------------------------------------------------
    def _pids(self, ns: str) -> list[int]:
        proc = subprocess.run([self._ip or "ip", "netns", "pids", ns], capture_output=True,
                              text=True, timeout=30)
        return [int(p) for p in proc.stdout.split() if p.isdigit()]

    def _kill_all(self, ns: str) -> None:
        """SIGTERM what still runs in the namespace, SIGKILL it after a grace period."""
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            pids = self._pids(ns)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while self._pids(ns) and time.monotonic() < deadline:
                time.sleep(0.1)

    def close(self) -> None:
        """Stop every process left in our namespaces, then delete the namespaces, the
        veths and the bridge. Idempotent; raises only if something of ours remains."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        ip = self._ip or "ip"
        for ns in self._namespaces.values():
            try:
                self._kill_all(ns)
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"stopping processes in {ns}: {exc}")
        present = links(ip) if self._veths or self._bridge_made else set()
        for name in [*self._veths, *([self.bridge] if self._bridge_made else [])]:
            if name in present:
                proc = subprocess.run([ip, "link", "del", name], capture_output=True,
                                      text=True, timeout=30)
                if proc.returncode != 0:
                    errors.append(f"deleting {name}: {proc.stderr.strip()}")
        existing = namespaces(ip) if self._namespaces else set()
        for ns in self._namespaces.values():
            if ns in existing:
                proc = subprocess.run([ip, "netns", "del", ns], capture_output=True,
                                      text=True, timeout=30)
                if proc.returncode != 0:
                    errors.append(f"deleting {ns}: {proc.stderr.strip()}")
        left = self.leftovers()
        if errors or left:
            raise HostsError(f"separate hosts {self.tag} not fully removed: "
                             f"{'; '.join(errors + left)}")

    def leftovers(self) -> list[str]:
        """Namespaces and interfaces of ours that exist now (none after `close()`)."""
        ip = self._ip or "ip"
        return ([f"namespace {n}" for n in sorted(namespaces(ip)) if n.startswith(self.tag)]
                + [f"link {n}" for n in sorted(links(ip)) if n.startswith(self.tag)])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
