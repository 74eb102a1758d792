// SPDX-License-Identifier: GPL-2.0-or-later
/* klpt_p64_target: the arm64 lane's target module, for ppc64le */
#include "../arm64/klpt_a64_target.c"
