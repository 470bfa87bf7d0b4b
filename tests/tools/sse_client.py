"""An independent OpenAI client for it_serve.sh (python3 standard library only): reads
the SSE stream of /v1/completions and /v1/chat/completions from one pod and checks the
chunk format, the [DONE] terminator and the usage counts against the pod's /tokenize.

    python3 tests/tools/sse_client.py HOST:PORT MODEL
Exit 0 when every check holds; prints the first failure and exits 1 otherwise."""
import http.client
import json
import sys

HOST, MODEL = sys.argv[1], sys.argv[2]


def post(path, body):
    c = http.client.HTTPConnection(HOST, timeout=30)
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    return c.getresponse()


def check(cond, what):
    if not cond:
        print("FAIL", what)
        sys.exit(1)


def events(resp):
    """The data: payloads of an SSE stream, in order."""
    out = []
    for raw in resp.read().decode().split("\n\n"):
        if not raw.strip():
            continue
        check(raw.startswith("data: "), "an SSE event that is not 'data: ...': %r" % raw[:80])
        out.append(raw[len("data: "):])
    return out


def prompt_count(body):
    r = post("/tokenize", body)
    check(r.status == 200, "/tokenize status %d" % r.status)
    t = json.loads(r.read())
    check(t["count"] == len(t["tokens"]), "/tokenize count != len(tokens)")
    return t["count"]


def stream(path, body, chat, n_out):
    n_prompt = prompt_count({"model": MODEL, "messages": body["messages"]} if chat else {"model": MODEL, "prompt": body["prompt"]})
    r = post(path, dict(body, stream=True, stream_options={"include_usage": True}, max_tokens=n_out))
    check(r.status == 200, "%s status %d" % (path, r.status))
    check(r.getheader("Content-Type", "").startswith("text/event-stream"), "content type")
    ev = events(r)
    check(ev[-1] == "[DONE]", "the stream ends with data: [DONE]")
    chunks = [json.loads(e) for e in ev[:-1]]
    obj = "chat.completion.chunk" if chat else "text_completion"
    ids = {c["id"] for c in chunks}
    check(len(ids) == 1, "one id across the stream")
    check(all(c["object"] == obj and c["model"] == MODEL and isinstance(c["created"], int) for c in chunks),
          "every chunk is a %s of %s" % (obj, MODEL))
    usage = chunks[-1]
    check(usage["choices"] == [] and set(usage["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"},
          "the last chunk carries only usage")
    u = usage["usage"]
    check(u["prompt_tokens"] == n_prompt, "usage.prompt_tokens %d == /tokenize count %d" % (u["prompt_tokens"], n_prompt))
    check(u["completion_tokens"] == n_out and u["total_tokens"] == n_prompt + n_out, "usage completion/total")
    body_chunks = chunks[:-1]
    if chat:
        first = body_chunks.pop(0)
        check(first["choices"][0]["delta"] == {"role": "assistant", "content": ""}, "the first chat chunk gives the role")
        texts = [c["choices"][0]["delta"]["content"] for c in body_chunks]
    else:
        check(all(c["usage"] is None for c in body_chunks), "completion chunks carry usage: null")
        texts = [c["choices"][0]["text"] for c in body_chunks]
    check(len(texts) == n_out and all(isinstance(t, str) and t for t in texts), "one non-empty text chunk per token")
    fins = [c["choices"][0]["finish_reason"] for c in body_chunks]
    check(fins == [None] * (n_out - 1) + ["length"], "finish_reason null until the last chunk, then length")
    return "".join(texts)


def whole(path, body, chat, n_out):
    r = post(path, dict(body, max_tokens=n_out))
    check(r.status == 200, "%s status %d" % (path, r.status))
    j = json.loads(r.read())
    check(j["object"] == ("chat.completion" if chat else "text_completion"), "object of a whole response")
    ch = j["choices"][0]
    text = ch["message"]["content"] if chat else ch["text"]
    check(ch["finish_reason"] == "length" and isinstance(text, str), "finish_reason length")
    check(j["usage"]["completion_tokens"] == n_out, "usage.completion_tokens")
    return j


comp = {"model": MODEL, "prompt": "the cat sat on the mat and then it ran away"}
chat = {"model": MODEL, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]}
stream("/v1/completions", comp, False, 7)
stream("/v1/chat/completions", chat, True, 5)
whole("/v1/completions", comp, False, 4)
whole("/v1/chat/completions", chat, True, 3)
r = post("/v1/completions", {"model": "no-such-model", "prompt": "x"})
e = json.loads(r.read())
check(r.status == 404 and e["error"]["type"] == "NotFoundError" and e["error"]["code"] == 404, "unknown model: 404 error body")
r = post("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 10 ** 6})
e = json.loads(r.read())
check(r.status == 400 and e["error"]["type"] == "BadRequestError" and "maximum context length" in e["error"]["message"],
      "too long: 400 with vLLM's message")
print("ok")
