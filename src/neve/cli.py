"""The `neve` command: each command is thin and calls a module."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from neve.config import Settings, describe, load_settings, parse_assignments
from neve.errors import ConfigError, NeveError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="neve, a private LLM hub.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the configuration.")
app.add_typer(config_app, name="config")
snowflake_app = typer.Typer(no_args_is_help=True, help="Snowflake integration.")
app.add_typer(snowflake_app, name="snowflake")
keys_app = typer.Typer(no_args_is_help=True, help="API keys (stored hashed in the database).")
app.add_typer(keys_app, name="keys")
feedback_app = typer.Typer(no_args_is_help=True, help="Feedback people gave on answers.")
app.add_typer(feedback_app, name="feedback")
ray_app = typer.Typer(no_args_is_help=True, help="The model's replicas on a Ray cluster.")
app.add_typer(ray_app, name="ray")
docs_app = typer.Typer(help="Indexed documents: list them (the default), or remove some.")
app.add_typer(docs_app, name="docs")
deploy_app = typer.Typer(no_args_is_help=True, help="Deploy neve: SPCS, Compose, KubeRay.")
app.add_typer(deploy_app, name="deploy")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="settings file (default: ./neve.yaml)")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="any setting, as KEY=VALUE (repeatable)")
]
HostOpt = Annotated[str | None, typer.Option(help="address to listen on")]
PortOpt = Annotated[int | None, typer.Option(help="port to listen on")]
ModelOpt = Annotated[
    str | None, typer.Option(help="catalog name, GGUF path, or Hugging Face repo id")
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="where state lives")]
UpstreamOpt = Annotated[
    str | None,
    typer.Option(help="serve in front of this OpenAI-compatible server (vLLM, Ollama, ...)"),
]
EngineOpt = Annotated[
    str | None, typer.Option(help="llamacpp, openai, vllm or ray (see `neve config show`)")
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="engine ray: auto, the head's host:port, or local"),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(help="URL of a running hub (default: NEVE_URL, or host and port settings)"),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _settings(config: Path | None, assignments: list[str] | None, **flags: Any) -> Settings:
    try:
        values = parse_assignments(assignments or [])
        values.update({k: v for k, v in flags.items() if v is not None})
        return load_settings(values, config_file=config)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


def _hub_settings(
    config: Path | None, assignments: list[str] | None, upstream: str | None, **flags: Any
) -> Settings:
    if upstream:  # in front of one upstream: the openai engine
        flags.update(engine="openai", upstream_url=upstream)
    return _settings(config, assignments, **flags)


def _run_hub(settings: Settings, ui: bool) -> None:
    from neve.hub import serve
    from neve.store.db import StoreError

    try:
        code = serve(settings, ui=ui)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    except StoreError as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


@app.command()
def up(
    host: HostOpt = None,
    port: PortOpt = None,
    ui_port: Annotated[int | None, typer.Option("--ui-port", help="port of the web UI")] = None,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    upstream: UpstreamOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Start the whole hub on its defaults (offline, the shipped model): the API and the
    web UI beside it."""
    settings = _hub_settings(config, set_, upstream, host=host, port=port, ui_port=ui_port,
                             model=model, data_dir=data_dir, engine=engine,
                             ray_address=ray_address)  # fmt: skip
    _run_hub(settings, ui=True)


@app.command()
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    upstream: UpstreamOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Start the API server alone (no web UI)."""
    settings = _hub_settings(config, set_, upstream, host=host, port=port, model=model,
                             data_dir=data_dir, engine=engine,
                             ray_address=ray_address)  # fmt: skip
    _run_hub(settings, ui=False)


@app.command()
def ui(
    url: UrlOpt = None,
    host: HostOpt = None,
    port: Annotated[int | None, typer.Option(help="port of the web UI")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Start the web UI alone, for a hub running elsewhere."""
    import os

    from neve.hub import check_port_free
    from neve.ui import launch

    settings = _settings(config, set_, host=host, ui_port=port)
    api = url or os.environ.get("NEVE_URL") or settings.url
    try:
        check_port_free(settings.host, settings.ui_port, "ui_port")
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    out.print(f"UI {settings.ui_url} for the hub at {api}")
    page = launch.start(settings, api)
    try:
        code = page.wait()
    except KeyboardInterrupt:
        code = launch.stop(page)
    raise typer.Exit(code)


