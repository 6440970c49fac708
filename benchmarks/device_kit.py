"""The device kit: what the lent H200 lacks for autokd's protocol, packed to travel in 64 MiB calls.

The device machine has no network; it has PyTorch 2.11 and the packages of device_packages.txt, not
optuna, ray, torch-pruning or plotly, and no datasets. The wheels (device_kit.txt, for its Python
3.12) and Fashion-MNIST's four files travel in the device tool's ``carry``, at most 64 MiB a call
with the working tree, and the Ray wheel alone is about 79 MB: so the set is cut into parts under
that limit, in priority order (the dataset first: with it alone the teacher and the GPU rows run),
a file larger than a part travels as pieces joined on the device with ``cat``, and the parts
arrive in consecutive calls while the machine stays warm (files under /tmp survive between calls
then). ``lean`` packing (the default) leaves out files of the Ray wheel that autokd never loads,
which makes two parts of the whole; ``--full`` keeps the wheels as downloaded (three parts).

On the CPU machine (``bash benchmarks/device_kit.sh`` runs these)::

    python benchmarks/device_kit.py download   # pip download of device_kit.txt into .kit/wheels
    python benchmarks/device_kit.py pack       # .kit/part1, .kit/part2, ...; prints the device calls

On the device (``bash benchmarks/device_protocol.sh`` runs these)::

    python3 benchmarks/device_kit.py stage     # the parts carried in this call -> /tmp/autokd-kit
    python3 benchmarks/device_kit.py install   # all there? join, check sha256, pip install --target

Nothing here imports torch or any third-party package: it runs on a bare Python 3.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KIT = REPO / ".kit"                      # git-ignored: wheels/ (downloads), part1/, part2/, ...
STAGE = Path("/tmp/autokd-kit")          # on the device: the parts of earlier calls wait here
TARGET = Path("/tmp/autokd-site")        # on the device: pip install --target, put on PYTHONPATH
# Fashion-MNIST's original files, where they are found here (Debian's dataset-fashion-mnist, or
# autokd's own data folder after a download), and where autokd looks for them under its data root
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz")
FASHION_DEST = "FashionMNIST/raw"
CALL_LIMIT = 64 * 2**20                  # the device tool's limit on what one call carries, tree included
MARGIN = 2 * 2**20                       # room for the tree to grow between packing and calling
DEVICE_PYTHON = "3.12"
# manylinux tags the device (glibc 2.39, x86_64) accepts; pip matches each N exactly
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
# import names whose distribution has another name (the rest: the same name, '_' as '-')
DIST_OF_IMPORT = {"sklearn": "scikit-learn", "yaml": "pyyaml", "torch_pruning": "torch-pruning",
                  "PIL": "pillow", "cv2": "opencv-python-headless", "google": "protobuf"}
# imported by torch on autokd's behalf, not by an import statement: torch.onnx.export (dynamo=False)
RUNTIME_NEEDS = ("onnx",)
# Files of a wheel that autokd never loads, left out by ``lean`` packing so the kit fits one call:
# Ray's Java-worker jars (Ray starts Java workers only where its jars folder exists and java is
# installed; 31 MiB), RLlib (Tune imports it only to look up a trainable given by name, and goes
# on without it; 1.6 MiB) and the dashboard's JavaScript source maps (1.5 MiB).
LEAN_DROP = {"ray": ("ray/jars/", "ray/rllib/", ".js.map")}


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one '-'."""
    out, dash = [], False
    for ch in name.strip().lower():
        if ch in "-_.":
            dash = True
            continue
        if dash and out:
            out.append("-")
        dash = False
        out.append(ch)
    return "".join(out)


# ------------------------------------------------------------------ the two lists kept in the repo
def read_list(path: Path) -> dict[str, str]:
    """canonical name -> the line's requirement (``name[extra]==version`` or ``name``), comments dropped."""
    out = {}
    for line in Path(path).read_text().splitlines():
        req = line.split("#", 1)[0].strip()
        if req:
            out[canonical(req.split("==")[0].split("[")[0])] = req
    return out


def device_packages() -> dict[str, str]:
    return read_list(HERE / "device_packages.txt")


def kit_requirements() -> dict[str, str]:
    return read_list(HERE / "device_kit.txt")


# ------------------------------------------------------------------ what autokd imports
def third_party_imports(*roots: Path) -> dict[str, set[str]]:
    """Top-level names of absolute imports under ``roots`` that are neither the standard library
    nor a module of the repository (autokd, benchmarks' own modules): name -> files importing it."""
    local = {"autokd"} | {p.stem for root in roots for p in Path(root).rglob("*.py")}
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def distribution_of(import_name: str) -> str:
    return canonical(DIST_OF_IMPORT.get(import_name, import_name))


