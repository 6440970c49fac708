"""Write BENCHMARKS.md from the JSON files in benchmarks/results/; the page is never edited by hand.

    .venv/bin/python benchmarks/make_tables.py [--results DIR] [--out FILE] [--no-figures]

The page shows the current result of each part and protocol, headline first: ``<part>-<protocol>.json``
(written by benchmarks/run.py), each table with n, mean ± std and one line of provenance (file,
command, date, git revision, machine). Table 2 reads every claims file of a protocol and shows each
claim from the newest file that ran it. A part with no file says which command would make it.
Superseded results live in results/archive/ (its CHANGELOG.md), which this script does not read.
Pure formatting: nothing here measures or recomputes a number.

Figures: before rendering, ``main`` (re)draws every PNG of benchmarks/figures.py from the same
JSON files (``--no-figures`` skips that; where plotly cannot write images it says why on stderr and
goes on). Table 1's section shows ``search_quality-<protocol>.png`` when it exists and is not older
than its JSON, linked relative to the page.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

from figures import png_path, write_figures
from protocols import PROTOCOLS, VARIANTS, parts_of

HERE = Path(__file__).resolve().parent
PARTS = {  # file stem -> (section title, the command that writes it)
    "exported": ("The exported student", "benchmarks/run.py exported --protocol {p}"),
    "search_quality": ("1. Search quality", "benchmarks/run.py search --protocol {p}"),
    "claims": ("2. The seeds' claims", "benchmarks/run.py claims --protocol {p}"),
    "overheads": ("3. Overheads", "benchmarks/run.py overheads --protocol {p}"),
    "latency": ("4. Cost vs latency", "benchmarks/run.py latency --protocol {p}"),
}
GPU_PARTS = {"gpu_throughput": "Table 3's GPU rows"}  # only the gpu protocols write it: section 5
PREDICTOR_COMMAND = "benchmarks/run.py latency-predictor --protocol {p}"  # its rows sit in table 4's section
SEARCH_COMMAND = "benchmarks/run.py latency-search --protocol {p}"  # after table 1's joint arm; rows in table 4
PROTOCOL_ORDER = ("cpu", "full", "gpu", "smoke")
HEADLINE_ORDER = ("full", "cpu", "gpu", "smoke")  # the headline: the first protocol with an exported table
WIDTH = 120  # prose is wrapped here; table rows are not


# ------------------------------------------------------------------ formatting helpers
def num(v, fmt: str = ".3f", scale: float = 1.0) -> str:
    return "—" if v is None else format(v * scale, fmt)


def ms(stat: dict | None, scale: float = 100.0, fmt: str = ".2f") -> str:
    """A mean_std dict as 'mean ± std' (scale 100: fractions as percent)."""
    if not stat or stat.get("mean") is None:
        return "—"
    std = stat.get("std")
    return f"{stat['mean'] * scale:{fmt}}" + ("" if std is None else f" ± {std * scale:{fmt}}")


def yes(v) -> str:
    return "—" if v is None else ("**met**" if v else "**not met**")


def mega(v) -> str:
    return "—" if v is None else f"{v / 1e6:.3f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def para(text: str) -> list[str]:
    """One paragraph, wrapped (Markdown joins the lines again)."""
    return textwrap.wrap(text, WIDTH, break_long_words=False, break_on_hyphens=False)


def provenance(d: dict, name: str) -> str:
    """One line: file, command, date, git revision, machine (the rest is in the JSON)."""
    m = d["machine"]
    device = m["device_name"] if m["device"] == "cuda" else "CPU only"
    dirty = [f for f in d.get("git_uncommitted") or [] if f.startswith(("autokd", "search_spaces", "benchmarks/spaces"))
             or (f.startswith("benchmarks/") and f.endswith((".py", ".sh")))]  # code and spaces, not results
    commands = d["results"].get("commands") or [d["command"]]
    more = f" (+{len(commands) - 1} more in the JSON)" if len(commands) > 1 else ""
    again = d.get("summarized")
    return (f"`{name}`: `{commands[0]}`{more}; {d['date'][:10]}, {d['wall_s'] / 60:.0f} min, git {d['git_revision'][:10]}"
            + (f" + uncommitted changes to {len(dirty)} file{'s' if len(dirty) > 1 else ''}" if dirty else "")
            + (f", summarised again {again['date'][:10]} (git {again['git_revision'][:10]})" if again else "")
            + f"; {m['cpus']} CPUs ({m['cpu_model']}), torch {m['torch']}, {device}.")


# ------------------------------------------------------------------ table 1
def search_quality(d: dict, first: bool = True) -> list[str]:
    r, s = d["results"], d["settings"]
    t = r["teacher"]
    n = max((v["hypervolume"]["n"] for v in r["by_arm"].values()), default=0)
    parallel = r["runs"][0]["parallel"] if r["runs"] else s["parallel"]
    spend = (f"every arm {r['compute_budget']:g} epoch-equivalents of compute (what {s['trials']} trials of "
             f"{s['epochs']} epochs cost)" if r.get("compute_budget")
             else f"{s['trials']} trials of {s['epochs']} epochs per search")
    lines = para(f"Teacher `{t['arch']}` ({mega(t['macs'])} M MACs, test {num(t['test_accuracy'], '.2f', 100)} %); "
                 f"budget {s['budget']} of its MACs; {spend}, {s['train_subset'] or 'all'} training images, "
                 f"{parallel} trials at once; n = {n} seeds." + (
                     " Hypervolume of (validation accuracy, MACs / budget) w.r.t. (0, budget), in [0, 1]; best test: the "
                     "test accuracy of the best-validation trial." if first else "")) + [""]
    at_budget = "target_at_budget" in r
    rows = [[f"`{arm}`", r["arm_definitions"][arm]["what"].split(" (")[0], ms(v["hypervolume"], 1, ".4f")]
            + ([ms(v["hypervolume_at_budget"], 1, ".4f")] if at_budget else [])
            + [ms(v["test_accuracy"]), ms(v.get("compute_spent"), 1, ".1f"), ms(v.get("trials"), 1, ".1f"),
               ms(v["wall_s"], 1, ".0f"), v["hypervolume"]["n"]]
            for arm in r["arm_order"] if (v := r["by_arm"].get(arm))]
    header = (["arm", "what", "hypervolume"] + (["at the budget"] if at_budget else [])
              + ["best test (%)", "compute spent", "trials", "span (s)", "n"])
    return lines + table(header, rows) + [""] + search_quality_verdicts(r)


def search_quality_verdicts(r: dict) -> list[str]:
    """The targets and the lines that read the table: ratio, at the budget, ceiling, compute, gap."""
    target = r["target"]
    ladder = ("" if r.get("hypervolume_ratio_vs_random_ladder") is None else
              f"; over random search with the same ladder {num(r['hypervolume_ratio_vs_random_ladder'], '.3f')}")
    text = (f"**Joint / random hypervolume: {num(r['hypervolume_ratio_vs_random'], '.3f')}** (per seed "
            f"{ms(r['ratio_per_seed'], 1, '.3f')}{ladder})")
    if "above_every_arm" in target:  # the targets: the arm order and the compute axis
        text += (f". Joint above every other arm, Torch-Pruning's included: {yes(target['above_every_arm'])}; random "
                 f"search needing >= {target['compute_to_match_target']:g} x joint's compute for its hypervolume: "
                 f"{yes(target['compute_to_match_met'])}.")
    else:  # a file summarised under the retired ratio target
        text += (f"; target >= {target['ratio_target']} (since retired): {yes(target['ratio_met'])}."
                 + ("" if target["above_single_method"] is None else
                    f" Joint above every single-method arm: {yes(target['above_single_method'])}."))
    if "target_at_budget" in r:
        text += (f" At exactly the budget (trials still running then left out): "
                 f"{num(r['target_at_budget']['ratio_vs_random'], '.3f')} (per seed "
                 f"{ms(r['ratio_per_seed_at_budget'], 1, '.3f')}).")
    lines, text = para(text), ""
    union = r.get("union_front")
    if union and union.get("searching_arms") is not None:
        text += (f"Ceiling: the front of every trial the searching arms completed, all seeds together "
                             f"({union['trials_of']['searching_arms']} trials), has hypervolume "
                             f"{union['searching_arms']:.4f}, {num(union['searching_arms_over_random'], '.3f')} x "
                             "random's mean: no single search could reach a ratio above it. ")
    match = r.get("compute_to_match_random")
    if match:
        text += (f"Compute to match: random search spent at least **{num(match['least_times'], '.1f')} x** "
                 "the compute joint needed to reach random's final hypervolume (per seed in the JSON). ")
    gap = r.get("teacher_gap")
    if gap:
        pts = ", ".join(f"`{a}` {g:.2f}" for a, g in gap["points"].items() if g is not None)
        text += (f"Gap to the teacher (points of test accuracy): {pts}; joint within "
                 f"{gap['target_points']:g} points at the search's own epochs: {yes(gap['met'])}.")
    return lines + ([""] + para(text) if text else [])


def search_quality_figure(json_path: Path, page_dir: Path, caption: bool = True) -> list[str]:
    """Table 1's figure (benchmarks/figures.py) as a Markdown image, or a line saying how to draw it."""
    png = png_path(json_path)
    if not png.exists() or (json_path.exists() and png.stat().st_mtime < json_path.stat().st_mtime):
        return para(f"No figure of `{json_path.name}` yet: `.venv/bin/python benchmarks/figures.py` draws it "
                    "(needs `pip install -e \".[bench]\"` and a Chromium).")
    alt = ("hypervolume against compute spent (epoch-equivalents, in the order trials finished): per arm the mean "
           "over its seeds as a line, each seed faint" if caption else "hypervolume against compute")
    return [f"![{alt}]({Path(os.path.relpath(png, page_dir)).as_posix()})"]


