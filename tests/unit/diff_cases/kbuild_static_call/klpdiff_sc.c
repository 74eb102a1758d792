// SPDX-License-Identifier: GPL-2.0
/* A module with its own static call: a livepatch of sc_user would need the call
 * site's .static_call_sites entry to name __SCK__sc_call of this module, which the
 * kernel writes only after the loader has processed the table: refused. */
#include <linux/module.h>
#include <linux/static_call.h>

static int sc_impl(int x) { return x + 1; }
DEFINE_STATIC_CALL(sc_call, sc_impl);

int sc_user(int x)
{
	return static_call(sc_call)(x) * 2;
}
MODULE_LICENSE("GPL");
