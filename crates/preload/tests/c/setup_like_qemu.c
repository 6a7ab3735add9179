/*
 * Run under libtype1_preload.so with TYPE1_GROUPS=42: sets up a container the way QEMU and
 * DPDK do (open /dev/vfio/vfio, API version, CHECK_EXTENSION, open the group, GET_STATUS,
 * SET_CONTAINER, SET_IOMMU, GET_INFO twice, MAP, UNMAP, unmap-all) on real memory, and
 * asserts the kernel's errno for each refusal (spec sections in brackets). Exit 0: all held.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: CHECK(%s) failed (errno %d %s)\n", __FILE__, __LINE__, \
                    #cond, errno, strerror(errno));                                      \
            failures++;                                                                  \
        }                                                                                \
    } while (0)

/* ioctl's result and errno as one value: the result when >= 0, else -errno. */
static long io(int fd, unsigned long req, void *arg)
{
    errno = 0;
    int r = ioctl(fd, req, arg);
    return r < 0 ? -errno : r;
}

static long map(int fd, void *vaddr, uint64_t iova, uint64_t size)
{
    struct vfio_iommu_type1_dma_map m = {
        .argsz = sizeof(m),
        .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (uintptr_t)vaddr,
        .iova = iova,
        .size = size,
    };
    return io(fd, VFIO_IOMMU_MAP_DMA, &m);
}

/* UNMAP_DMA; *out gets the size field after the call. */
static long unmap(int fd, uint32_t flags, uint64_t iova, uint64_t size, uint64_t *out)
{
    struct vfio_iommu_type1_dma_unmap u = {
        .argsz = sizeof(u), .flags = flags, .iova = iova, .size = size};
    long r = io(fd, VFIO_IOMMU_UNMAP_DMA, &u);
    *out = u.size;
    return r;
}

/* GET_INFO twice, as QEMU does: the size, then the capability chain. */
static void info(int fd, uint32_t *avail, int *nranges, uint64_t *r0_last, uint64_t *r1_start)
{
    struct vfio_iommu_type1_info probe = {.argsz = sizeof(probe)};
    CHECK(io(fd, VFIO_IOMMU_GET_INFO, &probe) == 0);
    CHECK(probe.flags & VFIO_IOMMU_INFO_CAPS);
    CHECK(probe.flags & VFIO_IOMMU_INFO_PGSIZES);
    CHECK(probe.cap_offset == 0); /* the chain did not fit [1.5] */
    CHECK(probe.argsz == 24 + 32 + 16 + 16 + 2 * 16);
    struct vfio_iommu_type1_info *full = calloc(1, probe.argsz);
    full->argsz = probe.argsz;
    CHECK(io(fd, VFIO_IOMMU_GET_INFO, full) == 0);
    CHECK(full->cap_offset == sizeof(*full));
    *avail = 0;
    *nranges = 0;
    uint32_t off = full->cap_offset;
    int seen = 0;
    while (off && seen++ < 8) {
        struct vfio_info_cap_header *h = (void *)((char *)full + off);
        if (h->id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
            *avail = ((struct vfio_iommu_type1_info_dma_avail *)h)->avail;
        } else if (h->id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
            struct vfio_iommu_type1_info_cap_iova_range *r = (void *)h;
            *nranges = r->nr_iovas;
            *r0_last = r->iova_ranges[0].end;
            *r1_start = r->nr_iovas > 1 ? r->iova_ranges[1].start : 0;
        } else if (h->id == VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION) {
            CHECK(((struct vfio_iommu_type1_info_cap_migration *)h)->pgsize_bitmap == 4096);
        }
        off = h->next;
    }
    free(full);
}

static int has_cap_ipc_lock(void)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) != 0)
        return 0;
    return (data[0].effective >> CAP_IPC_LOCK) & 1;
}

static int drop_cap_ipc_lock(void)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) != 0)
        return -1;
    data[0].effective &= ~(1u << CAP_IPC_LOCK);
    return syscall(SYS_capset, &hdr, data);
}

