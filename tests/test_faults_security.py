"""Security: nothing a user hands over is unpickled, study names stay inside studies/, no shell
command is built from user strings, and the services autokd starts (a local Ray) listen on
127.0.0.1 only. The source rules are checked on autokd's syntax tree, not by grep."""
from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import pytest
from fault_tools import MARKER, Tripwire, World, tagged
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import autokd
from autokd.search import store as studies
from autokd.cli import app
from autokd.errors import UserError

pytestmark = pytest.mark.faults

SOURCES = sorted(Path(autokd.__file__).parent.rglob("*.py"))
UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib", "jsonpickle"}


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def test_autokd_source_never_unpickles():
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if {str(n).split(".")[0] for n in names} & UNPICKLERS:
                    problems.append(f"{path.name}:{node.lineno} imports {names}")
        for call, name in _calls(path):
            where = f"{path.name}:{call.lineno} {ast.unparse(call)[:80]}"
            if name.endswith("torch.load"):
                flag = _kw(call, "weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if name.endswith(("np.load", "numpy.load")) and isinstance(_kw(call, "allow_pickle"), ast.Constant) \
                    and _kw(call, "allow_pickle").value is True:
                problems.append(f"{where}: numpy.load(allow_pickle=True)")
            if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
                problems.append(f"{where}: {name}")
            if name == "yaml.load":
                loader = _kw(call, "Loader")
                if loader is None or ast.unparse(loader) in ("yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader"):
                    problems.append(f"{where}: yaml.load without a safe Loader")
            if name.endswith("jit.load") and path.name != "export.py":
                problems.append(f"{where}: torch.jit.load outside export's own check of the file it wrote")
    assert not problems, problems


def test_the_safe_yaml_loader_is_safe():
    from autokd.space import _SafeUniqueLoader
    import yaml

    assert issubclass(_SafeUniqueLoader, yaml.SafeLoader)
    with pytest.raises(yaml.YAMLError):
        yaml.load("!!python/object/apply:os.system ['true']", Loader=_SafeUniqueLoader)


def test_autokd_source_runs_no_shell_and_no_dynamic_code():
    problems = []
    for path in SOURCES:
        for call, name in _calls(path):
            where = f"{path.name}:{call.lineno} {ast.unparse(call)[:80]}"
            shell = _kw(call, "shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                problems.append(f"{where}: shell=")
            if name in ("os.system", "os.popen", "eval", "exec", "compile", "__import__") or \
                    name.startswith(("os.exec", "os.spawn", "commands.")):
                problems.append(where)
            if name.startswith("subprocess.") and call.args and not isinstance(call.args[0], ast.List | ast.Tuple):
                problems.append(f"{where}: the command is not a literal argument list")
    assert not problems, problems


def test_the_tripwire_of_the_input_tests_fires_when_unpickled(tmp_path):
    """tests/test_faults_input.py hands autokd pickles that would create a file if unpickled."""
    pickle.loads(pickle.dumps(Tripwire(str(tmp_path / MARKER))))
    assert (tmp_path / MARKER).exists()


def test_a_cifar_batch_that_is_not_the_official_file_is_never_unpickled(tmp_path, monkeypatch):
    """CIFAR's python batches are pickles by format; torchvision unpickles them only after their MD5
    matches the official files, so a planted one is refused with one line."""
    monkeypatch.setenv("AUTOKD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    folder = tmp_path / "home" / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))]:
        (folder / name).write_bytes(pickle.dumps({"data": Tripwire(str(tmp_path / MARKER))}))
    result = CliRunner().invoke(app, ["search", "--teacher", "resnet20", "--dataset", "cifar10", "--trials", "1"])
    assert result.exit_code == 2 and result.output.startswith("error: dataset 'cifar10'"), result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / MARKER).exists()
    assert not (tmp_path / "studies").exists()


# ------------------------------------------------------------------ study names
@pytest.mark.parametrize("name", ["..", ".", "../x", "a/..", "a/b", "/etc", "~/x", ".hidden", "-rf", "", "x" * 101,
                                  "a\\b", "a\nb", "a b", "name\0"])
def test_study_names_that_could_escape_are_refused(name, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    with pytest.raises(UserError, match="study name"):
        studies.study_dir(name)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=120))
def test_every_accepted_study_name_is_one_folder_directly_under_studies(name):
    try:
        folder = studies.study_dir(name)
    except UserError:
        return
    root = studies.studies_root()
    assert folder.parent == root and folder.resolve().parent == root.resolve()
    assert folder.name == name and name not in (".", "..")


# ------------------------------------------------------------------ services bind 127.0.0.1
def _listening_inodes() -> dict[str, str]:
    """inode -> local address of every listening TCP socket on this machine."""
    found = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not Path(table).exists():  # no IPv6 on this machine
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                found[fields[9]] = _address(fields[1].split(":")[0], width)
    return found


def _address(hex_ip: str, width: int) -> str:
    raw = bytes.fromhex(hex_ip)
    if width == 8:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]  # four little-endian 32-bit words
    flat = b"".join(words)
    if flat[:12] == b"\0" * 10 + b"\xff\xff":
        return "::ffff:" + ".".join(str(b) for b in flat[12:])
    return ":".join(flat[i:i + 2].hex() for i in range(0, 16, 2))


def _sockets_of(pids: list[int], listening: dict[str, str]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listening:
                out.setdefault(pid, []).append(listening[target[8:-1]])
    return out


@pytest.mark.slow
def test_the_local_ray_of_a_search_listens_on_loopback_only(tmp_path, monkeypatch):
    """What `autokd search` without --address starts: even with RAY_ADDRESS set, a new local Ray,
    never a cluster found on the machine, and every socket it listens on is 127.0.0.1."""
    import ray

    from autokd.search import SearchConfig
    from autokd.search.ray_start import init_ray, shutdown_ray

    world = World(tmp_path)
    for key, value in world.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # ray.init(address=None) would try to join this
    try:
        init_ray(SearchConfig(parallel=1))
        nodes = ray.nodes()
        pids = [os.getpid(), *tagged(world.tag)]
        bound = _sockets_of(pids, _listening_inodes())
    finally:
        shutdown_ray()
        left = world.cleanup()
    assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]
    assert len(bound) >= 2, bound  # at least the GCS and the raylet
    exposed = {pid: addrs for pid, addrs in bound.items()
               if any(a not in ("127.0.0.1", "::ffff:127.0.0.1") for a in addrs)}
    assert not exposed, exposed
    assert not left
