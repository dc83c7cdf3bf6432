"""The Snowflake SQL that `neve snowflake sql` prints."""

from __future__ import annotations

from tests.conftest import Ran, neve


def run(*args: str) -> Ran:
    return neve("snowflake", "sql", *args)


def test_both_complete_forms_and_embed_with_batch_size() -> None:
    result = run("--service", "llm_db.public.neve_svc", "--endpoint", "api",
                 "--max-batch-rows", "100")  # fmt: skip
    assert result.returncode == 0
    sql = result.stdout
    assert "CREATE OR REPLACE FUNCTION neve_complete(prompt VARCHAR)\n" in sql
    assert "CREATE OR REPLACE FUNCTION neve_complete(prompt VARCHAR, options OBJECT)" in sql
    assert "CREATE OR REPLACE FUNCTION neve_embed(text VARCHAR)" in sql
    # COMPLETE's two forms, EMBED, ten forms of the AI functions, SEARCH_DOCS' rows.
    assert sql.count("SERVICE = llm_db.public.neve_svc") == 14
    assert sql.count("MAX_BATCH_ROWS = 100") == 14
    assert sql.count("AS '/relay';") == 2 and "AS '/relay/embed';" in sql
    for name in ("classify", "filter", "extract", "sentiment", "summarize", "translate",
                 "similarity", "agg"):  # fmt: skip
        assert f"CREATE OR REPLACE FUNCTION neve_ai_{name}(" in sql
        assert f"AS '/relay/ai/{name}';" in sql
    assert "CREATE OR REPLACE FUNCTION neve_search_docs(query VARCHAR)\n" in sql
    assert "FROM TABLE(FLATTEN(input => neve_search_docs_rows(query, NULL, NULL)))" in sql


def test_an_injected_name_is_refused() -> None:
    result = run("--service", "neve; DROP TABLE x")
    assert result.returncode == 2
    assert "not a Snowflake identifier" in result.stderr
