"""The authors' RGCL recipe (JingbiaoMei/RGCL, `src/run_rac.py` with `scripts/experiments.sh`'s
settings) on features we computed, so that both codebases train on identical inputs and
splits. Their code is not part of this project: pass a checkout of it (`--authors`); this
script runs it from a scratch copy and changes only what cannot run here:

- data loading: their `load_feats_from_CLIP` is replaced by a reader of a features .npz
  (train = our training part, dev = the early-stopping carve, test_seen = the test split),
  written by `experiments/rgcl_harmeme.py --authors` (or `write_features` below);
- device: their code names "cuda" in many places; the scratch copy of their src/ says "cpu",
  and faiss' GPU index helpers become identities (the same exact flat index, on the CPU);
- wandb (used only by their final evaluation, which their script turns off) is a stub.

Each epoch's RKC scores and head logits on dev and test are recorded; the epoch is picked
as their loop does (the first epoch with the best dev accuracy of the head) and, for
comparison, by dev RKC AUROC. Their code needs faiss-cpu, easydict, rank-bm25 and
torchmetrics (+ lightning-utilities), e.g. `pip install --target DIR ...` and PYTHONPATH=DIR.

usage: python experiments/rgcl_authors.py --authors CHECKOUT --features F.npz --seed 0 --out R.json
       [-- extra run_rac.py arguments, which override the experiments.sh ones]
"""
import argparse
import json
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import torch

EXPERIMENTS_SH = [  # scripts/experiments.sh of their repo, dataset/model/Faiss device adapted
    "--batch_size", "64", "--lr", "0.0001", "--epochs", "30", "--topk", "20", "--dataset", "HarMeme",
    "--model", "offline", "--proj_dim", "1024", "--map_dim", "1024", "--dropout", "0.2", "0.4", "0.1",
    "--fusion_mode", "align", "--hard_negatives_loss", "True", "--no_hard_negatives", "1",
    "--final_eval", "False", "--group_name", "RAC", "--metric", "cos", "--loss", "triplet",
    "--batch_norm", "False", "--hybrid_loss", "True", "--majority_voting", "arithmetic",
    "--no_pseudo_gold_positives", "1", "--Faiss_GPU", "True", "--force", "True", "--device", "cpu",
]


def write_features(path: Path, data) -> Path:
    """A TrainData (train, val = the carve, test) as the .npz this script reads."""
    out = {}
    for role in ("train", "val", "test"):
        sp = getattr(data, role)
        out.update({f"{role}_ids": np.array(sp.ids), f"{role}_labels": sp.labels, f"{role}_text": sp.text,
                    f"{role}_image": sp.image, f"{role}_has_image": sp.has_image})
    np.savez(path, **out)
    return path


