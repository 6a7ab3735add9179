/* Run in the kernel-check guest under the shim in record mode (TYPE1_RECORD): a container set
 * up the way VMMs do it against the real group given as argv[1], then maps of anonymous memory,
 * an overlap (EEXIST), an unmap that would bisect a mapping (EINVAL), an unmap and unmap-all.
 * Exits 0 only when the kernel answered each request as type1v2 does. */
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

static int map(int c, void *vaddr, uint64_t iova, uint64_t size)
{
    struct vfio_iommu_type1_dma_map m = {.argsz = sizeof(m), .flags = 3,
                                         .vaddr = (uintptr_t)vaddr, .iova = iova, .size = size};
    return ioctl(c, VFIO_IOMMU_MAP_DMA, &m) ? -errno : 0;
}

static int unmap(int c, uint32_t flags, uint64_t iova, uint64_t size, uint64_t *out)
{
    struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof(u), .flags = flags, .iova = iova,
                                           .size = size};
    int r = ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u) ? -errno : 0;
    *out = u.size;
    return r;
}

static int bad;

static void expect(const char *what, long got, long want)
{
    printf("record_guest: %s -> %ld (want %ld)\n", what, got, want);
    bad |= got != want;
}

int main(int argc, char **argv)
{
    char path[64];
    if (argc != 2)
        return 2;
    snprintf(path, sizeof(path), "/dev/vfio/%s", argv[1]);
    int c = open("/dev/vfio/vfio", O_RDWR), g = open(path, O_RDWR);
    struct vfio_group_status st = {.argsz = sizeof(st)};
    if (c < 0 || g < 0 || ioctl(c, VFIO_GET_API_VERSION) != VFIO_API_VERSION ||
        ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) != 1 ||
        ioctl(g, VFIO_GROUP_GET_STATUS, &st) || !(st.flags & VFIO_GROUP_FLAGS_VIABLE) ||
        ioctl(g, VFIO_GROUP_SET_CONTAINER, &c) || ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) {
        printf("record_guest: setting up the container failed: %s\n", strerror(errno));
        return 1;
    }
    /* GET_INFO twice: the first call says how large the capability chain is. */
    struct vfio_iommu_type1_info first = {.argsz = sizeof(first)};
    expect("GET_INFO (size)", ioctl(c, VFIO_IOMMU_GET_INFO, &first) ? -errno : 0, 0);
    struct vfio_iommu_type1_info *info = calloc(1, first.argsz);
    info->argsz = first.argsz;
    expect("GET_INFO (chain)", ioctl(c, VFIO_IOMMU_GET_INFO, info) ? -errno : 0, 0);
    printf("record_guest: argsz %u, iova_pgsizes %#llx, cap_offset %u\n", first.argsz,
           (unsigned long long)info->iova_pgsizes, info->cap_offset);

    char *buf = mmap(NULL, 8 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        return 1;
    uint64_t size = 0;
    expect("map 2M at 1G", map(c, buf, 1 << 30, 2 << 20), 0);
    expect("map overlapping 1G+1M", map(c, buf + (2 << 20), (1 << 30) + (1 << 20), 1 << 20),
           -EEXIST);
    expect("map 64K at 2G", map(c, buf + (4 << 20), 2ull << 30, 64 << 10), 0);
    expect("map 4K at 2G+1M", map(c, buf + (6 << 20), (2ull << 30) + (1 << 20), 4096), 0);
    expect("unmap bisecting 1G+4K", unmap(c, 0, (1 << 30) + 4096, 4096, &size), -EINVAL);
    expect("unmap 2M at 1G", unmap(c, 0, 1 << 30, 2 << 20, &size), 0);
    expect("  unmapped", (long)size, 2 << 20);
    expect("unmap all", unmap(c, VFIO_DMA_UNMAP_FLAG_ALL, 0, 0, &size), 0);
    expect("  unmapped", (long)size, (64 << 10) + 4096);
    close(g);
    close(c);
    printf("record_guest: %s\n", bad ? "unexpected answers" : "ok");
    return bad;
}
