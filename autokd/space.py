"""Search spaces: data that says what the search may choose, and how a sample becomes a Candidate.

A space is a YAML file (``search_spaces/<name>.yaml``; format and names in
``search_spaces/README.md``)::

    description: resnet56 teacher -> CIFAR-ResNet students
    teacher: resnet56                  # informative; a registered model name
    params:                            # name -> Optuna distribution in Optuna's JSON form
      student/arch:  {name: CategoricalDistribution, attributes: {choices: [resnet20, resnet32]}}
      student/width: {name: FloatDistribution, attributes: {low: 0.5, high: 1.0, step: 0.125, log: false}}
      kd/lambda/t3->s2: {name: FloatDistribution, attributes: {low: 0.0, high: 1.0, step: null, log: false}}
    fixed:                             # optional: name -> constant; wins over params
      kd/loss: vid

Each ``params`` entry goes through ``optuna.distributions.json_to_distribution``, so anything
Optuna reads is accepted (Float/Int/CategoricalDistribution, and its abbreviated
``{type: float, low: .., high: ..}`` form). A name in ``fixed`` is taken out of the sampled
distributions. Every problem raises :class:`SpaceError`: one line naming the file and the key.

Parameter names -> :class:`~autokd.trial.Candidate` fields: see ``_RULES``. Sampling does no
work: :func:`suggest` and :func:`params_to_candidate` touch no tensors.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from numbers import Real
from pathlib import Path
from typing import Any, Mapping

import optuna
import yaml
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution, distribution_to_json, json_to_distribution)

from .errors import UserError
from .candidate import BLOCK_RULES, GLOBAL_METHODS, INITS, MAX_RATIO, PAIRING_NAMES, PRUNE_AT, Candidate

SPACES_ENV = "AUTOKD_SPACES"  # os.pathsep-separated folders searched before the shipped one
TOP_LEVEL = ("description", "teacher", "params", "fixed", "warm_start")
# Kept here as data (not imported from the registries) so that loading a space stays light;
# tests/test_space.py checks they match autokd.prune.CRITERIA, autokd.distill's registries.
PRUNE_METHODS = ("l1", "bn", "taylor", "learned-mask", *GLOBAL_METHODS)
KD_LOSSES = ("vid", "fitnet", "at")
SCHEDULES = ("one-stage", "two-stage")


class SpaceError(UserError):
    """A search space that cannot be used; ``str(err)`` is one line naming the file and the key."""


# ------------------------------------------------------------------ parameter names
@dataclass(frozen=True)
class _Rule:
    """One parameter name pattern: which Candidate field it sets and which values it takes."""

    pattern: str                      # as shown to users
    regex: str
    field: str                        # Candidate field
    kind: str                         # "name" (a string from `allowed`), "bool" or "number"
    allowed: tuple[str, ...] = ()     # kind "name"; empty: a registered model
    low: float = -math.inf            # kind "number": the accepted interval
    high: float = math.inf
    open_low: bool = False

    def problem(self, v: object) -> str | None:
        """Why ``v`` is not a value of this parameter, or None."""
        if self.kind == "bool":
            return None if isinstance(v, bool) else f"{v!r} is not a boolean (true / false)"
        if self.kind == "name":
            names = self.allowed or tuple(_models())
            if isinstance(v, str) and v in names:
                return None
            what = "one of" if self.allowed else "a registered model; choose from"
            return f"{v!r} is not {what}: {', '.join(names)}"
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v):
            return f"{v!r} is not a finite number"
        if v < self.low or (self.open_low and v == self.low) or v > self.high:  # type: ignore[operator]  # numbers.Real has no typed comparisons
            return f"{v!r} must be {self.range_text()}"
        return None

    def range_text(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"

    def values_text(self) -> str:
        if self.kind == "bool":
            return "true / false"
        return ", ".join(self.allowed) if self.allowed else "registered model names"


_RULES = (
    _Rule("student/arch", r"student/arch", "student", "name"),
    _Rule("student/init", r"student/init", "init", "name", INITS),
    _Rule("student/blocks", r"student/blocks", "blocks", "name", BLOCK_RULES),
    _Rule("student/width", r"student/width", "width", "number", low=0.0, open_low=True),
    _Rule("prune/method", r"prune/method", "prune_method", "name", PRUNE_METHODS),
    _Rule("prune/at", r"prune/at", "prune_at", "name", PRUNE_AT),
    _Rule("prune/steps", r"prune/steps", "prune_steps", "number", low=1.0),
    _Rule("prune/<stage|layer|*>", r"prune/(\*|[A-Za-z_][\w.]*)", "prune", "number", low=0.0, high=MAX_RATIO),
    _Rule("kd/lambda/t<i>->s<j>", r"kd/lambda/(t[1-9]\d*->s[1-9]\d*)", "lambdas", "number", low=0.0),
    # the reduced form of the lambdas: one named pairing and one weight (not with kd/lambda/*)
    _Rule("kd/pairs", r"kd/pairs", "pairs", "name", PAIRING_NAMES),
    _Rule("kd/pair_weight", r"kd/pair_weight", "pair_weight", "number", low=0.0),
    _Rule("kd/loss", r"kd/loss", "kd_loss", "name", KD_LOSSES),
    _Rule("kd/beta", r"kd/beta", "beta", "number", low=0.0, high=1.0),
    _Rule("kd/temperature", r"kd/temperature", "temperature", "number", low=0.0, open_low=True),
    _Rule("kd/alpha", r"kd/alpha", "kd_alpha", "number", low=0.0, high=1.0),
    _Rule("kd/schedule", r"kd/schedule", "schedule", "name", SCHEDULES),
    _Rule("kd/stage1_fraction", r"kd/stage1_fraction", "stage1_fraction", "number", low=0.0, high=1.0),
    _Rule("kd/align_teacher", r"kd/align_teacher", "align_teacher", "bool"),
    _Rule("kd/curriculum", r"kd/curriculum", "curriculum", "bool"),
    _Rule("train/lr", r"train/lr", "lr", "number", low=0.0, open_low=True),
    _Rule("train/finetune_lr", r"train/finetune_lr", "finetune_lr", "number", low=0.0, open_low=True),
    # a search parameter, not a Candidate field: the space's prune/<key> are a shape, put on this share
    # of the budget by bisection (autokd.search.budget.project_candidate)
    _Rule("budget/share", r"budget/share", "", "number", low=0.0, high=1.0, open_low=True),
)


def _models() -> list[str]:
    from .models import MODELS

    return MODELS.names()


def _rule_for(name: object, where: str) -> tuple[_Rule, str | None]:
    """The rule of a parameter name and its dict key (prune stage, λ pair), or SpaceError."""
    if isinstance(name, str):
        for rule in _RULES:
            m = re.fullmatch(rule.regex, name)
            if m:
                return rule, (m.group(1) if m.groups() else None)
        if name.startswith("kd/lambda/"):
            raise SpaceError(f"{where}{name}: a lambda key must be kd/lambda/t<i>->s<j> with i, j >= 1 "
                             "(teacher point i, student point j, counted from 1, shallow to deep)")
    known = ", ".join(r.pattern for r in _RULES)
    raise SpaceError(f"{where}unknown parameter {name!r}; known names: {known}")


# ------------------------------------------------------------------ the space
@dataclass(frozen=True)
class SearchSpace:
    name: str                                        # file stem
    path: str
    teacher: str | None                              # informative: the teacher family it is for
    description: str
    distributions: dict[str, BaseDistribution]       # sampled; what `study.ask` takes
    fixed: dict[str, Any]                            # constants, applied over every sample (each checked by its rule)
    warm_start: dict[str, dict[str, object]] = field(default_factory=dict)  # name -> params, enqueued first

    def min_cost_candidates(self) -> list[dict]:
        """Params dicts of the cheapest corners: for each student/arch (and student/init) choice,
        the lowest student/width and every prune/<stage|layer|*> at its highest ratio. If none fits a
        budget, no sample can (cost falls with width and with every ratio), so the search checks
        them before training anything. Names in ``fixed`` are left to :func:`params_to_candidate`."""
        d = self.distributions
        corner: dict[str, object] = {}
        if "student/width" in d:
            corner["student/width"] = _extreme(d["student/width"], lowest=True)
        for name, dist in d.items():
            if _rule_for(name, "")[0].field == "prune":
                corner[name] = _extreme(dist, lowest=False)
        corners = [corner]
        for name in ("student/arch", "student/init"):  # every architecture, built either way
            if name in d:
                corners = [{**c, name: v} for c in corners for v in choices_of(d[name])]
        return corners


def choices_of(dist: BaseDistribution) -> tuple[Any, ...]:
    """A categorical parameter's values (the rules make ``student/arch`` and ``student/init`` categorical)."""
    assert isinstance(dist, CategoricalDistribution), dist
    return dist.choices