# ------------------------------------------------------------------ the headline
# what a headline file written before the rows kept their ONNX says of its latency column
LATENCY_BESIDE_TRAINING = "each row timed in its worker while another worker trained (slower than idle)"
HEADLINE_ROWS = {"autokd": "`autokd search` + `autokd export --best --finetune-epochs N`",
                 "tp": "Torch-Pruning (global group-norm) at the exported MACs, fine-tuned on labels",
                 "tp-kd": "the same, fine-tuned with Hinton KD from the teacher",
                 "tp-compute": "the same on labels, given the search's compute as extra epochs",
                 "tp-budget": "Torch-Pruning at the budget, on labels",
                 "alone": "the exported student's architecture, trained alone"}
HEADLINE_POINTS = (("vs_torch_pruning_equal_macs_points", "vs_torch_pruning_equal_macs", "autokd - Torch-Pruning, equal MACs and epochs", ">= +0.5 and > 2 SE"),
                   ("vs_torch_pruning_kd_equal_macs_points", "vs_torch_pruning_kd_equal_macs", "autokd - Torch-Pruning + KD, equal MACs and epochs", ">= 0"),
                   ("vs_torch_pruning_equal_compute_points", "vs_torch_pruning_equal_compute", "autokd - Torch-Pruning, equal MACs and total compute", ">= 0"),
                   ("gap_to_teacher_points", "at_least_teacher_within_budget", "teacher - autokd", "<= 0 within the budget"))