# ------------------------------------------------------------------ packing into parts
@dataclass(frozen=True)
class Piece:
    wheel: str    # the file's name (a wheel, or a dataset file)
    index: int    # its n-th piece (0-based)
    offset: int   # bytes into the wheel
    size: int
    part: int     # 1-based: the part (= device call) it travels in
    whole: bool   # the wheel travels whole, under its own name

    @property
    def name(self) -> str:
        return self.wheel if self.whole else f"{self.wheel}.{self.index:02d}"


def plan_parts(sizes: dict[str, int], limit: int) -> list[list[Piece]]:
    """Files (name -> bytes, in priority order) into parts of at most ``limit`` bytes each: a file
    goes whole into the current part if it fits, else whole into a new part; one larger than a part
    is cut (``NAME.00``, ``NAME.01``, ...) from where the current part has room on."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    parts: list[list[Piece]] = [[]]
    room = limit
    for name, size in sizes.items():
        if size > room and (size <= limit or room == 0):
            parts.append([])
            room = limit
        whole = size <= room
        offset, index, left = 0, 0, size
        while True:
            if room == 0:
                parts.append([])
                room = limit
            take = min(left, room)
            parts[-1].append(Piece(name, index, offset, take, len(parts), whole))
            offset, index, left, room = offset + take, index + 1, left - take, room - take
            if left == 0:
                break
    return [p for p in parts if p]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def lean_wheel(src: Path, dst: Path) -> dict:
    """``src`` without the LEAN_DROP files of its distribution, as ``dst`` (RECORD rewritten to
    match); returns what was dropped. A wheel with nothing to drop is copied as is."""
    import zipfile

    drop = LEAN_DROP.get(_wheel_key(src.name)[0], ())
    if not drop:
        shutil.copyfile(src, dst)
        return {}
    gone = lambda n: any(n.startswith(d) if d.endswith("/") else n.endswith(d) for d in drop)  # noqa: E731
    dropped, dropped_bytes = 0, 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zout:
        for info in zin.infolist():
            if gone(info.filename):
                dropped, dropped_bytes = dropped + 1, dropped_bytes + info.file_size
                continue
            data = zin.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(line for line in data.decode().splitlines(keepends=True)
                               if not gone(line.split(",", 1)[0])).encode()
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return {"dropped_files": dropped, "dropped_bytes": dropped_bytes, "patterns": list(drop)}


def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of what a device call sends besides ``carry``: tracked and untracked-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, capture_output=True,
                         check=True).stdout
    return sum((repo / f).stat().st_size for f in out.decode().split("\0") if f and (repo / f).is_file())


def pack(wheels: Path, kit: Path, limit: int, lean: bool = True, data: list[Path] | None = None) -> dict:
    """Write kit/partN/ (pieces + MANIFEST.json) from ``data`` files and the wheels; returns the manifest.

    Order: the data first, then the wheels from the smallest; ``lean``: the wheels' LEAN_DROP copies
    (kit/lean/), else the wheels as downloaded."""
    files = sorted(wheels.glob("*.whl"))
    if not files:
        raise SystemExit(f"no wheels in {wheels}: run `python benchmarks/device_kit.py download` first")
    stripped = {}
    if lean:
        shutil.rmtree(kit / "lean", ignore_errors=True)
        (kit / "lean").mkdir(parents=True)
        stripped = {f.name: d for f in files if (d := lean_wheel(f, kit / "lean" / f.name))}
        files = sorted((kit / "lean").glob("*.whl"))
    data = list(data or [])
    items = {f.name: f for f in data} | {f.name: f for f in sorted(files, key=lambda f: (f.stat().st_size, f.name))}
    sizes = {name: f.stat().st_size for name, f in items.items()}
    parts = plan_parts(sizes, limit)
    manifest = {"python": DEVICE_PYTHON, "limit_bytes": limit, "parts": len(parts), "lean": stripped,
                "files": {name: {"size": sizes[name], "sha256": _sha256(f), "pieces": [],
                                 "kind": "data" if f in data else "wheel",
                                 **({"dest": f"{FASHION_DEST}/{name}"} if f in data else {})}
                          for name, f in items.items()}}
    for old in kit.glob("part*"):
        shutil.rmtree(old)
    for n, part in enumerate(parts, 1):
        folder = kit / f"part{n}"
        folder.mkdir(parents=True)
        for piece in part:
            with open(items[piece.wheel], "rb") as src, open(folder / piece.name, "wb") as dst:
                src.seek(piece.offset)
                dst.write(src.read(piece.size))
            manifest["files"][piece.wheel]["pieces"].append(f"part{n}/{piece.name}")
    for n in range(1, len(parts) + 1):
        (kit / f"part{n}" / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def part_bytes(kit: Path) -> dict[str, int]:
    return {p.name: sum(f.stat().st_size for f in p.iterdir()) for p in sorted(kit.glob("part*"))}


def device_calls(n_parts: int) -> list[str]:
    """The device tool calls that bring the kit over and run the protocol, in order: the same command
    each time, which runs every step the parts staged so far allow and skips those already done."""
    return [f'run(command="bash benchmarks/device_protocol.sh", carry=[".kit/part{n}"], timeout_s=480)'
            for n in range(1, n_parts + 1)]


# ------------------------------------------------------------------ on the device
def stage(kit: Path, stage_dir: Path) -> list[str]:
    """Copy the parts this call carried (kit/part*/) to ``stage_dir``; returns the part names."""
    got = []
    for folder in sorted(kit.glob("part*")):
        dest = stage_dir / folder.name
        dest.mkdir(parents=True, exist_ok=True)
        for f in folder.iterdir():
            if not (dest / f.name).exists() or (dest / f.name).stat().st_size != f.stat().st_size:
                shutil.copyfile(f, dest / f.name)
        got.append(folder.name)
    return got


def _manifest(stage_dir: Path) -> dict | None:
    manifests = sorted(stage_dir.glob("part*/MANIFEST.json"))
    return json.loads(manifests[0].read_text()) if manifests else None


def missing(stage_dir: Path, kind: str) -> list[str]:
    """Pieces of the ``kind`` ("wheel" or "data") files not staged yet (["MANIFEST.json"]: no part yet)."""
    manifest = _manifest(stage_dir)
    if manifest is None:
        return ["MANIFEST.json"]
    return [p for f in manifest["files"].values() if f["kind"] == kind for p in f["pieces"]
            if not (stage_dir / p).is_file()]


def join(stage_dir: Path, name: str, entry: dict, out: Path) -> Path:
    """One file from its pieces (``cat``), checked against its sha256."""
    if out.is_file() and out.stat().st_size == entry["size"] and _sha256(out) == entry["sha256"]:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        subprocess.run(["cat", *(str(stage_dir / p) for p in entry["pieces"])], stdout=f, check=True)
    if _sha256(out) != entry["sha256"]:
        raise SystemExit(f"{name}: sha256 differs after joining {entry['pieces']}: the kit is damaged; pack it again")
    return out


def place_data(stage_dir: Path, data_root: Path) -> int:
    """The dataset files into autokd's data root (``AUTOKD_HOME/data``); 3 when not all staged yet."""
    lacking = missing(stage_dir, "data")
    if lacking:
        print(f"device kit: the dataset is not here ({', '.join(lacking[:2])} missing)", file=sys.stderr)
        return 3
    for name, f in sorted(_manifest(stage_dir)["files"].items()):
        if f["kind"] == "data":
            join(stage_dir, name, f, data_root / f["dest"])
    print(f"device kit: dataset files under {data_root}")
    return 0


