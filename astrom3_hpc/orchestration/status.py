"""A sweep's state: tasks done and missing per seed, each seed's pretraining, and what the scheduler says
about the jobs recorded in ``<sweep>/jobs.json`` (``astrom3 sweep status``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from .submission import QueueUnknown, array_spec, read_jobs, running_jobs, slurm_job_ids
from .sweep import Sweep


def sweep_status(sweep_dir: str | Path) -> dict[str, Any]:
    """Tasks done/missing per seed, pretraining state, and the scheduler state of the sweep's jobs."""
    sw = Sweep.load(sweep_dir)
    seeds: dict[int, dict[str, Any]] = {}
    for t in sw.tasks:
        s = seeds.setdefault(t.seed, {"tasks": 0, "done": 0, "missing": [], "other_settings": [],
                                      "needs_pretrain": False, "pretrain_other_settings": []})
        s["tasks"] += 1
        s["needs_pretrain"] |= t.init == "clip"
        if sw.done(t):
            s["done"] += 1
        else:
            s["missing"].append(t.index)
            if sw.other_settings(t):
                s["other_settings"].append(t.index)
    for seed, s in seeds.items():
        d = sw.pretrain_dir(seed)
        other = sw.pretrain_other_settings(seed) if s["needs_pretrain"] else []
        s["pretrain_other_settings"] = other
        # Scratch and baseline tasks start from nothing: "not started" read as something still to run.
        s["pretrain"] = ("not needed" if not s.pop("needs_pretrain") else
                         "of other settings" if other else
                         "complete" if sw.pretrain_done(seed) else
                         "damaged (its metrics.json does not count)" if (d / "metrics.json").exists() else
                         "started" if (d / "checkpoints").exists() else "not started")
        s["array"] = array_spec(s["missing"]) if s["missing"] else ""
    jobs = read_jobs(sw.root)
    ids = [str(j) for j in jobs.get("job_ids", [])]
    states: dict[str, str] = {}
    slurm_ids = slurm_job_ids(jobs)
    if slurm_ids and shutil.which("sacct"):
        try:
            r = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(slurm_ids)],
                               capture_output=True, text=True, timeout=30)
            for line in r.stdout.splitlines():
                if "|" in line:
                    jid, st = line.split("|", 1)
                    states[jid] = st.split()[0] if st.strip() else ""
        except (OSError, subprocess.SubprocessError):
            pass
    queued: list[str] | None
    try:
        queued, unknown = running_jobs(sw.root), None
    except QueueUnknown as e:  # "unknown" must not read as "nothing queued: resubmit"
        queued, unknown = None, str(e)
    return {"sweep": str(sw.root), "tasks": len(sw.tasks), "done": sum(s["done"] for s in seeds.values()),
            "seeds": seeds, "job_ids": ids, "job_states": states, "queued": queued, "queue_unknown": unknown}


def format_status(st: dict[str, Any]) -> str:
    lines = [f"sweep {st['sweep']}: {st['done']}/{st['tasks']} tasks complete"]
    for seed, s in st["seeds"].items():
        miss = f"; missing tasks {s['array']}" if s["missing"] else ""
        lines.append(f"  seed {seed}: {s['done']}/{s['tasks']} done, pretraining {s['pretrain']}{miss}")
        if s.get("other_settings"):
            lines.append(f"    tasks {array_spec(s['other_settings'])}: their run directories hold finished runs of "
                         "other settings (`astrom3 collect` lists the differences): move those aside to run them")
        if s.get("pretrain_other_settings"):
            diffs = "; ".join(s["pretrain_other_settings"])
            lines.append(f"    pretrain/s{seed} was made with other settings than the manifest's pretraining "
                         f"({diffs}): its CLIP tasks count as missing; move it aside, with seed {seed}'s CLIP runs "
                         "made from it, to run them")
    if st["job_states"]:
        counts: dict[str, int] = {}
        for v in st["job_states"].values():
            counts[v] = counts.get(v, 0) + 1
        lines.append("  jobs (sacct): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if st["queued"] is None:
        lines.append(f"  could not tell which jobs are still queued/running ({st['queue_unknown']}): do not "
                     "resubmit before that can be told")
    elif st["queued"]:
        lines.append("  still queued/running: " + ", ".join(st["queued"]))
    elif st["done"] < st["tasks"]:
        # Tasks over runs of other settings refuse to run (exit 6) until those runs are moved aside.
        blocked = sum(len(s.get("other_settings", [])) + len(s.get("pretrain_other_settings", []))
                      for s in st["seeds"].values())
        first = "move the runs of other settings aside, then " if blocked else ""
        lines.append(f"  nothing queued: {first}resubmit the missing tasks with "
                     "`astrom3 sweep submit --resume-missing`")
    return "\n".join(lines)