VARIANT_ROWS = {"autokd": "autokd", "tp-kd": "Torch-Pruning + KD", "tp": "Torch-Pruning on labels"}
INLINE = {v for v, (_, parts) in VARIANTS.items() if parts == ("exported",)}  # shown under their base's table


def share_of_teacher(r: dict, kind: str) -> float:
    """Mean MACs of a row's students as % of the teacher's."""
    seeds = r["rows"][kind]["per_seed"]
    return sum(100 * u["macs"] / r["teacher"]["macs"] for u in seeds) / len(seeds)


def headline(d: dict) -> list[str]:
    r = d["results"]
    rows, t = r["rows"], r["teacher"]
    n = rows["autokd"]["test_accuracy"]["n"]
    text = (f"**Headline** (protocol `{d['protocol']}`, `{d['settings']['dataset']}`, test accuracy mean ± std, n = {n} "
            f"seeds, budget {r['budget']} of the teacher's MACs): autokd's exported student "
            f"**{ms(rows['autokd']['test_accuracy'])} %** at {share_of_teacher(r, 'autokd'):.0f} % of the teacher's MACs")
    if rows["alone"]["per_seed"]:
        text += f"; the same architecture trained alone {ms(rows['alone']['test_accuracy'])} %"
    if rows.get("tp", {}).get("per_seed"):  # paired at the exported student's MACs
        text += (f"; Torch-Pruning at the same MACs {ms(rows['tp']['test_accuracy'])} %, with KD "
                 f"{ms(rows['tp-kd']['test_accuracy'])} % (autokd minus them: "
                 f"{ms(r['vs_torch_pruning_equal_macs_points'], 1, '.2f')} and "
                 f"{ms(r['vs_torch_pruning_kd_equal_macs_points'], 1, '.2f')} points, paired by seed)")
    return para(text + f"; the teacher `{t['arch']}` {num(t['test_accuracy'], '.2f', 100)} % (n = 1).")


def _with_recipe(r: dict, rows: dict[str, str]) -> dict[str, str]:
    """``rows``' labels, the autokd row's naming its export fine-tune recipe (a file from before the recipe
    was recorded ran ``trial``)."""
    return {**rows, "autokd": f"{rows['autokd']} (fine-tune recipe `{r.get('finetune_recipe', 'trial')}`)"}


def exported(d: dict) -> list[str]:
    r = d["results"]
    t, rows, tg = r["teacher"], r["rows"], r["targets"]
    lines = para(f"Budget {r['budget']} of the teacher's MACs; teacher trained {str(t['epochs']).split(' (')[0]} epochs, gaining "
                 f"{num(r['teacher_plateau_points'], '.2f')} points over its last 20 % (converged: < 1). Export: "
                 f"`{r['export_command']}` after a search whose trials trained {r['search_epochs']} epochs; every "
                 f"other row trains {r['search_epochs']} + {r['finetune_epochs']} epochs on the same "
                 f"{r['train_images'] or 'all'} images. Test accuracy in %, mean ± std over seeds; MACs = conv + linear "
                 "multiply-accumulates (FLOPs = 2 x MACs); latency: batch 1, 1 thread, ONNX Runtime on the CPU, "
                 f"median ms, {r.get('latency_timed', LATENCY_BESIDE_TRAINING)}.") + [""]
    trow = [["teacher", num(t["test_accuracy"], ".2f", 100), mega(t["macs"]), "100.0", f"{t['onnx_latency_ms']:.3f}", 1]]
    labels = _with_recipe(r, HEADLINE_ROWS)
    labels.update({k: f"the same student, fine-tune recipe `{k.removeprefix('autokd-')}`" for k in rows
                   if k.startswith("autokd-")})
    for kind, label in labels.items():
        v = rows.get(kind)
        if v and v["per_seed"]:
            share = [100 * u["macs"] / t["macs"] for u in v["per_seed"]]
            trow.append([label, ms(v["test_accuracy"]), ms(v["macs"], 1e-6, ".3f"), f"{sum(share) / len(share):.1f}",
                         ms(v["onnx_latency_ms"], 1, ".3f"), v["test_accuracy"]["n"]])
    lines += table(["row", "test acc. (%)", "MACs (M)", "% of teacher MACs", "ONNX ms", "n"], trow)
    missing = [labels.get(kind, f"`{kind}`") for kind, v in rows.items() if not v["per_seed"]]
    if missing:  # a run that stopped, or ran only some rows: the table says which are not in it
        lines += [""] + para(f"Not run in this file: {'; '.join(missing)} (the same command trains them; it keeps "
                             "the rows it has).")
    lines += ["", "Paired by seed, in points (mean ± std; per-seed values in the JSON):", ""]
    lines += table(["difference", "points", "target", "met"],
                   [[f"`{key}`: {what}", ms(r[key], 1, ".2f"), want, yes(tg[target])]
                    for key, target, what, want in HEADLINE_POINTS])
    return lines + _recipe_lines(r)


