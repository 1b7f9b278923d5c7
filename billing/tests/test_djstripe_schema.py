"""dj-stripe's schema in one migration (billing/migrations/djstripe) stands for exactly the migrations it ships."""

from __future__ import annotations

import io
from pathlib import Path

import djstripe
import pytest
from django.core.management import call_command
from django.db.migrations.loader import MigrationLoader

SQUASH = "0001_squashed_0003_2_11"


def test_it_replaces_every_migration_dj_stripe_ships() -> None:
    shipped = sorted(path.stem for path in (Path(djstripe.__file__).parent / "migrations").glob("[0-9]*.py"))
    migration = MigrationLoader(None, ignore_no_migrations=True).disk_migrations[("djstripe", SQUASH)]

    assert sorted(name for app, name in migration.replaces if app == "djstripe") == shipped, (
        "dj-stripe ships other migrations now: regenerate billing/migrations/djstripe (see its docstring)"
    )


@pytest.mark.django_db
def test_it_is_what_dj_stripes_models_are() -> None:
    out = io.StringIO()
    call_command("makemigrations", "djstripe", "--check", "--dry-run", stdout=out)

    assert "No changes detected" in out.getvalue()
