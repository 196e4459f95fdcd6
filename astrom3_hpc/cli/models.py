"""`astrom3 baseline`, `ensemble` and `predict`: argument parsing for the commands that train, combine and apply
classifiers outside the fine-tune job (astrom3_hpc/train/baseline.py, ensemble.py, predict.py do the work and are
imported only when the command runs, so `astrom3 --help` loads neither scikit-learn nor zarr)."""

from __future__ import annotations


from ..core.argtypes import positive_int
from .runner import print_json


def add_parsers(sub) -> None:
    _add_baseline(sub)
    _add_ensemble(sub)
    _add_predict(sub)


def _add_baseline(sub) -> None:
    p = sub.add_parser("baseline", help="classical light-curve classifier (Lomb-Scargle + Fourier + statistics, "
                                        "gradient boosting) on a store's splits",
                       description="Writes metrics.json (fine-tune format, init 'baseline'), predictions.csv and "
                                   "confusion_test.png into --out, so `astrom3 collect` lists it beside the networks. "
                                   "SIGUSR1/SIGTERM stop it at once with nothing written, exit code 75 (requeue).")
    p.add_argument("store")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--seed", type=int, default=42, help="split seed")
    p.add_argument("--subset", default="full", choices=["full", "sub50", "sub25", "sub10"])
    p.add_argument("--period", choices=["ls", "store"], default="ls",
                   help="ls (default): the Lomb-Scargle period only; store: the store's period (catalogue where "
                        "the source gave one)")
    p.add_argument("--threads", type=positive_int, default=1, help="OpenMP threads for gradient boosting (default 1)")
    p.set_defaults(func=cmd_baseline)


def cmd_baseline(args) -> int:
    from ..train.baseline import run_baseline

    out = run_baseline(args.store, args.out, args.seed, args.subset, args.period, threads=args.threads)
    print_json({k: out[k] for k in ("subset", "seed", "test_accuracy")} |
               {"test_macro_f1": out["test"]["macro_f1"], "per_class_recall": out["test"]["per_class_recall"]})
    return 0


def _add_ensemble(sub) -> None:
    p = sub.add_parser("ensemble", help="average the class probabilities of fine-tune and baseline runs",
                       description="Members: runs on the same store, split seed and subset: fine-tune runs that "
                                   "differ in train.model_seed (a seed ensemble), or a fine-tune run and an "
                                   "`astrom3 baseline` run. Writes metrics.json, predictions.csv, "
                                   "confusion_test.png, and, where every member has predictions_val.csv, "
                                   "predictions_val.csv and the validation report (metrics.json 'val'): choose "
                                   "between models on that, not on test.")
    p.add_argument("runs", nargs="+", help="fine-tune or baseline run directories (each with predictions.csv)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.set_defaults(func=cmd_ensemble)


def cmd_ensemble(args) -> int:
    from ..train.ensemble import ensemble

    out = ensemble(args.runs, args.out)
    print_json({"members": len(out["members"]), "test_accuracy": out["test_accuracy"],
                "test_macro_f1": out["test"]["macro_f1"], "val_macro_f1": out.get("val", {}).get("macro_f1"),
                "per_class_recall": out["test"]["per_class_recall"]})
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify another store's objects with a finished fine-tune, baseline "
                                       "or ensemble run",
                       description="Runs a trained model over every valid object of STORE (a new field or "
                                   "release, ingested like the training data; labels optional) with the input "
                                   "scaling of the store it was trained on. Writes OUT/predictions.csv (row, "
                                   "object_id, true_class or empty, predicted_class, p_<class>...) and "
                                   "OUT/metrics.json (counts per class; the report over objects whose label is "
                                   "a class the model knows).",
                       epilog="example: astrom3 predict runs/periodic-s42 --store data/new_field.zarr "
                              "--out runs/periodic-s42/new_field")
    p.add_argument("run", help="a finished fine-tune, `astrom3 baseline` or `astrom3 ensemble` run directory")
    p.add_argument("--store", required=True, help="the store whose objects to classify")
    p.add_argument("--out", required=True, help="directory for predictions.csv and metrics.json")
    p.add_argument("--train-store", help="where the run's training store is now, if it moved (default: the "
                                         "path the run recorded)")
    p.add_argument("--threads", type=positive_int, default=1, help="CPU threads (default 1)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="objects per forward pass (default 256)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from ..train.predict import predict

    out = predict(args.run, args.store, args.out, args.train_store, args.threads, args.batch_size,
                  not args.no_progress)
    print_json({"objects": out["all"]["n"], "predicted": out["all"]["predicted"]}
               | ({"scored_macro_f1": out["scored"]["macro_f1"], "scored_accuracy": out["scored"]["accuracy"]}
                  if "scored" in out else {}))
    return 0
