// SPDX-License-Identifier: GPL-2.0-or-later
/* klpt_a64_far_late: patches klpt_a64_target; klpt_a64_pad2.S puts it far away */
#define KLPT_TARGET
#include "klpt_a64_patch.h"
