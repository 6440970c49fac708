"""``autokd latency calibrate``: measure this machine once, so that candidates can be priced in milliseconds."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..calibrate import QUICK, Effort, calibrate
from ..data import DATASETS, IMAGEFOLDER_PREFIX, IMAGEFOLDER_SIZE
from ..timing import Setting
from .common import OneLineErrors, out, parse_shape, user_errors
from .options import default, option

latency = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True,
                      help="Latency: calibrate a predictor of a student's milliseconds on this machine.")


def dataset_shape(name: str) -> tuple[int, int, int]:
    """One image of dataset ``name``, C x H x W (an unknown name: a one-line error listing the valid ones)."""
    if name.startswith(IMAGEFOLDER_PREFIX):
        return (3, *IMAGEFOLDER_SIZE)
    info = DATASETS.get(name)
    return (info.in_channels, *info.image_size)


@latency.command("calibrate")
@user_errors
def calibrate_command(
    runtime: Annotated[str, option(Setting, "runtime")] = default(Setting, "runtime"),
    threads: Annotated[int, option(Setting, "threads")] = default(Setting, "threads"),
    batch: Annotated[int, option(Setting, "batch")] = default(Setting, "batch"),
    input: Annotated[str, typer.Option("--input", help="one image, CxHxW")] = Setting().shape_text,
    dataset: Annotated[Optional[str], typer.Option(help="take the input shape from this dataset instead")] = None,
    device: Annotated[str, option(Setting, "device")] = default(Setting, "device"),
    quick: Annotated[bool, typer.Option(help="a few seconds on two small networks: checks the setup, predicts little")] = False,
) -> None:
    """Measure random zoo candidates in one setting and fit the latency predictor (minutes; once per machine)."""
    shape = dataset_shape(dataset) if dataset else parse_shape(input)
    setting = Setting(runtime=runtime, threads=threads, batch=batch, input_shape=shape, device=device).check()
    out.print(f"calibrating {setting.label}", highlight=False)
    cal, path = calibrate(setting, QUICK if quick else Effort(), progress=lambda m: out.print(m, highlight=False))
    out.print(f"blocked convolutions: {f'{cal.block}-channel blocks' if cal.block else 'none'} "
              "(priced as kinds of their own)", highlight=False)
    held = cal.fit.get("held_out", {})
    if held.get("n"):
        out.print(f"held-out candidates: {100 * held['within_10pct']:.0f} % within 10 % "
                  f"(median error {100 * held['median_abs_error']:.1f} %, n = {held['n']})", highlight=False)
    out.print(f"wrote {path} in {cal.fit['seconds']:.1f} s", highlight=False)
