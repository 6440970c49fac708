"""Write BENCHMARKS.md from the JSON files in benchmarks/results/; the page is never edited by hand.

    .venv/bin/python benchmarks/make_tables.py [--results DIR] [--out FILE] [--no-figures]

Each ``<part>-<protocol>.json`` (written by benchmarks/run.py) becomes one table with the command
that produced it, its date, machine, protocol, n and mean ± std. A part with no file says which
command would make it. Pure formatting: nothing here measures or recomputes a number.

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
from pathlib import Path

from figures import png_path, write_figures
from protocols import parts_of

HERE = Path(__file__).resolve().parent
PARTS = {  # file stem -> (section title, the command that writes it)
    "exported": ("The exported student (headline)", "benchmarks/run.py exported --protocol {p}"),
    "search_quality": ("1. Search quality", "benchmarks/run.py search --protocol {p}"),
    "claims": ("2. The seeds' claims", "benchmarks/run.py claims --protocol {p}"),
    "overheads": ("3. Overheads", "benchmarks/run.py overheads --protocol {p}"),
    "latency": ("4. Cost vs latency", "benchmarks/run.py latency --protocol {p}"),
    "ranking": ("5. Does the search rank students as the final training does?", "benchmarks/run.py ranking --protocol {p}"),
}
# parts only the device protocols write: shown in section 5, never as "not run yet" for the others
DEVICE_PARTS = {"gpu_throughput": "Table 3's GPU rows", "device_estimate": "How the device protocol was sized"}
PROTOCOL_ORDER = ("cpu", "full", "device", "smoke")


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


def provenance(d: dict) -> list[str]:
    m = d["machine"]
    device = m["device_name"] if m["device"] == "cuda" else f"CPU only ({m['cpu_model']})"
    dirty = [f for f in d.get("git_uncommitted") or [] if f.startswith(("autokd", "search_spaces", "benchmarks/spaces"))
             or (f.startswith("benchmarks/") and f.endswith((".py", ".sh")))]  # code and spaces, not results
    git = d["git_revision"][:10] + (f" with uncommitted changes to {', '.join(dirty)}" if dirty else "")
    commands = d["results"].get("commands") or [d["command"]]
    return [f"- Command{'s' if len(commands) > 1 else ''}: " + "; ".join(f"`{c}`" for c in commands),
            f"- Date: {d['date']}; wall time {d['wall_s'] / 60:.1f} min; git {git}",
            f"- Machine: {m['platform']}, {m['cpus']} CPUs ({m['cpu_model']}), torch {m['torch']}, device: {device}; "
            f"1-min load average at the end: {m['load_average_1m']}",
            f"- Protocol `{d['protocol']}`, dataset `{d['settings']['dataset']}`: reduced: {d['settings']['reduced']}."] + (
        [f"- Summarised again, nothing trained: `{d['summarized']['command']}` on {d['summarized']['date']}, git "
         f"{d['summarized']['git_revision'][:10]}"] if d.get("summarized") else []) + (
        [f"- **Superseded**: {d['superseded']}"] if d.get("superseded") else [])


# ------------------------------------------------------------------ table 1
def measured(runs: list[dict], arm: str) -> str:
    """The day(s) an arm's runs were measured: a file's arms may come from commands days apart
    (run.py search merges them when the protocol is the same), and the page says so."""
    days = sorted({str(r.get("date", ""))[:10] for r in runs if r["arm"] == arm} - {""})
    return "—" if not days else days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}"


def search_quality(d: dict) -> list[str]:
    r, s = d["results"], d["settings"]
    t, target = r["teacher"], r["target"]
    n = max((v["hypervolume"]["n"] for v in r["by_arm"].values()), default=0)
    parallel = r["runs"][0]["parallel"] if r["runs"] else s["parallel"]
    lines = [f"Teacher `{t['arch']}` (width {t['width']}, {mega(t['macs'])} M MACs, test accuracy "
             f"{num(t['test_accuracy'], '.2f', 100)} %); budget {s['budget']} of its MACs; "
             + (f"every arm the same compute, {r['compute_budget']:g} epoch-equivalents (what {s['trials']} trials of "
                f"{s['epochs']} epochs cost without early stopping; `autokd search --compute`), trials of {s['epochs']} "
                "epochs, " if r.get("compute_budget") else f"{s['trials']} trained trials per search, {s['epochs']} "
                "epochs each, ") +
             f"{s['train_subset'] or 'all'} training images; {parallel} trials at once; n = {n} seeds. "
             "Hypervolume of (validation accuracy, MACs / budget) w.r.t. (0, budget), in [0, 1]; best test = "
             "test accuracy of the best-validation trial's saved weights. MACs = multiply-accumulates of conv + "
             "linear layers (FLOPs = 2 x MACs).", ""]
    defs = r["arm_definitions"]
    at_budget = "target_at_budget" in r
    rows = [[f"`{arm}`", defs[arm]["what"], f"`{defs[arm]['sampler']}`", defs[arm].get("stopping", "—"),
             ms(v["hypervolume"], 1, ".4f")] + ([ms(v["hypervolume_at_budget"], 1, ".4f")] if at_budget else []) +
            [ms(v["test_accuracy"]), ms(v["epochs_spent"], 1, ".1f"),
             ms(v.get("compute_spent"), 1, ".1f"), ms(v.get("trials"), 1, ".1f"), ms(v["wall_s"], 1, ".0f"),
             measured(r["runs"], arm), v["hypervolume"]["n"]]
            for arm in r["arm_order"] if (v := r["by_arm"].get(arm))]
    header = ["arm", "what", "sampler", "early stopping", "hypervolume"] + (["hypervolume at the budget"] if at_budget else []) + [
              "best test acc. (%)", "epochs spent",
              "compute spent (epoch-eq.)", "trained trials", "trials span (s)", "measured", "n"]
    lines += table(header, rows)
    ratio = r["hypervolume_ratio_vs_random"]
    per_seed = ms(r["ratio_per_seed"], 1, ".3f")
    lines += ["", f"**Joint / random hypervolume: {num(ratio, '.3f')}** (per seed {per_seed}); "
              f"target >= {target['ratio_target']}: {yes(target['ratio_met'])}"
              + (f" (equal compute; over random search with the same ladder: "
                 f"{num(r.get('hypervolume_ratio_vs_random_ladder'), '.3f')}, per seed "
                 f"{ms(r.get('ratio_ladder_per_seed'), 1, '.3f')})" if "hypervolume_ratio_vs_random_ladder" in r else "")
              + f". Joint above every single-method arm ({', '.join(r.get('single_method') or ['prune-only', 'distill-only'])}): "
              f"{yes(target['above_single_method'])}. "
              + (f"Joint with the ladder above joint without: {yes(target['ladder_helps'])}. "
                 if "ladder_helps" in target else "") + 
              f"Both together: {yes(target['met'])}."]
    if at_budget:
        tb = r["target_at_budget"]
        lines += ["", "At exactly the compute budget (`hypervolume at the budget`: each study's hypervolume once its "
                  f"compute spent reached {r['compute_budget']:g} epoch-equivalents, without the trials still running "
                  f"then): joint / random **{num(tb['ratio_vs_random'], '.3f')}** (per seed "
                  f"{ms(r['ratio_per_seed_at_budget'], 1, '.3f')}), target >= {tb['ratio_target']}: {yes(tb['ratio_met'])}; "
                  f"over random with the ladder {num(r['hypervolume_ratio_vs_random_ladder_at_budget'], '.3f')}; joint above "
                  f"every single-method arm: {yes(tb['above_single_method'])}; ladder helps: {yes(tb['ladder_helps'])}; "
                  f"all: {yes(tb['met'])}."]
    ranked = sorted(((v["hypervolume"]["mean"], arm) for arm, v in r["by_arm"].items()
                     if v["hypervolume"]["mean"] is not None), reverse=True)
    lines += ["", "Arms by mean hypervolume: " + " > ".join(f"`{arm}` {hv:.4f}" for hv, arm in ranked) + "."]
    union = r.get("union_front")
    if union and union.get("searching_arms") is not None:
        n = union["trials_of"]
        lines += ["", f"Ceiling: the front of the trials every searching arm completed, over all seeds "
                  f"({n['searching_arms']} trials trained) has hypervolume {union['searching_arms']:.4f}, "
                  f"{num(union['searching_arms_over_random'], '.3f')} x random's mean; with torch-pruning's models too, "
                  f"{num(union['all_arms'], '.4f')} ({num(union['all_arms_over_random'], '.3f')} x). A single search "
                  f"reaches a ratio above the first only with a student better than every one this table trained."]
    match = r.get("compute_to_match_random")
    if match:
        seeds = "; ".join(f"seed {m['seed']}: random {m['baseline_hypervolume']:.4f} after {m['baseline_compute']:.1f}, "
                          + (f"joint there after {m['compute']:.1f} ({m['times']:.1f} x)" if m["compute"] else
                             "joint never there") for m in match["per_seed"])
        lines += ["", "Compute to match (not a target of the issue; the compute axis of the figure): per seed, the "
                  "compute (epoch-equivalents) joint had spent when its hypervolume first reached random search's "
                  f"final one, and how many times that random spent: {seeds}. Random search spent at least "
                  f"**{num(match['least_times'], '.1f')} x** the compute joint needed for the same hypervolume."]
    gap = r.get("teacher_gap")
    if gap:
        pts = ", ".join(f"`{a}` {g:.2f}" for a, g in gap["points"].items() if g is not None)
        above = gap["joint_minus_torch_pruning_points"]
        lines += ["", f"Gap to the teacher's test accuracy (points, teacher minus the arm's mean best test): {pts}. "
                  f"Best searching arm (joint or inherit) within {gap['target_points']:g} points at the search's own "
                  f"epochs: {yes(gap['met'])} ({num(gap['best_searched'], '.2f')} points)."
                  + ("" if above is None else f" Joint minus torch-pruning: {above:+.2f} points.")]
    es = r["by_arm"].get("joint"), r["by_arm"].get("joint-no-es")
    if all(es):
        lines += ["", f"Early stopping (`joint` measured {measured(r['runs'], 'joint')}, `joint-no-es` "
                  f"{measured(r['runs'], 'joint-no-es')}): with it, hypervolume {ms(es[0]['hypervolume'], 1, '.4f')} for "
                  f"{ms(es[0]['epochs_spent'], 1, '.1f')} training epochs; without, "
                  f"{ms(es[1]['hypervolume'], 1, '.4f')} for {ms(es[1]['epochs_spent'], 1, '.1f')} epochs."]
    return lines


def search_quality_figure(json_path: Path, page_dir: Path) -> list[str]:
    """Table 1's figure (benchmarks/figures.py) as a Markdown image, or a line saying how to draw it."""
    png = png_path(json_path)
    if not png.exists() or (json_path.exists() and png.stat().st_mtime < json_path.stat().st_mtime):
        return [f"No figure of `{json_path.name}` yet: `.venv/bin/python benchmarks/figures.py` draws it "
                "(needs `pip install -e \".[bench]\"` and a Chromium)."]
    return [f"![hypervolume against compute]({Path(os.path.relpath(png, page_dir)).as_posix()})", "",
            "Hypervolume against compute: x = compute spent so far (epoch-equivalents) in the order trials "
            "finished (each run's `hypervolume_vs_compute`; runs from before the compute budget: training epochs, "
            "`hypervolume_vs_epochs`); per arm the mean over its seeds as a line, each seed faint. Drawn by "
            f"`.venv/bin/python benchmarks/figures.py` from `{json_path.name}`."]


