"""Budget parsing: shares of the teacher's MACs and absolute FLOPs (FLOPs = 2 x MACs)."""
from __future__ import annotations

import pytest

from autokd.search.budget import BudgetError, parse_budget

TEACHER = 125_747_840  # resnet56 on 3x32x32


@pytest.mark.parametrize("text,macs", [
    ("40%", int(0.4 * TEACHER)),
    ("0.4", int(0.4 * TEACHER)),
    ("100%", TEACHER),
    ("100M", 50_000_000),        # 100 M FLOPs = 50 M MACs
    ("2.5G", 1_250_000_000),
    ("1e8", 50_000_000),
])
def test_accepted(text, macs):
    b = parse_budget(text, TEACHER)
    assert b.macs == macs
    assert b.flops == 2 * b.macs


@pytest.mark.parametrize("text", ["140%", "-5%", "abc", "0", "0%", "", "5", "-100M", "40%%"])
def test_rejected_with_one_line(text):
    with pytest.raises(BudgetError) as e:
        parse_budget(text, TEACHER)
    assert "\n" not in str(e.value) and "--flops-budget" in str(e.value)
