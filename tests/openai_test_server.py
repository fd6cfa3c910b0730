"""An OpenAI-compatible HTTP server on 127.0.0.1 for the generation tests and benchmark (stdlib only).

- `/v1/chat/completions` answers from the request's `response_format` JSON schema with valid, deterministic content
  derived from the prompt (the last `<query>`, `<instruction>`, `<passage>` tags of the user message). The judge
  answers "relevant" exactly when the passage belongs to the (instruction, query) pair, recognised by the markers
  the server itself writes into I+ `[I+]`, I- `[I-]`, Q- `[Q-]`, HN1 `[HN1]`, HN2 `[HN2]`. I- and Q- are minimal
  edits of I+ and Q+, and HN1 and HN2 as long as P+, so every check passes unless a seed asks otherwise with a marker
  in its query: `JUDGE_SAYS_NO` (every relevance verdict "not relevant"), `IMPLAUSIBLE` (every plausibility verdict
  "implausible"), `COPY_QUERY` (I+ = Q+), `SAME_NEG_INSTRUCTION` (I- = I+), `HN_IS_POSITIVE` (HN1 = P+),
  `REWRITTEN_NEGATIVES` (I- and Q- rewritten, no minimal edits), `LONG_HARD_NEGATIVES` (HN1 and HN2 twice as long
  as P+), `ALWAYS_MALFORMED` (invalid JSON), `ALWAYS_TRUNCATED` (finish_reason length).
- Faults for the next requests, queued with `inject()`: "429:S" (Retry-After S seconds), "500", "400",
  "400:context" (OpenAI's context_length_exceeded), "timeout:S"
  (sleep S seconds, never answer), "malformed", "truncated", None (no fault); `fail_when = TEXT` answers 500 to every
  request containing TEXT.
- `/v1/files`, `/v1/files/{id}/content`, `/v1/batches`, `/v1/batches/{id}`: a Batch API that completes on the
  second retrieve. `/v1/models` lists one model.
- Every request is recorded (`requests`), with the most chat requests ever in flight at once (`max_in_flight`).

Run standalone (for the benchmark): `python tests/openai_test_server.py --latency 0.2` prints `PORT <n>`.
"""

import argparse
import email.parser
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _tag(text: str, name: str) -> str:
    found = re.findall(rf"<{name}>(.*?)</{name}>", text, flags=re.S)
    return found[-1].strip() if found else ""


