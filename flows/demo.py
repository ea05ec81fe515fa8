"""`make demo`: the main job on the embedded defaults, start to end.

The synthetic demo inbox (written once; `--fresh` rewrites it, `--batch N` adds a later batch),
then one whole cycle exactly as the scheduled deployment runs it (the retrain flow: every stage,
the gate, the report, the e-mail to the outbox, dvc push), then a summary table and the paths of
the report and the e-mail.

    python -m flows.demo [--params params.yaml] [--fresh] [--batch N]
"""

from __future__ import annotations

import argparse
import os

from mmd.config import load_settings
from mmd.demo import write_demo_inbox
from mmd.tables import console, cycle_tables


def main(argv: list[str] | None = None) -> dict:
    cli = argparse.ArgumentParser(description="One whole mmd cycle on the demo inbox.")
    cli.add_argument("--params", default="params.yaml")
    cli.add_argument("--fresh", action="store_true", help="rewrite the demo inbox")
    cli.add_argument("--batch", type=int, default=0, help="N > 0: add a later batch of demo items first")
    args = cli.parse_args(argv)
    settings = load_settings(args.params)
    # the flow's runs go to the project's Prefect database, the one `make serve` shows, rather than to a
    # temporary server's that nobody can open afterwards (Prefect reads PREFECT_HOME when first imported)
    os.environ.setdefault("PREFECT_HOME", str(settings.root / ".prefect"))
    from flows.retrain import retrain_flow

    for batch in (0, args.batch) if args.batch else (0,):
        corpus = write_demo_inbox(settings, fresh=args.fresh, batch=batch)
        if corpus is not None:
            console.print(f"demo inbox: {corpus.memes} memes, {corpus.claims} claims, {corpus.posts} posts "
                          f"(+{corpus.broken} broken on purpose) in {corpus.root}")
    ran = retrain_flow(str(settings.params_file))
    for table in cycle_tables(settings, ran):
        console.print(table)
    console.print(f'try: .venv/bin/mmd search "wake up sheeple" -k 5'
                  f'{"" if args.params == "params.yaml" else f" --params {args.params}"}')
    console.print(f"the run, its logs and artifacts: make serve, then http://127.0.0.1:4200/runs "
                  f"(kept in {os.environ['PREFECT_HOME']})")
    return ran


if __name__ == "__main__":
    main()