def exported_variant(d: dict, name: str) -> list[str]:
    """A variant of the headline in one paragraph under its base protocol's table: what it changed, its
    rows and differences, against the same targets (the machine is the table's)."""
    r, p = d["results"], d["protocol"]
    labels = _with_recipe(r, VARIANT_ROWS)
    rows = [f"{label} {ms(r['rows'][k]['test_accuracy'])} %" for k, label in labels.items()
            if r["rows"].get(k, {}).get("per_seed")]
    diffs = [f"`{key}` {ms(r[key], 1, '.2f')} (target {want}: {yes(r['targets'][target]).strip('*')})"
             for key, target, _, want in HEADLINE_POINTS if r[key]["n"]]
    change = d["settings"]["reduced"].partition("; VARIANT: ")[2]
    return para(f"Variant `{p}`: {change}. {'; '.join(rows)}; paired by seed, in points: {'; '.join(diffs)}. "
                f"`{name}`: `{d['command']}`; {d['date'][:10]}, {d['wall_s'] / 60:.0f} min, git {d['git_revision'][:10]}.")


def _recipe_lines(r: dict) -> list[str]:
    """How the export fine-tune's recipes compare on the same students (the measurement behind the default)."""
    points = {name: d for name, d in (r.get("export_recipe_points") or {}).items() if d.get("n")}
    if not points:
        return []
    diffs = "; ".join(f"`{name}` minus `{r['finetune_recipe']}` {ms(d, 1, '.2f')} points "
                      f"({', '.join(f'{v:+.2f}' for v in d.get('values', []))})" for name, d in points.items())
    return [""] + para(f"Export fine-tune recipes on the same searched students, paired by seed: {diffs}. "
                       f"The default (`autokd export --finetune-recipe`) is `{r['finetune_recipe']}`, chosen on the "
                       "students' validation accuracy after the fine-tune (in the JSON), not on the test accuracy above.")


# ------------------------------------------------------------------ table 2
def current_claims(files: list[tuple[str, dict]]) -> list[tuple[dict, str]]:
    """Each claim once, from the newest file that ran it (``files`` newest first), with that file's name;
    a claim no file ran comes from the newest file, as not run."""
    chosen: dict[tuple[str, str, str], tuple[dict, str]] = {}
    for name, d in files:
        for c in d["results"]["claims"]:
            key = (c["statement"], c["a"], c["b"])
            if key not in chosen or (not chosen[key][0]["difference"]["n"] and c["difference"]["n"]):
                chosen[key] = (c, name)
    return list(chosen.values())


def claims(files: list[tuple[str, dict]]) -> list[str]:
    r = files[0][1]["results"]
    st = r["student"]
    teachers = " / ".join(sorted({num(d["results"]["teacher"]["test_accuracy"], ".2f", 100) for _, d in files}))
    lines = para(f"Student `{st['arch']}` at width {st['width']}, {st['epochs']} epochs, {st['train_subset'] or 'all'} "
                 f"training images; teacher `{r['teacher']['arch']}` (test {teachers} %: one per file). Test accuracy "
                 f"in %, mean ± std over seeds; a - b in points, paired by seed. Rule: {r['rule']}.") + [""]
    rows = []
    for c, name in current_claims(files):
        diff = c["difference"]
        se = f" (se {diff['se'] * 100:.2f})" if diff.get("se") else ""
        rows.append([c["statement"], c["seed_paper"], f"`{c['a']}`", ms(c["a_test"]), f"`{c['b']}`", ms(c["b_test"]),
                     "—" if diff["mean"] is None else ms(diff) + se, c["paper"], f"**{c['verdict']}**", diff["n"],
                     f"`{name}`" if diff["n"] else "—"])
    header = ["claim", "seed", "a", "a: test acc.", "b", "b: test acc.", "a - b (points)", "paper", "verdict", "n", "file"]
    return lines + table(header, rows)


