/* SPDX-License-Identifier: GPL-2.0-or-later */
/* the padding of klpt_a64_far_late (one object file per module) */
#include "klpt_a64_pad.S"
