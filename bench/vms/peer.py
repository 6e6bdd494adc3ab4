"""One bulk transfer with the benchmark VM, timed from the peer's side.

peer.py get HOST PORT        HTTP GET /big from the VM's httpd: VM -> peer
peer.py push HOST PORT BYTES  BYTES of zeros to the VM's nc sink: peer -> VM
Prints `BYTES SECONDS MBIT/S`.
"""
import socket
import sys
import time

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.create_connection((host, port), timeout=120)
t0 = time.monotonic()
n = 0
if mode == "get":
    s.sendall(b"GET /big HTTP/1.0\r\n\r\n")
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        n += len(d)
else:
    total = int(sys.argv[4])
    chunk = bytes(1 << 16)
    while n < total:
        n += s.send(chunk[: min(len(chunk), total - n)])
    s.shutdown(socket.SHUT_WR)
    while s.recv(1 << 16):
        pass
dt = time.monotonic() - t0
print(f"{n} {dt:.3f} {n * 8 / dt / 1e6:.1f}")
