"""The device kit (benchmarks/device_kit.py): its wheel list covers what autokd imports, it packs into
parts under the device tool's per-call limit, and the parts join back to the same bytes.

The coverage check reads this machine's installed metadata (the CI venv has every package the kit
pins): every third-party import under autokd/ and benchmarks/, and everything those distributions
require on the device's Python 3.12 / Linux x86_64, is either on the device (device_packages.txt) or
in the kit (device_kit.txt); nothing in the kit shadows a device package.
"""
from __future__ import annotations

import functools
import json
import sys
import warnings
import zipfile
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import device_kit as kit  # noqa: E402

DEVICE_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "os_name": "posix", "platform_release": "",
              "platform_version": "", "implementation_version": "3.12.3"}


@functools.lru_cache(maxsize=1)
def _installed() -> dict[str, list[str]]:
    return packages_distributions()


def _dist_of(import_name: str) -> str:
    found = _installed().get(import_name)
    return kit.canonical(found[0]) if found else kit.distribution_of(import_name)


def test_every_third_party_import_is_on_the_device_or_in_the_kit():
    imports = kit.third_party_imports(ROOT / "autokd", ROOT / "benchmarks")
    assert {"torch", "optuna", "ray", "torch_pruning", "plotly"} <= set(imports)  # the walk sees them
    have = set(kit.device_packages()) | set(kit.kit_requirements())
    lacking = {name: sorted(files)[:3] for name, files in imports.items() if _dist_of(name) not in have}
    assert not lacking, f"imported, but neither on the device nor in benchmarks/device_kit.txt: {lacking}"
    assert all(kit.canonical(n) in have for n in kit.RUNTIME_NEEDS)


def test_the_kit_is_closed_under_requirements_and_shadows_nothing():
    device, wanted = set(kit.device_packages()), kit.kit_requirements()
    assert not set(wanted) & device, "a kit wheel would shadow the device's own package"
    missing, stale = {}, []
    for name, line in wanted.items():
        req = Requirement(line)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} (device_kit.txt) is not installed here: the check reads its metadata")
        if str(req.specifier) and dist.version not in req.specifier:
            stale.append(f"{name} {dist.version} here, {req.specifier} in the kit")
        for r in map(Requirement, dist.requires or []):
            extras = req.extras or {""}
            if r.marker and not any(r.marker.evaluate({**DEVICE_ENV, "extra": e}) for e in extras):
                continue
            if kit.canonical(r.name) not in device | set(wanted):
                missing.setdefault(name, []).append(str(r))
    assert not missing, f"required on the device but neither there nor in the kit: {missing}"
    if stale:  # the kit carries what CI tested; a newer venv here is a reminder, not a failure
        warnings.warn("device_kit.txt pins differ from this venv: " + "; ".join(stale))


def test_every_kit_line_is_pinned():
    assert set(kit.pinned()) == set(kit.kit_requirements())


def test_plan_parts_by_hand():
    parts = kit.plan_parts({"a": 50, "b": 30, "c": 100}, 60)
    shown = [[(p.name, p.size) for p in part] for part in parts]
    assert shown == [[("a", 50)], [("b", 30), ("c.00", 30)], [("c.01", 60)], [("c.02", 10)]]
    assert kit.plan_parts({"x": 60, "y": 1}, 60) == [[kit.Piece("x", 0, 0, 60, 1, True)],
                                                     [kit.Piece("y", 0, 0, 1, 2, True)]]


def _fake_wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        record = "".join(f"{n},sha256=x,{len(b)}\n" for n, b in files.items()) + "ray-1.0.dist-info/RECORD,,\n"
        for n, b in files.items():
            z.writestr(n, b)
        z.writestr("ray-1.0.dist-info/RECORD", record)
    return path


def test_lean_wheel_drops_the_java_jars_and_their_record_lines(tmp_path):
    src = _fake_wheel(tmp_path / "ray-1.0-cp312-cp312-manylinux2014_x86_64.whl",
                      {"ray/__init__.py": b"x = 1\n", "ray/jars/ray_dist.jar": b"J" * 1000,
                       "ray/dashboard/client/main.js.map": b"M" * 10})
    (tmp_path / "lean").mkdir()
    dropped = kit.lean_wheel(src, tmp_path / "lean" / src.name)
    assert dropped["dropped_files"] == 2 and dropped["dropped_bytes"] == 1010
    with zipfile.ZipFile(tmp_path / "lean" / src.name) as z:
        assert sorted(z.namelist()) == ["ray-1.0.dist-info/RECORD", "ray/__init__.py"]
        record = z.read("ray-1.0.dist-info/RECORD").decode()
    assert "jars" not in record and ".map" not in record and "ray/__init__.py" in record


def test_pack_stage_and_join_give_back_the_same_bytes(tmp_path):
    wheels, data_dir = tmp_path / "wheels", tmp_path / "data"
    wheels.mkdir(), data_dir.mkdir()
    blobs = {"big-1.0-py3-none-any.whl": bytes(range(256)) * 40, "small-2.0-py3-none-any.whl": b"s" * 700}
    for name, b in blobs.items():
        (wheels / name).write_bytes(b)
    (data_dir / "train-images-idx3-ubyte.gz").write_bytes(b"d" * 3000)
    manifest = kit.pack(wheels, tmp_path / "kit", limit=4096, lean=False,
                        data=[data_dir / "train-images-idx3-ubyte.gz"])
    sizes = kit.part_bytes(tmp_path / "kit")
    assert manifest["parts"] == len(sizes) == 4
    assert all(sum(f.stat().st_size for f in (tmp_path / "kit" / p).iterdir() if f.suffix != ".json") <= 4096
               for p in sizes)
    assert manifest["files"]["train-images-idx3-ubyte.gz"]["pieces"] == ["part1/train-images-idx3-ubyte.gz"]
    stage = tmp_path / "stage"
    # part by part, as the device calls bring them: nothing joins before all of a file's pieces are here
    for n in range(1, 5):
        only = tmp_path / f"call{n}"
        (only / f"part{n}").parent.mkdir()
        (tmp_path / "kit" / f"part{n}").rename(only / f"part{n}")
        kit.stage(only, stage)
        if n == 1:
            assert kit.missing(stage, "data") == [] and kit.missing(stage, "wheel")
            assert kit.place_data(stage, tmp_path / "root") == 0
            assert (tmp_path / "root/FashionMNIST/raw/train-images-idx3-ubyte.gz").read_bytes() == b"d" * 3000
            assert kit.install(stage, tmp_path / "site") == 3  # wheels still in flight: no pip run
    assert kit.missing(stage, "wheel") == []
    entries = json.loads((stage / "part1" / "MANIFEST.json").read_text())["files"]
    for name, b in blobs.items():
        assert kit.join(stage, name, entries[name], tmp_path / "out" / name).read_bytes() == b


def test_device_calls_carry_one_part_each():
    calls = kit.device_calls(2)
    assert calls == ['run(command="bash benchmarks/device_protocol.sh", carry=[".kit/part1"], timeout_s=480)',
                     'run(command="bash benchmarks/device_protocol.sh", carry=[".kit/part2"], timeout_s=480)']
