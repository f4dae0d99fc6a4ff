// SPDX-License-Identifier: GPL-2.0
/* ktapvm_main.c - the module: /dev/ktap (a misc device, CAP_SYS_ADMIN to
 * open), one session per open file, the ioctls of ktap_abi.h, read()/poll()
 * of output records, and the stop path. Probe handlers (kmod/events/) run the core through
 * ktapvm_fire_begin()/ktapvm_fire_end(): a per-CPU busy flag refuses
 * re-entry on one CPU (counted as a drop), and a per-session raw spinlock
 * keeps handlers of one session from running concurrently.
 *
 * A handler that ends the session (exit() or a runtime error) only raises a
 * flag and an irq_work; the irq_work queues stop_work, and the stop (detach,
 * wait, trace_end, STATUS) runs in process context. */
#include <linux/module.h>
#include <linux/init.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/uaccess.h>
#include <linux/poll.h>
#include <linux/capability.h>
#include <linux/percpu.h>
#include <linux/timekeeping.h>
#include <linux/delay.h>
#include <linux/timex.h>
#include <generated/utsrelease.h>
#include "ktap_features.h"
/* Spelled out twice: a macro holding <linux/unaligned.h> would have `linux`
 * expanded (gcc predefines it as 1 in the gnu dialects). */
#if KTAP_HAVE_LINUX_UNALIGNED_H
#include <linux/unaligned.h>
#else
#include <asm/unaligned.h>
#endif
#include "ktapvm_mod.h"

#define KTAPVM_MAX_IMAGE	(16U << 20)
#define KTAPVM_MAX_ATTACH	(4U << 20)

DEFINE_PER_CPU(int, ktapvm_busy);

/* -- probe context: ktapvm_fire_begin()/ktapvm_fire_end() are inline in ktapvm_mod.h */
/* vm_lock from process context: irqs off and the per-CPU busy flag set, so a
 * probe that fires inside (a kprobe is not masked by local_irq_save) is
 * dropped as re-entered instead of spinning on a lock its own CPU holds. */
static void vm_lock_process(struct ktapvm_sess *s, unsigned long *flags)
{
	local_irq_save(*flags);
	this_cpu_write(ktapvm_busy, 1);
	arch_spin_lock(&s->vm_lock);
}

static void vm_unlock_process(struct ktapvm_sess *s, unsigned long flags)
{
	arch_spin_unlock(&s->vm_lock);
	this_cpu_write(ktapvm_busy, 0);
	local_irq_restore(flags);
}

/* Runs in hard irq context soon after a handler asked for it: waking a reader
 * or queueing work from the handler itself could take scheduler locks the
 * probed code already holds. */
static void ktapvm_irq_work(struct irq_work *w)
{
	struct ktapvm_sess *s = container_of(w, struct ktapvm_sess, irq_work);

	if (READ_ONCE(s->stop_requested))
		schedule_work(&s->stop_work);
	wake_up_interruptible(&s->wq);
}

