"""One client process of the gateway's exactness test (tests/gateway_exactness.rs): N concurrent
streamed chat completions of random sizes with the official OpenAI SDK, spread over the two
instances' base URLs. Prints "ready", waits for a line on stdin (so that every process starts
at once), then prints one JSON line with what happened."""

import asyncio
import json
import random
import sys

import openai

base_a, base_b, n, seed, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rnd = random.Random(seed)
clients = [openai.AsyncOpenAI(base_url=b + "/v1", api_key=key, max_retries=0, timeout=180)
           for b in (base_a, base_b)]
WORDS = ["alpha", "beta", "gamma", "delta", "übung", "数据", "поток", "token", "x", "limit"]


async def one(i):
    words = rnd.randint(1, 120)
    text = " ".join(rnd.choice(WORDS) for _ in range(words))
    max_tokens = rnd.randint(5, 120)
    stream = await clients[i % 2].chat.completions.create(
        model="gpt-4o", max_tokens=max_tokens, stream=True,
        messages=[{"role": "user", "content": text}])
    chunks = 0
    async for ch in stream:
        if ch.choices and ch.choices[0].delta.content:
            chunks += 1
    return chunks


async def main():
    results = await asyncio.gather(*[one(i) for i in range(n)], return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    print(json.dumps({"ok": n - len(errors), "errors": errors[:5]}), flush=True)


print("ready", flush=True)
sys.stdin.readline()
asyncio.run(main())
