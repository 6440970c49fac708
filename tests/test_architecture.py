"""The shape of the code: imports point downward, every CLI default is its dataclass field's, and
the checks a user can fail run before anything trains."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from autokd.candidate import Candidate
from autokd.cli import app
from autokd.errors import UserError
from autokd.fields import default_of, help_of
from autokd.search import SearchConfig
from autokd.student import DistillJob
from autokd.train import TrainConfig

PACKAGE = Path(__file__).resolve().parent.parent / "autokd"
runner = CliRunner()

# above the search: the modules that read studies (pareto, plots, export) and the CLI
UPPER = ("autokd.search", "autokd.pareto", "autokd.plots", "autokd.export", "autokd.cli")


# ------------------------------------------------------------------ the import graph
def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _targets(node: ast.AST, here: str, is_package: bool, known: set[str]) -> list[str]:
    """autokd modules an import statement loads (``from pkg import sub`` -> the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "autokd"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = here.split(".") if is_package else here.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    if mod.split(".")[0] != "autokd":
        return []
    subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
    return subs if len(subs) == len(node.names) else [mod, *subs]


def import_graph() -> dict[str, set[str]]:
    """module -> the autokd modules it imports, at module level and inside functions (by ``ast``)."""
    mods = _modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            edges.update(t for t in _targets(node, name, path.name == "__init__.py", known) if t != name)
        graph[name] = {e for e in edges if e in known}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
    return out


def test_the_graph_walker_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert "autokd.search.tune" in graph["autokd.search.driver"]          # `from . import tune` in a function
    assert "autokd.search.store" in graph["autokd.pareto"]                # `from .search import store`
    assert "autokd.prune.structure" in graph["autokd.prune.gates"]        # `from .structure import ...`
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_autokd_imports_have_no_cycle():
    assert _cycles(import_graph()) == []


def test_stage_modules_never_import_the_search_or_the_cli():
    graph = import_graph()
    stages = [m for m in graph if m != "autokd" and m != "autokd.__main__" and not m.startswith(UPPER)]
    assert "autokd.trial" in stages and "autokd.prune.cost" in stages and "autokd.space" in stages
    bad = {m: sorted(t for t in graph[m] if t.startswith(UPPER)) for m in stages}
    assert {m: t for m, t in bad.items() if t} == {}


def test_the_search_never_imports_back_up():
    graph = import_graph()
    above = ("autokd.pareto", "autokd.plots", "autokd.export", "autokd.cli")
    bad = {m: sorted(t for t in ts if t.startswith(above)) for m, ts in graph.items() if m.startswith("autokd.search")}
    assert {m: t for m, t in bad.items() if t} == {}


def test_import_autokd_and_the_data_modules_load_no_torch():
    code = ("import sys, autokd, autokd.candidate, autokd.seeds, autokd.fields, autokd.search.config; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ one source for every default
def _commands() -> dict[str, object]:
    return {c.name: c for c in typer.main.get_command(app).commands.values()}


# where each command's options come from, first match wins (DistillJob's candidate: the command's student)
SOURCES = {
    "train": [TrainConfig, DistillJob, Candidate],
    "distill": [DistillJob, DistillJob().candidate],
    "search": [SearchConfig],
}
OWN_HELP = {("train", "width")}  # a teacher's width: the field's help speaks of a student


def _field(sources, name):
    for src in sources:
        cls = src if isinstance(src, type) else type(src)
        if name in cls.__dataclass_fields__:
            return src, cls
    return None, None


@pytest.mark.parametrize("command", sorted(SOURCES))
def test_each_cli_default_is_its_dataclass_fields(command):
    cmd = _commands()[command]
    checked = 0
    for param in cmd.params:
        src, cls = _field(SOURCES[command], param.name)
        if src is None or param.param_type_name != "option" or param.name in ("prune", "lambdas"):  # repeatable flags, parsed into the field
            continue
        want = default_of(src, param.name) if isinstance(src, type) else getattr(src, param.name)
        assert param.default == want, (command, param.name)
        if (command, param.name) not in OWN_HELP:
            assert help_of(cls, param.name) and param.help.startswith(help_of(cls, param.name)), (command, param.name)
        checked += 1
    assert checked >= 3


def test_search_and_distill_have_an_option_for_every_field():
    """Built from the dataclasses: a new field is a new option, with nothing else to edit."""
    def options(name):
        return {p.name for p in _commands()[name].params if p.param_type_name == "option"}

    assert set(SearchConfig.__dataclass_fields__) <= options("search")
    assert set(DistillJob.__dataclass_fields__) - {"candidate"} <= options("distill")
    assert set(Candidate.__dataclass_fields__) - {"student"} <= options("distill")


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
QUOTED = re.compile(r"`[^`]*`")  # another command's line, e.g. `ray start --head`


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_option_a_help_text_names_exists_on_that_command(command):
    cmd = _commands()[command]
    flags = {f for p in cmd.params for f in (*p.opts, *p.secondary_opts)} | {"--help"}
    texts = [cmd.help or "", *(getattr(p, "help", None) or "" for p in cmd.params)]
    named = {f for text in texts for f in FLAG.findall(QUOTED.sub("", text))}
    assert named - flags == set(), (command, sorted(named - flags))


def test_every_option_has_help():
    bare = [(c.name, p.name) for c in _commands().values() for p in c.params
            if p.param_type_name == "option" and not getattr(p, "help", None)]
    assert bare == []


@pytest.mark.parametrize("args,needle", [
    (["search", "--compute", "abc"], "Invalid value for '--compute'"),
    (["search", "--min-dominator", "3"], "No such option: --min-dominator"),
    (["models", "--input"], "requires an argument"),
])
def test_a_mistyped_command_line_is_one_line_exit_2(args, needle):
    line = _one_line_exit_2(runner.invoke(app, args))
    assert line.startswith("error: ") and needle in line and "--help" in line, line


@pytest.mark.parametrize("command", ["train", "distill", "search"])
def test_training_commands_share_their_options(command):
    """--train-subset, --seed, --epochs, --lr, --device mean the same on every command that trains."""
    names = {p.name for p in _commands()[command].params}
    assert {"train_subset", "seed", "epochs", "lr", "device"} <= names


def test_export_trains_on_the_chosen_device():
    params = {p.name: p for p in _commands()["export"].params}
    assert "epochs" in params and params["device"].default == default_of(DistillJob, "device")
    assert params["device"].help.startswith(help_of(DistillJob, "device"))


# ------------------------------------------------------------------ checks before training
@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOKD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _one_line_exit_2(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_distill_prune_above_the_limit_fails_before_any_training(home):
    line = _one_line_exit_2(runner.invoke(app, ["distill", "--prune", "0.97", "--teacher", "resnet56"]))
    assert "0.97" in line and "0.95" in line
    assert not (home / "home").exists() and not (home / "runs").exists()  # no teacher, no data, no student


def test_search_with_an_unknown_sampler_fails_before_anything_is_written(home):
    line = _one_line_exit_2(runner.invoke(app, ["search", "--sampler", "nope"]))
    assert "nope" in line and "tpe" in line
    assert not (home / "studies").exists() and not (home / "home").exists()


def test_an_unknown_name_is_a_user_error_in_the_python_api(home):
    import autokd

    with pytest.raises(UserError, match="unknown sampler 'x'"):
        autokd.search(sampler="x")


def test_an_empty_autokd_home_means_the_default_for_data_and_teachers(monkeypatch):
    from autokd.data import data_root
    from autokd.teacher import cache_dir

    monkeypatch.setenv("AUTOKD_HOME", "")
    default = Path.home() / ".cache" / "autokd"
    assert data_root() == default / "data"
    assert cache_dir("resnet20", "digits", TrainConfig(), 1.0).parent == default / "teachers"


def test_a_study_names_its_two_objectives(home):
    from autokd.search import store

    store.study_dir("named").mkdir(parents=True)  # what the driver's lock makes
    study = store.create("named")
    assert study.metric_names == ["val_accuracy", "macs"]  # what optuna-dashboard labels the axes


def test_one_trial_from_the_cli_to_fit_is_a_chain_of_four_imports():
    """`autokd search` -> the driver -> the Ray Tune side -> the trial -> the training loop: each
    of the five modules imports the next one."""
    graph = import_graph()
    path = ["autokd.cli.app", "autokd.search.driver", "autokd.search.tune", "autokd.trial", "autokd.train"]
    assert [b in graph[a] for a, b in zip(path, path[1:])] == [True] * 4


def _stage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_the_readme_layout_lists_the_stages_in_import_order():
    """README: each stage of the layout imports only stages listed before it."""
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("\n\n")[1]
    stages = ["autokd." + name.removesuffix(".py").removesuffix("/") for name in block.split()]
    assert len(stages) >= 15 and "autokd.cli" in stages
    upward = sorted((a, b) for a, targets in import_graph().items() if _stage(a) in stages
                    for b in targets if _stage(b) in stages
                    and stages.index(_stage(b)) > stages.index(_stage(a)))
    assert upward == []


@pytest.mark.parametrize("args", [[], ["latency"]])
def test_a_group_called_with_nothing_shows_its_help_and_no_empty_error(args):
    result = subprocess.run([sys.executable, "-m", "autokd", *args], capture_output=True, text=True, timeout=120)
    assert "Usage:" in result.stdout + result.stderr and "error:" not in result.stderr, result.stderr
