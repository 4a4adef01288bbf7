#!/usr/bin/env python3
"""Drives one page of a real headless Chromium through the DevTools protocol, for tests.

    cdp_page.py CHROMIUM URL PROFILE_DIR

Starts Chromium (--headless=new) with a throw-away profile, opens URL, then reads one JSON
command per line on stdin and answers one JSON line on stdout:
    {"eval": "JS expression"}        -> {"value": <its value>} or {"error": "..."}
    {"screenshot": "/path/file.png"} -> {"value": true}
    {"quit": true}                   -> Chromium is stopped, the script ends
Needs websocket-client (PyPI), which `make test` installs into .build/venv.
"""
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request

import websocket

chromium, url, profile = sys.argv[1], sys.argv[2], sys.argv[3]
proc = subprocess.Popen(
    [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
     "--no-default-browser-check", "--remote-debugging-port=0", "--remote-allow-origins=*",
     "--user-data-dir=" + profile, "--window-size=1300,820", "about:blank"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
port_file = os.path.join(profile, "DevToolsActivePort")
deadline = time.time() + 30
while not (os.path.exists(port_file) and open(port_file).read().strip()):
    if time.time() > deadline or proc.poll() is not None:
        print(json.dumps({"error": "chromium did not start"}), flush=True)
        sys.exit(1)
    time.sleep(0.05)
port = open(port_file).read().split()[0]
targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
page = next(t for t in targets if t.get("type") == "page")
ws = websocket.create_connection(page["webSocketDebuggerUrl"], suppress_origin=True)
ids = iter(range(1, 1 << 30))


def call(method, **params):
    i = next(ids)
    ws.send(json.dumps({"id": i, "method": method, "params": params}))
    while True:
        m = json.loads(ws.recv())
        if m.get("id") == i:
            return m


call("Page.enable")
call("Page.navigate", url=url)
print(json.dumps({"value": "ready"}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    try:
        if "eval" in cmd:
            r = call("Runtime.evaluate", expression=cmd["eval"], returnByValue=True)
            res = r.get("result", {})
            if "exceptionDetails" in res:
                out = {"error": res["exceptionDetails"].get("text", "exception")}
            else:
                out = {"value": res.get("result", {}).get("value")}
        elif "screenshot" in cmd:
            r = call("Page.captureScreenshot", format="png")
            with open(cmd["screenshot"], "wb") as f:
                f.write(base64.b64decode(r["result"]["data"]))
            out = {"value": True}
        else:
            break
    except Exception as e:  # a command that fails is an answer, not the end
        out = {"error": str(e)}
    print(json.dumps(out), flush=True)
ws.close()
proc.terminate()
try:
    proc.wait(10)
except subprocess.TimeoutExpired:
    proc.kill()