# ------------------------------------------------------------------ table 3
def overheads(d: dict) -> list[str]:
    r = d["results"]
    st, dr, par, mem = r["step"], r["driver"], r["parallel"], r["memory"]
    rows = [[f"distillation step / (student step + teacher forward), {k}", num(v, ".3f"), f"<= {st['target']}",
             yes(v <= st["target"])] for k, v in st["ratio"].items()]
    per = dr["per_trial_s"]
    if per is None:
        size = dr["sizes"][0]
        rows.append([f"search-driver overhead per trial (one search of {size['trials']}, start-up included)",
                     f"{size['overhead_per_trial_s']:.2f} s", f"<= {dr['target_s']} s",
                     yes(size["overhead_per_trial_s"] <= dr["target_s"])])
    else:
        a, b = dr["sizes"][0]["trials"], dr["sizes"][-1]["trials"]
        rows.append([f"search-driver overhead per trial (slope between searches of {a} and {b} trials)",
                     f"{per:.2f} s", f"<= {dr['target_s']} s", yes(per <= dr["target_s"])])
        rows.append(["search start-up (Ray, teacher, data; the intercept)", f"{dr['startup_s']:.1f} s", "", ""])
    rows.append(["parallel efficiency, 1 vs 2 workers, wall time: T1 / (2 T2)", num(par["efficiency_wall"], ".2f"),
                 "", ""])
    rows.append(["parallel efficiency, 1 vs 2 workers, first trial start to last trial end",
                 num(par["efficiency_span"], ".2f"), "", ""])
    one, drv = mem["one_trial"], mem["search_driver_2_workers"]
    rows.append(["peak resident memory of a process running one trial", f"{one['peak_rss_mb']:.0f} MiB", "", ""])
    if one.get("gpu_max_allocated_mb") is not None:
        rows.append(["peak GPU memory allocated by one trial", f"{one['gpu_max_allocated_mb']:.0f} MiB", "", ""])
    rows.append(["peak resident memory of the search driver process (2 workers)", f"{drv:.0f} MiB", "", ""])
    text = (f"Steps: batch {st['batch']}, student {st['student']}, teacher `{st['teacher']}` run live, median of "
            f"{st['repeats']} interleaved repeats. Driver probe: {dr['trial']}. Parallel probe: {par['trial']}. "
            f"One-trial probe: {one['trial']}. n = 1 run of each probe; every time measured is in the JSON.")
    return para(text) + [""] + table(["measure", "value", "target", "status"], rows)


# ------------------------------------------------------------------ table 4
def latency(d: dict) -> list[str]:
    r = d["results"]
    lines = para(f"Input {'x'.join(map(str, r['input_shape']))} (`{r['dataset']}`), batch {r['batch']}, {r['threads']} "
                 f"thread, {r['statistic']}; ms per image as median (mean ± std). ONNX opset {r['onnx_opset']}, "
                 "ONNX Runtime CPUExecutionProvider. MACs = conv + linear multiply-accumulates.") + [""]
    if not r["table1_students"]:
        lines += ["No table-1 students yet under this results folder: run table 1 of this protocol first.", ""]
    lat = lambda x: f"{x['median_ms']:.3f} ({x['mean_ms']:.3f} ± {num(x['std_ms'], '.3f')})"  # noqa: E731
    rows = [[r_["label"], r_["kind"], mega(r_["macs"]), mega(r_["params"]), lat(r_["torch"]), lat(r_["onnxruntime"])]
            for r_ in r["rows"]]
    return lines + table(["model", "kind", "MACs (M)", "params (M)", "PyTorch ms", "ONNX Runtime ms"], rows)


def below_table4(found: dict, protocol: str) -> list[str]:
    """Below table 4: how well the latency predictor matches measurement, then the latency search against
    the MACs search at equal measured latency (nothing for a gpu protocol that has not run them: its
    script does not)."""
    lines = []
    for part, what, command, render in (
            ("latency_predictor", "Latency predictor vs measured", PREDICTOR_COMMAND, latency_predictor),
            ("latency_search", "Latency search vs MACs search", SEARCH_COMMAND, latency_search)):
        files = found.get((part, protocol))
        if files:
            name, d = files[0]
            lines += para(provenance(d, name)) + [""] + render(d) + [""]
        elif not protocol.startswith("gpu"):
            lines += para(f"{what}: not run yet, `.venv/bin/python {command.format(p=protocol)}`.") + [""]
    return lines


def _budget_ms(rows: list[dict]) -> str:
    """`` = 0.467 ms of the teacher's predicted 0.779 ms``, from the rows (one budget for every seed)."""
    if not rows or rows[0].get("budget_ms") is None:
        return ""
    return f" = {rows[0]['budget_ms']:.3f} ms of the teacher's predicted {rows[0]['teacher_ms']:.3f} ms"


