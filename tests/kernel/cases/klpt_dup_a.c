// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * klpt_dup_a.c, klpt_dup_b.c - klpt_dup.ko, an ordinary module that two files make:
 * each has a static klpt_dup_fn(), so the module's kallsyms has that name twice
 * (sympos 1: this file's, first in the link; sympos 2: klpt_dup_b.c's).
 * klpt_dup_cold() is notrace: it has no ftrace location (no __fentry__ call, no
 * __mcount_loc entry).  /proc/klpt_dup prints what the three return.
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>

int klpt_dup_b(void);

/* read through a livepatch symbol by klpt_objs (.klp.sym.klpt_dup.klpt_dup_val,0) */
static int klpt_dup_val = 1;

/* noipa: neither inlined nor cloned (a clone would be klpt_dup_fn.isra.0) */
static __attribute__((__noipa__)) int klpt_dup_fn(void)
{
	return READ_ONCE(klpt_dup_val);
}

static notrace __attribute__((__noipa__)) int klpt_dup_cold(void)
{
	return READ_ONCE(klpt_dup_val) + 2;
}

static int klpt_dup_show(struct seq_file *m, void *v)
{
	seq_printf(m, "klpt_dup: a=%d b=%d cold=%d\n", klpt_dup_fn(), klpt_dup_b(),
		   klpt_dup_cold());
	return 0;
}

static int __init klpt_dup_init(void)
{
	return proc_create_single("klpt_dup", 0444, NULL, klpt_dup_show) ? 0 : -ENOMEM;
}

static void __exit klpt_dup_exit(void)
{
	remove_proc_entry("klpt_dup", NULL);
}

module_init(klpt_dup_init);
module_exit(klpt_dup_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klpelf real-kernel test: a module with a static function twice");
