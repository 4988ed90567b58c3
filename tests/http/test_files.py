"""The Files API against a real server, with the official `openai` package as the client."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests._server import running_server
from tests.http._support import assert_error, json_of

KEYS = {
    "CONVEYOR_API_KEYS": "acme-key=acme,globex-key=globex",
    "CONVEYOR_WORKER_KEYS": "acme-worker=acme",
}
SMALL_LIMIT = 100_000
MB = 1024 * 1024


class Server:
    """A running server, and the SDK clients made for it (closed with the server)."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.data_dir = data_dir
        self.clients: list[openai.OpenAI] = []

    def sdk(self, key: str = "unused") -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=60)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def blobs(self) -> list[str]:
        """Every entry of the blob directory, temporary files included."""
        root = self.data_dir / "files"
        return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the default settings (512 MB per file)."""
    data_dir = tmp_path_factory.mktemp("files")
    with running_server(data_dir) as url:
        running = Server(url, data_dir)
        yield running
        running.close()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with API keys and a small file limit."""
    data_dir = tmp_path_factory.mktemp("files-keyed")
    args = ("--max-file-bytes", str(SMALL_LIMIT))
    with running_server(data_dir, *args, env=KEYS) as url:
        running = Server(url, data_dir)
        yield running
        running.close()


def jsonl(lines: int) -> bytes:
    return b"".join(b'{"custom_id": "r%d", "n": %d}\n' % (i, i) for i in range(lines))


def test_create_retrieve_content_delete(server: Server) -> None:
    client = server.sdk()
    data = jsonl(100)
    file = client.files.create(file=("requests.jsonl", io.BytesIO(data)), purpose="batch")
    assert file.id.startswith("file-")
    assert file.object == "file"
    assert (file.bytes, file.filename, file.purpose, file.status) == (
        len(data),
        "requests.jsonl",
        "batch",
        "processed",
    )
    assert file.expires_at == file.created_at + 30 * 86_400  # batch input: 30 days
    assert file.status_details is None
    assert client.files.retrieve(file.id) == file
    assert client.files.content(file.id).read() == data
    deleted = client.files.delete(file.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (file.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file.id)
    assert file.id not in server.blobs()


def test_every_field_of_the_file_object(server: Server) -> None:
    with server.http() as http:
        answer = http.post(
            "/v1/files",
            data={"purpose": "user_data"},
            files={"file": ("notes.txt", b"hello")},
        )
        assert answer.status_code == 200, answer.text
        body = json_of(answer)
    assert list(body) == [
        "id",
        "object",
        "bytes",
        "created_at",
        "filename",
        "purpose",
        "status",
        "expires_at",
        "status_details",
    ]
    assert isinstance(body["created_at"], int)
    assert body["expires_at"] is None  # only batch files expire unless told


def test_expires_after(server: Server) -> None:
    client = server.sdk()
    file = client.files.create(
        file=("a.txt", io.BytesIO(b"x")),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert file.expires_at == file.created_at + 3600
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(
            file=("a.txt", io.BytesIO(b"x")),
            purpose="user_data",
            expires_after={"anchor": "created_at", "seconds": 60},
        )
    assert caught.value.param == "expires_after.seconds"


def test_list_pages_until_has_more_is_false(server: Server) -> None:
    client = server.sdk()
    before = {f.id for f in client.files.list()}
    made = [
        client.files.create(file=(f"f{i}.jsonl", io.BytesIO(jsonl(1))), purpose="batch").id
        for i in range(7)
    ]
    # the SDK's auto-pagination follows `after` until has_more is false
    listed = [f.id for f in client.files.list(limit=3)]
    assert [i for i in listed if i not in before] == made[::-1]
    assert len(listed) == len(set(listed))
    page = client.files.list(limit=3, order="asc", after=made[0])
    assert [f.id for f in page.data] == made[1:4]
    assert page.has_more is True
    with server.http() as http:
        raw = json_of(http.get("/v1/files", params={"limit": 2, "after": made[2]}))
    assert raw["object"] == "list"
    assert [f["id"] for f in raw["data"]] == [made[1], made[0]]
    assert (raw["first_id"], raw["last_id"]) == (made[1], made[0])
    assert raw["has_more"] == bool(before)
    only_batch = {f.id for f in client.files.list(purpose="batch")}
    assert set(made) <= only_batch
    assert all(f.purpose == "batch" for f in client.files.list(purpose="batch"))


def test_list_of_nothing(keyed: Server) -> None:
    with keyed.http("globex-key") as http:
        raw = json_of(http.get("/v1/files"))
    assert raw == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"purpose": "nonsense"}, "purpose"),
    ],
)
def test_bad_list_parameters(server: Server, params: dict[str, str], param: str) -> None:
    with server.http() as http:
        assert_error(http.get("/v1/files", params=params), 400, param=param)


def test_unknown_files_are_404(server: Server) -> None:
    client = server.sdk()
    missing = "file-0000000000000000000000000000abcd"
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError) as caught:
            call(missing)
        assert caught.value.body == {
            "message": f"No such File object: {missing}",
            "type": "not_found_error",
            "param": "id",
            "code": "not_found",
        }


def test_batch_files_must_be_jsonl(server: Server) -> None:
    before = server.blobs()
    with pytest.raises(openai.BadRequestError) as caught:
        server.sdk().files.create(file=("requests.csv", io.BytesIO(b"a,b\n")), purpose="batch")
    assert caught.value.message.endswith("Invalid file format for Batch API. Must be .jsonl")
    assert caught.value.param == "file"
    assert server.blobs() == before