def low_of(dist: BaseDistribution) -> float:
    """A numeric parameter's low end."""
    assert isinstance(dist, (FloatDistribution, IntDistribution)), dist
    return dist.low


def _extreme(dist: BaseDistribution, *, lowest: bool) -> object:
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        return dist.low if lowest else dist.high
    pick = min if lowest else max
    return pick(choices_of(dist))


# ------------------------------------------------------------------ loading
class _SafeUniqueLoader(yaml.SafeLoader):
    """yaml's SafeLoader (plain data, no tags that build objects) that rejects a key given twice,
    which plain safe_load resolves silently to the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden below it
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def spaces_dirs() -> list[Path]:
    """Folders searched for a space by name: $AUTOKD_SPACES (os.pathsep-separated), then the
    shipped ``search_spaces/``: next to the package in a checkout (or an editable install), else
    where a regular install puts it (``<prefix>/share/autokd/search_spaces``, pyproject's data-files)."""
    import sys

    extra = [Path(p) for p in os.environ.get(SPACES_ENV, "").split(os.pathsep) if p]
    checkout = Path(__file__).resolve().parent.parent / "search_spaces"
    installed = Path(sys.prefix) / "share" / "autokd" / "search_spaces"
    return extra + [checkout if checkout.is_dir() else installed]


def shipped_spaces() -> list[str]:
    """Names (file stems) of the spaces :func:`load_space` finds by name."""
    return sorted({p.stem for d in spaces_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def _locate(path_or_name: str | Path) -> Path:
    text = str(path_or_name)
    as_path = Path(text).expanduser()
    if isinstance(path_or_name, Path) or as_path.exists() or "/" in text or as_path.suffix in (".yaml", ".yml"):
        if as_path.is_file():
            return as_path
        what = "is a folder" if as_path.is_dir() else "does not exist"
        raise SpaceError(f"search space file {text} {what}; shipped spaces: {', '.join(shipped_spaces())}")
    for folder in spaces_dirs():
        if (folder / f"{text}.yaml").is_file():
            return folder / f"{text}.yaml"
    raise SpaceError(f"no search space {text!r}: not a file and not a shipped space "
                     f"(shipped: {', '.join(shipped_spaces())}; ${SPACES_ENV} adds folders)")


def load_space(path_or_name: str | Path) -> SearchSpace:
    """Read and validate a space from a YAML path or a shipped name (see :func:`spaces_dirs`)."""
    path = _locate(path_or_name)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SafeUniqueLoader)
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError(f"{path}: cannot read the search space ({e.__class__.__name__}: {e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise SpaceError(_one_line(f"{path}: not valid YAML ({problem}{at})")) from None
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: expected a mapping with keys {', '.join(TOP_LEVEL)}; "
                         f"got {type(data).__name__}")
    for key in data:
        if key not in TOP_LEVEL:
            raise SpaceError(f"{path}: unknown top-level key {key!r}; allowed: {', '.join(TOP_LEVEL)}")
    if not isinstance(data.get("params"), dict):
        raise SpaceError(f"{path}: params: expected a mapping of parameter name -> Optuna distribution")
    description, teacher = data.get("description", ""), data.get("teacher")
    if not isinstance(description, str):
        raise SpaceError(f"{path}: description: expected text, got {type(description).__name__}")
    if teacher is not None and (not isinstance(teacher, str) or teacher not in _models()):
        raise SpaceError(f"{path}: teacher: {teacher!r} is not a registered model; "
                         f"choose from {', '.join(_models())}")
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SpaceError(f"{path}: fixed: expected a mapping of parameter name -> value")

    dists: dict[str, BaseDistribution] = {}
    for name, entry in data["params"].items():
        rule, _ = _rule_for(name, f"{path}: ")
        dists[name] = _parse_distribution(entry, rule, f"{path}: {name}: ")
    for name, value in fixed.items():
        rule, _ = _rule_for(name, f"{path}: fixed: ")
        problem = rule.problem(value)
        if problem:
            raise SpaceError(f"{path}: fixed: {name}: {problem}")
    names = set(dists) | set(fixed)
    if "kd/pairs" in names and any(n.startswith("kd/lambda/") for n in names):
        raise SpaceError(f"{path}: kd/pairs replaces the kd/lambda/<pair> weights: give one or the other")
    dists = {k: v for k, v in dists.items() if k not in fixed}
    warm = _warm_start(data.get("warm_start"), dists, f"{path}: warm_start: ")
    return SearchSpace(name=path.stem, path=str(path), teacher=teacher, description=description,
                       distributions=dists, fixed=dict(fixed), warm_start=warm)


def _warm_start(entries: object, dists: dict[str, BaseDistribution], where: str) -> dict[str, dict[str, object]]:
    """``warm_start: {NAME: {param: value, ...}}``: settings enqueued as a new study's first trials
    (the parameters they leave out are sampled). Each value must be one its distribution can take."""
    if entries is None:
        return {}
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise SpaceError(f"{where}expected a mapping of name -> {{parameter: value}}")
    out: dict[str, dict[str, object]] = {}
    for name, params in entries.items():
        for key, value in params.items():
            if key not in dists:
                raise SpaceError(f"{where}{name}: {key} is not a sampled parameter of this space")
            try:
                ok = dists[key]._contains(dists[key].to_internal_repr(value))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise SpaceError(f"{where}{name}: {key}={value!r} is outside its distribution")
        out[str(name)] = dict(params)
    return out


def _parse_distribution(entry: object, rule: _Rule, where: str) -> BaseDistribution:
    """One params entry -> an Optuna distribution whose every value ``rule`` accepts."""
    if not isinstance(entry, dict):
        raise SpaceError(f"{where}expected an Optuna distribution like "
                         f"{{name: FloatDistribution, attributes: {{low: .., high: ..}}}}, got {entry!r}")
    attrs = entry.get("attributes", entry)
    if isinstance(attrs, dict):
        for key in ("low", "high", "step"):
            v = attrs.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v)):
                hint = " (YAML reads 1e-2 as text: write 1.0e-2)" if _numeric_text(v) else ""
                raise SpaceError(f"{where}{key}={v!r} is not a finite number{hint}")
        low, high = attrs.get("low"), attrs.get("high")
        if isinstance(low, Real) and isinstance(high, Real) and low > high:
            raise SpaceError(f"{where}low {low} is above high {high}")
        if "choices" in attrs and not isinstance(attrs["choices"], list):
            raise SpaceError(f"{where}choices must be a list, got {attrs['choices']!r}")
    try:
        dist = json_to_distribution(json.dumps(entry))
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        if isinstance(e, ValueError) and "Unknown distribution" in str(e):
            raise SpaceError(f"{where}{e}; use FloatDistribution, IntDistribution or "
                             "CategoricalDistribution") from None
        detail = f"missing {e}" if isinstance(e, KeyError) else str(e).replace(".__init__()", "")
        raise SpaceError(_one_line(f"{where}not an Optuna distribution: {detail}")) from None
    if isinstance(dist, CategoricalDistribution):
        values: tuple = dist.choices
    elif rule.kind == "number" and isinstance(dist, (FloatDistribution, IntDistribution)):
        values = (dist.low, dist.high)
    else:
        raise SpaceError(f"{where}must be a CategoricalDistribution of {rule.values_text()}")
    for v in values:
        problem = rule.problem(v)
        if problem:
            raise SpaceError(f"{where}{problem}")
    return dist