def cpu_copy(authors: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(authors / "src", dest)
    for f in dest.rglob("*.py"):
        t = f.read_text()
        t2 = re.sub(r"""(['"])cuda\1""", r"\1cpu\1", t)
        if t2 != t:
            f.write_text(t2)
    return dest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--authors", required=True)
    ap.add_argument("--features", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="scratch folder (default: beside --out)")
    args, extra = ap.parse_known_args()
    extra = [e for e in extra if e != "--"]
    torch.set_num_threads(args.threads)
    work = Path(args.workdir or Path(args.out).parent / "authors-run") / f"seed{args.seed}"
    src = cpu_copy(Path(args.authors), work / "src")
    sys.path.insert(0, str(src))

    import faiss
    faiss.StandardGpuResources = lambda: None
    faiss.index_cpu_to_gpu = lambda res, dev, index: index
    sys.modules["wandb"] = types.SimpleNamespace(Table=None, log=lambda *a, **k: None, init=lambda *a, **k: None)

    import run_rac
    from sklearn.metrics import f1_score, roc_auc_score

    z = np.load(args.features)

    def split(role):
        has = z[f"{role}_has_image"]
        img = torch.as_tensor(z[f"{role}_image"] * has[:, None])  # zeros where no picture
        return (list(z[f"{role}_ids"]), img, torch.as_tensor(z[f"{role}_text"]), torch.as_tensor(z[f"{role}_labels"]))

    run_rac.load_feats_from_CLIP = lambda path, dataset, model: (split("train"), split("val"), split("test"))

    log = {"rkc": [], "head": []}
    orig_cmr = run_rac.compute_metrics_retrieval

    def cmr(logging_dict, labels, **kw):
        res = orig_cmr(logging_dict, labels, **kw)
        log["rkc"].append({"scores": [float(s) for s in res[5]], "labels": [int(l) for l in res[6]]})
        return res

    run_rac.compute_metrics_retrieval = cmr
    orig_eval = run_rac.eval_and_save_epoch_end

    def eval_end(a, artifacts, train_dl, dev_dl, test_dl, model, epoch, *r, **k):
        res = orig_eval(a, artifacts, train_dl, dev_dl, test_dl, model, epoch, *r, **k)
        from utils.metrics import iterate_dl
        rec = {}
        for name, dl in (("dev", dev_dl), ("test", test_dl)):
            _, labels, predicted, _ = iterate_dl(a, dl, model)
            rec[name] = {"logits": predicted.flatten().tolist(), "labels": labels.flatten().int().tolist()}
        log["head"].append(rec)
        return res

    run_rac.eval_and_save_epoch_end = eval_end

    sys.argv = ["run_rac.py", *EXPERIMENTS_SH, "--seed", str(args.seed), "--output_path", str(work / "logging"),
                *extra]
    a = run_rac.parse_args()
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    run_rac.main(a)

    def m(y, p, thr):
        y = np.asarray(y); p = np.asarray(p)
        pred = (p >= thr).astype(int)
        return {"auroc": float(roc_auc_score(y, p)), "accuracy": float((pred == y).mean()),
                "macro_f1": float(f1_score(y, pred, average="macro"))}

    epochs = []
    for e, head in enumerate(log["head"]):
        dev_r, test_r = log["rkc"][2 * e], log["rkc"][2 * e + 1]
        epochs.append({
            "epoch": e,
            "dev_rkc": m(dev_r["labels"], dev_r["scores"], 0.0), "test_rkc": m(test_r["labels"], test_r["scores"], 0.0),
            "dev_head": m(head["dev"]["labels"], head["dev"]["logits"], 0.0),
            "test_head": m(head["test"]["labels"], head["test"]["logits"], 0.0),
        })
    # their selection: the first epoch with the best dev accuracy of the head (acc_ > best_acc)
    best_acc, sel = -1.0, 0
    for ep in epochs:
        if ep["dev_head"]["accuracy"] > best_acc:
            best_acc, sel = ep["dev_head"]["accuracy"], ep["epoch"]
    sel_rkc = max(range(len(epochs)), key=lambda i: (epochs[i]["dev_rkc"]["auroc"], -i))
    out = {"seed": args.seed, "argv": sys.argv, "epochs": epochs,
           "selected_by_dev_head_acc": {"epoch": sel, **{k: epochs[sel][k] for k in ("test_rkc", "test_head")}},
           "selected_by_dev_rkc_auroc": {"epoch": sel_rkc, **{k: epochs[sel_rkc][k] for k in ("test_rkc", "test_head")}}}
    Path(args.out).write_text(json.dumps(out, indent=1))
    s = out["selected_by_dev_head_acc"]
    print(f"seed {args.seed}: epoch {s['epoch']} test RKC {s['test_rkc']} head {s['test_head']}")
    s = out["selected_by_dev_rkc_auroc"]
    print(f"seed {args.seed} (by dev RKC AUROC): epoch {s['epoch']} test RKC {s['test_rkc']} head {s['test_head']}")


if __name__ == "__main__":
    main()
