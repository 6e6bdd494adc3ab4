"""A VM's side of QEMU's `-netdev stream`, for the tests: connects to a vswitch VM
socket, speaks the framing (each frame behind its 4-byte big-endian length), gets a
DHCP lease from the gateway, resolves a container by name through the gateway's DNS and
pings it. Prints one line per step; exits non-zero when a step fails.

usage: stream_client.py SOCKET MAC NAME
"""
import random
import socket
import struct
import sys
import time

from scapy.all import ARP, BOOTP, DHCP, DNS, DNSQR, ICMP, IP, UDP, Ether, mac2str, raw

path, mac, name = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
s.settimeout(0.2)
buf = b""
me = {"ip": None}


def send(p):
    b = raw(p)
    s.sendall(struct.pack(">I", len(b)) + b)


def frames(until):
    """Frames received before `until`, answering ARP for our address on the way."""
    global buf
    while time.time() < until:
        while len(buf) >= 4:
            (n,) = struct.unpack(">I", buf[:4])
            if len(buf) < 4 + n:
                break
            f, buf = buf[4 : 4 + n], buf[4 + n :]
            p = Ether(f)
            if ARP in p and p[ARP].op == 1 and p[ARP].pdst == me["ip"]:
                send(Ether(src=mac, dst=p.src) / ARP(op=2, hwsrc=mac, psrc=me["ip"], hwdst=p.src, pdst=p[ARP].psrc))
                continue
            yield p
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        if not d:
            sys.exit("the switch closed the connection")
        buf += d


def ask(packet, match, what):
    for _ in range(10):
        send(packet)
        for p in frames(time.time() + 1):
            r = match(p)
            if r is not None:
                return r
    sys.exit(f"no answer: {what}")


def dhcp_opt(p, key):
    for o in p[DHCP].options:
        if isinstance(o, tuple) and o[0] == key:
            return o[1]
    return None


xid = random.randrange(1 << 31)
l2 = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
boot = BOOTP(chaddr=mac2str(mac), xid=xid, flags=0x8000)


def reply(kind):
    return lambda p: p if BOOTP in p and p[BOOTP].xid == xid and DHCP in p and dhcp_opt(p, "message-type") == kind else None


offer = ask(l2 / boot / DHCP(options=[("message-type", "discover"), "end"]), reply(2), "DHCP offer")
ip, server = offer[BOOTP].yiaddr, dhcp_opt(offer, "server_id")
req = DHCP(options=[("message-type", "request"), ("requested_addr", ip), ("server_id", server), "end"])
ack = ask(l2 / boot / req, reply(5), "DHCP ack")
gw, gwmac = dhcp_opt(ack, "router"), ack.src
me["ip"] = ack[BOOTP].yiaddr
print(f"lease {me['ip']} router {gw}", flush=True)

q = Ether(src=mac, dst=gwmac) / IP(src=me["ip"], dst=gw) / UDP(sport=40123, dport=53) / DNS(rd=1, qd=DNSQR(qname=name))
ans = ask(q, lambda p: p if DNS in p and p[DNS].qr == 1 and p[DNS].ancount > 0 else None, f"DNS {name}")
target = ans[DNS].an.rdata
print(f"resolved {name} {target}", flush=True)

arp = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=me["ip"], pdst=target)
tmac = ask(arp, lambda p: p[ARP].hwsrc if ARP in p and p[ARP].op == 2 and p[ARP].psrc == target else None, f"ARP {target}")
echo = Ether(src=mac, dst=tmac) / IP(src=me["ip"], dst=target) / ICMP(id=0x5678, seq=1) / b"vmx-ping"
ask(echo, lambda p: p if ICMP in p and p[ICMP].type == 0 and p[IP].src == target else None, f"ping {target}")
print(f"pong {target}", flush=True)
