#!/bin/busybox sh
# /init of the test VM's initramfs (tests/vms.rs): loads virtio-net, takes a DHCP lease,
# resolves and pings the container VMX_PEER (from the kernel command line), serves a file
# over HTTP on port 8080, fetches one from VMX_PEER:8081, and reports each step on the
# serial console as a line starting with "VMX ".
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec >/dev/console 2>&1
say() { echo "VMX $*"; }
say boot
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do
  insmod /mods/$m.ko || say "insmod $m failed"
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /dhcp.sh -n -q -t 20 -T 1 >/dev/null || say "dhcp failed"
say lease $(ip -4 -o addr show eth0 | awk '{print $4}') mac $(cat /sys/class/net/eth0/address)
peer=$(nslookup -type=a "$VMX_PEER" 2>/dev/null | awk '/^Address/ { a = $NF } END { print a }')
say resolved "$VMX_PEER" "$peer"
if ping -c 2 -W 3 "$peer" >/dev/null; then say ping ok "$VMX_PEER"; else say ping failed; fi
# IPv6 by SLAAC from the gateway's router advertisements (the kernel's defaults).
i=0
while ! ip -6 -o addr show dev eth0 scope global | grep -qv tentative && [ $i -lt 150 ]; do
  sleep 0.1; i=$((i + 1))
done
say slaac $(ip -6 -o addr show dev eth0 scope global | awk '{print $4}')
peer6=$(nslookup -type=aaaa "$VMX_PEER" 2>/dev/null | awk '/^Address/ { a = $NF } END { print a }')
say resolved6 "$VMX_PEER" "$peer6"
if ping -6 -c 2 -W 3 "$peer6" >/dev/null; then say ping6 ok; else say ping6 failed; fi
mkdir -p /www
dd if=/dev/urandom of=/www/f bs=1024 count=1024 2>/dev/null
say sha $(sha256sum /www/f | cut -d' ' -f1)
httpd -p 8080 -h /www
say serving
say got $(wget -q -O - "http://$peer:8081/g" | sha256sum | cut -d' ' -f1)
say done
while true; do sleep 3600; done
