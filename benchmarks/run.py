"""Run one benchmark part under one protocol and write its JSON; BENCHMARKS.md comes from make_tables.py.

    .venv/bin/python benchmarks/run.py search    --protocol cpu   # table 1: search quality
    .venv/bin/python benchmarks/run.py claims    --protocol cpu   # table 2: the seeds' claims
    .venv/bin/python benchmarks/run.py overheads --protocol cpu   # table 3
    .venv/bin/python benchmarks/run.py latency   --protocol cpu   # table 4 (after table 1 for its students)
    .venv/bin/python benchmarks/run.py latency-predictor --protocol cpu  # table 4: the latency predictor vs measured
    .venv/bin/python benchmarks/run.py latency-search --protocol cpu  # table 4: latency search vs MACs search (after table 1's joint)
    .venv/bin/python benchmarks/run.py exported  --protocol cpu   # the headline table (after table 1's joint arm)
    .venv/bin/python benchmarks/run.py ranking   --protocol cpu   # search score vs final score of one front (Kendall tau)
    .venv/bin/python benchmarks/run.py gpu       --protocol gpu    # table 3's GPU rows (the gpu protocols)
    .venv/bin/python benchmarks/run.py all       --protocol smoke # every part, tiny, in a couple of minutes
    .venv/bin/python benchmarks/make_tables.py                    # BENCHMARKS.md from results/*.json

Protocols are data (benchmarks/protocols.py). Results go to ``benchmarks/results/<part>-<protocol>.json``
(smoke: ``benchmarks/results/smoke/``, git-ignored); studies, teachers and weights to
``<results>/studies`` and ``<results>/teachers`` (git-ignored). A table-1 study that exists is resumed,
so an interrupted ``search`` picks up where it stopped; ``--fresh`` starts its studies again.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from protocols import PROTOCOLS, parts_of  # noqa: E402
from record import RESULTS, default_out, say, teacher_bundle, teacher_folder, write_json  # noqa: E402

# every part of 'all'; gpu runs only when asked (the gpu protocols)
PARTS = ("search", "claims", "overheads", "latency", "latency-predictor", "latency-search", "exported", "ranking")
FILES = {"search": "search_quality", "claims": "claims", "overheads": "overheads", "latency": "latency",
         "latency-predictor": "latency_predictor", "latency-search": "latency_search", "exported": "exported", "ranking": "ranking",
         "gpu": "gpu_throughput"}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    from claims import UNITS
    from search_quality import ARMS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=(*PARTS, "gpu", "all", "teacher"))
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="cpu")
    ap.add_argument("--seeds", type=int, help="n seeds (0..n-1) for tables 1 and 2; default: the protocol's")
    ap.add_argument("--out", type=Path,
                    help="the JSON to write (one part only); default <results>/<part>-<protocol>.json")
    ap.add_argument("--results", type=Path, help="results folder; default benchmarks/results (smoke: .../smoke)")
    ap.add_argument("--parallel", type=int, help="table 1: trials at once within one search; default: the protocol's")
    ap.add_argument("--jobs", type=int, help="table 1: searches at once, each in its own process and local Ray; "
                    "default: the protocol's (16 cores: --jobs 8 --parallel 2)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="table 2: runs at once, one process with 1 torch thread each; default: the CPU count")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="table 1: arms to run")
    ap.add_argument("--runs", nargs="+", choices=list(UNITS), help="table 2: rerun only these runs and keep the "
                    "others already in the file (same protocol); default: all")
    ap.add_argument("--fresh", action="store_true", help="table 1: delete this protocol's studies of the arms first")
    ap.add_argument("--summarize-only", action="store_true",
                    help="table 1: summarise the JSON's runs again (ratios, targets), nothing trained")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of this process (teacher training, tables 3-4); default 1: on a busy "
                         "machine more threads can be 10x slower, and 1 is comparable across machines")
    ap.add_argument("--dataset", help="override the protocol's dataset (e.g. cifar10 for the full protocol)")
    args = ap.parse_args(argv)
    if args.out and args.part == "all":
        ap.error("--out names one part's file; use --results for 'all'")
    for name in ("seeds", "parallel", "jobs", "workers", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    return args


def run_part(part: str, protocol, args, results_dir: Path) -> Path:
    out = args.out or default_out(FILES[part], protocol.name, results_dir)
    seeds = args.seeds or protocol.seeds
    t0 = time.perf_counter()
    if part == "search" and args.summarize_only:
        import search_quality

        data = search_quality.resummarize(protocol, out=out, results_dir=results_dir)
    elif part == "search":
        import search_quality

        data = search_quality.run(protocol, out=out, results_dir=results_dir, seeds=seeds, arms=args.arms,
                                  parallel=args.parallel or protocol.parallel, jobs=args.jobs or protocol.jobs,
                                  fresh=args.fresh)
    elif part == "claims":
        import claims

        data = claims.run(protocol, results_dir=results_dir, seeds=seeds, workers=args.workers, names=args.runs,
                          out=out)
    elif part == "gpu":
        import gpu_throughput

        data = gpu_throughput.run(protocol, results_dir=results_dir)
    elif part == "exported":
        import exported

        data = exported.run(protocol, results_dir=results_dir, seeds=seeds, workers=args.workers)
    elif part == "ranking":
        import ranking

        data = ranking.run(protocol, results_dir=results_dir)
    elif part == "overheads":
        import overheads

        data = overheads.run(protocol, results_dir=results_dir)
    elif part == "latency-predictor":
        import latency_predictor

        data = latency_predictor.run(protocol, results_dir=results_dir)
    elif part == "latency-search":
        import latency_search

        data = latency_search.run(protocol, results_dir=results_dir, seeds=seeds, parallel=args.parallel or protocol.parallel)
    else:
        import latency

        data = latency.run(protocol, results_dir=results_dir, teacher=teacher_folder(protocol, results_dir))
    write_json(out, data)
    say(f"{part} ({protocol.name}): {time.perf_counter() - t0:.0f} s -> {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse(argv)
    torch.set_num_threads(args.threads)
    protocol = PROTOCOLS[args.protocol]
    if args.dataset and args.dataset != protocol.dataset:  # its own name: own studies, teacher and files
        protocol = dataclasses.replace(protocol, dataset=args.dataset,
                                       name=f"{protocol.name}-{re.sub(r'[^A-Za-z0-9_.-]', '_', args.dataset)[:40]}")
    scratch = protocol.name == "smoke" or protocol.name.endswith("-dry")
    results_dir = args.results or (RESULTS / protocol.name if scratch else RESULTS)
    if args.part == "teacher":
        teacher_bundle(protocol, results_dir, say=say)
        return
    allowed = parts_of(args.protocol) or (*PARTS, "gpu")
    if args.part != "all" and args.part not in allowed:
        sys.exit(f"run.py: protocol {args.protocol} runs only {', '.join(allowed)}, not {args.part}")
    for part in [p for p in PARTS if p in allowed] if args.part == "all" else (args.part,):
        run_part(part, protocol, args, results_dir)


if __name__ == "__main__":
    from autokd.errors import UserError

    try:
        main()
    except UserError as e:  # a dataset not installed, a damaged study: one line, exit 2
        print(f"run.py: {e}", file=sys.stderr)
        sys.exit(2)
