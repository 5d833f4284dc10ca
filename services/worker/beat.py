"""celery beat, started without Celery's command line:

    python -m services.worker.beat --loglevel INFO --schedule var/celerybeat-schedule

does what `celery -A services.worker.celery_app beat --loglevel INFO --schedule ...` does — Celery's `beat`
command builds `app.Beat(...)` from its options and runs it; so does this, with the same defaults (the
scheduler class and everything else from the app's configuration) — without first importing every other
`celery` sub-command: the CLI module brings click-repl and prompt_toolkit (for `celery shell`) and the
worker's remote control along. With bytecode installed that is 0.39-0.46 s of CPU before a restarted beat
serves instead of 0.46-0.55 s (without bytecode, 1.34-1.38 s instead of 1.70-1.78: docs/reliability.md,
"beat"). beat is the one program nothing else answers for while it restarts.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.worker.beat", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "-s", "--schedule", help="the schedule database (Celery's default: ./celerybeat-schedule)"
    )
    parser.add_argument(
        "-l", "--loglevel", default="WARNING", help="as `celery beat --loglevel` (default WARNING)"
    )
    args = parser.parse_args(argv)
    # Imported after the arguments are checked: `--help` or a typo should not set up the app.
    from services.worker.celery_app import app

    app.Beat(schedule=args.schedule, loglevel=args.loglevel.upper()).run()


if __name__ == "__main__":
    main()
