#include "kernel_like.h"

/* x86_64's _ASM_EXTABLE, ALTERNATIVE and LOCK_PREFIX, written out */
#define EXTABLE(from, to) ".pushsection __ex_table,\"a\"\n.balign 4\n" \
	".long " #from " - .\n.long " #to " - .\n.long 0\n.popsection\n"
#define ALT(orig, repl) "661: " orig "\n662:\n" \
	".pushsection .altinstructions,\"a\"\n.long 661b - .\n.long 663f - .\n" \
	".word 0x123\n.byte 662b - 661b\n.byte 664f - 663f\n.popsection\n" \
	".pushsection .altinstr_replacement,\"ax\"\n663: " repl "\n664:\n.popsection\n"

int load_a(int *p)
{
	int v;
	asm volatile("1: movl (%1), %0\n2:\n" EXTABLE(1b, 2b) : "=r"(v) : "r"(p));
	return v;
}

int load_b(int *p)
{
	int v;
	asm volatile("1: movl (%1), %0\n2:\n" EXTABLE(1b, 2b) : "=r"(v) : "r"(p));
	return v + 2;
}

int alt_a(void) { asm volatile(ALT("nop", "pause")); return 1; }
int alt_b(void) { asm volatile(ALT("nop", "lfence")); return 3; }

int locked(int *p)
{
	asm volatile(".pushsection .smp_locks,\"a\"\n.balign 4\n.long 671f - .\n.popsection\n"
		     "671: lock incl %0" : "+m"(*p));
	return 0;
}

int named(void) { printk("%s!\n", __func__); return 0; }

static const char import_ns[] __attribute__((section(".modinfo"), used, aligned(1))) =
	"import_ns=KLPELF_TEST";