/* -- the session state machine (process context, s->lock held) ------------ */
static void set_err(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

static int copy_err(u64 ubuf, const char *err)
{
	if (!ubuf || !err[0])
		return 0;
	if (copy_to_user(u64_to_user_ptr(ubuf), err, strnlen(err, KTAP_ERRLEN - 1) + 1))
		return -EFAULT;
	return 0;
}

/* Moves the core's records into rbuf (whole buffer or nothing). */
static void drain(struct ktapvm_sess *s)
{
	const unsigned char *out;
	unsigned long flags;
	size_t len;

	if (!s->vm)
		return;
	if (s->rpos == s->rlen)
		s->rpos = s->rlen = 0;
	vm_lock_process(s, &flags);
	out = ktap_output(s->vm, &len);
	if (len && len <= s->rcap - s->rlen) {
		if (s->rpos) {
			memmove(s->rbuf, s->rbuf + s->rpos, s->rlen - s->rpos);
			s->rlen -= s->rpos;
			s->rpos = 0;
		}
		memcpy(s->rbuf + s->rlen, out, len);
		s->rlen += len;
		ktap_output_consumed(s->vm);
	}
	vm_unlock_process(s, flags);
}

/* stop -> unregister every probe -> wait for handlers -> trace_end -> STATUS */
static void session_stop(struct ktapvm_sess *s)
{
	unsigned long flags;
	s64 n;

	if (s->state != KTAPVM_RUNNING)
		return;
	WRITE_ONCE(s->active, 0);
	/* unregister_kprobe, perf_event_release_kernel, hrtimer_cancel, then
	 * synchronize_rcu: no handler runs after this */
	ktapvm_detach_all(s);
	irq_work_sync(&s->irq_work);
	drain(s);			/* room for trace_end's records */
	vm_lock_process(s, &flags);
	ktap_set_clock(s->vm, (int64_t)ktime_get_real_ns());
	ktap_set_mono(s->vm, (int64_t)ktime_get_ns());
	ktap_run_end(s->vm);
	n = atomic64_read(&s->reentered);
	if (n)
		ktap_add_drops(s->vm, KTAP_DROP_REENTERED, (uint64_t)n);
	ktap_finish(s->vm);
	vm_unlock_process(s, flags);
	s->state = KTAPVM_DONE;
	drain(s);
	s->finished = 1;
	wake_up_interruptible(&s->wq);
}

static void stop_work_fn(struct work_struct *w)
{
	struct ktapvm_sess *s = container_of(w, struct ktapvm_sess, stop_work);

	mutex_lock(&s->lock);
	session_stop(s);
	mutex_unlock(&s->lock);
}

static void session_unload(struct ktapvm_sess *s)
{
	ktap_session_free(s->vm);
	s->vm = NULL;
	ktap_image_free(s->img);
	s->img = NULL;
	kvfree(s->rbuf);
	s->rbuf = NULL;
	s->rcap = s->rlen = s->rpos = 0;
	s->finished = 0;
	s->state = KTAPVM_EMPTY;
}

static long ioc_info(struct ktapvm_sess *s, void __user *arg)
{
	struct ktap_ioc_info info;

	memset(&info, 0, sizeof(info));
	info.abi_version = KTAP_ABI_VERSION;
	info.target_id = KTAP_TARGET_ID;
	strscpy(info.release, UTS_RELEASE, sizeof(info.release));
	info.anchor = (u64)(unsigned long)&KTAP_ANCHOR_SYMBOL;
	return copy_to_user(arg, &info, sizeof(info)) ? -EFAULT : 0;
}

static long ioc_load(struct ktapvm_sess *s, void __user *arg)
{
	struct ktap_ioc_load ld;
	char *err;
	void *data = NULL;
	struct ktap_image *img = NULL;
	int proto = -1, pc = -1, rc;
	long ret = -EINVAL;

	if (copy_from_user(&ld, arg, sizeof(ld)))
		return -EFAULT;
	err = kzalloc(KTAP_ERRLEN, GFP_KERNEL);
	if (!err)
		return -ENOMEM;
	if (s->state != KTAPVM_EMPTY) {
		set_err(err, KTAP_ERRLEN, "a script is already loaded in this session");
		goto out;
	}
	if (ld.size == 0 || ld.size > KTAPVM_MAX_IMAGE) {
		set_err(err, KTAP_ERRLEN, "image size %llu is out of range (1..%u bytes)",
			(unsigned long long)ld.size, KTAPVM_MAX_IMAGE);
		goto out;
	}
	data = kvmalloc(ld.size, GFP_KERNEL);
	if (!data) {
		ret = -ENOMEM;
		set_err(err, KTAP_ERRLEN, "out of memory for a %llu-byte image",
			(unsigned long long)ld.size);
		goto out;
	}
	if (copy_from_user(data, u64_to_user_ptr(ld.image), ld.size)) {
		ret = -EFAULT;
		goto out;
	}
	/* header first (magic, version, byte order, word size, ...), then the verifier */
	if (ktap_load(data, ld.size, &img, err, KTAP_ERRLEN) != 0 || !img) {
		if (!err[0])
			set_err(err, KTAP_ERRLEN, "bad image");
		goto out;
	}
	/* An ebpf image's handlers are BPF programs: ktaprun loads them with
	 * bpf(2) and runs the rest in user space; nothing here could run it. */
	if (img->backend != KTAP_BACKEND_KTAPVM) {
		set_err(err, KTAP_ERRLEN, "image is for the ebpf backend: ktaprun runs it "
			"without %s.ko", KTAP_MODULE_NAME);
		ktap_image_free(img);
		goto out;
	}
	rc = ktap_verify(img, err, KTAP_ERRLEN, &proto, &pc);
	if (rc != KTAP_OK) {
		char *msg = kstrdup(err, GFP_KERNEL);

		set_err(err, KTAP_ERRLEN, "verifier: %s: %s (function %d, pc %d)",
			rc < KTAP_NUM_REASONS ? ktap_reason_names[rc] : "?",
			msg ? msg : "", proto, pc);
		kfree(msg);
		ktap_image_free(img);
		goto out;
	}
	s->rcap = (size_t)img->limits[KTAP_LIMIT_OUTBUF_SIZE] + 1024;
	s->rbuf = kvmalloc(s->rcap, GFP_KERNEL);
	if (!s->rbuf) {
		ktap_image_free(img);
		ret = -ENOMEM;
		set_err(err, KTAP_ERRLEN, "out of memory for the output buffer");
		goto out;
	}
	s->img = img;
	ktapvm_scan_image(s);
	s->state = KTAPVM_LOADED;
	ret = 0;
out:
	kvfree(data);
	if (ret && copy_err(ld.errbuf, err))
		ret = -EFAULT;
	kfree(err);
	return ret;
}

static long ioc_start(struct ktapvm_sess *s, void __user *arg)
{
	struct ktap_ioc_start st;
	char *err;
	void *table = NULL;
	long ret = -EINVAL;
	int rc;

	if (copy_from_user(&st, arg, sizeof(st)))
		return -EFAULT;
	err = kzalloc(KTAP_ERRLEN, GFP_KERNEL);
	if (!err)
		return -ENOMEM;
	if (s->state != KTAPVM_LOADED) {
		set_err(err, KTAP_ERRLEN, s->state == KTAPVM_EMPTY ? "no script loaded"
			: "the session was already started");
		goto out;
	}
	if (st.size > KTAPVM_MAX_ATTACH) {
		set_err(err, KTAP_ERRLEN, "attach table of %llu bytes is too large",
			(unsigned long long)st.size);
		goto out;
	}
	if (st.size) {
		table = kvmalloc(st.size, GFP_KERNEL);
		if (!table) {
			ret = -ENOMEM;
			goto out;
		}
		if (copy_from_user(table, u64_to_user_ptr(st.attach), st.size)) {
			ret = -EFAULT;
			goto out;
		}
	}
	/* an aggregate shard per online CPU: memory follows the CPUs there are,
	 * not the possible ones; a CPU numbered higher (a sparse online mask)
	 * shares a shard by modulo, still exact as handlers run one at a time */
	s->vm = ktap_session_new(s->img, num_online_cpus(), err, KTAP_ERRLEN);
	if (!s->vm) {
		ret = -ENOMEM;
		if (!err[0])
			set_err(err, KTAP_ERRLEN, "out of memory for the session");
		goto out;
	}
	ktap_set_reader(s->vm, ktapvm_read_str, s);
	ktap_set_clock(s->vm, (int64_t)ktime_get_real_ns());
	ktap_set_mono(s->vm, (int64_t)ktime_get_ns());
	atomic64_set(&s->reentered, 0);
	s->stop_requested = 0;
	/* only the setup chunk may create tables; nothing is attached yet */
	rc = ktap_run_setup(s->vm);
	s->state = KTAPVM_RUNNING;
	if (rc == KTAP_RUN_EXIT || rc == KTAP_RUN_ERROR) {
		session_stop(s);	/* trace_end (after exit()) and STATUS; read() has them */
		ret = 0;
		goto out;
	}
	WRITE_ONCE(s->active, 1);
	ret = ktapvm_attach_all(s, table, st.size, st.count, err, KTAP_ERRLEN);
	if (ret) {
		WRITE_ONCE(s->active, 0);
		ktapvm_detach_all(s);
		irq_work_sync(&s->irq_work);
		ktap_session_free(s->vm);
		s->vm = NULL;
		s->rlen = s->rpos = 0;
		s->state = KTAPVM_LOADED;
	}
out:
	kvfree(table);
	if (ret && copy_err(st.errbuf, err))
		ret = -EFAULT;
	kfree(err);
	return ret;
}

static long ktapvm_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct ktapvm_sess *s = file->private_data;
	void __user *uarg = (void __user *)arg;
	long ret;

	if (cmd == KTAP_IOC_INFO)
		return ioc_info(s, uarg);
	mutex_lock(&s->lock);
	switch (cmd) {
	case KTAP_IOC_LOAD:
		ret = ioc_load(s, uarg);
		break;
	case KTAP_IOC_START:
		ret = ioc_start(s, uarg);
		break;
	case KTAP_IOC_STOP:
		if (s->state == KTAPVM_RUNNING)
			session_stop(s);
		ret = s->state == KTAPVM_DONE ? 0 : -EINVAL;
		break;
	default:
		ret = -ENOTTY;
	}
	mutex_unlock(&s->lock);
	return ret;
}

