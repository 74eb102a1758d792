// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * klp_sample.c - input sample for `klpelf convert`
 *
 * A livepatch module in the style of the kernel's
 * samples/livepatch/livepatch-sample.c, for Linux 6.1 (Debian 12,
 * 6.1.0-56-amd64).  It replaces cmdline_proc_show() (fs/proc/cmdline.c),
 * so that `cat /proc/cmdline` prints a recognisable banner plus values
 * read from NON-EXPORTED vmlinux variables.
 *
 * A module cannot link against non-exported symbols.  A livepatch module
 * instead references them through special symbols named
 *
 *	.klp.sym.<objname>.<symbol>,<sympos>
 *
 * that the livepatch core resolves through kallsyms when the patch is
 * enabled (Documentation/livepatch/module-elf-format.rst).  This file only
 * produces the *unconverted* input: ordinary UNDEFINED symbols that
 * already carry those names, with ordinary .rela.text relocations against
 * them.  `klpelf convert` later turns them into real livepatch symbols
 * (st_shndx SHN_LIVEPATCH) and .klp.rela.vmlinux.* sections.  The
 * unconverted klp_sample.ko cannot be loaded: the module loader would not
 * find ".klp.sym.vmlinux.total_forks,0" and refuse it.
 *
 * Symbols used (checked against Debian's Module.symvers: none is
 * exported; positions from the System.map of linux-image-6.1.0-56-amd64-dbg,
 * where sympos is the 1-based rank in ascending address order among the
 * symbols of that name, and 0 means "must be unique"):
 *
 *	total_forks  kernel/fork.c                  unique  -> sympos 0
 *	nr_threads   kernel/fork.c                  unique  -> sympos 0
 *	max_cstate   drivers/idle/intel_idle.c      1st of 2 -> sympos 1
 *	max_cstate   drivers/acpi/processor_idle.c  2nd of 2 -> sympos 2
 *
 * The two max_cstate variables are module parameters, so the values the
 * patched /proc/cmdline prints can be checked against
 * /sys/module/intel_idle/parameters/max_cstate and
 * /sys/module/processor/parameters/max_cstate.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

/*
 * KLP_SYM(type, cname, sym, pos) declares a C variable `cname` that is an
 * alias of the undefined symbol ".klp.sym.vmlinux.<sym>,<pos>".
 *
 * The '.' and ',' in that name are not valid in a C identifier.  An asm
 * label on the extern (`extern T x asm("\".klp.sym...,0\"")`) would put
 * the quoted name, comma included, into instruction operands; Debian 12's
 * binutils 2.40 accepts that, but some assemblers reject it.  So C code
 * uses the plain identifier `cname`, and a top-level
 * `.set cname, ".klp.sym.vmlinux.<sym>,<pos>"` makes it an assembler
 * alias: the quoted name appears only in that directive, every reference
 * to `cname` is emitted as a relocation against the quoted (undefined)
 * symbol, and `cname` itself does not appear in the object's symbol table.
 */
#define KLP_SYM(type, cname, sym, pos)					\
	extern type cname;						\
	asm(".set " #cname ", \".klp.sym.vmlinux." #sym "," #pos "\"")

KLP_SYM(unsigned long, klp_total_forks, total_forks, 0);
KLP_SYM(int, klp_nr_threads, nr_threads, 0);
KLP_SYM(int, klp_intel_idle_max_cstate, max_cstate, 1);
KLP_SYM(unsigned int, klp_acpi_max_cstate, max_cstate, 2);

/* The replacement for cmdline_proc_show(): same signature as the original. */
static int livepatch_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "this has been live patched by klp_sample\n");
	seq_printf(m, "total_forks=%lu nr_threads=%d\n",
		   READ_ONCE(klp_total_forks), READ_ONCE(klp_nr_threads));
	seq_printf(m, "max_cstate: intel_idle=%d processor=%u\n",
		   klp_intel_idle_max_cstate, klp_acpi_max_cstate);
	return 0;
}

static struct klp_func funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = livepatch_cmdline_proc_show,
	}, { }
};

static struct klp_object objs[] = {
	{
		/* name being NULL means vmlinux */
		.funcs = funcs,
	}, { }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int livepatch_init(void)
{
	return klp_enable_patch(&patch);
}

static void livepatch_exit(void)
{
}

module_init(livepatch_init);
module_exit(livepatch_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klpelf sample: livepatch of cmdline_proc_show using .klp.sym references");
/* Tells the module loader (and klpelf) that this is a livepatch module. */
MODULE_INFO(livepatch, "Y");
