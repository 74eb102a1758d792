// SPDX-License-Identifier: GPL-2.0-or-later
/* klpt_a64_far: patches vmlinux; klpt_a64_pad.S puts it ~2 GiB below the kernel */
#define KLPT_VMLINUX
#include "klpt_a64_patch.h"
