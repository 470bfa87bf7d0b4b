"""A deliberately broken OpenAI endpoint for tests/it_live.sh (python3 standard library).

  python3 bad_openai_server.py PORT MODE
MODE: hang (reads the request, never answers), status (503 with an OpenAI error body),
garbage (200 and an SSE data line that is not JSON), nodone (200, one good chunk, and
the stream ends without data: [DONE]). Prints "ready" once listening.
"""
import http.server
import sys
import time

PORT, MODE = int(sys.argv[1]), sys.argv[2]
CHUNK = b'data: {"id":"c","object":"text_completion","choices":[{"index":0,"text":" a"}]}\n\n'


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if MODE == "hang":
            time.sleep(30)
            return
        if MODE == "status":
            body = b'{"error":{"message":"overloaded","type":"ServiceUnavailable","param":null,"code":503}}'
            self.send_response(503)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        # chunked, as vLLM streams; the stream ends cleanly, just wrongly
        data = CHUNK if MODE == "nodone" else b"data: {not json\n\n"
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
        self.wfile.flush()


srv = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
srv.daemon_threads = True
print("ready", flush=True)
srv.serve_forever()