# ------------------------------------------------------------------ the headline
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


def exported(d: dict) -> list[str]:
    r = d["results"]
    if "vs_torch_pruning_equal_macs_points" not in r:
        return _exported_before_pairs(d)
    t, rows, tg = r["teacher"], r["rows"], r["targets"]
    lines = [f"Budget {r['budget']} of the teacher's MACs; teacher trained {t['epochs']} epochs, gaining "
             f"{num(r['teacher_plateau_points'], '.2f')} points over its last 20 % (converged: < 1). Export: "
             f"`{r['export_command']}` after a search whose trials trained {r['search_epochs']} epochs; every other "
             f"row trains {r['search_epochs']} + {r['finetune_epochs']} epochs on the same {r['train_images'] or 'all'} "
             "images. Test accuracy in %, mean ± std over seeds; MACs = conv + linear multiply-accumulates "
             "(FLOPs = 2 x MACs); latency: batch 1, 1 thread, ONNX Runtime on the CPU, median ms.", ""]
    trow = [["teacher", num(t["test_accuracy"], ".2f", 100), mega(t["macs"]), "100.0", f"{t['onnx_latency_ms']:.3f}", 1]]
    for kind, label in HEADLINE_ROWS.items():
        v = rows.get(kind)
        if v and v["per_seed"]:
            share = [100 * u["macs"] / t["macs"] for u in v["per_seed"]]
            trow.append([label, ms(v["test_accuracy"]), ms(v["macs"], 1e-6, ".3f"), f"{sum(share) / len(share):.1f}",
                         ms(v["onnx_latency_ms"], 1, ".3f"), v["test_accuracy"]["n"]])
    lines += table(["row", "test acc. (%)", "MACs (M)", "% of teacher MACs", "ONNX ms", "n"], trow)
    lines += ["", "Paired by seed, in points (mean ± std; per-seed values in the JSON):", ""]
    lines += table(["difference", "points", "target", "met"],
                   [[f"`{key}`: {what}", ms(r[key], 1, ".2f"), want, yes(tg[target])]
                    for key, target, what, want in HEADLINE_POINTS])
    return lines


