"""`astrom3` command line: one subcommand per job. Heavy imports happen inside the commands so that
`astrom3 --help` answers at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from ..core.argtypes import positive_int
from ..core.constants import MODES, SUBSET_FACTORS
from ..core.errors import EXIT_DAMAGED, EXIT_UNVERIFIABLE
from .runner import dispatch, print_json


# ---------------------------------------------------------------------------------------------------------------
# info / inspect

def _add_info(sub) -> None:
    p = sub.add_parser("info", help="summarise a store: objects, classes, splits, provenance")
    p.add_argument("store")
    p.set_defaults(func=cmd_info)
    q = sub.add_parser("inspect", help="read a few loader batches from a store and print their shapes")
    q.add_argument("store")
    q.add_argument("--seed", type=int, default=42)
    q.add_argument("--subset", default="full")
    q.add_argument("--batch-size", type=positive_int, default=64)
    q.add_argument("--batches", type=positive_int, default=3)
    q.set_defaults(func=cmd_inspect)


def cmd_info(args) -> int:
    from ..core.constants import SPLIT_SEEDS, SUBSET_FACTORS
    from ..data.store import Store
    from ..data.store_cache import CACHE_DIR, cache_contents

    s = Store(args.store)
    print(f"store {s.path}  schema v{s.attrs['schema_version']}  objects {s.n_objects}")
    print_json({"compression": "lz4", **s.attrs["layout"]}, None, "layout")  # stores before the option: lz4
    print_json(s.attrs["provenance"], None, "provenance")
    print_json(s.attrs.get("preprocessing", {}), None, "preprocessing")
    print_json(s.attrs.get("summary", {}), None, "summary")
    origins = s.attrs.get("splits", {})  # stores before published splits were kept: all generated
    print(f"{'seed':>5} {'subset':>6} {'train':>7} {'val':>6} {'test':>6}  origin")
    for seed in SPLIT_SEEDS:
        if f"splits/seed{seed}" not in s.root:
            continue  # a store with given splits holds only the seeds given
        for sub in SUBSET_FACTORS:
            n = [len(s.split(seed, sub, k)) for k in ("train", "val", "test")]
            o = origins.get(f"seed{seed}/{sub}", {"origin": "generated"})
            where = f" ({Path(o['files']['train']).parent})" if o.get("files") else ""
            print(f"{seed:>5} {sub:>6} {n[0]:>7} {n[1]:>6} {n[2]:>6}  {o['origin']}{where}")
    n_unlabelled = len(s.unlabelled_rows())
    if n_unlabelled:
        print(f"objects without a class: {n_unlabelled} (in no split; runs classify them: "
              "predictions_unlabelled.csv)")
    if s.skipped():
        print(f"skipped objects: {len(s.skipped())} (see {s.path / 'skipped.json'})")
    cache = cache_contents(s)
    if cache:
        print(f"cache ({s.path / CACHE_DIR}: arrays derived by jobs, recomputed by the next job if removed): " +
              ", ".join(f"{kind} {n} file{'s' * (n != 1)} {size / 1e6:.1f} MB" for kind, (n, size) in cache.items()))
    return 0


def cmd_inspect(args) -> int:
    import time

    from ..data.loader import LoaderSpec, TrimodalBatches

    b = TrimodalBatches(LoaderSpec(args.store, seed=args.seed, subset=args.subset, batch_size=args.batch_size))
    t0 = time.perf_counter()
    n = 0
    for k, batch in enumerate(b.iter_epoch(0)):
        if k == 0:
            for name, v in batch.items():
                print(f"{name:>10}: {tuple(v.shape)} {v.dtype}")
        n += len(batch["label"])
        if k + 1 >= args.batches:
            break
    dt = time.perf_counter() - t0
    print(f"read {n} objects in {dt:.2f} s ({n / dt:.0f} objects/s); {b.num_batches()} batches per epoch")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# verify

def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check every array's shape and every chunk's checksum of a store",
                       description="Exit 0 only for an intact store; otherwise every damaged file and array is "
                                   "listed and the exit code is 3 (a store built without checksums: 4).")
    p.add_argument("store")
    p.set_defaults(func=cmd_verify)


def _add_clean(sub) -> None:
    p = sub.add_parser("clean-store-temp", help="remove what interrupted builds of a store left behind",
                       description="Removes the .NAME.tmp-* (and .NAME.old-*) directories next to STORE that a "
                                   "killed `astrom3 ingest --out STORE` could not remove itself. Run it only "
                                   "while no build of STORE is running.")
    p.add_argument("store")
    p.set_defaults(func=cmd_clean_store_temp)


def cmd_clean_store_temp(args) -> int:
    from ..data.tempdirs import clean

    removed, restored = clean(args.store)
    if restored is not None:
        print(f"put back {restored} as {args.store}: a build replacing it was killed after moving it aside")
    for p in removed:
        print(f"removed {p}")
    if not removed and restored is None:
        print(f"nothing to remove next to {args.store}")
    return 0


def cmd_verify(args) -> int:
    from ..data.verify import verify_store

    problems, checksummed = verify_store(args.store)
    for line in problems:
        print(line)
    if problems:
        print(f"astrom3 verify: {args.store}: {len(problems)} problem(s)", file=sys.stderr)
        return EXIT_DAMAGED
    if not checksummed:
        print(f"astrom3 verify: {args.store}: shapes and chunk files are intact, but the store has no checksum "
              f"table (built by an older astrom3): rebuild it with `astrom3 ingest` to verify its contents",
              file=sys.stderr)
        return EXIT_UNVERIFIABLE
    print(f"{args.store}: intact")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# training jobs

def _add_train_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (see configs/); unspecified keys keep their defaults")
    p.add_argument("--run-dir", required=True,
                   help="output directory; rerunning with the same directory resumes from its last checkpoint")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. --set train.epochs=3 optim.lr=1e-4 (repeatable: every --set applies)")
    p.add_argument("--store", help="the Zarr store to train on; overrides data.store")
    p.add_argument("--no-resume", action="store_true",
                   help="start a new run: refused (exit 6) if --run-dir already holds one, instead of resuming it")
    p.add_argument("--stop-after-steps", type=positive_int, default=None,
                   help="checkpoint and exit (code 75) after this many steps, as on preemption (for testing)")


def _add_train(sub) -> None:
    p = sub.add_parser("pretrain", help="contrastive pretraining (DeepSpeed; any launcher)",
                       description="CLIP pretraining over all pairs of the configured modalities with global-"
                                   "batch negatives. Start it with srun, mpiexec, torchrun, deepspeed or as one "
                                   "process. SIGUSR1/SIGTERM checkpoint and exit with code 75 for requeue.")
    _add_train_common(p)
    p.add_argument("--seed", type=int, help="split seed (its train split is pretrained on); overrides data.seed")
    p.set_defaults(func=cmd_pretrain, fail_fast=True)
    q = sub.add_parser("finetune", help="fine-tune a classifier from scratch or from a pretraining run",
                       description="Trains a single-modality or multimodal classifier and evaluates it on the "
                                   "sub-X test set and on the full test set (accuracy, macro-F1, per-class "
                                   "recall, confusion matrix). Refuses a pretraining run of another split seed.")
    _add_train_common(q)
    q.add_argument("--mode", choices=MODES, help="overrides finetune.mode")
    q.add_argument("--subset", choices=list(SUBSET_FACTORS), help="overrides data.subset")
    q.add_argument("--seed", type=int, help="split seed; overrides data.seed")
    q.add_argument("--init", help="'scratch' or a pretraining run directory; overrides finetune.init")
    q.add_argument("--pretrain-seed", type=int,
                   help="split seed the --init weights were pretrained on, for runs that do not record it "
                        "(astrom3 import-weights); overrides finetune.pretrain_seed")
    q.add_argument("--allow-unknown-seed", action="store_true",
                   help="fine-tune from imported weights of unknown split seed, accepting that the test set may "
                        "hold objects their pretraining saw")
    q.set_defaults(func=cmd_finetune, fail_fast=True)
    _add_import_weights(sub)
    e = sub.add_parser("evaluate-embeddings", help="centroid and 1-NN accuracy of a pretrained model's embeddings")
    e.add_argument("run_dir", help="a finished pretraining run directory")
    e.add_argument("--batch-size", type=positive_int, metavar="N",
                   help="global batch of the embedding pass (default: the run's train.batch_size); lower it for a "
                        "store whose train split is smaller than the run's batch (e.g. imported weights recorded "
                        "with 512)")
    e.add_argument("--store", help="the run's store where it has moved (default: the run's data.store); one "
                                   "of other content than the weights were trained on is refused")
    e.add_argument("--pretrain-seed", type=int, metavar="S",
                   help="imported weights (import-weights): the split seed they were pretrained on, whose test "
                        "split is scored (their seed is unknown; without it or --allow-unknown-seed the command "
                        "refuses)")
    e.add_argument("--allow-unknown-seed", action="store_true",
                   help="imported weights: score the run's recorded seed although the weights may have been "
                        "pretrained on some of its test objects (embedding_eval.json records split_seed_unknown)")
    e.set_defaults(func=cmd_evaluate_embeddings, fail_fast=True)


def _overrides(args) -> list[str]:
    """--set, then the flags that name one key (they win, as --mode does over finetune.mode)."""
    from ..core.config import store_overrides

    return [*args.set, *store_overrides(args.store)]


def cmd_pretrain(args) -> int:
    from ..train.jobs import pretrain_config, run_pretrain

    seed = [] if args.seed is None else [f"data.seed={args.seed}"]
    return run_pretrain(pretrain_config(args.config, _overrides(args) + seed), args.run_dir,
                        stop_after_steps=args.stop_after_steps, resume=not args.no_resume)


def cmd_finetune(args) -> int:
    from ..train.jobs import finetune_config, run_finetune

    cfg = finetune_config(args.config, _overrides(args), mode=args.mode, subset=args.subset, seed=args.seed,
                          init=args.init, pretrain_seed=args.pretrain_seed, allow_unknown_seed=args.allow_unknown_seed)
    return run_finetune(cfg, args.run_dir, stop_after_steps=args.stop_after_steps, resume=not args.no_resume)


def _add_import_weights(sub) -> None:
    p = sub.add_parser("import-weights", help="turn a reference AstroM3 checkpoint into a pretraining run dir",
                       description="Reads a state_dict saved by the authors' AstroM3 code (.pt via torch.load "
                                   "weights_only, or .safetensors), infers the model config from its shapes, "
                                   "checks every key through the reference key map and writes a pretraining run "
                                   "directory that finetune --init, embed, evaluate-embeddings and the science "
                                   "tools accept. Its split seed is unknown: fine-tuning from it needs "
                                   "--pretrain-seed S or --allow-unknown-seed.")
    p.add_argument("file", help="reference checkpoint (.pt, .pth or .safetensors)")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--heads", type=int, default=4,
                   help="attention heads of the light-curve encoder (not visible in any shape; paper: 4)")
    p.add_argument("--store", help="store to record as the run's data.store (embed / evaluate-embeddings read it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier imported run at --out (any other directory is refused)")
    p.set_defaults(func=cmd_import_weights)


def cmd_import_weights(args) -> int:
    from ..train.import_weights import import_weights

    rec = import_weights(args.file, args.out, n_heads=args.heads, store=args.store, overwrite=args.overwrite)
    print_json({"run_dir": str(args.out), **rec})
    return 0


def cmd_evaluate_embeddings(args) -> int:
    from ..train.pretrain import evaluate_run

    out = evaluate_run(args.run_dir, store=args.store, batch_size=args.batch_size, pretrain_seed=args.pretrain_seed,
                       allow_unknown_seed=args.allow_unknown_seed)
    if out is not None:
        print_json(out)
    return 0


# ---------------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="astrom3", description="AstroM3 trimodal CLIP for variable stars: "
                                "data ingestion, distributed pretraining, fine-tuning, sweeps and results.")
    p.add_argument("--version", action="version", version=f"astrom3-hpc {__version__}")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    from .ingest import add_parser as add_ingest_parser

    add_ingest_parser(sub)
    _add_info(sub)
    _add_verify(sub)
    _add_clean(sub)
    _add_train(sub)
    from .science import add_parsers as add_science_parsers

    add_science_parsers(sub)
    from . import results as results_cli
    from ..app import demo
    from .orchestration import add_parsers as add_orchestration_parsers

    add_orchestration_parsers(sub)

    results_cli.add_parser(sub)
    demo.add_parser(sub)
    from .models import add_parsers as add_model_parsers

    add_model_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from ..core.errors import EXIT_INTERRUPTED
    from ..core.signals import Stopped, stopped_by

    # Building the parser imports every command's module (a quarter of a second): a Ctrl-C there printed a
    # traceback and a job signal ended the process with 143 or 138 instead of the 75 the job scripts requeue.
    try:
        with stopped_by("astrom3"):
            parser = build_parser()
    except KeyboardInterrupt as e:
        print(f"astrom3: {e if isinstance(e, Stopped) else 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_code", EXIT_INTERRUPTED)
    code = dispatch(parser, argv)
    if argv is None:  # the program itself (a caller in Python keeps its own handlers)
        _ignore_late_signals()
    return code


def _ignore_late_signals() -> None:
    """The command has finished and its results are written: a job signal or Ctrl-C while the interpreter shuts
    down (over half a second after a science tool's last line) turned its exit code into 143, which a job script
    counts as neither done nor to requeue."""
    import signal

    from ..core.signals import JOB_SIGNALS

    for s in (*JOB_SIGNALS, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
