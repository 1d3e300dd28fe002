# csrc/sources.mk - the one list of the C core's sources (file names in csrc/).
# Read by the top Makefile, bench/Makefile (both `include` it) and build.py
# (which parses the LAF_CORE_SOURCES line).  Keep it on one logical line.
LAF_CORE_SOURCES := page_alloc.c pgtable.c memory.c huge_memory.c fork.c policy.c vma.c mprotect.c userfaultfd.c access_batch.c task_mmu.c api.c check.c ops.c
