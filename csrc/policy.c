// SPDX-License-Identifier: GPL-2.0
/*
 * policy.c - which folio orders a fault may use.
 *
 * Two questions, asked by the fault path:
 *   policy_pmd_allowed(vma)      - may __handle_mm_fault() try the PMD path?
 *   policy_anon_orders(vma, addr)- the candidate mTHP orders (bitmask of
 *                                  orders 2..PMD_ORDER-1) for alloc_anon_folio()
 * and policy_charge_in_alloc_loop(): upstream charges each order inside the
 * allocation loop and falls back on failure; the 2023 LAF patch charges once
 * after allocating and OOMs on failure.
 *
 * LAF_POLICY_UPSTREAM (dup of include/linux/huge_mm.h, 6.18):
 *   thp_vma_allowable_orders() with huge_anon_orders_{always,madvise,inherit}
 *   built from the per-size knobs, then vma_thp_disabled(): VM_NOHUGEPAGE,
 *   MMF_DISABLE_THP_COMPLETELY, MMF_DISABLE_THP_EXCEPT_ADVISED (unless
 *   VM_HUGEPAGE).  Every allowed order is tried, highest first.
 *
 * LAF family (LAF_V3, HUANG_A, HUANG_B, HUANG_SYSFS), after the seed patch:
 *   anon_folio_order() = max(arch_wants_pte_order(), PAGE_ALLOC_COSTLY_ORDER),
 *   capped at 64K (ANON_FOLIO_MAX_ORDER_UNHINTED) when the VMA is not THP
 *   eligible; the ladder {prefer, prefer > COSTLY ? COSTLY : 0, 0};
 *   VM_NOHUGEPAGE and prctl disable force order 0 whatever sysfs says.
 *   The tables (S = order 0, LAF = the ladder, THP = PMD path):
 *
 *   LAF_V3 (Ryan Roberts)  | never  | madvise              | always
 *     no hint              | LAF>S  | LAF>S                | THP>LAF>S
 *     MADV_HUGEPAGE        | LAF>S  | THP>LAF>S            | THP>LAF>S
 *   HUANG_A                | never  | madvise              | always
 *     no hint              | S      | LAF>S                | THP>LAF>S
 *     MADV_HUGEPAGE        | S      | THP>LAF>S            | THP>LAF>S
 *   HUANG_B                | never  | madvise              | always
 *     no hint              | S      | S                    | THP>LAF>S
 *     MADV_HUGEPAGE        | S      | THP>LAF>S            | THP>LAF>S
 *   MADV_NOHUGEPAGE and prctl(PR_SET_THP_DISABLE) → S in every table.
 *   PR_THP_DISABLE_EXCEPT_ADVISED post-dates the seed: it is applied as
 *   "disabled unless VM_HUGEPAGE", as upstream does.
 *
 *   HUANG_SYSFS, Huang Ying's long-term values for the global knob:
 *     never   → S;  madvise → hinted THP>LAF>S, else S;  always → THP>LAF>S;
 *     small   → LAF>S (never the PMD path; uncapped only when hinted);
 *     auto    → hinted THP>LAF>S; unhinted: the readahead-style ramp below.
 *
 * The "auto" heuristic (pylaf's, documented as a proposal): anonymous
 * readahead.  Each VMA keeps the end of the last folio its write faults
 * mapped (auto_next) and a ramp order.  A write fault at exactly auto_next
 * (the stream continues) raises the ramp by 2 orders, up to the 64K cap;
 * any other write fault lowers it by 2 (to 0).  The candidates are every
 * order from 2 up to the ramp, highest first, so VMA edges and populated
 * PTEs still fall back.  Sequential fills reach 64K folios after two faults;
 * sparse or random writers stay at 4K, so bloat stays bounded by the
 * fault stream itself rather than by the VMA size.
 *
 * LAF_POLICY_FIXED: every write fault tries exactly fixed_order (the PMD
 * path when fixed_order == PMD_ORDER), then order 0; VM_NOHUGEPAGE, prctl
 * and uffd still force order 0 (correctness, not policy).  Upstream charge
 * semantics.
 *
 * defrag is recorded only: no compaction or reclaim is emulated, so every
 * gfp mask succeeds iff a free block exists (page_alloc.c).
 */
#include "laf_internal.h"

static inline bool valid_upstream_mode(int m)
{
	return m == LAF_THP_NEVER || m == LAF_THP_ALWAYS || m == LAF_THP_MADVISE ||
	       m == LAF_THP_INHERIT;
}

/**
 * policy_validate - reject a policy the kernel (or the proposal) would refuse
 * Return: LAF_OK or LAF_EINVAL.
 */
