"""`astrom3 ensemble RUN... --out DIR`: average the class probabilities of runs on the same store, split and test
set: fine-tune runs that differ in their weights' seed (`train.model_seed`), or a fine-tune run and an
`astrom3 baseline` run.

On a few hundred objects the test macro-F1 of one network moves by several points with its initial weights
(docs/lightcurves_results.md); the mean of a few members' probabilities is the usual remedy, and it costs training
time, not new information. A network and gradient boosting err on different objects: their average was the
best light-curve classifier on validation on all four datasets of docs/lightcurves_results.md. The members'
predictions.csv must list the same objects with the same truth and classes; the result is what a fine-tune run
writes (metrics.json with init "ensemble", predictions.csv, confusion_test.png), so `astrom3 collect` lists it.
The full test set of sub-X members (predictions_test_full.csv, metrics.json "test_full") and the validation split
(predictions_val.csv, metrics.json "val") are averaged the same way, so an ensemble is
chosen over its members on validation, as any other option; so are the objects without a class
(predictions_unlabelled.csv) when the members classified some.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import atomic_dir, write_json, write_text
from ..core.constants import UNLABELLED
from .evaluate import classification_report, plot_confusion, predictions_file, unlabelled_summary

log = logging.getLogger("astrom3")

PREDICTIONS = predictions_file("test")
_ID_COLUMNS = ("row", "object_id", "true_class")
# What an ensemble writes (`_write`).
_OWN_FILES = re.compile(r"metrics\.json|predictions(_\w+)?\.csv|confusion_test(_full)?\.png")


def _read(run: Path, name: str) -> tuple[list[dict[str, str]], list[str]]:
    path = run / name
    if not path.exists():
        raise ValueError(f"{path}: no {name} (not a finished fine-tune run?)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        cols = list(reader.fieldnames or [])
    if not rows:
        raise ValueError(f"{path}: no predictions")
    return rows, [c[2:] for c in cols if c.startswith("p_")]


def read_same_test_set(runs: list[Path], key: str = "test") -> tuple[list[str], list[list[dict[str, str]]]]:
    """The class names and each run's predictions of one set (`key`: "test", or "val" for predictions_val.csv),
    checked to list the same objects, truth and classes in the same order (runs on the same store, split seed
    and subset)."""
    name = predictions_file(key)
    read = [_read(run, name) for run in runs]
    first, names = read[0]
    all_rows = []
    for run, (rows, cls) in zip(runs, read):
        if cls != names:
            raise ValueError(f"{run / name}: classes {cls} differ from {runs[0] / name}'s {names}")
        if [tuple(r[c] for c in _ID_COLUMNS) for r in rows] != [tuple(r[c] for c in _ID_COLUMNS) for r in first]:
            raise ValueError(f"{run / name}: other objects or truth than {runs[0] / name} "
                             "(members must share store, split seed and subset)")
        all_rows.append(rows)
    return names, all_rows


def _average(runs: list[Path], key: str) -> tuple[dict[str, Any], str]:
    """The members' mean probabilities on one set: its report and its predictions file's text."""
    names, member_rows = read_same_test_set(runs, key)
    first = member_rows[0]
    probs = np.mean([[[float(r[f"p_{c}"]) for c in names] for r in rows] for rows in member_rows], axis=0)
    y_pred = probs.argmax(1)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*_ID_COLUMNS, "predicted_class", *[f"p_{c}" for c in names]])
    for r, k, p in zip(first, y_pred, probs):
        w.writerow([*(r[c] for c in _ID_COLUMNS), names[int(k)], *[f"{float(x):.6g}" for x in p]])
    if key == UNLABELLED:
        return unlabelled_summary(y_pred, names), buf.getvalue()
    unknown = sorted({r["true_class"] for r in first if r["true_class"] not in names})
    if unknown:
        raise ValueError(f"{runs[0] / predictions_file(key)}: true_class {unknown} not among the classes {names}")
    y_true = np.array([names.index(r["true_class"]) for r in first])
    return classification_report(y_true, y_pred, names), buf.getvalue()


def _metrics_of(run: Path) -> dict[str, Any]:
    p = run / "metrics.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def _nested_members(run: Path, seen: set[Path]) -> set[Path]:
    """Every run an ensemble run stands on, through ensembles of ensembles (`seen`: already visited)."""
    found: set[Path] = set()
    m = _metrics_of(run)
    if m.get("init") != "ensemble":
        return found
    for member in m.get("members", []):
        r = Path(member["run"]).resolve()
        if r not in seen:
            seen.add(r)
            found |= {r} | _nested_members(r, seen)
    return found


def check_out(out: Path, runs: list[Path]) -> None:
    """Refuse an --out that is (or holds, or underlies) a member, or holds anything but an earlier ensemble:
    writing there replaced a member run's predictions and metrics (an ensemble listing itself as a member then
    sent `astrom3 predict` into endless recursion)."""
    target = out.resolve()
    for run in runs:
        r = run.resolve()
        if target == r or target in r.parents:
            raise ValueError(f"--out {out}: is {'member' if target == r else 'a folder holding member'} {run}; "
                             "writing the ensemble there would overwrite that run (choose another --out)")
        if target in _nested_members(r, {r}):
            raise ValueError(f"--out {out}: is a member of member {run} (an ensemble); writing there would make "
                             "the ensemble a member of itself (choose another --out)")
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    m = _metrics_of(out)
    if m and m.get("init") != "ensemble":
        raise ValueError(f"--out {out}: holds a {m.get('kind')!r} run (init {m.get('init')!r}), not an ensemble; "
                         "writing the ensemble there would overwrite it (choose another --out)")
    if not m and any(out.iterdir()):
        raise ValueError(f"--out {out}: a directory that holds no ensemble and is not empty (choose another --out)")
    # An earlier ensemble is replaced whole: anything else put in it (a predict output) would go with it.
    foreign = sorted(p.name for p in out.iterdir() if not (p.is_file() and _OWN_FILES.fullmatch(p.name)))
    if m and foreign:
        raise ValueError(f"--out {out}: the earlier ensemble there also holds {', '.join(foreign)}, which rewriting "
                         "it would delete (move it or choose another --out)")


def _refuse_copies(runs: list[Path]) -> None:
    """Two networks trained alike (same identity: settings, store, split; same weight seeds) are one network: a
    copied run dir, or a run and a rerun of its config.yaml, made a two-member "seed ensemble" that scored exactly
    as the run alone."""
    seen: dict[tuple, Path] = {}
    for run in runs:
        m = _metrics_of(run)
        if m.get("init") not in ("scratch", "clip"):
            continue  # baselines are counted apart below; an ensemble member is its members
        try:
            digest = json.loads((run / "identity.json").read_text(encoding="utf-8")).get("digest")
        except (OSError, ValueError, AttributeError):
            continue
        if digest is None or m.get("weight_seeds") is None:
            continue
        key = (digest, json.dumps(m["weight_seeds"]))
        if key in seen:
            raise ValueError(f"{seen[key]} and {run}: the same network twice (same settings, store, split and "
                             f"weight seeds {m['weight_seeds']}): train members with other train.model_seed values")
        seen[key] = run


def ensemble(runs: list[str | Path], out_dir: str | Path) -> dict[str, Any]:
    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise ValueError("an ensemble needs at least two runs")
    twice = sorted({str(r) for r in runs if sum(r.resolve() == o.resolve() for o in runs) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)}: listed more than once (a member would count twice in the mean)")
    check_out(Path(out_dir), runs)
    for run in runs:  # `astrom3 predict` outputs hold a predictions.csv and metrics.json too
        kind = _metrics_of(run).get("kind")
        if kind not in (None, "finetune"):
            raise ValueError(f"{run}: a {kind!r} output, not a fine-tune, baseline or ensemble run (to classify a "
                             "new store with an ensemble, ensemble the runs and `astrom3 predict` that)")
    _refuse_copies(runs)
    rep, text = _average(runs, "test")
    first = runs[0] / "metrics.json"
    ref = json.loads(first.read_text(encoding="utf-8")) if first.exists() else {}
    # A sub-X run's test set is the subset's; the full test set is reported beside it from its own predictions.
    full_missing = [str(r / predictions_file("test_full")) for r in runs
                    if not (r / predictions_file("test_full")).exists()]
    if ref.get("subset", "full") != "full" and full_missing:
        raise ValueError(f"{', '.join(full_missing)}: missing: members of subset {ref['subset']} need their full "
                         "test set's predictions for the ensemble's (rerun the member)")
    # Averaged where every member has them: runs from before validation predictions were written have none, and
    # only stores with objects without a class (--keep-unlabelled) have unlabelled ones.
    optional = {key: _average(runs, key) for key in ("test_full", "val", UNLABELLED)
                if all((run / predictions_file(key)).exists() for run in runs)}
    members, with_baseline = [], []
    for run in runs:
        m = json.loads((run / "metrics.json").read_text(encoding="utf-8")) if (run / "metrics.json").exists() else {}
        members.append({"run": str(run.resolve()), "test_macro_f1": m.get("test", {}).get("macro_f1"),
                        "val_macro_f1": m.get("val", {}).get("macro_f1")})
        if m.get("init") == "baseline" or m.get("average_baseline"):
            with_baseline.append(str(run))
    if len(with_baseline) > 1:
        # The same deterministic fit of the same split each time: its share of the mean grows with every copy.
        log.warning("the classical baseline is in %d of the %d members (%s: baseline runs or runs with "
                    "finetune.average_baseline): it weighs that much more in the average", len(with_baseline),
                    len(runs), ", ".join(with_baseline))
    out = Path(out_dir)
    # Built beside --out and swapped in whole: an earlier ensemble's files this one does not write (validation or
    # unlabelled predictions its members lacked) would otherwise stay and be averaged by later ensembles.
    with atomic_dir(out, overwrite=True) as tmp:
        result = _write(tmp, runs, ref, rep, text, optional, members)
    log.info("ensemble of %d: test accuracy %.3f, macro-F1 %.3f%s", len(runs), rep["accuracy"], rep["macro_f1"],
             f"; validation macro-F1 {result['val']['macro_f1']:.3f}" if "val" in result else "")
    return result


def _write(out: Path, runs: list[Path], ref: dict, rep: dict, text: str, optional: dict, members: list) -> dict:
    write_text(out / PREDICTIONS, text)
    for key, (_, key_text) in optional.items():
        write_text(out / predictions_file(key), key_text)
    if "val" not in optional:
        log.warning("no validation predictions in %s: the ensemble's metrics.json has no 'val'",
                    ", ".join(str(r) for r in runs if not (r / predictions_file("val")).exists()))
    result: dict[str, Any] = {k: ref.get(k) for k in ("kind", "mode", "fusion", "subset", "seed", "use_rfr_score")}
    result |= {"kind": "finetune", "init": "ensemble", "init_dir": None, "members": members, "test": rep,
               "test_accuracy": rep["accuracy"], "test_full": rep}
    result |= {key: summary for key, (summary, _) in optional.items()}
    result["test_full_accuracy"] = result["test_full"]["accuracy"]
    plot_confusion(rep, out / "confusion_test.png", f"ensemble of {len(runs)} - test set")
    if "test_full" in optional:
        plot_confusion(result["test_full"], out / "confusion_test_full.png", f"ensemble of {len(runs)} - full test set")
    write_json(out / "metrics.json", result)
    return result
