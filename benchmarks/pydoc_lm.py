"""Language models on real English text that ships with Python (``python -m benchmarks pydoc-lm``).

The corpus is ``pydoc_data.topics`` (:mod:`benchmarks.pydoc_text`: split by topic, characters or PTB-style words;
its Python version and SHA-256 go into every report). For each cell (LSTM, GRU), width m and seed, a language model
(embedding, one or more recurrent layers, a linear decoder, untied or tied to the embedding) is trained with Adam and
the one-cycle schedule, keeping the epoch of best validation perplexity; it must meet the preset's floor on the
validation split (bits per character, or word perplexity) for its rows to count. Each trained model is pruned to every k by every method of
:data:`benchmarks.demo.METHOD_TABLE` (one covariance pass over calibration windows of the training text, every layer of
a stack measured on the original network) and by the published criteria of :data:`benchmarks.reproduce.CRITERION_TABLE`
that apply to its units (APoZ counts ReLU zeros and is left out: these are LSTM/GRU models). Each pruned model is
measured as pruned and (for the methods of :data:`FINETUNED`) after ``finetune_epochs`` of fine-tuning, and a dense
model of width k is trained from scratch with the full model's budget. Rows record validation and test bits per token,
parameters, multiply-accumulates per token and the measured inference speed (tokens per second on the test stream,
timed once per shape: width and embedding width).

``DIR/pydoc_lm.csv`` (rows keyed by configuration; checkpoints cached; atomic writes) and ``DIR/pydoc_lm.md``
with per-k tables and paired per-seed differences against spectral pruning (95% bootstrap intervals).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from benchmarks.reproduce import CRITERION_TABLE
from benchmarks.runio import ADDED, atomic_write_text, config_key, read_results, train_or_load, write_csv_atomic

__all__ = ["TextLMConfig", "TextPreset", "TEXT_PRESETS", "run_pydoc_lm", "pydoc_lm_report", "bits_per_token"]


@dataclass(frozen=True)
class TextLMConfig:
    """Everything that determines one trained language model."""

    level: str
    cell: str
    hidden: int
    seed: int
    embed: int = 64
    epochs: int = 10
    lr: float = 3e-3
    batch_size: int = 64
    bptt: int = 100
    min_count: int = 3
    python: str = ""  # the corpus changes with the Python version; a model is keyed by it
    num_layers: int = field(default=1, metadata=ADDED)
    tied: bool = field(default=False, metadata=ADDED)  # decoder weight shared with the embedding (embed == hidden)


@dataclass(frozen=True)
class TextPreset:
    """A grid of language models and the pruning settings."""

    name: str
    level: str
    cells: Tuple[str, ...]
    widths: Tuple[int, ...]
    ks: Tuple[int, ...]
    seeds: Tuple[int, ...]
    epochs: int
    floor: float  # validation bits per character (char) or perplexity (word) a full model must reach
    finetune_epochs: int = 1
    embed: int = 64
    bptt: int = 100
    calibration_windows: int = 256
    num_layers: int = 1
    tied: bool = False  # needs embed == every width; a dense model of width k then has embedding width k

    def floor_text(self) -> str:
        return (f"validation bits per character <= {self.floor:g}" if self.level == "char"
                else f"validation perplexity <= {self.floor:g}")


TEXT_PRESETS: Dict[str, TextPreset] = {
    "tiny": TextPreset("tiny", "char", cells=("LSTM",), widths=(16,), ks=(8,), seeds=(0,), epochs=1, floor=8.0,
                       embed=8, calibration_windows=16),
    "char": TextPreset("char", "char", cells=("LSTM", "GRU"), widths=(256,), ks=(32, 64, 128), seeds=(0, 1, 2),
                       epochs=10, floor=2.3),
    # over-parameterised: GRU 512 pruned to the widths of the dense baselines (the cost of a 512-wide LSTM on two
    # cores did not fit the session that made the report)
    "char-wide": TextPreset("char-wide", "char", cells=("GRU",), widths=(512,), ks=(64, 128), seeds=(0, 1, 2),
                            epochs=10, floor=2.3),
    # words (PTB-style: lower case, <unk> below 3 occurrences, <eos> per line; 1,526 words on Python 3.11), windows of
    # 35 tokens as for PTB. Floor and epochs set from one pilot LSTM per preset (seed 0, validation only): the
    # one-layer model reached perplexity 23.5 at its 8th epoch, the two-layer tied one 17.6 at its 5th of 8
    "word": TextPreset("word", "word", cells=("LSTM", "GRU"), widths=(256,), ks=(32, 64, 128), seeds=(0, 1, 2, 3, 4),
                       epochs=8, floor=30.0, bptt=35),
    "word-deep": TextPreset("word-deep", "word", cells=("LSTM", "GRU"), widths=(256,), ks=(64, 128),
                            seeds=(0, 1, 2, 3, 4), epochs=8, floor=30.0, bptt=35, embed=256, num_layers=2, tied=True),
}


#: The published criteria of the classification reports that apply to a language model's LSTM/GRU units (APoZ counts
#: the zeros of ReLU units): (label, criterion of :data:`pruning.criteria.CRITERIA`, reconstruct with A_J).
LM_CRITERIA = tuple(c for c in CRITERION_TABLE if c[1] != "apoz")

#: The methods whose pruned models are also fine-tuned (every method is measured as pruned): spectral pruning with
#: and without its reconstruction and the two simplest baselines with reconstruction, to fit a CPU budget.
FINETUNED = ("spectral", "spectral (no recon.)", "magnitude + recon.", "random + recon.")


def bits_per_token(model, ids: torch.Tensor, bptt: int) -> float:
    """Mean next-token cross-entropy in bits (log2 of the perplexity)."""
    from benchmarks.language import perplexity

    return math.log2(perplexity(model, ids, bptt=bptt))


def _speed(model, ids: torch.Tensor, bptt: int, repeats: int = 3) -> float:
    """Tokens per second of a forward pass over the test stream (batch 64, the best of ``repeats``)."""
    from benchmarks.language import bptt_batches

    windows = list(bptt_batches(ids, 64, bptt))
    best = math.inf
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for x, _ in windows:
                model(x)
            best = min(best, time.perf_counter() - t0)
    return sum(x.numel() for x, _ in windows) / best


def _new_model(lc: TextLMConfig, vocab: int):
    from benchmarks.language import RNNLanguageModel

    torch.manual_seed(lc.seed)
    return RNNLanguageModel(vocab, lc.embed, lc.hidden, cell=lc.cell, num_layers=lc.num_layers, tied=lc.tied)


def _train(model, lc: TextLMConfig, corpus, path: Path, epochs: int, progress: bool):
    from benchmarks.language import train_language_model

    return train_or_load(model, path, lambda: train_language_model(
        model, corpus.train, epochs=epochs, lr=lc.lr, batch_size=lc.batch_size, bptt=lc.bptt, seed=lc.seed,
        progress=progress, val=corpus.valid, schedule="onecycle"))[0]


def _model_rows(preset: TextPreset, lc: TextLMConfig, out: str, progress: bool = False) -> List[Dict]:
    """Every row of one trained model, on one torch thread (here or in a worker alike): the full model, each method
    at each k before and after fine-tuning, and the dense models of width k."""
    from benchmarks.training import torch_threads

    with torch_threads(1):
        return _model_rows_here(preset, lc, Path(out), progress)


def _model_rows_here(preset: TextPreset, lc: TextLMConfig, out: Path, progress: bool) -> List[Dict]:
    from benchmarks.demo import METHOD_TABLE
    from benchmarks.language import bptt_batches, train_language_model
    from benchmarks.pydoc_text import pydoc_corpus
    from pruning import layer_covariances, spectral_prune
    from pruning.criteria import prune_by_criterion
    from pruning.modules import as_layers, count_macs, count_parameters

    ck = out / "checkpoints"
    corpus = pydoc_corpus(lc.level)
    t0 = time.perf_counter()
    model = _train(_new_model(lc, corpus.vocab_size), lc, corpus, ck / f"lm-{config_key(lc)}.pt", lc.epochs,
                   progress)
    base = dict(model_key=config_key(lc), corpus=corpus.name, level=lc.level, cell=lc.cell, hidden=lc.hidden,
                seed=lc.seed, python=lc.python)

    # models of the same shapes run alike: time the forward pass once per shape (a pruned tied model keeps the full
    # embedding width, the dense model of width k of a tied preset has embedding width k)
    speeds: Dict[Tuple[int, ...], float] = {}

    def row(method: str, k: int, net, finetuned: bool, seconds: float, val: bool = False) -> Dict:
        shape = (k, net.embedding.embedding_dim)
        if shape not in speeds:
            speeds[shape] = _speed(net, corpus.test, lc.bptt)
        return dict(base, row_key=f"{config_key(lc)}-{method}-{k}-{int(finetuned)}-{preset.finetune_epochs}",
                    method=method, k=k, finetuned=int(finetuned),
                    val_bits=bits_per_token(net, corpus.valid, lc.bptt) if val else math.nan,
                    test_bits=bits_per_token(net, corpus.test, lc.bptt),
                    params=count_parameters(net.embedding, net.rnn, net.readout),
                    macs_per_token=count_macs(net.rnn, 1, net.readout),
                    tokens_per_s=speeds[shape], seconds=seconds)

    rows = [row("full network", lc.hidden, model, False, time.perf_counter() - t0, val=True)]
    windows = list(bptt_batches(corpus.train, 32, lc.bptt))[:-1]
    calib = torch.cat([x for x, _ in windows])[: preset.calibration_windows]
    # one pass for every layer of the original network (a stack is pruned with these: covariance_mode "original")
    grid = layer_covariances(as_layers(model.rnn), calib, input_transform=model.rnn_inputs)
    scores = _criterion_scores(model, calib, torch.cat([y for _, y in windows])[: preset.calibration_windows])
    for k in preset.ks:
        prunings = [(label, lambda method=method, recon=recon: spectral_prune(
            model, None, k, covariance=grid, method=method, reconstruct=recon, seed=lc.seed).model)
            for label, method, recon in METHOD_TABLE]
        prunings += [(label, lambda crit=crit, recon=recon: prune_by_criterion(
            model, None, k, method=crit, reconstruct=recon, scores=scores[crit], covariance=grid).model)
            for label, crit, recon in LM_CRITERIA]
        for label, prune in prunings:
            t1 = time.perf_counter()
            pruned = prune()
            rows.append(row(label, k, pruned, False, time.perf_counter() - t1))
            if preset.finetune_epochs and label in FINETUNED:
                tuned = copy.deepcopy(pruned)
                t1 = time.perf_counter()
                train_language_model(tuned, corpus.train, epochs=preset.finetune_epochs, lr=lc.lr / 3,
                                     batch_size=lc.batch_size, bptt=lc.bptt, seed=lc.seed, progress=False)
                rows.append(row(label, k, tuned, True, time.perf_counter() - t1))
        t1 = time.perf_counter()
        # keyed by the dense model's own configuration: every width m pruned to k shares it
        dense_lc = replace(lc, hidden=k, embed=k if lc.tied else lc.embed)
        dense = _train(_new_model(dense_lc, corpus.vocab_size), dense_lc, corpus,
                       ck / f"lm-dense-{config_key(dense_lc)}.pt", lc.epochs, progress)
        rows.append(row("dense from scratch", k, dense, False, time.perf_counter() - t1, val=True))
    return rows


def _criterion_scores(model, tokens: torch.Tensor, targets: torch.Tensor) -> Dict[str, list]:
    """The scores of every criterion of :data:`LM_CRITERIA` on the calibration windows (token ids, and the next token
    of every step for the Taylor criterion's loss: the model's own next-token cross-entropy at every step)."""
    from pruning.criteria import CRITERIA

    with torch.no_grad():
        inputs = model.rnn_inputs(tokens)
    return {crit: CRITERIA[crit].scores((model.rnn, model.readout), inputs, targets=targets, steps="all")
            for crit in dict.fromkeys(c for _, c, _ in LM_CRITERIA)}


def _configs(preset: TextPreset) -> List[TextLMConfig]:
    import sys

    py = sys.version.split()[0]
    return [TextLMConfig(preset.level, cell, m, seed, embed=preset.embed, epochs=preset.epochs, bptt=preset.bptt,
                         python=py, num_layers=preset.num_layers, tied=preset.tied)
            for cell in preset.cells for m in preset.widths for seed in preset.seeds]


def run_pydoc_lm(preset: TextPreset, out, *, workers: int = 1, progress: bool = False,
                 log: Callable[[str], None] = print) -> List[Dict]:
    """Run every model of ``preset`` not yet in ``DIR/pydoc_lm.csv``, then write the report."""
    from benchmarks.executor import run_here_or_in_workers

    out = Path(out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    path = out / "pydoc_lm.csv"
    rows = read_results(path)
    have = {r["model_key"] for r in rows}
    todo = {config_key(lc): lc for lc in _configs(preset) if config_key(lc) not in have}
    log(f"pydoc-lm: {len(todo)} language models to run")
    t0 = time.perf_counter()

    def merge(key, new):
        nonlocal rows
        rows = [r for r in rows if r["model_key"] != key] + new
        write_csv_atomic(path, rows)
        lc = todo[key]
        log(f"{lc.cell} m={lc.hidden} seed={lc.seed}: full validation {new[0]['val_bits']:.3f} bits/token "
            f"({time.perf_counter() - t0:.0f} s)")

    bars = progress and workers <= 1  # a worker's bars would interleave in the parent's terminal
    run_here_or_in_workers({key: (_model_rows, (preset, lc, str(out), bars)) for key, lc in todo.items()}, merge,
                           workers=workers, log=log)
    pydoc_lm_report(out, preset)
    return rows


def _architecture(preset: TextPreset) -> str:
    layers = "One-layer models" if preset.num_layers == 1 else f"{preset.num_layers}-layer models"
    decoder = ("decoder tied to the embedding (untied once pruned: it becomes V A; a dense model of width k has "
               "embedding width k)" if preset.tied else "untied decoder")
    return f"{layers}, embedding {preset.embed}, {decoder}"


def pydoc_lm_report(out, preset: TextPreset) -> Path:
    """``DIR/pydoc_lm.md`` from ``DIR/pydoc_lm.csv``: floors, per-k tables and paired differences."""
    from benchmarks.paired import paired_difference
    from benchmarks.pydoc_text import pydoc_provenance

    out = Path(out)
    rows = [r for r in read_results(out / "pydoc_lm.csv") if r["level"] == preset.level]
    if not rows:
        raise ValueError(f"out: {out / 'pydoc_lm.csv'} has no {preset.level}-level rows yet")
    prov = pydoc_provenance()
    unit = "bits per character" if preset.level == "char" else "bits per word"
    met = lambda r: (r["val_bits"] <= preset.floor if preset.level == "char" else 2 ** r["val_bits"] <= preset.floor)
    lines = [f"# Language models on pydoc text ({preset.level} level)", "",
             f"Corpus: `pydoc_data.topics` of Python {prov['python']} (SHA-256 `{prov['sha256'][:16]}...`), split "
             f"by topic; {unit} (log2 perplexity) on the validation and test splits. {_architecture(preset)}, "
             f"{preset.epochs} epochs of Adam (one-cycle, lr 3e-3, batch 64, "
             f"windows of {preset.bptt} tokens), best validation epoch kept. Pruned models are measured as pruned "
             f"and after {preset.finetune_epochs} epoch(s) of fine-tuning (lr 1e-3); dense models of width k get "
             f"the full model's training. Floor: {preset.floor_text()}.", ""]
    fulls = [r for r in rows if r["method"] == "full network"]
    lines += ["| cell | m | seed | validation | test | floor met |", "|---|---|---|---|---|---|"]
    for r in sorted(fulls, key=lambda r: (r["cell"], r["hidden"], r["seed"])):
        lines.append(f"| {r['cell']} | {r['hidden']} | {r['seed']} | {r['val_bits']:.3f} | {r['test_bits']:.3f} | "
                     f"{'yes' if met(r) else '**no**'} |")
    lines.append("")
    ok = {r["model_key"] for r in fulls if met(r)}
    counted = [r for r in rows if r["model_key"] in ok or (r["method"] == "dense from scratch")]
    for cell in dict.fromkeys(r["cell"] for r in counted):
        for m in sorted({r["hidden"] for r in counted if r["cell"] == cell}):
            mine = [r for r in counted if r["cell"] == cell and r["hidden"] == m]
            seeds = sorted({r["seed"] for r in mine if r["model_key"] in ok})
            lines += [f"## {cell}, m = {m} ({len(seeds)} seeds meeting the floor)", "",
                      f"Test {unit}, mean over seeds; the paired difference is method minus spectral pruning per seed "
                      f"(95% bootstrap interval; a method is better or worse only where it excludes 0).", ""]
            for ft in (0, 1):
                lines += [f"### {'after fine-tuning' if ft else 'as pruned (no retraining)'}", "",
                          "| k | method | test | difference vs spectral | params | MACs/token | tokens/s |",
                          "|---|---|---|---|---|---|---|"]
                for k in sorted({r["k"] for r in mine if r["method"] != "full network"}):
                    spec = {r["seed"]: r for r in mine if r["method"] == "spectral" and r["k"] == k
                            and r["finetuned"] == ft}
                    methods = [mm for mm in dict.fromkeys(r["method"] for r in mine)
                               if mm != "full network"]
                    for method in methods:
                        sel = {r["seed"]: r for r in mine if r["method"] == method and r["k"] == k
                               and (r["finetuned"] == ft or method == "dense from scratch") and r["seed"] in seeds}
                        if not sel:
                            continue
                        common = [s for s in seeds if s in sel and s in spec]
                        diff = ""
                        if method != "spectral" and len(common) >= 2:
                            d = paired_difference([sel[s]["test_bits"] for s in common],
                                                  [spec[s]["test_bits"] for s in common])
                            diff = f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
                        vals = list(sel.values())
                        lines.append(f"| {k} | {method} | {np.mean([v['test_bits'] for v in vals]):.3f} | {diff} | "
                                     f"{vals[0]['params']} | {vals[0]['macs_per_token']} | "
                                     f"{np.median([v['tokens_per_s'] for v in vals]):.3g} |")
                lines.append("")
            full_mine = [r for r in fulls if r["cell"] == cell and r["hidden"] == m and r["model_key"] in ok]
            if full_mine:
                lines += [f"Full network: test {np.mean([r['test_bits'] for r in full_mine]):.3f}, "
                          f"{full_mine[0]['params']} parameters, {full_mine[0]['macs_per_token']} MACs/token, "
                          f"{np.median([r['tokens_per_s'] for r in full_mine]):.3g} tokens/s.", ""]
    path = out / "pydoc_lm.md"
    atomic_write_text(path, "\n".join(lines))
    return path
