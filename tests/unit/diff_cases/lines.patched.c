#include "kernel_like.h"

/*
 * Three lines more above: every __LINE__ below moves.
 */

int may_sleep(int x)
{
	MIGHT_SLEEP();
	return x + 1;
}

int checked(int x)
{
	MY_WARN_ON(x < 0);
	return x * 2;
}