def _client(url: str | None) -> Any:
    from neve.client import NeveClient

    try:
        return NeveClient.from_environment(url)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


@app.command()
def models(url: UrlOpt = None) -> None:
    """List the models a running hub serves."""
    from neve.client import HubError

    with _client(url) as client:
        try:
            rows = client.models()
        except HubError as exc:
            raise _fail(str(exc)) from None
    table = Table("id", "context", "owned by")
    for m in rows:
        table.add_row(m["id"], str(m.get("max_model_len") or ""), m.get("owned_by", ""))
    out.print(table)


@app.command()
def chat(
    message: Annotated[
        str | None, typer.Argument(help="one message; without it, an interactive chat")
    ] = None,
    url: UrlOpt = None,
    model: Annotated[str | None, typer.Option(help="model id (default: the hub's)")] = None,
    system: Annotated[str | None, typer.Option(help="system prompt")] = None,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.7,
    max_tokens: Annotated[int, typer.Option(help="longest answer in tokens")] = 512,
) -> None:
    """Chat with a running hub in the terminal, streaming the answers."""
    from neve.client import HubError

    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    params: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
    if model:
        params["model"] = model
    with _client(url) as client:
        try:
            client.wait_ready(on_wait=lambda d, s: err.print(f"waiting for the hub: {d}"))
            if message is not None:
                _answer(client, history, message, params)
                return
            err.print("chat with neve; an empty line or Ctrl-D ends it")
            while True:
                try:
                    line = input("> ").strip()
                except EOFError:
                    break
                if not line:
                    break
                _answer(client, history, line, params)
        except HubError as exc:
            raise _fail(str(exc)) from None
        except KeyboardInterrupt:
            err.print()


def _answer(client: Any, history: list[dict[str, str]], text: str, params: dict[str, Any]) -> None:
    history.append({"role": "user", "content": text})
    answer: list[str] = []
    for delta in client.chat_stream(history, **params):
        if delta.reasoning:
            out.print(delta.reasoning, style="dim italic", end="")
        if delta.content:
            out.print(delta.content, end="", markup=False)
            answer.append(delta.content)
    out.print()
    history.append({"role": "assistant", "content": "".join(answer)})


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="DuckDB SQL; complete() and embed() call the hub")],
    url: UrlOpt = None,
    limit: Annotated[int, typer.Option(help="rows printed at most")] = 1000,
) -> None:
    """Run a DuckDB query with complete(prompt[, options]) and embed(text) from the hub."""
    import duckdb

    from neve.client import HubError
    from neve.sql.duckdb import register

    with _client(url) as client:
        con = duckdb.connect()
        try:
            register(con, client)
            result = con.sql(query)
            if result is None:
                return
            rows = result.limit(limit).fetchall()
            columns = result.columns
        except HubError as exc:
            raise _fail(str(exc)) from None
        except duckdb.Error as exc:
            raise _fail(str(exc).splitlines()[0]) from None
        finally:
            con.close()
    table = Table(*columns)
    for row in rows:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    out.print(table)


