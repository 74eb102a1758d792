// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * klpt_vmlinux.c - livepatch of a vmlinux function, for the real-kernel tests.
 *
 * Replaces cmdline_proc_show() (fs/proc/cmdline.c), so that `cat /proc/cmdline`
 * prints values read from NON-EXPORTED vmlinux variables through klp
 * relocations (resolved by the livepatch core from kallsyms at load time):
 *
 *   saved_command_line  unique          -> sympos 0: the test compares it with
 *                                          the command line it booted with
 *   total_forks         unique          -> sympos 0
 *   max_cstate          two instances   -> sympos 1 and 2, in kallsyms (address)
 *                                          order: drivers/idle/intel_idle.c, then
 *                                          drivers/acpi/processor_idle.c (it is
 *                                          __read_mostly, a later section).  Both
 *                                          are module parameters of built-in
 *                                          code, so the test boots with distinct
 *                                          values and compares with sysfs.
 *
 * It is also the base of the negative corpus: the test harness edits copies
 * of the converted module with the klpelf library (tests/kernel/klpvm/mutate.py).
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>
#include "klpt.h"

KLP_SYM(char *, klpt_saved_command_line, vmlinux, saved_command_line, 0);
KLP_SYM(unsigned long, klpt_total_forks, vmlinux, total_forks, 0);
KLP_SYM(int, klpt_intel_idle_max_cstate, vmlinux, max_cstate, 1);
KLP_SYM(unsigned int, klpt_acpi_max_cstate, vmlinux, max_cstate, 2);

static int klpt_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "klpt_vmlinux: patched\n");
	seq_printf(m, "cmdline=%s\n", READ_ONCE(klpt_saved_command_line));
	seq_printf(m, "total_forks=%lu\n", READ_ONCE(klpt_total_forks));
	seq_printf(m, "max_cstate intel_idle=%d processor=%u\n",
		   READ_ONCE(klpt_intel_idle_max_cstate),
		   READ_ONCE(klpt_acpi_max_cstate));
	return 0;
}

static struct klp_func funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = klpt_cmdline_proc_show,
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

static int klpt_vmlinux_init(void)
{
	return klp_enable_patch(&patch);
}

static void klpt_vmlinux_exit(void)
{
}

module_init(klpt_vmlinux_init);
module_exit(klpt_vmlinux_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klpelf real-kernel test: livepatch of cmdline_proc_show via .klp.sym");
MODULE_INFO(livepatch, "Y");
