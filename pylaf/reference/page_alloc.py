"""Physical memory of the emulated machine: a deterministic buddy allocator
(mm/page_alloc.c), the mm's memory cgroup (mm/memcontrol.c page counter),
direct reclaim through registered shrinkers, and the fault-injection hooks
of ``laf_inject()``.

Modelling choices shared with the C core (beyond the kernel):

* RAM is frames ``0..N-1``; frame 0 is the shared zero page and never free.
* An order-0 allocation or charge failure (or a page-table frame failure)
  runs the shrinkers once and retries once (mm/vmscan.c shrink_slab(), which
  here only reaches the deferred-split shrinker), then fails.
* memcg: ``limit`` is memory.max in pages; ``None`` is ``max`` (unlimited) and
  ``0`` means nothing can be charged.  A charge of ``nr`` pages fails when
  ``charged + nr > limit`` (mm/page_counter.c page_counter_try_charge()).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional


class BuddyAllocator:
    """Free lists per order, MAX order inclusive; frame 0 is never free.

    * init frees ``[1, N)`` ascending, in the largest naturally aligned blocks
      that fit, each pushed at the head of its list;
    * ``alloc(order)`` is ``__rmqueue_smallest``: the lowest non-empty order
      >= ``order``, take the list head, split (``expand``) keeping the low half
      and pushing each upper half at the head of its list, larger first;
    * ``free(pfn, order)`` is ``__free_one_page``: merge with the buddy
      (``pfn ^ (1 << order)``) while it is a free block of the same order
      inside RAM, then push the merged block at the head.

    A list is a dict used as an ordered set: its *last* key is the head.

    >>> b = BuddyAllocator(16, 3)
    >>> b.nr_free, b.alloc(0), b.alloc(1), b.nr_free
    (15, 1, 2, 12)
    """

    def __init__(self, nr_frames: int, max_order: int) -> None:
        self.nr_frames = nr_frames
        self.max_order = max_order
        self.lists: list[dict[int, None]] = [{} for _ in range(max_order + 1)]
        self.order_of_free: dict[int, int] = {}       # head pfn of a free block -> its order
        self.nr_free = 0
        pfn = 1
        while pfn < nr_frames:
            order = 0
            while (order < max_order and pfn % (2 << order) == 0
                   and pfn + (2 << order) <= nr_frames):
                order += 1
            self._push(pfn, order)
            self.nr_free += 1 << order
            pfn += 1 << order

    def _push(self, pfn: int, order: int) -> None:
        self.lists[order][pfn] = None
        self.order_of_free[pfn] = order

    def _unlink(self, pfn: int, order: int) -> None:
        del self.lists[order][pfn]
        del self.order_of_free[pfn]

    def alloc(self, order: int) -> Optional[int]:
        """__rmqueue_smallest(): a free block of ``order``; None if there is none."""
        for cur in range(order, self.max_order + 1):
            lst = self.lists[cur]
            if lst:
                pfn, _ = lst.popitem()                  # the head
                del self.order_of_free[pfn]
                while cur > order:                      # expand(): keep the low half
                    cur -= 1
                    self._push(pfn + (1 << cur), cur)
                self.nr_free -= 1 << order
                return pfn
        return None

    def free(self, pfn: int, order: int) -> None:
        """__free_one_page(): merge with free buddies, push at the head."""
        self.nr_free += 1 << order
        while order < self.max_order:
            buddy = pfn ^ (1 << order)
            if buddy >= self.nr_frames or self.order_of_free.get(buddy) != order:
                break
            self._unlink(buddy, order)
            pfn &= ~(1 << order)
            order += 1
        self._push(pfn, order)

    def take(self, target: int) -> bool:
        """Remove one specific free frame (``take_page_off_buddy``); False if in use."""
        for order in range(self.max_order + 1):
            head = target & ~((1 << order) - 1)
            if self.order_of_free.get(head) == order:
                break
        else:
            return False
        self._unlink(head, order)
        pfn = head
        while order > 0:                                # split, keeping the half with target
            order -= 1
            half = 1 << order
            if target >= pfn + half:
                self._push(pfn, order)
                pfn += half
            else:
                self._push(pfn + half, order)
        self.nr_free -= 1
        return True

    def is_free(self, pfn: int) -> bool:
        return any(self.order_of_free.get(pfn & ~((1 << order) - 1)) == order
                   for order in range(self.max_order + 1))


class PhysMem:
    """RAM + the mm's memcg + reclaim + injected failures.

    ``cnt`` is the mm's scalar counter dict (``memcg_max_events`` is counted here).
    """

    def __init__(self, nr_frames: int, max_order: int, memcg_limit: Optional[int],
                 cnt: dict[str, int]) -> None:
        self.buddy = BuddyAllocator(nr_frames, max_order)
        self.memcg_limit = memcg_limit          # pages; None: unlimited
        self.memcg_charged = 0
        self.cnt = cnt
        self.shrinkers: list[Callable[[], int]] = []
        self.inject_alloc: dict[int, int] = {}  # order -> allocations left to fail
        self.inject_charge: dict[int, int] = {}
        self.pinned: list[int] = []             # frames held by fragment()

    # ------------------------------------------------------------- frames
    def alloc_pages(self, order: int) -> Optional[int]:
        """Buddy allocation of a folio, with the LAF_INJECT_ALLOC_FAIL hook."""
        left = self.inject_alloc.get(order, 0)
        if left:
            self.inject_alloc[order] = left - 1
            return None
        return self.buddy.alloc(order)

    def free_pages(self, pfn: int, order: int) -> None:
        self.buddy.free(pfn, order)

    def reclaim(self) -> int:
        """Direct reclaim: run every registered shrinker once; pages-or-folios freed."""
        return sum(shrink() for shrink in self.shrinkers)

    def alloc_order0(self) -> Optional[int]:
        """An order-0 GFP_KERNEL-like allocation: may reclaim once."""
        pfn = self.alloc_pages(0)
        if pfn is None and self.reclaim():
            pfn = self.alloc_pages(0)
        return pfn

    def alloc_table_frame(self) -> Optional[int]:
        """pte_alloc_one(): one order-0 frame (no memcg, no fault injection)."""
        pfn = self.buddy.alloc(0)
        if pfn is None and self.reclaim():
            pfn = self.buddy.alloc(0)
        return pfn

    # -------------------------------------------------------------- memcg
    def try_charge(self, nr: int, order: int) -> bool:
        """mem_cgroup_charge(): with the LAF_INJECT_CHARGE_FAIL hook; a refusal
        counts a memory.events ``max`` event."""
        left = self.inject_charge.get(order, 0)
        if left:
            self.inject_charge[order] = left - 1
            self.cnt["memcg_max_events"] += 1
            return False
        if self.memcg_limit is not None and self.memcg_charged + nr > self.memcg_limit:
            self.cnt["memcg_max_events"] += 1
            return False
        self.memcg_charged += nr
        return True

    def charge_order0(self) -> bool:
        """An order-0 charge: may reclaim once."""
        if self.try_charge(1, 0):
            return True
        return bool(self.reclaim()) and self.try_charge(1, 0)

    def uncharge(self, nr: int) -> None:
        self.memcg_charged -= nr

    # -------------------------------------------------------- fragmentation
    def fragment(self, k: int) -> None:
        """Cut every free block above order ``k`` into 2^(k+1)-frame pieces and
        pin the last frame of each piece (long-lived unmovable allocations).

        The other frames of a piece are freed one by one, ascending, so they
        merge back into blocks of order <= k.
        """
        step = 2 << k
        for o in range(self.buddy.max_order, k, -1):
            while self.buddy.lists[o]:
                pfn = self.buddy.alloc(o)
                assert pfn is not None
                for p in range(pfn, pfn + (1 << o), step):
                    last = p + step - 1
                    self.pinned.append(last)
                    for q in range(p, last):
                        self.buddy.free(q, 0)

    def unfragment(self) -> None:
        for pfn in self.pinned:
            self.free_pages(pfn, 0)
        self.pinned = []
