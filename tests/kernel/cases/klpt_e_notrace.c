// SPDX-License-Identifier: GPL-2.0-or-later
/* klpt_e_notrace.c - klpt_objs.c with one change (see tests/kernel/klpvm/cases.py) */
#define KLPT_NAME "klpt_e_notrace"
#define KLPT_DUP_NAME "klpt_dup_cold"
#define KLPT_DUP_POS 0
#include "klpt_objs.c"
