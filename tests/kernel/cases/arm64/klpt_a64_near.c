// SPDX-License-Identifier: GPL-2.0-or-later
/* klpt_a64_near: patches vmlinux and klpt_a64_target; small, near the kernel */
#define KLPT_VMLINUX
#define KLPT_TARGET
#include "klpt_a64_patch.h"
