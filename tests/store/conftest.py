from __future__ import annotations

import pytest

from neve.store.db import Store


@pytest.fixture
def store(database_url: str) -> Store:
    """A migrated, empty store on each kind of database."""
    created = Store(database_url)
    created.migrate()
    return created
