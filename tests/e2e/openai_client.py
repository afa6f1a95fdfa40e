"""Drives Sable's OpenAI-compatible routes with the official `openai` SDK.

Usage: python3 openai_client.py <gateway URL> <API key>. Prints one JSON object of what
each step saw; tests/e2e/openai.rs asserts on it. Any SDK exception fails the run.
"""

import json
import sys

import httpx2
import openai


def chat_plain(client):
    completion = client.chat.completions.create(
        model="agent:default",
        messages=[{"role": "user", "content": "hello there"}],
    )
    return {
        "id": completion.id,
        "object": completion.object,
        "text": completion.choices[0].message.content,
        "finish_reason": completion.choices[0].finish_reason,
        "usage": completion.usage.model_dump() if completion.usage else None,
    }


def chat_stream(client):
    stream = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "stream these words please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish_reasons, usage, objects = [], [], None, set()
    for chunk in stream:
        objects.add(chunk.object)
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
        if chunk.usage:
            usage = chunk.usage.model_dump()
    return {
        "pieces": len(pieces),
        "text": "".join(pieces),
        "finish_reasons": finish_reasons,
        "usage": usage,
        "objects": sorted(objects),
    }


def chat_raw_stream_ends_with_done(url, key):
    """The SDK stops quietly without `[DONE]`; read the wire to see it."""
    body = {
        "model": "agent:default",
        "messages": [{"role": "user", "content": "raw stream"}],
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {key}"}
    data_lines = []
    with httpx2.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                data_lines.append(line[len("data: "):])
    return {"last_data": data_lines[-1] if data_lines else None, "data_lines": len(data_lines)}


def chat_session(client):
    """Two requests in one conversation (X-Sable-Conversation), then one by `user`."""
    headers = {"X-Sable-Conversation": "openai-e2e-thread"}
    first = client.chat.completions.with_raw_response.create(
        model="agent:default",
        messages=[{"role": "user", "content": "my name is Ada"}],
        extra_headers=headers,
    )
    second = client.chat.completions.with_raw_response.create(
        model="agent:default",
        messages=[
            {"role": "system", "content": "ignored on a continued session"},
            {"role": "user", "content": "my name is Ada"},
            {"role": "assistant", "content": first.parse().choices[0].message.content},
            {"role": "user", "content": "what is my name"},
        ],
        extra_headers=headers,
    )
    by_session = client.chat.completions.with_raw_response.create(
        model="agent:default",
        messages=[{"role": "user", "content": "third message"}],
        extra_headers={"X-Sable-Session": first.headers["x-sable-session-id"]},
    )
    return {
        "sessions": [
            first.headers["x-sable-session-id"],
            second.headers["x-sable-session-id"],
            by_session.headers["x-sable-session-id"],
        ],
        "texts": [
            first.parse().choices[0].message.content,
            second.parse().choices[0].message.content,
            by_session.parse().choices[0].message.content,
        ],
        "turns": [
            first.headers["x-sable-turn-id"],
            second.headers["x-sable-turn-id"],
            by_session.headers["x-sable-turn-id"],
        ],
    }


def chat_stateless(client):
    completion = client.chat.completions.with_raw_response.create(
        model="agent:default",
        messages=[
            {"role": "system", "content": "you are terse"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ],
    )
    return {
        "text": completion.parse().choices[0].message.content,
        "session": completion.headers["x-sable-session-id"],
    }


def chat_tool(client):
    completion = client.chat.completions.with_raw_response.create(
        model="agent:default",
        messages=[{"role": "user", "content": "what time is it #tool=time"}],
    )
    return {
        "text": completion.parse().choices[0].message.content,
        "turn": completion.headers["x-sable-turn-id"],
        "usage": completion.parse().usage.model_dump(),
    }


def errors(client, url):
    seen = {}
    try:
        client.chat.completions.create(model="agent:nobody", messages=[{"role": "user", "content": "hi"}])
    except openai.NotFoundError as error:
        seen["unknown_model"] = {"status": error.status_code, "body": error.body}
    try:
        client.chat.completions.create(
            model="agent:default",
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        )
    except openai.BadRequestError as error:
        seen["client_tools"] = {"status": error.status_code, "body": error.body}
    bad_key = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-not-a-key", max_retries=0)
    try:
        bad_key.models.list()
    except openai.AuthenticationError as error:
        seen["bad_key"] = {"status": error.status_code, "body": error.body}
    return seen


def models(client):
    return {"ids": [model.id for model in client.models.list()]}


def responses_two_step(client):
    first = client.responses.create(model="agent:default", input="remember the word cobalt")
    second = client.responses.create(
        model="agent:default",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "which word"}]}],
        previous_response_id=first.id,
    )
    return {
        "ids": [first.id, second.id],
        "texts": [first.output_text, second.output_text],
        "statuses": [first.status, second.status],
        "usage": second.usage.model_dump() if second.usage else None,
        "previous": second.previous_response_id,
        "retrieved": client.responses.retrieve(second.id).output_text,
    }


def responses_stream(client, previous_id):
    stream = client.responses.create(
        model="agent:default",
        input="stream a response",
        previous_response_id=previous_id,
        stream=True,
    )
    types, deltas, completed = [], [], None
    for event in stream:
        types.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            completed = {
                "id": event.response.id,
                "text": event.response.output_text,
                "usage": event.response.usage.model_dump() if event.response.usage else None,
            }
    return {"types": types, "text": "".join(deltas), "deltas": len(deltas), "completed": completed}


def main():
    url, key = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)
    results = {"sdk_version": openai.__version__}
    results["models"] = models(client)
    results["chat_plain"] = chat_plain(client)
    results["chat_stream"] = chat_stream(client)
    results["chat_raw_stream"] = chat_raw_stream_ends_with_done(url, key)
    results["chat_session"] = chat_session(client)
    results["chat_stateless"] = chat_stateless(client)
    results["chat_tool"] = chat_tool(client)
    results["errors"] = errors(client, url)
    results["responses"] = responses_two_step(client)
    results["responses_stream"] = responses_stream(client, results["responses"]["ids"][1])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
