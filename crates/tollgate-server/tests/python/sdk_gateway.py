"""Drives tollgate's gateway with the official OpenAI and Anthropic SDKs, unchanged but for
their base URL. Called by tests/gateway_sdk.rs: `sdk_gateway.py SCENARIO[,SCENARIO...]
BASE_URL`; prints one JSON object: what each scenario saw, by name."""

import json
import sys
import time

import anthropic
import openai

scenarios, base = sys.argv[1].split(","), sys.argv[2]
KEY = "sk-sdk-test-key-0000000000000001"
results = {}


def run(scenario):
    out = {}
    if scenario == "openai":
        c = openai.OpenAI(base_url=base + "/v1", api_key=KEY)
        r = c.chat.completions.create(model="gpt-4o", max_tokens=6, messages=[{"role": "user", "content": "hi"}])
        out["text"] = r.choices[0].message.content
        out["usage"] = r.usage.total_tokens
        chunks = list(c.chat.completions.create(model="gpt-4o", max_tokens=4, stream=True,
                                                messages=[{"role": "user", "content": "hi"}]))
        out["stream_text"] = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        out["stream_usage_chunks"] = sum(1 for ch in chunks if ch.usage is not None)
        out["stream_empty_choices"] = sum(1 for ch in chunks if not ch.choices)
        chunks = list(c.chat.completions.create(model="gpt-4o", max_tokens=4, stream=True,
                                                stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": "hi"}]))
        out["asked_usage"] = chunks[-1].usage.total_tokens if chunks[-1].usage else None
        e = c.embeddings.create(model="text-embedding-3-small", input="hello")
        out["embedding_len"] = len(e.data[0].embedding)
        out["models"] = [m.id for m in c.models.list()]
    elif scenario == "openai_legacy_and_responses":
        # Legacy completions and the Responses API, each streamed and not.
        c = openai.OpenAI(base_url=base + "/v1", api_key=KEY)
        r = c.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi", max_tokens=5)
        out["completion_text"] = r.choices[0].text
        out["completion_usage"] = [r.usage.prompt_tokens, r.usage.completion_tokens]
        chunks = list(c.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi", max_tokens=3,
                                           stream=True))
        out["completion_stream_text"] = "".join(ch.choices[0].text for ch in chunks if ch.choices)
        out["completion_stream_usage_chunks"] = sum(1 for ch in chunks if ch.usage is not None)
        out["completion_stream_empty_choices"] = sum(1 for ch in chunks if not ch.choices)
        chunks = list(c.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi", max_tokens=3,
                                           stream=True, stream_options={"include_usage": True}))
        out["completion_asked_usage"] = chunks[-1].usage.completion_tokens if chunks[-1].usage else None
        r = c.responses.create(model="gpt-4.1", input="hi", max_output_tokens=7)
        out["response_text"] = r.output_text
        out["response_usage"] = [r.usage.input_tokens, r.usage.output_tokens]
        events = list(c.responses.create(model="gpt-4.1", input=[{"role": "user", "content": "hi"}],
                                         max_output_tokens=2, stream=True))
        out["response_event_types"] = [e.type for e in events]
        out["response_stream_text"] = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        done = [e for e in events if e.type == "response.completed"]
        out["response_stream_usage"] = done[0].response.usage.output_tokens if done else None
    elif scenario == "anthropic":
        c = anthropic.Anthropic(base_url=base, api_key=KEY)
        m = c.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        out["text"] = m.content[0].text
        out["usage"] = m.usage.input_tokens + m.usage.output_tokens
        with c.messages.stream(model="claude-sonnet-4-5", max_tokens=3, messages=[{"role": "user", "content": "hi"}]) as s:
            out["stream_text"] = "".join(s.text_stream)
            final = s.get_final_message()
        out["stream_usage"] = final.usage.output_tokens
        out["count_tokens"] = c.messages.count_tokens(model="claude-sonnet-4-5",
                                                      messages=[{"role": "user", "content": "hi"}]).input_tokens
    elif scenario in ("openai_retry", "anthropic_retry"):
        # The second call is refused with retry-after-ms; the SDK waits that long and retries.
        # Every request sent and every answer received is timed on the wire (httpx's hooks).
        wire = []
        hooks = {
            "request": [lambda req: wire.append(("request", time.monotonic(), None, None))],
            "response": [lambda resp: wire.append(("response", time.monotonic(), resp.status_code,
                                                  resp.headers.get("retry-after-ms")))],
        }
        if scenario == "openai_retry":
            c = openai.OpenAI(base_url=base + "/v1", api_key=KEY + "r",
                              http_client=openai.DefaultHttpxClient(event_hooks=hooks))
            call = lambda: c.chat.completions.with_raw_response.create(  # noqa: E731
                model="gpt-4o", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
        else:
            c = anthropic.Anthropic(base_url=base, api_key=KEY + "s",
                                    http_client=anthropic.DefaultHttpxClient(event_hooks=hooks))
            call = lambda: c.messages.with_raw_response.create(  # noqa: E731
                model="claude-sonnet-4-5", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
        call()
        r = call()
        out["retries_taken"] = r.retries_taken
        out["status"] = r.status_code
        out["wire"] = [{"what": w, "at": t, "status": st, "retry_after_ms": ra} for (w, t, st, ra) in wire]
    elif scenario == "openai_quota":
        # A daily quota spent: the 429's retry-after is hours, beyond what the SDK waits for.
        sent = []
        c = openai.OpenAI(base_url=base + "/v1", api_key=KEY + "q",
                          http_client=openai.DefaultHttpxClient(event_hooks={"request": [lambda req: sent.append(1)]}))
        c.chat.completions.create(model="gpt-quota", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
        t0 = time.monotonic()
        try:
            c.chat.completions.create(model="gpt-quota", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
            out["status"] = 200
        except openai.RateLimitError as e:
            out["status"] = e.status_code
            out["retry_after"] = int(e.response.headers.get("retry-after"))
            out["code"] = e.code
        out["elapsed"] = time.monotonic() - t0
        out["sent"] = len(sent)
    elif scenario in ("openai_too_large", "anthropic_too_large"):
        sent = []
        hooks = {"request": [lambda req: sent.append(1)]}
        t0 = time.monotonic()
        try:
            if scenario == "openai_too_large":
                c = openai.OpenAI(base_url=base + "/v1", api_key=KEY + "t",
                                  http_client=openai.DefaultHttpxClient(event_hooks=hooks))
                c.chat.completions.create(model="gpt-4o", max_tokens=100000, messages=[{"role": "user", "content": "hi"}])
            else:
                c = anthropic.Anthropic(base_url=base, api_key=KEY + "t",
                                        http_client=anthropic.DefaultHttpxClient(event_hooks=hooks))
                c.messages.create(model="claude-sonnet-4-5", max_tokens=100000, stream=True,
                                  messages=[{"role": "user", "content": "hi"}])
            out["status"] = 200
        except (openai.APIStatusError, anthropic.APIStatusError) as e:
            out["status"] = e.status_code
            out["should_retry"] = e.response.headers.get("x-should-retry")
        out["elapsed"] = time.monotonic() - t0
        out["sent"] = len(sent)
    else:
        raise SystemExit(f"unknown scenario {scenario}")

    return out


for sc in scenarios:
    results[sc] = run(sc)
print(json.dumps(results))
