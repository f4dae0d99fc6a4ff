// SPDX-License-Identifier: GPL-2.0
/* kprobe.c - kprobes (register_kprobe on .symbol_name + .offset). Arguments
 * come from struct pt_regs with the target's calling convention
 * (KTAP_ABI_* of the generated ktap_target.h, from targets/<arch>/target.toml):
 * the argument registers, then words on the stack. */
#include <linux/kprobes.h>
#include <linux/uaccess.h>
#include "ktapvm_probe.h"

struct kprobe_probe {
	struct ktapvm_probe p;
	struct kprobe kp;
	u64 offset;
};

static void fill_args(struct ktapvm_sess *s, struct pt_regs *regs)
{
	unsigned int n = s->nargs, i;

	/* arguments are machine words, zero-extended (pointers stay positive) */
#define KTAPVM_FILL_ARG(i, field)						\
	if (n > i)								\
		s->args[i] = (int64_t)(unsigned long)regs->field;
	KTAP_ABI_ARGS(KTAPVM_FILL_ARG)
#undef KTAPVM_FILL_ARG
	for (i = KTAP_ABI_NREGARGS; i < n; i++) {
		unsigned long v = 0;
		unsigned long at = (unsigned long)regs->KTAP_ABI_SP + KTAP_ABI_STACK_ARGS_OFFSET +
				   (i - KTAP_ABI_NREGARGS) * sizeof(unsigned long);

		if (copy_from_kernel_nofault(&v, (const void *)at, sizeof(v)))
			v = 0;
		s->args[i] = (int64_t)v;
	}
	s->ev.nargs = n;
}

static int kp_pre(struct kprobe *kp, struct pt_regs *regs)
{
	struct kprobe_probe *k = container_of(kp, struct kprobe_probe, kp);
	struct ktapvm_sess *s = k->p.s;
	unsigned long flags;

	if (!ktapvm_fire_begin(s, &flags))
		return 0;
	ktapvm_fill_task(s, &k->p);
	fill_args(s, regs);
	ktapvm_fire_end(s, k->p.event, flags);
	return 0;
}

/* probename is SYMBOL+0xOFFSET for a probe inside a function */
static int kprobe_setup(struct ktapvm_probe *p, const struct ktap_ievent *iev,
			const struct ktap_attach *a, const unsigned char *extra, char *err,
			size_t errlen)
{
	struct kprobe_probe *k = container_of(p, struct kprobe_probe, p);

	k->offset = a->offset;
	if (k->offset) {
		snprintf(p->probename, a->name_len + KTAPVM_PROBENAME_EXTRA, "%s+0x%llx", p->name,
			 (unsigned long long)k->offset);
		p->probename_len = strlen(p->probename);
	}
	return 0;
}

static int kprobe_attach(struct ktapvm_probe *p, char *err, size_t errlen)
{
	struct kprobe_probe *k = container_of(p, struct kprobe_probe, p);

	k->kp.symbol_name = p->name;
	k->kp.offset = (unsigned int)k->offset;
	k->kp.pre_handler = kp_pre;
	return register_kprobe(&k->kp);
}

static void kprobe_detach(struct ktapvm_probe *p)
{
	unregister_kprobe(&container_of(p, struct kprobe_probe, p)->kp);
}

const struct ktapvm_provider ktapvm_provider_kprobe = {
	.size = sizeof(struct kprobe_probe),
	.setup = kprobe_setup,
	.attach = kprobe_attach,
	.detach = kprobe_detach,
};