def test_clients_may_not_upload_output_files(server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        server.sdk().files.create(file=("o.jsonl", io.BytesIO(b"{}\n")), purpose="batch_output")  # type: ignore[arg-type]
    assert caught.value.param == "purpose"


@pytest.mark.parametrize(
    ("parts", "param"),
    [
        # the file before its purpose
        ([("file", ("a.jsonl", b"{}\n")), ("purpose", (None, b"batch"))], "purpose"),
        # a field after the file: the file was stored, and is removed again
        ([("purpose", (None, b"batch")), ("file", ("a.jsonl", b"{}\n")), ("x", (None, b"1"))], "x"),
        ([("purpose", (None, b"batch"))], "file"),
        ([("file", ("a.jsonl", b"{}\n"))], "purpose"),
        ([("purpose", (None, b"batch")), ("file", (None, b"{}\n"))], "file"),
        ([("purpose", (None, b"batch")), ("purpose", (None, b"batch"))], "purpose"),
        ([("purpose", (None, b"user_data")), ("expires_after[seconds]", (None, b"7200"))], None),
    ],
)
def test_malformed_uploads_store_nothing(
    server: Server, parts: list[tuple[str, tuple[str | None, bytes]]], param: str | None
) -> None:
    before = server.blobs()
    with server.http() as http:
        count = len(json_of(http.get("/v1/files"))["data"])
        assert_error(http.post("/v1/files", files=parts), 400, param=param)
        assert len(json_of(http.get("/v1/files"))["data"]) == count
    assert server.blobs() == before


def test_uploads_must_be_multipart(server: Server) -> None:
    with server.http() as http:
        assert_error(http.post("/v1/files", json={"purpose": "batch"}), 400)
        assert_error(http.post("/v1/files", content=b"x" * 1000), 400)


def test_too_large_uploads_are_refused_and_nothing_is_stored(keyed: Server) -> None:
    client = keyed.sdk("acme-key")
    # refused by its Content-Length, and (just over the limit) while it streams
    for size in (SMALL_LIMIT * 20, SMALL_LIMIT + 1):
        with pytest.raises(openai.BadRequestError) as caught:
            client.files.create(file=("big.jsonl", io.BytesIO(b"x" * size)), purpose="batch")
        assert "File is too large" in caught.value.message
        assert caught.value.param == "file"

    # and with no Content-Length at all (a chunked body)
    def chunked_body() -> Iterator[bytes]:
        boundary = b"b0undary"
        yield b'--b0undary\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        yield b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
        for _ in range(SMALL_LIMIT // 10_000 + 5):
            yield b"y" * 10_000
        yield b"\r\n--" + boundary + b"--\r\n"

    with keyed.http("acme-key") as http:
        answer = http.post(
            "/v1/files",
            content=chunked_body(),
            headers={"content-type": "multipart/form-data; boundary=b0undary"},
        )
        assert_error(answer, 400, param="file")
    assert list(client.files.list()) == []
    assert keyed.blobs() == []
    exact = client.files.create(file=("ok.jsonl", io.BytesIO(b"z" * SMALL_LIMIT)), purpose="batch")
    assert exact.bytes == SMALL_LIMIT
    client.files.delete(exact.id)


def test_projects_do_not_see_each_others_files(keyed: Server) -> None:
    acme, globex = keyed.sdk("acme-key"), keyed.sdk("globex-key")
    file = acme.files.create(file=("a.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    for call in (globex.files.retrieve, globex.files.content, globex.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(file.id)
    assert file.id not in {f.id for f in globex.files.list()}
    assert acme.files.retrieve(file.id) == file
    assert acme.files.delete(file.id).deleted


def test_worker_keys_may_not_use_files(keyed: Server) -> None:
    with keyed.http("acme-worker") as http:
        assert_error(http.get("/v1/files"), 403)
        answer = http.post("/v1/files", data={"purpose": "batch"}, files={"file": ("a.jsonl", b"")})
        assert_error(answer, 403)
    with keyed.http(None) as http:
        assert_error(http.get("/v1/files"), 401)


# ---- memory: an upload streams through the server ----


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found.extend(_descendants(int(child)))
    return found


def _server_pids(data_dir: Path) -> list[int]:
    """The `conveyor serve` process for `data_dir` and every process it started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and os.fsencode(data_dir) in argv:
            return _descendants(int(entry.name))
    raise AssertionError(f"no server process for {data_dir}")


def _peak_rss_kb(pids: list[int]) -> dict[int, int]:
    peaks = {}
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks[pid] = int(line.split()[1])
    return peaks


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_large_upload_streams_with_flat_memory(server: Server, tmp_path: Path) -> None:
    client = server.sdk()
    pids = _server_pids(server.data_dir)
    # warm up every code path first (threads, buffers, imports) with a smaller file
    warm = client.files.create(file=("warm.jsonl", io.BytesIO(jsonl(1) * 100_000)), purpose="batch")
    with client.files.with_streaming_response.content(warm.id) as response:
        for _ in response.iter_bytes():
            pass
    client.files.delete(warm.id)

    big = tmp_path / "big.jsonl"
    line = b'{"custom_id": "x", "body": "' + b"a" * 1000 + b'"}\n'
    with big.open("wb") as out:
        for _ in range(50 * MB // len(line)):
            out.write(line)
    size = big.stat().st_size
    before = _peak_rss_kb(pids)
    with big.open("rb") as upload:
        file = client.files.create(file=upload, purpose="batch")
    assert file.bytes == size
    digest = hashlib.sha256()
    with client.files.with_streaming_response.content(file.id) as response:
        for chunk in response.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(big.read_bytes()).hexdigest()
    after = _peak_rss_kb(pids)
    growth_mb = {pid: (after[pid] - before[pid]) / 1024 for pid in before}
    assert max(growth_mb.values()) < 20, growth_mb
    client.files.delete(file.id)
