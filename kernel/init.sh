#!/bin/busybox sh
# /init of the type1 kernel-check guest (crates/vfio/src/qemu.rs builds the initramfs around it).
# Loads VFIO, binds the edu device to vfio-pci, runs vfio-replay, prints its records between
# markers and powers off (or, when /record/run exists, records that program's VFIO stream).
# QEMU exits 0 even after a panic: the host waits for @@END / @@EXIT.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
stty -echo 2>/dev/null
echo "@@INFO kernel=$(uname -r)"
for m in $(cat /modules.list); do
    insmod "/lib/modules/$m.ko" || echo "@@ERROR insmod $m failed"
done
BDF=0000:00:01.0
echo vfio-pci > /sys/bus/pci/devices/$BDF/driver_override
echo $BDF > /sys/bus/pci/drivers_probe
echo always > /sys/kernel/mm/transparent_hugepage/enabled
GROUP=$(basename "$(readlink /sys/bus/pci/devices/$BDF/iommu_group)")
if [ ! -e "/dev/vfio/$GROUP" ]; then
    echo "@@ERROR no /dev/vfio/$GROUP (driver: $(readlink /sys/bus/pci/devices/$BDF/driver))"
fi
echo "@@INFO group=$GROUP hugepages_2m=$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)"
if [ -x /record/run ]; then
    # Record mode (qemu::record_in_guest): a dynamically linked VFIO program under the LD_PRELOAD
    # shim with TYPE1_RECORD, against the real group; the trace goes back one `@@T` line each.
    LD_LIBRARY_PATH="$(cat /record/libpath)" TYPE1_RECORD=/tmp/rec.trace \
        LD_PRELOAD=/record/libtype1_preload.so /record/run "$GROUP"
    echo "@@RECORDED $?"
    [ -e /tmp/rec.trace ] && sed 's/^/@@T /' /tmp/rec.trace
    echo "@@EXIT 0"
else
    /vfio-replay "$GROUP" /stmts.jsonl
    echo "@@EXIT $?"
fi
poweroff -f
