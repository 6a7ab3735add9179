/*
 * A fake kernel for testing record mode: an LD_PRELOAD library placed after
 * libtype1_preload.so, so the shim's "real" open/ioctl/close (dlsym RTLD_NEXT) land here. It
 * answers /dev/vfio/vfio and /dev/vfio/N with libtype1.so (the engine over this process's
 * memory) and shows the charge in /proc/self/status's VmLck, as the kernel's locked_vm.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "type1.h"

static int container_fd = -1, group_fd = -1;
static struct type1_container *c;

static int fake_fd(void) { return memfd_create("fake-vfio", 0); }

static int status_fd(void)
{
    int (*real_open)(const char *, int, ...) = dlsym(RTLD_NEXT, "open");
    char buf[16384];
    int in = real_open("/proc/self/status", O_RDONLY);
    ssize_t n = read(in, buf, sizeof(buf) - 1);
    close(in);
    buf[n > 0 ? n : 0] = 0;
    int fd = fake_fd();
    char *l = strstr(buf, "VmLck:");
    if (l) {
        char *e = strchr(l, '\n');
        write(fd, buf, l - buf);
        dprintf(fd, "VmLck:\t%8ld kB", (c ? type1_locked_pages(c) : 0) * 4);
        write(fd, e, strlen(e));
    } else {
        write(fd, buf, strlen(buf));
    }
    lseek(fd, 0, SEEK_SET);
    return fd;
}

static int fake_open(const char *path, int flags, mode_t mode, int dirfd, int at)
{
    if (!strcmp(path, "/dev/vfio/vfio"))
        return container_fd = fake_fd();
    if (!strncmp(path, "/dev/vfio/", 10))
        return group_fd = fake_fd();
    if (!strcmp(path, "/proc/self/status"))
        return status_fd();
    if (at) {
        int (*r)(int, const char *, int, ...) = dlsym(RTLD_NEXT, "openat");
        return r(dirfd, path, flags, mode);
    }
    int (*r)(const char *, int, ...) = dlsym(RTLD_NEXT, "open");
    return r(path, flags, mode);
}

int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = va_arg(ap, mode_t);
    va_end(ap);
    return fake_open(path, flags, mode, 0, 0);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = va_arg(ap, mode_t);
    va_end(ap);
    return fake_open(path, flags, mode, dirfd, 1);
}

int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    if (fd == group_fd && fd >= 0) {
        if (req == VFIO_GROUP_GET_STATUS) {
            ((struct vfio_group_status *)arg)->flags = VFIO_GROUP_FLAGS_VIABLE;
            return 0;
        }
        return 0; /* SET_CONTAINER, UNSET_CONTAINER */
    }
    if (fd == container_fd && fd >= 0) {
        if (req == VFIO_GET_API_VERSION)
            return VFIO_API_VERSION;
        if (req == VFIO_CHECK_EXTENSION && !c)
            return arg == VFIO_TYPE1v2_IOMMU || arg == VFIO_TYPE1_IOMMU;
        if (req == VFIO_SET_IOMMU) {
            c = type1_container_new(arg == VFIO_TYPE1_IOMMU ? "type1" : "type1v2", NULL, 0);
            return c ? 0 : -1;
        }
        if (!c) {
            errno = EINVAL;
            return -1;
        }
        return type1_ioctl(c, req, arg);
    }
    int (*r)(int, unsigned long, ...) = dlsym(RTLD_NEXT, "ioctl");
    return r(fd, req, arg);
}
