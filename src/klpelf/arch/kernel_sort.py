"""The order lib/sort.c's ``sort()`` leaves an array in, equal elements included.

The kernel's sort is a heapsort, not stable: where module code sorts relocation entries
in place before applying them (loongarch64's ``count_max_entries()``), equal keys meet
``apply_relocate_add()`` in the heapsort's order, not the file's.  Two versions:

* v5.1 22a241ccb2c1 ("lib/sort: use more efficient bottom-up heapsort variant"): the
  sift-down path takes the left child of two equal ones, one root extracted a turn;
* 2024, Kuan-Wei Chiu's "lib/sort: Optimize heapsort for equal elements in sift-down
  path" (the right child of two equal ones) and 0e02ca29a563 ("lib/sort: optimize
  heapsort with double-pop variation", two largest extracted a turn), merged for
  v6.11 (the ALSA auto_parser fix 3b4309546b48, which went to stable in 2024, is
  about the tie order 0e02ca29a563 changed).

:func:`heapsort_order` follows either on indices, for integer keys.
"""

from __future__ import annotations

from collections.abc import Sequence

from klpelf.release import KernelRelease

__all__ = ["double_pop", "heapsort_order"]


def double_pop(release: KernelRelease) -> bool:
    """Whether ``release``'s lib/sort.c has the 2024 variant (v6.11)."""
    return release.at_least(6, 11)


def heapsort_order(keys: Sequence[int], *, double: bool) -> list[int]:
    """The indices of ``keys`` in the order ``sort()`` leaves them, for a cmp_func
    that compares the keys as integers (``double``: the 2024 variant, see the module
    doc)."""
    idx = list(range(len(keys)))
    k = list(keys)  # permuted with idx: the array the kernel sorts
    n, a, shift = len(k), len(k) // 2, 0
    if not a:
        return idx
    while True:
        if a:  # building the heap: sift the next element down
            a -= 1 << shift
        elif double and n > 3:  # extract the two largest
            n -= 1
            k[0], k[n], idx[0], idx[n] = k[n], k[0], idx[n], idx[0]
            shift = 1 if k[1] <= k[2] else 0
            a = 1 << shift
            n -= 1
            k[a], k[n], idx[a], idx[n] = k[n], k[a], idx[n], idx[a]
        elif n > 1:  # extract the root
            n -= 1
            k[0], k[n], idx[0], idx[n] = k[n], k[0], idx[n], idx[0]
        else:
            break
        # the bottom-up sift-down: the path to a leaf, then back up to where "a" goes
        b = a
        while True:
            c = 2 * b + 1
            d = c + 1
            if d >= n:
                break
            left = k[c] > k[d] if double else k[c] >= k[d]
            b = c if left else d
        if d == n:  # the last leaf, without a sibling
            b = c
        ka = k[a]
        while b != a and ka >= k[b]:
            b = (b - 1) // 2
        c = b
        while b != a:  # rotate "a" down to c along the path
            b = (b - 1) // 2
            k[b], k[c], idx[b], idx[c] = k[c], k[b], idx[c], idx[b]
    return idx
