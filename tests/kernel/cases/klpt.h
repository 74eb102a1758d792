/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * klpt.h - shared by the livepatch modules of the real-kernel tests.
 *
 * KLP_SYM(type, cname, obj, sym, pos) declares a C variable `cname` that is
 * an assembler alias of the undefined symbol ".klp.sym.<obj>.<sym>,<pos>".
 * C code uses the plain identifier; the quoted name (with its '.' and ',')
 * appears only in the top-level `.set` directive, so every reference to
 * `cname` becomes a relocation against the quoted undefined symbol, which
 * `klpelf convert` turns into a livepatch symbol (SHN_LIVEPATCH) with its
 * relocations in .klp.rela.<obj>.<section>.  The same technique as
 * samples/klp_sample; an asm label on the extern instead would put the
 * quoted name into instruction operands, which older assemblers (Debian
 * 11's) reject.
 */
#ifndef KLPT_H
#define KLPT_H

#define KLP_SYM(type, cname, obj, sym, pos)				\
	extern type cname;						\
	asm(".set " #cname ", \".klp.sym." #obj "." #sym "," #pos "\"")

#endif
