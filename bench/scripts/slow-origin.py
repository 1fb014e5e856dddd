"""The origin for the collapse benchmarks (bench/scripts/collapse-and-memory, bench/scripts/collapse-compare).

Usage: python3 bench/scripts/slow-origin.py PORT

Paths under /slow/ are answered after 50 ms, so that a crowd of viewers arrives while the
first request is still at the origin; other paths at once. Bodies: a path containing "small"
gets 1 KiB, "part" 128 KiB, anything else 1 MiB, all cacheable for an hour.
GET /__counts lists how many requests each path has had.
"""
import http.server, sys, threading, time

DELAY = 0.05
counts = {}
lock = threading.Lock()
body = bytes(range(256)) * 4096


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/__counts":
            with lock:
                text = "\n".join(f"{k} {v}" for k, v in sorted(counts.items())).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
            return
        with lock:
            counts[self.path] = counts.get(self.path, 0) + 1
        if self.path.startswith("/slow/"):
            time.sleep(DELAY)
        if "small" in self.path:
            data = body[:1024]
        elif "part" in self.path:
            data = body[: 128 * 1024]
        else:
            data = body
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "public, max-age=3600")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    # A thousand viewers can reach the origin at once when a peer does not collapse.
    request_queue_size = 4096
    daemon_threads = True


Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
