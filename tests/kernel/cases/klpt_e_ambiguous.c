// SPDX-License-Identifier: GPL-2.0-or-later
/* klpt_e_ambiguous.c - klpt_objs.c with one change (see tests/kernel/klpvm/cases.py) */
#define KLPT_NAME "klpt_e_ambiguous"
#define KLPT_DUP_POS 0
#include "klpt_objs.c"