def latency_search(d: dict) -> list[str]:
    r = d["results"]
    text = (f"Latency search vs MACs search, n = {len(r['rows'])}: table 1's `joint` arm searched with "
            f"`--latency-budget {r['latency_budget']}`{_budget_ms(r['rows'])} (predicted, {r['setting_label']}) against "
            "table 1's own `joint` "
            "study (40 % MACs budget) of the same seed. The latency search's best is what `autokd export --best` picks; "
            "the MACs search's is its most accurate trial *measured* at or under that student's latency. Every completed "
            "trial of both timed in one interleaved run from its trained weights; test accuracy of the trial's own "
            "weights, no fine-tune.")
    cell = lambda p: "none measured at or under it" if p is None else (  # noqa: E731
        f"{100 * p['test_accuracy']:.2f} % (trial {p['number']}, {mega(p['macs'])} M MACs, {p['measured_ms']:.3f} ms "
        f"measured, {p['predicted_ms']:.3f} predicted)")
    rows = [[str(x["seed"]), cell(x["latency_best"]), cell(x["macs_best_at_equal_latency"]),
             "—" if x.get("points") is None else f"{x['points']:+.2f}", cell(x.get("macs_best"))] for x in r["rows"]]
    diff = r.get("difference_points") or {}
    mean = "—" if diff.get("mean") is None else f"{diff['mean']:+.2f} ± {num(diff.get('std'), '.2f')}"
    rows.append(["mean", ms(r.get("latency_test_accuracy"), 1.0), ms(r.get("macs_test_accuracy"), 1.0),
                 f"{mean} (target ≥ +{r['target_points']:g}: {yes(r['met'])})", ""])
    own, faster = r.get("vs_macs_best_points") or {}, r.get("vs_macs_best_ms") or {}
    after = [] if own.get("mean") is None else [""] + para(
        f"Against the MACs search's own best (what its `export --best` picks, at whatever latency): "
        f"{own['mean']:+.2f} ± {num(own.get('std'), '.2f')} points at {faster['mean']:+.3f} ± {num(faster.get('std'), '.3f')} "
        f"ms measured (latency search minus MACs search, paired by seed, n = {own['n']}).")
    return para(text) + [""] + table(["seed", "latency search's best (test %)", "MACs search's best at ≤ its latency",
                                      "points", "MACs search's own best, at any latency"], rows) + after


def _pct(v, signed: bool = False) -> str:
    return "—" if v is None else format(100 * v, "+.1f" if signed else ".1f") + " %"


def latency_predictor(d: dict) -> list[str]:
    r = d["results"]
    s, cal, eff = r["summary"], r["calibration"], r["calibration"]["effort"]
    spaces = ", ".join(f"`{k}` ({v['candidates']})" for k, v in r["spaces"].items())
    held = cal.get("held_out") or {}
    text = (f"Latency predictor vs measured: `autokd latency calibrate`'s model, calibrated here on {eff['samples']} "
            f"random zoo candidates, against the measured median of n = {s['n']} random candidates of the shipped spaces "
            f"{spaces}, drawn as a random search draws them (projected onto the {r['budget']} budget); "
            f"{r['left_out_global']} global-ranking candidates left out (their channel plan depends on trained weights). "
            f"Every network timed as the predictor is: warm-up, {r['rounds']} interleaved shuffled rounds, the median. "
            f"Calibration's held-out check: {_pct(held.get('within_10pct'))} within ±10 % (n = {held.get('n', 0)}).")
    w = s["worst"] or {}
    worst = "—" if not w else (f"{_pct(w['rel_error'], True)} ({w['student']}, {mega(w['macs'])} M MACs: "
                               f"{w['predicted_ms']:.3f} ms predicted, {w['measured_ms']:.3f} measured)")
    row = [s["n"], _pct(s["within_10pct"]), _pct(s["mape"]), _pct(s["median_abs_error"]), worst,
           yes(s["target"]["met"]), f"{cal['wall_s']:.0f} s", r["setting_label"]]
    header = ["n", "within ±10 %", "MAPE", "median abs. error", "worst", "target: ≥ 95 % within ±10 %",
              "calibration wall time", "setting"]
    return para(text) + [""] + table(header, [row])


# ------------------------------------------------------------------ section 5: GPU
def ray_tune_throughput(search: dict) -> str:
    """Table 1's searches as a throughput row: trained epochs x training images / trials' span."""
    runs = search["results"]["runs"]
    if not runs or "train_images" not in runs[0]:
        return ""
    images = sum(r["epochs_spent"] * r["train_images"] for r in runs)
    span = sum(r["wall_s"] for r in runs)
    gpus = runs[0].get("gpus_per_trial")
    return (f"Through Ray Tune (table 1's {len(runs)} searches, {runs[0]['parallel']} trials at once, "
            f"{gpus:g} GPU each): {images / span:,.0f} training images/s over the trials' spans "
            f"(validation, early stopping and trial start-up included; n = {len(runs)} searches)." if span else "")


def gpu_throughput(d: dict) -> list[str]:
    r = d["results"]
    gpu = d["machine"]["device_name"]
    lines = para(f"Trial: {r['trial']}. Teacher `{r['teacher']['arch']}` (test accuracy "
                 f"{num(r['teacher']['test_accuracy'], '.2f', 100)} %). Device: {gpu}. Images/s of the timed epoch "
                 "(its validation pass included); K at once: K processes released together, whole GPU = "
                 "K x images / span of their timed epochs. Validation accuracy after the probe's epochs, same seed.") + [""]
    rows = []
    for row in r["rows"]:
        per = row["per_trial_images_per_s"]
        accs = [x["val_accuracy"] for x in row["runs"]]
        rows.append([row["what"], "on" if row["amp"] else "off", row["trials_at_once"],
                     f"{row['whole_gpu_images_per_s']:,.0f}",
                     f"{sum(per) / len(per):,.0f}" + (f" (min {min(per):,.0f})" if len(per) > 1 else ""),
                     f"{100 * sum(accs) / len(accs):.2f}", len(per)])
    return lines + table(["row", "bf16 autocast", "trials at once", "whole GPU images/s", "per trial images/s",
                          "val. acc. (%)", "n"], rows)