def _numeric_text(v: object) -> bool:
    try:
        return isinstance(v, str) and math.isfinite(float(v))
    except ValueError:
        return False


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------ a space as data again
def space_data(space: SearchSpace) -> dict:
    """The plain data :func:`load_space` reads back into ``space`` (distributions in Optuna's JSON form)."""
    data: dict[str, object] = {"description": space.description}
    if space.teacher is not None:
        data["teacher"] = space.teacher
    data["params"] = {name: json.loads(distribution_to_json(d)) for name, d in space.distributions.items()}
    if space.fixed:
        data["fixed"] = dict(space.fixed)
    if space.warm_start:
        data["warm_start"] = {name: dict(params) for name, params in space.warm_start.items()}
    return data


def write_space(space: SearchSpace, path: Path) -> Path:
    """``space`` as a YAML file that :func:`load_space` reads back to the same space (temp file + rename)."""
    path = Path(path)
    text = f"# search space {space.name} (from {space.path}), as a search used it\n"
    text += yaml.safe_dump(space_data(space), sort_keys=False, width=120)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def fix_params(space: SearchSpace, values: Mapping[str, object]) -> SearchSpace:
    """``space`` with ``values`` fixed: taken out of the sampled distributions and the warm starts."""
    fixed = {**space.fixed, **values}
    return replace(space, fixed=fixed,
                   distributions={k: v for k, v in space.distributions.items() if k not in fixed},
                   warm_start={n: {k: v for k, v in p.items() if k not in fixed} for n, p in space.warm_start.items()})


