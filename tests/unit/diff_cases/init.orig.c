#include "kernel_like.h"

static int ready;

static int __init setup(void)
{
	ready = 1;
	return 0;
}

int (*setup_hook)(void) = setup;
int is_ready(void) { return ready; }
