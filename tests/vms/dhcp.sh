#!/bin/sh
# udhcpc's script in the test VM: applies the lease (address, default route, resolver).
case "$1" in
  bound | renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
    echo "nameserver ${dns%% *}" >/etc/resolv.conf
    ;;
esac
exit 0
