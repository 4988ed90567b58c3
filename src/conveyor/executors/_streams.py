"""An upstream's Server-Sent Events, read line by line, and the result they add up to.

What a streamed task records as its result body, by endpoint:

- `…/chat/completions`: a `chat.completion` object, as the upstream would have answered
  without streaming: per choice the message (`role`, the concatenated `content`, and
  `refusal`, `reasoning_content` or any other text field of the deltas, concatenated;
  `tool_calls` merged by index, their `arguments` concatenated), `finish_reason` and
  `logprobs.content`; `id`, `created`, `model`, `system_fingerprint` from the chunks, and
  the `usage` of the last chunk that has one.
- `…/completions`: a `text_completion` object, each choice's `text` concatenated.
- `…/responses`: the `response` of the final `response.completed` (or `.incomplete`,
  `.failed`) event.
- anything else, or a responses stream without such an event: `{"object": "list",
  "data": [chunk, …]}`.

No I/O here.
"""

from __future__ import annotations

from typing import Any

import msgspec

DONE = "[DONE]"
FINAL_RESPONSE_EVENTS = ("response.completed", "response.incomplete", "response.failed")


class SseReader:
    """Feed it the stream's lines; it hands back each message as (event, data)."""

    __slots__ = ("_data", "_event")

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, Any] | None:
        """The message a blank line completes, else None; JSON data is decoded."""
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment: keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def finish(self) -> tuple[str, Any] | None:
        """The last message if the stream ended without a blank line after it."""
        return self._dispatch()

    def _dispatch(self) -> tuple[str, Any] | None:
        if not self._data:
            self._event = ""
            return None
        text = "\n".join(self._data)
        event, self._event, self._data = self._event, "", []
        try:
            data: Any = msgspec.json.decode(text)
        except msgspec.DecodeError:
            data = text
        return event, data


class Assembler:
    """Collects a stream's chunks; `result()` is the body the task records."""

    def __init__(self) -> None:
        self.chunks: list[Any] = []

    def add(self, chunk: Any) -> None:
        """Take one chunk (a message's decoded data)."""
        self.chunks.append(chunk)

    def result(self) -> Any:
        """The body to record."""
        return {"object": "list", "data": self.chunks}


class ResponsesAssembler(Assembler):
    """`/v1/responses`: the response the stream's final event carries."""

    def result(self) -> Any:
        for chunk in reversed(self.chunks):
            if (
                isinstance(chunk, dict)
                and chunk.get("type") in FINAL_RESPONSE_EVENTS
                and isinstance(chunk.get("response"), dict)
            ):
                return chunk["response"]
        return super().result()


class _ChoicesAssembler(Assembler):
    """What chat and text completions share: top-level fields, usage, choices by index."""

    object_name = ""

    def __init__(self) -> None:
        super().__init__()
        self.top: dict[str, Any] = {}
        self.usage: Any = None
        self.choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: Any) -> None:
        if not isinstance(chunk, dict):
            return
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if chunk.get(key) is not None:
                self.top.setdefault(key, chunk[key])
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                index = choice.get("index", 0)
                if not isinstance(index, int):
                    index = 0
                state = self.choices.get(index)
                if state is None:
                    state = self.choices[index] = self.new_choice(index)
                self.add_choice(state, choice)
                if choice.get("finish_reason") is not None:
                    state["finish_reason"] = choice["finish_reason"]

    def new_choice(self, index: int) -> dict[str, Any]:
        """A choice before any of its chunks."""
        raise NotImplementedError

    def add_choice(self, state: dict[str, Any], choice: dict[str, Any]) -> None:
        """Fold one chunk's part of a choice into it."""
        raise NotImplementedError

    def result(self) -> Any:
        body: dict[str, Any] = {
            "id": self.top.get("id"),
            "object": self.object_name,
            "created": self.top.get("created"),
            "model": self.top.get("model"),
        }
        for key in ("system_fingerprint", "service_tier"):
            if key in self.top:
                body[key] = self.top[key]
        body["choices"] = [self.finish_choice(self.choices[i]) for i in sorted(self.choices)]
        body["usage"] = self.usage
        return body

    def finish_choice(self, state: dict[str, Any]) -> dict[str, Any]:
        """The choice as the result shows it."""
        return state


class ChatAssembler(_ChoicesAssembler):
    """`/v1/chat/completions`: the chunks folded back into a `chat.completion`."""

    object_name = "chat.completion"

    def new_choice(self, index: int) -> dict[str, Any]:
        message = {"role": "assistant", "content": None}
        return {"index": index, "message": message, "finish_reason": None, "logprobs": None}

    def add_choice(self, state: dict[str, Any], choice: dict[str, Any]) -> None:
        message: dict[str, Any] = state["message"]
        delta = choice.get("delta")
        for key, value in (delta if isinstance(delta, dict) else {}).items():
            if key == "tool_calls" and isinstance(value, list):
                _merge_tool_calls(message.setdefault("tool_calls", {}), value)
            elif key == "role":
                message["role"] = value or message["role"]
            elif isinstance(value, str):
                message[key] = (message.get(key) or "") + value
            elif value is not None:
                message[key] = value
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            merged = state["logprobs"] = state["logprobs"] or {"content": None}
            for key, items in logprobs.items():
                if isinstance(items, list):
                    merged[key] = (merged.get(key) or []) + items

    def finish_choice(self, state: dict[str, Any]) -> dict[str, Any]:
        calls = state["message"].get("tool_calls")
        if isinstance(calls, dict):
            state["message"]["tool_calls"] = [calls[i] for i in sorted(calls)]
        return state


def _merge_tool_calls(calls: dict[int, dict[str, Any]], deltas: list[Any]) -> None:
    """Tool call deltas by index: the first names the call, later ones add arguments."""
    for delta in deltas:
        if not isinstance(delta, dict):
            continue
        index = delta.get("index", 0)
        call = calls.setdefault(index if isinstance(index, int) else 0, {})
        for key, value in delta.items():
            if key == "index" or value is None:
                continue
            if key == "function" and isinstance(value, dict):
                function = call.setdefault("function", {})
                for name, part in value.items():
                    if isinstance(part, str):
                        function[name] = function.get(name, "") + part
                    elif part is not None:
                        function[name] = part
            else:
                call[key] = value


class CompletionAssembler(_ChoicesAssembler):
    """`/v1/completions`: the chunks folded back into a `text_completion`."""

    object_name = "text_completion"

    def new_choice(self, index: int) -> dict[str, Any]:
        return {"index": index, "text": "", "finish_reason": None, "logprobs": None}

    def add_choice(self, state: dict[str, Any], choice: dict[str, Any]) -> None:
        text = choice.get("text")
        if isinstance(text, str):
            state["text"] += text


def assembler_for(endpoint: str) -> Assembler:
    """What folds the chunks of a stream from `endpoint`."""
    path = endpoint.split("?", 1)[0].rstrip("/")
    if path.endswith("/chat/completions"):
        return ChatAssembler()
    if path.endswith("/completions"):
        return CompletionAssembler()
    if path.endswith("/responses"):
        return ResponsesAssembler()
    return Assembler()