def install(stage_dir: Path, target: Path) -> int:
    """Install every kit wheel under ``target`` (never touching the device's own packages); 3 when
    not all parts arrived yet."""
    lacking = missing(stage_dir, "wheel")
    if lacking:
        print(f"device kit: the wheels are not all here yet (missing {', '.join(lacking[:3])}"
              f"{' ...' if len(lacking) > 3 else ''}): carry the next part in the next call", file=sys.stderr)
        return 3
    manifest = _manifest(stage_dir)
    entries = {n: f for n, f in sorted(manifest["files"].items()) if f["kind"] == "wheel"}
    wheels = [join(stage_dir, n, f, stage_dir / "wheels" / n) for n, f in entries.items()]
    stamp = target / ".autokd-kit"
    want = json.dumps(sorted(f["sha256"] for f in entries.values()))
    if stamp.is_file() and stamp.read_text() == want:
        print(f"device kit: already installed under {target}")
        return 0
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--disable-pip-version-check", "--target", str(target), *map(str, wheels)],
                   check=True)
    stamp.write_text(want)
    print(f"device kit: {len(wheels)} wheels installed under {target}")
    return 0


# ------------------------------------------------------------------ on the CPU machine
def _wheel_key(filename: str) -> tuple[str, str]:
    """(canonical name, version) of a wheel file name ``name-version-...whl``."""
    name, version = filename.split("-")[:2]
    return canonical(name), version


