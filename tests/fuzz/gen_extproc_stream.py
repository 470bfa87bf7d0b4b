#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_extproc_stream (tests/fuzz/corpus/extproc_stream/):
whole ext-proc streams as Envoy sends them, in the harness's input format (an options
byte, then a length-delimited stream: varint lengths, each followed by one
ProcessingRequest in protobuf wire format; a zero length is a half-close). Hand-encoded from live/proto/ext_proc.proto
so that no protobuf package is needed. Run it from the repository root."""
import os

OUT = "tests/fuzz/corpus/extproc_stream"


def varint(n):
    b = bytearray()
    while True:
        if n < 0x80:
            b.append(n)
            return bytes(b)
        b.append(n & 0x7F | 0x80)
        n >>= 7


def ld(field, payload):          # length-delimited field
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def vi(field, n):                # varint field
    return varint(field << 3) + varint(n)


def headers(pairs, eos=False):   # HttpHeaders{HeaderMap{HeaderValue{key, raw_value}}}
    hm = b"".join(ld(1, ld(1, k.encode()) + ld(3, v.encode())) for k, v in pairs)
    return ld(1, hm) + (vi(3, 1) if eos else b"")


def body(data, eos):             # HttpBody
    return ld(1, data) + (vi(2, 1) if eos else b"")


def req_headers(pairs, eos=False, proto=None, metadata=None):
    m = ld(2, headers(pairs, eos))
    if metadata is not None:
        m += ld(8, metadata)
    if proto is not None:
        m += ld(11, proto)
    return m


def protocol(req_mode, resp_mode, without_waiting=False):
    return vi(1, req_mode) + vi(2, resp_mode) + (vi(3, 1) if without_waiting else b"")


def subset_hint(endpoints):      # Metadata{"envoy.lb.subset_hint": Struct{key: Value{string}}}
    value = ld(3, ",".join(endpoints).encode())
    entry = ld(1, b"x-gateway-destination-endpoint-subset") + ld(2, value)
    struct_ = ld(1, entry)
    return ld(1, ld(1, b"envoy.lb.subset_hint") + ld(2, struct_))


def stream(opts, msgs):
    out = bytearray([opts])
    for m in msgs:
        m = m or b""             # None: half-close
        out += varint(len(m)) + m
    return bytes(out)


REQ = [(":method", "POST"), (":path", "/v1/completions"), ("content-type", "application/json"),
       ("x-request-id", "r1")]
COMPLETION = b'{"model":"m","prompt":"Hello, how are you today?","max_tokens":8}'
TOKENS = b'{"model":"m","prompt":[' + b",".join(str(i).encode() for i in range(1, 100)) + b"]}"
CHAT = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
RESP_H = [(":status", "200"), ("content-type", "application/json")]
SSE_H = [(":status", "200"), ("content-type", "text/event-stream")]
USAGE = b'{"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}'
SSE = b'data: {"choices":[]}\n\ndata: {"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\ndata: [DONE]\n\n'

SEEDS = {
    "streamed_full": stream(0, [
        req_headers(REQ, proto=protocol(4, 4)),
        ld(4, body(COMPLETION[:20], False)), ld(4, body(COMPLETION[20:], True)),
        ld(3, headers(RESP_H)), ld(5, body(USAGE, True)), None]),
    "streamed_tokens_objective": stream(4, [
        req_headers(REQ + [("x-gateway-inference-objective", "chat"),
                           ("x-gateway-inference-fairness-id", "tenant")]),
        ld(4, body(TOKENS, True)), ld(3, headers(SSE_H)), ld(5, body(SSE[:30], False)),
        ld(5, body(SSE[30:], True))]),
    "buffered": stream(2, [
        req_headers(REQ, proto=protocol(2, 2)), ld(4, body(COMPLETION, True)),
        ld(3, headers(RESP_H)), ld(5, body(USAGE, True))]),
    "buffered_partial_no_wait": stream(0, [
        req_headers(REQ, proto=protocol(3, 3, True)), ld(4, body(CHAT, True))]),
    "trailers": stream(0, [
        req_headers(REQ), ld(4, body(COMPLETION, False)), ld(6, ld(1, b"")),
        ld(3, headers(SSE_H)), ld(5, body(SSE, False)), ld(7, ld(1, b""))]),
    "subset_hint": stream(0, [
        req_headers(REQ, metadata=subset_hint(["10.0.0.2:8000", "10.0.0.9:8000"])),
        ld(4, body(COMPLETION, True))]),
    "subset_empty": stream(0, [req_headers(REQ, metadata=subset_hint([])), ld(4, body(COMPLETION, True))]),
    "rewrite_header": stream(16, [
        req_headers(REQ + [("x-gateway-model-name-rewrite", "other")]), ld(4, body(COMPLETION, True))]),
    "shed_saturated": stream(12, [
        req_headers(REQ + [("x-gateway-inference-objective", "low")]), ld(4, body(COMPLETION, True))]),
    "headers_only_get": stream(0, [req_headers([(":method", "GET"), (":path", "/v1/models")], eos=True)]),
    "bad_json": stream(0, [req_headers(REQ), ld(4, body(b'{"model":"m","prompt":', True))]),
    "body_too_large": stream(1, [req_headers(REQ), ld(4, body(b"x" * 5000, True))]),
    "undecodable": stream(0, [req_headers(REQ), b"\xff\xff\xff"]),
}

os.makedirs(OUT, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
