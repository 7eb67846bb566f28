"""Train the splitter's open-vocabulary setting classifier (`engine.setting_classifier`).

    python -m flexcache.engine.train_splitter            # writes data/setting_classifier.json
    python -m flexcache.engine.train_splitter --check    # cross-validation only, writes nothing

The training set is the hand-written phrases of ``data/setting_phrases.json``
(classes place, time, style, other) plus the lexicon's setting nouns (places
and backdrops as place; times, weather and light as time). Short phrases also
appear once more behind an adjective drawn from a pool shared by every class,
so the head, not the modifier, carries the class. Every phrase is embedded
by `setting_classifier.PhraseEncoder` (the packaged all-MiniLM-L6-v2 cut to
its first ``--layers`` layers, on the CPU) and a softmax regression with
class-balanced loss and an L2 penalty is fitted by L-BFGS (torch only).

``--check`` reports accuracy under grouped k-fold cross-validation: all phrases
sharing a head word fall in the same fold, so each fold scores heads the model
never saw, which is what the splitter asks of it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch

from flexcache.engine import lexicon as lx
from flexcache.engine.embedder import PACKAGED_MODEL
from flexcache.engine.setting_classifier import CLASSES, DEFAULT_LAYERS, WEIGHTS_RESOURCE, PhraseEncoder

PHRASES_RESOURCE = "data/setting_phrases.json"
DEFAULT_L2 = 1e-4


def _package_file(name: str) -> Path:
    return Path(str(resources.files("flexcache.engine").joinpath(name)))


def training_phrases(data: dict, seed: int = 0) -> list[tuple[str, int]]:
    """(phrase, class index) pairs: the hand-written phrases, the lexicon's setting nouns and
    adjective variants of the short ones, without duplicates (first label wins)."""
    rng = random.Random(seed)
    adjectives = list(data["adjectives"])
    seeds = {
        "place": sorted(lx.PLACES | lx.BACKDROPS),
        "time": sorted(lx.TIMES | lx.WEATHER | lx.LIGHT),
    }
    pairs: dict[str, int] = {}
    for index, name in enumerate(CLASSES):
        phrases = list(data[name]) + seeds.get(name, [])
        for phrase in phrases:
            pairs.setdefault(phrase.lower(), index)
        if name in ("place", "other"):
            for phrase in phrases:
                if len(phrase.split()) <= 2:
                    pairs.setdefault(f"{rng.choice(adjectives)} {phrase.lower()}", index)
    return list(pairs.items())


def head_of(phrase: str) -> str:
    """The head word a phrase is grouped by in cross-validation (last word before "of")."""
    words = phrase.split()
    if "of" in words[1:]:
        words = words[: words.index("of", 1)]
    word = words[-1]
    return word[:-1] if word.endswith("s") and len(word) > 3 else word


def fit(x: torch.Tensor, y: torch.Tensor, l2: float = DEFAULT_L2, steps: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax regression weights ``(classes, dim)`` and bias ``(classes,)`` for unit vectors `x`."""
    torch.manual_seed(0)
    n_classes = len(CLASSES)
    counts = torch.bincount(y, minlength=n_classes).clamp(min=1).float()
    class_weight = counts.sum() / (n_classes * counts)
    w = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T + b, y, weight=class_weight) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def cross_validate(phrases: Sequence[str], x: torch.Tensor, y: torch.Tensor, folds: int = 5,
                   l2: float = DEFAULT_L2) -> dict[str, float]:
    """Accuracy (4 classes) and setting-vs-not accuracy over head-grouped folds."""
    heads = sorted({head_of(p) for p in phrases})
    random.Random(1).shuffle(heads)
    fold_of = {h: i % folds for i, h in enumerate(heads)}
    fold = torch.tensor([fold_of[head_of(p)] for p in phrases])
    predicted = torch.empty_like(y)
    for k in range(folds):
        train, held = fold != k, fold == k
        w, b = fit(x[train], y[train], l2)
        predicted[held] = (x[held] @ w.T + b).argmax(-1)
    setting = torch.tensor([CLASSES.index("place"), CLASSES.index("time")])
    is_setting, said_setting = torch.isin(y, setting), torch.isin(predicted, setting)
    scores = {"accuracy": (predicted == y).float().mean().item(),
              "setting_accuracy": (is_setting == said_setting).float().mean().item()}
    for index, name in enumerate(CLASSES):
        scores[f"recall_{name}"] = (predicted[y == index] == index).float().mean().item()
    return scores


def embed(phrases: Sequence[str], layers: int = DEFAULT_LAYERS, batch: int = 64) -> torch.Tensor:
    encoder = PhraseEncoder(layers)
    return torch.cat([encoder.embed(list(phrases[i : i + batch])) for i in range(0, len(phrases), batch)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flexcache.engine.train_splitter", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="cross-validate only; write nothing")
    parser.add_argument("--l2", type=float, default=DEFAULT_L2, help=f"L2 penalty (default {DEFAULT_L2})")
    parser.add_argument("--layers", type=int, default=DEFAULT_LAYERS,
                        help=f"MiniLM layers kept (default {DEFAULT_LAYERS})")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the weights JSON "
                        f"(default: the package's {WEIGHTS_RESOURCE})")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = _package_file(PHRASES_RESOURCE).read_text("utf-8")
    pairs = training_phrases(json.loads(source))
    phrases = [p for p, _ in pairs]
    y = torch.tensor([c for _, c in pairs])
    print(f"{len(phrases)} phrases: " + ", ".join(f"{name} {int((y == i).sum())}" for i, name in enumerate(CLASSES)),
          file=sys.stderr)
    x = embed(phrases, args.layers)
    scores = cross_validate(phrases, x, y, l2=args.l2)
    print("head-grouped 5-fold CV: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()), file=sys.stderr)
    if args.check:
        return 0
    w, b = fit(x, y, args.l2)
    out = args.out or _package_file(WEIGHTS_RESOURCE)
    payload = {
        "_about": "Softmax regression over phrase embeddings (all-MiniLM-L6-v2, first `layers` layers, "
                  "mean-pooled); written by "
                  "`python -m flexcache.engine.train_splitter` (see engine/setting_classifier.py).",
        "model": PACKAGED_MODEL,
        "layers": args.layers,
        "dim": int(x.shape[1]),
        "classes": list(CLASSES),
        "l2": args.l2,
        "trained_on": {"phrases": len(phrases),
                       "sha256": hashlib.sha256(source.encode("utf-8")).hexdigest()},
        "cross_validation": {k: round(v, 4) for k, v in scores.items()},
        "bias": [round(v, 5) for v in b.tolist()],
        "weights": [[round(v, 5) for v in row] for row in w.tolist()],
    }
    out.write_text(json.dumps(payload, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
