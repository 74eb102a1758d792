// SPDX-License-Identifier: GPL-2.0-or-later
/* klpt_dup_b.c - the second klpt_dup_fn() of klpt_dup.ko (see klpt_dup_a.c) */

#include <linux/compiler.h>

int klpt_dup_b(void);

static int klpt_dup_b_val = 2;

static __attribute__((__noipa__)) int klpt_dup_fn(void)
{
	return READ_ONCE(klpt_dup_b_val);
}

int klpt_dup_b(void)
{
	return klpt_dup_fn();
}
