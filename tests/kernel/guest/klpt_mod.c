// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * klpt_mod - the guest's module loader for the real-kernel tests.
 *
 *   klpt_mod load FILE      one finit_module(2) call, no parameters
 *   klpt_mod unload NAME    one delete_module(2) call, O_NONBLOCK
 *   klpt_mod peek ADDR LEN  LEN bytes of kernel memory at ADDR (hex) to stdout, read
 *                           through /proc/kcore: the PT_LOAD segment that maps ADDR
 *                           (x86_64 maps the module area there, arch/x86/mm/init_64.c)
 *
 * The exit status is the errno of the call (0: success).  busybox insmod is not
 * used because it retries with init_module(2) after any finit_module(2)
 * failure, so every kernel message would appear twice.  Statuses 250..255 are
 * the tool's own errors (usage, open failure), beyond any errno value.
 *
 * Built with `gcc -static` by the test harness.
 */

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* /proc/kcore is an ELF core file: find the segment that maps addr, copy from it */
static int peek(const char *addr_s, const char *len_s)
{
	unsigned long addr = strtoul(addr_s, NULL, 16), len = strtoul(len_s, NULL, 0);
	int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);
	Elf64_Ehdr eh;
	char buf[4096];

	if (fd < 0 || pread(fd, &eh, sizeof(eh), 0) != sizeof(eh)) {
		fprintf(stderr, "klpt_mod: /proc/kcore: %s\n", strerror(errno));
		return 252;
	}
	for (int i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		off_t off;

		if (pread(fd, &ph, sizeof(ph), eh.e_phoff + (off_t)i * eh.e_phentsize) != sizeof(ph))
			break;
		if (ph.p_type != PT_LOAD || addr < ph.p_vaddr || addr + len > ph.p_vaddr + ph.p_memsz)
			continue;
		off = ph.p_offset + (addr - ph.p_vaddr);
		while (len) {
			size_t n = len < sizeof(buf) ? len : sizeof(buf);
			ssize_t got = pread(fd, buf, n, off);

			if (got <= 0 || write(1, buf, got) != got) {
				fprintf(stderr, "klpt_mod: /proc/kcore at %lx: %s\n", addr, strerror(errno));
				return 252;
			}
			off += got;
			len -= got;
		}
		return 0;
	}
	fprintf(stderr, "klpt_mod: %lx+%lu is in no /proc/kcore segment\n", addr, len);
	return 251;
}

int main(int argc, char **argv)
{
	long ret;

	if (argc == 4 && strcmp(argv[1], "peek") == 0)
		return peek(argv[2], argv[3]);
	if (argc != 3) {
		fprintf(stderr, "usage: klpt_mod load FILE | unload NAME | peek ADDR LEN\n");
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
