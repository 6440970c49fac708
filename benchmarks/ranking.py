"""Does a search's short training rank students the way the final training does?

For the front of one seed's joint study (table 1), every member is exported with the headline's
fine-tune (``autokd export STUDY --trial K --finetune-epochs N --train-subset <teacher_subset>``) and
scored on the test set (an export already on disk is kept: a stopped run resumes); Kendall's tau-b between the members' search scores (validation accuracy
after the trial's own epochs) and their test accuracy after the fine-tune says how well the search's
order survives. tau = 1: the same order; 0: none; -1: reversed.
"""
from __future__ import annotations

import time
from pathlib import Path

from record import envelope, say, teacher_bundle


def kendall_tau_b(a: list[float], b: list[float]) -> float | None:
    """Kendall's tau-b (ties in either list corrected for), from the definition:
    (concordant - discordant) / sqrt((n0 - ties_a) * (n0 - ties_b)), n0 = n (n - 1) / 2."""
    n = len(a)
    if n != len(b) or n < 2:
        return None
    con = dis = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            ties_a += da == 0
            ties_b += db == 0
            if da * db > 0:
                con += 1
            elif da * db < 0:
                dis += 1
    n0 = n * (n - 1) // 2
    denom = ((n0 - ties_a) * (n0 - ties_b)) ** 0.5
    return None if denom == 0 else (con - dis) / denom


def run(protocol, *, results_dir: Path, seed: int = 0) -> dict:
    from autokd.export import FINETUNE_RECIPE
    from autokd.pareto import pareto_info
    from autokd.search import store
    from exported import export_once, study_for
    from record import isolate

    t0 = time.perf_counter()
    isolate(Path(results_dir))
    teacher_bundle(protocol, results_dir, say=say)
    study = study_for(protocol, seed)
    front = [p for p in pareto_info(store.load(study), importances=False).front if p.get("weights")]
    members = []
    for p in sorted(front, key=lambda p: p["macs"]):
        name = f"{study}-t{p['number']}-ft{protocol.finetune_epochs}-{FINETUNE_RECIPE}"
        folder = Path(results_dir) / "exported" / name
        card = export_once(protocol, study, folder, FINETUNE_RECIPE, trial=p["number"])
        members.append({"trial": p["number"], "macs": p["macs"], "search_val_accuracy": p["val_accuracy"],
                        "test_accuracy_before_finetune": card["finetune"].get("test_accuracy_before"),
                        "test_accuracy_after_finetune": card["finetune"].get("test_accuracy_after")})
    tau = kendall_tau_b([m["search_val_accuracy"] for m in members],
                        [m["test_accuracy_after_finetune"] for m in members])
    res = {"study": study, "seed": seed, "finetune_epochs": protocol.finetune_epochs, "members": members,
           "kendall_tau_b": tau}
    return envelope("ranking", protocol, res, time.perf_counter() - t0)
