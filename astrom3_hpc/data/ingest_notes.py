"""What ingestion tells the user about stored objects it changed or qualified: points a source left out, per
reason, and caveats preprocessing attached to an object's values (an amplitude that is only a lower limit).

Each rank counts its own objects (`note`); rank 0 sums the ranks' counts (`summed`) and reports them once, in the
log and in the store's summary (`report`), so an MPI ingest says the same as a single process.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("astrom3")

NAMES_KEPT = 5  # objects named per caveat: enough to look one up


def empty() -> dict[str, dict]:
    return {"dropped": {}, "caveats": {}}


def note(notes: dict[str, dict], obj, caveats: tuple[str, ...]) -> None:
    """Count one stored object's left-out points and caveats into this rank's `notes`."""
    for reason, n in obj.extra.get("points_dropped", {}).items():
        points, objects = notes["dropped"].get(reason, (0, 0))
        notes["dropped"][reason] = (points + n, objects + 1)
    for c in caveats:
        count, names = notes["caveats"].get(c, (0, []))
        if len(names) < NAMES_KEPT:
            names = [*names, str(obj.extra.get("name", obj.object_id))]
        notes["caveats"][c] = (count + 1, names)


def summed(per_rank: list[dict[str, dict]]) -> dict[str, dict]:
    """The ranks' notes added up: per reason, points and objects; per caveat, objects and the first names."""
    total: dict[str, dict] = {"dropped": {}, "caveats": {}}
    for notes in per_rank:
        for reason, (points, objects) in notes["dropped"].items():
            d = total["dropped"].setdefault(reason, {"points": 0, "objects": 0})
            d["points"] += points
            d["objects"] += objects
        for c, (count, names) in notes["caveats"].items():
            d = total["caveats"].setdefault(c, {"objects": 0, "first": []})
            d["objects"] += count
            d["first"] = (d["first"] + names)[:NAMES_KEPT]
    return total


def _objects(n: int) -> str:
    return f"{n} object{'s' * (n != 1)}"


def report(summary: dict[str, Any], notes: dict[str, dict]) -> None:
    """One warning per kind of note, and the counts in the store's summary."""
    dropped, caveats = notes["dropped"], notes["caveats"]
    if dropped:
        summary["points_dropped"] = dropped
        log.warning("points left out of the light curves (stored objects only; summary 'points_dropped'): %s",
                    "; ".join(f"{reason}: {d['points']} point{'s' * (d['points'] != 1)} in {_objects(d['objects'])}"
                              for reason, d in dropped.items()))
    if caveats:
        summary["caveats"] = caveats
        for c, d in caveats.items():
            more = ", ..." if d["objects"] > len(d["first"]) else ""
            log.warning("%s: %s (summary 'caveats'): %s%s", _objects(d["objects"]), c, ", ".join(d["first"]), more)