int policy_validate(const struct laf_machine *m, const struct laf_policy *pol)
{
	int o;

	if (pol->kind < LAF_POLICY_UPSTREAM || pol->kind > LAF_POLICY_FIXED)
		return LAF_EINVAL;
	if (pol->defrag < LAF_DEFRAG_ALWAYS || pol->defrag > LAF_DEFRAG_NEVER)
		return LAF_EINVAL;
	if (pol->use_zero_page != 0 && pol->use_zero_page != 1)
		return LAF_EINVAL;
	if (pol->anon_beside_full != 0 && pol->anon_beside_full != 1)
		return LAF_EINVAL;
	if (pol->kind == LAF_POLICY_HUANG_SYSFS) {
		if (pol->enabled != LAF_THP_NEVER && pol->enabled != LAF_THP_ALWAYS &&
		    pol->enabled != LAF_THP_MADVISE && pol->enabled != LAF_THP_SMALL &&
		    pol->enabled != LAF_THP_AUTO)
			return LAF_EINVAL;
	} else if (pol->enabled != LAF_THP_NEVER && pol->enabled != LAF_THP_ALWAYS &&
		   pol->enabled != LAF_THP_MADVISE) {
		return LAF_EINVAL;
	}
	for (o = 0; o < LAF_NR_ORDERS; o++) {
		bool anon_order = o >= 2 && o <= (int)m->pmd_order;

		if (!valid_upstream_mode(pol->per_size[o]))
			return LAF_EINVAL;
		/* only THP_ORDERS_ALL_ANON have an anon "enabled" file */
		if (!anon_order && pol->per_size[o] != LAF_THP_NEVER)
			return LAF_EINVAL;
	}
	if (pol->kind == LAF_POLICY_FIXED &&
	    !(pol->fixed_order == 0 ||
	      (pol->fixed_order >= 2 && pol->fixed_order <= (int)m->pmd_order)))
		return LAF_EINVAL;
	return LAF_OK;
}

/* vma_thp_disabled() (6.18 form): hard opt-outs that ignore sysfs */
static inline bool vma_thp_disabled(const struct laf_mm *mm, const struct laf_vma *vma)
{
	if (vma->vm_flags & LAF_VM_NOHUGEPAGE)
		return true;
	if (mm->mmf_disable_thp_completely)
		return true;
	if (vma->vm_flags & LAF_VM_HUGEPAGE)
		return false;
	return mm->mmf_disable_thp_except_advised;
}

static unsigned long orders_with(const struct laf_policy *pol, int mode, unsigned int pmd_order)
{
	unsigned long m = 0;
	unsigned int o;

	for (o = 2; o <= pmd_order; o++)
		if (pol->per_size[o] == mode)
			m |= 1UL << o;
	return m;
}

/**
 * policy_apply - install a validated policy
 *
 * Like writes to hugepages-<N>kB/enabled (thpsize_enabled_store()), the
 * per-size values become the huge_anon_orders_{always,madvise,inherit}
 * bitmasks that thp_vma_allowable_orders() reads at each fault.
 */
void policy_apply(struct laf_machine *m, const struct laf_policy *pol)
{
	m->pol = *pol;
	m->huge_anon_orders_always = orders_with(pol, LAF_THP_ALWAYS, m->pmd_order);
	m->huge_anon_orders_madvise = orders_with(pol, LAF_THP_MADVISE, m->pmd_order);
	m->huge_anon_orders_inherit = orders_with(pol, LAF_THP_INHERIT, m->pmd_order);
}

/* thp_vma_allowable_orders(vma, vm_flags, TVA_PAGEFAULT, orders) */
static unsigned long thp_vma_allowable_orders(struct laf_mm *mm, struct laf_vma *vma,
					      unsigned long orders)
{
	bool hinted = vma->vm_flags & LAF_VM_HUGEPAGE;
	unsigned long mask = mm->machine->huge_anon_orders_always;

	if (hinted)
		mask |= mm->machine->huge_anon_orders_madvise;
	if (mm->machine->pol.enabled == LAF_THP_ALWAYS || (hinted && mm->machine->pol.enabled != LAF_THP_NEVER))
		mask |= mm->machine->huge_anon_orders_inherit;
	orders &= mask;
	if (!orders)
		return 0;
	/* __thp_vma_allowable_orders(): THP_ORDERS_ALL_ANON, vma_thp_disabled() */
	orders &= ((1UL << (mm->pmd_order + 1)) - 1) & ~3UL;
	if (vma_thp_disabled(mm, vma))
		return 0;
	return orders;
}

/* hugepage_vma_check(..., enforce_sysfs=true) of the seed's era (6.5) */
static bool laf_thp_eligible(struct laf_mm *mm, struct laf_vma *vma)
{
	bool hinted = vma->vm_flags & LAF_VM_HUGEPAGE;

	if (vma_thp_disabled(mm, vma))
		return false;
	switch (mm->machine->pol.enabled) {
	case LAF_THP_ALWAYS:
		return true;
	case LAF_THP_MADVISE:
	case LAF_THP_AUTO:
		return hinted;
	default:		/* never, small */
		return false;
	}
}

