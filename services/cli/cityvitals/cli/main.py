"""Subcommands: migrate, collector, api, simulate, devices import, dead-letters replay."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cityvitals import logs
from cityvitals.startup import reported

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="City Vitals: MQTT telemetry backbone and city vital signs.",
)
devices_app = typer.Typer(no_args_is_help=True, help="Device registry.")
dead_letters_app = typer.Typer(no_args_is_help=True, help="Rejected messages.")
app.add_typer(devices_app, name="devices")
app.add_typer(dead_letters_app, name="dead-letters")


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (TimescaleDB when available)."""
    from cityvitals.db.migrate import run_migrations
    from cityvitals.settings import MigrateSettings

    with reported("migrate"):
        settings = MigrateSettings()
        logs.configure(settings.log_level, settings.log_format)
        result = run_migrations(settings)
    typer.echo(f"migrated to {result.revision} ({result.storage})")


@app.command()
def collector() -> None:
    """Subscribe to the broker and store every reading (runs until SIGTERM)."""
    from cityvitals.collector.main import run
    from cityvitals.settings import CollectorSettings

    with reported("collector"):
        settings = CollectorSettings()
        logs.configure(settings.log_level, settings.log_format)
        code = run(settings)
    raise typer.Exit(code)


@app.command()
def api() -> None:
    """Serve the HTTP API, the screen and /metrics."""
    from cityvitals.api.main import run
    from cityvitals.settings import ApiSettings

    with reported("api"):
        settings = ApiSettings()
        logs.configure(settings.log_level, settings.log_format)
        code = run(settings)
    raise typer.Exit(code)


@app.command()
def rebuild() -> None:
    """Recompute every table the collectors maintain from the stored history."""
    import psycopg

    from cityvitals.rebuild import rebuild as run_rebuild
    from cityvitals.settings import MigrateSettings
    from cityvitals.startup import NOT_MIGRATED, database_error

    with reported("rebuild"):
        settings = MigrateSettings()
        logs.configure(settings.log_level, settings.log_format)
        try:
            with psycopg.connect(settings.psycopg_dsn, connect_timeout=5) as conn:
                report = run_rebuild(conn, local_tz=settings.local_tz)
        except psycopg.errors.UndefinedTable:
            raise NOT_MIGRATED from None
        except psycopg.OperationalError as err:
            raise database_error(err, settings.psycopg_dsn) from None
    for table, n in report.rows.items():
        typer.echo(f"{table}: {n} rows")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    # The simulator parses its own options, --help included.
    add_help_option=False,
)
def simulate(ctx: typer.Context) -> None:
    """Run the simulated Shanghai fleet (see `cityvitals simulate --help`)."""
    from cityvitals.simulator.cli import main as simulator_main

    raise typer.Exit(simulator_main(list(ctx.args)))


@devices_app.command("import")
def devices_import(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or JSON file")],
) -> None:
    """Import devices into the registry from a CSV or JSON file."""
    from cityvitals.registry.command import import_file_cli

    with reported("devices import"):
        code = import_file_cli(path)
    raise typer.Exit(code)


@dead_letters_app.command("replay")
def dead_letters_replay(
    reason: Annotated[str | None, typer.Option(help="only this reason code")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 10000,
) -> None:
    """Re-validate dead letters and store what now passes."""
    from cityvitals.replay import replay_cli

    with reported("dead-letters replay"):
        code = replay_cli(reason=reason, limit=limit)
    raise typer.Exit(code)