int main(void)
{
    const uint64_t M = 1 << 20;
    int c = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    CHECK(c >= 0);
    CHECK(io(c, VFIO_GET_API_VERSION, 0) == VFIO_API_VERSION);
    CHECK(io(c, VFIO_CHECK_EXTENSION, (void *)VFIO_TYPE1v2_IOMMU) == 1);
    CHECK(io(c, VFIO_CHECK_EXTENSION, (void *)VFIO_TYPE1_IOMMU) == 1);
    CHECK(io(c, VFIO_CHECK_EXTENSION, (void *)VFIO_UNMAP_ALL) == 1);
    CHECK(io(c, VFIO_CHECK_EXTENSION, (void *)99) == 0);
    /* SET_IOMMU before any group: EINVAL (vfio_ioctl_set_iommu). */
    CHECK(io(c, VFIO_SET_IOMMU, (void *)VFIO_TYPE1v2_IOMMU) == -EINVAL);
    CHECK(map(c, 0, 0, 4096) == -EINVAL); /* no backend yet */

    int g = open("/dev/vfio/42", O_RDWR);
    CHECK(g >= 0);
    CHECK(open("/dev/vfio/42", O_RDWR) == -1 && errno == EBUSY);
    struct vfio_group_status st = {.argsz = sizeof(st)};
    CHECK(io(g, VFIO_GROUP_GET_STATUS, &st) == 0);
    CHECK(st.flags == VFIO_GROUP_FLAGS_VIABLE);
    CHECK(io(g, VFIO_GROUP_UNSET_CONTAINER, 0) == -EINVAL);
    int notvfio = open("/dev/null", O_RDONLY); /* passes through: a real file */
    CHECK(notvfio >= 0);
    CHECK(io(g, VFIO_GROUP_SET_CONTAINER, &notvfio) == -EBADFD);
    close(notvfio);
    CHECK(io(g, VFIO_GROUP_SET_CONTAINER, &c) == 0);
    CHECK(io(g, VFIO_GROUP_GET_STATUS, &st) == 0);
    CHECK(st.flags == (VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET));
    CHECK(io(g, VFIO_GROUP_SET_CONTAINER, &c) == -EINVAL);
    CHECK(io(c, VFIO_SET_IOMMU, (void *)2) == -ENODEV);
    CHECK(io(c, VFIO_SET_IOMMU, (void *)VFIO_TYPE1v2_IOMMU) == 0);
    CHECK(io(c, VFIO_SET_IOMMU, (void *)VFIO_TYPE1v2_IOMMU) == -EINVAL);
    CHECK(io(c, VFIO_CHECK_EXTENSION, (void *)VFIO_UPDATE_VADDR) == 1);

    uint32_t avail;
    int nranges;
    uint64_t r0_last = 0, r1_start = 0;
    info(c, &avail, &nranges, &r0_last, &r1_start);
    CHECK(avail == 65535);
    CHECK(nranges == 2); /* the x86 MSI window splits the IOVA space */
    CHECK(r0_last == 0xfedfffff && r1_start == 0xfef00000);

    /* Real memory: 8M, with a hole. */
    char *buf = mmap(NULL, 8 * M, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(buf != MAP_FAILED);
    memset(buf, 1, 8 * M);
    CHECK(munmap(buf + 6 * M, M) == 0);
    char *ro = mmap(NULL, M, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(ro != MAP_FAILED);

    uint64_t out;
    CHECK(map(c, buf, M, 2 * M) == 0);
    info(c, &avail, &nranges, &r0_last, &r1_start);
    CHECK(avail == 65534);
    /* [1.3] overlap: EEXIST, any overlap. */
    CHECK(map(c, buf + 2 * M, 2 * M, 2 * M) == -EEXIST);
    CHECK(map(c, buf + 2 * M, 0, 8 * M) == -EEXIST);
    /* [1.4] v2 never bisects: EINVAL, the size field keeps the caller's value. */
    CHECK(unmap(c, 0, M, 4096, &out) == -EINVAL && out == 4096);
    CHECK(unmap(c, 0, 2 * M, 2 * M, &out) == -EINVAL && out == 2 * M);
    /* [1.3] alignment: size, iova, vaddr. */
    CHECK(map(c, buf + 4 * M, 16 * M, 0x800) == -EINVAL);
    CHECK(map(c, buf + 4 * M, 16 * M + 0x800, 4096) == -EINVAL);
    CHECK(map(c, buf + 4 * M + 1, 16 * M, 4096) == -EINVAL);
    /* [1.3] step 12: an unmapped vaddr (the hole), a read-only one for a device write. */
    CHECK(map(c, buf + 6 * M, 16 * M, 4096) == -EFAULT);
    CHECK(map(c, buf + 5 * M, 16 * M, 2 * M) == -EFAULT); /* runs into the hole */
    CHECK(map(c, (void *)4096, 16 * M, 4096) == -EFAULT);
    CHECK(map(c, ro, 16 * M, 4096) == -EFAULT);
    /* [1.3] step 10: the MSI window is no valid IOVA. */
    CHECK(map(c, buf + 4 * M, 0xfee00000, 4096) == -EINVAL);
    CHECK(map(c, buf + 4 * M, 0xfed00000, 2 * M) == -EINVAL); /* straddles it */
    /* [1.3] step 5: wrap past 2^64 (7.2: EOVERFLOW). */
    CHECK(map(c, buf + 4 * M, 0xfffffffffffff000ull, 0x2000) == -EOVERFLOW);
    CHECK(map(c, (void *)0xfffffffffffff000ull, 16 * M, 0x2000) == -EOVERFLOW);
    /* Every refusal changed nothing. */
    info(c, &avail, &nranges, &r0_last, &r1_start);
    CHECK(avail == 65534);

    /* UNMAP of exactly the mapping: its size is written back. */
    CHECK(unmap(c, 0, M, 2 * M, &out) == 0 && out == 2 * M);
    CHECK(unmap(c, 0, M, 2 * M, &out) == 0 && out == 0); /* nothing left there */
    /* unmap-all */
    CHECK(map(c, buf, 0, M) == 0);
    CHECK(map(c, buf + M, 64 * M, 4 * M) == 0);
    CHECK(unmap(c, VFIO_DMA_UNMAP_FLAG_ALL, 0, 0, &out) == 0 && out == 5 * M);
    CHECK(unmap(c, VFIO_DMA_UNMAP_FLAG_ALL, 0, 4096, &out) == -EINVAL);

    /* [5] RLIMIT_MEMLOCK: with CAP_IPC_LOCK the limit is not checked ... */
    struct rlimit old;
    CHECK(getrlimit(RLIMIT_MEMLOCK, &old) == 0);
    CHECK(old.rlim_max >= M); /* the soft limit can be set to 1M without privilege */
    struct rlimit lim = {.rlim_cur = M, .rlim_max = old.rlim_max};
    CHECK(setrlimit(RLIMIT_MEMLOCK, &lim) == 0);
    if (has_cap_ipc_lock()) {
        CHECK(map(c, buf, 0, 2 * M) == 0);
        CHECK(unmap(c, VFIO_DMA_UNMAP_FLAG_ALL, 0, 0, &out) == 0 && out == 2 * M);
    } else {
        CHECK(map(c, buf, 0, 2 * M) == -ENOMEM);
    }
    /* ... without it (dropped in a child, as we run as root), exceeding it is ENOMEM. */
    pid_t pid = fork();
    if (pid == 0) {
        int bad = 0;
        if (drop_cap_ipc_lock() != 0)
            bad |= 1;
        if (map(c, buf, 0, 2 * M) != -ENOMEM)
            bad |= 2;
        if (map(c, buf, 0, M) != 0) /* 256 pages: exactly the limit */
            bad |= 4;
        if (map(c, buf + M, 4 * M, 4096) != -ENOMEM)
            bad |= 8;
        if (unmap(c, VFIO_DMA_UNMAP_FLAG_ALL, 0, 0, &out) != 0 || out != M)
            bad |= 16;
        if (map(c, buf + M, 4 * M, 4096) != 0) /* uncharged: room again */
            bad |= 32;
        _exit(bad);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (WEXITSTATUS(status))
        fprintf(stderr, "child checks failed: mask %#x\n", WEXITSTATUS(status));
    CHECK(setrlimit(RLIMIT_MEMLOCK, &old) == 0);

    /* The last group leaving releases the backend: the container has none any more. */
    CHECK(map(c, buf, 0, M) == 0);
    CHECK(close(g) == 0);
    CHECK(map(c, buf, 0, M) == -EINVAL);
    g = open("/dev/vfio/42", O_RDWR); /* the group can be opened again */
    CHECK(g >= 0);
    CHECK(io(g, VFIO_GROUP_SET_CONTAINER, &c) == 0);
    CHECK(io(c, VFIO_SET_IOMMU, (void *)VFIO_TYPE1_IOMMU) == 0);
    CHECK(io(c, VFIO_IOMMU_DIRTY_PAGES, &(struct vfio_iommu_type1_dirty_bitmap){
                                            .argsz = 8, .flags = 1}) == -EACCES); /* v1 */
    CHECK(io(g, VFIO_GROUP_UNSET_CONTAINER, 0) == 0);
    CHECK(close(g) == 0);
    CHECK(close(c) == 0);
    /* Other ioctls pass through untouched. */
    CHECK(io(0, VFIO_GET_API_VERSION, 0) == -ENOTTY);

    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("setup_like_qemu: all checks passed\n");
    return 0;
}