def _exported_before_pairs(d: dict) -> list[str]:
    """The headline as measured before it was paired with Torch-Pruning at equal MACs."""
    r = d["results"]
    t, rows, tg = r["teacher"], r["rows"], r["targets"]
    n = rows["autokd"]["test_accuracy"]["n"]
    lines = [f"Budget {r['budget']} of the teacher's MACs. Export: `{r['export_command']}` (N = "
             f"{r['finetune_epochs']}, the teacher's own epochs, on {r['train_images'] or 'all'} training images) "
             f"after a search whose trials trained {r['search_epochs']} epochs; torch-pruning and alone train "
             f"{r['search_epochs']} + {r['finetune_epochs']} epochs on the same images. Test accuracy in %, mean ± std "
             f"over n = {n} seeds; MACs = conv + linear multiply-accumulates (FLOPs = 2 x MACs); latency: batch 1, "
             "1 thread, ONNX Runtime, median ms.", ""]
    trow = [["teacher", f"`{t['arch']}`", num(t["test_accuracy"], ".2f", 100), mega(t["macs"]), "100.0",
             f"{t['onnx_latency_ms']:.3f}", t["epochs"], 1]]
    what = {"torch-pruning": "Torch-Pruning (global group-norm), fine-tuned on labels",
            "autokd": "`autokd search` + `autokd export --best --finetune-epochs N`",
            "alone": "the exported student's architecture, trained alone"}
    for kind, label in what.items():
        v = rows[kind]
        if not v["per_seed"]:
            continue
        share = [100 * u["macs"] / t["macs"] for u in v["per_seed"]]
        trow.append([label, ", ".join(sorted({f"`{u.get('init') or '-'}`" for u in v["per_seed"]})) if kind == "autokd"
                     else "", ms(v["test_accuracy"]), ms(v["macs"], 1e-6, ".3f"), f"{sum(share) / len(share):.1f}",
                     ms(v["onnx_latency_ms"], 1, ".3f"), v["per_seed"][0]["epochs"], v["test_accuracy"]["n"]])
    lines += table(["row", "arch / init", "test acc. (%)", "MACs (M)", "% of teacher MACs", "ONNX ms", "epochs", "n"],
                   trow)
    gap = r["gap_to_teacher_points_per_seed"]
    above = r["autokd_minus_torch_pruning_points"]
    lines += ["", f"Exported student before the export fine-tune: {ms(rows['autokd'].get('test_accuracy_before_finetune'))} %; "
              f"after: {ms(rows['autokd']['test_accuracy'])} %. **gap_to_teacher_points: {num(r['gap_to_teacher_points'], '.2f')}** "
              f"({ms(gap, 1, '.2f')} over seeds).",
              "", f"Targets: after the export fine-tune at least the teacher's test accuracy: {yes(tg['at_least_teacher'])}; "
              f"at least {tg['above_torch_pruning_points']:g} point above torch-pruning at equal epochs: "
              f"{yes(tg['above_torch_pruning'])} (difference {ms(above, 1, '.2f')} points, paired by seed); every "
              f"exported student within the budget: {yes(tg['within_budget'])}."]
    return lines


