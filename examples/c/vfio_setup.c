/*
 * An ordinary VFIO program (nothing type1-specific): the container setup of QEMU and DPDK,
 * one DMA mapping of a buffer, and its removal. Under the LD_PRELOAD shim it runs without an
 * IOMMU or a device:
 *
 *   cargo build --release --workspace
 *   cc examples/c/vfio_setup.c -o /tmp/vfio-setup
 *   TYPE1_GROUPS=42 LD_PRELOAD=$PWD/target/release/libtype1_preload.so /tmp/vfio-setup 42
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static int fail(const char *what)
{
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    return 1;
}

int main(int argc, char **argv)
{
    char path[64];
    snprintf(path, sizeof(path), "/dev/vfio/%s", argc > 1 ? argv[1] : "42");
    int container = open("/dev/vfio/vfio", O_RDWR);
    if (container < 0)
        return fail("open /dev/vfio/vfio");
    if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
        return fail("VFIO_GET_API_VERSION");
    if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) != 1)
        return fail("no type1v2");
    int group = open(path, O_RDWR);
    if (group < 0)
        return fail(path);
    struct vfio_group_status status = {.argsz = sizeof(status)};
    if (ioctl(group, VFIO_GROUP_GET_STATUS, &status) || !(status.flags & VFIO_GROUP_FLAGS_VIABLE))
        return fail("group not viable");
    if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container))
        return fail("VFIO_GROUP_SET_CONTAINER");
    if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
        return fail("VFIO_SET_IOMMU");

    struct vfio_iommu_type1_info probe = {.argsz = sizeof(probe)};
    if (ioctl(container, VFIO_IOMMU_GET_INFO, &probe))
        return fail("VFIO_IOMMU_GET_INFO");
    struct vfio_iommu_type1_info *info = calloc(1, probe.argsz);
    info->argsz = probe.argsz;
    if (ioctl(container, VFIO_IOMMU_GET_INFO, info))
        return fail("VFIO_IOMMU_GET_INFO (with capabilities)");
    printf("iova_pgsizes %#llx, capabilities at %u (argsz %u)\n",
           (unsigned long long)info->iova_pgsizes, info->cap_offset, info->argsz);
    for (uint32_t off = info->cap_offset; off;) {
        struct vfio_info_cap_header *h = (void *)((char *)info + off);
        if (h->id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
            struct vfio_iommu_type1_info_cap_iova_range *r = (void *)h;
            for (uint32_t i = 0; i < r->nr_iovas; i++)
                printf("  valid IOVA range %#llx-%#llx\n",
                       (unsigned long long)r->iova_ranges[i].start,
                       (unsigned long long)r->iova_ranges[i].end);
        }
        off = h->next;
    }

    size_t size = 2 << 20;
    void *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct vfio_iommu_type1_dma_map map = {
        .argsz = sizeof(map),
        .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (uintptr_t)buf,
        .iova = 1 << 30,
        .size = size,
    };
    if (ioctl(container, VFIO_IOMMU_MAP_DMA, &map))
        return fail("VFIO_IOMMU_MAP_DMA");
    if (ioctl(container, VFIO_IOMMU_MAP_DMA, &map) == 0 || errno != EEXIST)
        return fail("a second map of the same IOVA should be EEXIST");
    struct vfio_iommu_type1_dma_unmap unmap = {
        .argsz = sizeof(unmap), .iova = 1 << 30, .size = size};
    if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap))
        return fail("VFIO_IOMMU_UNMAP_DMA");
    printf("mapped and unmapped %llu bytes at IOVA %#llx\n", (unsigned long long)unmap.size,
           (unsigned long long)map.iova);
    close(group);
    close(container);
    return unmap.size == size ? 0 : 1;
}
