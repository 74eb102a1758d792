// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * klpt_target.c - an ordinary module, the target of the late-module livepatch
 * klpt_late.ko in the real-kernel tests.
 *
 * /proc/klpt_target prints "klpt_target: original".  The static variable
 * klpt_target_secret is set at init and never printed here; the livepatch
 * reads it through a klp relocation (.klp.sym.klpt_target.klpt_target_secret,0)
 * that the livepatch core applies when this module loads after the patch.
 *
 * A second static variable has a 134-byte name: longer than the 127 bytes that
 * livepatch's symbol-name parser took before Linux 6.1 raised KSYM_NAME_LEN from
 * 128 to 512.  The case sym_long_name reads it through a klp relocation.
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>

static int klpt_target_secret;
static int klpt_target_secret_with_a_name_longer_than_the_127_bytes_that_livepatch_accepted_before_linux_6_1_raised_KSYM_NAME_LEN_from_128_to_512 __used = 4343;

static noinline int klpt_target_show(struct seq_file *m, void *v)
{
	seq_printf(m, "klpt_target: original (secret %s)\n",
		   READ_ONCE(klpt_target_secret) ? "set" : "unset");
	return 0;
}

static int __init klpt_target_init(void)
{
	WRITE_ONCE(klpt_target_secret, 4242);
	if (!proc_create_single("klpt_target", 0444, NULL, klpt_target_show))
		return -ENOMEM;
	return 0;
}

static void __exit klpt_target_exit(void)
{
	remove_proc_entry("klpt_target", NULL);
}

module_init(klpt_target_init);
module_exit(klpt_target_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klpelf real-kernel test: target module of a late-module livepatch");