# ------------------------------------------------------------------ table 2
def claims(d: dict) -> list[str]:
    r = d["results"]
    st, t = r["student"], r["teacher"]
    lines = [f"Student `{st['arch']}` at width {st['width']}, {st['epochs']} epochs, {st['train_subset'] or 'all'} "
             f"training images; teacher `{t['arch']}` (test accuracy {num(t['test_accuracy'], '.2f', 100)} %). "
             "Test accuracy in %, mean ± std over seeds; difference in points, paired by seed. "
             f"Rule: {r['rule']}.", ""]
    rows = []
    for c in r["claims"]:
        diff = c["difference"]
        se = f" (se {diff['se'] * 100:.2f})" if diff.get("se") else ""
        d_txt = "—" if diff["mean"] is None else ms(diff) + se
        rows.append([c["statement"], c["seed_paper"], f"`{c['a']}`", ms(c["a_test"]), f"`{c['b']}`", ms(c["b_test"]),
                     d_txt, c["paper"], f"**{c['verdict']}**", diff["n"]])
    header = ["claim", "seed", "a", "a: test acc.", "b", "b: test acc.", "a - b (points)", "paper", "verdict", "n"]
    lines += table(header, rows)
    lines += [""] + [sentence(c) for c in r["claims"]]
    lines += ["", "Runs:", ""]
    lines += table(["run", "what", "test acc. (%)", "MACs (M)", "params", "wall per run (s)", "n"],
                   [[f"`{k}`", v["what"], ms(v["test_accuracy"]), ms(v["macs"], 1e-6, ".3f"),
                     ms(v["params"], 1, ".0f"), ms(v["wall_s"], 1, ".1f"), v["test_accuracy"]["n"]]
                    for k, v in sorted(r["runs"].items())])
    rec = r["runs"].get("recovery-pruned")
    if rec:
        lines += ["", f"Recovery (seed 000): the student alone, {ms(r['runs']['alone']['test_accuracy'])} %, pruned "
                  f"at ratio {st['recovery_ratio']} drops to {ms(rec['test_accuracy'])} %; {st['recovery_epochs']} "
                  f"epochs of fine-tuning bring it to {ms(r['runs']['recovery-kd']['test_accuracy'])} % with "
                  f"distillation and {ms(r['runs']['recovery-ce']['test_accuracy'])} % on the labels alone."]
    return lines