def pinned() -> dict[str, str]:
    """canonical name -> version of each device_kit.txt line (every line is pinned with ==)."""
    out = {}
    for name, req in kit_requirements().items():
        if "==" not in req:
            raise SystemExit(f"device_kit.txt: {req!r} is not pinned (name==version)")
        out[name] = req.split("==", 1)[1]
    return out


def download(wheels: Path) -> None:
    """pip download of every pinned wheel (no dependencies: the list is closed) for the device."""
    want = pinned()
    wheels.mkdir(parents=True, exist_ok=True)
    have = {_wheel_key(f.name) for f in wheels.glob("*.whl")}
    if all((name, v) in have for name, v in want.items()):
        print(f"device kit: the {len(want)} wheels are in {wheels} already")
    else:
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", DEVICE_PYTHON, "--implementation", "cp", *platforms, "-d", str(wheels),
                        *(f"{name}=={v}" for name, v in want.items())],
                       check=True, env={**os.environ, "PIP_CONSTRAINT": ""})  # no local torch cap applies
    for f in wheels.glob("*.whl"):  # a wheel of an older pin or of a name no longer listed stays home
        if _wheel_key(f.name) not in set(want.items()):
            f.unlink()


def fashion_mnist_files() -> list[Path]:
    """Fashion-MNIST's four .gz files on this machine; SystemExit naming how to get them if absent."""
    sys.path.insert(0, str(REPO))
    from autokd.data import IDX_MIRRORS, data_root  # imports torch: the CPU machine has it

    for folder in (data_root() / FASHION_DEST, IDX_MIRRORS["FashionMNIST"]):
        if all((folder / f).is_file() for f in FASHION_FILES):
            return [folder / f for f in FASHION_FILES]
    raise SystemExit("device kit: Fashion-MNIST's .gz files not found; `apt-get install dataset-fashion-mnist` "
                     "(Debian), or run `AUTOKD_OFFLINE=0 autokd datasets` where autokd can download it")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=("download", "pack", "calls", "stage", "data", "install"))
    ap.add_argument("--kit", type=Path, default=KIT)
    ap.add_argument("--stage", type=Path, default=STAGE)
    ap.add_argument("--target", type=Path, default=TARGET)
    ap.add_argument("--data-root", type=Path, help="data: autokd's data root; default AUTOKD_HOME/data")
    ap.add_argument("--limit", type=int, help="bytes a part may hold; default 64 MiB - the working tree - 2 MiB")
    ap.add_argument("--full", action="store_true", help="pack: the wheels as downloaded (two device calls), "
                    "not the lean copies (one call)")
    args = ap.parse_args(argv)
    if args.step == "download":
        download(args.kit / "wheels")
    elif args.step in ("pack", "calls"):
        if args.step == "pack":
            tree = tree_bytes()
            limit = args.limit or CALL_LIMIT - tree - MARGIN
            m = pack(args.kit / "wheels", args.kit, limit, lean=not args.full, data=fashion_mnist_files())
            total = sum(w["size"] for w in m["files"].values())
            n_wheels = sum(f["kind"] == "wheel" for f in m["files"].values())
            print(f"device kit: Fashion-MNIST and {n_wheels} wheels, {total / 2**20:.1f} MiB "
                  f"({'lean: ' + ', '.join(m['lean']) + ' without ' + ', '.join(p for d in m['lean'].values() for p in d['patterns']) if m['lean'] else 'as downloaded'}); "
                  f"working tree {tree / 2**20:.1f} MiB; part limit {limit / 2**20:.1f} MiB")
            for name, size in part_bytes(args.kit).items():
                print(f"  .kit/{name}: {size / 2**20:.1f} MiB")
        n = len(list(args.kit.glob("part*")))
        print("the device calls, in this order, each right after the one before (the machine stays warm "
              "30 s after a call; benchmarks/README.md):")
        for i, call in enumerate(device_calls(n), 1):
            print(f"  {i}. {call}")
    elif args.step == "stage":
        print(f"device kit: staged {', '.join(stage(args.kit, args.stage)) or 'nothing'} in {args.stage}")
    elif args.step == "data":
        home = Path(os.environ.get("AUTOKD_HOME", Path.home() / ".cache" / "autokd"))
        return place_data(args.stage, args.data_root or home / "data")
    else:
        return install(args.stage, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
