/* Kernel-like macros for the klpelf diff test pairs: __LINE__ reaches the code as
 * an immediate (report(__FILE__, __LINE__), as __might_sleep() does) and as the line
 * field of a __bug_table entry (x86_64's _BUG_FLAGS with CONFIG_DEBUG_BUGVERBOSE). */
#define noinline __attribute__((noinline))
#define __init __attribute__((section(".init.text"), cold))
#define unlikely(x) __builtin_expect(!!(x), 0)

extern void report(const char *file, int line);
extern int printk(const char *fmt, ...);
extern void panic_path(const char *why) __attribute__((cold, noreturn));

#define MIGHT_SLEEP() report(__FILE__, __LINE__)
#define MY_WARN_ON(cond) do { if (unlikely(cond)) asm volatile("1: ud2\n" \
	".pushsection __bug_table,\"aw\"\n" \
	"2: .long 1b - .\n .long %c0 - .\n .word %c1\n .word %c2\n" \
	".popsection" : : "i"(__FILE__), "i"(__LINE__), "i"(1 << 9)); } while (0)