/* -- read / poll -------------------------------------------------------------- */
static bool readable(struct ktapvm_sess *s)
{
	size_t len = 0;

	if (READ_ONCE(s->finished) || READ_ONCE(s->rlen) != READ_ONCE(s->rpos))
		return true;
	if (READ_ONCE(s->state) == KTAPVM_RUNNING && s->vm)
		ktap_output(s->vm, &len);
	return len != 0;
}

/* Whole records only: a buffer smaller than the next record gets EMSGSIZE. */
static ssize_t ktapvm_read(struct file *file, char __user *buf, size_t count, loff_t *ppos)
{
	struct ktapvm_sess *s = file->private_data;
	size_t n, rec;
	ssize_t ret;

	for (;;) {
		mutex_lock(&s->lock);
		drain(s);
		if (s->rpos < s->rlen) {
			n = 0;
			while (s->rpos + n + 4 <= s->rlen) {
				rec = get_unaligned((u32 *)(s->rbuf + s->rpos + n));
				if (rec < 5 || n + rec > count || s->rpos + n + rec > s->rlen)
					break;
				n += rec;
			}
			if (n == 0) {
				ret = -EMSGSIZE;
			} else if (copy_to_user(buf, s->rbuf + s->rpos, n)) {
				ret = -EFAULT;
			} else {
				s->rpos += n;
				ret = n;
			}
			mutex_unlock(&s->lock);
			return ret;
		}
		if (s->finished) {
			mutex_unlock(&s->lock);
			return 0;
		}
		mutex_unlock(&s->lock);
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		/* records written while nobody slept raise no irq_work: poll now and then */
		ret = wait_event_interruptible_timeout(s->wq, readable(s), HZ / 10);
		if (ret < 0)
			return ret;
	}
}

