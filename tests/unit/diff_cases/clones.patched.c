#include "kernel_like.h"

static noinline int first(int x, int k) { return x - k; }
static noinline int scale(int x, int unused_factor) { return x * 7 + 1; }
static noinline int adjust(int x, int by) { return x + by * 3; }

int entry_a(int x)
{
	if (unlikely(x > 1000))
		panic_path("too big");
	return scale(x, 3) + adjust(x, 5) + first(x, 9);
}

int entry_b(int y)
{
	if (unlikely(y < -1000)) {
		printk("too small: %d\n", y);
		panic_path("too small");
	}
	return adjust(y, 5) * 2;
}
