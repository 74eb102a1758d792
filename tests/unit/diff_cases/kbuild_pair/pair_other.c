// SPDX-License-Identifier: GPL-2.0
#include <linux/kernel.h>

static int shared_name;

int pair_other_bump(int x)
{
	shared_name -= x;
	return shared_name;
}
