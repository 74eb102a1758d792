// SPDX-License-Identifier: GPL-2.0-or-later
/* klpt_e_noexist.c - klpt_objs.c with one change (see tests/kernel/klpvm/cases.py) */
#define KLPT_NAME "klpt_e_noexist"
#define KLPT_VM_NAME "cmdline_proc_shw"
#include "klpt_objs.c"
