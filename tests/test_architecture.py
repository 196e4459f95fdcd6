"""The package's shape: no import cycles, one-way layers (docs/architecture.md), modules one can read in a sitting.

The import graph is computed like a linter does, from the source text (`ast`), not by importing: every
`import` / `from ... import` at any depth (module level, inside functions, under `if TYPE_CHECKING`), relative
imports resolved against the importing module's package. `from pkg import name` is an edge to `pkg.name` when
that is a module of the package, else to `pkg`.

Moving files: update LAYER_OF (module prefix -> layer; the longest matching prefix wins) and nothing else.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "astrom3_hpc"

# Lowest first. A module may import from its own layer and from layers of a lower rank, never upwards.
# Layers sharing a rank are siblings and must not import each other (results and science both sit on train).
RANK = {"core": 0, "distributed": 1, "data": 2, "model": 3, "train": 4, "orchestration": 5,
        "results": 6, "science": 6, "app": 7, "cli": 8}

# Module prefix -> layer, written against the CURRENT module paths.
LAYER_OF = {
    "astrom3_hpc": "core",                  # the package __init__
    "astrom3_hpc.core": "core",             # config, constants, atomic writes, progress, exit codes
    "astrom3_hpc.data": "data",
    "astrom3_hpc.model": "model",
    "astrom3_hpc.distributed": "distributed",
    "astrom3_hpc.train": "train",           # trainer, engine, loss, evaluation, the job entry points (jobs)
    "astrom3_hpc.orchestration": "orchestration",
    "astrom3_hpc.results": "results",
    "astrom3_hpc.science": "science",
    "astrom3_hpc.app": "app",               # whole workflows: the demo runs a sweep, then collects it
    "astrom3_hpc.cli": "cli",               # argument parsing only (cli/science.py: the science commands)
}

# The rules docs/architecture.md states in words; the rank order implies them, these name the reason.
NEVER = [
    ("model", "distributed", "model code knows nothing about ranks"),
    ("data", "model", "data never imports models"),
    ("*", "cli", "nothing imports cli: it is argument parsing only, commands call library functions"),
]

MAX_LINES = 500
# Modules allowed above MAX_LINES, each with the reason it is one cohesive thing. Empty: none is above it, and a
# module that grows past it is split unless it earns an entry here.
LARGE_OK: dict[str, str] = {}

# What "model code knows nothing about ranks" means beyond our own distributed layer: the libraries that
# communicate, and the launcher variables that say which rank a process is.
RANK_LIBRARIES = ("torch.distributed", "mpi4py", "deepspeed")
RANK_VARIABLES = re.compile(r"RANK|WORLD_SIZE|LOCAL_RANK|SLURM_PROCID|PMI_\w*|OMPI_\w*")


# ---------------------------------------------------------------------------------------------- the graph

def package_modules(pkg_dir: Path, package: str) -> dict[str, Path]:
    mods = {}
    for f in sorted(pkg_dir.rglob("*.py")):
        parts = [package, *f.relative_to(pkg_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def import_graph(pkg_dir: Path, package: str) -> dict[str, set[str]]:
    """{module: modules of the package it imports}."""
    mods = package_modules(pkg_dir, package)
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        here = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                out.update(_known(a.name, mods) for a in node.names if _inside(a.name, package))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[:len(here.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not _inside(target, package):
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    out.add(sub if sub in mods else _known(target, mods))
        out.discard(mod)
        graph[mod] = out
    return graph


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _known(name: str, mods: dict) -> str:
    """`import a.b.c` names a module; keep the longest prefix that is one (a.b.c.X would be an attribute)."""
    while name not in mods and "." in name:
        name = name.rpartition(".")[0]
    return name


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def layer_of(mod: str, mapping: dict[str, str]) -> str | None:
    best = max((p for p in mapping if mod == p or mod.startswith(p + ".")), key=len, default=None)
    return mapping[best] if best else None


def layer_breaches(graph: dict[str, set[str]], mapping: dict[str, str], rank: dict[str, int],
                   never: list[tuple[str, str, str]]) -> list[str]:
    bad = []
    for src in sorted(graph):
        a = layer_of(src, mapping)
        for dst in sorted(graph[src]):
            b = layer_of(dst, mapping)
            if a is None or b is None or a == b:
                continue
            named = [why for lo, hi, why in never if lo in (a, "*") and hi == b]
            if named:
                bad.append(f"{src} ({a}) -> {dst} ({b}): {named[0]}")
            elif rank[b] >= rank[a]:
                bad.append(f"{src} ({a}) -> {dst} ({b}): imports a layer that is not below its own")
    return bad


# ----------------------------------------------------------------------------------------------- the rules

GRAPH = import_graph(ROOT / PACKAGE, PACKAGE)


def test_every_module_has_a_layer():
    """Catches a new or moved module that LAYER_OF does not place (its imports would go unchecked)."""
    assert set(LAYER_OF.values()) <= set(RANK)
    assert [m for m in sorted(GRAPH) if layer_of(m, LAYER_OF) is None] == []


def test_no_import_cycles():
    """Catches modules that import each other, directly or round a longer circle (a lazy import counts:
    it still means neither module can be understood, tested or moved without the other)."""
    found = cycles(GRAPH)
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_imports_follow_the_layers():
    """Catches an import against the one-way layering of docs/architecture.md (e.g. a model importing the
    distributed code, a library module calling into cli)."""
    bad = layer_breaches(GRAPH, LAYER_OF, RANK, NEVER)
    assert bad == [], "layer rule broken:\n" + "\n".join(bad)


def test_modules_fit_in_one_sitting():
    """Catches a module growing past MAX_LINES without a stated reason in LARGE_OK."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for p in package_modules(ROOT / PACKAGE, PACKAGE).values()}
    assert all(reason.strip() for reason in LARGE_OK.values())
    big = {p: n for p, n in sorted(sizes.items()) if n > MAX_LINES and p not in LARGE_OK}
    assert big == {}, f"modules over {MAX_LINES} lines without a reason in LARGE_OK: {big}"



