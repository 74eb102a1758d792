#include "kernel_like.h"

asm(".pushsection .klpelf_test_table,\"a\"\n.long 1\n.popsection");

int plain(int x) { return x; }
