"""A candidate student: plain data that defines one student and how it is trained.

What the search samples (``autokd.space``) and what ``autokd distill`` parses from its flags; the
run itself is :mod:`autokd.trial`. Torch-free: sampling and checking a candidate touch no tensors.
Every field's default and help text are the CLI's (``autokd.cli.options``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import UserError
from .fields import knob

PRUNE_AT = ("start", "during")
INITS = ("scratch", "teacher")
BLOCK_RULES = ("even", "first", "last")  # which teacher blocks an inherited shallower student keeps (autokd.inherit)
MAX_RATIO = 0.95  # largest pruning ratio: past it a 16-channel layer keeps 1 channel; no search needs more
LEARNED_MASK = "learned-mask"  # the prune method that learns its masks while distilling (PDD)
# prune methods that rank every layer against the others (Torch-Pruning's global pruning, issue 25;
# autokd.prune.global_rank): group norm (L2), group L1, BN scale, Taylor; the network's MACs are the
# target, and the weights decide each layer's share
GLOBAL_METHODS = ("global-l2", "global-l1", "global-bn", "global-taylor")
GLOBAL_MAX_LAYER = 0.9  # the most of a layer's channels global ranking removes (the outside baseline's bound)
# named pairings (autokd.distill.pairing.PAIRINGS, kept torch-free here): a search can sample one name and
# one weight instead of the T x S lambda_ij: fewer dimensions for a short search
PAIRING_NAMES = ("diag", "deepest", "all", "none")


@dataclass
class Candidate:
    """Everything that defines one student and how it is trained. JSON-able."""

    student: str = knob("resnet20", "the student's zoo architecture, see `autokd models`")
    init: str = knob("scratch", "scratch (random weights) | teacher (copy the trained teacher's layers, then prune)")
    blocks: str = knob("even", "init teacher, a shallower student: which teacher blocks it keeps (even | first | last)")
    width: float = knob(1.0, "student width multiplier; with init teacher: uniform pruning by importance to it")
    prune: dict[str, float] = knob(help="0.4 (every layer) or KEY=RATIO, repeatable", factory=dict)
    prune_method: str = knob("l1", "l1 | bn | taylor | learned-mask (masks learned while distilling, PDD) | "
                                   "global-l2 | global-l1 | global-bn | global-taylor (one ranking across layers)")
    target_macs: int = knob(0, "global-* methods: prune until the student's MACs are at or under this; "
                               "0: the MACs its prune ratios would give (the search sets it from budget/share)")
    prune_at: str = knob("start", "start (prune, then distil) | during (mid-training)")
    prune_steps: int = knob(1, "reach the ratios in this many pruning steps, one an epoch from the start "
                               "(gradual pruning; prune_at start)")
    lambdas: dict[str, float] = knob(help="tI:sJ=W, repeatable: weight of teacher point I -> student point J",
                                     factory=dict)
    pairs: str = knob("", "instead of lambdas: a named pairing resolved on the trial's points, each pair at "
                          "pair_weight: diag (matching depths) | deepest (every student point -> the teacher's "
                          "deepest) | all | none; empty: lambdas as given")
    pair_weight: float = knob(1.0, "with pairs: the weight of every pair (>= 0)")
    kd_loss: str = knob("vid", "feature loss per pair: vid | fitnet | at")
    beta: float = knob(0.5, "task-loss weight in [0, 1]; 1 - beta weighs the feature pairs")
    temperature: float = knob(4.0, "KD temperature T on the logits (> 0)")
    kd_alpha: float = knob(0.5, "share of the soft-target term in the task loss; 0 = labels only, no teacher")
    schedule: str = knob("one-stage", "one-stage | two-stage (classifier first, then distil)")
    stage1_fraction: float = knob(0.3, "two-stage: share of epochs spent stabilising the classifier")
    align_teacher: bool = knob(False, "InDistill: narrow teacher points to the student widths, no regressor")
    curriculum: bool = knob(False, "switch feature pairs on shallow to deep, then the task only")
    # a distilled student, trained once (not a search trial, which ranks candidates in fewer epochs)
    epochs: int = knob(10, "student training epochs")
    lr: float = knob(0.05, "peak learning rate (cosine schedule), for a student trained from scratch")
    # an inherited student is fine-tuned, not trained: on Fashion-MNIST, the teacher pruned to 37 % of its
    # MACs reached 76.9 / 82.6 / 85.4 % at lr 0.05 / 0.02 / 0.005 (2 epochs, 3,000 images, one seed)
    finetune_lr: float = knob(0.005, "peak learning rate for an inherited student (init teacher)")
    seed: int = knob(0, "run seed: init, data order and regressor streams derive from it (autokd.seeds)")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def is_global(c: Candidate) -> bool:
    """Whether ``c`` prunes by one ranking across layers (its MACs the target, not its ratios)."""
    return c.prune_method in GLOBAL_METHODS


def _prunes_globally(c: Candidate) -> bool:
    return c.target_macs > 0 or _prunes(c)


def pruning_text(c: dict) -> str:
    """What a (recorded) candidate's pruning really is, in a few words: ``unpruned`` when no ratio is
    above 0 (whatever method it names), ``global-l2 to 3.14 M MACs``, or ``l1 layer1=0.2,layer3=0.4``
    (the layers at 0 left out)."""
    method = str(c.get("prune_method") or "")
    if method.startswith("global-") and c.get("target_macs"):
        return f"{method} to {int(c['target_macs']) / 1e6:.3g} M MACs"
    ratios = {k: float(v) for k, v in (c.get("prune") or {}).items() if float(v) > 0}
    if not ratios:
        return "unpruned"
    return f"{method} " + ",".join(f"{k}={v:g}" for k, v in ratios.items())


def _prunes(c: Candidate) -> bool:
    return any(isinstance(r, (int, float)) and r > 0 for r in c.prune.values())


def check_candidate(c: Candidate) -> None:
    """Raise a one-line UserError for a value no trial can run with. Torch-free, so every command
    runs it before loading data or training a teacher; names are checked by the registries
    (``autokd.trial.check_names``)."""
    checks = [
        (c.epochs >= 1, f"epochs must be >= 1, got {c.epochs}"),
        (0.0 <= c.beta <= 1.0, f"beta must be in [0, 1], got {c.beta}"),
        (c.temperature > 0, f"temperature must be > 0, got {c.temperature}"),
        (0.0 <= c.kd_alpha <= 1.0, f"kd_alpha must be in [0, 1], got {c.kd_alpha}"),
        (c.lr > 0, f"lr must be > 0, got {c.lr}"),
        (c.finetune_lr > 0, f"finetune_lr must be > 0, got {c.finetune_lr}"),
        (c.width > 0, f"width must be > 0, got {c.width}"),
        (c.pairs in ("", *PAIRING_NAMES), f"pairs must be one of {', '.join(PAIRING_NAMES)} (or empty), got {c.pairs!r}"),
        (not (c.pairs and c.lambdas), "give lambdas or a named pairs, not both"),
        (c.pair_weight >= 0, f"pair_weight must be >= 0, got {c.pair_weight}"),
        (c.init != "teacher" or c.width <= 1, f"width must be <= 1 with init teacher (it prunes), got {c.width}"),
        (0.0 <= c.stage1_fraction <= 1.0, f"stage1_fraction must be in [0, 1], got {c.stage1_fraction}"),
        (c.prune_at in PRUNE_AT, f"prune_at must be one of {', '.join(PRUNE_AT)}, got {c.prune_at!r}"),
        (c.init in INITS, f"init must be one of {', '.join(INITS)}, got {c.init!r}"),
        (c.blocks in BLOCK_RULES, f"blocks must be one of {', '.join(BLOCK_RULES)}, got {c.blocks!r}"),
        (isinstance(c.prune_steps, int) and 1 <= c.prune_steps <= c.epochs,
         f"prune_steps must be in [1, epochs={c.epochs}], got {c.prune_steps!r}"),
        (c.prune_steps == 1 or c.prune_at == "start", "prune_steps > 1 prunes from the start: use prune_at start"),
        (c.prune_method != LEARNED_MASK or c.prune_at == "during" or not _prunes(c),
         "prune_method learned-mask learns its masks while distilling: use prune_at during"),
        (not (c.prune_method == "global-bn" and c.init == "scratch" and c.prune_at == "start" and _prunes_globally(c)),
         "prune_method global-bn ranks BN scales, all 1 in a fresh student: use prune_at during or another method"),
        (isinstance(c.target_macs, int) and not isinstance(c.target_macs, bool) and c.target_macs >= 0,
         f"target_macs must be an integer >= 0, got {c.target_macs!r}"),
        (c.target_macs == 0 or is_global(c),
         f"target_macs applies to the global-* prune methods ({', '.join(GLOBAL_METHODS)}), not {c.prune_method!r}"),
    ]
    for key, ratio in c.prune.items():
        ok = not isinstance(ratio, bool) and isinstance(ratio, (int, float)) and 0.0 <= ratio <= MAX_RATIO
        checks.append((ok, f"pruning ratio {key}={ratio!r} must be a number in [0, {MAX_RATIO}]"))
    for ok, message in checks:
        if not ok:
            raise UserError(message)
