// SPDX-License-Identifier: GPL-2.0
/* kretprobe.c - kretprobes (register_kretprobe): the return value from
 * struct pt_regs with the target's calling convention (KTAP_ABI_RETVAL). */
#include <linux/kprobes.h>
#include "ktapvm_probe.h"

struct kretprobe_probe {
	struct ktapvm_probe p;
	struct kretprobe krp;
};

static int krp_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct kretprobe *rp = ktap_kretprobe_of(ri);
	struct kretprobe_probe *k;
	struct ktapvm_sess *s;
	unsigned long flags;

	if (!rp)
		return 0;
	k = container_of(rp, struct kretprobe_probe, krp);
	s = k->p.s;
	if (!ktapvm_fire_begin(s, &flags))
		return 0;
	ktapvm_fill_task(s, &k->p);
	s->ev.has_retval = 1;
	s->ev.retval = (int64_t)(long)regs->KTAP_ABI_RETVAL;
	ktapvm_fire_end(s, k->p.event, flags);
	return 0;
}

static int kretprobe_attach(struct ktapvm_probe *p, char *err, size_t errlen)
{
	struct kretprobe_probe *k = container_of(p, struct kretprobe_probe, p);

	k->krp.kp.symbol_name = p->name;
	k->krp.handler = krp_ret;
	k->krp.maxactive = 0;		/* the kernel's default */
	return register_kretprobe(&k->krp);
}

static void kretprobe_detach(struct ktapvm_probe *p)
{
	unregister_kretprobe(&container_of(p, struct kretprobe_probe, p)->krp);
}

const struct ktapvm_provider ktapvm_provider_kretprobe = {
	.size = sizeof(struct kretprobe_probe),
	.attach = kretprobe_attach,
	.detach = kretprobe_detach,
};
