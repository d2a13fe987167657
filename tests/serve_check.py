"""serve_check.py - drives a running `egmla serve` and checks every answer
against `egmla generate` on the same requests (tests/e2e_serve.sh).

  serve_check.py api  URL BIN MODEL [generate options...]   everything
  serve_check.py load URL BIN MODEL N CONNS [generate options...]

Expected results come from one `generate` run over the same requests (same
seeds, same sampling), so a served answer must equal the batch one token
for token (compared as text, finish reason and token count). Standard
library only, plus the `openai` client when it can be imported."""
import concurrent.futures
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.parse

FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


class Server:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port, self.url = u.hostname, u.port, url

    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=120)

    def call(self, method, path, body=None, raw=None, headers=None, c=None):
        own = c is None
        c = c or self.conn()
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        c.request(method, path, body=data, headers=headers or {"Content-Type": "application/json"})
        r = c.getresponse()
        text = r.read().decode()
        if own:
            c.close()
        try:
            return r.status, json.loads(text), r
        except ValueError:
            return r.status, text, r

    def stream(self, path, body):
        """(status, chunks as dicts, saw [DONE])"""
        c = self.conn()
        c.request("POST", path, body=json.dumps(dict(body, stream=True)),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            return r.status, json.loads(r.read()), False
        chunks, done = [], False
        for line in r.read().decode().split("\n"):
            if line.startswith("data: [DONE]"):
                done = True
            elif line.startswith("data: "):
                chunks.append(json.loads(line[6:]))
        c.close()
        return r.status, chunks, done

    def metrics(self):
        _, text, _ = self.call("GET", "/metrics")
        m = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                m[k] = float(v)
        return m


def line_of(i, req):
    """The generate line for an API request (as the server builds it)."""
    out = {"id": i}
    if "messages" in req:
        out["messages"] = req["messages"]
    elif isinstance(req["prompt"], list):
        out["tokens"] = req["prompt"]
    else:
        out["prompt"] = req["prompt"]
    for k, v in (("max_tokens", "max_new_tokens"), ("temperature", "temperature"),
                 ("top_p", "top_p"), ("top_k", "top_k"), ("min_p", "min_p"),
                 ("repetition_penalty", "repetition_penalty"), ("seed", "seed"),
                 ("stop", "stop"), ("ignore_eos", "ignore_eos")):
        if k in req:
            out[v] = req[k]
    if isinstance(req.get("logprobs"), bool):
        out["logprobs"] = req.get("top_logprobs", 0) if req["logprobs"] else None
    elif "logprobs" in req:
        out["logprobs"] = req["logprobs"]
    return {k: v for k, v in out.items() if v is not None}


def generate(binary, model, extra, reqs):
    with tempfile.TemporaryDirectory() as d:
        with open(d + "/in.jsonl", "w") as f:
            for i, r in enumerate(reqs):
                f.write(json.dumps(line_of(i, r)) + "\n")
        subprocess.run([binary, "generate", "--model", model, "--input", d + "/in.jsonl",
                        "--out", d + "/out.jsonl"] + extra, check=False,
                       stderr=subprocess.DEVNULL)
        res = {}
        for line in open(d + "/out.jsonl"):
            o = json.loads(line)
            res[o["id"]] = o
        return [res.get(i) for i in range(len(reqs))]


def answer(resp):
    ch = resp["choices"][0]
    text = ch["message"]["content"] if "message" in ch else ch["text"]
    return text, ch["finish_reason"], resp["usage"]["completion_tokens"]


def same(resp, exp):
    return exp is not None and "error" not in exp and answer(resp) == (
        exp.get("text", ""), exp["finish_reason"], len(exp["tokens"]))


def requests_mix(n):
    prompts = ["In the beginning", "And the LORD said", "Blessed are", "Hello",
               "The", "And he went up", "Now these are the names", "Let"]
    out = []
    for i in range(n):
        r = {"prompt": prompts[i % len(prompts)] + " " * (i % 3), "max_tokens": 4 + i % 29,
             "seed": i, "temperature": [1.0, 0.7, 0.0][i % 3]}
        if i % 4 == 1:
            r["top_k"] = 20
        if i % 5 == 2:
            r["top_p"] = 0.9
        if i % 7 == 3:
            r = {"messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
                 "max_tokens": 4 + i % 17, "seed": i}
        out.append(r)
    return out


def path_of(r):
    return "/v1/chat/completions" if "messages" in r else "/v1/completions"


def load(srv, binary, model, extra, n, conns):
    reqs = requests_mix(n)
    exp = generate(binary, model, extra, reqs)

    def one(i):
        r = reqs[i]
        if i % 2:  # half of them streamed
            st, chunks, done = srv.stream(path_of(r), r)
            if st != 200 or not done:
                print("request %d: status %d, [DONE] %s, %r" % (i, st, done, chunks)[:300])
                return False
            text = "".join((c["choices"][0].get("delta", {}).get("content") or "")
                           if "delta" in c["choices"][0] else c["choices"][0]["text"]
                           for c in chunks if c.get("choices"))
            fin = chunks[-1]["choices"][0]["finish_reason"]
            ntok = chunks[-1]["usage"]["completion_tokens"]
            e = exp[i]
            good = e is not None and (text, fin, ntok) == (e.get("text", ""), e["finish_reason"],
                                                           len(e["tokens"]))
            if not good:
                print("request %d: streamed %r, expected %r" % (i, (text, fin, ntok), e))
            return good
        st, resp, _ = srv.call("POST", path_of(r), r)
        if st != 200 or not same(resp, exp[i]):
            print("request %d: %d %r, expected %r" % (i, st, resp, exp[i]))
            return False
        return True

    with concurrent.futures.ThreadPoolExecutor(conns) as ex:
        got = list(ex.map(one, range(n)))
    bad = [i for i, g in enumerate(got) if not g]
    check(not bad, "load: %d requests over %d connections (half streamed) equal generate's "
          "answers%s" % (n, conns, "" if not bad else "; differ: %s" % bad[:10]))
    # the scheduler publishes its load after the micro-batch whose results
    # these were: a bounded number of reads
    for _ in range(5000):
        m = srv.metrics()
        if m.get('egmla_running_sequences') == 0 and m.get("egmla_kv_blocks_used") == 0:
            break
    check(m.get('egmla_running_sequences') == 0 and m.get("egmla_kv_blocks_used") == 0,
          "load: afterwards no sequence runs and no KV block is held")


def stage_busy(srv, stages, n_layers):
    """After a load run: one busy fraction per stage, in [0, 1], the stages'
    layer ranges covering the model, and every stage's busy seconds > 0 (the
    scheduler reads the stages' answers when it goes idle: a bounded number
    of reads)."""
    def per_stage(m, name):
        return {k: v for k, v in m.items()
                if k.startswith(name + "{") and 'stage="pipeline"' not in k}
    for _ in range(5000):
        m = srv.metrics()
        busy = per_stage(m, "egmla_stage_busy_seconds_total")
        if len(busy) == stages and all(v > 0 for v in busy.values()):
            break
    frac = per_stage(m, "egmla_stage_busy_fraction")
    # stage i's layers start where stage i-1's end; the last ends at the top
    got = sorted(k[k.index("{") + 1:-1] for k in frac)
    ranges = [dict(kv.split("=") for kv in g.split(",")) for g in got]
    nxt, good = 0, len(ranges) == stages
    for i, r in enumerate(ranges if good else []):
        lo, hi = (int(x) for x in r["layers"].strip('"').split("-"))
        good = good and r["stage"] == '"%d"' % i and lo == nxt and hi >= lo
        nxt = hi + 1
    check(good and nxt == n_layers, "stage busy: one fraction line per stage (%d), their layer "
          "ranges covering the %d layers in order (got %s)" % (stages, n_layers, got))
    check(all(0 <= v <= 1 for v in frac.values()),
          "stage busy: every fraction in [0, 1] (%s)" % sorted(frac.values()))
    check(len(busy) == stages and all(v > 0 for v in busy.values()),
          "stage busy: every stage's busy seconds > 0 after the load (%s)" % busy)
    check('egmla_stage_busy_fraction{stage="pipeline"}' in m,
          "stage busy: the pipeline's fraction is still reported")


def basics(srv, binary, model, extra):
    st, body, _ = srv.call("GET", "/health")
    check(st == 200 and body["status"] == "ok", "GET /health answers ok")
    st, body, _ = srv.call("GET", "/v1/models")
    name = body["data"][0]["id"] if st == 200 else None
    check(st == 200 and body["object"] == "list" and name, "GET /v1/models lists the model")
    reqs = [
        {"prompt": "In the beginning", "max_tokens": 24, "seed": 3},
        {"prompt": "And the LORD said", "max_tokens": 30, "seed": 5, "temperature": 0.8,
         "top_k": 40, "top_p": 0.95, "min_p": 0.01, "repetition_penalty": 1.1},
        {"prompt": [5, 9, 100, 7], "max_tokens": 12, "seed": 1},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Who begat whom?"}], "max_tokens": 20, "seed": 2},
        {"prompt": "And God said", "max_tokens": 40, "seed": 9, "stop": [" the", "\n"]},
        {"prompt": "Blessed are", "max_tokens": 10, "seed": 4, "logprobs": 3},
        {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "seed": 6,
         "logprobs": True, "top_logprobs": 2},
        {"prompt": "Let there be", "max_tokens": 60, "seed": 8, "stop": "\n"},
    ]
    exp = generate(binary, model, extra, reqs)
    resps = []
    for i, r in enumerate(reqs):
        st, resp, _ = srv.call("POST", path_of(r), dict(r, model=name))
        resps.append(resp if st == 200 else None)
        check(st == 200 and same(resp, exp[i]),
              "%s %d equals generate's answer (%s)" % (path_of(r), i,
                                                       json.dumps(resp)[:160] if st != 200 else
                                                       "%r, %s" % answer(resp)[:2]))
        if st == 200:
            u = resp["usage"]
            check(u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and
                  u["prompt_tokens"] == exp[i]["stats"]["prompt_tokens"] if "stats" in exp[i]
                  else u["prompt_tokens"] > 0, "request %d: usage adds up" % i)
    # stop strings: excluded, finish_reason stop
    r4 = resps[4]
    if r4:
        check(r4["choices"][0]["finish_reason"] == "stop" and " the" not in
              r4["choices"][0]["text"] and "\n" not in r4["choices"][0]["text"],
              "stop: the text ends before the stop string, finish_reason stop")
    # log-probs, in the API's shapes
    r5, r6 = resps[5], resps[6]
    if r5:
        lp = r5["choices"][0]["logprobs"]
        check(lp and "".join(lp["tokens"]) == r5["choices"][0]["text"] and
              len(lp["token_logprobs"]) == len(lp["tokens"]) and
              all(len(t) == 3 for t in lp["top_logprobs"]) and
              all(x <= 0 for x in lp["token_logprobs"]),
              "completions logprobs: tokens spell the text, 3 alternatives each")
    if r6:
        lp = r6["choices"][0]["logprobs"]["content"]
        check("".join(t["token"] for t in lp) == r6["choices"][0]["message"]["content"] and
              all(len(t["top_logprobs"]) == 2 for t in lp),
              "chat logprobs: content tokens spell the message, 2 alternatives each")
    # echo
    st, resp, _ = srv.call("POST", "/v1/completions", dict(reqs[0], echo=True))
    check(st == 200 and resp["choices"][0]["text"] == reqs[0]["prompt"] + exp[0]["text"],
          "echo: the prompt comes first")
    # streaming: the chunks concatenate to the non-streamed text (how many
    # chunks depends on timing: tokens settled while the connection's thread
    # was not scheduled go out together, so the count is not asserted)
    for i in (0, 3, 4, 7):
        r = reqs[i]
        st, chunks, done = srv.stream(path_of(r), r)
        chat = "messages" in r
        text = "".join((c["choices"][0]["delta"].get("content") or "") if chat
                       else c["choices"][0]["text"] for c in chunks if c.get("choices"))
        obj = "chat.completion.chunk" if chat else "text_completion"
        check(st == 200 and done and resps[i] and text == answer(resps[i])[0] and
              chunks[-1]["choices"][0]["finish_reason"] == resps[i]["choices"][0]["finish_reason"]
              and all(c["object"] == obj for c in chunks) and len(chunks) >= 1,
              "stream %d: %d chunks concatenate to the non-streamed text, then [DONE]"
              % (i, len(chunks)))
    # streamed log-probs: the chunks' entries add up to the non-streamed ones
    if r5:
        st, chunks, done = srv.stream("/v1/completions", reqs[5])
        toks = [t for c in chunks if c.get("choices") and c["choices"][0]["logprobs"]
                for t in c["choices"][0]["logprobs"]["tokens"]]
        lps = [x for c in chunks if c.get("choices") and c["choices"][0]["logprobs"]
               for x in c["choices"][0]["logprobs"]["token_logprobs"]]
        want = r5["choices"][0]["logprobs"]
        check(st == 200 and done and toks == want["tokens"] and lps == want["token_logprobs"],
              "stream logprobs: the chunks' tokens and log-probs equal the non-streamed ones")
    return name


def errors(srv, name):
    cases = [
        ("/v1/completions", '{"prompt": ', 400, "malformed JSON"),
        ("/v1/completions", '[1, 2]', 400, "a body that is not an object"),
        ("/v1/completions", '{"prompt": "a", "temperature": "hot"}', 400, "a string temperature"),
        ("/v1/completions", '{"prompt": "a", "max_tokens": 1.5}', 400, "a fractional max_tokens"),
        ("/v1/completions", '{"prompt": "a", "top_p": 7}', 400, "top_p out of range"),
        ("/v1/completions", '{"prompt": 7}', 400, "a number as prompt"),
        ("/v1/completions", '{"prompt": "a", "stop": 3}', 400, "a number as stop"),
        ("/v1/completions", '{"prompt": "a", "n": 2}', 400, "n = 2"),
        ("/v1/completions", '{"prompt": [1, 99999]}', 400, "a token id past the vocabulary"),
        ("/v1/chat/completions", '{"messages": "hi"}', 400, "messages as a string"),
        ("/v1/completions", '{"prompt": "a", "model": "gpt-4"}', 404, "an unknown model"),
        ("/v1/nothing", '{}', 404, "an unknown endpoint"),
    ]
    for path, raw, code, what in cases:
        st, body, _ = srv.call("POST", path, raw=raw)
        check(st == code and isinstance(body, dict) and isinstance(body.get("error"), dict)
              and body["error"].get("message") and body["error"].get("type"),
              "%s: %d with an OpenAI error object (%s)" % (what, code,
                                                          str(body)[:100] if st != code else
                                                          body["error"]["message"][:70]))
    st, body, _ = srv.call("POST", "/v1/completions", raw='{"prompt": "%s"}' % ("a" * 70000))
    check(st == 413 and body["error"]["message"], "a body over --max-body: 413")
    st, body, _ = srv.call("GET", "/health")
    check(st == 200, "the server is still healthy after the bad requests")


def disconnect(srv):
    before = srv.metrics()
    s = socket.create_connection((srv.host, srv.port))
    body = json.dumps({"prompt": "And", "max_tokens": 480, "ignore_eos": True, "stream": True})
    s.sendall(("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               "Content-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
    got = b""
    while got.count(b"data: ") < 3:
        got += s.recv(4096)
    s.close()  # mid-stream
    # the scheduler drops it before its next micro-batch, then publishes
    # the freed slot and blocks: wait for both (a bounded number of
    # /metrics reads, no sleeping; the counter can move first)
    for _ in range(20000):
        m = srv.metrics()
        if (m['egmla_requests_total{outcome="cancelled"}'] > before[
                'egmla_requests_total{outcome="cancelled"}'] and
                m["egmla_running_sequences"] == 0 and m["egmla_kv_blocks_used"] == 0):
            break
    check(m['egmla_requests_total{outcome="cancelled"}'] ==
          before['egmla_requests_total{outcome="cancelled"}'] + 1,
          "disconnect mid-stream: the request counts as cancelled")
    check(m["egmla_running_sequences"] == 0 and m["egmla_kv_blocks_used"] == 0,
          "disconnect mid-stream: its slot and KV blocks are free (running %g, KV blocks %g)"
          % (m["egmla_running_sequences"], m["egmla_kv_blocks_used"]))
    check(m["egmla_generated_tokens_total"] - before["egmla_generated_tokens_total"] < 480,
          "disconnect mid-stream: it stopped before its 480 tokens")


def openai_client(srv, binary, model, extra, name):
    try:
        import openai
    except ImportError:
        print("SKIP the openai client checks: no openai module in %s" % sys.executable)
        return
    cl = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
    reqs = [{"prompt": "In the beginning", "max_tokens": 16, "seed": 11},
            {"messages": [{"role": "user", "content": "What is the capital of France?"}],
             "max_tokens": 16, "seed": 12}]
    exp = generate(binary, model, extra, reqs)
    c = cl.completions.create(model=name, **reqs[0])
    check(c.choices[0].text == exp[0]["text"] and c.usage.completion_tokens == len(exp[0]["tokens"]),
          "openai client: completions.create equals generate")
    c = cl.chat.completions.create(model=name, **reqs[1])
    check(c.choices[0].message.content == exp[1]["text"] and c.choices[0].message.role == "assistant",
          "openai client: chat.completions.create equals generate")
    s = cl.chat.completions.create(model=name, stream=True, **reqs[1])
    text = "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)
    check(text == exp[1]["text"], "openai client: a streamed chat concatenates to generate's text")
    s = cl.completions.create(model=name, stream=True, **reqs[0])
    text = "".join(ch.choices[0].text for ch in s if ch.choices)
    check(text == exp[0]["text"], "openai client: a streamed completion concatenates to generate's text")
    models = [m.id for m in cl.models.list()]
    check(models == [name], "openai client: models.list")
    try:
        cl.completions.create(model="no-such-model", prompt="a")
        check(False, "openai client: an unknown model raises NotFoundError")
    except openai.NotFoundError:
        check(True, "openai client: an unknown model raises NotFoundError")
    try:
        cl.completions.create(model=name, prompt="a", temperature="x")
        check(False, "openai client: a bad field raises BadRequestError")
    except openai.BadRequestError:
        check(True, "openai client: a bad field raises BadRequestError")


def main():
    mode, url, binary, model = sys.argv[1:5]
    srv = Server(url)
    if mode == "load":
        n, conns = int(sys.argv[5]), int(sys.argv[6])
        load(srv, binary, model, sys.argv[7:], n, conns)
    elif mode == "stages":
        stage_busy(srv, int(sys.argv[5]), int(sys.argv[6]))
    else:
        extra = sys.argv[5:]
        name = basics(srv, binary, model, extra)
        errors(srv, name)
        disconnect(srv)
        openai_client(srv, binary, model, extra, name)
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
