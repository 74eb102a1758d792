#include "kernel_like.h"

static int counter;
int shared_value = 3;

static noinline int helper(int x) { return x * 3 + counter; }

int compute(int x)
{
	counter++;
	return helper(x) + shared_value;
}

int untouched(int y) { return printk("y=%d\n", y) + helper(y); }
