#!/usr/bin/env python3
"""An unreliable road to a real S3 API server, for tests.

    s3_fault_proxy.py LISTEN_PORT UPSTREAM_PORT STATS_FILE [SEED]

Forwards every request to 127.0.0.1:UPSTREAM_PORT (moto), but answers about one request in
eight with 503 SlowDown, stalls one in thirty-two (reads the request, then says nothing for
STALL_S seconds and closes), and cuts one in sixteen short (the upstream's status and full
Content-Length, then half the body, then a closed connection). The same request (method,
path, query, range) is never spoiled more than twice in a row, so a client that retries
always gets through. After each request the counts are written to STATS_FILE as JSON.
"""
import http.client
import json
import random
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LISTEN, UPSTREAM, STATS = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
STALL_S = 3.0
lock = threading.Lock()
stats = {"requests": 0, "slowdown": 0, "stall": 0, "cut": 0, "passed": 0}
spoiled = {}


def choose(signature):
    with lock:
        stats["requests"] += 1
        if spoiled.get(signature, 0) >= 2:
            spoiled[signature] = 0
            return "pass"
        r = rng.random()
        kind = "slowdown" if r < 0.125 else "stall" if r < 0.15625 else "cut" if r < 0.21875 else "pass"
        spoiled[signature] = spoiled.get(signature, 0) + 1 if kind != "pass" else 0
        return kind


def record(kind):
    with lock:
        stats["passed" if kind == "pass" else kind] += 1
        snapshot = json.dumps(stats)
    with open(STATS + ".tmp", "w") as f:
        f.write(snapshot)
    import os
    os.replace(STATS + ".tmp", STATS)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        signature = (self.command, self.path, self.headers.get("Range"))
        kind = choose(signature)
        if kind == "slowdown":
            payload = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>'
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            record(kind)
            return
        if kind == "stall":
            record(kind)
            time.sleep(STALL_S)
            self.close_connection = True
            return
        conn = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")}
        conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        if kind == "cut" and (self.command != "GET" or len(data) < 2):
            kind = "pass"
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", resp.getheader("Content-Length") or str(len(data)))
        if kind == "cut":
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data[: len(data) // 2] if kind == "cut" else data)
        if kind == "cut":
            self.wfile.flush()
            self.close_connection = True
        record(kind)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


record("pass")
stats["passed"] = 0
stats["requests"] = 0
Server(("127.0.0.1", LISTEN), Handler).serve_forever()
