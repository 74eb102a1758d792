// SPDX-License-Identifier: GPL-2.0-or-later
/* klpt_e_states.c - klpt_objs.c with one change (see tests/kernel/klpvm/cases.py) */
#define KLPT_NAME "klpt_e_states"
#define KLPT_REPLACE true
#define KLPT_STATE_VERSION 0
#include "klpt_objs.c"
