/*
 * type1.h: libtype1.so, a software VFIO type1 container.
 *
 * A container answers the kernel's container ioctls (<linux/vfio.h>: VFIO_GET_API_VERSION,
 * VFIO_CHECK_EXTENSION, VFIO_SET_IOMMU, VFIO_IOMMU_GET_INFO, VFIO_IOMMU_MAP_DMA,
 * VFIO_IOMMU_UNMAP_DMA, VFIO_IOMMU_DIRTY_PAGES) with the structures and errno values of
 * drivers/vfio/vfio_iommu_type1.c, on the calling process's own memory: vaddrs are real
 * pointers, the pages behind them are pinned (pfns from /proc/self/pagemap when the process
 * may read them, else each page's virtual page number), RLIMIT_MEMLOCK and CAP_IPC_LOCK are
 * read at each MAP_DMA unless the options fix them.
 *
 * Build: cc prog.c $(pkg-config --cflags --libs type1)   (PKG_CONFIG_PATH=target/release)
 */
#ifndef TYPE1_H
#define TYPE1_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct type1_container;

/*
 * A new container whose IOMMU backend is already set (as after VFIO_SET_IOMMU), with one
 * IOMMU domain per "domain" statement (an x86_64 domain "d0" with the x86 MSI window reserved
 * when there is none). `options` is the trace language's container arguments, then
 * ';'-separated domain statements, e.g.
 *   "type1v2 dma_entry_limit=100 kernel=6.12; domain d0 format=arm64-4k reserved=none"
 * NULL or "" gives the defaults. On error returns NULL with errno EINVAL, and writes the
 * reason (NUL-terminated, truncated) to `err` when `err` is not NULL.
 */
struct type1_container *type1_container_new(const char *options, char *err, size_t errlen);

/*
 * One ioctl on the container, returning as ioctl(2): >= 0, or -1 with errno set.
 * `arg` is the ioctl's argument: a pointer to the structure, or a number (CHECK_EXTENSION,
 * SET_IOMMU). Use the type1_ioctl macro to pass either.
 */
int type1_ioctl_raw(struct type1_container *c, unsigned long request, unsigned long arg);
#define type1_ioctl(c, request, arg) type1_ioctl_raw((c), (request), (unsigned long)(arg))

/* Locked pages the container charged (the model of mm->locked_vm), or -1 if c is NULL. */
long type1_locked_pages(const struct type1_container *c);

/*
 * Release the container as the kernel releases it: every mapping is unmapped, unpinned and
 * uncharged. NULL is ignored.
 */
void type1_container_free(struct type1_container *c);

#ifdef __cplusplus
}
#endif

#endif /* TYPE1_H */
