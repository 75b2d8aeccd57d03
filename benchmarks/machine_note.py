"""One line describing the machine and its load while a benchmark ran.

Every benchmark records it in its results so that a reader can tell a quiet
measurement from one taken while other jobs shared the CPU.
"""
from __future__ import annotations

import os
import platform


def machine_note() -> str:
    """E.g. ``x86_64, 2 CPUs, load average 0.9/3.1/7.0 (1/5/15 min) at start``."""
    head = f"{platform.machine()}, {os.cpu_count()} CPUs"
    if not hasattr(os, "getloadavg"):
        return head
    one, five, fifteen = os.getloadavg()
    note = f"{head}, load average {one:.1f}/{five:.1f}/{fifteen:.1f} (1/5/15 min) at start"
    if one >= 1.5:
        note += "; other jobs shared the CPU: absolute times are noisy, compare same-process ratios"
    return note
