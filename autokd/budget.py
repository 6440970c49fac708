"""The cost budget a user types: a share of the teacher's cost, or an absolute FLOPs count.

``40%`` and ``0.4`` mean 40 % of the teacher's MACs. ``100M`` (also ``2.5G``, ``1e8``) is an
absolute count of **FLOPs**, as the flag's name says: 100 M FLOPs = 50 M MACs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UserError
from .measure import flops_from_macs, macs_from_flops

SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


class BudgetError(UserError):
    pass


@dataclass(frozen=True)
class Budget:
    macs: int
    text: str
    share_of_teacher: float   # macs / teacher MACs

    @property
    def flops(self) -> int:
        return flops_from_macs(self.macs)

    def as_dict(self) -> dict:
        return {"macs_budget": self.macs, "flops_budget": self.flops, "budget_text": self.text,
                "budget_share_of_teacher": self.share_of_teacher}


def parse_budget(text: str, teacher_macs: int) -> Budget:
    t = str(text).strip().upper().replace("FLOPS", "")
    hint = "use a share of the teacher's cost (40% or 0.4) or a FLOPs count (100M, 2.5G)"
    m = re.fullmatch(r"([-+]?\d+(?:\.\d+)?(?:E[-+]?\d+)?)\s*(%|[KMGT]?)", t)
    if not m:
        raise BudgetError(f"--flops-budget {text!r} is not a budget; {hint}")
    value, unit = float(m.group(1)), m.group(2)
    if unit == "%" or (unit == "" and value <= 1.0):
        share = value / 100 if unit == "%" else value
        if not 0 < share <= 1:
            raise BudgetError(f"--flops-budget {text!r}: a share of the teacher's cost must be in (0%, 100%]")
        return Budget(max(1, int(share * teacher_macs)), text, share)
    if unit == "" and value < 1000:  # "5" is neither a share nor a plausible FLOPs count
        raise BudgetError(f"--flops-budget {text!r} is ambiguous; {hint}")
    macs = macs_from_flops(value * SUFFIX[unit])
    if macs <= 0:
        raise BudgetError(f"--flops-budget {text!r} must be positive; {hint}")
    return Budget(macs, text, macs / teacher_macs)