static __poll_t ktapvm_poll(struct file *file, poll_table *wait)
{
	struct ktapvm_sess *s = file->private_data;

	poll_wait(file, &s->wq, wait);
	return readable(s) ? EPOLLIN | EPOLLRDNORM : 0;
}

/* -- open / close ---------------------------------------------------------------- */
static int ktapvm_open(struct inode *inode, struct file *file)
{
	struct ktapvm_sess *s;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	s = kvzalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	mutex_init(&s->lock);
	s->vm_lock = (arch_spinlock_t)__ARCH_SPIN_LOCK_UNLOCKED;
	init_irq_work(&s->irq_work, ktapvm_irq_work);
	INIT_WORK(&s->stop_work, stop_work_fn);
	init_waitqueue_head(&s->wq);
	s->state = KTAPVM_EMPTY;
	file->private_data = s;
	return nonseekable_open(inode, file);
}

static int ktapvm_release(struct inode *inode, struct file *file)
{
	struct ktapvm_sess *s = file->private_data;

	mutex_lock(&s->lock);
	session_stop(s);
	mutex_unlock(&s->lock);
	irq_work_sync(&s->irq_work);
	cancel_work_sync(&s->stop_work);
	session_unload(s);
	kvfree(s);
	return 0;
}

static const struct file_operations ktapvm_fops = {
	.owner = THIS_MODULE,
	.open = ktapvm_open,
	.release = ktapvm_release,
	.read = ktapvm_read,
	.poll = ktapvm_poll,
	.unlocked_ioctl = ktapvm_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
#if KTAP_HAVE_NO_LLSEEK
	.llseek = no_llseek,
#endif
};

static struct miscdevice ktapvm_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "ktap",
	.fops = &ktapvm_fops,
	.mode = 0600,
};

u64 ktap_wd_cycles_per_us;

/* Does the watchdog's clock move while interrupts are off? If not (a jiffies
 * clocksource), switch the watchdog to get_cycles(), calibrated here. */
static void __init ktapvm_check_clock(void)
{
	unsigned long flags;
	u64 t0, t1, us;
	cycles_t c0, c1;
	long i;

	local_irq_save(flags);
	t0 = ktime_get_mono_fast_ns();
	c0 = get_cycles();
	for (i = 0; i < 2000000 && ktime_get_mono_fast_ns() == t0; i++)
		cpu_relax();
	t1 = ktime_get_mono_fast_ns();
	c1 = get_cycles();
	local_irq_restore(flags);
	if (t1 != t0)
		return;
	if (c1 == c0) {
		pr_warn("ktapvm: the clock stands still with interrupts off and there is no cycle "
			"counter: the handler watchdog cannot fire, only the budget bounds handlers\n");
		return;
	}
	t0 = ktime_get_ns();
	c0 = get_cycles();
	msleep(200);
	t1 = ktime_get_ns();
	c1 = get_cycles();
	us = div64_u64(t1 - t0, 1000);
	if (us && c1 > c0 && div64_u64((u64)(c1 - c0), us)) {
		ktap_wd_cycles_per_us = div64_u64((u64)(c1 - c0), us);
		pr_info("ktapvm: the clock stands still with interrupts off; the handler watchdog "
			"counts cycles (%llu per us)\n", (unsigned long long)ktap_wd_cycles_per_us);
	}
}

static int __init ktapvm_init(void)
{
	int ret;

	ktapvm_check_clock();
	ret = misc_register(&ktapvm_dev);

	if (ret)
		pr_err("ktapvm: cannot register /dev/ktap (%d)\n", ret);
	else
		pr_info("ktapvm: /dev/ktap ready (target %s, ABI %d)\n", KTAP_TARGET_NAME,
			KTAP_ABI_VERSION);
	return ret;
}

static void __exit ktapvm_exit(void)
{
	misc_deregister(&ktapvm_dev);
}

module_init(ktapvm_init);
module_exit(ktapvm_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ktap: verified bytecode for dynamic tracing");
