"""Documents and grounded answers over HTTP, against a hub with keys: uploads, answers
with citations (as /v1/rag/query and as chat model `rag`), search, access control, and
documents ingested by the CLI while the hub runs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from neve.store.db import Store
from neve.store.keys import create_key
from tests.conftest import NEVE, Hub, offline_env, start_hub, stop_hub
from tests.rag.documents import HANDBOOK_PAGES, make_pdf

VACATION = "How many days of paid vacation do employees get per year?"


@dataclass
class RagHub:
    hub: Hub
    tmp: Path
    models: Path
    keys: dict[str, str]

    def http(self, who: str = "ada") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        return httpx.Client(base_url=self.hub.url, headers=headers, timeout=120)


@pytest.fixture(scope="module")
def rag_hub(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[RagHub]:
    tmp = tmp_path_factory.mktemp("rag")
    store = Store(f"sqlite:///{tmp / 'data' / 'neve.db'}")
    store.migrate()
    keys = {
        "ada": create_key(store, "ada", role="admin")[0],
        "bo": create_key(store, "bo", groups=["staff"])[0],
        "cy": create_key(store, "cy", groups=["board"])[0],
    }
    store.close()
    hub = start_hub(tmp, f"models_dir={models_dir}", "rag_max_upload_bytes=8192")
    docs = tmp / "upload"
    docs.mkdir()
    make_pdf(docs / "handbook.pdf", HANDBOOK_PAGES, title="Northwind Handbook")
    (docs / "rivers.md").write_text("# Rivers\n\nThe Nile is the longest river in Africa.\n")
    started = RagHub(hub, tmp, models_dir, keys)
    with started.http() as http:
        reply = http.post(
            "/v1/documents",
            files=[("files", (p.name, p.read_bytes())) for p in sorted(docs.iterdir())],
        )
    assert reply.status_code == 201, reply.text
    yield started
    stop_hub(hub)


def test_uploads_are_indexed_and_listed(rag_hub: RagHub) -> None:
    with rag_hub.http() as http:
        listed = {d["title"]: d for d in http.get("/v1/documents").json()["data"]}
    assert listed["Northwind Handbook"]["status"] == "indexed"
    assert listed["Northwind Handbook"]["pages"] == 3
    assert listed["Rivers"]["kind"] == "markdown"


def test_uploads_beyond_the_limit_or_of_unknown_type_store_nothing(rag_hub: RagHub) -> None:
    with rag_hub.http() as http:
        before = len(http.get("/v1/documents").json()["data"])
        big = http.post("/v1/documents", files=[
            ("files", ("small.md", b"# Small\n\nfine\n")), ("files", ("big.txt", b"x " * 6000)),
        ])  # fmt: skip
        assert big.status_code == 413
        assert "big.txt" in big.json()["error"]["message"]
        assert "rag_max_upload_bytes" in big.json()["error"]["message"]
        huge = http.post("/v1/documents", files=[("files", ("huge.txt", b"y " * 50_000))])
        assert huge.status_code == 413
        odd = http.post("/v1/documents", files=[("files", ("sheet.xlsx", b"data"))])
        assert odd.status_code == 400 and "unsupported file type" in odd.json()["error"]["message"]
        assert len(http.get("/v1/documents").json()["data"]) == before


def test_uploads_of_one_name_keep_their_identity(rag_hub: RagHub) -> None:
    def upload(http: httpx.Client, name: str, text: str, **form: str) -> dict[str, Any]:
        reply = http.post("/v1/documents", files=[("files", (name, text.encode()))], data=form)
        assert reply.status_code == 201, reply.text
        [stored] = reply.json()["data"]
        return stored

    def named(http: httpx.Client, name: str) -> list[str]:
        rows = http.get("/v1/documents").json()["data"]
        return sorted(d["id"] for d in rows if Path(d["path"]).name == name)

    with rag_hub.http() as ada, rag_hub.http("bo") as bo:
        first = upload(ada, "a/notes.txt", "Ferries leave at nine.")
        second = upload(ada, "c/notes.txt", "Buses leave at ten.")
        assert first["id"] != second["id"]
        theirs = upload(bo, "notes.txt", "Trams leave at noon.", groups="staff")
        assert named(ada, "notes.txt") == sorted([first["id"], second["id"], theirs["id"]])
        again = upload(ada, "notes.txt", "Ferries leave at nine.")  # the same file: no change
        assert again["id"] == first["id"]
        assert len(named(ada, "notes.txt")) == 3
        refused = bo.post("/v1/documents", data={"replace": "true"},
                          files=[("files", ("notes.txt", b"Trams at one."))])  # fmt: skip
        assert refused.status_code == 403 and refused.json()["error"]["param"] == "replace"
        fresh = upload(ada, "notes.txt", "Everything leaves at eight.", replace="true")
        assert named(ada, "notes.txt") == [fresh["id"]]
        for gone in (first, second, theirs):
            assert not Path(gone["path"]).exists()


def test_an_answer_cites_the_right_page(rag_hub: RagHub) -> None:
    with rag_hub.http() as http:
        reply = http.post("/v1/rag/query", json={"question": VACATION, "max_tokens": 32})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    first = body["citations"][0]
    assert (first["title"], first["page"]) == ("Northwind Handbook", 2)
    assert "27 days of paid vacation" in first["text"]
    assert body["choices"][0]["message"]["content"]


def test_a_streamed_answer_sends_its_citations_first(rag_hub: RagHub) -> None:
    with (
        rag_hub.http() as http,
        http.stream(
            "POST", "/v1/rag/query", json={"question": VACATION, "stream": True, "max_tokens": 16}
        ) as reply,
    ):
        events = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
    head = json.loads(events[0])
    assert head["choices"] == [] and head["citations"][0]["page"] == 2
    deltas = [json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[1:-1]
              if json.loads(e)["choices"]]  # fmt: skip
    assert "".join(deltas) and events[-1] == "[DONE]"


def test_any_openai_client_gets_grounded_answers_as_model_rag(rag_hub: RagHub) -> None:
    client = openai.OpenAI(base_url=rag_hub.hub.api, api_key=rag_hub.keys["ada"], max_retries=0)
    reply = client.chat.completions.create(
        model="rag:smollm2", messages=[{"role": "user", "content": VACATION}], max_tokens=16
    )
    citations: list[dict[str, Any]] = (reply.model_extra or {})["citations"]
    assert citations[0]["page"] == 2
    assert reply.choices[0].message.content


def test_nothing_relevant_gives_the_no_answer_and_no_citations(rag_hub: RagHub) -> None:
    with rag_hub.http() as http:
        body = http.post(
            "/v1/rag/query", json={"question": "Which opera did Verdi write in 1853?"}
        ).json()
    assert body["citations"] == []
    assert body["choices"][0]["message"]["content"] == "The documents I can see do not cover this."


def test_search_ranks_passages_with_filters(rag_hub: RagHub) -> None:
    with rag_hub.http() as http:
        hits = http.post("/v1/rag/search", json={"query": "longest river"}).json()["data"]
        assert hits[0]["title"] == "Rivers" and hits[0]["similarity"] > 0.3
        only_pdf = http.post(
            "/v1/rag/search", json={"query": "vacation days", "filters": {"kind": "pdf"}}
        ).json()["data"]
        assert only_pdf and {h["title"] for h in only_pdf} == {"Northwind Handbook"}
        bad = http.post("/v1/rag/search", json={"query": "x", "filters": {"groups": "board"}})
        assert bad.status_code == 400 and "unknown filter 'groups'" in bad.text
        metrics = http.get("/metrics").text
    assert 'neve:rag_queries_total{kind="search"}' in metrics


def test_restricted_documents_leave_no_trace(rag_hub: RagHub) -> None:
    secret = b"# Merger\n\nNorthwind will acquire Contoso in May.\n"
    with rag_hub.http() as http:
        made = http.post("/v1/documents", files=[("files", ("merger.md", secret))],
                         data={"groups": "board"}).json()["data"][0]  # fmt: skip
    question = {"question": "When will Northwind acquire Contoso?", "max_tokens": 48}
    with rag_hub.http("bo") as outsider:
        # The model may echo the question's words; what must not reach it is the passage.
        answer = outsider.post("/v1/rag/query", json=question).json()
        assert all(c["title"] != "Merger" for c in answer["citations"])
        assert "Contoso" not in json.dumps(answer["citations"])
        assert "acquire Contoso in May" not in json.dumps(answer)
        search = outsider.post("/v1/rag/search", json={"query": "acquire Contoso",
                               "filters": {"document": made["id"]}})  # fmt: skip
        assert search.json()["data"] == []
        assert made["id"] not in outsider.get("/v1/documents").text
        gone = outsider.delete(f"/v1/documents/{made['id']}")
        unknown = outsider.delete("/v1/documents/0000000000000000")
        assert gone.status_code == unknown.status_code == 404
        assert gone.json()["error"]["message"].replace(made["id"], "ID") == (
            unknown.json()["error"]["message"].replace("0000000000000000", "ID")
        )
        forbidden = outsider.post("/v1/documents", files=[("files", ("x.md", b"# X\n\nx\n"))],
                                  data={"groups": "board"})  # fmt: skip
        assert forbidden.status_code == 403
    with rag_hub.http("cy") as member:
        body = member.post("/v1/rag/query", json=question).json()
        assert body["citations"][0]["title"] == "Merger"
    with rag_hub.http() as admin:
        assert admin.delete(f"/v1/documents/{made['id']}").status_code == 204
        assert made["id"] not in admin.get("/v1/documents").text


def test_documents_ingested_by_the_cli_are_answered_at_once(rag_hub: RagHub) -> None:
    folder = rag_hub.tmp / "stage"
    folder.mkdir()
    (folder / "tides.md").write_text("# Tides\n\nSpring tides follow the new and full moon.\n")
    (folder / "moon.md").write_text("# Moon\n\nIt pulls [the sea to its highest](tides.md).\n")
    done = subprocess.run(
        [*NEVE, "ingest", str(folder), "--data-dir", str(rag_hub.tmp / "data"),
         "--set", f"models_dir={rag_hub.models}"],
        capture_output=True, text=True, env=offline_env(), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "indexed 2 files" in done.stdout and "chunks/s" in done.stderr
    with rag_hub.http() as http:
        hits = http.post("/v1/rag/search", json={"query": "when are spring tides"}).json()
    assert hits["data"][0]["title"] == "Tides"

    listed = subprocess.run(
        [*NEVE, "docs", "--json", "--data-dir", str(rag_hub.tmp / "data"),
         "--set", f"models_dir={rag_hub.models}"],
        capture_output=True, text=True, env=offline_env(), timeout=120,
    )  # fmt: skip
    tides = next(json.loads(line) for line in listed.stdout.splitlines() if "Tides" in line)
    with rag_hub.http("bo") as http:  # what the links to a page call it, in its details
        details = http.get(f"/v1/documents/{tides['doc_id']}").json()
        assert details["title"] == "Tides"
        assert details["referred_as"] == ["the sea to its highest"]
        assert http.get("/v1/documents/0123456789abcdef").status_code == 404
    removed = subprocess.run(
        [*NEVE, "docs", "rm", tides["doc_id"], "--data-dir", str(rag_hub.tmp / "data"),
         "--set", f"models_dir={rag_hub.models}"],
        capture_output=True, text=True, env=offline_env(), timeout=120,
    )  # fmt: skip
    assert removed.returncode == 0 and "removed 1" in removed.stdout
    with rag_hub.http() as http:
        after = http.post("/v1/rag/search", json={"query": "when are spring tides"}).json()
    assert all(h["title"] != "Tides" for h in after["data"])


def test_ask_from_the_command_line(rag_hub: RagHub) -> None:
    done = subprocess.run(
        [*NEVE, "ask", VACATION, "--url", rag_hub.hub.url, "--json"],
        capture_output=True, text=True, timeout=120,
        env=offline_env(NEVE_API_KEY=rag_hub.keys["ada"]),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["citations"][0]["page"] == 2


def test_reindex_reads_a_document_again(rag_hub: RagHub) -> None:
    with rag_hub.http() as http:
        rivers = next(d for d in http.get("/v1/documents").json()["data"] if d["title"] == "Rivers")
        again = http.post(f"/v1/documents/{rivers['id']}/reindex")
        assert again.status_code == 200, again.text
        assert again.json()["id"] == rivers["id"] and again.json()["status"] == "indexed"
        assert again.json()["indexed_at"] > rivers["indexed_at"]
        missing = http.post("/v1/documents/0000000000000000/reindex")
        assert missing.status_code == 404
