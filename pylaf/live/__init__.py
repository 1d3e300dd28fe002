"""The live host: this machine's kernel. THP sysfs knobs and counters, the
machine-wide settings lock, the ``laf_kprog`` runner, and the program-by-
program check of the emulator against the kernel. Nothing else in pylaf
reads ``/sys`` or ``/proc``."""