RANKING_COMMAND = "benchmarks/run.py ranking --protocol {p}"


def ranking_of(found: dict, protocol: str) -> list[str]:
    """Below the headline: does the search rank students as the final training does?"""
    files = found.get(("ranking", protocol))
    if not files:
        return para(f"Search score vs final score (Kendall tau): not run yet, "
                    f"`.venv/bin/python {RANKING_COMMAND.format(p=protocol)}`.") + [""]
    name, d = files[0]
    return para(provenance(d, name)) + [""] + ranking(d) + [""]


def ranking(d: dict) -> list[str]:
    r = d["results"]
    rows = [[m["trial"], mega(m["macs"]), num(m["search_val_accuracy"], ".2f", 100),
             num(m["test_accuracy_after_finetune"], ".2f", 100)] for m in r["members"]]
    return para(f"The front of `{r['study']}` (seed {r['seed']}, n = {len(rows)} students), each exported with "
            f"`--finetune-epochs {r['finetune_epochs']}`: **Kendall tau-b {num(r['kendall_tau_b'], '.2f')}** between "
            "the search's score (validation %, the trial's own epochs) and the test % after the fine-tune "
            "(1: the same order, 0: none). On a front a larger student scores higher by construction, so this "
            "asks only whether the fine-tune keeps the larger students ahead; it says nothing of the trials "
            "the front left out.") + [""] + table(
        ["trial", "MACs (M)", "search val. (%)", "test after fine-tune (%)"], rows)


RENDER = {"exported": exported, "search_quality": search_quality, "overheads": overheads, "latency": latency,
          "ranking": ranking, "gpu_throughput": gpu_throughput}  # claims: rendered from all of a protocol's files


# ------------------------------------------------------------------ the page
def load(results: Path) -> dict[tuple[str, str], list[tuple[str, dict]]]:
    """(part, protocol) -> [(file name, data)], the current file first, then dated ones, newest first."""
    out: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for path in sorted(results.glob("*.json")):
        try:
            d = json.loads(path.read_text())
        except ValueError:
            continue
        if d.get("part") in PARTS or d.get("part") in GPU_PARTS or d.get("part") in ("ranking", "latency_predictor",
                                                                                      "latency_search"):
            out.setdefault((d["part"], d["protocol"]), []).append((path.name, d))
    for (part, protocol), files in out.items():
        files.sort(key=lambda f: f[0], reverse=True)
        files.sort(key=lambda f: f[0] != f"{part}-{protocol}.json")
    return out


def _protocol_key(p: str) -> tuple[int, str]:
    base = p.split("-")[0]
    return (PROTOCOL_ORDER.index(base) if base in PROTOCOL_ORDER else len(PROTOCOL_ORDER), p)


def short_teacher_note(found: dict) -> list[str]:
    """One sentence naming the current tables whose teacher stopped short of the protocol's convergence
    rule (their distillation results say little), or nothing."""
    converged = PROTOCOLS["cpu"].teacher_epochs
    short = {}
    for (part, q), files in sorted(found.items()):
        if not files or part in ("latency_predictor", "latency_search"):  # no teacher of its own in it
            continue
        s = files[0][1]["settings"]
        if s["dataset"] != "digits" and s["teacher_epochs"] < converged and s.get("teacher_plateau_points") is None:
            short.setdefault(s["teacher_epochs"], []).append(f"{PARTS[part][0] if part in PARTS else part} (`{q}`)")
    return [line for epochs, parts in sorted(short.items()) for line in para(
        f"On a teacher trained only {epochs} epochs, before the protocol's convergence rule, so their distillation "
        f"results are not representative (not rerun yet): {'; '.join(parts)}.") + [""]]


def top(found: dict, results: Path, protocols: list[str]) -> list[str]:
    """The headline, the caveat on the teacher, how the page is made, and what each protocol reduced."""
    shown = results.resolve().relative_to(HERE.parent) if results.resolve().is_relative_to(HERE.parent) else results
    lines = ["# autokd benchmarks", ""]
    first = next((found[("exported", p)][0][1] for p in HEADLINE_ORDER if ("exported", p) in found), None)
    lines += (headline(first) if first else ["No headline yet: `benchmarks/run.py exported` has not been run."]) + [""]
    newest = {}  # protocol -> its newest JSON's settings (the protocol's own text as it is now)
    for (_, q), files in found.items():
        for _, d in files:
            if d["date"] >= newest.get(q, ("", None))[0]:
                newest[q] = (d["date"], d["settings"])
    settings = {p: newest[p][1] for p in protocols if p in newest}
    lines += short_teacher_note(found)
    lines += para(f"Generated from `{shown}/*.json` by `.venv/bin/python benchmarks/make_tables.py`, each table under "
                  "its command; superseded results: `benchmarks/results/archive/`. Every part of the CPU protocol: "
                  "`bash benchmarks/run_all.sh cpu`; minutes on any CUDA GPU: `bash benchmarks/gpu_protocol.sh` "
                  "(section 5); every part, nothing reduced: `bash benchmarks/full_protocol.sh` (hours on a CUDA GPU).")
    lines += ["", "Protocols (`benchmarks/protocols.py`), each as its JSON records what it reduced:"]
    for p, s in settings.items():
        if p in INLINE:  # its change is said where its numbers are
            continue
        base, _, change = s["reduced"].partition("; VARIANT: ")
        lines += para(f"- `{p}`: " + (f"`{VARIANTS[p][0]}` with one change: {change}." if change and p in VARIANTS
                                      else f"{base}."))
    return lines + [""]


