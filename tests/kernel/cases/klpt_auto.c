// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * klpt_auto.c - livepatch of a vmlinux function for `klpelf convert`'s AUTOMATIC
 * mode, for the real-kernel tests.
 *
 * Like klpt_vmlinux.c it replaces cmdline_proc_show(), but it declares the
 * non-exported vmlinux variables it reads as PLAIN externs: no .klp.sym names
 * in the source.  kbuild leaves them undefined (modpost warns, as
 * KBUILD_MODPOST_WARN lets it); `klpelf convert --kernel kallsyms:<the VM's
 * /proc/kallsyms> --symvers <Module.symvers> --sympos vmlinux:max_cstate=1`
 * (tests/kernel/klpvm/build.py) makes each of them a livepatch symbol:
 *
 *   total_forks  unique, not exported  -> .klp.sym.vmlinux.total_forks,0
 *   nr_threads   unique, not exported  -> .klp.sym.vmlinux.nr_threads,0
 *   max_cstate   two instances         -> .klp.sym.vmlinux.max_cstate,1 (from
 *                                         --sympos: intel_idle's, see
 *                                         klpt_vmlinux.c)
 *
 * The exported functions it calls (seq_puts, seq_printf, klp_enable_patch)
 * stay ordinary undefined symbols.  None of the three variables is exported by
 * any kernel of the matrix (5.10, 6.1, 6.12, 7.2).
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

extern unsigned long total_forks;
extern int nr_threads;
extern unsigned int max_cstate;

static int klpt_auto_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "klpt_auto: patched\n");
	seq_printf(m, "total_forks=%lu\n", READ_ONCE(total_forks));
	seq_printf(m, "nr_threads=%d\n", READ_ONCE(nr_threads));
	seq_printf(m, "max_cstate=%u\n", READ_ONCE(max_cstate));
	return 0;
}

static struct klp_func funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = klpt_auto_cmdline_proc_show,
	}, { }
};

static struct klp_object objs[] = {
	{
		/* name NULL: vmlinux */
		.funcs = funcs,
	}, { }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int klpt_auto_init(void)
{
	return klp_enable_patch(&patch);
}

static void klpt_auto_exit(void)
{
}

module_init(klpt_auto_init);
module_exit(klpt_auto_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klpelf real-kernel test: klpelf convert in automatic mode");
MODULE_INFO(livepatch, "Y");
