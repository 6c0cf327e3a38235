"""An OpenAI-compatible chat-completions server for framefusion's caption tests.

It checks every request strictly (path, key, model, prompt, temperature, max_tokens, the
number of images, that each is a JPEG data URL of the expected size) and answers with
text that depends on the pixels of the first image, so
a caption tells which frames were sent (the hash of the first JPEG's bytes). It injects latency and, for a chosen share of
clips, one 503 before answering; it records every request's start and end, how many
were in flight, and how many answers each clip got. GET /stats returns the record.

    python chat_server.py MODEL PROMPT KEY FRAMES WIDTH HEIGHT LATENCY_MS FAIL_PERCENT

prints its port on the first line of stdout, then serves until killed.
"""
import base64, hashlib, io, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from PIL import Image

MODEL, PROMPT, KEY = sys.argv[1], sys.argv[2], sys.argv[3]
FRAMES, WIDTH, HEIGHT = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
LATENCY, FAIL = int(sys.argv[7]) / 1000.0, int(sys.argv[8])
lock = threading.Lock()
state = {"in_flight": 0, "max_in_flight": 0, "events": [], "answers": {}, "failed_once": [],
         "bad": [], "requests": 0}


def check(headers, body):
    if KEY and headers.get("Authorization") != "Bearer " + KEY:
        return 401, "wrong or missing Authorization"
    if not KEY and headers.get("Authorization"):
        return 401, "a key was sent where none is set"
    if body.get("model") != MODEL:
        return 404, "The model `%s` does not exist." % body.get("model")
    if body.get("temperature") != 0:
        return 400, "temperature %r" % body.get("temperature")
    if not isinstance(body.get("max_tokens"), int):
        return 400, "max_tokens %r" % body.get("max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or len(messages) != 1 or messages[0].get("role") != "user":
        return 400, "messages must be one user message"
    content = messages[0].get("content")
    if not isinstance(content, list) or len(content) != 1 + FRAMES:
        return 400, "content must be the prompt and %d images" % FRAMES
    if content[0] != {"type": "text", "text": PROMPT}:
        return 400, "prompt %r" % content[0]
    pixels = []
    for part in content[1:]:
        url = part.get("image_url", {}).get("url", "") if part.get("type") == "image_url" else ""
        prefix = "data:image/jpeg;base64,"
        if not url.startswith(prefix):
            return 400, "an image is not a JPEG data URL"
        jpeg = base64.b64decode(url[len(prefix):])
        image = Image.open(io.BytesIO(jpeg))
        if image.format != "JPEG" or image.size != (WIDTH, HEIGHT):
            return 400, "image %s %s, expected JPEG %dx%d" % (image.format, image.size, WIDTH, HEIGHT)
        # the encoded bytes stand for the pixels (framefusion's encoder is deterministic);
        # decoding every picture here made this server the bottleneck it measures
        pixels.append(jpeg)
    return pixels


class Handler(BaseHTTPRequestHandler):
    # keep-alive: a client's connections are reused, as a model server's are
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        target = int(self.path.split("target=")[1]) if "target=" in self.path else None
        with lock:
            events = list(state["events"])
            out = {k: state[k] for k in ("max_in_flight", "answers", "failed_once", "bad", "requests")}
        out["busy"] = busy(events, target)
        self.answer(200, out)

    def do_POST(self):
        # a request is in flight from its arrival until its answer is about to be sent
        # (so a client's next request never overlaps the one it follows)
        started = time.monotonic()
        with lock:
            state["in_flight"] += 1
            state["requests"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
            state["events"].append((started, 1))
        try:
            status, payload = self.serve()
        finally:
            with lock:
                state["in_flight"] -= 1
                state["events"].append((time.monotonic(), -1))
        self.answer(status, payload)

    def serve(self):
        if self.path != "/v1/chat/completions":
            return 404, {"error": "no such path " + self.path}
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        checked = check(self.headers, body)
        if isinstance(checked, tuple):
            status, message = checked
            with lock:
                state["bad"].append(message)
            return status, {"error": message}
        clip = hashlib.sha1(checked[0]).hexdigest()[:12]
        time.sleep(LATENCY)
        with lock:
            fail = int(clip, 16) % 100 < FAIL and clip not in state["failed_once"]
            if fail:
                state["failed_once"].append(clip)
        if fail:
            return 503, {"error": "overloaded, try again"}
        with lock:
            state["answers"][clip] = state["answers"].get(clip, 0) + 1
        return 200, {"choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": "clip " + clip}}]}


def busy(events, target):
    """The share of the time from the first request to the last answer during which at
    least `target` requests (default: the most ever seen at once) were in flight."""
    if not events:
        return 0.0
    events = sorted(events)
    peak = 0
    level = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    target = target or peak
    level, full, since = 0, 0.0, None
    for t, d in events:
        if level >= target and since is not None:
            full += t - since
        level += d
        since = t
    total = events[-1][0] - events[0][0]
    return full / total if total > 0 else 0.0


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