@app.command()
def batch(
    input: Annotated[Path, typer.Argument(help="CSV, Parquet or JSONL file")],
    output: Annotated[Path, typer.Option("--output", "-o", help="where results go (any format)")],
    column: Annotated[str, typer.Option(help="the column holding prompts")] = "prompt",
    system: Annotated[str | None, typer.Option(help="system prompt for every row")] = None,
    max_tokens: Annotated[int, typer.Option(help="longest answer in tokens")] = 256,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.0,
    concurrency: Annotated[int, typer.Option(help="rows in flight at once (per Ray worker)")] = 16,
    schema: Annotated[
        Path | None,
        typer.Option(help="a JSON schema file: answers follow it, its properties become columns"),
    ] = None,
    url: UrlOpt = None,
    on_ray: Annotated[
        bool, typer.Option("--ray", help="answer the rows on Ray Data workers (neve[ray])")
    ] = False,
    ray_address: RayAddressOpt = None,
    ray_workers: Annotated[int, typer.Option(help="Ray Data workers (with --ray)")] = 2,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Answer a column of prompts in a file; re-running resumes where it stopped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from neve.batch import BatchError, BatchJob, read_schema, run
    from neve.client import HubError

    try:
        shape = read_schema(schema) if schema else None
    except BatchError as exc:
        raise _fail(str(exc), 2) from None
    job = BatchJob(input, output, column, system, max_tokens, temperature, concurrency,
                   schema=shape)  # fmt: skip
    if on_ray:  # a private cluster for `local`, as the hub would start
        _joined(_settings(config, set_, ray_address=ray_address))
        from neve.ray.batch import answers as on_cluster
    columns = (
        "{task.description}", BarColumn(), MofNCompleteColumn(),
        "{task.fields[rate]:.1f} rows/s", TimeElapsedColumn(),
    )  # fmt: skip
    with _client(url) as client, Progress(*columns, console=err) as progress:
        task = progress.add_task("rows", total=None, rate=0.0)
        started = time.monotonic()
        resumed = 0

        def on_start(total: int, done: int) -> None:
            nonlocal resumed
            resumed = done
            if done:
                err.print(f"resuming: {done} of {total} rows already done")
            progress.update(task, total=total, completed=done)

        def on_row() -> None:
            progress.advance(task)
            fresh = progress.tasks[0].completed - resumed
            progress.update(task, rate=fresh / max(time.monotonic() - started, 1e-9))

        try:
            client.wait_ready(on_wait=lambda d, s: err.print(f"waiting for the hub: {d}"))
            answers = on_cluster(client, workers=ray_workers) if on_ray else None
            table = run(job, client, on_start=on_start, on_row=on_row, answers=answers)
        except (BatchError, HubError) as exc:
            raise _fail(str(exc)) from None
    failed = sum(1 for e in table.column("error").to_pylist() if e)
    out.print(f"wrote {table.num_rows} rows to {output} ({failed} failed)")


@snowflake_app.command("sql")
def snowflake_sql(
    service: Annotated[str, typer.Option(help="the SPCS service running neve")] = "neve",
    endpoint: Annotated[str, typer.Option(help="the service's endpoint name")] = "api",
    prefix: Annotated[str, typer.Option(help="function names start with this")] = "neve",
    max_batch_rows: Annotated[int, typer.Option(help="rows Snowflake sends per batch")] = 256,
) -> None:
    """Print CREATE FUNCTION statements that call the hub from Snowflake SQL."""
    from neve.snowflake.sql import function_ddl

    try:
        ddl = function_ddl(
            service=service, endpoint=endpoint, prefix=prefix, max_batch_rows=max_batch_rows
        )
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    out.print(ddl, markup=False)


def _store(config: Path | None, assignments: list[str] | None, data_dir: Path | None) -> Any:
    return _open_store(_settings(config, assignments, data_dir=data_dir))


def _open_store(settings: Any) -> Any:
    from neve.store.db import Store, StoreError

    try:
        return Store.open(settings)
    except StoreError as exc:
        raise _fail(str(exc)) from None


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="the user the key speaks for")],
    groups: Annotated[
        str | None, typer.Option(help="comma-separated groups (replace the user's groups)")
    ] = None,
    role: Annotated[str, typer.Option(help="admin or user")] = "user",
    rpm: Annotated[int | None, typer.Option(help="requests per minute (default_rpm)")] = None,
    tpm: Annotated[int | None, typer.Option(help="tokens per minute (default_tpm)")] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Create a key and print it once (on stdout; the database keeps only its hash)."""
    from neve.store.keys import create_key

    if role not in ("admin", "user"):
        raise _fail(f"--role must be admin or user, not {role!r}", 2)
    if not name.strip():
        raise _fail("--name must not be empty", 2)
    if any(limit is not None and limit < 0 for limit in (rpm, tpm)):
        raise _fail("--rpm and --tpm must be 0 (no limit) or more", 2)
    names = [g.strip() for g in groups.split(",") if g.strip()] if groups is not None else None
    store = _store(config, set_, data_dir)
    key, info = create_key(store, name.strip(), role=role, groups=names, rpm=rpm, tpm=tpm)  # type: ignore[arg-type]
    err.print(
        f"key {info.id} for {info.user} (role {info.role}, groups "
        f"{', '.join(info.groups) or 'none'}); it is shown only now:"
    )
    out.print(key, markup=False)


@keys_app.command("list")
def keys_list(
    all_: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """List keys (never the keys themselves: their id and first characters)."""
    import dataclasses
    import json

    from neve.store.keys import list_keys

    found = list_keys(_store(config, set_, data_dir), include_revoked=all_)
    if as_json:
        for k in found:
            out.print(json.dumps(dataclasses.asdict(k), default=str), markup=False)
        return
    table = Table("id", "starts", "user", "role", "groups", "rpm", "tpm", "created", "revoked")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True
    for k in found:
        table.add_row(
            k.id, k.prefix + "…", k.user, k.role, ", ".join(k.groups),
            "" if k.rpm is None else str(k.rpm), "" if k.tpm is None else str(k.tpm),
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
        )  # fmt: skip
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id, or the start `keys list` shows")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Revoke a key; a running hub refuses it within auth_refresh_interval seconds."""
    from neve.store.keys import UnknownKey, revoke_key

    try:
        info = revoke_key(_store(config, set_, data_dir), key_id.rstrip("…"))
    except UnknownKey as exc:
        raise _fail(str(exc)) from None
    out.print(f"revoked key {info.id} of {info.user}")


