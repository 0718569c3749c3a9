"""Replays a trace against OpenAI-compatible servers (vLLM's /v1/completions, streamed), stdlib
asyncio only: one connection per request, sent at its arrival time, TTFT from the first chunk
that carries a choice, tokens from the last chunk's usage (or the chunks counted).
"""

from __future__ import annotations

import asyncio
import json
import time

import traces


async def _read_chunked(reader):
    """Yields the body pieces of a chunked HTTP/1.1 response."""
    while True:
        size_line = await reader.readline()
        if not size_line:
            return
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)
        yield data


async def _read_plain(reader):
    while True:
        data = await reader.read(65536)
        if not data:
            return
        yield data


async def stream_completion(port: int, model: str, prompt: list[int], max_tokens: int, on_first,
                            on_tokens=None) -> tuple[int, str | None]:
    """One streamed completion; calls on_first() at the first token and on_tokens(n) as tokens
    arrive. Returns (tokens, error)."""
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    try:
        writer.write(f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = head.split("\r\n", 1)[0]
        if " 200 " not in status + " ":
            rest = await reader.read(2000)
            return 0, f"{status.strip()}: {rest.decode(errors='replace')[:300]}"
        body_iter = _read_chunked(reader) if "transfer-encoding: chunked" in head.lower() else _read_plain(reader)
        buffer, counted, usage = b"", 0, None
        async for piece in body_iter:
            buffer += piece
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        continue
                    msg = json.loads(data)
                    if msg.get("error"):
                        return counted, f"server error: {json.dumps(msg['error'])[:300]}"
                    if msg.get("choices"):
                        if counted == 0:
                            on_first()
                        ids = msg["choices"][0].get("token_ids")
                        counted += len(ids) if ids else 1
                        if on_tokens is not None:
                            on_tokens(len(ids) if ids else 1)
                    if msg.get("usage"):
                        usage = msg["usage"].get("completion_tokens")
        return (usage if usage is not None else counted), None
    finally:
        writer.close()


async def replay(targets: dict[str, tuple[int, str]], trace: dict[str, list[dict]], t0: float, duration_s: float,
                 drain_s: float, vocab: int = 32000) -> dict[str, list[dict]]:
    """Sends every request of `trace` at t0 + its t to targets[engine] = (port, model name).
    Requests still running at t0 + duration_s + drain_s are cancelled (counted as not served).
    Returns per engine one record per request: t (arrival, s from t0), ttft, end (s from t0, or
    None), tokens, window_tokens (those streamed before t0 + duration_s: the service while the
    trace's load lasts, which a long drain cannot even out), error."""
    deadline = t0 + duration_s + drain_s
    window_end = t0 + duration_s
    results: dict[str, list[dict]] = {e: [] for e in trace}

    async def one(engine: str, req: dict) -> None:
        rec = {"t": req["t"], "ttft": None, "end": None, "tokens": 0, "window_tokens": 0, "error": None,
               "prompt_len": req["prompt_len"], "max_tokens": req["max_tokens"]}
        results[engine].append(rec)
        await asyncio.sleep(max(0.0, t0 + req["t"] - time.time()))
        sent = time.time()
        rec["sent"] = round(sent - t0, 4)

        def first() -> None:
            rec["ttft"] = round(time.time() - sent, 4)

        def streamed(n: int) -> None:
            if time.time() <= window_end:
                rec["window_tokens"] += n

        port, model = targets[engine]
        try:
            rec["tokens"], rec["error"] = await asyncio.wait_for(
                stream_completion(port, model, traces.prompt_ids(req, vocab), req["max_tokens"], first, streamed),
                timeout=max(0.1, deadline - time.time()))
        except asyncio.TimeoutError:
            rec["error"] = "not finished by the drain deadline"
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            rec["error"] = f"{type(error).__name__}: {error}"[:300]
        rec["end"] = round(time.time() - t0, 4)

    await asyncio.gather(*(one(e, r) for e, reqs in trace.items() for r in reqs))
    for recs in results.values():
        recs.sort(key=lambda r: r["t"])
    return results
