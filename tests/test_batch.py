"""`neve batch`: files of prompts through a real hub, resumable after a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import jsonschema
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from neve.batch import read_table
from tests.conftest import NEVE, Hub, offline_env


def neve_batch(hub: Hub, *args: str, tokens: int = 6) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NEVE, "batch", *args, "--url", hub.url, "--max-tokens", str(tokens)],
        env=offline_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_csv_to_parquet_keeps_every_column(hub: Hub, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text('id,prompt,team\n1,Say hi,a\n2,"Name a color, any",b\n3,,c\n')
    result = neve_batch(hub, str(source), "--output", str(tmp_path / "out.parquet"))
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == [
        "id", "prompt", "team", "completion", "error", "prompt_tokens", "completion_tokens",
    ]  # fmt: skip
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert rows[0]["completion"] and rows[0]["completion_tokens"] == 6
    assert rows[2]["completion"] is None  # an empty prompt is NULL
    assert not (tmp_path / "out.parquet.partial.jsonl").exists()


def test_jsonl_to_csv_with_another_column(hub: Hub, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"q": "Say hi"}\n{"q": "Say bye"}\n')
    out = tmp_path / "out.csv"
    assert neve_batch(hub, str(source), "--column", "q", "-o", str(out)).returncode == 0
    rows = pa_csv.read_csv(out).to_pylist()
    assert [r["q"] for r in rows] == ["Say hi", "Say bye"]
    assert all(r["completion"] for r in rows)


def test_bad_inputs_say_what_is_wrong(hub: Hub, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,text\n1,hello\n")
    missing = neve_batch(hub, str(source), "-o", str(tmp_path / "o.csv"))
    assert missing.returncode == 1 and "no column 'prompt'" in missing.stderr
    odd = neve_batch(hub, str(tmp_path / "in.xlsx"), "-o", str(tmp_path / "o.csv"))
    assert odd.returncode == 1 and "unsupported file type" in odd.stderr
    (tmp_path / "taken.csv").write_text("x\n")
    taken = neve_batch(hub, str(source), "--column", "text", "-o", str(tmp_path / "taken.csv"))
    assert taken.returncode == 1 and "exists" in taken.stderr
    assert (tmp_path / "taken.csv").read_text() == "x\n"  # nothing already stored is lost


def test_a_killed_run_resumes_without_redoing_rows(hub: Hub, tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": [f"Write a line about the number {i}." for i in range(40)]}),
                   source)  # fmt: skip
    out = tmp_path / "out.jsonl"
    checkpoint = tmp_path / "out.jsonl.partial.jsonl"
    args = [*NEVE, "batch", str(source), "-o", str(out), "--url", hub.url,
            "--max-tokens", "24", "--concurrency", "2"]  # fmt: skip
    first = subprocess.Popen(args, env=offline_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not checkpoint.exists() or len(checkpoint.read_text().splitlines()) < 6:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not out.exists()
    lines = [line for line in checkpoint.read_text().splitlines() if line.endswith("}")]
    saved = {json.loads(line)["row"]: json.loads(line) for line in lines}
    assert 6 <= len(saved) < 40

    second = subprocess.run(args, env=offline_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"resuming: {len(saved)} of 40 rows already done" in second.stderr
    rows = read_table(out).to_pylist()
    assert [r["prompt"] for r in rows] == [f"Write a line about the number {i}." for i in range(40)]
    for row_index, record in saved.items():
        assert rows[row_index]["completion"] == record["completion"]  # kept, not redone
    assert all(r["completion"] for r in rows)
    assert not checkpoint.exists()


TICKET = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "maxLength": 20},
        "urgent": {"type": "boolean"},
        "score": {"type": "integer"},
        "labels": {"type": "array", "items": {"enum": ["bug", "billing"]}, "maxItems": 2},
    },
    "required": ["topic", "urgent", "score", "labels"],
}


def test_a_schema_gives_its_fields_as_typed_columns(hub: Hub, tmp_path: Path) -> None:
    source, schema = tmp_path / "in.csv", tmp_path / "ticket.json"
    source.write_text("id,prompt\n1,My invoice is wrong\n2,\n3,The app crashes on start\n")
    schema.write_text(json.dumps(TICKET))
    out = tmp_path / "out.parquet"
    result = neve_batch(hub, str(source), "-o", str(out), "--schema", str(schema), tokens=120)
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    assert table.schema.field("urgent").type == pa.bool_()
    assert table.schema.field("score").type == pa.int64()
    assert table.schema.field("labels").type == pa.string()  # an array, as JSON text
    rows = table.to_pylist()
    assert rows[1]["completion"] is None and rows[1]["topic"] is None  # NULL in, NULL out
    for row in (rows[0], rows[2]):
        assert row["error"] is None, row
        answer = json.loads(row["completion"])
        jsonschema.validate(answer, TICKET)
        assert [row[k] for k in ("topic", "urgent", "score")] == [
            answer["topic"], answer["urgent"], answer["score"],
        ]  # fmt: skip
        assert json.loads(row["labels"]) == answer["labels"]


def test_a_bad_schema_is_refused_before_any_row(hub: Hub, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("prompt\nhi\n")
    for text, words in [
        ("{oops", "not JSON"),
        ('{"type": "string"}', "properties"),
        ('{"type": "object", "properties": {"prompt": {}}}', "prompt"),
    ]:
        (tmp_path / "s.json").write_text(text)
        result = neve_batch(hub, str(source), "-o", str(tmp_path / "o.csv"),
                            "--schema", str(tmp_path / "s.json"))  # fmt: skip
        assert result.returncode in (1, 2) and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "o.csv").exists()
