"""A counting HTTP proxy for benchmarks: forwards every request to UPSTREAM
(a `kubectl proxy`, plain HTTP on loopback) and counts them, so a benchmark
can charge a process the API requests it makes. Streams (watches) are passed
through as they come. `GET /__counts` answers the counts as JSON:
{"requests": N, "watches": W, "by": {"GET /api/v1/namespaces": n, ...}}.

  countproxy.py PORT UPSTREAM_URL
"""

import http.client
import http.server
import json
import sys
import threading
import urllib.parse

port, upstream = int(sys.argv[1]), urllib.parse.urlparse(sys.argv[2])
lock = threading.Lock()
counts = {"requests": 0, "watches": 0, "by": {}}
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self):
        if self.path == "/__counts":
            with lock:
                body = json.dumps(counts).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        path = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(path.query)
        watch = query.get("watch", ["false"])[0] in ("true", "1")
        with lock:
            counts["requests"] += 1
            counts["watches"] += int(watch)
            key = f"{self.command} {path.path}{' watch' if watch else ''}"
            counts["by"][key] = counts["by"].get(key, 0) + 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP and k.lower() != "host"}
        connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=None)
        connection.request(self.command, self.path, body=body, headers=headers)
        reply = connection.getresponse()
        self.send_response(reply.status, reply.reason)
        for k, v in reply.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        sized = reply.getheader("Content-Length")
        if sized is not None:
            data = reply.read()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            # A stream (a watch): chunk by chunk as it comes.
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                while True:
                    data = reply.read1(65536)
                    if not data:
                        break
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
        connection.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
server.serve_forever()
