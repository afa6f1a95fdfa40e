"""Drives the gateway's /mcp with the official MCP Python SDK (tests/e2e/mcp_server.rs).

Usage: mcp_client.py GATEWAY_URL KEY OTHER_ORG_KEY. Prints one JSON object of what the
SDK saw: tools, a call and a continued call, the session as a resource, a prompt, and
what the other org's key sees of the first org's session.
"""

import asyncio
import json
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


async def session_of(url, key, stack):
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    await stack.enter_async_context(http)
    streams = await stack.enter_async_context(streamable_http_client(f"{url}/mcp", http_client=http))
    read, write = streams[0], streams[1]
    session = await stack.enter_async_context(ClientSession(read, write))
    initialized = await session.initialize()
    return session, initialized


def call_json(result):
    return {
        "is_error": bool(result.is_error),
        "text": [block.text for block in result.content if getattr(block, "type", "") == "text"],
        "structured": result.structured_content,
    }


async def main(url, key, other_key):
    import contextlib

    seen = {}
    async with contextlib.AsyncExitStack() as stack:
        session, initialized = await session_of(url, key, stack)
        seen["server"] = initialized.server_info.name
        seen["protocol"] = initialized.protocol_version
        seen["tools"] = sorted(tool.name for tool in (await session.list_tools()).tools)
        first = call_json(await session.call_tool("ask_default", {"message": "hello from python"}))
        seen["first"] = first
        session_id = (first["structured"] or {}).get("session_id")
        seen["second"] = call_json(
            await session.call_tool("ask_default", {"message": "more", "session_id": session_id})
        )
        uri = f"sable://sessions/{session_id}"
        seen["resources"] = [str(resource.uri) for resource in (await session.list_resources()).resources]
        read = await session.read_resource(uri)
        seen["history"] = json.loads(read.contents[0].text)
        prompt = await session.get_prompt("default")
        seen["prompt"] = prompt.messages[0].content.text

        other, _ = await session_of(url, other_key, stack)
        seen["other_tools"] = sorted(tool.name for tool in (await other.list_tools()).tools)
        seen["other_resources"] = [str(resource.uri) for resource in (await other.list_resources()).resources]
        try:
            await other.read_resource(uri)
            seen["other_read"] = "read"
        except Exception as error:  # the SDK raises McpError for a JSON-RPC error
            seen["other_read"] = f"{type(error).__name__}: {error}"
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
