// SPDX-License-Identifier: GPL-2.0-or-later
/* klpt_p64_near: patches vmlinux and klpt_p64_target */
#define KLPT_VMLINUX
#define KLPT_TARGET
#define KLPT_TARGET_OBJ klpt_p64_target
#include "../arm64/klpt_a64_patch.h"
