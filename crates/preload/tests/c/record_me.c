/* A VFIO program whose requests record mode writes as a trace: maps, refusals, unmaps. */
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static int map(int c, void *vaddr, uint64_t iova, uint64_t size)
{
    struct vfio_iommu_type1_dma_map m = {.argsz = sizeof(m), .flags = 3,
                                         .vaddr = (uintptr_t)vaddr, .iova = iova, .size = size};
    return ioctl(c, VFIO_IOMMU_MAP_DMA, &m) ? -errno : 0;
}

static int unmap(int c, uint32_t flags, uint64_t iova, uint64_t size)
{
    struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof(u), .flags = flags, .iova = iova,
                                           .size = size};
    return ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u) ? -errno : 0;
}

int main(void)
{
    int c = open("/dev/vfio/vfio", O_RDWR), g = open("/dev/vfio/7", O_RDWR);
    struct vfio_group_status st = {.argsz = sizeof(st)};
    if (c < 0 || g < 0 || ioctl(g, VFIO_GROUP_GET_STATUS, &st) ||
        ioctl(g, VFIO_GROUP_SET_CONTAINER, &c) || ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
        return 1;
    struct vfio_iommu_type1_info info = {.argsz = sizeof(info)};
    ioctl(c, VFIO_IOMMU_GET_INFO, &info);
    char *buf = mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int bad = 0;
    bad |= map(c, buf, 1 << 30, 2 << 20) != 0;
    bad |= map(c, buf + (2 << 20), (1 << 30) + (1 << 20), 1 << 20) != -EEXIST;
    bad |= map(c, buf + 1, 2ull << 30, 4096) != -EINVAL;
    bad |= map(c, (void *)4096, 2ull << 30, 4096) != -EFAULT;
    bad |= map(c, buf, 0xfffffffffffff000ull, 0x2000) != -EOVERFLOW;
    bad |= unmap(c, 0, 1 << 30, 4096) != -EINVAL;
    bad |= map(c, buf + (2 << 20), 3ull << 30, 64 << 10) != 0;
    bad |= unmap(c, 0, 1 << 30, 2 << 20) != 0;
    bad |= unmap(c, VFIO_DMA_UNMAP_FLAG_ALL, 0, 0) != 0;
    ioctl(c, 0x3b00 + 199, 0); /* not a VFIO request the language has */
    close(g);
    close(c);
    printf("record_me: %s\n", bad ? "unexpected answers" : "ok");
    return bad;
}
