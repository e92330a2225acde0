"""`cityvitals simulate`: the simulated Shanghai fleet, for demos, tests and load."""

from __future__ import annotations

import argparse
import urllib.error
from datetime import datetime, time
from typing import Literal

import psycopg
import structlog
from pydantic import ValidationError

from cityvitals import logs
from cityvitals.reasons import Reason
from cityvitals.settings import SimulatorSettings
from cityvitals.startup import StartupError, check_broker, database_error, report, settings_error
from cityvitals.timeutil import utcnow, zone
from cityvitals.topics import Kind

from .faults import DEVICE_REASONS, FaultConfig
from .fleet import Fleet, build_fleet
from .load import publish_load
from .mqttlink import LinkError
from .register import RegisterError, register_api, register_db
from .run import RunConfig, run, stdout_is_terminal

log = structlog.get_logger("cityvitals.simulator")

EPILOG = """\
configuration comes from the environment (and .env): CITYVITALS_MQTT_URL,
CITYVITALS_TOPIC_PREFIX, CITYVITALS_API_URL, CITYVITALS_ADMIN_TOKEN,
CITYVITALS_DATABASE_URL, CITYVITALS_LOCAL_TZ.

examples:
  cityvitals simulate                                  # the laptop demo, real time
  cityvitals simulate --speed 60 --start 06:00         # a day in 24 minutes
  cityvitals simulate --fire-rate 2 --bad-rate 0.02    # alarms and dead letters
  cityvitals simulate --scale 100 --register db        # megacity, 30,000 devices
  cityvitals simulate --load --messages 1000000 --processes 2
"""


def _rate(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be ≥ 0")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _reasons(text: str) -> tuple[Reason, ...]:
    try:
        reasons = tuple(Reason(r.strip()) for r in text.split(",") if r.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{err}; choose from {', '.join(r.value for r in DEVICE_REASONS)}"
        ) from err
    if Reason.UNSTORABLE in reasons:
        raise argparse.ArgumentTypeError("unstorable is the database's verdict, not a device's")
    return reasons


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="cityvitals simulate",
        description="Publish a simulated Shanghai fleet (parking, waste huts, energy meters) "
        "over MQTT like real devices.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fleet = p.add_argument_group("fleet")
    fleet.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="fleet size: 1 ≈ 300 devices (default), 100 ≈ 30,000, 660 ≈ 200,000",
    )
    fleet.add_argument("--seed", type=int, default=0, help="same seed, same fleet and run")
    fleet.add_argument(
        "--register",
        choices=("api", "db", "none"),
        default=None,
        help="register the fleet first: through the API (default when an admin token is "
        "set), straight into the database, or not at all",
    )
    fleet.add_argument("--register-only", action="store_true", help="register the fleet and exit")
    timing = p.add_argument_group("time and volume")
    timing.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated seconds per real second for the daily curves (default 1); "
        "readings are still stamped with the real time",
    )
    timing.add_argument(
        "--start",
        default=None,
        metavar="HH:MM|ISO",
        help="simulated local start time (default: now)",
    )
    timing.add_argument(
        "--duration", type=_rate, default=None, metavar="S", help="stop after S seconds"
    )
    timing.add_argument(
        "--messages", type=int, default=None, metavar="N", help="stop after N device messages"
    )
    timing.add_argument(
        "--rate",
        type=_rate,
        default=0.0,
        metavar="MSG/S",
        help="cap (normal mode) or target (load mode) in messages per second; 0 = no cap",
    )
    timing.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="live table (auto: when stdout is a terminal) or log lines",
    )
    timing.add_argument(
        "--keep-online",
        action="store_true",
        help="do not mark devices offline at a clean stop",
    )
    faults = p.add_argument_group("faults (shares of messages, or rates per device and hour)")
    faults.add_argument(
        "--bad-rate", type=_share, default=0.0, help="share of messages followed by a bad one"
    )
    faults.add_argument(
        "--bad-reasons",
        type=_reasons,
        default=DEVICE_REASONS,
        help="comma-separated rejection reasons to produce (default: every one a device can cause)",
    )
    faults.add_argument(
        "--duplicate-rate", type=_share, default=0.0, help="share of readings sent twice"
    )
    faults.add_argument(
        "--late-rate", type=_share, default=0.0, help="share of readings sent 30-300 s late"
    )
    faults.add_argument(
        "--skew-rate",
        type=_share,
        default=0.0,
        help="share of devices whose clock is 7-20 min ahead (rejected: clock_skew)",
    )
    faults.add_argument(
        "--silent-rate", type=_rate, default=0.0, help="per device-hour: go silent 10-30 min"
    )
    faults.add_argument(
        "--fire-rate", type=_rate, default=0.0, help="per hut-hour: a hut catches fire"
    )
    faults.add_argument(
        "--reset-rate", type=_rate, default=0.0, help="per meter-hour: energy register resets"
    )
    load = p.add_argument_group("load mode")
    load.add_argument(
        "--load", action="store_true", help="publish pre-built readings as fast as --rate allows"
    )
    load.add_argument("--processes", type=int, default=1, help="publisher processes (load mode)")
    load.add_argument(
        "--kind", choices=[k.value for k in Kind], default="energy", help="device kind (load mode)"
    )
    return p


