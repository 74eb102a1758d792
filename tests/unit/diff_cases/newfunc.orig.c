#include "kernel_like.h"

int total(int a, int b)
{
	return a + b;
}
