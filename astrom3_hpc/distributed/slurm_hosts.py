"""SLURM's compact host and task lists, read without a controller: ``node[01-03,7]``, ``2(x3),1``, and the
rendezvous port a job step derives from its ids. `detect` (astrom3_hpc.distributed.env) uses these to find the
master of an srun step."""

from __future__ import annotations

import re
import subprocess


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM hostlist (``node[01-03,07],gpu5``, ``a[1-2]-b[3,5]``) in order, keeping zero padding."""
    hosts: list[str] = []
    for item in _split_top_level(nodelist.strip()):
        if item:
            hosts.extend(_expand_item(item))
    return hosts


def _split_top_level(s: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in nodelist {s!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ValueError(f"unbalanced '[' in nodelist {s!r}")
    parts.append("".join(cur).strip())
    return parts


def _expand_item(item: str) -> list[str]:
    m = re.search(r"\[([^\[\]]*)\]", item)
    if m is None:
        return [item]
    prefix, suffix = item[: m.start()], item[m.end():]
    out = []
    for rng in m.group(1).split(","):
        rng = rng.strip()
        if "-" in rng:
            lo, hi = rng.split("-", 1)
            width = len(lo)
            if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
                raise ValueError(f"bad range {rng!r} in nodelist item {item!r}")
            values = [str(v).zfill(width) for v in range(int(lo), int(hi) + 1)]
        else:
            if not rng:
                raise ValueError(f"empty range in nodelist item {item!r}")
            values = [rng]
        for v in values:
            # The suffix may hold further bracket groups (a[1-2]-b[3,5]).
            out.extend(_expand_item(prefix + v + suffix))
    return out


def scontrol_hostnames(nodelist: str, timeout: float = 5.0) -> list[str] | None:
    """``scontrol show hostnames``; None when scontrol is missing, fails (no SLURM_CONF...) or hangs."""
    try:
        res = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    hosts = [h for h in res.stdout.split() if h]
    return hosts or None


def first_host(nodelist: str, use_scontrol: bool = True) -> str:
    hosts = scontrol_hostnames(nodelist) if use_scontrol else None
    if not hosts:
        hosts = expand_nodelist(nodelist)
    if not hosts:
        raise ValueError(f"empty SLURM nodelist {nodelist!r}")
    return hosts[0]


def expand_tasks_per_node(spec: str) -> list[int]:
    """``2(x3),1`` -> [2, 2, 2, 1] (SLURM_TASKS_PER_NODE / SLURM_STEP_TASKS_PER_NODE)."""
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part)
        if m is None:
            raise ValueError(f"bad tasks-per-node spec {spec!r}")
        out.extend([int(m.group(1))] * int(m.group(2) or 1))
    return out


SLURM_PORT_RANGE = (15000, 32000)  # below Linux's ephemeral ports (32768-60999), where outgoing sockets bind


def slurm_port(job_id: str | int, step_id: str | int | None = None) -> int:
    """A port every rank of one SLURM step derives identically: 15000 + (job*7 + step) mod 17000.

    Different jobs (and concurrent steps of one job) land on different ports unless they collide mod 17000;
    set MASTER_PORT explicitly to override. A service listening on the derived port makes rank 0 fail with
    an error that says so (`init`); one-rank steps never use it (`init` takes a free port).
    """
    try:
        step = int(step_id) if step_id is not None else 0
    except ValueError:  # "batch", "extern"
        step = 0
    digits = re.sub(r"\D", "", str(job_id)) or "0"  # array jobs: "123_4" -> 1234
    lo, hi = SLURM_PORT_RANGE
    return lo + (int(digits) * 7 + step) % (hi - lo)
