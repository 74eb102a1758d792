/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * klpt_a64_patch.h - the arm64 lane's livepatch, included by each module's .c with
 * KLPT_VMLINUX and/or KLPT_TARGET defined (which objects it patches).
 *
 * vmlinux: cmdline_proc_show() reads the non-exported saved_command_line and
 * total_forks (ADRP + LDR: ADR_PREL_PG_HI21, LDST64_ABS_LO12_NC) and calls the
 * non-exported nr_processes() (CALL26), all through .klp.sym.vmlinux.* symbols.
 * klpt_a64_target: klpt_target_show() reads its static klpt_target_secret and calls
 * its static klpt_target_value() (CALL26) through .klp.sym.klpt_a64_target.*.
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>
#include "../klpt.h"

typedef int klpt_int_fn(void);

#ifdef KLPT_VMLINUX
KLP_SYM(char *, klpt_saved_command_line, vmlinux, saved_command_line, 0);
KLP_SYM(unsigned long, klpt_total_forks, vmlinux, total_forks, 0);
KLP_SYM(klpt_int_fn, klpt_nr_processes, vmlinux, nr_processes, 0);

static int klpt_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s: patched\ncmdline=%s\ntotal_forks=%lu\nnr_processes=%d\n",
		   KBUILD_MODNAME, READ_ONCE(klpt_saved_command_line),
		   READ_ONCE(klpt_total_forks), klpt_nr_processes());
	return 0;
}

static struct klp_func vmlinux_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = klpt_cmdline_proc_show,
	}, { }
};
#endif

#ifdef KLPT_TARGET
/* the target module's name: a parameter, for a lane whose modules have other names */
#ifndef KLPT_TARGET_OBJ
#define KLPT_TARGET_OBJ klpt_a64_target
#endif
/* one more expansion, so that KLP_SYM stringifies the name, not KLPT_TARGET_OBJ */
#define KLPT_XSYM(type, cname, obj, sym, pos) KLP_SYM(type, cname, obj, sym, pos)
#define KLPT_XSTR(obj) KLPT_STR(obj)
#define KLPT_STR(obj) #obj
KLPT_XSYM(int, klpt_secret, KLPT_TARGET_OBJ, klpt_target_secret, 0);
KLPT_XSYM(klpt_int_fn, klpt_value, KLPT_TARGET_OBJ, klpt_target_value, 0);

static int klpt_patched_target_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s: patched secret=%d value=%d\n", KBUILD_MODNAME,
		   READ_ONCE(klpt_secret), klpt_value());
	return 0;
}

static struct klp_func target_funcs[] = {
	{
		.old_name = "klpt_target_show",
		.new_func = klpt_patched_target_show,
	}, { }
};
#endif

static struct klp_object objs[] = {
#ifdef KLPT_VMLINUX
	{
		/* name NULL: vmlinux */
		.funcs = vmlinux_funcs,
	},
#endif
#ifdef KLPT_TARGET
	{
		.name = KLPT_XSTR(KLPT_TARGET_OBJ),
		.funcs = target_funcs,
	},
#endif
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int klpt_patch_init(void)
{
	return klp_enable_patch(&patch);
}

static void klpt_patch_exit(void)
{
}

module_init(klpt_patch_init);
module_exit(klpt_patch_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klpelf real-kernel test (arm64): livepatch through klp relocations");
MODULE_INFO(livepatch, "Y");
