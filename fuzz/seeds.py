#!/usr/bin/python3
"""Writes the seed corpus of every fuzz target into fuzz/seeds/TARGET/ from well-formed
frames (scapy). Run it again after changing a target's input format."""
import json
import os
import struct
import sys

from scapy.all import (ARP, BOOTP, DHCP, DHCP6_Advertise, DNS, DNSQR, DNSRR, DNSRROPT, ICMP, IP, TCP,
                       UDP, Dot1Q, Ether, raw)

HERE = os.path.dirname(os.path.abspath(__file__))
GW = "10.1.0.1"
GW_MAC = "02:42:0a:01:00:01"
C2, C2_MAC = "10.1.0.2", "02:42:0a:01:00:02"
C3, C3_MAC = "10.1.0.3", "02:42:0a:01:00:03"
EXT, EXT_MAC, HOP_MAC = "198.51.100.2", "02:42:c6:33:64:02", "02:00:00:00:00:01"


def rec(tag, body):
    return bytes([tag]) + struct.pack("<H", len(body)) + body


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def dns_query(name="web.", qtype="A", qid=0x1234, edns=False):
    q = DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype=qtype))
    if edns:
        q.ar = DNSRROPT(rclass=4096)
    return raw(q)


def frames():
    eth = Ether(src=C2_MAC, dst=GW_MAC)
    return {
        "udp": eth / IP(src=C2, dst="192.0.2.9") / UDP(sport=5000, dport=53) / b"hello",
        "tcp_syn": eth / IP(src=C2, dst="192.0.2.9", flags="DF") /
        TCP(sport=40000, dport=80, flags="S", options=[("MSS", 1460), ("WScale", 7)]),
        "icmp_echo": eth / IP(src=C2, dst=GW) / ICMP(id=7, seq=1) / b"ping",
        "icmp_error": eth / IP(src=C2, dst=GW) / ICMP(type=3, code=3) /
        raw(IP(src=GW, dst=C2) / UDP(sport=53, dport=5000)),
        "arp_request": Ether(src=C2_MAC, dst="ff:ff:ff:ff:ff:ff") /
        ARP(op=1, hwsrc=C2_MAC, psrc=C2, pdst=GW),
        "tagged": Ether(src=C2_MAC, dst=GW_MAC) / Dot1Q(vlan=10) / IP(src=C2, dst=GW) /
        UDP(sport=1, dport=2),
        "qinq": Ether(src=C2_MAC, dst=GW_MAC, type=0x88a8) / Dot1Q(vlan=100) /
        Dot1Q(vlan=10) / IP(src=C2, dst=GW) / ICMP(),
        # A DHCP offer from a port other than 67 (the first-hop guard's by-meaning case).
        "dhcp_offer": Ether(src=C2_MAC, dst="ff:ff:ff:ff:ff:ff") /
        IP(src=C2, dst="255.255.255.255") / UDP(sport=9999, dport=68) /
        BOOTP(op=2, yiaddr="10.1.0.9", xid=0x4321) /
        DHCP(options=[("message-type", "offer"), ("server_id", C2), "end"]),
    }


def dhcp(msg, **opts):
    options = [("message-type", msg)] + list(opts.items()) + ["end"]
    return (Ether(src=C2_MAC, dst="ff:ff:ff:ff:ff:ff") /
            IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67) /
            BOOTP(op=1, chaddr=bytes.fromhex(C2_MAC.replace(":", "")) + b"\0" * 10,
                  xid=0x1234) / DHCP(options=options))


