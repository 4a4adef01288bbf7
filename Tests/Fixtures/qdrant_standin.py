#!/usr/bin/env python3
"""A stand-in for Qdrant's collection snapshot API, for tests (no Qdrant server can be
installed on the build machines). It follows the documented endpoints:

  GET    /collections
  POST   /collections/{c}/snapshots                      -> {"result": {"name","creation_time","size","checksum"}}
  GET    /collections/{c}/snapshots                      -> {"result": [...]}
  GET    /collections/{c}/snapshots/{name}               -> the snapshot file
  DELETE /collections/{c}/snapshots/{name}               -> {"result": true}
  POST   /collections/{c}/snapshots/upload?priority=...  multipart field "snapshot"

A collection's "data" is bytes; a snapshot is a small header plus those bytes. An upload
replaces the collection's data and records the priority. State is dumped to --state after
every change so that tests can inspect it.

Usage: qdrant_standin.py PORT STATE_FILE [--collection NAME:BYTES:SEED]... [--api-key K] [--bad-checksum]
"""
import hashlib, json, random, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

args = sys.argv[1:]
port, state_file = int(args[0]), args[1]
api_key = None
bad_checksum = False
collections = {}
i = 2
while i < len(args):
    if args[i] == "--collection":
        name, size, seed = args[i + 1].split(":")
        collections[name] = random.Random(int(seed)).randbytes(int(size))
        i += 2
    elif args[i] == "--api-key":
        api_key = args[i + 1]
        i += 2
    elif args[i] == "--bad-checksum":
        bad_checksum = True
        i += 1
    else:
        sys.exit("unknown argument " + args[i])
snapshots = {}  # (collection, name) -> bytes
uploads = []
lock = threading.Lock()


def dump():
    with open(state_file, "w") as f:
        json.dump({
            "collections": {c: hashlib.sha256(d).hexdigest() for c, d in collections.items()},
            "snapshots": sorted("%s/%s" % k for k in snapshots),
            "uploads": uploads,
        }, f)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def authorized(self):
        if api_key and self.headers.get("api-key") != api_key:
            self.reply(403, {"status": {"error": "Invalid api-key"}})
            return False
        return True

    def parts(self):
        return [p for p in urlparse(self.path).path.split("/") if p]

    def do_GET(self):
        if not self.authorized():
            return
        p = self.parts()
        with lock:
            if p == ["collections"]:
                return self.reply(200, {"result": {"collections": [{"name": c} for c in sorted(collections)]}, "status": "ok"})
            if len(p) == 3 and p[0] == "collections" and p[2] == "snapshots":
                return self.reply(200, {"result": [{"name": n} for (c, n) in snapshots if c == p[1]], "status": "ok"})
            if len(p) == 4 and p[0] == "collections" and p[2] == "snapshots" and (p[1], p[3]) in snapshots:
                body = snapshots[(p[1], p[3])]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
        self.reply(404, {"status": {"error": "Not found"}})

    def do_POST(self):
        if not self.authorized():
            return
        p = self.parts()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with lock:
            if len(p) == 3 and p[0] == "collections" and p[2] == "snapshots" and p[1] in collections:
                name = "%s-%d.snapshot" % (p[1], int(time.time() * 1e6))
                data = b"QDRANT-SNAPSHOT\n" + p[1].encode() + b"\n" + collections[p[1]]
                snapshots[(p[1], name)] = data
                checksum = hashlib.sha256(data).hexdigest()
                if bad_checksum:
                    checksum = "0" * 64
                dump()
                return self.reply(200, {"result": {"name": name, "creation_time": "2024-11-01T00:00:00", "size": len(data), "checksum": checksum}, "status": "ok"})
            if len(p) == 4 and p[0] == "collections" and p[2] == "snapshots" and p[3] == "upload":
                priority = parse_qs(urlparse(self.path).query).get("priority", [""])[0]
                boundary = self.headers.get("Content-Type", "").split("boundary=")[-1].strip('"').encode()
                data = None
                for part in body.split(b"--" + boundary):
                    if b'name="snapshot"' in part:
                        data = part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
                if data is None or not data.startswith(b"QDRANT-SNAPSHOT\n"):
                    return self.reply(400, {"status": {"error": "Bad snapshot"}})
                header, rest = data.split(b"\n", 1)
                _, payload = rest.split(b"\n", 1)
                collections[p[1]] = payload
                uploads.append({"collection": p[1], "priority": priority, "sha256": hashlib.sha256(payload).hexdigest()})
                dump()
                return self.reply(200, {"result": True, "status": "ok"})
        self.reply(404, {"status": {"error": "Not found"}})

    def do_DELETE(self):
        if not self.authorized():
            return
        p = self.parts()
        with lock:
            if len(p) == 4 and p[0] == "collections" and p[2] == "snapshots" and (p[1], p[3]) in snapshots:
                del snapshots[(p[1], p[3])]
                dump()
                return self.reply(200, {"result": True, "status": "ok"})
        self.reply(404, {"status": {"error": "Not found"}})


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
dump()  # the state file appearing means the port is listening
server.serve_forever()
