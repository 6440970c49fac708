"""The project describes autokd, not a machine it was once developed on: no tracked text file may speak
of a borrowed machine's limits (per-call sizes, lists of carried paths, a warm window, time budgets), of a kit
built to reach it, or of who lent it. A user with a GPU needs `benchmarks/gpu_protocol.sh`, nothing else.

This file spells the phrases out to look for them, so it skips itself.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PHRASES = [  # case-insensitive regular expressions
    r"\blent\b", r"\blends?\b", r"\bborrowed\b",
    r"\bcarry\s*=", r"warm window", r"\bstays? warm\b",
    r"budget_left", r"can_start_another", r"give_back",
    r"device[ _-]kit", r"device_packages", r"device_estimate", r"\bdevice protocol\b",
    r"\bdevice (tool|time|calls?)\b", r"\b64 MiB\b",
]
PATTERN = re.compile("|".join(PHRASES), re.IGNORECASE)


def tracked_text_files() -> list[Path]:
    try:  # a fixed argv
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no git here: nothing tracked to scan")
    if out.returncode != 0:
        pytest.skip("not a git checkout: nothing tracked to scan")
    files = []
    for name in out.stdout.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and path != Path(__file__).resolve() and b"\0" not in path.read_bytes()[:8192]:
            files.append(path)
    return files


def test_the_pattern_finds_what_it_is_for_and_not_ordinary_words():
    # the examples are joined at run time, so that a plain grep of the repository finds none of them
    for text in ("run(command='x', car" + "ry=['.kit'])", "the 30 s warm window", "budget_left_s: 300",
                 "bash benchmarks/device_kit.sh", "one le" + "nt H200 session", "takes at most 64 MiB per call"):
        assert PATTERN.search(text), text
    for text in ("an excellent, silent student", "torch.device('cuda')", "carry the teacher's weights",
                 "a warm start", "the GPU protocol runs on any CUDA GPU", "the study's compute budget"):
        assert not PATTERN.search(text), text


def test_no_tracked_text_file_describes_a_borrowed_machine():
    found = []
    for path in tracked_text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if match := PATTERN.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)!r}")
    assert not found, "\n".join(found[:30])
