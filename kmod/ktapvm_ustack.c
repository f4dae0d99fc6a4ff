// SPDX-License-Identifier: GPL-2.0
/* ktapvm_ustack.c - the user stack of the current task for ustack(): return
 * addresses walked from its user registers, each written as the file it lies
 * in and the offset in that file ("/bin/ktapw+0x2f70"), which the host
 * symbolizes in its copy of the file. How frames are linked is the target's
 * ([user] of targets/<arch>/target.toml, KTAP_USTACK_* in ktap_target.h):
 *
 *   fp         a frame-pointer chain (x86_64, arm in ARM mode, arm64)
 *   backchain  powerpc's ABI back chain through r1
 *   mips       o32 has no chain: each caller's frame size and saved $ra are
 *              read from its prologue, scanned back from the return address
 *
 * At a function's entry (a uprobe on a symbol) the caller is in the link
 * register (on the stack on x86) and the chain starts at the caller's frame;
 * elsewhere the chain alone gives the callers. User memory is read with
 * copy_from_user_nofault(): a bad frame ends the walk, it never faults. */
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/sched/task_stack.h>
#include <linux/uaccess.h>
#include <linux/dcache.h>
#include <linux/preempt.h>
#include <linux/ptrace.h>
#include "ktapvm_probe.h"

#define KTAPVM_MIPS_SCAN 1024		/* instructions back to a caller's prologue */

static int uread(unsigned long addr, unsigned long *v)
{
	return copy_from_user_nofault(v, (const void __user *)addr, sizeof(*v)) ? -1 : 0;
}

#if KTAP_USTACK_UNWIND == KTAP_USTACK_UNWIND_FP
static unsigned int walk(struct pt_regs *regs, int at_entry, unsigned long *pcs, unsigned int n,
			 unsigned int max)
{
	unsigned long fp = KTAP_USTACK_FP(regs), next, ret;

	if (at_entry && n < max) {
#ifdef KTAP_USTACK_LINK
		pcs[n++] = KTAP_USTACK_LINK(regs);
#else
		if (!uread(user_stack_pointer(regs), &ret))
			pcs[n++] = ret;
#endif
	}
	while (n < max && fp) {
		if (uread(fp + (long)KTAP_USTACK_FP_NEXT, &next) ||
		    uread(fp + (long)KTAP_USTACK_FP_RET, &ret) || !ret)
			break;
		pcs[n++] = ret;
		if (next <= fp)		/* callers' frames lie above: a loop otherwise */
			break;
		fp = next;
	}
	return n;
}
#elif KTAP_USTACK_UNWIND == KTAP_USTACK_UNWIND_BACKCHAIN
static unsigned int walk(struct pt_regs *regs, int at_entry, unsigned long *pcs, unsigned int n,
			 unsigned int max)
{
	unsigned long sp = user_stack_pointer(regs), next, ret;

	if (at_entry && n < max)
		pcs[n++] = KTAP_USTACK_LINK(regs);
	while (n < max) {
		if (uread(sp, &next) || next <= sp ||
		    uread(next + KTAP_USTACK_FP_RET, &ret) || !ret)
			break;
		pcs[n++] = ret;
		sp = next;
	}
	return n;
}
#else	/* KTAP_USTACK_UNWIND_MIPS */
/* The frame size (addiu sp, sp, -N) and the offset of the saved $ra
 * (sw ra, OFF(sp)) of the function that holds pc, from its prologue. */
static int mips_prologue(unsigned long pc, long *frame, long *ra_off)
{
	unsigned int i;
	u32 w;

	*frame = 0;
	*ra_off = -1;
	for (i = 1; i <= KTAPVM_MIPS_SCAN; i++) {
		if (copy_from_user_nofault(&w, (const void __user *)(pc - 4 * i), 4))
			return -1;
		if (w == 0x03e00008)		/* jr ra: the function before it */
			return -1;
		if ((w & 0xffff0000) == 0xafbf0000)	/* sw ra, OFF(sp) */
			*ra_off = (s16)(w & 0xffff);
		if ((w & 0xffff0000) == 0x27bd0000 && (s16)(w & 0xffff) < 0) {
			*frame = -(s16)(w & 0xffff);	/* addiu sp, sp, -N: the start */
			return *ra_off >= 0 ? 0 : -1;
		}
	}
	return -1;
}

static unsigned int walk(struct pt_regs *regs, int at_entry, unsigned long *pcs, unsigned int n,
			 unsigned int max)
{
	unsigned long sp = user_stack_pointer(regs), ra = KTAP_USTACK_LINK(regs);
	long frame, ra_off;

	/* without a chain only a function's entry has a known sp and $ra */
	if (!at_entry)
		return n;
	while (n < max && ra) {
		pcs[n++] = ra;
		if (mips_prologue(ra, &frame, &ra_off) < 0 || uread(sp + ra_off, &ra))
			break;
		sp += frame;
	}
	return n;
}
#endif

/* "PATH+0xOFFSET\n" for pc: its mapping's file and file offset; a bare
 * address where there is no file (anonymous code, the vDSO) or the mm lock
 * is taken (a trylock: this runs in probe context). */
static int format_frame(struct ktapvm_sess *s, struct mm_struct *mm, int locked,
			unsigned long pc, char *out, size_t room)
{
	struct vm_area_struct *vma = locked ? find_vma(mm, pc) : NULL;

	if (vma && vma->vm_start <= pc && vma->vm_file) {
		char *path = d_path(&vma->vm_file->f_path, s->upath, sizeof(s->upath));

		if (!IS_ERR(path))
			return scnprintf(out, room, "%s+0x%lx\n", path,
					 pc - vma->vm_start + (vma->vm_pgoff << PAGE_SHIFT));
	}
	return scnprintf(out, room, "0x%0*lx\n", (int)(2 * sizeof(long)), pc);
}

u32 ktapvm_user_stack(struct ktapvm_sess *s, int at_entry)
{
	struct task_struct *t = current;
	unsigned long pcs[KTAPVM_MAX_USTACK];
	struct pt_regs *regs;
	unsigned int n, i;
	size_t len = 0;
	int locked;

	if (!t->mm || (t->flags & PF_KTHREAD))
		return 0;
	regs = task_pt_regs(t);
	if (!regs || !user_mode(regs))
		return 0;
	pcs[0] = instruction_pointer(regs);
	n = walk(regs, at_entry, pcs, 1, KTAPVM_MAX_USTACK);
	/* x86 kprobes run in NMI-like context, where no lock may be taken */
	locked = !in_nmi() && mmap_read_trylock(t->mm);
	for (i = 0; i < n && len + 1 < sizeof(s->ustack); i++)
		len += format_frame(s, t->mm, locked, pcs[i], s->ustack + len,
				    sizeof(s->ustack) - len);
	if (locked)
		mmap_read_unlock(t->mm);
	return (u32)len;
}
