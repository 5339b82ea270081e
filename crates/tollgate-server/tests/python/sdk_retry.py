"""The official openai SDK as a client of tollgate's own /v1/check: a 429 is retried after
the wait tollgate names (retry-after-ms), and a call that can never fit (413 with
x-should-retry: false) is not retried. Prints what it saw as JSON.

Usage: sdk_retry.py BASE_URL   (BASE_URL such as http://127.0.0.1:8080/v1)
"""

import json
import sys
import time

import httpx
import openai

base = sys.argv[1]
seen = []


def on_request(request):
    seen.append({"event": "request", "at": time.monotonic()})


def on_response(response):
    seen.append(
        {
            "event": "response",
            "at": time.monotonic(),
            "status": response.status_code,
            "retry_after": response.headers.get("retry-after"),
            "retry_after_ms": response.headers.get("retry-after-ms"),
            "should_retry": response.headers.get("x-should-retry"),
        }
    )


http = httpx.Client(event_hooks={"request": [on_request], "response": [on_response]})
client = openai.OpenAI(base_url=base, api_key="unused", http_client=http, max_retries=2)


def check(tokens):
    body = {"subject": {"tenant": "sdk", "provider": "openai"}, "cost": {"tokens": tokens}}
    try:
        answer = client.post("/check", cast_to=object, body=body)
        return {"status": 200, "answer": answer}
    except openai.APIStatusError as e:
        return {"status": e.status_code, "answer": e.body}


out = {}
# One call per 5 s: the first is admitted, the second is denied and retried by the SDK.
out["first"] = check(1)
seen.clear()
out["second"] = check(1)
out["second_seen"] = list(seen)
seen.clear()
# More tokens than the bucket holds: 413, never retried.
out["too_large"] = check(1_000_000)
out["too_large_seen"] = list(seen)
print(json.dumps(out))
