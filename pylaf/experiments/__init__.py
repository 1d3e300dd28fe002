"""Experiments on top of the emulator API: built-in workloads, the compare
engine (workloads x policies) and the kernel cost model."""
from __future__ import annotations

from pylaf.experiments.compare import CompareResult, compare
from pylaf.experiments.workloads import get_workload, register_workload

__all__ = ["CompareResult", "compare", "get_workload", "register_workload"]
