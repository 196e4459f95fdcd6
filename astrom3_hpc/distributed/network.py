"""The network side of a rendezvous: free ports, interface addresses, which interface reaches the master
(GLOO_SOCKET_IFNAME) and an address other nodes can reach a host at."""

from __future__ import annotations

import fcntl
import os
import re
import socket
import struct
import subprocess
from typing import Mapping

SINGLE_HOST_ADDR = "127.0.0.1"


def rendezvous_address(host: str) -> str:
    """An address other nodes can reach ``host`` at: the host itself when its name resolves, else its NodeAddr from
    ``scontrol show node`` (clusters whose node names are not in DNS), else the name unchanged."""
    try:
        socket.gethostbyname(host)
        return host
    except OSError:
        pass
    try:
        r = subprocess.run(["scontrol", "show", "node", host], capture_output=True, text=True, timeout=15)
        m = re.search(r"\bNodeAddr=(\S+)", r.stdout)
        if r.returncode == 0 and m:
            return m.group(1)
    except (OSError, subprocess.SubprocessError):
        pass
    return host



def _bind(host: str, port: int) -> int | None:
    """The port a listening socket gets when it binds (`host`, `port`) now, as TCPStore's does (SO_REUSEADDR);
    None if that fails. Port 0 asks the kernel for a free one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return None
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "") -> bool:
    return _bind(host, port) is not None


def port_user(port: int) -> str:
    """Who listens on `port`, as `ss` tells it (best effort, for error messages)."""
    try:
        r = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5)
        return " ".join(r.stdout.split()) or "unknown process"
    except (OSError, subprocess.SubprocessError):
        return "unknown process"


def find_free_port(host: str = SINGLE_HOST_ADDR) -> int:
    """A TCP port free right now on `host` (racy by nature: use it promptly)."""
    port = _bind(host, 0)
    if port is None:
        raise OSError(f"cannot bind any port on {host!r}")
    return port


def interface_addresses() -> dict[str, str]:
    """IPv4 address of each interface that has one (Linux SIOCGIFADDR)."""
    out = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                req = struct.pack("256s", name.encode()[:15])
                res = fcntl.ioctl(s.fileno(), 0x8915, req)  # SIOCGIFADDR
                out[name] = socket.inet_ntoa(res[20:24])
            except OSError:
                continue
    return out


def route_source_address(target: str) -> str | None:
    """The local IPv4 address the kernel would use to reach `target` (UDP connect: no packet is sent)."""
    try:
        target_ip = socket.gethostbyname(target)
    except OSError:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((target_ip, 9))
            return s.getsockname()[0]
        except OSError:
            return None


def gloo_socket_ifname(master_addr: str, environ: Mapping[str, str] | None = None, *,
                       multi_host: bool = False) -> str | None:
    """GLOO_SOCKET_IFNAME to use: the environment's if set, else the interface holding the address this host
    uses to reach `master_addr` (``lo`` for 127.0.0.1). With ``multi_host=True`` a loopback answer (the master
    is this host and its name resolves to 127.0.1.1, as Debian's /etc/hosts does) is replaced by the interface
    of this host's outward address, since peers on other hosts cannot reach a loopback socket. None if it
    cannot be determined."""
    env = os.environ if environ is None else environ
    if env.get("GLOO_SOCKET_IFNAME"):
        return env["GLOO_SOCKET_IFNAME"]
    src = route_source_address(master_addr)
    if src is None:
        return None
    if multi_host and src.startswith("127."):
        src = own_address()
    addrs = interface_addresses()
    for name, a in addrs.items():
        if a == src:
            return name
    if src.startswith("127."):
        for name, a in addrs.items():
            if a.startswith("127."):
                return name
    return None


def own_address() -> str:
    """This host's address for other hosts to reach: GLOO_SOCKET_IFNAME's address if set, else the hostname's
    address if not loopback, else the first non-loopback interface address."""
    addrs = interface_addresses()
    ifname = os.environ.get("GLOO_SOCKET_IFNAME")
    if ifname and ifname in addrs:
        return addrs[ifname]
    try:
        a = socket.gethostbyname(socket.gethostname())
        if not a.startswith("127."):
            return a
    except OSError:
        pass
    for name, a in addrs.items():
        if not a.startswith("127."):
            return a
    return SINGLE_HOST_ADDR
