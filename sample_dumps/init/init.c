/*
 * Static /init for dumpminer's sample guests (no busybox, no shell).
 *
 * Mounts proc, sysfs and devtmpfs; loads /qemu_fw_cfg.ko (so QEMU's vmcoreinfo device
 * carries VMCOREINFO into the dump) and then /leaky_agent.ko with the parameters found on
 * the kernel command line as leaky_agent.NAME=VALUE tokens (the kernel applies such tokens
 * only to built-in modules or via modprobe, so /init passes them to finit_module itself).
 * Prints one line the builder waits for, then sleeps forever:
 *
 *   DUMPMINER-READY planted32=N planted64=M planted128=K planted96=L decoys=D cpus=C nodes=X
 *
 * On failure it prints "DUMPMINER-ERROR <what>: <errno text>" and sleeps forever too
 * (init must not exit: that would panic the guest before the builder can read the log).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PARAM_PREFIX "leaky_agent."

static void hang(void)
{
	for (;;)
		pause();
}

static void fail(const char *what)
{
	printf("DUMPMINER-ERROR %s: %s\n", what, strerror(errno));
	fflush(stdout);
	hang();
}

static void use_console(void)
{
	int fd = open("/dev/console", O_RDWR | O_NOCTTY);

	if (fd < 0)
		return;	/* keep whatever the kernel gave us */
	dup2(fd, 0);
	dup2(fd, 1);
	dup2(fd, 2);
	if (fd > 2)
		close(fd);
}

static void mount_fs(const char *source, const char *target, const char *type)
{
	mkdir(target, 0755);
	if (mount(source, target, type, 0, NULL) < 0 && errno != EBUSY)
		fail(target);
}

/* Read a whole small file into buf (NUL-terminated); returns its length or -1. */
static ssize_t read_file(const char *path, char *buf, size_t size)
{
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return n;
}

/* Collect "leaky_agent.X=Y" tokens of /proc/cmdline into "X=Y X=Y". */
static void module_params(char *out, size_t size)
{
	char cmdline[4096];
	char *tok, *save = NULL;
	size_t used = 0;

	out[0] = '\0';
	if (read_file("/proc/cmdline", cmdline, sizeof(cmdline)) < 0)
		fail("/proc/cmdline");
	for (tok = strtok_r(cmdline, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
		size_t len;

		if (strncmp(tok, PARAM_PREFIX, strlen(PARAM_PREFIX)) != 0)
			continue;
		tok += strlen(PARAM_PREFIX);
		len = strlen(tok);
		if (used + len + 2 > size)
			break;
		if (used)
			out[used++] = ' ';
		memcpy(out + used, tok, len + 1);
		used += len;
	}
}

static void load_module(const char *path, const char *params)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		fail(path);
	if (syscall(SYS_finit_module, fd, params, 0) < 0 && errno != EEXIST)
		fail(path);
	close(fd);
}

static unsigned long read_param(const char *name)
{
	char path[128], buf[64];

	snprintf(path, sizeof(path), "/sys/module/leaky_agent/parameters/%s", name);
	if (read_file(path, buf, sizeof(buf)) < 0)
		fail(path);
	return strtoul(buf, NULL, 10);
}

int main(void)
{
	char params[1024];

	mount_fs("devtmpfs", "/dev", "devtmpfs");
	use_console();
	mount_fs("proc", "/proc", "proc");
	mount_fs("sysfs", "/sys", "sysfs");

	module_params(params, sizeof(params));
	printf("dumpminer-init: loading leaky_agent with '%s'\n", params);
	fflush(stdout);
	load_module("/qemu_fw_cfg.ko", "");
	load_module("/leaky_agent.ko", params);

	printf("DUMPMINER-READY planted32=%lu planted64=%lu planted128=%lu planted96=%lu"
	       " decoys=%lu cpus=%lu nodes=%lu\n",
	       read_param("planted32"), read_param("planted64"), read_param("planted128"),
	       read_param("planted96"), read_param("decoys"), read_param("cpus_used"),
	       read_param("nodes_used"));
	fflush(stdout);
	sync();
	hang();
	return 0;
}
