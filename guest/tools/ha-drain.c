// SPDX-License-Identifier: MIT
/*
 * ha-drain: empties every CPU's LRU batches (lru_add_drain_all()), for the
 * MemFree ledger of the guest suites (guest/tools/ha-ledger.sh).
 *
 * A page on its way to or from an LRU list waits in a per-CPU folio batch
 * that holds a reference; a page freed by its last user stays allocated
 * until its batch is drained, and a THP in such a batch is 2 MiB that look
 * lost. Nothing in /proc drains them (drop_caches does not; compact_memory
 * does, but compacts too). MADV_COLLAPSE calls lru_add_drain_all() before
 * it looks at the range (Linux 6.1, madvise_collapse()); on a range shorter
 * than a huge page it collapses nothing. So: map 4 MiB of anonymous memory
 * (it must hold an aligned huge page to be eligible), touch the page at its
 * first 2 MiB boundary (the mapping needs an anon_vma), madvise that one
 * page with MADV_COLLAPSE (6.1 refuses an unaligned start with EINVAL), unmap.
 *
 * Exit status: 0 drained, 1 the kernel refused (no MADV_COLLAPSE: an error
 * message says why).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

int main(void)
{
	const size_t len = 4ul << 20, huge = 2ul << 20;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *aligned;

	if (p == MAP_FAILED) {
		fprintf(stderr, "ha-drain: mmap: %s\n", strerror(errno));
		return 1;
	}
	aligned = (char *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1));
	aligned[0] = 1;
	if (madvise(aligned, 4096, MADV_COLLAPSE) != 0) {
		fprintf(stderr, "ha-drain: madvise(MADV_COLLAPSE): %s\n", strerror(errno));
		munmap(p, len);
		return 1;
	}
	munmap(p, len);
	return 0;
}
