#!/bin/busybox sh
# /init of the benchmark VM (bench/vms/run.py): virtio-net up, an address (VMX_IP from
# the kernel command line, else DHCP), then a VMX_MB MiB file served by httpd on 8080
# and a sink on 9000 (nc, restarted after each connection). Reports "VMX ready ADDR".
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec >/dev/console 2>&1
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do
  insmod /mods/$m.ko || echo "VMX insmod $m failed"
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up
ip link set eth0 up
if [ -n "$VMX_IP" ]; then
  ip addr add "$VMX_IP" dev eth0
else
  udhcpc -i eth0 -s /dhcp.sh -n -q -t 20 -T 1 >/dev/null || echo "VMX dhcp failed"
fi
mkdir -p /www
dd if=/dev/zero of=/www/big bs=1048576 count="${VMX_MB:-64}" 2>/dev/null
httpd -p 8080 -h /www
(while true; do nc -l -p 9000 >/dev/null; done) &
echo "VMX ready $(ip -4 -o addr show eth0 | awk '{print $4}')"
while true; do sleep 3600; done
