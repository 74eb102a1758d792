// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/mutex.h>
#include <linux/jump_label.h>
#include <linux/bug.h>

static DEFINE_MUTEX(demo_lock);
static DEFINE_STATIC_KEY_FALSE(demo_key);
static int demo_count;

static noinline int demo_step(int x)
{
	pr_debug("klpdiff_demo: step %d\n", x);
	WARN_ON(x < 0);
	return x * 2 + demo_count;
}

int demo_entry(int x)
{
	int r;

	mutex_lock(&demo_lock);
	demo_count++;
	r = demo_step(x);
	mutex_unlock(&demo_lock);
	pr_info("klpdiff_demo: %d\n", r);
	return r;
}
EXPORT_SYMBOL_GPL(demo_entry);

int demo_keyed(int x)
{
	if (static_branch_unlikely(&demo_key))
		return x + 1;
	return x;
}

static int __init demo_init(void)
{
	return demo_entry(1) > 0 ? 0 : -EINVAL;
}

static void __exit demo_exit(void)
{
}

module_init(demo_init);
module_exit(demo_exit);
MODULE_LICENSE("GPL");
