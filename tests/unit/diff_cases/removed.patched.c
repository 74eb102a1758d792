#include "kernel_like.h"

int uses_legacy(void) { return 5; }
