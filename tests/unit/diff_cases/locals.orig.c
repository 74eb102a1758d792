#include "kernel_like.h"

int first_user(void)
{
	static int count;
	return ++count;
}

int second_user(void)
{
	static int count;
	return count += 2;
}