def rank_awareness(path: Path) -> list[str]:
    """Imports of a communication library and launcher variables named in `path` (a name as a whole string
    constant: os.environ["RANK"], os.getenv("PMI_RANK") and a tuple of names to look up alike)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and RANK_VARIABLES.fullmatch(node.value):
            found.append(f"line {node.lineno}: launcher variable {node.value!r}")
            continue
        else:
            continue
        for name in names:
            lib = next((lib for lib in RANK_LIBRARIES if name == lib or name.startswith(lib + ".")), None)
            if lib is not None:
                found.append(f"line {node.lineno}: imports {name}")
                break
    return found


def test_models_know_nothing_about_ranks():
    """Catches a model module that communicates (torch.distributed, mpi4py, deepspeed) or reads which rank it is
    from the launcher's variables: the layer rule only sees imports of astrom3_hpc.distributed."""
    bad = {str(p.relative_to(ROOT)): found for p in sorted((ROOT / PACKAGE / "model").rglob("*.py"))
           if (found := rank_awareness(p))}
    assert bad == {}, f"model code asking about ranks: {bad}"


def test_argument_parsing_lives_in_cli_and_app():
    """Catches a library module (train, data, ...) growing its own subcommand: the library is usable without the
    command line, and every option is found in cli/ (the demo, a whole workflow, is the one app)."""
    parsers = sorted(m for m, p in package_modules(ROOT / PACKAGE, PACKAGE).items()
                     if layer_of(m, LAYER_OF) not in ("cli", "app") and "add_parser(" in p.read_text())
    assert parsers == []


