/*
 * libtype1.so from C: a software type1 container, driven with the kernel's own structures
 * (<linux/vfio.h>) on this process's memory.
 *
 *   cargo build --release --workspace
 *   cc examples/c/library.c -o /tmp/type1-library \
 *      $(PKG_CONFIG_PATH=target/release pkg-config --cflags --libs type1)
 *   /tmp/type1-library
 */
#include <errno.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "type1.h"

static int map(struct type1_container *c, void *vaddr, uint64_t iova, uint64_t size)
{
    struct vfio_iommu_type1_dma_map m = {
        .argsz = sizeof(m),
        .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (uintptr_t)vaddr,
        .iova = iova,
        .size = size,
    };
    return type1_ioctl(c, VFIO_IOMMU_MAP_DMA, &m) == 0 ? 0 : -errno;
}

int main(void)
{
    char err[256] = "";
    /* Two DMA entries at most; an ARM SMMU-style domain without reserved regions. */
    struct type1_container *c = type1_container_new(
        "type1v2 dma_entry_limit=2 memlock=unlimited; domain d0 format=arm64-4k reserved=none",
        err, sizeof(err));
    if (!c) {
        fprintf(stderr, "type1_container_new: %s\n", err);
        return 1;
    }
    if (type1_container_new("type1v3", err, sizeof(err)) != NULL || errno != EINVAL) {
        fprintf(stderr, "a bad options string was accepted\n");
        return 1;
    }
    printf("bad options are refused: %s\n", err);

    size_t len = 4 << 20;
    char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        return 1;
    memset(buf, 0, len);

    int fails = 0;
    fails += map(c, buf, 0x100000, 1 << 20) != 0;
    fails += map(c, buf + (1 << 20), 0x200000, 1 << 20) != 0;
    fails += map(c, buf + (2 << 20), 0x400000, 1 << 20) != -ENOSPC; /* dma_entry_limit=2 */
    printf("locked pages after two maps: %ld\n", type1_locked_pages(c));
    fails += type1_locked_pages(c) != 512;

    struct vfio_iommu_type1_info info = {.argsz = sizeof(info)};
    fails += type1_ioctl(c, VFIO_IOMMU_GET_INFO, &info) != 0;
    printf("GET_INFO: pgsizes %#llx, the chain needs argsz %u\n",
           (unsigned long long)info.iova_pgsizes, info.argsz);

    struct vfio_iommu_type1_dma_unmap u = {
        .argsz = sizeof(u), .flags = VFIO_DMA_UNMAP_FLAG_ALL};
    fails += type1_ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u) != 0;
    printf("unmap-all unmapped %llu bytes\n", (unsigned long long)u.size);
    fails += u.size != 2 << 20;
    fails += type1_locked_pages(c) != 0;
    type1_container_free(c);
    if (fails) {
        fprintf(stderr, "%d checks failed\n", fails);
        return 1;
    }
    printf("library example: ok\n");
    return 0;
}