# ------------------------------------------------------------------ sample -> Candidate
def params_to_candidate(params: Mapping[str, object], *, fixed: Mapping[str, object],
                        base: Candidate) -> Candidate:
    """``base`` with every name of ``params`` and ``fixed`` (fixed wins) set on its field.

    prune/<key> and kd/lambda/<pair> fill the ``prune`` and ``lambdas`` dicts; when the names
    give any key of a dict, that dict replaces base's (base's is kept otherwise). λ pairs beyond
    the chosen student's or the teacher's points are kept here and ignored by the trial, so one
    space can serve students of different depths. Numbers are rounded to 12 significant digits,
    so a stepped sample reads 0.15, not 0.15000000000000002 (which can cut one channel less at a
    rounding edge). ``prune/method: learned-mask`` implies ``prune_at = "during"`` whatever
    ``prune/at`` says (the masks are learned while distilling), and so does ``global-bn`` for a
    student from scratch (its BN scales are all 1 until it trains); ``student/init: teacher`` with any
    other method implies ``prune_at = "start"`` (an inherited student is pruned, then fine-tuned);
    ``prune_at = "during"`` implies ``prune_steps = 1``, and ``prune_steps`` is capped at the
    candidate's epochs (one step an epoch). Pure: touches no tensors.
    """
    changes: dict[str, Any] = {}
    dicts: dict[str, dict[str, float]] = {"prune": {}, "lambdas": {}}
    for name, value in {**params, **fixed}.items():
        rule, key = _rule_for(name, "")
        problem = rule.problem(value)
        if problem:
            raise SpaceError(f"{name}: {problem}")
        if not rule.field:
            continue  # a search parameter (budget/share): the search reads it, the candidate does not
        if rule.field in dicts:
            dicts[rule.field][str(key)] = _tidy(value)
        else:
            changes[rule.field] = _tidy(value, rule.field) if rule.kind == "number" else value
    changes.update({f: d for f, d in dicts.items() if d})
    if changes.get("prune_method", base.prune_method) == "learned-mask":
        changes["prune_at"] = "during"  # PDD's masks are learned while distilling: "start" cannot apply
    inherited = changes.get("init", base.init) == "teacher"
    if not inherited and changes.get("prune_method", base.prune_method) == "global-bn":
        changes["prune_at"] = "during"  # a fresh student's BN scales are all 1: nothing to rank at the start
    if inherited and changes.get("prune_method", base.prune_method) != "learned-mask":
        # an inherited student is pruned, then fine-tuned: cut mid-way it has only the schedule's tail
        # to recover, and falls far below the accuracy it had before the cut
        changes["prune_at"] = "start"
    if changes.get("prune_at", base.prune_at) == "during":
        changes["prune_steps"] = 1  # gradual steps start at epoch 0: pruning mid-training is one step
    epochs = changes.get("epochs", base.epochs)
    if isinstance(epochs, int) and epochs >= 1 and changes.get("prune_steps", base.prune_steps) > epochs:
        changes["prune_steps"] = epochs  # one step an epoch: a 1-epoch search of a 1-2 step space prunes at once
    return replace(base, **changes)


