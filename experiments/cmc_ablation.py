"""The CMC ablation on MediaEval (Wei et al.'s table, on the public Twitter set beside the project).

One command (`make experiment-cmc`) writes docs/experiments/cmc-ablation.{md,json}:

1. prepare the data as the synthetic-selection experiment does (ingest, validate, embed
   with the offline encoder, index, synthesize; whole MediaEval events held out as the
   test split, so no picture and no event is on both sides);
2. select k = 100 synthetic posts by DisSim against the real training posts;
3. train every variant in `cmc.ablation` on MediaEval posts (validation carved from the
   training events by picture) plus the selected synthetic posts, for each seed in
   `cmc.ablation_seeds`, on frozen MiniLM text and EfficientNet-Lite0 image features;
4. score each on the held-out events; the table gives the mean ± std over seeds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))


def prepare_selected(settings):
    """Step 2: the synthetic posts selected against the real training posts (prepared data assumed)."""
    from mmd.synth.select import run_select

    sel = run_select(settings)
    print(f"selected {sel.selected} synthetic posts ({sel.method})", flush=True)
    return sel


def main() -> None:
    from mmd.models.cmc.ablation import ablation_table, run_ablation
    from synthetic_selection import TEST_EVENTS, start

    started = time.perf_counter()
    args, settings = start(__doc__, "experiment-cmc.yaml")
    sel = prepare_selected(settings)
    result = run_ablation(settings, log=lambda m: print(m, flush=True))
    result["test_events"] = list(TEST_EVENTS)
    result["selection"] = {"method": sel.method, "k": sel.k, "selected": sel.selected}
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cmc-ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "cmc-ablation-table.md").write_text(ablation_table(result))
    print(ablation_table(result))
    print(f"wrote {out} in {result['seconds']:.0f}s")


if __name__ == "__main__":
    main()
