"""What ingestion tells the user about the class names it stored: spellings of one class stored as several, and
labels a class map left out or did not name. Each would otherwise show only in the store's provenance, while
runs train on the classes as stored.

Spellings are compared without case (Unicode casefolding, after NFKC: a fullwidth ＲＲab is RRab), spaces, dashes
and connectors of any script: an en dash or a no-break space pasted from a PDF makes a class of its own that
looks like the other in every table and plot.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable, Mapping

log = logging.getLogger("astrom3")

_IGNORED = ("Zs", "Pd", "Pc")  # space separators, dashes (- – ‐), connectors (_)


def nfc(text: str) -> str:
    """Composed accents: "é" typed as e and a combining mark is the same label as the one character."""
    return unicodedata.normalize("NFC", text)


def spelling_key(name: str) -> str:
    """One text for every spelling of a name that differs only in case, spaces, dashes or underscores."""
    text = unicodedata.normalize("NFKC", name).casefold()
    return "".join(ch for ch in text if unicodedata.category(ch) not in _IGNORED)


def spelled_alike(label: str, keys: Iterable[str]) -> str | None:
    """The first of `keys` (a class map's labels) that is `label` but for case or punctuation, or None."""
    want = spelling_key(label)
    return next((k for k in keys if spelling_key(k) == want), None)


def near_duplicates(names: Iterable[str]) -> list[list[str]]:
    """Class names that are one name but for case, spaces, '_' or '-' ("RRab", "RRAB", "RR ab"): a catalogue
    typed by hand, each spelling a class of its own."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(spelling_key(n), []).append(n)
    return [g for g in groups.values() if len(g) > 1]


def merge_hint(kind: str | None) -> str:
    """Only `ingest lightcurves` has --class-map: naming it after another source's ingest sends the user to an
    option that command rejects."""
    if kind == "lightcurves":
        return "merge them with --class-map or leave them out"
    return ("merge them or leave them out by reading the tables with `astrom3 ingest lightcurves --class-map` "
            "(this source has no class map)")


def _objects(n: int) -> str:
    return f"{n} object{'s' * (n != 1)}"


def warn(class_names: list[str], kind: str | None, left_out: Mapping[str, int] | None,
         unmapped: Mapping[str, int] | None, map_keys: Iterable[str] = (), kept: bool = False) -> None:
    """Log what the user should look at before training on these classes. `left_out`: {label: objects} a class
    map sends to no class; `unmapped`: {label: objects} it does not name, kept unlabelled or dropped as asked
    (`kept`; a map key of `map_keys` spelled alike is named)."""
    hint = merge_hint(kind)
    for group in near_duplicates(class_names):
        log.warning("classes %s differ only in case or punctuation: if they are one class, %s",
                    " and ".join(map(repr, group)), hint)
    if left_out:  # asked for, but a class dropped by a map typo would otherwise show only in the provenance
        log.warning("the class map left out %s (labels it maps to no class)",
                    ", ".join(f"label {k!r} ({_objects(n)})" for k, n in left_out.items()))
    if unmapped:  # a key misspelled in the map ("Sr" for "SR") takes a whole class out of training
        keys = list(map_keys)
        named = ", ".join(f"label {k!r} ({_objects(n)}{_named(spelled_alike(k, keys))})" for k, n in unmapped.items())
        log.warning("the class map does not name %s: %s", named,
                    "kept without a class (--keep-unlabelled)" if kept else "left out (--drop-unlabelled)")


def _named(key: str | None) -> str:
    return f"; the map names {key!r}" if key is not None else ""
