#include "kernel_like.h"

/* the kernel's notrace: no __fentry__ call, no __mcount_loc entry */
__attribute__((no_instrument_function)) int quiet(int x) { return x + 1; }

int traced(int x) { return quiet(x) * 2; }