def part_section(part: str, found: dict, protocols: list[str], results: Path, page_dir: Path) -> list[str]:
    title, command = PARTS[part]
    inline = INLINE if part == "exported" else set()
    protocols = [p for p in protocols if p not in inline]
    shown = [p for p in protocols if (part, p) in found]
    lines = [f"## {title}" + (f" (protocol `{shown[0]}`)" if len(shown) == 1 and shown == protocols[:1] else ""), ""]
    for p in protocols:
        files = found.get((part, p), [])
        only = parts_of(p)  # a variant runs only its parts (run.py's names); the gpu protocols skip these
        skips = (p.startswith("gpu") and part not in ("search_quality", "latency")) or \
            (only is not None and command.split()[1] not in only)
        if not files:
            lines += [] if skips else [f"### Protocol `{p}`", "", f"Not run yet: `.venv/bin/python {command.format(p=p)}`.", ""]
            lines += below_table4(found, p) if part == "latency" and not skips else []
            continue
        lines += [] if len(shown) == 1 and shown == protocols[:1] else [f"### Protocol `{p}`", ""]
        if part == "claims":
            lines += para("Sources: " + " ".join(provenance(d, name) for name, d in files)) + [""] + claims(files) + [""]
            continue
        name, d = files[0]
        lines += para(provenance(d, name)) + [""] + (search_quality(d, p == shown[0]) if part == "search_quality"
                                                     else RENDER[part](d)) + [""]
        if part == "exported":
            lines += [line for v in sorted(inline) if VARIANTS[v][0] == p and found.get((part, v))
                      for line in exported_variant(found[(part, v)][0][1], found[(part, v)][0][0]) + [""]]
            lines += ranking_of(found, p)
        if part == "latency":
            lines += below_table4(found, p)
        if part == "search_quality":
            lines += search_quality_figure(results / name, page_dir, caption=p == shown[0]) + [""]
    return lines


def gpu_section(found: dict) -> list[str]:
    """What ran on a GPU, where, and what has not run yet."""
    lines = ["## 5. GPU", ""]
    ran = {}
    for (part, p), files in sorted(found.items()):
        d = files[0][1] if files else None
        if d and d["machine"]["device"] == "cuda":
            ran.setdefault((p, d["machine"]["device_name"]), []).append(part)
    for (p, gpu), parts in sorted(ran.items()):
        lines += [f"- Protocol `{p}` ran on {gpu}: {', '.join(sorted(parts))}."]
    missing = [p for p in ("gpu", "full") if not any(q == p for q, _ in ran)]
    if missing:
        lines += para(f"Not run on a GPU yet: protocol{'s' if len(missing) > 1 else ''} "
                      + " and ".join(f"`{p}`" for p in missing) + ". On any machine with a CUDA GPU, "
                      "`bash benchmarks/gpu_protocol.sh` (minutes: the resnet56 teacher, table 1 at n = 1, table 3's "
                      "GPU rows, table 4) or `bash benchmarks/full_protocol.sh` (hours: every part at n = 3) writes them.")
    lines += [""]
    for p in sorted({p for q, p in found if q == "gpu_throughput"}, key=_protocol_key):
        name, d = found[("gpu_throughput", p)][0]
        lines += [f"### {GPU_PARTS['gpu_throughput']}, protocol `{p}`", ""] + para(provenance(d, name)) + [""]
        lines += gpu_throughput(d) + [""]
        if ("search_quality", p) in found:
            lines += para(ray_tune_throughput(found[("search_quality", p)][0][1])) + [""]
    return lines


def page(found: dict[tuple[str, str], list[tuple[str, dict]]], results: Path, page_dir: Path = HERE) -> str:
    """The Markdown page; ``page_dir`` is where it will be written (figures are linked relative to it)."""
    protocols = sorted({p for part, p in found if part in PARTS} | {"cpu"}, key=_protocol_key)
    lines = top(found, results, protocols)
    for part in PARTS:
        lines += part_section(part, found, protocols, results, page_dir)
    lines += gpu_section(found)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--out", type=Path, default=HERE / "BENCHMARKS.md")
    ap.add_argument("--no-figures", action="store_true", help="do not (re)draw benchmarks/figures.py's PNGs")
    args = ap.parse_args(argv)
    if not args.no_figures:
        written, problems = write_figures(args.results)
        for line in [f"wrote {p}" for p in written] + problems:
            print(line, file=sys.stderr if not line.startswith("wrote") else sys.stdout)
    args.out.write_text(page(load(args.results), args.results, args.out.resolve().parent))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