def _start_time(text: str | None, tz: str) -> datetime | None:
    if text is None:
        return None
    local_zone = zone(tz)
    try:
        hm = time.fromisoformat(text)
    except ValueError:
        when = datetime.fromisoformat(text)
        return when if when.tzinfo else when.replace(tzinfo=local_zone)
    today = utcnow().astimezone(local_zone).date()
    return datetime.combine(today, hm, tzinfo=local_zone)


def _register(fleet: Fleet, how: Literal["api", "db", "none"], settings: SimulatorSettings) -> None:
    if how == "none":
        return
    if how == "api":
        if not settings.admin_token:
            raise RegisterError("--register api needs CITYVITALS_ADMIN_TOKEN")
        register_api(fleet.devices, api_url=settings.api_url, token=settings.admin_token)
    else:
        register_db(fleet.devices, dsn=settings.psycopg_dsn)


def main(argv: list[str] | None = None) -> int:
    """Run the simulator; the exit code (2 for a start-up mistake, docs/running.md)."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        settings = SimulatorSettings()
    except ValidationError as err:
        return report("simulate", settings_error(err))
    logs.configure(settings.log_level, settings.log_format)
    try:
        if not args.register_only:
            # Before building and registering a fleet that could not be published.
            target = settings.mqtt
            check_broker(target.host, target.port)
        fleet = build_fleet(args.seed, args.scale)
        how: Literal["api", "db", "none"] = args.register or (
            "api" if settings.admin_token else "none"
        )
        try:
            _register(fleet, how, settings)
        except RegisterError as err:
            raise _register_error(err) from None
        except psycopg.Error as err:
            raise _register_db_error(err, settings.psycopg_dsn) from None
        if args.register_only:
            return 0
        if args.load:
            return _load(fleet, args, settings)
        config = RunConfig(
            mqtt_url=settings.mqtt_url,
            prefix=settings.topic_prefix,
            tz=settings.local_tz,
            seed=args.seed,
            speed=args.speed,
            rate=args.rate,
            duration_s=args.duration,
            messages=args.messages,
            start_sim=_start_time(args.start, settings.local_tz),
            faults=FaultConfig(
                bad_rate=args.bad_rate,
                bad_reasons=args.bad_reasons,
                duplicate_rate=args.duplicate_rate,
                late_rate=args.late_rate,
                skew_rate=args.skew_rate,
                silent_rate=args.silent_rate,
                fire_rate=args.fire_rate,
                reset_rate=args.reset_rate,
            ),
            progress=args.progress == "on" or (args.progress == "auto" and stdout_is_terminal()),
            offline_at_stop=not args.keep_online,
        )
        run(fleet, config)
    except StartupError as err:
        return report("simulate", err)
    except ValueError as err:
        return report("simulate", StartupError(str(err), "check the options (--help)"))
    except LinkError as err:
        # The broker answered the start-up check but then refused or lost us: the run
        # failed (exit 1), still as one line.
        report(
            "simulate",
            StartupError(
                str(err),
                "check that the broker runs and accepts CITYVITALS_MQTT_URL "
                "(host, port, user and password)",
            ),
        )
        return 1
    return 0


def _register_error(err: RegisterError) -> StartupError:
    """What to do when registering the fleet failed."""
    cause = err.__cause__
    if isinstance(cause, urllib.error.HTTPError):
        if cause.code in (401, 403):
            return StartupError(str(err), "set CITYVITALS_ADMIN_TOKEN to the API's admin token")
        return StartupError(str(err), "see the API's log, or use --register db")
    if isinstance(cause, urllib.error.URLError | OSError):
        return StartupError(
            str(err), "start `cityvitals api` or fix CITYVITALS_API_URL (or use --register db)"
        )
    if "CITYVITALS_ADMIN_TOKEN" in str(err):
        return StartupError(str(err), "set it, or use --register db or --register none")
    return StartupError(str(err), "see the API's log, or use --register db")


def _register_db_error(err: psycopg.Error, dsn: str) -> StartupError:
    """What to do when registering the fleet straight into the database failed."""
    if isinstance(err, psycopg.errors.UndefinedTable):
        return StartupError(
            "the database has no device registry (it is not migrated)",
            "run `cityvitals migrate` first",
        )
    if isinstance(err, psycopg.OperationalError):
        return database_error(err, dsn)
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return StartupError(
        f"registering the fleet in the database failed ({first})",
        "run `cityvitals migrate`, or use --register api or --register none",
    )


def _load(fleet: Fleet, args: argparse.Namespace, settings: SimulatorSettings) -> int:
    ids = fleet.ids(args.kind)
    if args.messages is not None:
        messages = args.messages
    elif args.rate and args.duration:
        messages = int(args.rate * args.duration)
    else:
        messages = 100_000
    log.info(
        "load_started",
        devices=len(ids),
        messages=messages,
        processes=args.processes,
        rate=args.rate or "max",
        kind=args.kind,
    )
    result = publish_load(
        settings.mqtt_url,
        settings.topic_prefix,
        devices=ids,
        messages=messages,
        rate=args.rate,
        processes=args.processes,
        kind=args.kind,
        seed=args.seed,
    )
    log.info(
        "load_finished",
        published=result.published,
        acked=result.acked,
        lost=result.lost,
        failed=result.failed,
        seconds=round(result.seconds, 3),
        msg_per_s=round(result.rate),
        processes=result.processes,
    )
    return 0 if result.acked == result.published and not result.failed else 1
