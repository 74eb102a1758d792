// SPDX-License-Identifier: GPL-2.0-or-later
/* klpt_e_undeclared.c - klpt_objs.c with one change (see tests/kernel/klpvm/cases.py) */
#define KLPT_NAME "klpt_e_undeclared"
#define KLPT_UNDECLARED 1
#include "klpt_objs.c"
