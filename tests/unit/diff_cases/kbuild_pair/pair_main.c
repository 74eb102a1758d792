// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>

static int shared_name;

int pair_main_bump(int x)
{
	shared_name += x;
	return shared_name;
}

MODULE_LICENSE("GPL");
