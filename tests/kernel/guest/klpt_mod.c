// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * klpt_mod - the guest's module loader for the real-kernel tests.
 *
 *   klpt_mod load FILE      one finit_module(2) call, no parameters
 *   klpt_mod unload NAME    one delete_module(2) call, O_NONBLOCK
 *
 * The exit status is the errno of the call (0: success).  busybox insmod is not
 * used because it retries with init_module(2) after any finit_module(2)
 * failure, so every kernel message would appear twice.  Statuses 250..255 are
 * the tool's own errors (usage, open failure), beyond any errno value.
 *
 * Built with `gcc -static` by the test harness.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long ret;

	if (argc != 3) {
		fprintf(stderr, "usage: klpt_mod load FILE | unload NAME\n");
		return 255;
	}
	if (strcmp(argv[1], "load") == 0) {
		int fd = open(argv[2], O_RDONLY | O_CLOEXEC);

		if (fd < 0) {
			fprintf(stderr, "klpt_mod: %s: %s\n", argv[2], strerror(errno));
			return 254;
		}
		ret = syscall(SYS_finit_module, fd, "", 0);
	} else if (strcmp(argv[1], "unload") == 0) {
		ret = syscall(SYS_delete_module, argv[2], O_NONBLOCK);
	} else {
		fprintf(stderr, "klpt_mod: unknown command %s\n", argv[1]);
		return 255;
	}
	if (ret == 0)
		return 0;
	fprintf(stderr, "klpt_mod: %s %s: %s\n", argv[1], argv[2], strerror(errno));
	return errno > 0 && errno < 250 ? errno : 253;
}
