#include "kernel_like.h"

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