/* Is the LAF ladder on for this VMA (the tables in the header comment)? */
static bool laf_enabled(struct laf_mm *mm, struct laf_vma *vma)
{
	bool hinted = vma->vm_flags & LAF_VM_HUGEPAGE;

	if (vma_thp_disabled(mm, vma))
		return false;
	switch (mm->machine->pol.kind) {
	case LAF_POLICY_LAF_V3:
		return true;
	case LAF_POLICY_HUANG_A:
		return mm->machine->pol.enabled != LAF_THP_NEVER;
	case LAF_POLICY_HUANG_B:
		return laf_thp_eligible(mm, vma);
	case LAF_POLICY_HUANG_SYSFS:
		switch (mm->machine->pol.enabled) {
		case LAF_THP_ALWAYS:
		case LAF_THP_SMALL:
		case LAF_THP_AUTO:
			return true;
		case LAF_THP_MADVISE:
			return hinted;
		default:
			return false;
		}
	default:
		return false;
	}
}

/* ANON_FOLIO_MAX_ORDER_UNHINTED: ilog2(max(64K, PAGE_SIZE)) - PAGE_SHIFT */
static inline int anon_folio_max_order_unhinted(const struct laf_mm *mm)
{
	return mm->page_shift >= LAF_PAGE_SHIFT_64K ? 0 : LAF_PAGE_SHIFT_64K - (int)mm->page_shift;
}

/* anon_folio_order() of the seed patch */
static int anon_folio_order(struct laf_mm *mm, struct laf_vma *vma)
{
	int order = mm->arch_pte_order > LAF_COSTLY_ORDER ? mm->arch_pte_order : LAF_COSTLY_ORDER;
	bool uncapped = laf_thp_eligible(mm, vma) ||
			(mm->machine->pol.kind == LAF_POLICY_HUANG_SYSFS &&
			 mm->machine->pol.enabled == LAF_THP_SMALL && (vma->vm_flags & LAF_VM_HUGEPAGE));

	if (!uncapped && order > anon_folio_max_order_unhinted(mm))
		order = anon_folio_max_order_unhinted(mm);
	if (order >= (int)mm->pmd_order)
		order = (int)mm->pmd_order - 1;
	return order;
}

bool policy_pmd_allowed(struct laf_mm *mm, struct laf_vma *vma)
{
	switch (mm->machine->pol.kind) {
	case LAF_POLICY_UPSTREAM:
		return thp_vma_allowable_orders(mm, vma, 1UL << mm->pmd_order) != 0;
	case LAF_POLICY_FIXED:
		/* header: VM_NOHUGEPAGE, prctl and uffd force order 0 (PMD order too) */
		return mm->machine->pol.fixed_order == (int)mm->pmd_order && !vma_thp_disabled(mm, vma) &&
		       !userfaultfd_armed(vma);
	default:
		return laf_thp_eligible(mm, vma);
	}
}

unsigned long policy_anon_orders(struct laf_mm *mm, struct laf_vma *vma, uint64_t address)
{
	unsigned long below_pmd = (1UL << mm->pmd_order) - 1;
	int prefer;

	(void)address;
	switch (mm->machine->pol.kind) {
	case LAF_POLICY_UPSTREAM:
		return thp_vma_allowable_orders(mm, vma, below_pmd);
	case LAF_POLICY_FIXED:
		if (vma_thp_disabled(mm, vma) || mm->machine->pol.fixed_order < 2)
			return 0;
		return (1UL << mm->machine->pol.fixed_order) & below_pmd;
	default:
		break;
	}
	if (!laf_enabled(mm, vma))
		return 0;
	if (mm->machine->pol.kind == LAF_POLICY_HUANG_SYSFS && mm->machine->pol.enabled == LAF_THP_AUTO &&
	    !(vma->vm_flags & LAF_VM_HUGEPAGE)) {
		int ramp = vma->auto_order;

		if (ramp > anon_folio_max_order_unhinted(mm))
			ramp = anon_folio_max_order_unhinted(mm);
		if (ramp < 2)
			return 0;
		return ((1UL << (ramp + 1)) - 1) & ~3UL & below_pmd;
	}
	prefer = anon_folio_order(mm, vma);
	if (prefer < 2)
		return 0;
	return ((1UL << prefer) | (prefer > LAF_COSTLY_ORDER ? 1UL << LAF_COSTLY_ORDER : 0)) &
	       below_pmd;
}

bool policy_charge_in_alloc_loop(const struct laf_mm *mm)
{
	return mm->machine->pol.kind == LAF_POLICY_UPSTREAM || mm->machine->pol.kind == LAF_POLICY_FIXED;
}

void policy_auto_update(struct laf_mm *mm, struct laf_vma *vma, uint64_t addr, unsigned int order)
{
	uint64_t size = mm->page_size << order;

	if (mm->machine->pol.kind != LAF_POLICY_HUANG_SYSFS || mm->machine->pol.enabled != LAF_THP_AUTO)
		return;
	if (align_down(addr, mm->page_size) == vma->auto_next) {
		vma->auto_order = vma->auto_order < 2 ? 2 : vma->auto_order + 2;
		if (vma->auto_order > anon_folio_max_order_unhinted(mm))
			vma->auto_order = anon_folio_max_order_unhinted(mm);
	} else {
		vma->auto_order = vma->auto_order <= 3 ? 0 : vma->auto_order - 2;
	}
	vma->auto_next = align_down(addr, size) + size;
}
