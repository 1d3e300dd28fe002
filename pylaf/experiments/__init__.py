"""Experiments on top of the emulator API: built-in workloads
(:mod:`~pylaf.experiments.workloads`), the compare engine, workloads x policies
(:mod:`~pylaf.experiments.compare`), the fault-path cost by folio order
(:mod:`~pylaf.experiments.orders`) and the kernel cost model
(:mod:`~pylaf.experiments.costmodel`).

The package re-exports nothing: ``pylaf.experiments.compare`` is the module,
not a function of the same name shadowing it.
"""
