"""chat_templates.py - expected renderings of real chat templates, by jinja2.

Renders every tests/fixtures/chat_templates/*.jinja (the chat_template strings
published with the models the file names; *-gguf ones are as stored in GGUF
files, string escapes already decoded) over a set of conversations, the way
transformers' apply_chat_template does (sandboxed jinja2, trim_blocks,
lstrip_blocks, raise_exception), and writes expected.json next to them:
[{"template", "bos", "eos", "add_generation_prompt", "messages",
  "output" | "error"}]. tests/test_chat_template.c renders the same cases in C
and compares byte for byte, so make test needs no Python.

    python3 reference/chat_templates.py      # needs jinja2
"""
import glob
import json
import os

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                    "tests", "fixtures", "chat_templates")

# bos / eos text of each model's tokenizer (what {{ bos_token }} writes)
SPECIAL = {
    "smollm2-135m-instruct": ("<|im_start|>", "<|im_end|>"),
    "openhermes-2.5-mistral-7b": ("<s>", "<|im_end|>"),
    "qwen2.5-7b-instruct": ("", "<|im_end|>"),
    "qwen2-instruct-gguf": ("<|endoftext|>", "<|endoftext|>"),
    "phi-3-mini-4k-instruct-gguf": ("<s>", "<|endoftext|>"),
    "meta-llama-3-8b-instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "meta-llama-3-8b-instruct-first-release": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama-3.1-8b-instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama-2-13b-chat": ("<s>", "</s>"),
    "mistral-7b-instruct-v0.1": ("<s>", "</s>"),
    "mixtral-8x7b-instruct-v0.1": ("<s>", "</s>"),
    "gemma-7b-it": ("<bos>", "<eos>"),
    "gemma-2-2b-it": ("<bos>", "<eos>"),
    "phi-3-mini-4k-instruct-2024-04": ("<s>", "<|endoftext|>"),
    "phi-3.5-mini-instruct": ("<s>", "<|endoftext|>"),
    "zephyr-7b-beta": ("<s>", "</s>"),
}


def m(role, content):
    return {"role": role, "content": content}


SYS = m("system", "You are a helpful assistant.")
CONVERSATIONS = [
    [m("user", "What is the capital of France?")],
    [SYS, m("user", "What is the capital of France?")],
    [SYS, m("user", "Hello"), m("assistant", "Hi there"), m("user", "Who are you"),
     m("assistant", "   I am an assistant   "), m("user", "Another question")],
    [m("user", "Hello"), m("assistant", "Hi there"), m("user", "Bye")],
    [m("user", "")],
    [m("system", ""), m("user", "hi")],
    [m("user", "  H\u00e9llo, \u4e16\u754c!\n\n"), m("assistant", "\tok\u3000")],
    [SYS, m("user", "Hello"), m("assistant", "Hi")],
    [m("user", "one"), m("user", "two")],
    [m("assistant", "I start")],
    [m("user", "a"), m("assistant", "b"), m("system", "late system"), m("user", "c")],
    [m("system", "  padded system \n"), m("user", "q")],
]


class TemplateError(Exception):
    pass


def raise_exception(msg):
    raise TemplateError(msg)


def render(src, bos, eos, messages, gen):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, indent=indent)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(src).render(messages=messages, add_generation_prompt=gen,
                                       bos_token=bos, eos_token=eos)


def main():
    cases = []
    for path in sorted(glob.glob(os.path.join(HERE, "*.jinja"))):
        name = os.path.basename(path)[:-len(".jinja")]
        bos, eos = SPECIAL[name]
        src = open(path, encoding="utf-8").read()
        for conv in CONVERSATIONS:
            for gen in (True, False):
                c = {"template": name, "bos": bos, "eos": eos,
                     "add_generation_prompt": gen, "messages": conv}
                try:
                    c["output"] = render(src, bos, eos, conv, gen)
                except TemplateError as e:
                    c["error"] = str(e)
                cases.append(c)
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"{len(cases)} cases from {len(glob.glob(os.path.join(HERE, '*.jinja')))} templates")


if __name__ == "__main__":
    main()