def _fill(schema: dict[str, Any], hint: str) -> Any:
    """A valid value for a JSON schema (strings say which field they fill)."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        return {name: _fill(sub, f"{name} for {hint}") for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_fill(schema.get("items", {}), hint)]
    return {"boolean": True, "integer": 0, "number": 0.0, "null": None}.get(kind, hint)


def _judge(instruction: str, query: str, passage: str) -> bool:
    """Relevant iff the passage is the one written for this (instruction, query) pair."""
    if "JUDGE_SAYS_NO" in query:
        return False
    neg_instruction, neg_query = "[I-]" in instruction, "[Q-]" in query
    if "[HN1]" in passage:
        return neg_instruction and not neg_query
    if "[HN2]" in passage:
        return neg_query and not neg_instruction
    return not neg_instruction and not neg_query


def _edited_passage(passage: str, marker: str, word: str, query: str) -> str:
    """A passage as long as `passage`: its first word replaced by `marker`, its last by `word` (twice as long when
    the query says `LONG_HARD_NEGATIVES`)."""
    words = passage.split()
    edited = " ".join([marker, *words[1:-1], word])
    return f"{edited} {passage}" if "LONG_HARD_NEGATIVES" in query else edited


def _edited_query(query: str) -> str:
    """Q-: the marker, then Q+ with its last word replaced (a minimal edit), unless asked for a rewrite."""
    if "REWRITTEN_NEGATIVES" in query:
        return "[Q-] an entirely different question about rabbits and their food and housing"
    return " ".join(["[Q-]", *query.split()[:-1], "rabbits"])


def answer_for(request: dict[str, Any]) -> dict[str, Any]:
    """The JSON answer to a chat request, built from its schema and prompt."""
    fmt = request.get("response_format") or {}
    spec = fmt.get("json_schema") or {}
    name, schema = spec.get("name", ""), spec.get("schema", {"type": "object"})
    user = next((m["content"] for m in reversed(request["messages"]) if m["role"] == "user"), "")
    query, instruction, passage = _tag(user, "query"), _tag(user, "instruction"), _tag(user, "passage")
    answer = _fill(schema, query)
    if name == "positive_instruction":
        answer["instruction"] = query if "COPY_QUERY" in query else f"[I+] Only passages giving concrete facts: {query}"
    elif name == "instruction_negative":
        if "SAME_NEG_INSTRUCTION" in query:
            answer["instruction_negative"] = instruction
        elif "REWRITTEN_NEGATIVES" in query:
            answer["instruction_negative"] = "[I-] Everything written about rabbits, their food and their housing."
        else:
            answer["instruction_negative"] = instruction.replace("[I+]", "[I-]") + " in Norway"
        answer["hard_negative_document"] = (
            passage if "HN_IS_POSITIVE" in query else _edited_passage(passage, "[HN1]", "Norway.", query)
        )
    elif name == "query_negative":
        answer["query_negative"] = _edited_query(query)
        answer["hard_negative_document"] = _edited_passage(passage, "[HN2]", "rabbits.", query)
    elif name == "relevance_verdict":
        relevant = _judge(instruction, query, passage)
        answer = {"reason": f"test judge: {'relevant' if relevant else 'not relevant'}", "relevant": relevant}
    elif name == "plausibility_verdict":
        plausible = "IMPLAUSIBLE" not in query + instruction
        answer = {"reason": f"test judge: {'plausible' if plausible else 'implausible'}", "plausible": plausible}
    return answer


def completion(request: dict[str, Any], content: str, finish_reason: str = "stop") -> dict[str, Any]:
    prompt = " ".join(m["content"] for m in request["messages"])
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(content.split()),
            "total_tokens": len(prompt.split()) + len(content.split()),
        },
    }


def chat_answer(request: dict[str, Any], fault: str | None) -> dict[str, Any]:
    """The completion for a chat request, malformed or truncated when the fault or a seed marker says so."""
    user = json.dumps(request["messages"])
    content = json.dumps(answer_for(request))
    if fault == "malformed" or "ALWAYS_MALFORMED" in user:
        return completion(request, content[: len(content) // 2] + "}}]")
    if fault == "truncated" or "ALWAYS_TRUNCATED" in user:
        return completion(request, content[: len(content) // 2], finish_reason="length")
    return completion(request, content)


class OpenAITestServer:
    """Start with `start()` (or as a context manager); `base_url` is then `http://127.0.0.1:PORT/v1`."""

    def __init__(self, latency: float = 0.0):
        self.latency = latency
        self.requests: list[dict[str, Any]] = []
        self.faults: list[str | None] = []
        self.fail_when: str | None = None  # answer 500 to every chat request containing this text
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle
    def start(self) -> "OpenAITestServer":
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "OpenAITestServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- test helpers
    def inject(self, *faults: str) -> None:
        """Faults for the next chat requests, one each, in order."""
        with self.lock:
            self.faults.extend(faults)

    def chat_requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def answered(self) -> int:
        """Chat requests answered with 200 and fully written."""
        return sum(1 for r in self.chat_requests() if r["status"] == 200 and r["end"] is not None)

    # -- batch API
    def run_batch(self, input_file_id: str) -> str:
        lines = []
        for line in self.files[input_file_id].decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            body = chat_answer(item["body"], None)
            response = {"status_code": 200, "request_id": "req-test", "body": body}
            lines.append(json.dumps({"id": "batch_req", "custom_id": item["custom_id"], "response": response}))
        file_id = f"file-{len(self.files)}"
        self.files[file_id] = ("\n".join(lines) + "\n").encode()
        return file_id


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAITestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def _json(self, status: int, obj: Any, **headers: str) -> None:
        self._send(status, json.dumps(obj).encode(), **headers)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        owner = self.owner
        path = self.path.split("?")[0]
        if path.endswith("/models"):
            return self._json(200, {"object": "list", "data": [{"id": "test-model", "object": "model", "created": 0}]})
        if m := re.search(r"/files/([^/]+)/content$", path):
            return self._send(200, owner.files[m.group(1)], "application/octet-stream")
        if m := re.search(r"/batches/([^/]+)$", path):
            with owner.lock:
                batch = owner.batches[m.group(1)]
                batch["_polls"] += 1
                if batch["_polls"] == 1:
                    batch["status"] = "in_progress"
                elif batch["status"] == "in_progress":
                    batch["output_file_id"] = owner.run_batch(batch["input_file_id"])
                    batch["status"] = "completed"
                owner.requests.append({"path": path, "method": "GET", "status": 200, "end": time.time()})
                return self._json(200, {k: v for k, v in batch.items() if not k.startswith("_")})
        self._json(404, {"error": {"message": f"no route {path}"}})

    def do_POST(self) -> None:
        owner = self.owner
        path = self.path.split("?")[0]
        raw = self._body()
        if path.endswith("/chat/completions"):
            return self._chat(json.loads(raw))
        if path.endswith("/files"):
            content, filename = _multipart_file(self.headers["Content-Type"], raw)
            with owner.lock:
                file_id = f"file-{len(owner.files)}"
                owner.files[file_id] = content
                owner.requests.append({"path": path, "method": "POST", "status": 200, "end": time.time()})
            return self._json(
                200,
                {
                    "id": file_id,
                    "object": "file",
                    "bytes": len(content),
                    "created_at": int(time.time()),
                    "filename": filename,
                    "purpose": "batch",
                    "status": "processed",
                },
            )
        if path.endswith("/batches"):
            body = json.loads(raw)
            with owner.lock:
                batch_id = f"batch_{len(owner.batches)}"
                owner.batches[batch_id] = {
                    "id": batch_id,
                    "object": "batch",
                    "endpoint": body["endpoint"],
                    "input_file_id": body["input_file_id"],
                    "completion_window": body["completion_window"],
                    "status": "validating",
                    "created_at": int(time.time()),
                    "output_file_id": None,
                    "error_file_id": None,
                    "_polls": 0,
                }
                owner.requests.append({"path": path, "method": "POST", "status": 200, "end": time.time()})
                batch = {k: v for k, v in owner.batches[batch_id].items() if not k.startswith("_")}
            return self._json(200, batch)
        self._json(404, {"error": {"message": f"no route {path}"}})

    def _chat(self, request: dict[str, Any]) -> None:
        owner = self.owner
        with owner.lock:
            fault = owner.faults.pop(0) if owner.faults else None
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
            log = {"path": self.path, "method": "POST", "body": request, "fault": fault, "start": time.time()}
            log.update(status=None, end=None)
            owner.requests.append(log)
        try:
            if fault and fault.startswith("timeout"):
                log["status"] = "timeout"
                time.sleep(float(fault.split(":")[1]))  # the client has timed out by now and retries elsewhere
                self.close_connection = True
                return
            if owner.latency:
                time.sleep(owner.latency)
            if fault and fault.startswith("429"):
                log["status"] = 429
                error = {"error": {"message": "rate limited", "type": "rate_limit_exceeded"}}
                return self._json(429, error, Retry_After=fault.split(":")[1])
            if fault and fault.startswith("400"):
                log["status"] = 400
                error = {"message": "bad request", "type": "invalid_request_error", "code": None}
                if fault == "400:context":
                    error.update(
                        message="the request exceeds the model's maximum length", code="context_length_exceeded"
                    )
                return self._json(400, {"error": error})
            if fault == "500" or (owner.fail_when and owner.fail_when in json.dumps(request)):
                log["status"] = 500
                return self._json(500, {"error": {"message": "internal error", "type": "server_error"}})
            log["status"] = 200
            self._json(200, chat_answer(request, fault))
            log["end"] = time.time()
        finally:
            with owner.lock:
                owner.in_flight -= 1


def _multipart_file(content_type: str, body: bytes) -> tuple[bytes, str]:
    message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.walk():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True), part.get_filename() or "upload.jsonl"
    raise ValueError("no 'file' part in the upload")


def write_seeds(path: Path, queries: list[str]) -> Path:
    """A JSONL seed file with one (query, passage) per query."""
    with path.open("w", encoding="utf-8") as f:
        for i, query in enumerate(queries):
            f.write(json.dumps({"id": f"s{i}", "query": query, "passage": f"Passage {i} answering: {query}."}) + "\n")
    return path


def run_generate(*argv: str) -> int:
    """`infir generate ARGV` in this process, through the parser the `infir` command builds for it."""
    from infir_dataset import generate

    parser = argparse.ArgumentParser(prog="infir")
    generate.add_parser(parser.add_subparsers())
    args = parser.parse_args(["generate", *argv])
    return args.func(args)


def main() -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible test server")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per chat answer")
    args = parser.parse_args()
    server = OpenAITestServer(latency=args.latency).start()
    print(f"PORT {server.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