@feedback_app.command("export")
def feedback_export(
    output: Annotated[Path, typer.Option("--output", "-o", help="a .csv, .parquet or .jsonl file")],
    since: Annotated[str | None, typer.Option(help="from this time (ISO 8601, UTC)")] = None,
    until: Annotated[str | None, typer.Option(help="before this time (ISO 8601, UTC)")] = None,
    score: Annotated[int | None, typer.Option(help="only this score")] = None,
    model: Annotated[str | None, typer.Option(help="only this model")] = None,
    user: Annotated[str | None, typer.Option(help="only this user")] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write feedback rows (the old ST_FEEDBACK columns and more) for evaluation or tuning."""
    from neve.batch import BatchError, write_table
    from neve.store.feedback import FeedbackFilter, arrow_table, find_feedback

    where = FeedbackFilter(
        since=_when(since, "--since"), until=_when(until, "--until"),
        score=score, model=model, user=user,
    )  # fmt: skip
    rows = find_feedback(_store(config, set_, data_dir), where)
    try:
        write_table(arrow_table(rows), output)
    except BatchError as exc:
        raise _fail(str(exc), 2) from None
    out.print(f"wrote {len(rows)} feedback rows to {output}")


def _when(text: str | None, flag: str) -> Any:
    import datetime as dt

    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _fail(f"{flag}: {text!r} is not an ISO 8601 time, e.g. 2026-11-01T00:00", 2) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _rag(config: Path | None, assignments: list[str] | None, data_dir: Path | None) -> Any:
    """The hub's documents: its own index, or in a fleet the shared one (in the database)."""
    from neve.api import fleet
    from neve.rag.service import Rag, configured_embedder

    settings = _settings(config, assignments, data_dir=data_dir)
    if not fleet.is_fleet(settings):
        return Rag(settings, configured_embedder(settings))
    return fleet.rag(settings, configured_embedder(settings), _open_store(settings))


@app.command()
def ingest(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="files and folders of documents, or Snowflake stages (@DB.SCHEMA.STAGE/path)"
        ),
    ],
    groups: Annotated[
        str | None, typer.Option(help="comma-separated groups that may read them")
    ] = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="forget documents gone from these folders")
    ] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Index documents (PDF, HTML, Markdown, text, DOCX); unchanged files are skipped. A
    running hub answers from them at once. A stage is read through spcs.connection, and
    what is gone from it leaves the index."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from neve.rag.index import Access
    from neve.snowflake.stage import StageRef
    from neve.stages import ingest_stage

    try:
        stages = [StageRef.parse(p) for p in paths if p.startswith("@")]
    except NeveError as exc:
        raise _fail(str(exc), 2) from None
    files = [Path(p) for p in paths if not p.startswith("@")]
    rag = _rag(config, set_, data_dir)
    given = [g.strip() for g in groups.split(",") if g.strip()] if groups is not None else None
    columns = (
        "{task.description}", BarColumn(), MofNCompleteColumn(),
        "{task.fields[pages]} pages, {task.fields[chunks]} chunks, "
        "{task.fields[rate]:.1f} chunks/s", TimeElapsedColumn(),
    )  # fmt: skip
    with Progress(*columns, console=err) as bar:
        task = bar.add_task("files", total=None, pages=0, chunks=0, rate=0.0)

        def shown(p: Any) -> None:
            bar.update(task, total=p.files_total, completed=p.files, pages=p.pages,
                       chunks=p.chunks, rate=p.chunks_per_second)  # fmt: skip

        try:
            err.print("loading the embedding model ...")
            rag.embedder.dimensions  # noqa: B018 (loads it, exporting it once)
            runs = [rag.ingester().run(files, groups=given, prune=prune, on_progress=shown)]
            for ref in stages:
                bar.update(task, description=str(ref))
                runs.append(ingest_stage(rag.settings, rag, ref, groups=given, on_progress=shown))
        except FileNotFoundError as exc:
            raise _fail(str(exc), 2) from None
        except NeveError as exc:  # a stage unreadable, Snowflake unreachable
            raise _fail(str(exc)) from None
    total = {name: sum(getattr(r, name) for r in runs)
             for name in ("files", "skipped", "failed", "pages", "chunks", "removed")}  # fmt: skip
    indexed = total["files"] - total["skipped"] - total["failed"]
    out.print(
        f"indexed {indexed} files ({total['pages']} pages, {total['chunks']} chunks); "
        f"{total['skipped']} unchanged; {total['failed']} failed; {total['removed']} removed"
    )
    failed = [d for d in rag.index.list_documents(Access(everything=True))
              if d["status"] == "failed"]  # fmt: skip
    for d in failed:
        err.print(f"[yellow]failed:[/yellow] {d['path']}: {d['error']}", markup=True)