def main():
    f = frames()
    for k, v in f.items():
        write("wire", k, raw(v))
    # A bare DHCPv6 advertise (the target also reads its input as a UDP payload).
    write("wire", "dhcpv6_advertise", raw(DHCP6_Advertise(trid=0x123456)))
    write("arp", "request", raw(f["arp_request"]))
    write("arp", "probe", raw(Ether(src=C2_MAC, dst="ff:ff:ff:ff:ff:ff") /
                              ARP(op=1, hwsrc=C2_MAC, psrc="0.0.0.0", pdst=GW)))
    write("dhcp", "discover", raw(dhcp("discover")))
    write("dhcp", "request", raw(dhcp("request", requested_addr=C2, server_id=GW)))
    write("dhcp", "inform", raw(dhcp("inform")))
    write("dhcp", "release", raw(dhcp("release", server_id=GW)))

    for i, (name, qt, edns) in enumerate([("web.", "A", False), ("www.vswitch.test.", "A", True),
                                           ("2.0.1.10.in-addr.arpa.", "PTR", False),
                                           ("example.com.", "AAAA", True),
                                           ("host.vswitch.internal.", "ANY", False)]):
        write("dns_query", f"q{i}", bytes([i & 1]) + dns_query(name, qt, 0x100 + i, edns))
    ans = DNS(id=0, qr=1, rd=1, ra=1, qd=DNSQR(qname="example.com."),
              an=DNSRR(rrname="example.com.", rdata="93.184.216.34", ttl=60))
    write("dns_upstream", "answer", b"\0" + raw(ans))
    write("dns_upstream", "answer_tcp", b"\1" + raw(ans))
    write("dns_upstream", "servfail", b"\0" + raw(DNS(id=0, qr=1, rcode=2, qd=DNSQR(qname="example.com."))))
    write("dns_upstream", "truncated", b"\1" + raw(DNS(id=0, qr=1, tc=1, qd=DNSQR(qname="example.com."))))

    reqs = [
        {"v": 1, "cmd": "hello"},
        {"v": 1, "cmd": "network_create", "name": "front", "subnet": "10.9.0.0/24",
         "gateway": "10.9.0.1", "ip_range": "10.9.0.128/25", "vlan": 10, "mtu": 1400},
        {"v": 1, "cmd": "attach", "network": "front", "name": "web", "tap": "tap0",
         "mac": "02:00:00:00:00:09", "aliases": ["www"], "trunk": "10,20",
         "publish": ["8080:80/tcp", "127.0.0.1:5353:53/udp"]},
        {"v": 1, "cmd": "connect", "network": "bridge", "name": "web", "ip": "172.17.0.9"},
        {"v": 1, "cmd": "publish", "name": "web", "specs": ["9000-9001:9000-9001"]},
        {"v": 1, "cmd": "uplink_set", "mode": "packet", "tap": "up0",
         "address": "198.51.100.2/24", "next_hop": "198.51.100.1"},
        {"v": 1, "cmd": "disconnect", "network": "bridge", "name": "web"},
        {"v": 1, "cmd": "detach", "name": "web"},
        {"v": 1, "cmd": "network_rm", "name": "front", "force": True},
    ]
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in reqs)
    write("control", "session", lines)
    write("control", "response", json.dumps({"ok": True, "data": {"ports": [
        {"name": "web", "network": "bridge", "mac": C2_MAC, "rx_frames": 1}]}}).encode() + b"\n")

    # Pipeline: ARP then UDP from port 2 (tag 0), the reply from port 3 (tag 1), a
    # routed frame through NAT, an inbound frame on the uplink (tag 6) to the published
    # port, a tagged frame on the trunk (tag 3).
    eth = lambda s, d: Ether(src=s, dst=d)
    p = [
        rec(0x20, raw(f["arp_request"])),
        rec(0x00, raw(eth(C2_MAC, C3_MAC) / IP(src=C2, dst=C3) / UDP(sport=1, dport=2))),
        rec(0x21, raw(eth(C3_MAC, C2_MAC) / IP(src=C3, dst=C2) / UDP(sport=2, dport=1))),
        rec(0x20, raw(eth(C2_MAC, GW_MAC) / IP(src=C2, dst="203.0.113.5") /
                      TCP(sport=40000, dport=443, flags="S"))),
        rec(0x26, raw(eth(HOP_MAC, EXT_MAC) / IP(src="203.0.113.5", dst=EXT) /
                      TCP(sport=443, dport=40000, flags="SA"))),
        rec(0x26, raw(eth(HOP_MAC, EXT_MAC) / IP(src="203.0.113.7", dst=EXT) /
                      TCP(sport=5555, dport=8080, flags="S"))),
        rec(0x23, raw(Ether(src="02:00:00:00:00:55", dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=20) /
                      IP(src="10.2.0.9", dst="10.2.0.255") / UDP(sport=9, dport=9))),
        rec(0x24, raw(eth("02:00:00:00:00:66", "02:00:00:00:00:67") / IP(src="10.3.0.6", dst="10.3.0.7") / ICMP())),
        rec(0x20, raw(eth(C2_MAC, GW_MAC) / IP(src=C2, dst="203.0.113.5", ttl=1) / UDP(sport=1, dport=2))),
    ]
    write("pipeline", "mixed", b"".join(p))
    # A TCP super-frame (GSO_TCPV4, partial checksum) routed through NAT.
    vnet = struct.pack("<BBHHHH", 1, 1, 54, 1000, 34, 16)
    sup = raw(eth(C2_MAC, GW_MAC) / IP(src=C2, dst="203.0.113.5", flags="DF") /
              TCP(sport=40001, dport=443, flags="A") / (b"x" * 3000))
    write("pipeline", "super", rec(0x20, raw(eth(C2_MAC, GW_MAC) / IP(src=C2, dst="203.0.113.5") /
                                          TCP(sport=40001, dport=443, flags="S"))) + rec(0x28, vnet + sup))

    # Uplink: DNS over TCP on the gateway: SYN, ACK (relative), a query, the answer
    # (kind 1), FIN.
    q = dns_query("example.com.", "A", 0x77)
    ip = lambda: IP(src=C2, dst=GW)
    u = [
        rec(0, raw(ip() / TCP(sport=40000, dport=53, seq=1000, flags="S"))),
        rec(4, raw(ip() / TCP(sport=40000, dport=53, seq=1001, ack=0, flags="A"))),
        rec(4, raw(ip() / TCP(sport=40000, dport=53, seq=1001, ack=0, flags="PA") /
                  (struct.pack(">H", len(q)) + q))),
        rec(0x20, raw(DNS(id=0x77, qr=1, qd=DNSQR(qname="example.com.")))),
        rec(4, raw(ip() / TCP(sport=40000, dport=53, seq=1003 + len(q), ack=0, flags="FA"))),
    ]
    write("uplink_tcp", "dns_tcp", b"".join(u))
    # To the host listener: SYN, host accepts and sends (kind 2), ACK and data, RST.
    h = [
        rec(1, raw(ip() / TCP(sport=40001, dport=1, seq=5000, flags="S"))),
        rec(0x40, b"from the host"),
        rec(5, raw(ip() / TCP(sport=40001, dport=1, seq=5001, ack=0, flags="A"))),
        rec(5, raw(ip() / TCP(sport=40001, dport=1, seq=5001, ack=0, flags="PA") / b"data")),
        rec(0x40, b"more"),
        rec(0x41, b""),
        rec(5, raw(ip() / TCP(sport=40001, dport=1, seq=5005, ack=0, flags="R"))),
        rec(0, raw(ip() / UDP(sport=7, dport=7) / b"udp")),
        rec(0, raw(ip() / ICMP(id=9) / b"ping")),
        rec(0x80, b"\x10"),
    ]
    write("uplink_tcp", "host", b"".join(h))
    # Published port: a loopback client connects (kind 3); the container answers the
    # uplink's SYN (destination kept, relative ack).
    pub = [
        rec(0x60, b"GET / HTTP/1.0\r\n\r\n"),
        rec(0x14, raw(IP(src=C2, dst=GW) / TCP(sport=80, dport=1, seq=9000, ack=0, flags="SA"))),
    ]
    write("uplink_tcp", "published", b"".join(pub))

    # Gateway: ARP, ping, DHCP, DNS over UDP to the gateway; punted frames (time
    # exceeded, too big, unresolved); ARP and ping on the uplink's segment; timers.
    gw = Ether(src=C2_MAC, dst=GW_MAC) / IP(src=C2, dst=GW)
    out = Ether(src=C2_MAC, dst=GW_MAC) / IP(src=C2, dst="203.0.113.5", flags="DF")
    g = [
        rec(0, raw(f["arp_request"])),
        rec(0, raw(gw / ICMP(id=3, seq=1) / b"ping")),
        rec(0, raw(dhcp("discover"))),
        rec(0, raw(gw / UDP(sport=5353, dport=53) / dns_query("web.", "A", 0x99))),
        rec(0, raw(gw / UDP(sport=5353, dport=53) / dns_query("example.com.", "A", 0x9a))),
        rec(0, raw(gw / UDP(sport=5353, dport=9) / b"closed port")),
        rec(4, raw(out / UDP(sport=1, dport=2) / b"ttl")),
        rec(8, raw(out / TCP(sport=1, dport=2, flags="A") / (b"b" * 1600))),
        rec(12, raw(Ether(src=EXT_MAC, dst=HOP_MAC) / IP(src=EXT, dst="203.0.113.5") / UDP(sport=1, dport=2))),
        rec(0x10, raw(Ether(src=HOP_MAC, dst="ff:ff:ff:ff:ff:ff") /
                      ARP(op=1, hwsrc=HOP_MAC, psrc="198.51.100.1", pdst=EXT))),
        rec(0x10, raw(Ether(src=HOP_MAC, dst=EXT_MAC) / IP(src="198.51.100.1", dst=EXT) / ICMP(id=4))),
        rec(0x30, raw(Ether(src=HOP_MAC, dst=EXT_MAC) /
                      ARP(op=2, hwsrc=HOP_MAC, psrc="198.51.100.1", hwdst=EXT_MAC, pdst=EXT))),
    ]
    write("gateway", "session", b"".join(g))


if __name__ == "__main__":
    sys.exit(main())
