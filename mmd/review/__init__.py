"""What moderators review and what they say about it.

- `votes`: the log of their actions (label, skip), the agreement rule (`review.require_agreement`) and
  the snapshot of agreed labels ingest passes on to training.
- `queue`: the review stage. After the gate, the champions score every item that is new since the last
  queue update; the most likely harmful / false and the most uncertain join `<data>/review/queue.parquet`,
  which keeps every item once, across cycles, with its state (open, labelled, skipped).

Nothing is imported here, so that `mmd.models.data` can read the agreed labels without pulling the
review stage (and its model imports) in.
"""