@docs_app.callback(invoke_without_command=True)
def docs(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """List indexed documents with their status."""
    import json

    from neve.rag.index import Access

    if ctx.invoked_subcommand is not None:
        return
    rows = _rag(config, set_, data_dir).index.list_documents(Access(everything=True))
    if as_json:
        for row in rows:
            out.print(json.dumps(row, default=str), markup=False)
        return
    table = Table("id", "status", "title", "path", "pages", "chunks", "groups", "error")
    table.columns[0].no_wrap = True
    for r in rows:
        table.add_row(
            r["doc_id"], r["status"], r["title"], r["path"], str(r["pages"]), str(r["chunks"]),
            ", ".join(r["groups"]), r["error"] or "",
        )  # fmt: skip
    out.print(table)


@docs_app.command("rm")
def docs_rm(
    ids: Annotated[list[str], typer.Argument(help="document ids (`neve docs` shows them)")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Remove documents from the index (their files stay where they are)."""
    from neve.rag.index import Access

    rag = _rag(config, set_, data_dir)
    known = {d["doc_id"] for d in rag.index.list_documents(Access(everything=True))}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise _fail(f"no document {', '.join(unknown)}")
    out.print(f"removed {rag.remove(ids)} documents")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="a question about the indexed documents")],
    url: UrlOpt = None,
    model: Annotated[str | None, typer.Option(help="model id (default: the hub's)")] = None,
    top_k: Annotated[int | None, typer.Option(help="passages to ground the answer in")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the whole answer as JSON")] = False,
) -> None:
    """Ask a running hub; the answer comes with the passages it cites."""
    import json

    from neve.client import HubError

    with _client(url) as client:
        try:
            client.wait_ready(on_wait=lambda d, s: err.print(f"waiting for the hub: {d}"))
            reply = client.ask(question, model=model, top_k=top_k)
        except HubError as exc:
            raise _fail(str(exc)) from None
    if as_json:
        out.print(json.dumps(reply, ensure_ascii=False), markup=False)
        return
    out.print(reply["choices"][0]["message"]["content"] or "", markup=False)
    for i, c in enumerate(reply.get("citations", []), 1):
        where = f", page {c['page']}" if c.get("page") else ""
        out.print(f"[{i}] {c['title']}{where} ({c['path']})", markup=False, style="dim")


def _joined(settings: Settings) -> Any:
    """neve.ray.cluster, joined to the cluster the settings name."""
    try:
        from neve.ray import cluster
    except ModuleNotFoundError as exc:
        raise _fail(f"this needs {exc.name}: pip install 'neve[ray]'") from None
    try:
        cluster.join(settings)
    except NeveError as exc:
        raise _fail(exc.message) from None
    return cluster


def _ray_cluster(config: Path | None, assignments: list[str] | None, address: str | None) -> Any:
    """The cluster module and the settings, joined to the cluster they name (`local` is
    taken as `auto`: these commands look at a cluster that runs, they do not start one)."""
    settings = _settings(config, assignments, ray_address=address)
    if settings.ray_address == "local":
        settings = settings.model_copy(update={"ray_address": "auto"})
    return _joined(settings), settings


@ray_app.command("status")
def ray_status(
    ray_address: RayAddressOpt = None, config: ConfigOpt = None, set_: SetOpt = None
) -> None:
    """The application, its replicas (node, state, ongoing requests) and the autoscaler's
    bounds."""
    cluster, settings = _ray_cluster(config, set_, ray_address)
    view = cluster.describe(settings.ray_app_name)
    out.print(f"application {view.name}: {view.status}" + (f" ({view.message})" if view.message
                                                            else ""))  # fmt: skip
    if view.bounds:
        b = view.bounds
        out.print(f"autoscaling: {b['min_replicas']} to {b['max_replicas']} replicas, "
                  f"{b['target_ongoing_requests']} ongoing requests each")  # fmt: skip
    table = Table("replica", "node", "state", "ongoing")
    for r in view.replicas:
        table.add_row(r.id, r.node_ip, r.state, "?" if r.ongoing is None else str(r.ongoing))
    out.print(table)
    dashboard = cluster.dashboard_url()
    if dashboard:
        out.print(f"Ray dashboard {dashboard}")


@ray_app.command("down")
def ray_down(
    ray_address: RayAddressOpt = None, config: ConfigOpt = None, set_: SetOpt = None
) -> None:
    """Remove the application (its replicas) from the cluster; the cluster stays."""
    cluster, settings = _ray_cluster(config, set_, ray_address)
    cluster.remove(settings.ray_app_name)
    out.print(f"removed {settings.ray_app_name}")


@deploy_app.command("spcs")
def deploy_spcs(
    action: Annotated[str, typer.Argument(help="up | status | endpoints | logs | down | drop-all")],
    ui_only: Annotated[bool, typer.Option(help="up: (re)deploy the web UI alone")] = False,
    dry_run: Annotated[
        bool | None,
        typer.Option(
            "--dry-run/--run", help="print the statements, touch nothing (default: no connection)"
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Deploy to Snowpark Container Services with the `spcs:` settings of neve.yaml: `up`
    creates what is missing (repository, stage, compute pool, services, SQL functions,
    grants), waits for READY and prints the endpoints."""
    from neve import logs
    from neve.snowflake import session, spcs
    from neve.snowflake.spec import SpecError

    if action not in spcs.ACTIONS:
        raise _fail(f"{action!r} is not an action; use one of {', '.join(spcs.ACTIONS)}", 2)
    settings = _settings(config, set_)
    logs.configure(settings.log_level)  # the connector's warnings, structured as ours
    try:
        steps = spcs.plan(action, settings.spcs, settings, ui_only=ui_only)
    except SpecError as exc:
        raise _fail(f"the service specification would be refused: {exc}", 2) from None
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    if dry_run is None:
        dry_run = not session.configured(settings.spcs)
        if dry_run:
            err.print("no Snowflake connection is configured: printing the statements (--dry-run)")
    if dry_run:
        out.print(spcs.script(steps), markup=False, end="")
        return
    found: list[str] = []

    def report(what: str, rows: list[dict[str, Any]] | None) -> None:
        err.print(f"[dim]{what}[/dim]")
        if rows is None:
            return
        if rows and "ingress_url" in rows[0]:
            found.extend(session.urls(rows))
            return
        for row in rows:
            out.print(" ".join(str(v) for v in row.values()), markup=False)

    try:
        connection = session.connect(settings.spcs)
        try:
            session.run(connection, steps, report)
        finally:
            connection.close()
    except (session.DeployError, ConfigError) as exc:
        raise _fail(str(exc)) from None
    for url in found:
        out.print(url)


@deploy_app.command("kuberay")
def deploy_kuberay(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="write the manifest here (default: stdout)"),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Print the Kubernetes manifest for a KubeRay operator, from the `kuberay:` and ray_*
    settings: a RayService (the Ray cluster, the model's Serve application), the hub's
    Deployment and Service in front, and its data volume. Apply it with kubectl apply -f."""
    from neve.ray import kuberay

    settings = _settings(config, set_)
    try:
        text = kuberay.as_yaml(kuberay.manifest(settings))
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    if output is None:
        out.print(text, markup=False, end="")
        return
    output.write_text(text, encoding="utf-8")
    err.print(f"wrote {output}: kubectl apply -f {output}")


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the effective configuration, secrets masked."""
    settings = _settings(config, set_)
    table = Table("setting", "value", "meaning", title="neve configuration")
    for key, value, meaning in describe(settings):
        table.add_row(key, value, meaning)
    out.print(table)


@app.command()
def doctor(
    model: ModelOpt = None,
    prompt: Annotated[
        str, typer.Option(help="text the engine completes greedily, to show it runs")
    ] = "The capital of France is",
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="tokens to generate")] = 8,
    generate: Annotated[
        bool, typer.Option(help="complete the prompt; --no-generate only loads the model")
    ] = True,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Show what the llamacpp engine runs on this machine: llama.cpp's build, the CPU
    variant it loaded, where the weights went, and a short answer from the model."""
    import asyncio

    from neve.doctor import examine

    settings = _settings(config, set_, model=model)
    try:
        report = asyncio.run(examine(settings, prompt if generate else None, max_tokens))
    except (NeveError, ValueError, RuntimeError) as exc:
        raise _fail(getattr(exc, "message", None) or str(exc)) from None
    portable = "+neve." in report.llama_cpp_python
    table = Table("", "", title="neve doctor", show_header=False)
    table.add_row(
        "llama-cpp-python",
        report.llama_cpp_python
        + ("  (portable: CPU variants chosen at start)" if portable else "  (not neve's build)"),
    )
    table.add_row("host CPU", report.host_cpu)
    table.add_row("host AMX", " ".join(report.host_amx) or "none")
    table.add_row("CPU variant", f"{report.cpu.variant}  ({report.cpu.library})")
    table.add_row("compiled for", " ".join(report.cpu.features))
    table.add_row("extra buffers", " ".join(report.cpu.extra_buffers) or "none")
    table.add_row(
        "weight_repack",
        f"{report.weight_repack}: extra buffers {'used' if report.extra_buffers else 'off'}",
    )
    table.add_row(
        "weights in", ", ".join(f"{k} {v:.1f} MiB" for k, v in report.weight_buffers.items())
    )
    if report.answer is not None:
        a = report.answer
        table.add_row("answer", Text.assemble(a.prompt, (a.text, "bold")))
        table.add_row("speed", f"{a.tokens} tokens in {a.seconds:.2f} s")
    out.print(table)