def sentence(c: dict) -> str:
    diff = c["difference"]
    if diff["mean"] is None:
        return f"- {c['statement']} (seed {c['seed_paper']}): not run."
    how = {"reproduced": "reproduced", "not reproduced": "did not reproduce",
           "same direction, within noise": "went the claimed way but within the noise"}.get(c["verdict"], c["verdict"])
    return (f"- {c['statement']} (seed {c['seed_paper']}): **{how}** here — `{c['a']}` {ms(c['a_test'])} % vs "
            f"`{c['b']}` {ms(c['b_test'])} %, difference {ms(diff)} points (n = {diff['n']}).")


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
    lines = [f"Step timings: batch {st['batch']}, student {st['student']}, teacher `{st['teacher']}` run live, "
             f"median of {st['repeats']} interleaved repeats (ms): "
             + ", ".join(f"{k} {v:.1f}" for k, v in st["median_ms"].items()) + ".",
             f"Driver probe: {dr['trial']}; " + "; ".join(
                 f"{s['trials']} trials: wall {s['wall_s']:.1f} s, trials' own run time {s['sum_run_s']:.2f} s"
                 for s in dr["sizes"]) + ".",
             f"Parallel probe: {par['trial']}; " + "; ".join(
                 f"{k} worker(s): wall {v['wall_s']:.1f} s, span {num(v['span_s'], '.1f')} s"
                 for k, v in par["runs"].items()) + ".",
             f"One-trial probe: {one['trial']}.", ""]
    return lines + table(["measure", "value", "target", "status"], rows)


