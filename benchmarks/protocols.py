"""The protocols every benchmark runs under, as data: what is trained, on what, for how long.

  cpu    Fashion-MNIST on a 2-core CPU, each part about two hours at most: a teacher trained to a
         plateau once on a subset (about 30 minutes), narrow students, a training subset, a few epochs
         per trial (a 2-epoch trial on 3,000 images: about 40 s), an 8-epoch export fine-tune on the
         teacher's images (about 4 minutes).
  full   the GPU protocol: full-width models, the full training set, enough epochs to rank well.
  smoke  every part end to end in a couple of minutes (digits, 1-2 trials, 1 epoch, n = 1): it
         proves the pipeline runs, its numbers mean nothing.
  gpu    minutes on any CUDA GPU (benchmarks/gpu_protocol.sh): the resnet56 teacher on all of
         Fashion-MNIST, table 1's arms at n = 1, the GPU rows of table 3 (images/s of 1, 4 and 8
         trials at once), table 4.
  gpu-dry  the same script on a CPU in a few minutes (digits, 1 epoch, 2 trials): CI runs it, so
         the script is known to run before it meets a GPU.
  cpu-wide-band  table 1 of ``cpu`` with one thing changed, the joint space's ``budget/share`` band
         (0.05-1 of the budget, log-uniform, instead of 0.15-1): a probe of whether the band, not the
         sampler, holds the joint/random ratio down (issue #15). It distils from ``cpu``'s teacher.
  cpu-compute-60  table 1 of ``cpu`` at three times the compute (60 epoch-equivalents an arm): at 20 a
         TPE search is its warm starts and start-up trials, with two to six trials left for the model to
         choose; does the sampler pull ahead of random when it has more? ``cpu``'s teacher too.
  cpu-finetune-30  the headline of ``cpu`` with the fine-tune a user would give the student they ship:
         ``autokd export --finetune-epochs 30``, the teacher's own epochs, against Torch-Pruning + KD
         given the same; it exports ``cpu``'s searches (no search of its own). Does the exported
         student close its gap to the teacher, and does its lead or lag on Torch-Pruning hold?

Every JSON a benchmark writes carries its protocol's ``as_dict()``, and every table says what the
protocol reduced (``reduced``), so a number is never read without its setting.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPACES = HERE / "spaces"


@dataclass(frozen=True)
class Protocol:
    name: str
    dataset: str
    reduced: str                      # what this protocol cuts from the full setting, said in every table
    device: str = "cpu"               # where trials train: cpu | cuda
    # ---- the one teacher every part uses (trained once, saved as a bundle under results/teachers)
    teacher: str = "resnet20"
    teacher_width: float = 1.0
    teacher_epochs: int = 6
    teacher_subset: int | None = None  # training images the teacher sees (None: all)
    teacher_batch: int | None = None   # None: TrainConfig's rule (128 on Fashion-MNIST)
    teacher_lr: float = 0.05           # TrainConfig's, for batch 128; scaled with the batch where larger
    # The convergence rule: a teacher is trained on one cosine schedule of ``teacher_epochs``; it is
    # converged when its validation accuracy gained less than ``teacher_plateau_points`` over the last
    # 20 % of those epochs (recorded in its card as ``plateau_points``). A teacher that gained more is
    # trained again from scratch on a schedule twice as long, up to ``teacher_max_epochs``; past that,
    # the protocol stops and says so. Every compression result starts from a converged network.
    teacher_plateau_points: float | None = 1.0  # None: not checked (the smoke protocols)
    teacher_max_epochs: int = 120
    # ---- the headline: the exported student's fine-tune (``autokd export --finetune-epochs``)
    finetune_epochs: int = 8           # on the teacher's training images
    # ---- table 1: search quality
    spaces: dict[str, str] = field(default_factory=dict)  # space role -> YAML in spaces/ or a shipped name
    budget: str = "40%"               # of the teacher's MACs, the setting
    trials: int = 10                  # trained trials per search (completed + stopped early)
    epochs: int = 3                   # per trial
    train_subset: int | None = None   # training images per trial
    seeds: int = 3                    # n for tables 1 and 2
    parallel: int = 2                 # trials at once within one search (TPE sees fewer results when higher)
    jobs: int = 1                     # searches at once, each its own process and local Ray (run.py --jobs)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    # ---- table 2: the seeds' claims (run_trial directly)
    claims_student: str = "resnet20"
    claims_width: float = 0.5
    claims_epochs: int = 5
    claims_subset: int | None = None
    prune_ratio: float = 0.3          # PDD comparisons: every prunable layer, about half the MACs
    recovery_ratio: float = 0.5       # "aggressive" pruning before distillation recovery (seed 000)
    recovery_epochs: int = 2          # fine-tuning epochs after that pruning
    # ---- table 3: overheads
    step_batch: int = 128             # images per timed training step
    step_repeats: int = 30            # timed steps per kind (after 3 warm-up steps), medians reported
    driver_trials: tuple[int, ...] = (4, 12)  # search sizes: the slope between the first and last is per trial
    efficiency_trials: int = 4        # trials of the 1-vs-2-workers search
    efficiency_epochs: int = 2
    efficiency_subset: int | None = 1000
    # ---- table 4: cost vs latency
    latency_repeats: int = 30         # autokd.measure.cpu_latency_ms's default
    latency_warmup: int = 5
    latency_models: tuple[str, ...] | None = None  # None: the whole zoo
    # ---- table 3's GPU rows (benchmarks/gpu_throughput.py; the gpu protocols only)
    gpu_trials_at_once: tuple[int, ...] = (1, 4, 8)  # trials training at once on the one GPU
    gpu_probe_epochs: int = 2         # the second epoch is timed (the first warms up CUDA and cuDNN)
    gpu_probe_subset: int | None = None  # training images per probe trial (None: all)

    def space(self, role: str) -> str:
        """A space role ("joint", "prune_only", "distill_only") as a path or a shipped name."""
        value = self.spaces[role]
        return str(SPACES / value) if value.endswith(".yaml") else value

    def as_dict(self) -> dict:
        return asdict(self)


_CPU_SPACES = {"joint": "cpu_joint.yaml", "prune_only": "cpu_prune_only.yaml",
               "distill_only": "cpu_distill_only.yaml"}

CPU = Protocol(
    name="cpu", dataset="fashion-mnist",
    reduced=("Fashion-MNIST 1x28x28; teacher resnet20 at width 1 (31.0 M MACs) trained to a plateau (30 epochs, "
             "cosine, gaining < 1 point over its last 20 %) on 12,000 training images; students resnet20 from scratch "
             "(width 0.25-1) or inherited from the teacher (distill-only: "
             "resnet20/resnet32 at width 0.25-0.5); trials train on a 3,000-image subset for 2 epochs, every arm "
             "20 epoch-equivalents of compute (what 10 trials of 2 epochs cost); table 2 trains resnet20 at width 0.5 on 4,000 images "
             "for 4 epochs; the exported student is fine-tuned 8 epochs on the teacher's 12,000 images; the full protocol "
             "uses resnet56, full widths, all 54,000 images"),
    teacher="resnet20", teacher_width=1.0, teacher_epochs=30, teacher_subset=12_000,
    spaces=_CPU_SPACES, trials=10, epochs=2, train_subset=3_000, seeds=3, parallel=2,
    claims_student="resnet20", claims_width=0.5, claims_epochs=4, claims_subset=4_000,
    recovery_epochs=2,
)

FULL = Protocol(
    name="full", dataset="fashion-mnist", device="cuda",
    reduced="nothing: full-width models, all training images (54,000 after the validation split)",
    teacher="resnet56", teacher_width=1.0, teacher_epochs=30, teacher_subset=None,
    spaces={"joint": "resnet56_to_resnet", "prune_only": "full_prune_only.yaml",
            "distill_only": "full_distill_only.yaml"},
    trials=40, epochs=15, train_subset=None, seeds=3, parallel=4, cpus_per_trial=2.0, gpus_per_trial=0.25,
    finetune_epochs=30,
    claims_student="resnet20", claims_width=1.0, claims_epochs=30, claims_subset=None, recovery_epochs=5,
    step_batch=128, step_repeats=50, driver_trials=(10, 30), efficiency_trials=8, efficiency_epochs=3,
    efficiency_subset=5_000,
)

SMOKE = Protocol(
    name="smoke", dataset="digits",
    reduced="smoke test only (digits 1x8x8, 1-2 trials of 1 epoch, n = 1): proves the pipeline runs; "
            "its numbers mean nothing",
    teacher="resnet20", teacher_width=1.0, teacher_epochs=1, teacher_subset=None, teacher_plateau_points=None,
    finetune_epochs=1, spaces=_CPU_SPACES, trials=2, epochs=1, train_subset=200, seeds=1, parallel=2,
    claims_student="resnet20", claims_width=0.25, claims_epochs=2, claims_subset=200, recovery_epochs=1,
    step_batch=32, step_repeats=3, driver_trials=(2,), efficiency_trials=2, efficiency_epochs=1,
    efficiency_subset=100, latency_repeats=3, latency_warmup=1, latency_models=("resnet20", "convverytiny"),
)

_FULL_SPACES = {"joint": "resnet56_to_resnet", "prune_only": "full_prune_only.yaml",
                "distill_only": "full_distill_only.yaml"}

# Minutes on one GPU: enough to put GPU numbers beside the CPU tables, not the full protocol's n = 3.
GPU = Protocol(
    name="gpu", dataset="fashion-mnist", device="cuda",
    reduced=("minutes on one GPU: resnet56 teacher trained 10 epochs at batch 256 "
             "on all 54,000 training images; table 1 at n = 1 seed, 8 trials of 2 epochs on a 20,000-image "
             "subset per search, 8 trials at once on the GPU (an eighth each); table 3's GPU rows only; no "
             "table 2; the full protocol: 30 teacher epochs, 40 trials of 15 epochs, n = 3"),
    teacher="resnet56", teacher_width=1.0, teacher_epochs=10, teacher_subset=None, teacher_batch=256, teacher_lr=0.1,
    teacher_plateau_points=None, finetune_epochs=2,
    spaces=_FULL_SPACES, trials=8, epochs=2, train_subset=20_000, seeds=1, parallel=8,
    cpus_per_trial=1.0, gpus_per_trial=0.125,
    claims_student="resnet20", claims_width=1.0, claims_epochs=2, claims_subset=None,
    gpu_trials_at_once=(1, 4, 8), gpu_probe_epochs=2, gpu_probe_subset=None,
    latency_models=("resnet20", "resnet32", "resnet56"),
)

GPU_DRY = Protocol(
    name="gpu-dry", dataset="digits", device="cpu",
    reduced=("dry run of the gpu protocol on a CPU (digits 1x8x8, resnet56 teacher 1 epoch on 200 images, 2 trials "
             "of 1 epoch on 200 images per arm, one at a time, probes of 1 and 2 trials at once, n = 1): proves the "
             "script runs end to end; its numbers mean nothing"),
    # one trial at a time: each arm's search starts one Ray worker, not two (on a small CPU the second
    # worker's start-up only competes with the first; the GPU rows' probes still run 2 trials at once)
    teacher="resnet56", teacher_width=1.0, teacher_epochs=1, teacher_subset=200, teacher_plateau_points=None,
    finetune_epochs=1, spaces=_FULL_SPACES, trials=2, epochs=1, train_subset=200, seeds=1, parallel=1,
    claims_student="resnet20", claims_width=0.25, claims_epochs=2, claims_subset=None,
    gpu_trials_at_once=(1, 2), gpu_probe_epochs=2, gpu_probe_subset=200,
    latency_repeats=3, latency_warmup=1, latency_models=("resnet20",),
)

# A variant changes one setting of another protocol to test one question; it runs only some parts and
# distils from that protocol's teacher bundle (the same weights, not trained again). Its table says what
# changed in ``reduced``; the protocol fields stay those of every other protocol, so files merge as before.
CPU_WIDE_BAND = replace(
    CPU, name="cpu-wide-band",
    reduced=CPU.reduced + "; VARIANT: the joint space's budget/share band is 0.05-1 of the budget, log-uniform "
                          "(cpu_joint_wide_band.yaml), instead of 0.15-1 uniform; nothing else changed",
    spaces={**_CPU_SPACES, "joint": "cpu_joint_wide_band.yaml"},
)
CPU_COMPUTE_60 = replace(
    CPU, name="cpu-compute-60", trials=30,
    reduced=CPU.reduced + "; VARIANT: every arm 60 epoch-equivalents of compute (what 30 trials of 2 epochs cost) "
                          "instead of 20; nothing else changed",
)
CPU_FINETUNE_30 = replace(
    CPU, name="cpu-finetune-30", finetune_epochs=30,
    reduced=CPU.reduced + "; VARIANT: the exported student is fine-tuned 30 epochs (the teacher's own) instead of 8, "
                          "on `cpu`'s searches, and only the rows autokd and Torch-Pruning + KD (2 + 30 epochs) are "
                          "trained; nothing else changed",
)
VARIANTS = {"cpu-wide-band": ("cpu", ("search",)),  # variant -> (the protocol whose teacher it uses, its parts)
            "cpu-compute-60": ("cpu", ("search",)),
            "cpu-finetune-30": ("cpu", ("exported",))}

PROTOCOLS = {p.name: p for p in (CPU, FULL, SMOKE, GPU, GPU_DRY, CPU_WIDE_BAND, CPU_COMPUTE_60, CPU_FINETUNE_30)}


def teacher_protocol(name: str) -> str:
    """The protocol whose teacher bundle ``name`` distils from: its own, or a variant's base."""
    return VARIANTS[name][0] if name in VARIANTS else name


def search_protocol(name: str) -> str:
    """The protocol whose searches (table 1's studies) ``name`` exports: its own, or, for a variant that
    runs no search, its base's."""
    return name if "search" in (parts_of(name) or ("search",)) else VARIANTS[name][0]


def parts_of(name: str) -> tuple[str, ...] | None:
    """The benchmark parts protocol ``name`` runs; None: every part."""
    return VARIANTS[name][1] if name in VARIANTS else None
