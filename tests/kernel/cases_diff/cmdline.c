// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * cmdline.c - a translation unit of vmlinux as the real-kernel test of klpelf diff
 * sees it: cmdline_proc_show, the /proc/cmdline handler (static, as in
 * fs/proc/cmdline.c).  tests/kernel/test_diff_livepatch.py compiles it as it is and
 * with a fix (the handler prints a prefix and intel_idle's max_cstate, a static
 * that vmlinux has twice: sympos 1), diffs the two with --object vmlinux, and loads
 * the livepatch module klpelf writes around the diff.
 */
#include <linux/init.h>
#include <linux/seq_file.h>

#ifdef KLPT_FIXED
extern int max_cstate;
#endif

static int __used cmdline_proc_show(struct seq_file *m, void *v)
{
#ifdef KLPT_FIXED
	seq_printf(m, "klpelf diff: %s max_cstate=%d\n", saved_command_line,
		   READ_ONCE(max_cstate));
#else
	seq_puts(m, saved_command_line);
	seq_putc(m, '\n');
#endif
	return 0;
}