# ------------------------------------------------------------------ table 4
def latency(d: dict) -> list[str]:
    r = d["results"]
    lines = [f"Input {'x'.join(map(str, r['input_shape']))} (`{r['dataset']}`), batch {r['batch']}, {r['threads']} "
             f"thread, {r['statistic']}; ms per image as median (mean ± std). ONNX opset {r['onnx_opset']}, "
             "ONNX Runtime CPUExecutionProvider. MACs = conv + linear multiply-accumulates.", ""]
    if not r["table1_students"]:
        lines += ["No table-1 students yet under this results folder: run table 1 of this protocol first.", ""]
    lat = lambda x: f"{x['median_ms']:.3f} ({x['mean_ms']:.3f} ± {num(x['std_ms'], '.3f')})"  # noqa: E731
    rows = [[r_["label"], r_["kind"], mega(r_["macs"]), mega(r_["params"]), lat(r_["torch"]), lat(r_["onnxruntime"])]
            for r_ in r["rows"]]
    return lines + table(["model", "kind", "MACs (M)", "params (M)", "PyTorch ms", "ONNX Runtime ms"], rows)


# ------------------------------------------------------------------ section 5: the device protocol
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
    lines = [f"Trial: {r['trial']}. Teacher `{r['teacher']['arch']}` (test accuracy "
             f"{num(r['teacher']['test_accuracy'], '.2f', 100)} %). Device: {gpu}. Images/s of the timed epoch "
             "(its validation pass included); K at once: K processes released together, whole GPU = "
             "K x images / span of their timed epochs. Validation accuracy after the probe's epochs, same seed.", ""]
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


def device_estimate(d: dict) -> list[str]:
    r = d["results"]
    lines = [f"**An estimate, not a measurement** (`{d['command']}`, {d['date']}, on {d['machine']['cpu_model']}): "
             f"host cost {r['host_us_per_op_here']:.1f} us per op measured here + {r['launch_us']:g} us per CUDA "
             f"launch (assumed); GPU at {100 * r['achieved_fraction']:g} % of the datasheet's dense TF32 rate "
             f"({r['tf32_dense_flops'] / 1e12:.0f} TFLOP/s; assumed). The model is in benchmarks/device_estimate.py.",
             ""]
    order = ("install", "tests", "teacher", "gpu", "search", "latency")
    rows = [[name, f"{r['parts'][name]['s']:.0f}"] for name in sorted(r["parts"], key=lambda n: (n not in order,
                                                                                            order.index(n) if n in order else 0, n))]
    lines += table(["step", "estimated s"], rows + [["**total**", f"**{r['total_s']:.0f}** of {r['budget_s']}"]])
    return lines


def ranking(d: dict) -> list[str]:
    r = d["results"]
    rows = [[m["trial"], mega(m["macs"]), num(m["search_val_accuracy"], ".2f", 100),
             num(m["test_accuracy_after_finetune"], ".2f", 100)] for m in r["members"]]
    return [f"The front of `{r['study']}` (seed {r['seed']}, n = {len(rows)} students), each exported with "
            f"`--finetune-epochs {r['finetune_epochs']}`: **Kendall tau-b {num(r['kendall_tau_b'], '.2f')}** between "
            "the search's score (validation %, the trial's own epochs) and the test % after the fine-tune "
            "(1: the same order, 0: none).", ""] + table(
        ["trial", "MACs (M)", "search val. (%)", "test after fine-tune (%)"], rows)


RENDER = {"ranking": ranking, "exported": exported, "search_quality": search_quality, "claims": claims, "overheads": overheads, "latency": latency,
          "gpu_throughput": gpu_throughput, "device_estimate": device_estimate}


