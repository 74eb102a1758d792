#include "kernel_like.h"

extern int slow_work(int);
static int cache[64];

/* gcc inlines the fast path into every caller and splits the rest off as
 * lookup.part.0, a function of its own; lookup itself is gone */
static int lookup(int key)
{
	if (__builtin_expect(key >= 0 && key < 64 && cache[key], 1))
		return cache[key];
	printk("miss %d\n", key);
	printk("retry %d\n", key);
	cache[key & 63] = slow_work(key) + slow_work(key + 1) * 3;
	return cache[key & 63] + slow_work(key * 2);
}

int api_a(int k) { return lookup(k) + 1; }
int api_b(int k) { return lookup(k * 2) - 1; }
int api_c(int k) { return lookup(k + 7) * 2; }
