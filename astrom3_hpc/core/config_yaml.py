"""The YAML side of run configs: config files (with `base:` inheritance), cells tables and `--set` overrides read
into nested dicts, which core.config turns into typed, validated dataclasses (and re-exports the names below).

Every file and override value goes through one loader that refuses a repeated key: PyYAML keeps the last copy
without a word, so a second `train:` section silently dropped the first one's values back to the defaults.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from .constants import MODES, SUBSET_FACTORS


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file and the key."""


class RepeatedKeyError(ConfigError):
    """A mapping of a YAML text holds one key twice."""


class AmbiguousNumberError(ConfigError):
    """A number YAML 1.1 reads other than as written: `050` as octal 40, `1:00` as base-60 60."""


def _number(loader: yaml.SafeLoader, node: yaml.ScalarNode, build: Any) -> Any:
    digits = node.value.replace("_", "").lstrip("+-")
    octal = len(digits) > 1 and digits[0] == "0" and digits[1].isdigit()
    if ":" in digits or (octal and build is yaml.SafeLoader.construct_yaml_int):
        reads = build(loader, node)
        fix = f"write {digits.lstrip('0') or '0'} without leading zeros" if octal else "write it as one number"
        raise AmbiguousNumberError(f"{node.value!r} (line {node.start_mark.line + 1}) reads as {reads} in YAML 1.1 "
                                   f"({'octal' if octal else 'base 60'}): {fix}, or quote it for a string")
    return build(loader, node)


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that raises RepeatedKeyError on a key given twice in one mapping of the text (merge keys `<<`
    aside: their keys are meant to be overridden). Checked on the composed tree, before construction: building a
    mapping with a merge rewrites the anchored mapping it merges in place (its own merge flattened into it), and a
    check while building read that anchor's override of a merged key as a repeat."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _refuse_repeated_keys(node)
        return node


UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int",
                                lambda ld, n: _number(ld, n, yaml.SafeLoader.construct_yaml_int))
UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float",
                                lambda ld, n: _number(ld, n, yaml.SafeLoader.construct_yaml_float))


def _refuse_repeated_keys(root: yaml.Node) -> None:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:  # an alias: the anchored node is checked once
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                stack.append(value_node)
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
                if key in lines:
                    at = f"line {line}" if lines[key] == line else f"lines {lines[key]} and {line}"
                    raise RepeatedKeyError(f"key {key_node.value!r} appears twice ({at})")
                lines[key] = line


def load_yaml(text: str, where: str) -> Any:
    """``text`` parsed by UniqueKeyLoader; a repeated key is a ConfigError naming ``where`` and the key."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except (RepeatedKeyError, AmbiguousNumberError) as e:
        raise ConfigError(f"{where}: {e}") from None


def load_yaml_file(path: Path) -> Any:
    try:
        return load_yaml(path.read_text(encoding="utf-8"), str(path))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it as "
                          f"UTF-8") from None


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(overrides: list[str] | None) -> dict:
    """Turn ["train.epochs=3", "model.preset=paper"] into a nested dict, values parsed as YAML scalars."""
    tree: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        key, raw = item.split("=", 1)
        if not raw.strip():
            # YAML reads nothing as null: an unset shell variable (`cells=$CELLS`) switched the setting off.
            raise ConfigError(f"override '{item}' gives no value; write {key.strip()}=null to unset it")
        node = tree
        parts = key.strip().split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):  # `train=4 train.epochs=3`: a TypeError traceback before
                raise ConfigError(f"override '{item}': {'.'.join(parts[:i + 1])} was set to {node!r} by an earlier "
                                  f"override, not a mapping of keys")
        try:
            value = load_yaml(raw, f"override '{item}'")
            # A whole section after dotted keys of it (`train.epochs=3 'train={batch_size: 64}'`) merges, as
            # over the file, instead of dropping the earlier keys.
            earlier = node.get(parts[-1])
            node[parts[-1]] = merge(earlier, value) if isinstance(earlier, dict) and isinstance(value, dict) \
                else value
        except yaml.YAMLError as e:  # not a ValueError: a traceback and exit 1 before
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"override '{item}': not a valid YAML value ({problem}); quote it "
                              f"({key.strip()}='...')") from None
    return tree


def load_yaml_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The config tree of a config file, its `base:` chain merged under it; `cells:` made absolute."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base' chain")
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    data = load_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    if isinstance(data.get("cells"), str):
        data["cells"] = str((path.parent / data["cells"]).resolve())  # relative to the file that names it
    base = data.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected the path of one config file, got {base!r}")
    if base is not None:
        parent = load_yaml_tree((path.parent / base), seen + (path,))
        data = merge(parent, data)
    return data


def cell_values(cells_file: str | Path, mode: str, subset: str, pretrained: bool = False) -> dict:
    """The config tree of one (mode, subset) cell of a cells file (``cells: {mode: {subset: {section: {...}}}}``);
    for a fine-tune from a pretraining (`pretrained`), of its ``clip_cells`` table where the file has one (the
    reference tuned the two kinds of run apart)."""
    path = Path(cells_file)
    if not path.exists():
        raise ConfigError(f"cells file {path} does not exist")
    data = load_yaml_file(path) or {}
    if not isinstance(data, dict):
        data = {}
    _refuse_unknown_cells(path, data)
    key = "clip_cells" if pretrained and "clip_cells" in data else "cells"
    table = data.get(key)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: expected a top-level '{key}' mapping of mode -> subset -> config sections")
    cell = table.get(mode, {}).get(subset) if isinstance(table.get(mode), dict) else None
    if not isinstance(cell, dict):
        raise ConfigError(f"{path}: no cell for mode {mode!r}, subset {subset!r}" + (f" in '{key}'" * pretrained))
    bad = sorted(set(cell) - {"model", "optim", "train"})
    if bad:
        raise ConfigError(f"{path}: {key} {mode}/{subset} may set model, optim and train only, not {bad}")
    return cell


def _refuse_unknown_cells(path: Path, data: dict) -> None:
    """A misspelt table (`clip_cell:`), mode or subset was never read: CLIP fine-tunes then ran the from-scratch
    values, or a cell fell back to the config's, without a word."""
    tables = ("cells", "clip_cells")
    for key in map(str, set(data) - set(tables)):  # other keys may hold YAML anchors the tables merge
        near = difflib.get_close_matches(key, tables, n=1, cutoff=0.75)
        if near:
            raise ConfigError(f"{path}: top-level key {key!r} is not read: did you mean {near[0]!r}?")
    for table in tables:
        modes = data.get(table)
        for mode, subsets in (modes or {}).items() if isinstance(modes, dict) else ():
            if mode not in MODES:
                raise ConfigError(f"{path}: {table}: unknown mode {mode!r} (modes: {', '.join(MODES)})")
            unknown = sorted(map(str, set(subsets or {}) - set(SUBSET_FACTORS))) if isinstance(subsets, dict) else []
            if unknown:
                raise ConfigError(f"{path}: {table}: {mode}: unknown subset(s) {unknown} (subsets: "
                                  f"{', '.join(SUBSET_FACTORS)})")