# ------------------------------------------------------------------ the page
def load(results: Path) -> dict[tuple[str, str], list[tuple[str, dict]]]:
    """(part, protocol) -> [(file name, data)]: one part may have files from several machines."""
    out: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for path in sorted(results.glob("*.json")):
        try:
            d = json.loads(path.read_text())
        except ValueError:
            continue
        if d.get("part") in PARTS or d.get("part") in DEVICE_PARTS:
            out.setdefault((d["part"], d["protocol"]), []).append((path.name, d))
    for (part, protocol), files in out.items():  # the current file first, then the dated ones, newest first
        files.sort(key=lambda f: f[0], reverse=True)
        files.sort(key=lambda f: f[0] != f"{part}-{protocol}.json")
    return out


def _protocol_key(p: str) -> tuple[int, str]:
    base = p.split("-")[0]
    return (PROTOCOL_ORDER.index(base) if base in PROTOCOL_ORDER else len(PROTOCOL_ORDER), p)


def page(found: dict[tuple[str, str], list[tuple[str, dict]]], results: Path, page_dir: Path = HERE) -> str:
    """The Markdown page; ``page_dir`` is where it will be written (figures are linked relative to it)."""
    shown = results.resolve().relative_to(HERE.parent) if results.resolve().is_relative_to(HERE.parent) else results
    lines = ["# autokd benchmarks", "",
             f"Generated by `.venv/bin/python benchmarks/make_tables.py` from `{shown}/*.json`; do not edit by hand.",
             "Every number below comes from the command printed with its table; protocols are in "
             "`benchmarks/protocols.py`, derived search spaces in `benchmarks/spaces/`.", "",
             "    bash benchmarks/run_all.sh cpu           # every part of the CPU protocol, one command per part",
             "    bash benchmarks/run_all.sh smoke         # every part, tiny: proves the pipeline runs",
             "    bash benchmarks/full_protocol.sh         # the GPU protocol (section 5)",
             "    .venv/bin/python benchmarks/make_tables.py   # this page, from the JSON files", ""]
    protocols = sorted({p for part, p in found if part in PARTS} | {"cpu"}, key=_protocol_key)
    for part, (title, command) in PARTS.items():
        lines += [f"## {title}", ""]
        for p in protocols:
            files = found.get((part, p), [])
            # device protocols skip tables 2 and 3's CPU rows; a variant runs only its parts (run.py's names)
            only = parts_of(p)
            skips = p.startswith("device") or (only is not None and command.split()[1] not in only)
            if not files and not skips:
                lines += [f"### Protocol `{p}`", "", f"Not run yet: `.venv/bin/python {command.format(p=p)}`.", ""]
            for name, d in files:
                lines += [f"### Protocol `{p}` (`{name}`)", ""] + provenance(d) + [""] + RENDER[part](d) + [""]
                if part == "search_quality":
                    lines += search_quality_figure(results / name, page_dir) + [""]
    full = [p for p in protocols if p.startswith("full")]
    lines += ["## 5. Full protocol (GPU)", "",
              "`bash benchmarks/full_protocol.sh` runs every part under the `full` protocol (resnet56 teacher, "
              "full-width students, all training images, on CUDA; hours on one GPU). `bash benchmarks/device_protocol.sh` "
              "runs the `device` protocol, sized to one lent H200 session (about 8 minutes of run time), in the device "
              "calls that benchmarks/README.md lists; its tables 1 and 4 appear above under protocol `device`.", ""]
    if not any((part, p) in found for part in PARTS for p in full):
        lines += ["No full-protocol results yet: it has not been run on a GPU.", ""]
    for part, title in DEVICE_PARTS.items():
        for p in sorted({p for q, p in found if q == part}, key=_protocol_key):
            for name, d in found[(part, p)]:
                lines += [f"### {title}: protocol `{p}` (`{name}`)", ""]
                lines += (provenance(d) + [""] if part != "device_estimate" else []) + RENDER[part](d) + [""]
                if part == "gpu_throughput" and ("search_quality", p) in found:
                    lines += [ray_tune_throughput(found[("search_quality", p)][0][1]), ""]
    if not any(q == "gpu_throughput" and p == "device" for q, p in found):
        lines += ["No GPU numbers yet: no session has been lent a device since the device protocol exists; "
                  "the estimate above is what sized it.", ""]
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