INT_FIELDS = ("prune_steps",)  # Candidate fields that count something: their values stay ints


def _tidy(v: object, field: str = "") -> float | int:
    if field in INT_FIELDS:
        return int(v)  # type: ignore[call-overload]
    return float(f"{float(v):.12g}")  # type: ignore[arg-type]


def suggest(trial: optuna.trial.BaseTrial, space: SearchSpace, base: Candidate) -> Candidate:
    """Sample (or read back) every distribution of ``space`` on ``trial``; the Candidate.

    Works for a trial from ``study.ask(space.distributions)`` (values already set), a plain
    ``optuna.Trial`` inside ``study.optimize`` (values sampled now), and a ``FixedTrial``.
    """
    params = {name: _suggest_one(trial, name, dist) for name, dist in space.distributions.items()}
    return params_to_candidate(params, fixed=space.fixed, base=base)


def _suggest_one(trial: optuna.trial.BaseTrial, name: str, dist: BaseDistribution) -> object:
    # Trial, FrozenTrial and FixedTrial all take the distribution object itself, which keeps the
    # exact class (suggest_float would record a FloatDistribution even for a legacy
    # UniformDistribution and then clash with the one study.ask stored).
    if hasattr(trial, "_suggest"):
        return trial._suggest(name, dist)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_categorical(name, choices_of(dist))


__all__ = ["SearchSpace", "SpaceError", "load_space", "shipped_spaces", "space_data", "write_space", "fix_params",
           "params_to_candidate", "suggest", "spaces_dirs"]
