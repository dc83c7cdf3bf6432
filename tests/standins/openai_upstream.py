"""A stand-in OpenAI-compatible server: it echoes the last user message back, cut into
pieces, as a stream or whole. Plain ASGI on uvicorn, so it costs next to nothing.

Used where the real thing cannot serve the purpose: vLLM (which needs a GPU), and a
responder cheap enough that a benchmark measures the gateway's cost, not the model's.
Run as a script it takes vLLM's flags (--port, --api-key, --served-model-name and the
rest, ignored) and records its command line and HF_TOKEN in $STANDIN_RECORD.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from tests.standins import Receive, Scope, Send, read_body, send_json


def app_for(
    model: str = "stand-in", api_key: str | None = None, piece: int = 3, delay: float = 0
) -> Any:
    """`delay`: seconds before a stream's response starts, as a loading model's would."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        body = await read_body(receive)
        if path == "/health":
            return await send_json(send, 200, {})
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        if api_key is not None and auth != f"Bearer {api_key}":
            return await send_json(send, 401, {"error": {"message": "bad key", "type": "auth"}})
        if path == "/v1/models":
            return await send_json(
                send,
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": model, "object": "model", "created": 0, "owned_by": "stand-in"}
                    ],
                },
            )
        if path != "/v1/chat/completions":
            return await send_json(send, 404, {"error": {"message": f"no route {path}"}})
        request = json.loads(body)
        text = request["messages"][-1]["content"]
        pieces = [text[i : i + piece] for i in range(0, len(text), piece)] or [""]
        if not request.get("stream"):
            return await send_json(send, 200, _whole(model, text, len(pieces)))
        await asyncio.sleep(delay)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for n, p in enumerate(pieces):
            await send(
                {
                    "type": "http.response.body",
                    "more_body": True,
                    "body": _event(
                        _chunk(model, {"content": p} if n else {"role": "assistant", "content": p})
                    ),
                }
            )
        await send(
            {
                "type": "http.response.body",
                "more_body": True,
                "body": _event(_chunk(model, {}, "stop")),
            }
        )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    return app


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _whole(model: str, text: str, tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": text},
            }
        ],
        "usage": {"prompt_tokens": tokens, "completion_tokens": tokens, "total_tokens": 2 * tokens},
    }


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key")
    parser.add_argument("--served-model-name", default="stand-in")
    parser.add_argument("--delay", type=float, default=0, help="seconds before a stream starts")
    args, _ = parser.parse_known_args()
    record = os.environ.get("STANDIN_RECORD")
    if record:
        with open(record, "a") as out:
            out.write(
                json.dumps(
                    {
                        "argv": sys.argv[1:],
                        "pid": os.getpid(),
                        "time": time.time(),
                        "hf_token": os.environ.get("HF_TOKEN"),
                    }
                )
                + "\n"
            )
    uvicorn.run(
        app_for(args.served_model_name, args.api_key, delay=args.delay),
        host=args.host,
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
