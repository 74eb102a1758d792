#include "kernel_like.h"

int legacy_value = 5;
static int old_hits;

int uses_legacy(void) { return legacy_value + old_hits++; }
