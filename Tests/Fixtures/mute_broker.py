#!/usr/bin/env python3
"""mute_broker.py PORT: an MQTT 5 peer that accepts connections (CONNACK) and answers
pings, but never acknowledges a PUBLISH: a broker that has stopped making progress.
Prints "ready" once it listens. Standard library only."""
import socket
import sys
import threading


def read_packet(conn):
    head = conn.recv(1)
    if not head:
        return None, b""
    length, shift = 0, 0
    while True:
        b = conn.recv(1)[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            return None, b""
        body += chunk
    return head[0] >> 4, body


def serve(conn):
    with conn:
        while True:
            kind, _ = read_packet(conn)
            if kind is None:
                return
            if kind == 1:      # CONNECT -> CONNACK: no session, success, no properties
                conn.sendall(bytes([0x20, 0x03, 0x00, 0x00, 0x00]))
            elif kind == 12:   # PINGREQ -> PINGRESP
                conn.sendall(bytes([0xD0, 0x00]))
            elif kind == 14:   # DISCONNECT
                return
            # PUBLISH, SUBSCRIBE, …: silence


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(8)
    print("ready", flush=True)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
