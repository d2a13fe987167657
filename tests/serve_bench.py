"""serve_bench.py - egmla serve against egmla generate on the same requests.

  python3 tests/serve_bench.py [--bin bin/egmla] [--model DIR|GGUF]
      [--requests 64] [--clients 16] [--max-tokens 128] [--rounds 2]
      [-- engine options for both]

Each round runs generate over the requests (its own summary line gives the
generated tokens/s of its scheduling loop, model loading excluded), then a
server on a free loopback port with the same engine options, driven by
`clients` concurrent streaming clients (standard library http.client) until
every request is answered: generated tokens over the wall time from the
first request sent to the last [DONE]. Rounds alternate A/B so a busy
machine hurts both alike. Prints a Markdown table (docs/BENCHMARKS.md):
tokens/s of each, their ratio, and the time to first token (median, p90)."""
import argparse
import concurrent.futures
import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time

PROMPTS = ["In the beginning", "And the LORD said unto Moses", "Blessed are the",
           "Now these are the names", "And he went up", "Hello", "Let there be", "The"]


def requests(n, max_tokens):
    return [{"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "seed": i,
             "ignore_eos": True, "temperature": 0.8} for i in range(n)]


def run_generate(a, reqs, extra):
    with tempfile.TemporaryDirectory() as d:
        with open(d + "/in.jsonl", "w") as f:
            for i, r in enumerate(reqs):
                f.write(json.dumps({"id": i, "prompt": r["prompt"], "max_new_tokens": r["max_tokens"],
                                    "seed": r["seed"], "ignore_eos": True,
                                    "temperature": r["temperature"]}) + "\n")
        p = subprocess.run([a.bin, "generate", "--model", a.model, "--input", d + "/in.jsonl",
                            "--out", d + "/out.jsonl"] + extra, capture_output=True, text=True)
        m = re.search(r"([0-9.]+) generated tok/s", p.stderr)
        if not m:
            sys.exit("generate failed: " + p.stderr[-500:])
        return float(m.group(1))


def one_stream(port, r):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body=json.dumps(dict(r, stream=True)),
              headers={"Content-Type": "application/json"})
    resp = c.getresponse()
    ttft, ntok, buf = None, 0, b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if ev.startswith(b"data: [DONE]"):
                continue
            o = json.loads(ev[6:])
            if ttft is None and o["choices"] and o["choices"][0]["text"]:
                ttft = time.perf_counter() - t0
            if "usage" in o:
                ntok = o["usage"]["completion_tokens"]
    c.close()
    return ttft if ttft is not None else time.perf_counter() - t0, ntok


def run_serve(a, reqs, extra):
    p = subprocess.Popen([a.bin, "serve", "--model", a.model, "--port", "0"] + extra,
                         stderr=subprocess.PIPE, text=True)
    port = None
    for line in p.stderr:
        m = re.search(r"listening on http://[^:]+:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        sys.exit("the server did not start")
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(a.clients) as ex:
        res = list(ex.map(lambda r: one_stream(port, r), reqs))
    el = time.perf_counter() - t0
    p.terminate()
    p.communicate()
    toks = sum(n for _, n in res)
    ttfts = sorted(t for t, _ in res)
    return toks / el, statistics.median(ttfts), ttfts[int(0.9 * (len(ttfts) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="bin/egmla")
    ap.add_argument("--model", default="models/egmla-tiny")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    a, extra = ap.parse_known_args()
    extra = [x for x in extra if x != "--"]
    reqs = requests(a.requests, a.max_tokens)
    print("| round | generate tok/s | serve tok/s (%d streaming clients) | serve / generate "
          "| TTFT median | TTFT p90 |" % a.clients)
    print("|---|---|---|---|---|---|")
    for k in range(a.rounds):
        g = run_generate(a, reqs, extra)
        s, med, p90 = run_serve(a, reqs, extra)
        print("| %d | %.0f | %.0f | %.2f | %.0f ms | %.0f ms |" % (k + 1, g, s, s / g, med * 1e3,
                                                                  p90 * 1e3), flush=True)


if __name__ == "__main__":
    main()