def test_help_loads_no_heavy_library():
    """Catches a module-level import that makes every `astrom3 ...` (and each srun task's argument parsing) wait for
    torch, zarr, scipy or scikit-learn before it has even read its arguments."""
    code = ("import sys; import astrom3_hpc.cli as c; c.build_parser(); "
            "print(' '.join(m for m in ('torch', 'zarr', 'scipy', 'sklearn', 'deepspeed', 'astropy', 'submitit', "
            "'matplotlib', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == []


# ------------------------------------------------------------------ the checker itself, on a made-up package

def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / "pkg" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "pkg"


def test_checker_sees_relative_lazy_and_package_imports(tmp_path):
    """Catches a graph builder that misses relative imports, imports inside functions, `from . import mod`
    or `import pkg.a.b`, or resolves `..` one level wrong."""
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "core.py": "",
        "low/__init__.py": "",
        "low/a.py": "from .. import core\nfrom . import b\n",
        "low/b.py": "def f():\n    from ..high import h\n",
        "high/__init__.py": "import os\n",
        "high/h.py": "import pkg.low.a\nfrom pkg.low.b import f\nfrom ..core import x\n",
    })
    g = import_graph(pkg, "pkg")
    assert g["pkg.low.a"] == {"pkg.core", "pkg.low.b"}
    assert g["pkg.low.b"] == {"pkg.high.h"}
    assert g["pkg.high.h"] == {"pkg.low.a", "pkg.low.b", "pkg.core"}
    assert g["pkg.high"] == set()
    assert cycles(g) == [["pkg.high.h", "pkg.low.a", "pkg.low.b"]]
    mapping = {"pkg": "core", "pkg.low": "data", "pkg.high": "model"}
    bad = layer_breaches(g, mapping, {"core": 0, "data": 1, "model": 2},
                         [("data", "model", "data never imports models")])
    assert bad == ["pkg.low.b (data) -> pkg.high.h (model): data never imports models"]
    cli_rule = [("*", "model", "nothing imports model")]
    assert len(layer_breaches(g, mapping, {"core": 0, "data": 1, "model": 2}, cli_rule)) == 1


@pytest.mark.parametrize("mapping,expect", [
    ({"pkg": "core", "pkg.x": "results", "pkg.y": "science"}, 1),   # siblings must not import each other
    ({"pkg": "core", "pkg.x": "science", "pkg.y": "science"}, 0),
    ({"pkg": "core", "pkg.x": "train", "pkg.y": "results"}, 1),     # upwards
    ({"pkg": "core", "pkg.x": "results", "pkg.y": "train"}, 0),
])
def test_layer_rank_rules(tmp_path, mapping, expect):
    """Catches a rank check that lets a layer import its sibling or a layer above it."""
    pkg = _write(tmp_path, {"__init__.py": "", "x.py": "from . import y\n", "y.py": ""})
    assert len(layer_breaches(import_graph(pkg, "pkg"), mapping, RANK, [])) == expect


@pytest.mark.parametrize("text,expect", [
    ("import torch.distributed as dist\n", 1),
    ("from torch import distributed\n", 1),
    ("from torch.distributed import all_reduce\n", 1),
    ("def f():\n    from mpi4py import MPI\n", 1),
    ("import deepspeed.comm\n", 1),
    ("import os\nr = os.environ.get('LOCAL_RANK')\n", 1),
    ("import os\nr = int(os.environ['OMPI_COMM_WORLD_RANK'])\n", 1),
    ("import os\nr = os.getenv('SLURM_PROCID', '0')\n", 1),
    ('"""RANK is the rank."""\nimport torch\nfrom torch import nn\nfrom . import distributed\n', 0),
])
def test_rank_awareness_checker(tmp_path, text, expect):
    """Catches a checker that misses a spelling of a communication import or a launcher variable, or that
    flags ordinary torch imports, our own relative imports or prose mentioning a variable."""
    f = tmp_path / "m.py"
    f.write_text(text)
    assert len(rank_awareness(f)) == expect


def test_docs_the_repository_names_exist():
    """A docs/*.md path in a comment, config or page is where a reader is sent for the reason behind a setting;
    moving or splitting a page must not leave those pointers dangling."""
    import re
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    named = {}
    for name in files:
        if (Path(name).suffix not in (".py", ".md", ".yaml", ".yml", ".cfg", ".sh", ".txt")
                or name.startswith("shared/")):
            continue
        text = (ROOT / name).read_text(errors="replace")
        for ref in re.findall(r"docs/[A-Za-z0-9_\-]+\.md", text):
            named.setdefault(ref, name)
    assert named, "no docs/*.md reference found: the scan is broken"
    missing = {ref: where for ref, where in named.items() if not (ROOT / ref).is_file()}
    assert not missing, f"pages named but absent (page: first file naming it): {missing}"
