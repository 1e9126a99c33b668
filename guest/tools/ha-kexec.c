// SPDX-License-Identifier: GPL-2.0
/*
 * ha-kexec: reboot the guest into another kernel with kexec_file_load(2).
 *
 *   ha-kexec KERNEL INITRD CMDLINE
 *
 * Loads the bzImage KERNEL with INITRD and the command line CMDLINE, syncs
 * and reboots into it (reboot(2) with LINUX_REBOOT_CMD_KEXEC, which runs
 * the reboot notifiers first, as kexec-tools' `kexec -e` does). Returns
 * only on failure: exit 1 with the reason, 77 if the kernel has no
 * kexec_file_load().
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/reboot.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int open_or_die(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		fprintf(stderr, "ha-kexec: %s: %s\n", path, strerror(errno));
	return fd;
}

int main(int argc, char **argv)
{
	int kernel, initrd;

	if (argc != 4) {
		fprintf(stderr, "usage: ha-kexec KERNEL INITRD CMDLINE\n");
		return 1;
	}
	kernel = open_or_die(argv[1]);
	initrd = open_or_die(argv[2]);
	if (kernel < 0 || initrd < 0)
		return 1;
	/* the length counts the terminating NUL */
	if (syscall(SYS_kexec_file_load, kernel, initrd, strlen(argv[3]) + 1,
		    argv[3], 0UL)) {
		fprintf(stderr, "ha-kexec: kexec_file_load: %s\n",
			strerror(errno));
		return errno == ENOSYS ? 77 : 1;
	}
	printf("ha-kexec: loaded %s, rebooting into it\n", argv[1]);
	fflush(stdout);
	sync();
	syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
		LINUX_REBOOT_CMD_KEXEC, NULL);
	fprintf(stderr, "ha-kexec: reboot: %s\n", strerror(errno));
	return 1;
}
