// SPDX-License-Identifier: GPL-2.0-or-later
/* klpt_e_replace.c - klpt_objs.c with one change (see tests/kernel/klpvm/cases.py) */
#define KLPT_NAME "klpt_e_replace"
#define KLPT_REPLACE true
#define KLPT_STATE_VERSION 2
#include "klpt_objs.c"
