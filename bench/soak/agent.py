#!/usr/bin/env python3
"""The soak's traffic, one role per process, run inside a network namespace by
bench/soak/run. Each prints JSON lines on stdout (one per finished connection, or one
per second for datagram traffic) and runs until its deadline (`--until`, a Unix time).

  tcp-sink PORT                         reads each connection to its end, answers
                                        "<bytes> <sha256>" and closes
  tcp-source NAME HOST PORT RATE CONN   connections of CONN bytes each at RATE bytes/s,
                                        each checked against the sink's answer
  udp-echo PORT                         echoes datagrams
  udp-source NAME HOST PORT PPS         numbered datagrams, echoes counted
  dns NAME SERVER QNAME...              queries in turn, answers counted
  flood GATEWAY HOSTPORT VICTIM_IP      the hostile container: SYN, RST, DHCP, RA, ARP
                                        spoofing and UDP port scans, paced
  listen-only PORT                      a listener that never accepts (the kernel
                                        completes handshakes into its backlog)
"""
import hashlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time

UNTIL = float(os.environ.get("SOAK_UNTIL", "0")) or time.time() + 3600


def emit(**kv):
    sys.stdout.write(json.dumps(kv) + "\n")
    sys.stdout.flush()


def tcp_sink(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(64)
    srv.settimeout(1)

    def serve(c):
        c.settimeout(30)
        h, n = hashlib.sha256(), 0
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    break
                h.update(b)
                n += len(b)
            c.sendall(f"{n} {h.hexdigest()}\n".encode())
        except OSError:
            pass
        finally:
            c.close()

    while time.time() < UNTIL:
        try:
            c, _ = srv.accept()
        except OSError:
            continue
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def one_connection(host, port, rate, size, rng):
    """Sends `size` bytes at `rate`; returns (sent, acked bytes, ok, error)."""
    h = hashlib.sha256()
    sent = 0
    block = rng.randbytes(65536)
    s = socket.create_connection((host, port), timeout=10)
    s.settimeout(30)
    try:
        t0 = time.time()
        while sent < size:
            chunk = block[: min(len(block), size - sent)]
            s.sendall(chunk)
            h.update(chunk)
            sent += len(chunk)
            block = block[1:] + block[:1]  # the next chunk differs
            ahead = sent / rate - (time.time() - t0)
            if ahead > 0:
                time.sleep(ahead)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while not answer.endswith(b"\n"):
            b = s.recv(256)
            if not b:
                break
            answer += b
    finally:
        s.close()
    parts = answer.decode(errors="replace").split()
    if len(parts) != 2:
        return sent, 0, False, "no answer from the sink"
    acked, digest = int(parts[0]), parts[1]
    ok = acked == sent and digest == h.hexdigest()
    return sent, acked, ok, "" if ok else "corrupted: the sink's sha256 differs"


def tcp_source(name, host, port, rate, size):
    rng = random.Random(name)
    i = 0
    while time.time() < UNTIL - 2:
        t0 = time.time()
        try:
            sent, acked, ok, err = one_connection(host, port, rate, size, rng)
        except OSError as e:
            sent, acked, ok, err = 0, 0, False, f"{type(e).__name__}: {e}"
        emit(stream=name, conn=i, t0=t0, t1=time.time(), sent=sent, acked=acked, ok=ok, error=err)
        i += 1
        if not ok:
            time.sleep(0.5)


def udp_echo(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(1)
    while time.time() < UNTIL:
        try:
            d, a = s.recvfrom(2048)
            s.sendto(d, a)
        except OSError:
            pass


def udp_source(name, host, port, pps):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.001)
    seq = sent = got = 0
    tick = time.time()
    while time.time() < UNTIL - 1:
        try:
            s.sendto(struct.pack(">Q", seq) + b"x" * 200, (host, port))
            sent += 1
        except OSError:
            pass
        seq += 1
        deadline = time.time() + 1.0 / pps
        while time.time() < deadline:
            try:
                s.recv(2048)
                got += 1
            except OSError:
                pass
        if time.time() - tick >= 1:
            emit(stream=name, t=time.time(), sent=sent, received=got)
            sent = got = 0
            tick = time.time()


def dns_query(name, qid):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    return q + struct.pack(">HH", 1, 1)


def dns(name, server, qnames):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    asked = answered = 0
    tick = time.time()
    qid = 0
    while time.time() < UNTIL - 2:
        for qn in qnames:
            qid = (qid + 1) & 0xFFFF
            asked += 1
            try:
                s.sendto(dns_query(qn, qid), (server, 53))
                while True:
                    r = s.recv(2048)
                    if r[:2] == struct.pack(">H", qid):
                        break
                rcode = r[3] & 0x0F
                ancount = struct.unpack(">H", r[6:8])[0]
                answered += rcode == 0 and ancount > 0
            except OSError:
                pass
            time.sleep(0.02)
        if time.time() - tick >= 1:
            emit(stream=name, t=time.time(), asked=asked, answered=answered)
            asked = answered = 0
            tick = time.time()


def flood(gw, hostport, victim):
    """Every flood of a hostile container, paced to a few thousand frames a second."""
    from scapy.all import (ARP, BOOTP, DHCP, ICMPv6ND_RA, IP, IPv6, TCP, UDP, Ether,
                           get_if_addr, get_if_hwaddr, in6_mactoifaceid, raw)
    mac, ip = get_if_hwaddr("eth0"), get_if_addr("eth0")
    gw_mac = "02:42:" + ":".join("%02x" % int(x) for x in gw.split("."))
    eth = Ether(src=mac, dst=gw_mac)
    bcast = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
    rng = random.Random(7)
    kinds = {
        # Half-open handshakes to the host's listener (the socket uplink holds each up
        # to its handshake timeout), then SYNs again and again on one quad.
        "syn": [raw(eth / IP(src=ip, dst=gw) / TCP(sport=rng.randrange(1024, 65535),
                                                  dport=hostport, flags="S", seq=rng.getrandbits(32)))
                for _ in range(512)]
        + [raw(eth / IP(src=ip, dst=gw) / TCP(sport=4444, dport=hostport, flags="S", seq=1))] * 512,
        "rst": [raw(eth / IP(src=ip, dst=gw) / TCP(sport=rng.randrange(1024, 65535), dport=hostport,
                                                  flags="R", seq=rng.getrandbits(32)))
                for _ in range(256)],
        "dhcp": [raw(bcast / IP(src=ip, dst="255.255.255.255") / UDP(sport=sp, dport=68)
                     / BOOTP(op=2, yiaddr="10.170.0.200") / DHCP(options=[("message-type", "offer"), "end"]))
                 for sp in (67, 9999)],
        "ra": [raw(Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src="fe80::" + in6_mactoifaceid(mac), dst="ff02::1")
                   / ICMPv6ND_RA(routerlifetime=1800))],
        "arp": [raw(bcast / ARP(op=2, hwsrc=mac, psrc=p, hwdst="ff:ff:ff:ff:ff:ff", pdst=p))
                for p in (victim, gw)],
        "scan": [raw(eth / IP(src=ip, dst=gw) / UDP(sport=40000, dport=p) / b"x")
                 for p in range(1, 65536, 97)],
    }
    # Frames a second of each kind.
    rate = {"syn": 2000, "rst": 500, "dhcp": 20, "ra": 20, "arp": 50, "scan": 500}
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    sent = {k: 0 for k in kinds}
    idx = {k: 0 for k in kinds}
    start = tick = time.time()
    while time.time() < UNTIL:
        now = time.time()
        for k, frames in kinds.items():
            due = int((now - start) * rate[k]) - sent[k]
            for _ in range(max(0, min(due, 200))):
                try:
                    s.send(frames[idx[k] % len(frames)])
                except OSError:
                    pass
                idx[k] += 1
                sent[k] += 1
        if now - tick >= 5:
            emit(flood=dict(sent), t=now)
            tick = now
        time.sleep(0.005)
    emit(flood=dict(sent), t=time.time())


def listen_only(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(4096)
    while time.time() < UNTIL:
        time.sleep(1)


def main():
    role, args = sys.argv[1], sys.argv[2:]
    if role == "listen-only":
        listen_only(int(args[0]))
    elif role == "tcp-sink":
        tcp_sink(int(args[0]))
    elif role == "tcp-source":
        tcp_source(args[0], args[1], int(args[2]), float(args[3]), int(args[4]))
    elif role == "udp-echo":
        udp_echo(int(args[0]))
    elif role == "udp-source":
        udp_source(args[0], args[1], int(args[2]), float(args[3]))
    elif role == "dns":
        dns(args[0], args[1], args[2:])
    elif role == "flood":
        flood(args[0], int(args[1]), args[2])
    else:
        sys.exit(f"unknown role {role}")


if __name__ == "__main__":
    main()
