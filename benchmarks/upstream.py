"""An OpenAI-compatible upstream that answers every chat completion at once (benchmarks only).

    python -m benchmarks.upstream --port 9000

It reads each request body (as a model server must) and answers with one fixed small
chat.completion, so what a benchmark measures is Conveyor and its worker, not a model.
"""

from __future__ import annotations

import argparse

from aiohttp import web

ANSWER = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},'
    b'"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":10,"completion_tokens":1,"total_tokens":11}}'
)


async def chat(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
