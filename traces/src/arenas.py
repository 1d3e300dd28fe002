"""Three threads, one after the other, each building a list of strings and a
dict over it: every thread's malloc() goes to a glibc arena (not the main
heap), which grows its heap by mprotect() on a PROT_NONE reservation
(glibc malloc/arena.c grow_heap()) and returns memory with MADV_DONTNEED
(shrink_heap()).  The pause after each join lets the finished thread exit
for good, so that the next one always reuses its stack and arena: the
program does the same mmap/mprotect sequence on every run, at any THP
setting (without it, whether the cached stack is reused depends on a race
with the exiting thread)."""
import threading
import time


def work(n: int) -> int:
    keep = [str(i) * 3 for i in range(n)]
    d = {s: i for i, s in enumerate(keep)}
    del d
    return len(keep)


for n in (400_000, 800_000, 1_200_000):
    t = threading.Thread(target=work, args=(n,))
    t.start()
    t.join()
    time.sleep(0.2)
