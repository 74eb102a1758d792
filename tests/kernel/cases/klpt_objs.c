// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * klpt_objs.c - a livepatch of two objects: vmlinux (cmdline_proc_show) and the
 * module klpt_dup (its second klpt_dup_fn, old_sympos 2), with callbacks, a shadow
 * variable and a state.  The klpt_e_*.c variants include it with other names,
 * positions or objects: each is one of klp_enable_patch()'s refusals.
 *
 * The new cmdline_proc_show prints the shadow variable that the vmlinux object's
 * pre_patch callback allocated, and klpt_dup's static klpt_dup_val read through
 * .klp.sym.klpt_dup.klpt_dup_val,0 from a static pointer (in .rodata: nothing in C
 * writes it): livepatch writes that pointer when it initializes the klpt_dup object
 * (.klp.rela.klpt_dup.rodata).  In a patch that does not declare klpt_dup
 * (KLPT_UNDECLARED) nothing writes it: it stays NULL.  KLPT_REPLACE makes it an
 * atomic-replace patch, KLPT_STATE_VERSION sets its state's version (0: no state).
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include "klpt.h"

#ifndef KLPT_NAME
#define KLPT_NAME "klpt_objs"
#endif
#ifndef KLPT_VM_NAME
#define KLPT_VM_NAME "cmdline_proc_show"
#endif
#ifndef KLPT_DUP_NAME
#define KLPT_DUP_NAME "klpt_dup_fn"
#endif
#ifndef KLPT_DUP_POS
#define KLPT_DUP_POS 2
#endif
#ifndef KLPT_REPLACE
#define KLPT_REPLACE false
#endif
#ifndef KLPT_STATE_VERSION
#define KLPT_STATE_VERSION 1
#endif

#define KLPT_SHADOW_ID 1
#define KLPT_STATE_ID 0x6b6c7074

KLP_SYM(int, klpt_dup_val_ref, klpt_dup, klpt_dup_val, 0);

static int *klpt_dup_val_ptr = &klpt_dup_val_ref;
static int klpt_shadow_owner;

static int klpt_objs_cmdline_show(struct seq_file *m, void *v)
{
	int *shadow = klp_shadow_get(&klpt_shadow_owner, KLPT_SHADOW_ID);
	int *p = READ_ONCE(klpt_dup_val_ptr);

	if (p)
		seq_printf(m, "%s: shadow=%d klpt_dup_val=%d\n", KLPT_NAME,
			   shadow ? *shadow : -1, READ_ONCE(*p));
	else
		seq_printf(m, "%s: shadow=%d klpt_dup_val pointer never relocated (NULL)\n",
			   KLPT_NAME, shadow ? *shadow : -1);
	return 0;
}

static int klpt_objs_dup_fn(void)
{
	return 42;
}

static int klpt_pre_patch(struct klp_object *obj)
{
	int *s = klp_shadow_alloc(&klpt_shadow_owner, KLPT_SHADOW_ID, sizeof(*s), GFP_KERNEL,
				  NULL, NULL);

	if (!s)
		return -ENOMEM;
	*s = 7;
	return 0;
}

static void klpt_post_unpatch(struct klp_object *obj)
{
	klp_shadow_free(&klpt_shadow_owner, KLPT_SHADOW_ID, NULL);
}

static struct klp_func vmlinux_funcs[] = {
	{
		.old_name = KLPT_VM_NAME,
		.new_func = klpt_objs_cmdline_show,
	}, { }
};

#ifndef KLPT_UNDECLARED
static struct klp_func dup_funcs[] = {
	{
		.old_name = KLPT_DUP_NAME,
		.new_func = klpt_objs_dup_fn,
		.old_sympos = KLPT_DUP_POS,
	}, { }
};
#endif

static struct klp_object objs[] = {
	{
		.funcs = vmlinux_funcs,
		.callbacks = {
			.pre_patch = klpt_pre_patch,
			.post_unpatch = klpt_post_unpatch,
		},
	},
#ifndef KLPT_UNDECLARED
	{
		.name = "klpt_dup",
		.funcs = dup_funcs,
	},
#endif
	{ }
};

static struct klp_state states[] = {
#if KLPT_STATE_VERSION
	{ .id = KLPT_STATE_ID, .version = KLPT_STATE_VERSION },
#endif
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
	.states = states,
	.replace = KLPT_REPLACE,
};

static int klpt_objs_init(void)
{
	return klp_enable_patch(&patch);
}

static void klpt_objs_exit(void)
{
}

module_init(klpt_objs_init);
module_exit(klpt_objs_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klpelf real-kernel test: livepatch of vmlinux and klpt_dup");
MODULE_INFO(livepatch, "Y");
