// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * klpt_a64_target.c - the arm64 lane's target module: /proc/<module name> shows
 * klpt_target_show(), which a livepatch replaces; the replacement reads the static
 * klpt_target_secret and calls the static klpt_target_value() through klp symbols.
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>

static int klpt_target_secret;

static noinline __used int klpt_target_value(void)
{
	return READ_ONCE(klpt_target_secret) + 1;
}

static noinline int klpt_target_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s: original (value %d)\n", KBUILD_MODNAME, klpt_target_value());
	return 0;
}

static int __init klpt_target_init(void)
{
	WRITE_ONCE(klpt_target_secret, 4242);
	if (!proc_create_single(KBUILD_MODNAME, 0444, NULL, klpt_target_show))
		return -ENOMEM;
	return 0;
}

static void __exit klpt_target_exit(void)
{
	remove_proc_entry(KBUILD_MODNAME, NULL);
}

module_init(klpt_target_init);
module_exit(klpt_target_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klpelf real-kernel test (arm64): target module of a late-module livepatch");
