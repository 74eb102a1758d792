/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * 126 MiB of executable NOBITS space (nothing in the file, zeros in memory), never
 * run.  The module loader puts every SHF_EXECINSTR section in the module's text
 * allocation (layout_sections(), kernel/module/main.c); without KASLR arm64 allocates
 * it in the 128 MiB window that ends at the kernel's _end, which the kernel image
 * itself partly fills, else in the 2 GiB fallback window below
 * (module_init_limits() and execmem_arch_setup(), arch/arm64/mm/init.c, v6.5+).  So
 * this module's text lands ~2 GiB below the kernel, and a call from it to vmlinux
 * (CALL26: +/-128 MiB) goes through a module PLT slot (module_emit_plt_entry()).
 * Less than 128 MiB, so that .text still reaches its own .plt.  Not named .text.*:
 * scripts/module.lds.S would merge it into .text, which is PROGBITS.
 */
	.section .klpt_pad, "ax", @nobits
	.skip 126 << 20
