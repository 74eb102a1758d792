// SPDX-License-Identifier: GPL-2.0-or-later
/* klpt_e_sympos.c - klpt_objs.c with one change (see tests/kernel/klpvm/cases.py) */
#define KLPT_NAME "klpt_e_sympos"
#define KLPT_DUP_POS 3
#include "klpt_objs.c"
