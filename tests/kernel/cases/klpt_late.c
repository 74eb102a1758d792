// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * klpt_late.c - livepatch of a MODULE (klpt_target.ko), loaded before it.
 *
 * Replaces klpt_target_show() so that /proc/klpt_target prints the module's
 * static klpt_target_secret, read through ".klp.sym.klpt_target.klpt_target_secret,0".
 * `klpelf convert` puts that relocation into .klp.rela.klpt_target.text; the
 * livepatch core applies it in klp_module_coming() when klpt_target loads
 * (late module patching), not when this module loads.
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>
#include "klpt.h"

KLP_SYM(int, klpt_secret, klpt_target, klpt_target_secret, 0);

static int klpt_late_target_show(struct seq_file *m, void *v)
{
	seq_printf(m, "klpt_late: patched secret=%d\n", READ_ONCE(klpt_secret));
	return 0;
}

static struct klp_func funcs[] = {
	{
		.old_name = "klpt_target_show",
		.new_func = klpt_late_target_show,
	}, { }
};

static struct klp_object objs[] = {
	{
		.name = "klpt_target",
		.funcs = funcs,
	}, { }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int klpt_late_init(void)
{
	return klp_enable_patch(&patch);
}

static void klpt_late_exit(void)
{
}

module_init(klpt_late_init);
module_exit(klpt_late_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klpelf real-kernel test: late-module livepatch of klpt_target");
MODULE_INFO(livepatch, "Y");
